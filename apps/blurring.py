"""Street View blurring (the book's chapter 3) as a Ray Serve application at ``/blurring``.

POST /images  Ingress ─> Preprocess (decode, EXIF orientation, validate) ─> Detector (batched;
              faces + plates; NMS; an ensemble is configuration) ─> Preprocess.blur (Gaussian or
              pixelation, margin, elliptical faces) ─> object store (blurred JPEG, no EXIF)
GET /images/{id}  the blurred JPEG (its uploader, or admin)

Privacy invariants: only blurred images are stored or returned (originals only with
``store_originals``); a detector that fails or times out fails the request (503), it never
lets an unblurred image through.
"""

import asyncio
import time
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from apps import limits
from apps.auth import Identity, require
from apps.common import (
    AppArgs,
    ArtifactRef,
    Liveness,
    ModelRef,
    apply_ingress_config,
    mount_page,
    multipart_openapi,
    read_multipart,
    read_upload,
    reject_unknown_query,
    retry_once,
    setup_edge,
    shadow_report,
)
from deployments.blurring import Detector, Preprocess
from deployments.drift import DriftTap
from deployments.metrics import stage
from deployments.shadow import ShadowComparator, ShadowMirror, ShadowTraffic
from mlsd.artifacts import model_label
from mlsd.blurring.artifact import check_member, member_artifact, with_thresholds
from mlsd.blurring.backends import SERVED_MEMBERS
from mlsd.blurring.data import LABELS
from mlsd.blurring.features import drift_features
from mlsd.blurring.store import BlurredStore
from mlsd.image import DEFAULT_MAX_PIXELS, InvalidImage
from mlsd.state import may_see

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# faces and plates: our trained FCOS (artifact blurring_fcos) + CenterFace's int8 graph
DEFAULT_MEMBERS = SERVED_MEMBERS


class DetectorArgs(BaseModel):
    """The served detector: one backend or an ensemble (union, then fusion of overlapping
    boxes), each cut at its served threshold (a float, or per class ``{face: .., plate: ..}``).
    ``enclose`` fusion blurs the box enclosing each overlapping group (highest coverage on
    validation); ``nms`` keeps the best-scoring box, ``wbf`` their score-weighted mean."""

    model_config = ConfigDict(extra="forbid")

    members: list[dict] = Field(default_factory=lambda: [dict(m) for m in DEFAULT_MEMBERS])
    long_side: int = Field(1024, ge=64, le=8192)
    nms_iou: float = Field(0.5, gt=0, le=1)
    fusion: Literal["nms", "wbf", "enclose"] = "enclose"

    def label(self) -> str:
        parts = []
        for m in self.members:
            name = m["kind"]
            if art := member_artifact(m):  # ours, CenterFace's int8: <artifact>/<version>:<backend>
                name = model_label(art, m.get("version"), m.get("backend", "torch"))
            name += f"_{m['long_side']}" if m.get("long_side") else ""  # e.g. centerface_2048
            t = m.get("threshold")
            t = ",".join(f"{k}={v}" for k, v in t.items()) if isinstance(t, dict) else t
            parts.append(f"{name}@{t}")
        return "+".join(parts)


class BlurShadowArgs(ShadowTraffic):
    """A second detector configuration on a share of the requests, compared by box agreement
    (matched F1 at IoU 0.5) and by what each would have left unblurred."""

    detector: DetectorArgs


