"""The apps on a real two-node Ray cluster whose nodes have separate disks (tests/ray_cluster.py):
with the state layer on PostgreSQL and the object store on an S3 API server, what one node
acknowledges holds on the other; a node-local SQLite store is refused at build time; the head
(GCS in Redis) can die and come back while node B keeps serving; node B can die and nothing
acknowledged is lost.

Every server is real and on loopback, started here and stopped by the PID started here:
PostgreSQL (Debian's), Redis (Debian's), moto's S3 server (PyPI; the client is the real
s3fs), two ``ray start`` nodes. The apps are deployed from a serve config, as users do.
"""

from __future__ import annotations

import io
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from sqlalchemy import select

from apps.auth import KeyStore
from apps.auth import main as auth_cli
from mlsd.recommendation.events import EventLog
from mlsd.state import ObjectStore, init_store
from mlsd.state.schema import rec_events
from mlsd.video import write_mp4
from mlsd.visual_search.catalogue import CatalogueLog
from tests.conftest import catalogue_images, png_bytes, require_server
from tests.ray_cluster import RayCluster, deployments, wait_for
from tests.servers import MotoS3Server, PostgresServer, RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REVIEW_ALL = {"default": {"remove": 1.0, "review": 1.0, "demote": 1.0},
              "hate": {"remove": 1.0, "review": 0.0, "demote": 0.0}}  # fmt: skip
APP_CPUS = {  # deployment -> num_cpus (logical: four per node; the machine has two cores)
    "visual_search": {"VisualSearchIngress": 0.15, "Retriever": 0.05},  # encodes in the ingress
    "recommendation": {"RecommendationIngress": 0.05, "CandidateGeneration": 0.05,
                       "Ranking": 0.05},
    "harmful_content": {"HarmfulContentIngress": 0.05, "HarmClassifier": 0.1,
                        "ImageFeatures": 0.05},
    "blurring": {"BlurringIngress": 0.05, "Preprocess": 0.05, "Detector": 0.1},
}  # fmt: skip
ROUTES = {"visual_search": "vs", "recommendation": "rec", "harmful_content": "hc",
          "blurring": "blur"}  # fmt: skip


@pytest.fixture(scope="module")
def servers():

    require_server(PostgresServer.available(), "PostgreSQL (Debian package postgresql)")
    require_server(RedisServer.available(), "Redis (Debian package redis-server)")
    require_server(MotoS3Server.available(), "moto[server]")
    with PostgresServer() as pg, RedisServer() as redis, MotoS3Server() as s3:
        s3.create_bucket("mlsd")
        yield pg, redis, s3


def _args(app: str, state: dict, stores: dict) -> dict:
    common = {"auth": {"key_store": state["db"]}, "drift": None, "artifact_store": stores[app]}
    return {
        "visual_search": {"live_log": state["db"], "object_store": state["vs_objects"]},
        "recommendation": {"events_log": state["db"]},
        "harmful_content": {
            "review_queue": state["db"],
            "policy": REVIEW_ALL,
            "model": {"artifact": "harmful_content", "backend": "onnx"},
        },
        "blurring": {
            "output_store": state["blur_objects"],
            "detector": {"members": [{"kind": "yunet", "threshold": 0.5}]},
        },
        "video_search": {"live_log": state["db"], "object_store": state["video_objects"]},
    }[app] | common


def _application(app: str, node: str, args: dict) -> dict:
    return {
        "name": f"{ROUTES[app]}_{node}",
        "route_prefix": f"/{ROUTES[app]}-{node}",
        "import_path": f"apps.{app}:build_app",
        "args": args,
        "deployments": deployments(node, APP_CPUS[app]),
    }


@dataclass
class Cluster:
    rc: RayCluster
    state: dict  # the shared stores: db (PostgreSQL), *_objects (S3)
    stores: dict  # app -> artifact store
    tokens: dict  # user -> API key
    var: Path  # node A's var/ (node B has its own at the same path)
    apps: list  # the deployed config's applications (a config replaces every app it omits)


