"""Harmful content detection (the book's chapter 5) as a Ray Serve application at
``/harmful-content``.

POST /posts      Ingress -> (images: ImageFeatures, the shared backbone) -> HarmClassifier
                 (batched: text encoder + n-gram bag + early-fusion multi-task model) -> Policy
                 (per-head thresholds) -> remove | review | demote | allow, with the heads that
                 drove it. A post in a head's low-confidence band is committed to the review
                 queue (the state layer: one queue for every replica) before the answer leaves.
GET  /reviews    the queue (reviewers: scope ``review``); POST /reviews/{id} a reviewer's labels
                 (idempotent), which ``python -m train.harmful_content`` folds into the next model.
GET  /shadow     a second model on a share of the posts: agreement per head, latency (admin).
"""

import asyncio
import logging
import time
import uuid
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
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
    read_post,
    read_uri,
    reject_unknown_query,
    retry_once,
    setup_edge,
    shadow_report,
)
from deployments import metrics
from deployments.drift import DriftTap
from deployments.harmful_content import HarmClassifier, ImageFeatures
from deployments.metrics import stage
from deployments.shadow import ShadowComparator, ShadowMirror
from mlsd.harmful_content.artifact import CLASSIFIER_FILES, load_policy
from mlsd.harmful_content.features import (
    DEVICES,
    GENDERS,
    InvalidPost,
    clean_text,
    score_drift,
    text_drift,
)
from mlsd.harmful_content.model import ClassifierConfig
from mlsd.harmful_content.policy import Policy, PolicyReport, PolicyTargets, language_rule
from mlsd.harmful_content.review import ReviewConflict, ReviewNotFound, ReviewQueue
from mlsd.image import DEFAULT_MAX_PIXELS, InvalidImage, decode_image

logger = logging.getLogger("ray.serve")
MAX_COUNT = 10**13  # more reactions or followers than people on Earth x 1000: not a real post
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_JSON_BYTES = 512 * 1024


class PolicyTargetsArgs(BaseModel):
    """:class:`mlsd.harmful_content.policy.PolicyTargets` as configuration."""

    model_config = ConfigDict(extra="forbid")

    prevalence: float = Field(0.05, gt=0, lt=1, description="share of posts that are harmful")
    head_prevalence: dict[str, float] = Field(default_factory=dict)
    removal_precision: float = Field(0.9, gt=0, lt=1)
    review_capacity: float = Field(0.05, gt=0, lt=1, description="share of posts reviewable")
    review_min: float = Field(0.2, gt=0, lt=1)
    demote: float | None = Field(None, gt=0, le=1)

    def targets(self) -> PolicyTargets:
        return PolicyTargets(**self.model_dump())