class BlurringArgs(AppArgs):
    """Builder arguments (``args:`` in serve_config.yaml)."""

    model: ModelRef | None = None  # the detector is `detector:` (it may hold no artifact)
    detector: DetectorArgs = Field(default_factory=DetectorArgs)
    shadow: BlurShadowArgs | None = None
    output_store: str = Field(
        "var/blurring/images",
        description="object store of blurred outputs: a folder, or s3://bucket/prefix on a cluster",
    )
    store_originals: bool = Field(False, description="keep the unblurred upload (off: never)")
    blur: dict = Field(default_factory=dict, description="mlsd.blurring.blur.BlurConfig fields")
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    detect_timeout_s: float = Field(30.0, gt=0)
    device: str = Field("auto", description="detector device: auto (the replica's GPU) | cpu")

    def pin_models(self, store) -> None:
        """The members' artifacts (ours, CenterFace's int8 graph) pinned from ``latest`` to
        concrete, checked versions."""
        shadow = self.shadow.detector.members if self.shadow else []
        for m in self.detector.members + shadow:
            if name := member_artifact(m):
                ref = ModelRef(artifact=name, version=m.get("version", "latest"))
                m["version"] = ref.pin(store, self.artifact_pins).version
                # the graph its backend runs is there: serve run fails here, no replica does
                # (the manifest alone: pin has just verified the files); "validated": the
                # numbers that version was validated at, in every replica and the label
                art = store.load(name, m["version"], verify=False)
                check_member(art, m)
                m.update(with_thresholds(art, m))

    def stores(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        dbs, objects = super().stores()
        return dbs, {**objects, "output_store": self.output_store}


class Box(BaseModel):
    label: str
    score: float
    box: list[float] = Field(description="x1, y1, x2, y2 in the (EXIF-oriented) image's pixels")


class BlurResponse(BaseModel):
    image_id: str
    boxes: list[Box]
    url: str
    model_version: str


class Health(BaseModel):
    status: str
    model_version: str
    output_store: str


IMAGE_FORM = multipart_openapi({"image": {"type": "string", "format": "binary"}}, ["image"])

api = FastAPI(
    title="Street View blurring",
    description="Faces and licence plates found and blurred before an image is published "
    "(the book's Street View blurring system).",
    version="1",
)
limits.install(api, DEFAULT_MAX_BYTES + limits.MULTIPART_SLACK)
mount_page(api, "blurring")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64, max_queued_requests=128
)
@serve.ingress(api)
class BlurringIngress:
    def __init__(
        self,
        args: dict,
        preprocess: DeploymentHandle,
        detector: DeploymentHandle,
        shadow_detector: DeploymentHandle | None = None,
        comparator: DeploymentHandle | None = None,
        monitor: DeploymentHandle | None = None,
    ):
        self.args = BlurringArgs(**args)
        self.auth = setup_edge(api, self.args, self.args.max_upload_bytes + limits.MULTIPART_SLACK)
        self.store = BlurredStore(self.args.output_store)
        self.preprocess, self.detector = preprocess, detector
        self.model_version = self.args.detector.label()
        self.shadow_detector, self.comparator = shadow_detector, comparator
        self.mirror = ShadowMirror.maybe(self._run_shadow, comparator, self.args.shadow)
        self.drift = DriftTap(
            monitor,
            "drift monitoring is off in this app's config"
            if self.args.drift is None
            else "no detector of ours is served (the reference is in our detector's artifact)",
        )

    def reconfigure(self, config: dict) -> None:
        apply_ingress_config(self.mirror, config)

    def check_health(self) -> None:
        """Serve's health check: no traffic while the key store or the output store is missing
        or unreachable (the error names it)."""
        self.auth.check()
        self.store.check()

    @staticmethod
    def _rows(det) -> list[list[float]]:
        return [[float(lab), *map(float, b)] for b, lab in zip(det.boxes, det.labels, strict=True)]

    async def _run_shadow(self, image) -> list[list[float]]:
        return self._rows(await self.shadow_detector.detect.remote(image))

    @api.post(
        "/images",
        response_model=BlurResponse,
        status_code=201,
        openapi_extra=IMAGE_FORM,
        summary="Blur every face and plate of an image; store the blurred copy",
    )
    async def blur_image(
        self, request: Request, caller: Identity = Depends(require("write"))
    ) -> BlurResponse:
        reject_unknown_query(request, set())
        form = await read_multipart(request, {"image"}, self.args.max_upload_bytes, ["image"])
        data = await read_upload(form, "image", self.args.max_upload_bytes)
        try:
            with stage("decode"):
                image = await retry_once(lambda: self.preprocess.prepare.remote(data), "decode")
        except InvalidImage as e:
            raise HTTPException(e.status, str(e)) from None
        self.drift.observe(**drift_features(image))
        t0 = time.perf_counter()
        try:  # no detections, no image: a failed detector never lets the original through
            with stage("detection"):
                det = await asyncio.wait_for(
                    retry_once(lambda: self.detector.detect.remote(image), "detection"),
                    self.args.detect_timeout_s,
                )
        except TimeoutError:
            raise HTTPException(503, "detection timed out; the image was not published") from None
        except Exception:
            raise HTTPException(503, "detection failed; the image was not published") from None
        if self.mirror is not None:
            self.mirror.maybe_mirror(image, self._rows(det), (time.perf_counter() - t0) * 1e3)
        with stage("blur"):
            jpeg = await retry_once(lambda: self.preprocess.blur.remote(image, det), "blur")
        image_id = self.store.new_id()
        boxes = [
            Box(label=LABELS[int(lab)], score=float(s), box=[round(float(v), 1) for v in b])
            for b, s, lab in zip(det.boxes, det.scores, det.labels, strict=True)
        ]
        meta = {
            "owner": caller.user,
            "created": time.time(),
            "model_version": self.model_version,
            "boxes": [b.model_dump() for b in boxes],
        }
        original = data if self.args.store_originals else None
        with stage("store"):
            await asyncio.to_thread(self.store.put, image_id, jpeg, meta, original)
        return BlurResponse(
            image_id=image_id,
            boxes=boxes,
            url=f"images/{image_id}",
            model_version=self.model_version,
        )

    @api.get(
        "/images/{image_id}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
        summary="The blurred JPEG (its uploader, or admin)",
    )
    async def get_image(
        self,
        image_id: str = Path(pattern=r"^[0-9a-f]{32}$", description="from POST /images"),
        caller: Identity = Depends(require("search")),
    ) -> Response:
        try:
            jpeg, meta = await asyncio.to_thread(self.store.get, image_id)
        except KeyError:
            raise HTTPException(404, "no such image") from None
        if not may_see(caller.caller, meta.get("owner"), private=True):
            raise HTTPException(404, "no such image")  # not 403: ids of others stay unknown
        return Response(jpeg, media_type="image/jpeg")

    @api.get("/drift", summary="Served images vs the detector's training photos (admin)")
    async def drift(self, caller: Identity = Depends(require("admin"))) -> dict:
        return await self.drift.report()

    @api.get("/shadow", summary="Shadow detector vs primary: box F1, would-have-leaked (admin)")
    async def shadow(self, caller: Identity = Depends(require("admin"))) -> dict:
        label = self.args.shadow.detector.label() if self.args.shadow else None
        return await shadow_report(self.comparator, self.mirror, label)

    @api.get("/healthz", response_model=Liveness, summary="Liveness (open, reveals nothing)")
    async def healthz(self) -> Liveness:
        return Liveness()

    @api.get("/health", response_model=Health, summary="Detailed health (admin)")
    async def health(self, caller: Identity = Depends(require("admin"))) -> Health:
        return Health(
            status="ok", model_version=self.model_version, output_store=self.args.output_store
        )


