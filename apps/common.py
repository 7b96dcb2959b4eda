"""What every app shares: one builder-args base (``AppArgs``), one model reference whose label
is the single ``model_version`` format, Serve ``user_config`` for what is tuned at run time
(batching, shadow share, fault injection), and strict HTTP parsing with clear 4xx errors.

Each app keeps its own graph: these are functions and models, not an ingress base class.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar, Literal, Self, TypeVar

import ray
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray.exceptions import ActorUnavailableError, RayActorError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from apps.auth import AuthArgs, AuthConfig, Authenticator, check_bind, serve_hosts
from apps.limits import EDGE
from deployments.drift import DriftMonitor
from deployments.shadow import ShadowMirror, ShadowTraffic
from mlsd.artifacts import ArtifactStore, model_label
from mlsd.model_repository import TRITON_VERSIONS
from mlsd.runtime import BACKEND_NAMES
from mlsd.state import Database, ObjectStore, parse_url, pin_url
from mlsd.state.objects import is_local_uri
from mlsd.uris import UnsafeURI, URIReadError, read_capped, uri_allowed

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class ArtifactRef(BaseModel):
    """A named artifact version in the store (``latest`` resolves at build time)."""

    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(description="artifact name in the store")
    version: str = Field("latest", description="a concrete version, or latest")

    def pin(self, store: ArtifactStore, pins: dict[str, str] | None = None):
        """The same reference with its concrete version, checked: a missing version, a corrupt
        file, a manifest unlike its pin or unsigned (when a key is set) fails ``serve run``
        itself, naming the file. The manifest's digest goes into ``pins`` for the replicas."""
        art = store.load(self.artifact, self.version)
        if pins is not None:
            pins[f"{art.name}/{art.version}"] = art.digest
        return self.model_copy(update={"version": art.version})


class ModelRef(ArtifactRef):
    """A model: an artifact version and the runner backend that executes it."""

    backend: str = Field(
        "torch", description="runner backend: torch | onnx | onnx-int8 | triton | triton-int8"
    )

    @property
    def label(self) -> str:
        return model_label(self.artifact, self.version, self.backend)


class Batching(BaseModel):
    """``@serve.batch`` settings of a model deployment (its ``user_config``)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.005, ge=0)


class ShadowArgs(ShadowTraffic):
    """The app's shadow: another model (any field left out is the primary's) and its traffic."""

    artifact: str | None = Field(None, description="artifact name, if not the primary's")
    version: str = Field("latest", description="artifact version the shadow model loads")
    backend: str | None = Field(None, description="runner backend, if not the primary's")

    def model_ref(self, primary: ModelRef) -> ModelRef:
        return ModelRef(
            artifact=self.artifact or primary.artifact,
            version=self.version,
            backend=self.backend or primary.backend,
        )


class TritonArgs(BaseModel):
    """Where models with ``backend: triton`` (or ``triton-int8``) run: a Triton Inference
    Server whose repository ``python -m mlsd.model_repository`` wrote from the artifact."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="host:port of the server's gRPC or HTTP endpoint")
    protocol: Literal["grpc", "http"] = "grpc"
    model_name: str | None = Field(None, description="model in the repository; default: artifact")
    timeout_s: float = Field(30.0, gt=0)

    def server(self, ref: ModelRef) -> dict:
        """The runner's ``server`` mapping for ``ref``: its repository version by backend, and
        the artifact label the server's config must carry (another model there is an error)."""

        if ref.backend not in TRITON_VERSIONS:
            raise ValueError(f"backend {ref.backend!r} is not a Triton backend")
        return {
            "url": self.url,
            "protocol": self.protocol,
            "model_name": self.model_name or ref.artifact,
            "model_version": str(TRITON_VERSIONS[ref.backend]),
            "timeout_s": self.timeout_s,
            "expect": {"artifact": f"{ref.artifact}/{ref.version}"},
        }


