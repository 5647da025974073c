"""cluster/: the launcher config, the KubeRay RayJob and the job runtime env hold what cluster/README.md says.

Fast: parses files, no Ray started (tests/test_job_submit.py submits a real job).
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from orchestrator.spec import load_spec
from tests.conftest import REPO

CLUSTER = REPO / "cluster"


def load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.fixture(scope="module")
def launcher() -> dict:
    return load("ray-cluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return load("rayjob.yaml")


def test_launcher_config_passes_rays_own_validation(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(launcher)))  # what `ray up` runs first: schema + node types


def test_launcher_has_a_cpu_head_and_two_8_gpu_h100_workers(launcher):
    assert launcher["cluster_name"] and launcher["provider"]["type"] == "aws"
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != launcher["head_node_type"]}
    assert [t["node_config"]["InstanceType"] for t in workers.values()] == ["p5.48xlarge"]  # 8 x H100 80GB
    assert all(t["min_workers"] == t["max_workers"] == 2 for t in workers.values())
    assert sum(t["min_workers"] * t["resources"]["GPU"] for t in workers.values()) == 16
    assert launcher["max_workers"] >= sum(t["max_workers"] for t in workers.values())


def test_launcher_installs_wavesweep_and_torch_as_the_readme_pins_it(launcher):
    pin = re.search(r"torch==[\d.]+", (REPO / "README.md").read_text()).group()
    setup = launcher["setup_commands"]
    assert any(pin in c for c in setup), f"{pin} (README's pin) is not in setup_commands"
    assert any("pip install" in c and "-e ~/wavesweep" in c for c in setup)
    mounts = launcher["file_mounts"]
    for package in ("orchestrator", "experiments", "dashboard", "pyproject.toml"):
        assert mounts[f"~/wavesweep/{package}"] == f"./{package}"
    assert (REPO / "cluster" / "Dockerfile").read_text().count(pin) == 1


def test_launcher_starts_every_node_with_token_auth_and_only_the_head_with_the_store(launcher):
    head = " ".join(launcher["head_start_ray_commands"])
    workers = " ".join(launcher["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "RAY_AUTH_TOKEN_PATH=" in head and "RAY_AUTH_TOKEN_PATH=" in workers
    assert 'WAVESWEEP_STORE="$(cat "$HOME/.wavesweep/store_url")"' in head  # from a private file, on the head only
    assert "WAVESWEEP_STORE" not in workers
    assert "--num-gpus=0" in head and "--dashboard-host=127.0.0.1" in head
    assert launcher["file_mounts"]["~/.wavesweep"] == "~/.wavesweep"


def test_images_run_one_ray_version(launcher, rayjob):
    tag = launcher["docker"]["image"].split(":")[1]
    assert tag.startswith(rayjob["spec"]["rayClusterSpec"]["rayVersion"] + "-")
    assert f"FROM rayproject/ray:{tag}" in (CLUSTER / "Dockerfile").read_text()


def test_rayjob_runs_a_spec_of_the_repo_on_2_workers_of_8_gpus(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    command, _, path = spec["entrypoint"].rpartition(" ")
    assert command == "wavesweep run" and path.startswith("experiments/specs/")
    assert load_spec(REPO / path, check_experiment=False).study
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    gpus = 0
    for group in groups:
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus += group["replicas"] * limits["nvidia.com/gpu"]
    assert [g["replicas"] for g in groups] == [2] and gpus == 16
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_rayjob_store_url_and_token_come_from_secrets(rayjob):
    spec = rayjob["spec"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    store = _env(head)["WAVESWEEP_STORE"]
    assert "value" not in store
    assert store["valueFrom"]["secretKeyRef"] == {"name": "wavesweep-store", "key": "url"}
    # KubeRay's authOptions sets the token on every Ray container from our Secret; the submitter sets its own.
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "wavesweep-ray-auth"}
    submitter = _env(spec["submitterPodTemplate"]["spec"]["containers"][0])
    assert submitter["RAY_AUTH_MODE"]["value"] == "token"
    assert submitter["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "wavesweep-ray-auth"
    workers = [g["template"]["spec"]["containers"][0] for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
    for container in [head, *workers]:
        assert "RAY_AUTH_TOKEN" not in _env(container)  # authOptions' job: set twice, the two could disagree
        assert container is head or "WAVESWEEP_STORE" not in _env(container)  # only the driver's pod opens it
    # KubeRay puts the entrypoint and the runtime env on the submitter's command line: neither may hold the URL.
    assert "--store" not in spec["entrypoint"] and "$" not in spec["entrypoint"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "WAVESWEEP_STORE" not in runtime_env.get("env_vars", {})


def test_job_runtime_env_uploads_the_repo_without_venv_stores_or_secrets():
    from ray.runtime_env import RuntimeEnv

    env = load("runtime_env.yaml")
    RuntimeEnv(**env)  # Ray accepts it
    assert env["working_dir"] == "."
    assert {".venv", ".git", "*.db", "wavesweep-artifacts"} <= set(env["excludes"])
    assert "pip" not in env  # installed on the nodes (README says why)
    # WAVESWEEP_STORE would be in git and in Ray's job record; PYTHONPATH is set by the driver, and Ray refuses to
    # merge a job env var that the driver's ray.init sets too.
    assert not {"WAVESWEEP_STORE", "PYTHONPATH"} & set(env.get("env_vars", {}))


def test_smoke_spec_is_16_one_gpu_runs_sized_by_the_cluster():
    spec = load_spec(CLUSTER / "smoke.yaml")
    cells = 1
    for factor in spec.factors.values():
        cells *= len(factor.levels)
    assert cells * len(spec.seeds) == 16
    assert spec.strategy.mode == "grid" and spec.strategy.runs_per_wave is None  # the cluster's GPUs size the wave
    assert spec.resources.gpus_per_run == 1


# user:password@ in a URL, where the password is not a placeholder
URL_PASSWORD = re.compile(r"://[^/\s:@'\"]+:(?!PASSWORD@|%s@)[^@\s'\"]+@")
LITERALS = [
    re.compile(r"(?i)password\s*[:=]\s*['\"]?\w"),  # password: x / PASSWORD=x
    re.compile(r"RAY_AUTH_TOKEN\s*[:=]\s*['\"]?\w"),  # an inline token
    re.compile(r"\b[0-9a-f]{32,}\b"),  # a hex secret, such as a Ray token
]


def test_no_password_or_token_literal_under_cluster():
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    assert {"ray-cluster.yaml", "rayjob.yaml", "runtime_env.yaml", "README.md"} <= {p.name for p in files}
    for path in files:
        text = path.read_text()
        assert not URL_PASSWORD.search(text), f"{path.name}: a URL with a password"
        for pattern in LITERALS:
            assert not pattern.search(text), f"{path.name}: {pattern.search(text).group()!r}"
    for doc in yaml.safe_load_all((CLUSTER / "rayjob.yaml").read_text()):
        for container in _all_containers(doc):
            for entry in container.get("env", []):
                assert "value" not in entry or entry["name"] in {"RAY_AUTH_MODE"}, entry


def test_no_password_detector_misses_one():
    assert URL_PASSWORD.search("postgresql+psycopg://alice:s3cret@db:5432/x")
    assert not URL_PASSWORD.search("postgresql+psycopg://user:PASSWORD@host:5432/db")
    assert not URL_PASSWORD.search("postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _all_containers(node) -> list[dict]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers":
                found += value
            else:
                found += _all_containers(value)
    elif isinstance(node, list):
        for item in node:
            found += _all_containers(item)
    return found


def test_the_driver_leaves_a_job_runtime_env_pythonpath_alone(monkeypatch, tmp_path):
    import json

    from orchestrator.execution.executor import _runtime_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert _runtime_env() == {"env_vars": {"PYTHONPATH": str(tmp_path)}}
    # Under `ray job submit` with other env vars: Ray merges per variable, so ours is added.
    job = {"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"HF_HUB_OFFLINE": "1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert _runtime_env() == {"env_vars": {"PYTHONPATH": str(tmp_path)}}
    # A job that sets PYTHONPATH itself: ray.init would refuse to merge ours, so none is passed.
    job["runtime_env"]["env_vars"]["PYTHONPATH"] = "/opt/lib"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert _runtime_env() is None


# --- issue #13, point 12 --------------------------------------------------------------------------------------------

def test_rayjob_bounds_the_time_its_gpus_are_held(rayjob):
    spec = rayjob["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert 0 < spec["activeDeadlineSeconds"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] <= 60


def test_rayjob_submitter_does_not_pull_the_gpu_image(rayjob):
    spec = rayjob["spec"]
    submitter = spec["submitterPodTemplate"]["spec"]["containers"][0]["image"]
    images = {c["image"] for c in _all_containers(spec["rayClusterSpec"])}
    assert submitter not in images and submitter.endswith("wavesweep-submitter:TAG")
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim AS submitter$", dockerfile, re.MULTILINE)
    # The submitter uploads the job's working_dir, so its image holds the repo there.
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"] == "/home/ray/wavesweep"
    assert dockerfile.count("WORKDIR /home/ray/wavesweep") == 2


def test_rayjob_head_and_workers_have_shared_memory(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_readme_port_forwards_the_cluster_kuberay_named():
    """KubeRay names the RayCluster <rayjob>-<random suffix>: the head service is read from the RayJob's status."""
    text = (CLUSTER / "README.md").read_text()
    assert "svc/wavesweep-lora-sweep-head-svc" not in text
    assert "{.status.rayClusterName}" in text and '"svc/$CLUSTER-head-svc"' in text


def test_dockerfile_states_cuda_and_fails_when_a_kernel_fails():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_VERSION=\d+\.\d+$", text, re.MULTILINE)
    assert "download.pytorch.org/whl/cu" in text and "torch.version.cuda" in text
    assert re.search(r'^ENV TORCH_CUDA_ARCH_LIST="9\.0"$', text, re.MULTILINE)  # H100
    assert "||" not in text  # no fallback that hides a failed kernel build


def test_launcher_pins_the_ami(launcher):
    ids = {t["node_config"]["ImageId"] for t in launcher["available_node_types"].values()}
    assert ids == {"ami-PINNED"}  # one placeholder for the ID of the day, not ".../latest/ami-id"
    assert "latest/ami-id" in (CLUSTER / "ray-cluster.yaml").read_text()  # the command that prints it