class HarmfulContentArgs(AppArgs):
    """Builder arguments (``args:`` in serve_config.yaml)."""

    backends = tuple(CLASSIFIER_FILES)

    model: ModelRef = Field(
        default_factory=lambda: ModelRef(artifact="harmful_content", backend="onnx")
    )
    review_queue: str = Field(
        "var/harmful_content/reviews.sqlite",
        description="state store of the human-review queue (mlsd.state): a path / sqlite:/// "
        "URL on one node, postgresql+psycopg://user@host/db on a cluster",
    )
    policy_targets: PolicyTargetsArgs = Field(
        default_factory=lambda: PolicyTargetsArgs(),
        description="the platform the policy is fitted for (run-time: user_config)",
    )
    policy: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per-head {remove, review, demote} thresholds on the platform's "
        "probability scale over the fitted ones; key 'default' for heads not named",
    )
    unseen_language: Literal["score", "review"] = Field(
        "score",
        description="a post whose lang the model was not trained on: 'score' it (the "
        "multilingual encoder transfers in part) or send it to 'review'; the answer says which",
    )
    max_text_chars: int = Field(10_000, ge=1, le=1_000_000)
    max_comments: int = Field(50, ge=0, le=1000)
    max_comment_chars: int = Field(2_000, ge=1)
    max_images: int = Field(4, ge=0, le=32)
    max_image_bytes: int = Field(DEFAULT_MAX_IMAGE_BYTES, ge=1)
    max_pixels: int = DEFAULT_MAX_PIXELS
    allowed_uri_prefixes: list[str] = Field(
        default_factory=list, description="where image URLs may point (e.g. s3://bucket/media/)"
    )
    score_timeout_s: float = Field(10.0, gt=0)
    device: str = Field("auto", description="classifier's device: auto (the replica's GPU) | cpu")

    def ingress_user_config(self) -> dict:
        """The policy's targets are run-time tunables: a new capacity refits, no restart."""
        return {
            **super().ingress_user_config(),
            "policy_targets": self.policy_targets.model_dump(),
            "unseen_language": self.unseen_language,
        }

    def max_body(self) -> int:
        return MAX_JSON_BYTES + self.max_images * self.max_image_bytes + limits.MULTIPART_SLACK

    def stores(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        dbs, objects = super().stores()
        return {**dbs, "review_queue": self.review_queue}, objects


class Reactions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    likes: int = Field(0, ge=0, le=MAX_COUNT)
    shares: int = Field(0, ge=0, le=MAX_COUNT)
    comments: int = Field(0, ge=0, le=MAX_COUNT)
    reports: int = Field(0, ge=0, le=MAX_COUNT)


class Author(BaseModel):
    model_config = ConfigDict(extra="forbid")

    past_violations: int | None = Field(None, ge=0, le=MAX_COUNT)
    total_reports: int | None = Field(None, ge=0, le=MAX_COUNT)
    profane_word_rate: float | None = Field(None, ge=0, le=1)
    age: int | None = Field(None, ge=0, le=150)
    gender: Literal[GENDERS] | None = None  # type: ignore[valid-type]
    location: str | None = Field(None, max_length=200)
    account_age_days: int | None = Field(None, ge=0, le=100_000)
    followers: int | None = Field(None, ge=0, le=MAX_COUNT)
    following: int | None = Field(None, ge=0, le=MAX_COUNT)


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hour_of_day: float | None = Field(None, ge=0, lt=24)
    device: Literal[DEVICES] | None = None  # type: ignore[valid-type]


class PostIn(BaseModel):
    """A new post. Only the text (or a medium) is required; every other input may be left out."""

    model_config = ConfigDict(extra="forbid")

    post_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="the platform's id (a retry with it is one post)",
    )
    text: str = Field("", description="post text, any language")
    lang: str | None = Field(None, pattern=r"^[a-z]{2,3}$", description="ISO 639 code, if known")
    comments: list[str] = Field(default_factory=list)
    image_urls: list[str] = Field(default_factory=list, description="under an allowed prefix")
    reactions: Reactions | None = None
    author: Author | None = None
    context: Context | None = None


class Decision(BaseModel):
    post_id: str
    action: Literal["allow", "demote", "review", "remove"]
    reasons: list[str] = Field(description="the heads that asked for the action, surest first")
    scores: dict[str, float]
    review_id: int | None = Field(None, description="set when the post went to human review")
    notes: list[str] = Field(
        default_factory=list, description="what the decision rests on beyond the scores"
    )
    unused_inputs: list[str] = Field(
        default_factory=list, description="inputs this model version has no place for"
    )
    model_version: str


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[str, int] = Field(description="head -> 1 (harmful) / 0 (not), heads of the model")


class Review(BaseModel):
    review_id: int
    post_id: str
    post: dict
    scores: dict[str, float]
    reasons: list[str]
    model: str
    created: float
    status: Literal["pending", "done"]
    labels: dict[str, int] | None = None
    reviewer: str | None = None
    reviewed: float | None = None


class Health(BaseModel):
    status: str
    model_version: str
    heads: list[str]
    inputs: list[str]
    reviews: dict[str, int]
    languages: list[str] = Field(description="the languages the model was trained on")