class DriftArgs(BaseModel):
    """Drift monitoring's thresholds (``mlsd.drift.DriftThresholds``): windows of served
    observations against the model artifact's reference."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(500, ge=2, description="observations per judged window")
    min_window: int = Field(50, ge=2, description="fewer values in a window: not tested")
    alpha: float = Field(0.01, gt=0, lt=1, description="false-alarm budget per window")
    psi: float = Field(0.2, ge=0, description="a scalar moved only with PSI at least this")
    permutations: int = Field(0, ge=0, description="MMD permutations (0: enough for alpha)")
    mmd_sample: int = Field(300, ge=10, description="points per MMD test")
    history: int = Field(24, ge=1, description="judged windows kept for GET /drift")

    def bind(self, store_spec: dict, ref: ArtifactRef):
        """The app's ``DriftMonitor`` deployment, on ``ref``'s artifact's reference."""

        return DriftMonitor.options(name="DriftMonitor").bind(
            store_spec, ref.artifact, ref.version, self.model_dump()
        )


Fault = Literal["error", "hang"]
# where an app's primary query/image encoder runs: in each ingress replica (CPU: one hop and
# one array between replicas fewer per request; bench/serve_visual_search.py), or as its own
# batched deployment (a GPU: many requests per kernel launch)
EncoderPlacement = Literal["ingress", "deployment"]


def encoder_placement(deployment: str):
    """The ``encoder_placement`` field of an app whose encoder deployment is ``deployment``."""
    return Field(
        "ingress",
        description=f"where the primary encoder runs: in each ingress replica (CPU: one hop "
        f"fewer per request), or as its own batched {deployment} deployment (a GPU)",
    )


def refuse_fault_in_ingress(
    args: AppArgs,
    deployments: tuple[str, ...],
    placement: str = "encoder_placement",
    elsewhere: str = "deployment",
) -> None:
    """A fault injected into a deployment that ``placement: ingress`` folds into the ingress
    (so it does not exist) is a config error, naming the setting that would build it."""
    named = [d for d in deployments if d in args.fault_injection]
    if getattr(args, placement, None) == "ingress" and named:
        raise ValueError(
            f"fault_injection names {', '.join(named)}, which run in the ingress "
            f"({placement}: ingress); use {placement}: {elsewhere}"
        )


TRAFFIC = set(ShadowTraffic.model_fields)


