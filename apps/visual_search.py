"""Visual search (the book's first system) as a Ray Serve application at ``/visual-search``.

Ingress (decode + encode) ─> Retriever (faiss + reranking rules); the indexing path Ingress ─>
Retriever.add (durable). With ``encoder_placement: deployment`` (a GPU, Triton) the encoder is
its own batched deployment: Ingress ─> ImageEncoder ─> Retriever. A shadow encoder version (e.g.
the int8 ONNX model) can get a share of the traffic through the shared shadow mechanism.
"""

import asyncio
import time

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from apps import limits
from apps.auth import Identity, require
from apps.common import (
    PUBLIC_ID_MAX,
    AppArgs,
    Deleted,
    EncoderPlacement,
    Liveness,
    ModelRef,
    apply_ingress_config,
    encoder_placement,
    mount_page,
    multipart_openapi,
    parse_bool,
    read_multipart,
    read_upload,
    refuse_fault_in_ingress,
    reject_unknown_query,
    retry_once,
    root_path,
    setup_edge,
    shadow_report,
)
from deployments.common import replica_resources
from deployments.drift import DriftTap
from deployments.metrics import stage
from deployments.shadow import ShadowComparator, ShadowMirror
from deployments.visual_search import ImageEncoder, Retriever
from mlsd.image import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    InvalidImage,
    encode_image,
    stored_image,
)
from mlsd.visual_search.artifact import ENCODER_FILES
from mlsd.visual_search.catalogue import QuotaExceeded
from mlsd.visual_search.features import ImagePreprocessor
from mlsd.visual_search.model import EncoderConfig
from mlsd.visual_search.pipeline import ImageEncoderModel, drift_observation