@pytest.fixture(scope="module")
def cluster(servers, tmp_path_factory, tiny_store, rec_store, video_store, harmful_store):
    """Both nodes up, every app deployed: one copy pinned to each node (sharing only the
    stores), and video search with its indexer on node A and its ingress, which holds both
    retrieval branches (the served ``branch_placement: ingress``), on node B."""

    pg, redis, s3 = servers
    state = {"db": str(init_store(pg.create_database("mlsd")))}
    with patched_env(s3.env()):  # this process's s3fs (init, checks) and every node's
        for name in ("vs_objects", "video_objects", "blur_objects"):
            state[name] = ObjectStore(f"s3://mlsd/{name}", create=True).uri
        keys = KeyStore(state["db"])
        users = [
            ("alice", "search,write"),
            ("42", "search,write"),
            ("temp", "search"),
            ("ops", "search,write,review,admin"),
        ]
        tokens = {u: keys.create(u, scopes) for u, scopes in users}
        stores = {
            "visual_search": str(tiny_store),
            "recommendation": str(rec_store),
            "harmful_content": str(harmful_store),
            "video_search": str(video_store),
            "blurring": str(tmp_path_factory.mktemp("no_artifacts")),
        }
        var = tmp_path_factory.mktemp("node_a") / "var"
        rc = RayCluster(var, redis=redis.address, env=s3.env())
        try:
            rc.start_head().start_worker()
            apps = [
                _application(app, node, _args(app, state, stores))
                for app in ROUTES
                for node in ("a", "b")
            ]
            video = {
                "name": "video",
                "route_prefix": "/video",
                "import_path": "apps.video_search:build_app",
                "args": _args("video_search", state, stores) | {"shadow": None},
                "deployments": deployments("a", {"VideoIndexer": 0.1})
                + deployments("b", {"VideoSearchIngress": 0.15}),
            }
            apps.append(video)
            rc.deploy(apps)
            for node in ("a", "b"):  # through both proxies: the head's and node B's own
                routes = [f"/{r}-{n}" for r in ROUTES.values() for n in ("a", "b")] + ["/video"]
                for route in routes:
                    wait_for(lambda r=route, n=node: _up(rc, r, n), 600, f"{route} via {node}")
            yield Cluster(rc, state, stores, tokens, var, apps)
        except BaseException:
            print(rc.log_tail())  # the nodes' last words, before stop() removes their logs
            raise
        finally:
            rc.stop()


