"""The Helm chart: lint, render with default and GPU values, the objects and values that must
flow into them, schema rejection, and offline validation against Kubernetes schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ig-airflow"
K8S_VERSION = "1.30.0"
# The chart requires a Ray token Secret (or ray.allowInsecureNoAuth): every render and lint names one.
DEFAULT_ARGS = ["--set", "ray.authTokenSecret=ray-token"]


@pytest.fixture(scope="module")
def helm() -> str:
    found = shutil.which("helm") or str(REPO / ".tools" / "helm")
    assert Path(found).exists(), "helm is missing: scripts/setup.sh runs scripts/install_helm.py"
    return found


def render(helm: str, *args: str) -> list[dict]:
    result = subprocess.run(
        [helm, "template", "ig", str(CHART), "--namespace", "ml", *DEFAULT_ARGS, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


@pytest.mark.parametrize("values", [[], ["-f", str(CHART / "ci" / "gpu-values.yaml")]])
def test_helm_lint_strict(helm: str, values: list[str]) -> None:
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *DEFAULT_ARGS, *values], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render(helm: str) -> None:
    kinds = by_kind(render(helm))
    assert sorted(kinds) == [
        "ConfigMap",
        "NetworkPolicy",
        "RayCluster",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    cluster = kinds["RayCluster"][0]
    assert cluster["metadata"]["name"] == "ig-ig-airflow"
    spec = cluster["spec"]
    assert spec["rayVersion"] == "2.60.0" and spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 60
    head = spec["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == "ig-ig-airflow"
    assert head["containers"][0]["image"] == "ig-airflow:0.1.0"
    assert {p["containerPort"] for p in head["containers"][0]["ports"]} == {6379, 8265, 10001}
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert list(groups) == ["cpu"]
    assert (groups["cpu"]["minReplicas"], groups["cpu"]["replicas"], groups["cpu"]["maxReplicas"]) == (
        1,
        2,
        8,
    )
    configmaps = {c["metadata"]["name"]: c for c in kinds["ConfigMap"]}
    connection = configmaps["ig-ig-airflow-connection"]["data"]
    assert connection["RAY_ADDRESS"] == "ray://ig-ig-airflow-head-svc.ml.svc.cluster.local:10001"
    assert connection["IG_AIRFLOW_CONFIG_DIR"] == "/opt/ig_airflow/configs"
    pipeline = yaml.safe_load(configmaps["ig-ig-airflow-pipelines"]["data"]["explain.yaml"])
    assert pipeline["ray"]["num_workers"] == 4  # a valid ig_airflow run config
    from ig_airflow.config import parse_run_config

    parse_run_config(pipeline)
    role = kinds["Role"][0]
    resources = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in role["rules"]}
    assert resources[(("",), ("configmaps",))]["verbs"] == ["get", "watch"]
    assert resources[(("",), ("configmaps",))]["resourceNames"] == [
        "ig-ig-airflow-pipelines",
        "ig-ig-airflow-connection",
    ]
    assert resources[(("ray.io",), ("rayclusters",))]["resourceNames"] == ["ig-ig-airflow"]
    assert all("*" not in r["verbs"] and "delete" not in r["verbs"] for r in role["rules"])
    binding = kinds["RoleBinding"][0]
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "ig-ig-airflow", "namespace": "ml"}


def test_gpu_values_add_a_gpu_worker_group(helm: str) -> None:
    cluster = by_kind(render(helm, "-f", str(CHART / "ci" / "gpu-values.yaml")))["RayCluster"][0]
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert sorted(groups) == ["cpu", "gpu"]
    gpu = groups["gpu"]
    assert gpu["rayStartParams"]["num-gpus"] == "1" and (gpu["minReplicas"], gpu["maxReplicas"]) == (0, 2)
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_values_flow_into_the_objects(helm: str) -> None:
    docs = render(
        helm,
        "--set",
        "image.repository=registry.local/ig",
        "--set",
        "image.tag=9.9",
        "--set",
        "ray.autoscaling.enabled=false",
        "--set",
        "ray.authTokenSecret=ray-token",
        "--set",
        "ray.workers.cpu.maxReplicas=3",
        "--set-string",
        "airflow.extraEnv.MY_FLAG=on",
    )
    kinds = by_kind(docs)
    cluster = kinds["RayCluster"][0]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "registry.local/ig:9.9"
    env = {e["name"]: e for e in head["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ray-token", "key": "auth_token"}
    assert cluster["spec"]["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in cluster["spec"]
    assert cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 3
    assert {r["resources"][0] for r in kinds["Role"][0]["rules"]} == {"configmaps"}  # no autoscaler rights
    connection = next(c for c in kinds["ConfigMap"] if c["metadata"]["name"].endswith("-connection"))
    assert connection["data"]["MY_FLAG"] == "on"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "ray.workers.cpu.replicas=two"], "/ray/workers/cpu/replicas"),
        (["--set", "ray.clientPort=99999"], "/ray/clientPort"),
        (["--set", "ray.workers.cpu.colour=blue"], "colour"),
        (["--set", "pipelines.mountPath=relative/path"], "/pipelines/mountPath"),
    ],
)
def test_schema_rejects_wrong_values(helm: str, args: list[str], message: str) -> None:
    result = subprocess.run(
        [helm, "template", "ig", str(CHART), *DEFAULT_ARGS, *args], capture_output=True, text=True
    )
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_bad_combinations_fail_early(helm: str) -> None:
    result = subprocess.run(
        [helm, "template", "ig", str(CHART), *DEFAULT_ARGS, "--set", "ray.workers.cpu.minReplicas=9"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "minReplicas (9) is above maxReplicas (8)" in result.stderr
    result = subprocess.run(
        [helm, "template", "ig", str(CHART), *DEFAULT_ARGS, "--set", "ray.workers.cpu.enabled=false"],
        capture_output=True,
        text=True,
    )
    assert "enable at least one of the cpu and gpu worker groups" in result.stderr


@pytest.mark.parametrize("values", [[], ["-f", str(CHART / "ci" / "gpu-values.yaml")]])
def test_rendered_objects_validate_offline(helm: str, values: list[str]) -> None:
    schema = json.loads((Path(__file__).parent / "schemas" / "raycluster.schema.json").read_text())
    docs = render(helm, *values)
    for doc in docs:
        if doc["kind"] == "RayCluster":
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = dict(docs[0], metadata={"name": "x", "labels": {"a": 1}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_airflow_chart_overlay_points_at_this_release() -> None:
    overlay = yaml.safe_load((REPO / "charts" / "airflow-values.yaml").read_text())
    assert overlay["images"]["airflow"]["repository"] == "ig-airflow"
    assert "RELEASE-connection" in overlay["extraEnvFrom"]
    assert overlay["volumes"][0]["configMap"]["name"] == "RELEASE-pipelines"
    assert (
        overlay["volumeMounts"][0]["mountPath"]
        == yaml.safe_load((CHART / "values.yaml").read_text())["pipelines"]["mountPath"]
    )
    assert overlay["dags"]["gitSync"]["subPath"] == "dags"
    # the explanation views: absolute extra links, run folders read only under the demo dir
    demo_dir = next(e["value"] for e in overlay["env"] if e["name"] == "IG_AIRFLOW_DEMO_DIR")
    assert overlay["config"]["ig_airflow"]["ui_roots"].startswith(demo_dir)
    assert overlay["config"]["api"]["base_url"].startswith("https://")


def test_every_value_is_commented() -> None:
    """Every key of values.yaml has a comment line right above it (block scalars skipped)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    block_indent = None
    previous = ""
    for number, line in enumerate(lines, 1):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None and (not line.strip() or indent > block_indent):
            continue
        block_indent = None
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "-", "{")) and ":" in stripped:
            assert previous.startswith("#"), f"values.yaml line {number} has no comment above it: {line}"
            if stripped.endswith("|"):
                block_indent = indent
        if stripped:
            previous = stripped