def build_app(args: BlurringArgs) -> Application:
    a = args.pinned(local=["output_store"])
    a.pin_models(a.store())
    a.open_state()  # after the artifacts: what the app loads, then where it writes
    detector = Detector.options(user_config=a.model_user_config("Detector")).bind(
        store_uri=a.store_spec(),
        members=a.detector.members,
        long_side=a.detector.long_side,
        nms_iou=a.detector.nms_iou,
        fusion=a.detector.fusion,
        device=a.device,
    )
    preprocess = Preprocess.bind(max_bytes=a.max_upload_bytes, max_pixels=a.max_pixels, blur=a.blur)
    shadow = {}
    if a.shadow is not None:
        d = a.shadow.detector
        shadow = {
            "shadow_detector": Detector.options(
                name="ShadowDetector", user_config=a.model_user_config("ShadowDetector")
            ).bind(
                store_uri=a.store_spec(),
                members=d.members,
                long_side=d.long_side,
                nms_iou=d.nms_iou,
                fusion=d.fusion,
                device=a.device,
            ),
            "comparator": ShadowComparator.bind("box_f1", 0.5),
        }
    ours = [m for m in a.detector.members if m.get("kind") == "torch"]  # holds the reference
    monitor = None
    if ours:
        first = ours[0]
        ref = ArtifactRef(artifact=first["artifact"], version=first.get("version", "latest"))
        monitor = a.drift_monitor(ref)
    ingress = BlurringIngress.options(user_config=a.ingress_user_config())
    return ingress.bind(
        a.ingress_args(), preprocess=preprocess, detector=detector, monitor=monitor, **shadow
    )
