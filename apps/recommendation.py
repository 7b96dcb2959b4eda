"""Video recommendation (the book's sequential hybrid) as a Ray Serve application at
``/recommendations``.

GET  /users/{user_id}: CandidateGeneration (WALS + faiss; cold start) -> Ranking (batched
content-aware model) -> reranking rules (in the ingress: cheap, no model) -> top k.
POST /events: feedback committed to the durable interaction log before it is acknowledged.
GET  /videos/{video_id}: a catalogue entry. DELETE /users/{user_id}/history: the user's logged
events deleted and what the serving model learnt of them set aside (a tombstone in the log).
A shadow ranking model version gets a share of the traffic through the shared mechanism.
"""

import asyncio
import time
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from apps import limits
from apps.auth import Identity, require
from apps.common import (
    AppArgs,
    Liveness,
    ModelRef,
    apply_ingress_config,
    mount_page,
    reject_unknown_query,
    retry_once,
    setup_edge,
    shadow_report,
)
from deployments.drift import DriftTap
from deployments.metrics import stage
from deployments.recommendation import CandidateGeneration, Ranking
from deployments.shadow import ShadowComparator, ShadowMirror
from mlsd.recommendation.artifact import RANKER_FILES, load_platform_ids, load_tables
from mlsd.recommendation.events import EVENT_STRENGTH, EventLog
from mlsd.recommendation.ids import MAX_KEY_CHARS, IdMap, ParsedId, UnknownIdForm
from mlsd.recommendation.pipeline import (
    UserCandidates,
    event_drift,
    final_ranking,
    request_drift,
)
from mlsd.recommendation.rerank import RecRerankConfig

MAX_TS = 4_102_444_800  # 2100-01-01: later timestamps are an error, not the future


class RecommendationArgs(AppArgs):
    """Builder arguments (``args:`` in serve_config.yaml)."""

    backends = tuple(RANKER_FILES)

    model: ModelRef = Field(
        default_factory=lambda: ModelRef(artifact="recommendation"),
        description="recommendation artifact; backend = the ranking model's runner (torch|onnx)",
    )
    events_log: str | None = Field(
        "var/recommendation/events.db",
        description="state store of feedback events and forgets (mlsd.state): a path / "
        "sqlite:/// URL on one node, postgresql+psycopg://user@host/db on a cluster; None = off",
    )
    n_candidates: int = Field(200, ge=1, le=10_000, description="candidates sent to ranking")
    max_k: int = Field(100, ge=1, le=1_000)
    rerank: dict = Field(default_factory=dict, description="RecRerankConfig fields")
    device: str = Field("auto", description="ranking device: auto (the replica's GPU) | cpu")

    def stores(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        dbs, objects = super().stores()
        return {**dbs, "events_log": self.events_log}, objects


# a platform's id: a JSON integer or string (the artifact says which the deployment takes;
# mlsd.recommendation.ids)
PlatformId = (
    Annotated[StrictInt, Field(ge=0, le=2**62 - 1)]
    | Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]
)
ID_DOC = "the platform's id (MovieLens's integers in the demo; your log's own ids otherwise)"


class Item(BaseModel):
    video_id: int | str
    title: str
    score: float


class CatalogueVideo(BaseModel):
    video_id: int | str
    title: str
    year: int | None
    genres: list[str]
    release_ts: int | None = Field(description="Unix seconds (None: unknown)")
    interactions: int = Field(description="in the training log")


class HistoryDeleted(BaseModel):
    user_id: int | str
    events_removed: int = Field(description="logged events deleted by this call")
    forgotten: bool = Field(
        True, description="recommendations no longer use the history (until they log more)"
    )


class Recommendations(BaseModel):
    items: list[Item]
    model_version: str
    strategy: str = Field(description="personal | fold_in | demographic | popular")


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: PlatformId = Field(description=ID_DOC)
    video_id: PlatformId = Field(description=ID_DOC)
    event: str = Field(description=f"one of: {', '.join(sorted(EVENT_STRENGTH))}")
    timestamp: Annotated[StrictInt, Field(ge=0, le=MAX_TS, description="Unix seconds")]
    rating: float | None = Field(None, ge=1, le=5, description="explicit rating, if any")

    @field_validator("event")
    @classmethod
    def known_event(cls, v: str) -> str:
        if v not in EVENT_STRENGTH:
            raise ValueError(f"unknown event {v!r}; one of: {', '.join(sorted(EVENT_STRENGTH))}")
        return v


class EventAck(BaseModel):
    event_id: int
    unknown_user: bool
    unknown_video: bool


class Health(BaseModel):
    status: str
    model_version: str
    candidates: dict
    events: dict | None
    shadow: str | None


