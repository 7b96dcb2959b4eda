"""Video search (the book's YouTube video search) as a Ray Serve application at
``/video-search``.

search    Ingress ─┬─> TextEncoder (batched) ─> VideoRetriever (faiss over video vectors) ─┐
                   └─> TextSearch (tantivy BM25 over title, description, tags) ───────────┴─>
          fusion (min-max sum | strength sum | weighted RRF) ─> reranking ─> top k
          (the served CPU config: the encoder and both branches inside each ingress replica,
          ``encoder_placement`` / ``branch_placement: ingress``, no hop per query)
indexing  Ingress ─> VideoIndexer (decode, sample, frame encoder, pool) ─> durable log; both
          indexes replay the log before their next search
shadow    a share of queries goes, fire-and-forget, through ShadowTextEncoder ->
          ShadowVideoRetriever (another text-video model version); overlap@10 is compared
"""

import asyncio
import logging
import time
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from apps import limits
from apps.auth import Identity, require
from apps.common import (
    PUBLIC_ID_MAX,
    AppArgs,
    ArtifactRef,
    Deleted,
    EncoderPlacement,
    Liveness,
    LocalHandle,
    ModelRef,
    apply_ingress_config,
    check_uri,
    encoder_placement,
    invalid_body,
    mount_page,
    multipart_openapi,
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
from deployments.video_search import TextEncoder, TextSearch, VideoIndexer, VideoRetriever
from mlsd.image import InvalidImage, stored_image
from mlsd.text import SentenceEncoder
from mlsd.text_index import analyzer, normalise
from mlsd.video_search.catalogue import VideoDoc
from mlsd.video_search.fusion import FusionConfig
from mlsd.video_search.model import (
    class_unit,
    load_video_text,
    query_drift,
    served_query_encoder,
)
from mlsd.video_search.rerank import VideoRerankConfig

ERROR_STATUS = {"too_large": 413, "too_long": 413, "too_costly": 413}  # others: 400
# what the client is told: what it did wrong, never what the server has (details are logged)
PUBLIC_ERRORS = {
    "not_a_video": "not a video in an accepted container (MP4/QuickTime, Matroska/WebM, AVI) "
    "and codec (H.264, HEVC, VP8, VP9, AV1, MPEG-4)",
    "no_video_stream": "the file has no video stream",
    "empty": "the video has no decodable frames",
    "truncated": "the video is truncated or corrupt",
    "unreadable": "the URI cannot be read",
}

BRANCHES = ("VideoRetriever", "TextSearch")  # the deployments of branch_placement: deployments

logger = logging.getLogger("ray.serve")


class VideoSearchArgs(AppArgs):
    """Builder arguments (``args:`` in serve_config.yaml)."""

    backends = SentenceEncoder.BACKENDS  # the query encoder's: torch, or onnx exported at start

    model: ModelRef = Field(
        default_factory=lambda: ModelRef(artifact="video_text_zeroshot"),
        description="text-video model artifact (the query encoder's text head + video space)",
    )
    catalogue: ArtifactRef = Field(
        default_factory=lambda: ArtifactRef(artifact="video_catalogue"),
        description="indexed videos (pooled frame features + text fields)",
    )
    live_log: str | None = Field(
        "var/video_search/videos.sqlite",
        description="state store of added videos, edits and deletions (mlsd.state): a path / "
        "sqlite:/// URL on one node, postgresql+psycopg://user@host/db on a cluster; None = off",
    )
    object_store: str = Field(
        "var/video_search/objects",
        description="where uploads' thumbnails go: a folder, or s3://bucket/prefix on a cluster",
    )
    max_query_chars: int = Field(500, ge=1)
    branch_depth: int = Field(100, ge=1, description="results taken from each branch")
    text_language: str = Field(
        "english", description="text branch analyser: stop words + stemmer of this language"
    )
    fusion: dict = Field(
        default_factory=lambda: {"method": "weighted_sum"},
        description="mlsd.video_search.fusion.FusionConfig fields (default: the min-max sum "
        "bench.video_retrieval_eval chose on its 31 dev queries over 29 real clips; "
        "{method: rrf} for the book's RRF)",
    )
    rerank: dict = Field(default_factory=dict, description="VideoRerankConfig fields")
    sample: dict = Field(
        default_factory=lambda: {
            "fps": 1.0,
            "size": 224,
            "max_frames": 32,
            "max_duration_s": 1800.0,
            "max_decode_s": 60.0,
        },
        description="frame sampling and decode caps of uploads (mlsd.video.SampleConfig)",
    )
    index_timeout_s: float = Field(120.0, gt=0, description="answer 504 after this long")
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1)
    allowed_uri_prefixes: list[str] = Field(
        default_factory=list, description="URIs the indexer may read (e.g. s3://bucket/videos/)"
    )
    branch_timeout_s: float = Field(5.0, gt=0)
    device: str = Field("auto", description="encoders' device: auto (the replica's GPU) | cpu")
    encoder_placement: EncoderPlacement = encoder_placement("TextEncoder")
    branch_placement: Literal["ingress", "deployments"] = Field(
        "ingress",
        description="where the two retrieval branches (the visual index and BM25 over the "
        "catalogue, each kept current from the live log) run: inside each ingress replica (no "
        "hop per query: on CPU two Serve hops cost several times the search; "
        "bench.serve_video_search), or as VideoRetriever and TextSearch deployments that "
        "scale, fail and are placed apart from the ingress (large catalogues, a GPU ingress)",
    )

    @model_validator(mode="after")
    def _encoder_faults(self):
        refuse_fault_in_ingress(self, ("TextEncoder",))
        refuse_fault_in_ingress(self, BRANCHES, "branch_placement", "deployments")
        return self

    @field_validator("text_language")
    @classmethod
    def _known_language(cls, v: str) -> str:
        analyzer(v)  # ValueError for a language tantivy has no analyser for
        return v

    @field_validator("fusion")
    @classmethod
    def _fusion_config(cls, v: dict) -> dict:
        try:  # a bad method, normaliser or key fails at build time, not per request
            FusionConfig(**v)
        except TypeError as e:
            raise ValueError(f"fusion: {e}") from None
        return v

    def stores(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        dbs, objects = super().stores()
        thumbs = self.object_store if self.live_log else None
        return {**dbs, "live_log": self.live_log}, {**objects, "object_store": thumbs}


class Hit(BaseModel):
    video_id: int
    title: str
    score: float
    sources: dict[str, int] = Field(description="branch -> rank in that branch")
    thumbnail_url: str


class VideoInfo(BaseModel):
    video_id: int
    title: str
    description: str
    tags: str
    duration: float = Field(description="seconds")
    published: float = Field(description="Unix seconds (0: unknown)")
    owner: str | None = Field(description="the uploader; None: the catalogue's")
    thumbnail_url: str


class VideoFields(BaseModel):
    """A video's text fields, one table of limits for both an upload's form fields and a PATCH
    body (the fields to change: the text index is updated; the visual vector, which comes from
    the frames, is kept). Each is stripped; a title must say something."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, max_length=300)
    description: str | None = Field(None, max_length=5000)
    tags: str | None = Field(None, max_length=1000)

    @field_validator("title", "description", "tags")
    @classmethod
    def _text(cls, v: str | None, info) -> str | None:
        if v is None:
            return None
        if "\ufffd" in v:
            raise ValueError("not valid UTF-8")
        if info.field_name == "title" and not normalise(v):
            raise ValueError("a video needs a title")
        return v.strip()

    def given(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class SearchResponse(BaseModel):
    results: list[Hit]
    model_version: str
    degraded: list[str] = Field(default_factory=list, description="branches that failed")


class IndexResponse(BaseModel):
    video_id: int
    frames: int
    duration: float


class Health(BaseModel):
    status: str
    model_version: str
    catalogue: dict
    shadow: str | None


UPLOAD_FORM = multipart_openapi(
    {
        "video": {"type": "string", "format": "binary"},
        "uri": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "string"},
    },
    required=["title"],
)
TEXT_FIELDS = set(VideoFields.model_fields)

api = FastAPI(
    title="Video search",
    description="Search videos by text: visual (text-video embeddings) and text (BM25) "
    "branches fused and reranked (the book's YouTube video search); add videos.",
    version="1",
)
limits.install(api, 64 * 1024 * 1024 + limits.MULTIPART_SLACK)
mount_page(api, "video_search")
NOT_FOUND = "no video with this id"  # unknown, deleted, or private to someone else: one answer


def _info(d: VideoDoc, root: str) -> VideoInfo:
    return VideoInfo(
        video_id=d.video_id,
        title=d.title,
        description=d.description,
        tags=d.tags,
        duration=d.duration,
        published=d.published,
        owner=d.owner,
        thumbnail_url=f"{root}/videos/{d.video_id}/thumbnail",
    )


def _clean_query(q: str, max_chars: int) -> str:
    if "\ufffd" in q:
        raise HTTPException(400, "query is not valid UTF-8")
    if len(q) > max_chars:
        raise HTTPException(422, f"query of {len(q)} characters is over {max_chars}")
    if not normalise(q):
        raise HTTPException(422, "query is empty (nothing but spaces, punctuation or controls)")
    return "".join(c if c.isprintable() else " " for c in q)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=128, max_queued_requests=256
)
@serve.ingress(api)
class VideoSearchIngress:
    def __init__(
        self,
        args: dict,
        text_encoder: DeploymentHandle | None,
        retriever: DeploymentHandle | None = None,
        text_search: DeploymentHandle | None = None,
        indexer: DeploymentHandle | None = None,
        shadow_encoder: DeploymentHandle | None = None,
        shadow_retriever: DeploymentHandle | None = None,
        comparator: DeploymentHandle | None = None,
        monitor: DeploymentHandle | None = None,
        local_branches: dict | None = None,
    ):
        self.args = VideoSearchArgs(**args)
        if local_branches is not None:  # branch_placement: ingress: the same classes, here
            retriever = LocalHandle(VideoRetriever.func_or_class(**local_branches["retriever"]))
            text_search = LocalHandle(TextSearch.func_or_class(**local_branches["text"]))
        self.local_branches = [
            h.target for h in (retriever, text_search) if isinstance(h, LocalHandle)
        ]
        self.auth = setup_edge(api, self.args, self.args.max_upload_bytes + limits.MULTIPART_SLACK)
        self.fusion = FusionConfig(**self.args.fusion)
        self.rerank_cfg = VideoRerankConfig(**self.args.rerank)
        self.model_version = self.args.model.label
        self.shadow_model = self.args.shadow_model()
        self.encoder, self.retriever, self.text = text_encoder, retriever, text_search
        self.indexer = indexer
        self.shadow_encoder, self.shadow_retriever = shadow_encoder, shadow_retriever
        self.comparator = comparator
        self.mirror = ShadowMirror.maybe(self._run_shadow, comparator, self.args.shadow)
        self.drift = DriftTap(monitor)
        self.query_model = None
        if text_encoder is None or monitor is not None:
            art = self.args.store().load(self.args.model.artifact, self.args.model.version)
            if monitor is not None:  # the model's visual concepts, for the query's drift score
                self.concepts = class_unit(load_video_text(art))
            if text_encoder is None:  # encoder_placement: ingress, on the replica's threads
                res = replica_resources(self.args.device)
                self.query_model = served_query_encoder(
                    art, self.args.device, res.threads, res.gpu_ids, self.args.model.backend
                )

    def reconfigure(self, config: dict) -> None:
        batched = self._encode_here if self.query_model is not None else None
        apply_ingress_config(self.mirror, config, batched)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_here(self, queries: list[str]) -> list[np.ndarray]:
        """Concurrent queries of this replica in one forward pass (in torch a query costs ~11
        ms of CPU alone, ~4 ms each in a batch of 8; in ONNX ~4 ms alone)."""
        return list(await asyncio.to_thread(self.query_model.encode, queries))  # B x (D,)

    def check_health(self) -> None:
        """Serve's health check: no traffic while the key store, or the live log of a branch
        held here, is missing or unreachable."""
        self.auth.check()
        for branch in self.local_branches:
            branch.check_health()

    async def _encode(self, encoder, q: str, observe: bool):
        """``encoder``: a TextEncoder deployment's handle, or None for this replica's own."""
        if encoder is None:
            vec = await self._encode_here(q)  # (D,)
        else:
            vec = await retry_once(lambda: encoder.encode.remote(q), "query encoder")
        if observe:
            self.drift.observe(**query_drift(q, vec, self.concepts))
        return vec

    async def _results(self, q: str, k: int, encoder, retriever) -> tuple[list, list[str]]:
        """The query's vector and the text branch in parallel (either may fail or time out,
        and is then None), then one call to the retriever: the visual branch's search, fusion
        and reranking where the candidates' docs are."""
        t, depth = self.args.branch_timeout_s, self.args.branch_depth
        observe = encoder is self.encoder and self.drift.monitor is not None  # not the shadow
        with stage("query_branches"):  # the query encoder and the text branch, in parallel
            vec, text = await asyncio.gather(
                asyncio.wait_for(self._encode(encoder, q, observe), t),
                asyncio.wait_for(
                    retry_once(lambda: self.text.search.remote(q, depth), "text branch"), t
                ),
                return_exceptions=True,
            )
        vec = None if isinstance(vec, BaseException) else vec
        text = None if isinstance(text, BaseException) else text
        with stage("visual_fusion_reranking"):
            try:
                kept, degraded = await retry_once(
                    lambda: retriever.rank.remote(
                        vec, text, k, depth, t, time.time(), self.fusion, self.rerank_cfg
                    ),
                    "visual branch",
                )
            except Exception:  # the catalogue is down: no docs to answer with
                logger.exception("video retriever failed")
                raise HTTPException(503, "the catalogue is unavailable; try again") from None
        if kept is None:
            raise HTTPException(503, "both retrieval branches failed; try again")
        return kept, degraded

    async def _run_shadow(self, request: tuple) -> list[int]:
        q, k = request
        kept, _ = await self._results(q, k, self.shadow_encoder, self.shadow_retriever)
        return [f.doc_id for f, _ in kept]

    @api.get("/search", response_model=SearchResponse, summary="Videos matching a text query")
    async def search(
        self,
        request: Request,
        q: str = Query(..., description="the query text"),
        k: int = Query(10, ge=1, le=10_000, description="number of results"),
        caller: Identity = Depends(require("search")),
    ) -> SearchResponse:
        reject_unknown_query(request, {"q", "k"})
        if k > self.args.max_k:
            raise HTTPException(422, f"k={k} is over the maximum of {self.args.max_k}")
        q = _clean_query(q, self.args.max_query_chars)
        t0 = time.perf_counter()
        kept, degraded = await self._results(q, k, self.encoder, self.retriever)
        if self.mirror is not None and not degraded:
            ms = (time.perf_counter() - t0) * 1e3
            self.mirror.maybe_mirror((q, k), [f.doc_id for f, _ in kept], ms)
        root = root_path(request)
        return SearchResponse(
            results=[
                Hit(
                    video_id=f.doc_id,
                    title=d.title,
                    score=f.score,
                    sources=f.sources,
                    thumbnail_url=f"{root}/videos/{f.doc_id}/thumbnail",
                )
                for f, d in kept
            ],
            model_version=self.model_version,
            degraded=degraded,
        )

    @api.post(
        "/videos",
        response_model=IndexResponse,
        status_code=201,
        openapi_extra=UPLOAD_FORM,
        summary="Add a video (upload or URI): decoded, embedded, indexed; durable once answered",
    )
    async def add_video(
        self, request: Request, caller: Identity = Depends(require("write"))
    ) -> IndexResponse:
        reject_unknown_query(request, set())
        if self.indexer is None:
            raise HTTPException(403, "this deployment does not accept new videos (live_log off)")
        form = await read_multipart(
            request, {"video", "uri", *TEXT_FIELDS}, self.args.max_upload_bytes, ["title"]
        )
        try:
            fields = VideoFields.model_validate({k: form[k] for k in TEXT_FIELDS if k in form})
        except ValidationError as e:
            raise invalid_body(e) from None
        doc = {"description": "", "tags": ""} | fields.given()
        doc["owner"] = caller.user  # who may edit or delete it (and admins)
        if ("video" in form) == ("uri" in form):
            raise HTTPException(422, "give exactly one of 'video' (a file) or 'uri'")
        if "uri" in form:  # the indexer reads it (capped) where the frames are decoded
            src = doc["uri"] = check_uri(form["uri"], self.args.allowed_uri_prefixes)
        else:
            src = await read_upload(form, "video", self.args.max_upload_bytes)
        try:
            with stage("indexing"):  # decode, frame encoder, durable log
                out = await asyncio.wait_for(
                    self.indexer.index.remote(src, doc), self.args.index_timeout_s
                )
        except TimeoutError:
            raise HTTPException(
                504, "indexing did not finish in time; try a shorter video"
            ) from None
        if "error" in out:
            reason = out["error"]
            detail = PUBLIC_ERRORS.get(reason, out["detail"])  # limits: our own words, safe
            raise HTTPException(ERROR_STATUS.get(reason, 400), f"{reason}: {detail}")
        return IndexResponse(
            video_id=out["video_id"], frames=out["frames"], duration=out["duration"]
        )

    @api.get(
        "/videos/{video_id}",
        response_model=VideoInfo,
        responses={404: {"description": NOT_FOUND}},
        summary="A video's metadata, duration and thumbnail URL",
    )
    async def get_video(
        self,
        request: Request,
        video_id: int = Path(ge=0, le=PUBLIC_ID_MAX),
        caller: Identity = Depends(require("search")),
    ) -> VideoInfo:
        reject_unknown_query(request, set())
        d = await retry_once(lambda: self.retriever.get.remote(video_id, caller.caller), "get")
        if d is None:
            raise HTTPException(404, NOT_FOUND)
        return _info(d, root_path(request))

    @api.get(
        "/videos/{video_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": NOT_FOUND}},
        summary="A frame of the video as JPEG (?size= to shrink it)",
    )
    async def get_thumbnail(
        self,
        request: Request,
        video_id: int = Path(ge=0, le=PUBLIC_ID_MAX),
        size: int | None = Query(None, ge=16, le=1024, description="the longer side"),
        caller: Identity = Depends(require("search")),
    ) -> Response:
        reject_unknown_query(request, {"size"})
        jpeg = await retry_once(
            lambda: self.retriever.thumbnail.remote(video_id, caller.caller),
            "thumbnail",
        )
        if jpeg is None:
            raise HTTPException(404, NOT_FOUND)
        try:
            body, mime = await asyncio.to_thread(stored_image, jpeg, size)
        except InvalidImage:  # a stored frame we cannot read is ours to log, not the caller's
            raise HTTPException(404, NOT_FOUND) from None
        return Response(body, media_type=mime, headers={"Cache-Control": "private, no-store"})

    async def _change(self, video_id: int, fields: dict | None, caller: Identity):
        with stage("catalogue_change"):  # a write: not retried
            outcome, doc = await self.retriever.change.remote(video_id, fields, caller.caller)
        if outcome == "read_only":
            raise HTTPException(403, "this deployment does not change videos (live_log off)")
        if outcome == "forbidden":
            raise HTTPException(403, "only the video's owner or an admin may change it")
        if outcome == "not_found":
            raise HTTPException(404, NOT_FOUND)
        return doc

    @api.patch(
        "/videos/{video_id}",
        response_model=VideoInfo,
        responses={404: {"description": NOT_FOUND}},
        summary="Edit a video's title, description or tags (owner or admin); durable once answered",
    )
    async def edit_video(
        self,
        request: Request,
        edit: VideoFields,
        video_id: int = Path(ge=0, le=PUBLIC_ID_MAX),
        caller: Identity = Depends(require("write")),
    ) -> VideoInfo:
        reject_unknown_query(request, set())
        fields = edit.given()
        if not fields:
            raise HTTPException(422, "give at least one of title, description, tags")
        doc = await self._change(video_id, fields, caller)
        return _info(doc, root_path(request))

    @api.delete(
        "/videos/{video_id}",
        response_model=Deleted,
        responses={404: {"description": NOT_FOUND}},
        summary="Delete a video (owner or admin); durable once answered",
    )
    async def delete_video(
        self,
        request: Request,
        video_id: int = Path(ge=0, le=PUBLIC_ID_MAX),
        caller: Identity = Depends(require("write")),
    ) -> Deleted:
        reject_unknown_query(request, set())
        await self._change(video_id, None, caller)
        return Deleted(id=video_id)

    @api.get("/healthz", response_model=Liveness, summary="Liveness (open, reveals nothing)")
    async def healthz(self) -> Liveness:
        return Liveness()

    @api.get("/health", response_model=Health, summary="Detailed health (admin)")
    async def health(self, caller: Identity = Depends(require("admin"))) -> Health:
        info = await retry_once(lambda: self.retriever.info.remote(), "health")
        shadow = self.shadow_model.label if self.shadow_model else None
        return Health(status="ok", model_version=self.model_version, catalogue=info, shadow=shadow)

    @api.get("/drift", summary="Served queries vs the texts the model was built for (admin)")
    async def drift(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await self.drift.report()

    @api.get("/shadow", summary="Aggregate shadow-vs-primary comparison (admin)")
    async def shadow(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await shadow_report(
            self.comparator, self.mirror, self.shadow_model.label if self.shadow_model else None
        )


def build_app(args: VideoSearchArgs) -> Application:
    a = args.pinned(local=["object_store"], urls=["live_log"])
    store = a.store()
    shadow_ref = a.pin_models(store)
    a.catalogue = a.catalogue.pin(store, a.artifact_pins)
    a.open_state()  # after the artifacts: what the app loads, then where it writes
    cat = {"catalogue_artifact": a.catalogue.artifact, "catalogue_version": a.catalogue.version}

    def fault(name: str) -> dict:
        return {"fail_with": a.fault_injection.get(name)}

    def encoder(name: str, ref: ModelRef):
        return TextEncoder.options(name=name, user_config=a.model_user_config(name)).bind(
            store_uri=a.store_spec(), **ref.model_dump(), device=a.device
        )

    def retriever_args(ref: ModelRef) -> dict:
        return dict(
            store_uri=a.store_spec(),
            artifact=ref.artifact,
            version=ref.version,
            live_log=a.live_log,
            object_store=a.object_store,
            **cat,
        )

    def retriever(name: str, ref: ModelRef):
        return VideoRetriever.options(name=name, user_config=fault(name)).bind(
            **retriever_args(ref)
        )

    text_args = dict(store_uri=a.store_spec(), live_log=a.live_log, language=a.text_language, **cat)
    branches: dict = {"local_branches": {"retriever": retriever_args(a.model), "text": text_args}}
    if a.branch_placement == "deployments":
        branches = {
            "retriever": retriever("VideoRetriever", a.model),
            "text_search": TextSearch.options(user_config=fault("TextSearch")).bind(**text_args),
        }
    indexer = None
    if a.live_log:
        indexer = VideoIndexer.bind(
            live_log=a.live_log, object_store=a.object_store, sample=a.sample, device=a.device
        )
    shadow = {}
    if (ref := shadow_ref) is not None:
        shadow = {
            "shadow_encoder": encoder("ShadowTextEncoder", ref),
            "shadow_retriever": retriever("ShadowVideoRetriever", ref),
            "comparator": ShadowComparator.bind("overlap@k", 10),
        }
    ingress = VideoSearchIngress.options(user_config=a.ingress_user_config())
    in_ingress = a.encoder_placement == "ingress"
    return ingress.bind(
        a.ingress_args(),
        text_encoder=None if in_ingress else encoder("TextEncoder", a.model),
        **branches,
        indexer=indexer,
        monitor=a.drift_monitor(),
        **shadow,
    )