@contextmanager
def patched_env(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _up(rc: RayCluster, route: str, node: str = "a") -> bool:
    try:
        return requests.get(rc.url(node, f"{route}/healthz"), timeout=5).status_code == 200
    except requests.RequestException:
        return False


def client(tokens: dict, user: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {tokens[user]}"
    return s


def _search(s, rc, node, data: bytes, k=5) -> list[int]:
    r = s.post(
        rc.url(node, f"/vs-{node}/search"),
        params={"k": k},
        files={"image": ("q.png", data)},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return [h["image_id"] for h in r.json()["results"]]


def test_what_one_node_acknowledges_holds_on_the_other(cluster):
    import s3fs

    rc, state, tokens = cluster.rc, cluster.state, cluster.tokens
    alice, ops = client(tokens, "alice"), client(tokens, "ops")

    # visual search: added via node A, found, fetched and deleted via node B
    img = (np.random.default_rng(5).random((28, 28)) * 255).astype(np.uint8)
    data = png_bytes(img)
    r = alice.post(rc.url("a", "/vs-a/images"), files={"image": ("x.png", data)}, timeout=60)
    assert r.status_code == 200, r.text
    image_id = r.json()["image_id"]
    assert _search(alice, rc, "b", data)[0] == image_id
    got = alice.get(rc.url("b", f"/vs-b/images/{image_id}"), timeout=30)
    assert got.status_code == 200 and got.content == data  # the bytes: S3, written on node A
    assert alice.delete(rc.url("b", f"/vs-b/images/{image_id}"), timeout=30).status_code == 200
    assert alice.get(rc.url("a", f"/vs-a/images/{image_id}"), timeout=30).status_code == 404
    assert image_id not in _search(alice, rc, "a", data)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert fs.find("mlsd/vs_objects") == []  # deleting the item deleted its bytes

    # video search: uploaded through the indexer on node A, found by the branches that the
    # ingress on node B holds

    frames = [np.full((32, 32, 3), v, np.uint8) for v in range(0, 250, 25)]
    clip = write_mp4(rc.dir / "up.mp4", frames, fps=10).read_bytes()
    r = alice.post(
        rc.url("a", "/video/videos"),
        files={"video": ("up.mp4", clip)},
        data={"title": "Zebrafish aquarium tour"},
        timeout=180,
    )
    assert r.status_code == 201, r.text
    vid = r.json()["video_id"]
    hits = alice.get(rc.url("b", "/video/search"), params={"q": "zebrafish"}, timeout=60)
    assert hits.status_code == 200 and hits.json()["results"][0]["video_id"] == vid
    thumb = alice.get(rc.url("b", f"/video/videos/{vid}/thumbnail"), timeout=60)
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"  # from S3, via node B

    # recommendation: a forget on node A stops node B using the user's trained factor
    me = client(tokens, "42")
    assert me.get(rc.url("b", "/rec-b/users/42"), timeout=60).json()["strategy"] == "personal"
    r = me.delete(rc.url("a", "/rec-a/users/42/history"), timeout=60)
    assert r.status_code == 200, r.text
    after = me.get(rc.url("b", "/rec-b/users/42"), timeout=60).json()
    assert after["strategy"] != "personal", after

    # API keys: revoked on node A's store (the operator CLI), refused by node B at once
    temp = client(tokens, "temp")
    assert temp.get(rc.url("b", "/rec-b/videos/1"), timeout=30).status_code == 200

    assert auth_cli(["--store", state["db"], "revoke", tokens["temp"].split("_")[1]]) == 0
    assert temp.get(rc.url("b", "/rec-b/videos/1"), timeout=30).status_code == 401
    assert temp.get(rc.url("a", "/rec-a/videos/1"), timeout=30).status_code == 401

    # the review queue is one queue: queued on A, listed and read on B; a retry on B is the
    # same review
    post = {"post_id": "p-1", "text": "you people are all the same"}
    first = alice.post(rc.url("a", "/hc-a/posts"), json=post, timeout=60).json()
    assert first["action"] == "review" and first["review_id"], first
    listed = ops.get(rc.url("b", "/hc-b/reviews"), timeout=30).json()
    assert [x["review_id"] for x in listed] == [first["review_id"]]
    one = ops.get(rc.url("b", f"/hc-b/reviews/{first['review_id']}"), timeout=30)
    assert one.status_code == 200 and one.json()["post_id"] == "p-1"
    again = alice.post(rc.url("b", "/hc-b/posts"), json=post, timeout=60).json()
    assert again["review_id"] == first["review_id"]
    assert len(ops.get(rc.url("a", "/hc-a/reviews"), timeout=30).json()) == 1

    # blurring: the blurred output stored on node A is served by node B

    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="JPEG")
    r = alice.post(
        rc.url("a", "/blur-a/images"), files={"image": ("p.jpg", buf.getvalue())}, timeout=120
    )
    assert r.status_code == 201, r.text
    blurred = alice.get(rc.url("b", f"/blur-b/{r.json()['url']}"), timeout=30)
    assert blurred.status_code == 200 and blurred.content[:2] == b"\xff\xd8"


def test_node_local_sqlite_is_refused_on_two_nodes(cluster):
    """The build refuses a file-backed store while two nodes are alive, and says why."""

    rc = cluster.rc
    local = str(init_store(cluster.var / "events.sqlite"))  # on node A's disk only
    args = _args("recommendation", cluster.state, cluster.stores) | {"events_log": local}
    app = _application("recommendation", "a", args)
    app.update(name="rec_local", route_prefix="/rec-local")
    rc.deploy([*cluster.apps, app], name="local")  # the others unchanged: left running

    def failed():
        s = rc.status().get("rec_local", {})
        return s if s.get("status", "").endswith("DEPLOY_FAILED") else None

    try:
        status = wait_for(failed, 180, "the node-local build refused")
    finally:
        rc.deploy(cluster.apps)  # rec_local removed
    assert "Ray nodes are alive" in status["message"] and "events_log" in status["message"]
    assert _up(rc, "/rec-b", "b")  # the apps that were running still are


def test_the_head_can_die_while_node_b_serves(cluster):
    """GCS fault tolerance: the head (GCS, controller, its replicas) dies; the apps whose
    replicas are on node B keep answering through node B's proxy; a new head on the same
    Redis finds the cluster again and Serve recovers the head's apps."""
    rc, alice = cluster.rc, client(cluster.tokens, "alice")
    data = png_bytes(catalogue_images(10)[0][3])
    codes: list[int] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                r = alice.post(
                    rc.url("b", "/vs-b/search"),
                    params={"k": 3},
                    files={"image": ("q.png", data)},
                    timeout=10,
                )
                codes.append(r.status_code)
            except requests.RequestException:
                codes.append(599)
            time.sleep(0.2)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(2)
        gcs = rc.kill(rc.head, "gcs_server")  # the head's ray start ends the head's others
        assert gcs and rc.head.poll() is not None
        during = len(codes)
        time.sleep(10)  # the outage: no GCS, no controller, no head proxy
        outage = codes[during:]
        assert len(outage) > 10 and set(outage) == {200}, outage
        rc.start_head()  # on the same port and Redis: the cluster's tables come back
        wait_for(lambda: _up(rc, "/vs-a"), 240, "node A's apps recovered")
    finally:
        stop.set()
        poller.join()
    assert set(codes) == {200}, f"{codes.count(200)} of {len(codes)} answered 200"
    assert _search(alice, rc, "a", data)[0] == 3


def test_killing_node_b_loses_nothing_acknowledged(cluster):
    """Writes go to node B's apps while its raylet is SIGKILLed (by the PID we started): every
    write acknowledged before the kill is in the shared stores and served by node A."""

    rc, state = cluster.rc, cluster.state
    alice, me = client(cluster.tokens, "alice"), client(cluster.tokens, "42")
    acked_events, acked_images, errors = [], [], []
    stop = threading.Event()
    rng = np.random.default_rng(9)

    def write():
        i = 0
        while not stop.is_set():
            i += 1
            ev = {
                "user_id": 42,
                "video_id": 1 + i % 50,
                "event": "like",
                "timestamp": 893_000_000 + i,
            }
            img = png_bytes((rng.random((28, 28)) * 255).astype(np.uint8))
            try:
                r = me.post(rc.url("b", "/rec-b/events"), json=ev, timeout=10)
                if r.status_code == 201:
                    acked_events.append(r.json()["event_id"])
                r = alice.post(
                    rc.url("b", "/vs-b/images"), files={"image": ("x.png", img)}, timeout=10
                )
                if r.status_code == 200:
                    acked_images.append((r.json()["image_id"], img))
            except requests.RequestException as e:
                errors.append(type(e).__name__)
                time.sleep(0.2)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: len(acked_events) >= 5 and len(acked_images) >= 5, 120, "writes acked")
        raylet = rc.kill(rc.worker, "raylet")
        assert raylet and rc.worker.poll() is not None
        time.sleep(3)
    finally:
        stop.set()
        writer.join()
    assert set(acked_events) <= _event_seqs(EventLog(state["db"])), "an acknowledged event lost"
    live = CatalogueLog(state["db"])
    in_log = {m.meta.image_id for _, m in live.since(0)}
    assert {i for i, _ in acked_images} <= in_log, "an acknowledged image was lost"
    for image_id, img in acked_images[-3:]:  # and node A's apps serve them
        assert image_id in _search(alice, rc, "a", img, k=5)


def _event_seqs(log) -> set[int]:

    with log.db.read() as c:
        return set(c.execute(select(rec_events.c.seq)).scalars())