class AppArgs(BaseModel):
    """What every app's builder takes (``args:`` in serve_config.yaml); apps add their own."""

    model_config = ConfigDict(extra="forbid")

    artifact_store: str = Field("artifacts", description="folder or fsspec URI of artifacts")
    model: ModelRef
    max_k: int = Field(100, ge=1, le=10_000)
    batching: Batching = Field(default_factory=Batching)
    shadow: ShadowArgs | None = None
    fault_injection: dict[str, Fault] = Field(
        default_factory=dict, description="tests only: deployment name -> 'error' | 'hang'"
    )
    artifact_pins: dict[str, str] = Field(
        default_factory=dict,
        description='manifest sha256 per "name/version" (the build adds every one it checks)',
    )
    artifact_public_key: str | None = Field(
        None, description="ed25519 public key (PEM file): every manifest must be signed by it"
    )
    auth: AuthConfig = Field(
        default_factory=AuthArgs,
        description="bearer tokens (API keys, JWTs); 'none' only when Serve binds loopback",
    )
    triton: TritonArgs | None = Field(
        None, description="the Triton server that models with backend triton* run on"
    )
    drift: DriftArgs | None = Field(
        default_factory=DriftArgs, description="drift monitoring thresholds; null turns it off"
    )
    allow_node_local_state: bool = Field(
        False,
        description="serve from a file-backed store (SQLite, a local folder) while more than "
        "one Ray node is alive: each node would keep its own state. Off: such a build fails",
    )

    # the runner backends this app's model is served by (mlsd.runtime.load_runner's table)
    backends: ClassVar[tuple[str, ...]] = BACKEND_NAMES

    @model_validator(mode="after")
    def _served_backends(self) -> AppArgs:
        """A backend the app cannot serve fails the build, naming the ones it can (never a
        replica that fails to start, or one that ignores the backend it reports)."""
        model = self.model if isinstance(self.model, ModelRef) else None
        shadow = getattr(self.shadow, "backend", None) if self.shadow is not None else None
        for where, backend in (
            ("model.backend", model and model.backend),
            ("shadow.backend", shadow),
        ):
            if backend is not None and backend not in self.backends:
                raise ValueError(f"{where} {backend!r}: this app serves {', '.join(self.backends)}")
        return self

    def stores(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """(state store URLs, object store URIs) by field: everything the app writes, its API
        keys included (``python -m apps.state init`` creates them; the build opens them)."""
        keys = self.auth.key_store if isinstance(self.auth, AuthArgs) else None
        return {"auth.key_store": keys}, {}

    def open_state(self) -> None:
        """Build time, for every store the app writes (its API keys too): a URL the state
        layer cannot open, or a store that is missing or unreachable, fails ``serve run``
        naming it (never a new empty file); and a file-backed store while more than one Ray
        node is alive is refused unless ``allow_node_local_state``."""
        stores, objects = self.stores()
        urls = {f: parse_url(u) for f, u in stores.items() if u is not None}  # StoreURLError
        local = [f"{f}: {u}" for f, u in urls.items() if u.file_backed]
        local += [f"{f}: {u}" for f, u in objects.items() if u is not None and is_local_uri(u)]
        nodes = alive_ray_nodes()
        if local and nodes > 1 and not self.allow_node_local_state:
            raise ValueError(
                f"{nodes} Ray nodes are alive, but this app's state is on one node's disk "
                f"({'; '.join(local)}): each node would serve its own copy and acknowledged "
                "writes would diverge. Use postgresql+psycopg://... and s3://... stores "
                "(README, 'On a cluster'), or set allow_node_local_state: true when every "
                "replica runs on one node."
            )
        for url in urls.values():
            Database(url).close()  # missing, unreachable, another schema: StateError, naming it
        for uri in objects.values():
            if uri is not None:
                ObjectStore(uri)

    def runner_server(self, ref: ModelRef) -> dict | None:
        """A model's Triton ``server`` mapping (None for in-process backends); a Triton
        backend without ``triton:`` settings fails the build, not the first request."""
        if not ref.backend.startswith("triton"):
            return None
        if self.triton is None:
            raise ValueError(
                f"model {ref.label} has backend {ref.backend!r} but the app has no "
                "triton: {url: ...} settings"
            )
        return self.triton.server(ref)

    def drift_monitor(self, ref: ArtifactRef | None = None):
        """The bound ``DriftMonitor`` for the primary model (or ``ref``), None when off."""
        if self.drift is None:
            return None
        return self.drift.bind(self.store_spec(), ref or self.model)

    def store(self) -> ArtifactStore:
        return ArtifactStore(
            self.artifact_store, pins=self.artifact_pins, public_key=self.artifact_public_key
        )

    def store_spec(self) -> dict:
        """What deployments get as ``store_uri``: the store plus the digests and key the build
        checked, so a replica loads exactly the manifests the build verified."""
        return self.store().spec()

    def pinned(self, local: Iterable[str] = (), urls: Iterable[str] = ()) -> Self:
        """Build time: a copy whose artifact store, ``local`` folders and ``urls`` (state
        stores) are absolute, as replicas started elsewhere need them, with auth pinned."""
        a = self.model_copy(deep=True)
        a.artifact_store = pin_local(a.artifact_store)
        for field in local:
            setattr(a, field, pin_local(getattr(a, field)))
        for field in urls:
            setattr(a, field, pin_url(getattr(a, field)))
        a.pin_auth()
        return a

    def pin_auth(self) -> None:
        """Build time: key store and JWT key as absolute paths; ``auth: none`` refused unless
        the running Serve binds loopback only (each request's peer is checked again)."""
        check_bind(self.auth, serve_hosts())
        if isinstance(self.auth, AuthArgs):
            update = {"key_store": pin_url(self.auth.key_store)}
            if self.auth.jwt is not None:
                key_file = pin_local(self.auth.jwt.key_file)
                update["jwt"] = self.auth.jwt.model_copy(update={"key_file": key_file})
            self.auth = self.auth.model_copy(update=update)
        self.artifact_public_key = pin_local(self.artifact_public_key)

    def shadow_model(self) -> ModelRef | None:
        return self.shadow.model_ref(self.model) if self.shadow is not None else None

    def pin_models(self, store: ArtifactStore) -> ModelRef | None:
        """Pin the primary's and the shadow's ``latest`` to concrete versions, checked (so
        ``serve run`` fails naming a missing or corrupt file); returns the shadow's model."""
        self.model = self.model.pin(store, self.artifact_pins)
        if self.shadow is None:
            return None
        ref = self.shadow.model_ref(self.model).pin(store, self.artifact_pins)
        self.shadow = self.shadow.model_copy(
            update={"artifact": ref.artifact, "version": ref.version}
        )
        return ref

    def model_user_config(self, deployment: str) -> dict:
        """``user_config`` of a batched model deployment: batching + its injected fault."""
        return {**self.batching.model_dump(), "fail_with": self.fault_injection.get(deployment)}

    def ingress_user_config(self) -> dict:
        """Shadow traffic, and batching (an encoder running in the ingress batches too)."""
        return {
            "shadow": self.shadow.traffic() if self.shadow is not None else None,
            "batching": self.batching.model_dump(),
        }

    def ingress_args(self) -> dict:
        """The ingress's constructor args: everything but what ``user_config`` carries, so a
        change of batching, shadow traffic or faults leaves every replica running."""
        out = self.model_dump(exclude={"batching", "fault_injection"})
        if out.get("shadow"):
            out["shadow"] = {k: v for k, v in out["shadow"].items() if k not in TRAFFIC}
        return out


def setup_edge(api: FastAPI, args: AppArgs, max_body_bytes: int) -> Authenticator:
    """An ingress's ``__init__``: who may call (the ``require`` dependency reads it) and how
    big a body may be (the ``BodyLimit`` middleware reads it)."""

    auth = Authenticator(args.auth)
    EDGE[api.title] = {"authenticator": auth, "max_body_bytes": max_body_bytes}
    return auth


async def retry_once(call: Callable[[], Awaitable[T]], what: str) -> T:
    """An idempotent downstream call (a search, a ranking, a scoring; never a write) tried
    again once when the replica serving it died or became unreachable mid-call: Serve routes
    the retry to a live replica (or queues it until the replacement is up), so a lost replica
    costs latency, not an error. Any other failure propagates at once."""

    try:
        return await call()
    except (RayActorError, ActorUnavailableError) as e:
        logger.warning("%s: replica lost (%s); retrying once", what, type(e).__name__)
        return await call()


class LocalHandle:
    """A deployment class instantiated inside this replica and called as its handle is:
    ``h.method.remote(*args)`` returns an awaitable of the method's result, run here (an async
    method on this event loop, a sync one on a worker thread). A placement option of an app
    (e.g. video search's ``branch_placement: ingress``) swaps a hop for this without touching
    the code that calls it: no serialisation, no second process, the same class and methods."""

    def __init__(self, obj: object):
        self._obj = obj

    def __getattr__(self, name: str):
        method = getattr(self._obj, name)

        def remote(*args, **kwargs) -> Awaitable:
            if inspect.iscoroutinefunction(method):
                return method(*args, **kwargs)
            return asyncio.to_thread(method, *args, **kwargs)

        return _Remote(remote)

    @property
    def target(self) -> object:
        """The instance the calls run on (health checks reach it directly)."""
        return self._obj


class _Remote:
    __slots__ = ("remote",)

    def __init__(self, remote: Callable[..., Awaitable]):
        self.remote = remote


class Liveness(BaseModel):
    status: str = "ok"


PUBLIC_ID_MAX = 2**53  # ids stay exact in JSON / JavaScript (mlsd.state.ids.ID_BITS)


class Deleted(BaseModel):
    """The answer to a DELETE: the tombstone is committed (every replica applies it before
    its next answer; the next index or training job leaves the item out)."""

    id: int
    deleted: bool = True


def root_path(request: Request) -> str:
    """The app's route prefix as the client called it (``/visual-search``), for URLs the
    answer carries."""
    return request.scope.get("root_path", "").rstrip("/")


PAGES = os.path.join(os.path.dirname(__file__), "pages")
PAGE_ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
PAGE_NAV = {  # page -> (route prefix in serve_config.yaml, name)
    "visual_search": ("/visual-search/", "Visual search"),
    "video_search": ("/video-search/", "Video search"),
    "recommendation": ("/recommendations/", "Recommendations"),
    "blurring": ("/blurring/", "Blurring"),
    "harmful_content": ("/harmful-content/", "Harmful content"),
}


def render_page(page: str, root: str) -> str:
    """``apps/pages/<page>.html`` (a title comment, the body, its script) inside the shared
    layout: one header, token field and navigation for every page."""
    with open(os.path.join(PAGES, "layout.html"), encoding="utf-8") as f:
        layout = f.read()
    with open(os.path.join(PAGES, f"{page}.html"), encoding="utf-8") as f:
        first, _, rest = f.read().partition("\n")
    title = first.removeprefix("<!--").split(":")[0].strip()
    body, script, tail = rest.partition("<script>")
    nav = " ".join(
        f'<a href="{href}"{" class=here" if p == page else ""}>{name}</a>'
        for p, (href, name) in PAGE_NAV.items()
    )
    fields = {
        "TITLE": title,
        "PAGE": page,
        "NAV": nav,
        "BODY": body.strip(),
        "SCRIPT": script + tail.strip(),
        "ROOT": root,
    }
    for k, v in fields.items():  # ROOT last: the body and script use it too
        layout = layout.replace("{{" + k + "}}", v)
    return layout


def mount_page(api: FastAPI, page: str) -> None:
    """Serve the app's page at ``/<app>/`` (no build step, nothing from a CDN) and the shared
    script and style it loads. Open routes: the page holds no data; its calls send the
    caller's token like any client."""

    @api.get("/", include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(render_page(page, root_path(request)))

    @api.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in PAGE_ASSETS:
            raise HTTPException(404, "no such file")
        with open(os.path.join(PAGES, name), "rb") as f:
            return Response(f.read(), media_type=PAGE_ASSETS[name])


def apply_ingress_config(mirror: ShadowMirror | None, config: dict, batched=None) -> None:
    """An ingress's ``reconfigure``: a new shadow share / timeout applies at once, and so does
    ``batching`` for ``batched``, the ``@serve.batch`` method of an encoder in the ingress."""
    if mirror is not None and config.get("shadow"):
        mirror.tune(config["shadow"])
    if batched is not None and config.get("batching"):
        b = Batching(**config["batching"])
        batched.set_max_batch_size(b.max_batch_size)
        batched.set_batch_wait_timeout_s(b.batch_wait_timeout_s)


def alive_ray_nodes() -> int:
    """Alive nodes of the Ray cluster this build runs against (1 outside Ray)."""

    if not ray.is_initialized():
        return 1
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def pin_local(path: str | None) -> str | None:
    """Replicas may start in another working directory: make local paths absolute now
    (URIs and None pass through)."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


async def shadow_report(comparator, mirror: ShadowMirror | None, label: str | None) -> dict:
    """The body of an app's ``GET /shadow``: the comparator's aggregate, or disabled.
    ``label``: the shadow's model version."""
    if comparator is None or mirror is None or label is None:
        return {"enabled": False}
    report = await comparator.report.remote()
    return {
        "enabled": True,
        "shadow": {"model_version": label, **mirror.args.model_dump()},
        **report,
    }


def multipart_openapi(properties: dict, required: list[str]) -> dict:
    """``openapi_extra`` documenting a multipart body that a route parses by hand."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {
        "requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True}
    }


def reject_unknown_query(request: Request, allowed: Iterable[str]) -> None:
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise HTTPException(422, f"unknown query parameter(s): {', '.join(unknown)}")


async def read_multipart(
    request: Request,
    allowed: set[str],
    max_bytes: int,
    required: Iterable[str] = (),
    max_files: int | None = None,
    max_part_size: int = 1024 * 1024,
) -> FormData:
    """Parse a multipart body strictly: right content type, size cap, no unknown fields; at
    most ``max_files`` files (default one per allowed field) and ``max_part_size`` bytes in a
    text field."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise HTTPException(415, f"expected multipart/form-data, got {ctype or 'no content type'}")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > max_bytes + 64 * 1024
        except ValueError:
            raise HTTPException(400, "invalid Content-Length header") from None
        if too_big:
            raise HTTPException(413, f"request body of {length} bytes is over {max_bytes} bytes")
    try:
        form = await request.form(
            max_files=len(allowed) if max_files is None else max_files,
            max_fields=len(allowed) + (max_files or 0),
            max_part_size=max_part_size,
        )
    except MultiPartException as e:
        raise HTTPException(400, f"malformed multipart body: {e.message}") from None
    unknown = sorted(set(form.keys()) - allowed)
    if unknown:
        raise HTTPException(422, f"unknown form field(s): {', '.join(unknown)}")
    missing = [f for f in required if f not in form]
    if missing:
        raise HTTPException(422, f"missing form field(s): {', '.join(missing)}")
    return form


async def read_upload(form: FormData, field: str, max_bytes: int) -> bytes:
    """The one file sent as ``field``, capped."""
    files = await read_uploads(form, field, max_bytes)
    if len(files) != 1:
        raise HTTPException(422, f"form field {field!r} must be one file upload")
    return files[0]


async def read_uploads(form: FormData, field: str, max_bytes: int) -> list[bytes]:
    """Every file sent as ``field`` (none: ``[]``), each capped at ``max_bytes``."""
    out = []
    for value in form.getlist(field):
        if not isinstance(value, UploadFile):
            raise HTTPException(422, f"form field {field!r} must be a file upload")
        data = await value.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"upload {field!r} is over the limit of {max_bytes} bytes")
        out.append(data)
    return out


def invalid_body(e: ValidationError) -> HTTPException:
    """A body that fails its pydantic model: 422 with each error's location and message (the
    input values are left out: they may be large or private)."""
    errors = [{"loc": list(x["loc"]), "msg": x["msg"]} for x in e.errors(include_url=False)]
    return HTTPException(422, errors)


async def read_post(
    request: Request,
    model: type[M],
    *,
    max_json_bytes: int,
    max_files: int,
    max_file_bytes: int,
    json_field: str = "post",
    file_field: str = "image",
) -> tuple[M, list[bytes]]:
    """A body that is either JSON (``model``) or multipart: ``json_field`` holding the same
    JSON and up to ``max_files`` files as ``file_field``. Returns the model and the files."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        form = await read_multipart(
            request,
            {json_field, file_field},
            max_json_bytes + max_files * max_file_bytes,
            max_files=max_files,
            max_part_size=max_json_bytes,
        )
        raw = form.get(json_field)
        if not isinstance(raw, str):
            raise HTTPException(422, f"form field {json_field!r} (JSON) is required")
        body, files = raw.encode("utf-8"), await read_uploads(form, file_field, max_file_bytes)
    elif ctype.startswith("application/json"):
        body, files = await request.body(), []
        if len(body) > max_json_bytes:
            raise HTTPException(413, f"a JSON body is at most {max_json_bytes} bytes")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the body is not valid UTF-8") from None
    else:
        raise HTTPException(
            415,
            f"send application/json, or multipart/form-data with a {json_field!r} field "
            f"and {file_field!r} files",
        )
    try:
        return model.model_validate_json(body), files
    except ValidationError as e:
        raise invalid_body(e) from None


def check_uri(uri: object, prefixes: Iterable[str]) -> str:
    """``uri`` if it is under one of ``prefixes`` (by structure: :mod:`mlsd.uris`), else 403."""
    try:
        allowed = isinstance(uri, str) and uri_allowed(uri, prefixes)
    except UnsafeURI as e:
        raise HTTPException(403, f"URI refused: {e}") from None
    if not allowed:
        raise HTTPException(403, "this URI is not under an allowed prefix")
    return uri


async def read_uri(uri: str, prefixes: Iterable[str], max_bytes: int) -> bytes:
    """The bytes behind an allowed URI, capped (:func:`mlsd.uris.read_capped`, in a thread):
    403 outside ``prefixes``, 422 unreadable (missing or failing alike), 413 over the cap."""
    check_uri(uri, prefixes)
    try:
        return await asyncio.to_thread(read_capped, uri, max_bytes)
    except URIReadError as e:
        raise HTTPException(413 if e.reason == "too_large" else 422, f"{uri}: {e}") from None


def parse_bool(value: str | None, field: str) -> bool:
    if value is None or value == "":
        return False
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise HTTPException(422, f"form field {field!r} must be true or false, got {value!r}")
