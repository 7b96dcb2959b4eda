"""The KubeRay manifests (ops/kuberay) are what the generator makes of serve_config.gpu.yaml now,
embed it verbatim, and keep every password in a Secret."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
KUBERAY = ROOT / "ops" / "kuberay"
CONFIG_TEXT = (ROOT / "serve_config.gpu.yaml").read_text()


def _generator():
    spec = importlib.util.spec_from_file_location("kuberay_generate", KUBERAY / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())


@pytest.fixture(scope="module")
def state_init() -> list[dict]:
    return list(yaml.safe_load_all((KUBERAY / "state-init-job.yaml").read_text()))


def ray_pods(rs: dict) -> dict[str, dict]:
    """Pod spec by group ("head" and each worker group)."""
    cluster = rs["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    pods |= {g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]}
    return pods


def secret_ref(env: list[dict], name: str) -> dict:
    (var,) = [e for e in env if e["name"] == name]
    assert "value" not in var, f"{name} must come from a Secret, not a literal value"
    return var["valueFrom"]["secretKeyRef"]


def test_committed_manifests_are_generated_from_the_serve_config():
    expected = gen.render()
    assert set(expected) == {KUBERAY / "rayservice.yaml", KUBERAY / "state-init-job.yaml"}
    diffs = gen.stale(expected)
    assert not diffs, (
        f"ops/kuberay is stale: run `{gen.REGENERATE}` and commit the result\n" + "\n".join(diffs)
    )
    for text in expected.values():
        assert text.startswith(gen.HEADER)


def test_serve_config_is_embedded_verbatim(rayservice, state_init):
    assert rayservice["spec"]["serveConfigV2"] == CONFIG_TEXT
    configmap, job = state_init
    assert configmap["kind"] == "ConfigMap"
    assert configmap["data"] == {"serve_config.gpu.yaml": CONFIG_TEXT}
    assert "serveConfigV2: |\n" in (KUBERAY / "rayservice.yaml").read_text()  # comments legible


def test_cluster_shape(rayservice):
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    spec = rayservice["spec"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    assert not {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"} & set(spec)
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0"
    assert "redis-password" not in head  # KubeRay rejects it next to gcsFaultToleranceOptions
    ft = cluster["gcsFaultToleranceOptions"]
    assert ft["redisAddress"]
    assert set(ft["redisPassword"]) == {"valueFrom"}
    redis_secret = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert redis_secret == {"name": "mlsd-redis", "key": "password"}
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert groups["gpu"]["rayStartParams"]["num-gpus"] == "1"
    (gpu_container,) = groups["gpu"]["template"]["spec"]["containers"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "ray.io/ft-enabled" not in rayservice["metadata"].get("annotations", {})


def test_every_ray_container_gets_the_state_password_from_a_secret(rayservice):
    for group, pod in ray_pods(rayservice).items():
        assert pod["serviceAccountName"] == "mlsd", group  # S3 through the role (IRSA)
        for c in pod["containers"]:
            ref = secret_ref(c["env"], "MLSD_STATE_PASSWORD")
            assert ref == {"name": "mlsd-state", "key": "password"}, group
            names = {e["name"] for e in c["env"]}
            assert {"AWS_REGION", "PYTHONUNBUFFERED"} <= names, group
            assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, group
            if group != "head":
                assert "RAY_gcs_rpc_server_reconnect_timeout_s" in names, group


def test_no_literal_password_anywhere(rayservice, state_init):
    urls = re.findall(r"postgres\w*(?:\+\w+)?://\S+", rayservice["spec"]["serveConfigV2"])
    assert urls  # the config does use Postgres: this test looks at something
    for url in urls:
        userinfo = url.split("://", 1)[1].partition("@")[0] if "@" in url else ""
        assert ":" not in userinfo, f"a password in {url}"
    containers = [c for pod in ray_pods(rayservice).values() for c in pod["containers"]]
    containers += state_init[1]["spec"]["template"]["spec"]["containers"]
    for c in containers:
        for e in c["env"]:
            if re.search(r"PASSWORD|SECRET|TOKEN|KEY", e["name"]):
                assert "value" not in e, f"{e['name']} must come from a Secret"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", e.get("value", "")), e["name"]


def test_public_keys_named_by_the_config_are_mounted(rayservice):
    paths = set(re.findall(r"/etc/mlsd/[\w.-]+", CONFIG_TEXT))
    assert paths
    for group, pod in ray_pods(rayservice).items():
        (c,) = pod["containers"]
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        assert all(any(p.startswith(m + "/") for m in mounts) for p in paths), group


def test_cluster_can_hold_the_minimum_replicas(rayservice):
    """A lower bound (no bin packing): the min replicas' CPUs and GPUs fit the groups' maxima."""
    config = yaml.safe_load(CONFIG_TEXT)
    need = {"cpu": 0.0, "gpu": 0.0}
    for app in config["applications"]:
        for d in app.get("deployments", []):
            auto = d.get("autoscaling_config")
            n = auto.get("min_replicas", 1) if auto else d.get("num_replicas", 1)
            opts = d.get("ray_actor_options", {})
            need["cpu"] += n * opts.get("num_cpus", 1)
            need["gpu"] += n * opts.get("num_gpus", 0)
    have = {"cpu": 0.0, "gpu": 0.0}
    for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        (c,) = g["template"]["spec"]["containers"]
        limits = c["resources"]["limits"]
        have["cpu"] += g["maxReplicas"] * float(limits["cpu"])
        have["gpu"] += g["maxReplicas"] * float(limits.get("nvidia.com/gpu", 0))
    assert need["cpu"] <= have["cpu"] and need["gpu"] <= have["gpu"], (need, have)


def test_state_init_job(state_init):
    configmap, job = state_init
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["spec"]["backoffLimit"] == 3
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mlsd"
    (c,) = pod["containers"]
    assert c["command"][:4] == ["python", "-m", "apps.state", "init"]
    config_path = Path(c["command"][4])
    (mount,) = c["volumeMounts"]
    (volume,) = pod["volumes"]
    assert config_path.parent == Path(mount["mountPath"]) and volume["name"] == mount["name"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_path.name in configmap["data"]
    assert secret_ref(c["env"], "MLSD_STATE_PASSWORD") == {"name": "mlsd-state", "key": "password"}
    assert c["image"] == gen.IMAGE