class PolicyOut(BaseModel):
    targets: dict | None = Field(description="None: an artifact without validation scores")
    review_threshold: float | None
    expected: dict | None = Field(
        description="on validation posts reweighted to the prevalence: benign_allowed, "
        "removal_precision, review share, ..."
    )
    heads: dict = Field(description="per head: thresholds, calibration, what it drives")
    notes: list[str]


POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PostIn"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["post"],
                "properties": {"post": {"type": "string", "description": "PostIn as JSON"},
                               "image": {"type": "array",
                                         "items": {"type": "string", "format": "binary"}}}}},
        },
    }
}  # fmt: skip

api = FastAPI(
    title="Harmful content detection",
    description="Every new post scored for several harms by one multi-task model; the policy "
    "removes, demotes, sends to human review or allows it, and says which harm drove it.",
    version="1",
)
limits.install(api, MAX_JSON_BYTES)
mount_page(api, "harmful_content")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64, max_queued_requests=128
)
@serve.ingress(api)
class HarmfulContentIngress:
    def __init__(
        self,
        args: dict,
        classifier: DeploymentHandle,
        images: DeploymentHandle | None = None,
        shadow_classifier: DeploymentHandle | None = None,
        comparator: DeploymentHandle | None = None,
        monitor: DeploymentHandle | None = None,
    ):
        self.args = HarmfulContentArgs(**args)
        self.auth = setup_edge(api, self.args, self.args.max_body())
        self.classifier, self.images = classifier, images
        self.queue = ReviewQueue(self.args.review_queue)
        metrics.review_queue(self.queue.counts())
        self.model_version = self.args.model.label
        self.shadow_classifier, self.comparator = shadow_classifier, comparator
        self.mirror = ShadowMirror.maybe(self._run_shadow, comparator, self.args.shadow)
        self.drift = DriftTap(monitor)
        store = self.args.store()
        self.art = store.load(self.args.model.artifact, self.args.model.version)
        cfg = ClassifierConfig.from_dict(self.art.config["classifier"])
        self.heads, self.image_dim = list(cfg.heads), cfg.spec.image_dim
        self.inputs = sorted(cfg.spec.modalities())
        self.languages = sorted(self.art.config.get("languages") or [])
        self.shadow_art = None
        if (ref := self.args.shadow_model()) is not None:
            self.shadow_art = store.load(ref.artifact, ref.version)
            self.shadow_heads = list(self.shadow_art.config["classifier"]["heads"])
        self._fit_policy(self.args.policy_targets)

    def _fit_policy(self, targets: PolicyTargetsArgs) -> None:
        """The served policy (and the shadow's) for the platform's targets: fitted once here
        and again when ``reconfigure`` brings new targets."""
        t = targets.targets()
        self.policy, self.policy_report = load_policy(self.art, t, self.args.policy)
        self.shadow_policy: Policy | None = None
        if self.shadow_art is not None:
            self.shadow_policy, _ = load_policy(self.shadow_art, t, self.args.policy)

    def reconfigure(self, config: dict) -> None:
        apply_ingress_config(self.mirror, config)
        if config.get("unseen_language"):
            self.args.unseen_language = config["unseen_language"]
        if config.get("policy_targets") is not None:
            targets = PolicyTargetsArgs(**config["policy_targets"])
            if targets != self.args.policy_targets:
                self._fit_policy(targets)
                self.args.policy_targets = targets

    def check_health(self) -> None:
        """Serve's health check: no traffic while the key store or the review queue is missing
        or unreachable (the error names it)."""
        self.auth.check()
        self.queue.check()

    async def _queue_depth(self) -> None:
        """The review queue's size by status, as a gauge (never fails the request)."""
        try:
            metrics.review_queue(await asyncio.to_thread(self.queue.counts))
        except Exception:
            logger.exception("could not read the review queue's size")

    # -- parsing ----------------------------------------------------------------------------------
    async def _parse(self, request: Request) -> tuple[PostIn, list[bytes]]:
        return await read_post(
            request,
            PostIn,
            max_json_bytes=MAX_JSON_BYTES,
            max_files=self.args.max_images,
            max_file_bytes=self.args.max_image_bytes,
        )

    def _clean(self, post: PostIn, n_images: int) -> dict:
        a = self.args
        try:
            text = clean_text(post.text, a.max_text_chars)
            if len(post.comments) > a.max_comments:
                raise InvalidPost(f"{len(post.comments)} comments; the limit is {a.max_comments}")
            comments = [clean_text(c, a.max_comment_chars, "a comment") for c in post.comments]
        except InvalidPost as e:
            raise HTTPException(422, str(e)) from None
        if n_images + len(post.image_urls) > a.max_images:
            raise HTTPException(422, f"at most {a.max_images} images per post")
        if not text and not n_images and not post.image_urls:
            raise HTTPException(422, "a post needs text or an image")
        dump = lambda m: m.model_dump(exclude_none=True) if m is not None else None  # noqa: E731
        return {
            "text": text,
            "comments": [c for c in comments if c],
            "reactions": dump(post.reactions),
            "author": dump(post.author),
            "context": dump(post.context),
        }

    async def _image_bytes(self, post: PostIn, uploads: list[bytes]) -> list[bytes]:
        cap, prefixes = self.args.max_image_bytes, self.args.allowed_uri_prefixes
        return list(uploads) + [await read_uri(u, prefixes, cap) for u in post.image_urls]

    async def _image_vectors(self, data: list[bytes]) -> list | None:
        """Backbone vectors when the model takes images; otherwise the images are still
        decoded (a non-image is a 4xx whatever the model) and reported unused."""
        try:
            if self.image_dim and self.images is not None:
                return list(await asyncio.gather(*(self.images.encode.remote(b) for b in data)))
            for b in data:
                await asyncio.to_thread(
                    decode_image, b, self.args.max_image_bytes, self.args.max_pixels, 224
                )
        except InvalidImage as e:
            raise HTTPException(e.status, str(e)) from None
        return None

    # -- routes ---------------------------------------------------------------------------------
    @api.post(
        "/posts",
        response_model=Decision,
        openapi_extra=POST_BODY,
        summary="Score a new post for every harm; decide what happens to it",
    )
    async def score_post(
        self, request: Request, caller: Identity = Depends(require("write"))
    ) -> Decision:
        reject_unknown_query(request, set())
        post, uploads = await self._parse(request)
        features = self._clean(post, len(uploads))
        data = await self._image_bytes(post, uploads)
        with stage("image_features"):
            vectors = await self._image_vectors(data) if data else None
        unused = ["images"] if data and vectors is None else []
        if vectors:
            features["images"] = vectors
        t0 = time.perf_counter()
        try:
            with stage("classification"):
                probs = await asyncio.wait_for(
                    retry_once(  # scoring is idempotent
                        lambda: self.classifier.score.remote(features), "classification"
                    ),
                    self.args.score_timeout_s,
                )
        except TimeoutError:
            raise HTTPException(503, "scoring timed out; retry the post") from None
        except Exception:
            raise HTTPException(503, "scoring failed; retry the post") from None
        ms = (time.perf_counter() - t0) * 1e3
        raw = {h: float(p) for h, p in zip(self.heads, probs, strict=True)}
        self.drift.observe(**text_drift(features["text"]), **score_drift(self.heads, probs))
        decision = self.policy.decide(raw)
        notes = language_rule(decision, post.lang, self.languages, self.args.unseen_language)
        scores = {h: round(q, 6) for h, q in decision.scores.items()}
        post_id = post.post_id or uuid.uuid4().hex
        review_id = None
        if decision.action == "review":  # committed before the answer: nothing accepted is lost
            stored = {
                "post_id": post_id,
                "owner": caller.user,
                "lang": post.lang,
                "image_urls": post.image_urls,
                "images_uploaded": len(uploads),
                **{k: v for k, v in features.items() if k != "images"},
            }
            try:
                with stage("review_queue"):
                    review_id = await asyncio.to_thread(
                        self.queue.enqueue,
                        f"{caller.user}/{post_id}",
                        stored,
                        scores,
                        decision.reasons,
                        self.model_version,
                    )
            except Exception:
                raise HTTPException(503, "review queue unavailable; retry the post") from None
            await self._queue_depth()
        if self.mirror is not None:
            self.mirror.maybe_mirror(features, self._summary(decision, self.policy), ms)
        return Decision(
            post_id=post_id,
            action=decision.action,
            reasons=decision.reasons,
            scores=scores,
            review_id=review_id,
            notes=notes,
            unused_inputs=unused,
            model_version=self.model_version,
        )

    @staticmethod
    def _summary(decision, policy: Policy) -> dict:
        """What the shadow comparison needs: the action and the heads that object at all."""
        flagged = [
            h
            for h, p in decision.scores.items()
            if policy.heads.get(h, policy.default).action(p) != "allow"
        ]
        return {"action": decision.action, "flagged": flagged, "heads": list(decision.scores)}

    async def _run_shadow(self, features: dict) -> dict:
        probs = await self.shadow_classifier.score.remote(features)
        scores = {h: float(p) for h, p in zip(self.shadow_heads, probs, strict=True)}
        return self._summary(self.shadow_policy.decide(scores), self.shadow_policy)

    @api.get(
        "/reviews",
        response_model=list[Review],
        summary="The human-review queue, oldest first (reviewers)",
    )
    async def reviews(
        self,
        request: Request,
        status: Literal["pending", "done"] = Query("pending"),
        limit: int = Query(50, ge=1, le=500),
        caller: Identity = Depends(require("review")),
    ) -> list[Review]:
        reject_unknown_query(request, {"status", "limit"})
        rows = await asyncio.to_thread(self.queue.list, status, limit)
        return [Review(**{**r, "post_id": r["post"].get("post_id", r["post_id"])}) for r in rows]

    @api.get("/reviews/{review_id}", response_model=Review, summary="One review (reviewers)")
    async def review(
        self, review_id: int = Path(ge=0), caller: Identity = Depends(require("review"))
    ) -> Review:
        try:
            r = await asyncio.to_thread(self.queue.get, review_id)
        except ReviewNotFound:
            raise HTTPException(404, "no such review") from None
        return Review(**{**r, "post_id": r["post"].get("post_id", r["post_id"])})

    @api.post(
        "/reviews/{review_id}",
        response_model=Review,
        summary="A reviewer's labels for a queued post (idempotent)",
    )
    async def submit_review(
        self,
        body: ReviewIn,
        review_id: int = Path(ge=0),
        caller: Identity = Depends(require("review")),
    ) -> Review:
        heads = self.heads
        unknown = sorted(set(body.labels) - set(heads))
        if unknown or not body.labels:
            extra = f"; unknown: {', '.join(unknown)}" if unknown else ""
            raise HTTPException(422, f"labels name heads of the model ({', '.join(heads)}){extra}")
        if any(v not in (0, 1) for v in body.labels.values()):
            raise HTTPException(422, "a label is 0 (not harmful) or 1 (harmful)")
        try:
            r = await asyncio.to_thread(self.queue.submit, review_id, body.labels, caller.user)
            await self._queue_depth()
        except ReviewNotFound:
            raise HTTPException(404, "no such review") from None
        except ReviewConflict as e:
            raise HTTPException(409, str(e)) from None
        return Review(**{**r, "post_id": r["post"].get("post_id", r["post_id"])})

    @api.get("/drift", summary="Served posts and scores vs the validation posts (admin)")
    async def drift(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await self.drift.report()

    @api.get("/shadow", summary="Shadow model vs primary: agreement per head, latency (admin)")
    async def shadow(self, caller: Identity = Depends(require("admin"))) -> dict:
        label = self.args.shadow_model().label if self.args.shadow else None
        report = await shadow_report(self.comparator, self.mirror, label)
        totals, done = report.get("totals", {}), report.get("completed") or 0
        if done:
            report["action_agreement"] = report.get("mean_score")
            report["head_agreement"] = {
                k.split("/", 1)[1]: 1 - v / done
                for k, v in totals.items()
                if k.startswith("disagree/")
            }
        return report

    @api.get("/healthz", response_model=Liveness, summary="Liveness (open, reveals nothing)")
    async def healthz(self) -> Liveness:
        return Liveness()

    @api.get("/health", response_model=Health, summary="Detailed health (admin)")
    async def health(self, caller: Identity = Depends(require("admin"))) -> Health:
        counts = await asyncio.to_thread(self.queue.counts)
        return Health(
            status="ok",
            model_version=self.model_version,
            heads=self.heads,
            inputs=self.inputs,
            reviews=counts,
            languages=self.languages,
        )

    @api.get(
        "/policy",
        response_model=PolicyOut,
        summary="The served policy: targets, thresholds, what it expects (admin)",
    )
    async def policy_info(self, caller: Identity = Depends(require("admin"))) -> PolicyOut:
        r: PolicyReport | None = self.policy_report
        heads = {h: {"thresholds": vars(t)} for h, t in self.policy.heads.items()}
        for h, c in self.policy.calibration.items():
            heads.setdefault(h, {})["calibration"] = vars(c)
        for h, info in (r.heads if r else {}).items():
            heads.setdefault(h, {}).update(info)
        notes = (
            r.notes
            if r
            else [
                "this model version has no validation scores: its tuned "
                "thresholds serve on raw probabilities (retrain to fit a "
                "platform's policy)"
            ]
        )
        return PolicyOut(
            targets=r.targets if r else None,
            review_threshold=r.review_threshold if r else None,
            expected=r.expected if r else None,
            heads=heads,
            notes=notes,
        )


def build_app(args: HarmfulContentArgs) -> Application:
    a = args.pinned(urls=["review_queue"])
    store = a.store()
    shadow = a.pin_models(store)
    art = store.load(a.model.artifact, a.model.version)
    load_policy(art, a.policy_targets.targets(), a.policy)  # bad thresholds: fail now
    a.open_state()  # after the artifacts: what the app loads, then where it writes
    classifier = HarmClassifier.options(user_config=a.model_user_config("HarmClassifier")).bind(
        store_uri=a.store_spec(),
        artifact=a.model.artifact,
        version=a.model.version,
        backend=a.model.backend,
        device=a.device,
        server=a.runner_server(a.model),
    )
    extra: dict = {}
    needs_images = art.config["classifier"]["spec"].get("image_dim", 0)
    if shadow is not None:
        s_art = store.load(shadow.artifact, shadow.version)
        needs_images = needs_images or s_art.config["classifier"]["spec"].get("image_dim", 0)
        extra["shadow_classifier"] = HarmClassifier.options(
            name="ShadowHarmClassifier", user_config=a.model_user_config("ShadowHarmClassifier")
        ).bind(
            store_uri=a.store_spec(),
            artifact=shadow.artifact,
            version=shadow.version,
            backend=shadow.backend,
            device=a.device,
            server=a.runner_server(shadow),
        )
        extra["comparator"] = ShadowComparator.bind("head_agreement", 0)
    if needs_images:
        extra["images"] = ImageFeatures.options(
            user_config=a.model_user_config("ImageFeatures")
        ).bind(max_bytes=a.max_image_bytes, max_pixels=a.max_pixels, device=a.device)
    ingress = HarmfulContentIngress.options(user_config=a.ingress_user_config())
    return ingress.bind(a.ingress_args(), classifier=classifier, monitor=a.drift_monitor(), **extra)