class VisualSearchArgs(AppArgs):
    """Builder arguments (``args:`` in serve_config.yaml)."""

    backends = tuple(ENCODER_FILES)

    model: ModelRef = Field(
        default_factory=lambda: ModelRef(artifact="visual_search"),
        description="encoder artifact + runner backend: torch | onnx | onnx-int8 | triton | "
        "triton-int8 (with triton: {url: ...})",
    )
    live_log: str | None = Field(
        "var/visual_search/live.sqlite",
        description="state store of added images and deletions (mlsd.state): a path / "
        "sqlite:/// URL on one node, postgresql+psycopg://user@host/db on a cluster; None = off",
    )
    object_store: str = Field(
        "var/visual_search/objects",
        description="where uploaded bytes go: a folder, or s3://bucket/prefix on a cluster",
    )
    overfetch: int = Field(4, ge=1, description="retrieve k x overfetch before reranking")
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_concurrent_decodes: int = Field(4, ge=1, description="image decodes at once per replica")
    max_images_per_owner: int | None = Field(10_000, ge=1, description="live images per owner")
    image_retention_days: float | None = Field(
        30.0, gt=0, description="uploaded bytes kept this long (embeddings stay searchable)"
    )
    rerank: dict = Field(
        default_factory=dict, description="mlsd.visual_search.rerank.RerankConfig fields"
    )
    device: str = Field("auto", description="encoder device: auto (the replica's GPU) | cpu")
    encoder_placement: EncoderPlacement = encoder_placement("ImageEncoder")

    @model_validator(mode="after")
    def _encoder_faults(self):
        refuse_fault_in_ingress(self, ("ImageEncoder",))
        return self

    def stores(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        dbs, objects = super().stores()
        uploads = self.object_store if self.live_log else None
        return {**dbs, "live_log": self.live_log}, {**objects, "object_store": uploads}


class Hit(BaseModel):
    image_id: int
    score: float
    url: str = Field(description="GET it for the image (add ?size=N for a thumbnail)")


class SearchResponse(BaseModel):
    results: list[Hit]
    model_version: str


class AddResponse(BaseModel):
    image_id: int
    model_version: str


class Health(BaseModel):
    status: str
    model_version: str
    catalogue: dict
    shadow: str | None


FILE = {"type": "string", "format": "binary"}
IMAGE_FORM = multipart_openapi({"image": FILE}, required=["image"])
ADD_FORM = multipart_openapi(
    {"image": FILE, "owner": {"type": "string"}, "private": {"type": "boolean"}},
    required=["image"],
)

api = FastAPI(
    title="Visual search",
    description="Search a catalogue by image; add images to it (the book's visual search).",
    version="1",
)
limits.install(api, DEFAULT_MAX_BYTES + limits.MULTIPART_SLACK)
mount_page(api, "visual_search")
NOT_FOUND = "no image with this id"  # unknown, deleted, or private to someone else: one answer


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, max_queued_requests=256
)
@serve.ingress(api)
class VisualSearchIngress:
    def __init__(
        self,
        args: dict,
        encoder: DeploymentHandle | None,
        retriever: DeploymentHandle,
        shadow_encoder: DeploymentHandle | None = None,
        shadow_retriever: DeploymentHandle | None = None,
        comparator: DeploymentHandle | None = None,
        monitor: DeploymentHandle | None = None,
    ):
        self.args = VisualSearchArgs(**args)
        self.auth = setup_edge(api, self.args, self.args.max_upload_bytes + limits.MULTIPART_SLACK)
        # verified only when this replica runs the model (its weights are read here)
        art = self.args.store().load(
            self.args.model.artifact, self.args.model.version, verify=encoder is None
        )
        cfg = EncoderConfig.from_dict(art.config.get("encoder", {}))
        self.preprocess = ImagePreprocessor(cfg, self.args.max_upload_bytes, self.args.max_pixels)
        self.model_version = self.args.model.label
        self.shadow_model = (
            self.args.shadow.model_ref(self.args.model) if self.args.shadow else None
        )
        self.encoder, self.retriever = encoder, retriever
        self.model = None
        if encoder is None:  # encoder_placement: ingress, on the threads Ray gave the replica
            res = replica_resources(self.args.device)
            self.model = ImageEncoderModel(
                art,
                backend=self.args.model.backend,
                num_threads=res.threads,
                device=self.args.device,
                gpu_ids=res.gpu_ids,
                server=self.args.runner_server(self.args.model),
            )  # warmed up
        self.decode_slots = asyncio.Semaphore(self.args.max_concurrent_decodes)
        self.shadow_encoder, self.shadow_retriever = shadow_encoder, shadow_retriever
        self.comparator = comparator
        self.mirror = ShadowMirror.maybe(self._run_shadow, comparator, self.args.shadow)
        self.drift = DriftTap(monitor)

    def reconfigure(self, config: dict) -> None:
        apply_ingress_config(self.mirror, config)

    def check_health(self) -> None:
        """Serve's health check: no traffic while the key store is missing or unreachable."""
        self.auth.check()

    async def _image_input(self, data: bytes):
        """-> ((C, S, S) input, signature, drift features)."""
        try:
            async with self.decode_slots:  # bounded decode memory, whatever is admitted
                return await asyncio.to_thread(self.preprocess.prepare, data)
        except InvalidImage as e:
            raise HTTPException(e.status, str(e)) from None

    async def _encode(self, x):
        """(C, S, S) -> (D,): in this replica, or through the ImageEncoder deployment."""
        if self.model is not None:
            return (await self.model.aencode(x[None]))[0]
        return await retry_once(lambda: self.encoder.encode.remote(x), "encode")

    async def _retrieve(self, encoder, retriever, x, k: int, user_id: str | None):
        emb = await encoder.encode.remote(x)  # (D,)
        return await retriever.search.remote(emb, k, user_id)  # ANN + reranking

    async def _run_shadow(self, request: tuple) -> list[int]:
        x, k, user_id = request
        kept = await self._retrieve(self.shadow_encoder, self.shadow_retriever, x, k, user_id)
        return [i for i, _ in kept]

    @api.post(
        "/search",
        response_model=SearchResponse,
        openapi_extra=IMAGE_FORM,
        summary="Images most similar to the uploaded one",
    )
    async def search(
        self,
        request: Request,
        k: int = Query(10, ge=1, le=10_000, description="number of results"),
        user_id: str | None = Query(
            None, max_length=256, description="admin only: search as this user (privacy)"
        ),
        caller: Identity = Depends(require("search")),
    ) -> SearchResponse:
        reject_unknown_query(request, {"k", "user_id"})
        user_id = caller.acting_as(user_id)  # whose private images may be seen
        if k > self.args.max_k:
            raise HTTPException(422, f"k={k} is over the maximum of {self.args.max_k}")
        t0 = time.perf_counter()
        form = await read_multipart(request, {"image"}, self.args.max_upload_bytes, ["image"])
        data = await read_upload(form, "image", self.args.max_upload_bytes)
        with stage("decode"):
            x, _, feats = await self._image_input(data)
        with stage("encode"):
            emb = await self._encode(x)  # (D,)
        with stage("retrieve"):  # ANN + reranking
            kept = await retry_once(
                lambda: self.retriever.search.remote(emb, k, user_id), "retrieve"
            )
        self.drift.observe(**drift_observation(feats, emb, kept))
        if self.mirror is not None:
            ms = (time.perf_counter() - t0) * 1e3
            self.mirror.maybe_mirror((x, k, user_id), [i for i, _ in kept], ms)
        root = root_path(request)
        return SearchResponse(
            results=[Hit(image_id=i, score=s, url=f"{root}/images/{i}") for i, s in kept],
            model_version=self.model_version,
        )

    @api.post(
        "/images",
        response_model=AddResponse,
        openapi_extra=ADD_FORM,
        summary="Add an image to the catalogue (durable once acknowledged)",
    )
    async def add_image(
        self, request: Request, caller: Identity = Depends(require("write"))
    ) -> AddResponse:
        reject_unknown_query(request, set())
        if self.args.live_log is None:
            raise HTTPException(403, "this deployment does not accept new images (live_log off)")
        form = await read_multipart(
            request, {"image", "owner", "private"}, self.args.max_upload_bytes, ["image"]
        )
        data = await read_upload(form, "image", self.args.max_upload_bytes)
        owner = form.get("owner")
        if owner is not None and (not isinstance(owner, str) or len(owner) > 256):
            raise HTTPException(422, "form field 'owner' must be a string of at most 256 chars")
        owner = caller.acting_as(owner or None)  # the uploader owns it; admin may name another
        private = parse_bool(form.get("private"), "private")
        with stage("decode"):
            x, signature, feats = await self._image_input(data)
        with stage("encode"):  # idempotent: the write itself (index) is not retried
            emb = await self._encode(x)
        self.drift.observe(**drift_observation(feats, emb, None))
        try:
            with stage("index"):  # durable once this returns
                image_id = await self.retriever.add.remote(
                    emb,
                    self.model_version,
                    owner=owner,
                    private=private,
                    unsafe=False,
                    signature=signature,
                    image=data,
                )
        except QuotaExceeded:
            raise HTTPException(429, "this owner's image quota is full") from None
        return AddResponse(image_id=image_id, model_version=self.model_version)

    @api.get(
        "/images/{image_id}",
        response_class=Response,
        responses={200: {"content": {"image/*": {}}}, 404: {"description": NOT_FOUND}},
        summary="The stored image (or a thumbnail); private images only to their owner",
    )
    async def get_image(
        self,
        request: Request,
        image_id: int = Path(ge=0, le=PUBLIC_ID_MAX),
        size: int | None = Query(None, ge=16, le=2048, description="thumbnail's longer side"),
        caller: Identity = Depends(require("search")),
    ) -> Response:
        reject_unknown_query(request, {"size"})
        found = await retry_once(lambda: self.retriever.get.remote(image_id, caller.caller), "get")
        if found is None or found["image"] is None:
            raise HTTPException(404, NOT_FOUND)
        data = found["image"]
        async with self.decode_slots:
            if isinstance(data, bytes):
                body, mime = await asyncio.to_thread(stored_image, data, size)
            else:  # a catalogue image's pixels
                body, mime = await asyncio.to_thread(encode_image, data, size)
        return Response(body, media_type=mime, headers={"Cache-Control": "private, no-store"})

    @api.delete(
        "/images/{image_id}",
        response_model=Deleted,
        responses={404: {"description": NOT_FOUND}},
        summary="Delete an image (its owner or an admin): durable once answered",
    )
    async def delete_image(
        self,
        request: Request,
        image_id: int = Path(ge=0, le=PUBLIC_ID_MAX),
        caller: Identity = Depends(require("write")),
    ) -> Deleted:
        reject_unknown_query(request, set())
        if self.args.live_log is None:
            raise HTTPException(403, "this deployment does not delete images (live_log off)")
        with stage("delete"):  # a write: not retried (a tombstone is committed once)
            outcome = await self.retriever.delete.remote(image_id, caller.caller)
        if outcome == "forbidden":
            raise HTTPException(403, "only the image's owner or an admin may delete it")
        if outcome != "deleted":
            raise HTTPException(404, NOT_FOUND)
        return Deleted(id=image_id)

    @api.get("/healthz", response_model=Liveness, summary="Liveness (open, reveals nothing)")
    async def healthz(self) -> Liveness:
        return Liveness()

    @api.get("/health", response_model=Health, summary="Detailed health (admin)")
    async def health(self, caller: Identity = Depends(require("admin"))) -> Health:
        info = await retry_once(lambda: self.retriever.info.remote(), "health")
        shadow = self.shadow_model.label if self.shadow_model else None
        return Health(status="ok", model_version=self.model_version, catalogue=info, shadow=shadow)

    @api.get("/drift", summary="Served inputs, embeddings and scores vs the reference (admin)")
    async def drift(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await self.drift.report()

    @api.get("/shadow", summary="Aggregate shadow-vs-primary comparison (admin)")
    async def shadow(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await shadow_report(
            self.comparator, self.mirror, self.shadow_model.label if self.shadow_model else None
        )


def build_app(args: VisualSearchArgs) -> Application:
    """Wire the graph; the shadow gets its own encoder, and its own index if its version differs."""
    a = args.pinned(local=["object_store"], urls=["live_log"])
    store = a.store()
    shadow_ref = a.pin_models(store)
    a.open_state()  # after the artifacts: what the app loads, then where it writes

    def encoder(name: str, ref: ModelRef):
        return ImageEncoder.options(name=name, user_config=a.model_user_config(name)).bind(
            store_uri=a.store_spec(),
            **ref.model_dump(),
            device=a.device,
            server=a.runner_server(ref),
        )

    def retriever(name: str, ref: ModelRef):
        return Retriever.options(name=name).bind(
            store_uri=a.store_spec(),
            artifact=ref.artifact,
            version=ref.version,
            live_log=a.live_log,
            object_store=a.object_store,
            rerank=a.rerank,
            overfetch=a.overfetch,
            max_per_owner=a.max_images_per_owner,
            retention_s=a.image_retention_days * 86400 if a.image_retention_days else None,
        )

    primary = retriever("Retriever", a.model)
    shadow = {}
    if (ref := shadow_ref) is not None:
        same_index = (ref.artifact, ref.version) == (a.model.artifact, a.model.version)
        shadow = {
            "shadow_encoder": encoder("ShadowImageEncoder", ref),
            "shadow_retriever": primary if same_index else retriever("ShadowRetriever", ref),
            "comparator": ShadowComparator.bind("overlap@k", 10),
        }
    ingress = VisualSearchIngress.options(user_config=a.ingress_user_config())
    in_ingress = a.encoder_placement == "ingress"
    return ingress.bind(
        a.ingress_args(),
        encoder=None if in_ingress else encoder("ImageEncoder", a.model),
        retriever=primary,
        monitor=a.drift_monitor(),
        **shadow,
    )