api = FastAPI(
    title="Video recommendation",
    description="Personalised videos from candidate generation, ranking and reranking "
    "(the book's video recommendation system); feedback events for the next training run.",
    version="1",
)
limits.install(api, 64 * 1024)  # JSON bodies only
mount_page(api, "recommendation")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=128, max_queued_requests=256
)
@serve.ingress(api)
class RecommendationIngress:
    def __init__(
        self,
        args: dict,
        candidates: DeploymentHandle,
        ranking: DeploymentHandle,
        shadow_ranking: DeploymentHandle | None = None,
        comparator: DeploymentHandle | None = None,
        monitor: DeploymentHandle | None = None,
    ):
        self.args = RecommendationArgs(**args)
        self.auth = setup_edge(api, self.args, 64 * 1024)
        art = self.args.store().load(self.args.model.artifact, self.args.model.version)
        self.tables = load_tables(art)
        self.ids = load_platform_ids(art)
        self.model_version = self.args.model.label
        self.shadow_model = self.args.shadow_model()
        self.rerank_cfg = RecRerankConfig(**self.args.rerank)
        self.log = EventLog(self.args.events_log) if self.args.events_log else None
        self.candidates, self.ranking = candidates, ranking
        self.shadow_ranking, self.comparator = shadow_ranking, comparator
        self.mirror = ShadowMirror.maybe(self._run_shadow, comparator, self.args.shadow)
        self.drift = DriftTap(monitor)

    def reconfigure(self, config: dict) -> None:
        apply_ingress_config(self.mirror, config)

    def check_health(self) -> None:
        """Serve's health check: no traffic while the key store or the event log is missing or
        unreachable (the error names it)."""
        self.auth.check()
        if self.log is not None:
            self.log.check()

    @staticmethod
    def _id(ids: IdMap, value: int | str, field: str | None = None) -> ParsedId:
        """A platform's id from a request (path or body) -> the model's and the log's ids;
        422 naming the field for an id this deployment cannot take."""
        try:
            return ids.parse(value)
        except UnknownIdForm as e:
            raise HTTPException(422, f"{field}: {e}" if field else str(e)) from None

    def _known_user(self, user: ParsedId) -> bool:
        """In the model's id map, or (integer ids) a user of MovieLens's tables."""
        if self.ids.users.mapped:
            return user.model >= 0
        return self.tables.is_known_user(user.model)

    def _final(self, cands: UserCandidates, scores, k: int, now: int):
        return final_ranking(cands, scores, k, now, self.tables, self.rerank_cfg)

    async def _run_shadow(self, request: tuple) -> list[int]:
        cands, req, k, now = request
        scores = await self.shadow_ranking.rank.remote(req)
        return self._final(cands, scores, k, now)[0].tolist()

    @api.get(
        "/users/{user_id}",
        response_model=Recommendations,
        summary="Top k videos for a user (unknown or new users get cold-start candidates)",
    )
    async def recommend(
        self,
        request: Request,
        user_id: str = Path(max_length=MAX_KEY_CHARS, description=ID_DOC),
        k: int = Query(10, ge=1, le=1_000, description="number of videos"),
        at: int | None = Query(
            None, ge=0, le=MAX_TS, description="request time, Unix seconds (default: now)"
        ),
        caller: Identity = Depends(require("search")),
    ) -> Recommendations:
        reject_unknown_query(request, {"k", "at"})
        user = self._id(self.ids.users, user_id)
        caller.acting_as(user.key)  # a user's recommendations reveal their history
        if k > self.args.max_k:
            raise HTTPException(422, f"k={k} is over the maximum of {self.args.max_k}")
        t0 = time.perf_counter()
        now = int(time.time()) if at is None else at
        with stage("candidate_generation"):
            cands: UserCandidates = await retry_once(
                lambda: self.candidates.generate.remote(
                    user.model, max(self.args.n_candidates, k), user.log
                ),
                "candidate generation",
            )
        req = cands.rank_request(now)  # None: cold start, the popularity order is final
        with stage("ranking"):
            scores = None
            if req is not None:
                scores = await retry_once(lambda: self.ranking.rank.remote(req), "ranking")
        with stage("reranking"):
            items, final = self._final(cands, scores, k, now)
        self.drift.observe(**request_drift(cands, final, scores is not None))
        if self.mirror is not None and req is not None:
            ms = (time.perf_counter() - t0) * 1e3
            self.mirror.maybe_mirror((cands, req, k, now), items.tolist(), ms)
        return Recommendations(
            items=[
                Item(
                    video_id=self.ids.videos.public(i),
                    title=self.tables.titles[int(i)],
                    score=float(s),
                )
                for i, s in zip(items, final, strict=True)
            ],
            model_version=self.model_version,
            strategy=cands.strategy,
        )

    @api.post(
        "/events",
        response_model=EventAck,
        status_code=201,
        summary="Record feedback (durable once acknowledged; unknown ids are kept and flagged)",
    )
    async def record_event(
        self, event: Event, caller: Identity = Depends(require("write"))
    ) -> EventAck:
        user = self._id(self.ids.users, event.user_id, "user_id")
        video = self._id(self.ids.videos, event.video_id, "video_id")
        caller.acting_as(user.key)  # feedback only for oneself (admin: anyone)
        if self.log is None:
            raise HTTPException(403, "this deployment does not record events (events_log off)")
        unknown_video = not self.tables.is_known_video(video.model)
        unknown_user = not self._known_user(user)
        with stage("event_log"):  # durable once this returns
            event_id = await asyncio.to_thread(
                self.log.append,
                user.log,
                video.log,
                event.event,
                event.timestamp,
                event.rating,
                unknown_user,
                unknown_video,
            )
        self.drift.observe(**event_drift(self.tables, user.model, video.model))
        return EventAck(event_id=event_id, unknown_user=unknown_user, unknown_video=unknown_video)

    @api.get(
        "/videos/{video_id}",
        response_model=CatalogueVideo,
        responses={404: {"description": "no video with this id"}},
        summary="A catalogue entry (title, year, genres)",
    )
    async def get_video(
        self,
        request: Request,
        video_id: str = Path(max_length=MAX_KEY_CHARS, description=ID_DOC),
        caller: Identity = Depends(require("search")),
    ) -> CatalogueVideo:
        reject_unknown_query(request, set())
        t = self.tables
        video_id = self._id(self.ids.videos, video_id).model
        if not t.is_known_video(video_id):
            raise HTTPException(404, "no video with this id")
        return CatalogueVideo(
            video_id=self.ids.videos.public(video_id),
            title=t.titles[video_id],
            year=int(t.year[video_id]) or None,
            genres=[g for g, on in zip(t.genre_names, t.genres[video_id], strict=True) if on > 0],
            release_ts=int(t.release_ts[video_id]) or None,
            interactions=int(t.popularity[video_id]),
        )

    @api.delete(
        "/users/{user_id}/history",
        response_model=HistoryDeleted,
        summary="Forget a user's watch history (the user or an admin); durable once answered",
    )
    async def delete_history(
        self,
        request: Request,
        user_id: str = Path(max_length=MAX_KEY_CHARS, description=ID_DOC),
        caller: Identity = Depends(require("write")),
    ) -> HistoryDeleted:
        reject_unknown_query(request, set())
        user = self._id(self.ids.users, user_id)
        caller.acting_as(user.key)  # one's own history (admin: anyone's)
        if self.log is None:
            raise HTTPException(403, "this deployment keeps no event log (events_log off)")
        with stage("forget_history"):  # one transaction: events deleted + tombstone
            removed = await asyncio.to_thread(self.log.forget, user.log, caller.user)
        return HistoryDeleted(user_id=self.ids.users.answer(user.key), events_removed=removed)

    @api.get("/healthz", response_model=Liveness, summary="Liveness (open, reveals nothing)")
    async def healthz(self) -> Liveness:
        return Liveness()

    @api.get("/health", response_model=Health, summary="Detailed health (admin)")
    async def health(self, caller: Identity = Depends(require("admin"))) -> Health:
        info = await retry_once(lambda: self.candidates.info.remote(), "health")
        events = await asyncio.to_thread(self.log.flagged) if self.log is not None else None
        shadow = self.shadow_model.label if self.shadow_model else None
        return Health(
            status="ok",
            model_version=self.model_version,
            candidates=info,
            events=events,
            shadow=shadow,
        )

    @api.get("/drift", summary="Served events and requests vs the training log (admin)")
    async def drift(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await self.drift.report()

    @api.get("/shadow", summary="Aggregate shadow-vs-primary ranking comparison (admin)")
    async def shadow(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await shadow_report(
            self.comparator, self.mirror, self.shadow_model.label if self.shadow_model else None
        )


def build_app(args: RecommendationArgs) -> Application:
    a = args.pinned(urls=["events_log"])
    store = a.store()
    shadow_ref = a.pin_models(store)
    a.open_state()  # after the artifacts: what the app loads, then where it writes

    def ranking(name: str, ref: ModelRef):
        return Ranking.options(name=name, user_config=a.model_user_config(name)).bind(
            store_uri=a.store_spec(), **ref.model_dump(), device=a.device
        )

    candidates = CandidateGeneration.bind(
        store_uri=a.store_spec(),
        artifact=a.model.artifact,
        version=a.model.version,
        events_log=a.events_log,
    )
    shadow = {}
    if (ref := shadow_ref) is not None:
        shadow = {
            "shadow_ranking": ranking("ShadowRanking", ref),
            "comparator": ShadowComparator.bind("overlap@k", 10),
        }
    ingress = RecommendationIngress.options(user_config=a.ingress_user_config())
    return ingress.bind(
        a.ingress_args(),
        candidates=candidates,
        ranking=ranking("Ranking", a.model),
        monitor=a.drift_monitor(),
        **shadow,
    )
