"""Hardening of the Helm chart: a required Ray token, restricted pod and container security
contexts with writable emptyDirs only, no service-account token outside the autoscaler sidecar,
a NetworkPolicy that admits only the Ray pods and the Airflow workers (on the Ray client and GCS
ports), a dashboard on loopback, and the Airflow overlay passing the same token."""

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
GPU_VALUES = ["-f", str(CHART / "ci" / "gpu-values.yaml")]
RAYCLUSTER_SCHEMA = REPO / "tests" / "system" / "schemas" / "raycluster.schema.json"
K8S_VERSION = "1.30.0"
TOKEN = ["--set", "ray.authTokenSecret=ray-token"]
TOKEN_REF = {"name": "ray-token", "key": "auth_token"}
SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
AIRFLOW_WORKER_LABELS = {"tier": "airflow", "component": "worker", "release": "airflow"}
POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 50000,
    "runAsGroup": 0,
    "fsGroup": 0,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# volume types the Pod Security Standard "restricted" allows
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.fixture(scope="module")
def helm() -> str:
    found = shutil.which("helm") or str(REPO / ".tools" / "helm")
    assert Path(found).exists(), "helm is missing: scripts/setup.sh runs scripts/install_helm.py"
    return found


def helm_template(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm, "template", "ig", str(CHART), "--namespace", "ml", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def render(helm: str, *args: str) -> list[dict]:
    result = helm_template(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_templates(cluster: dict) -> dict[str, dict]:
    """The pod templates of a rendered RayCluster: 'head' and one per worker group."""
    spec = cluster["spec"]
    templates = {"head": spec["headGroupSpec"]["template"]}
    templates.update({g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]})
    return templates


def autoscaler_container(cluster: dict) -> dict:
    """The sidecar KubeRay builds from autoscalerOptions (its own fields: env, securityContext,
    volumeMounts), as a container to check and validate like the others."""
    options = cluster["spec"]["autoscalerOptions"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container = {"name": "autoscaler", "image": head["image"]}
    container.update({k: options[k] for k in ("env", "securityContext", "volumeMounts") if k in options})
    return container


def ray_containers(cluster: dict) -> list[dict]:
    """Every Ray container: head, each worker group's, and the autoscaler sidecar when enabled."""
    containers = [c for t in pod_templates(cluster).values() for c in t["spec"]["containers"]]
    if cluster["spec"].get("enableInTreeAutoscaling"):
        containers.append(autoscaler_container(cluster))
    return containers


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels and matchExpressions, all must hold)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not held:
            return False
    return True


def test_selects_follows_label_selector_semantics() -> None:
    selector = {
        "matchLabels": {"a": "1"},
        "matchExpressions": [{"key": "b", "operator": "In", "values": ["x"]}],
    }
    assert selects(selector, {"a": "1", "b": "x"})
    assert not selects(selector, {"a": "1", "b": "y"})
    assert not selects(selector, {"a": "2", "b": "x"})
    assert selects({}, {"anything": "at all"})  # the empty selector selects everything


# --- 3. the Ray token is required -------------------------------------------------------------


def test_default_values_fail_without_a_ray_token(helm: str) -> None:
    result = helm_template(helm)
    assert result.returncode != 0
    assert "ray.authTokenSecret is required" in result.stderr, result.stderr
    assert "ray.allowInsecureNoAuth=true" in result.stderr, result.stderr
    assert helm_template(helm, *TOKEN).returncode == 0


def test_the_token_check_does_not_block_a_chart_without_ray(helm: str) -> None:
    kinds = {doc["kind"] for doc in render(helm, "--set", "ray.enabled=false")}
    assert "RayCluster" not in kinds and "NetworkPolicy" not in kinds and "ConfigMap" in kinds


@pytest.mark.parametrize("values", [[], GPU_VALUES], ids=["default", "gpu"])
def test_the_token_reaches_every_ray_container(helm: str, values: list[str]) -> None:
    cluster = one(render(helm, *TOKEN, *values), "RayCluster")
    containers = ray_containers(cluster)
    expected = {"ray-head", "ray-worker", "autoscaler"}
    assert {c["name"] for c in containers} == expected
    assert len(containers) == (4 if values else 3)  # head, cpu (, gpu) workers, autoscaler
    for container in containers:
        env = env_of(container)
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, container["name"]
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == TOKEN_REF, container["name"]
        assert "value" not in env["RAY_AUTH_TOKEN"]  # never inlined into the manifest


def test_insecure_flag_renders_without_a_token(helm: str) -> None:
    docs = render(helm, "--set", "ray.allowInsecureNoAuth=true")
    cluster = one(docs, "RayCluster")
    for container in ray_containers(cluster):
        env = env_of(container)
        assert env["RAY_AUTH_MODE"]["value"] == "disabled", container["name"]
        assert "RAY_AUTH_TOKEN" not in env
    # the flag does not weaken anything else
    assert one(docs, "NetworkPolicy")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["securityContext"] == CONTAINER_SECURITY_CONTEXT


def test_a_token_wins_over_the_insecure_flag(helm: str) -> None:
    cluster = one(render(helm, *TOKEN, "--set", "ray.allowInsecureNoAuth=true"), "RayCluster")
    for container in ray_containers(cluster):
        assert env_of(container)["RAY_AUTH_MODE"]["value"] == "token"


# --- 1. security contexts and writable volumes ---------------------------------------------------


@pytest.mark.parametrize("values", [[], GPU_VALUES], ids=["default", "gpu"])
def test_every_ray_pod_and_container_is_restricted(helm: str, values: list[str]) -> None:
    cluster = one(render(helm, *TOKEN, *values), "RayCluster")
    templates = pod_templates(cluster)
    assert sorted(templates) == (["cpu", "gpu", "head"] if values else ["cpu", "head"])
    for name, template in templates.items():
        spec = template["spec"]
        assert spec["securityContext"] == POD_SECURITY_CONTEXT, name
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (50000, 0)
        assert spec["securityContext"]["fsGroup"] == 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert all(set(v) - {"name"} <= RESTRICTED_VOLUME_TYPES for v in volumes.values()), name
        assert "medium" not in volumes["ray-tmp"]["emptyDir"]  # disk-backed /tmp
        assert volumes["ray-shm"]["emptyDir"]["medium"] == "Memory"
        limits = spec["containers"][0]["resources"]["limits"]
        assert volumes["ray-shm"]["emptyDir"]["sizeLimit"] == limits["memory"]  # as KubeRay would size it
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "ray-tmp" and mounts["/dev/shm"] == "ray-shm", name
            assert set(mounts.values()) <= set(volumes)
    for container in ray_containers(cluster):
        context = container["securityContext"]
        assert context == CONTAINER_SECURITY_CONTEXT, container["name"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True
        assert not context.get("privileged")
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}  # writable /tmp everywhere


def test_security_contexts_and_volumes_are_configurable(helm: str) -> None:
    cluster = one(
        render(
            helm,
            *TOKEN,
            "--set",
            "ray.podSecurityContext.runAsUser=50000",
            "--set",
            "ray.podSecurityContext.runAsGroup=0",
            "--set",
            "ray.podSecurityContext.fsGroup=0",
            "--set",
            "ray.securityContext.readOnlyRootFilesystem=false",
            "--set",
            "ray.tmpVolume.sizeLimit=20Gi",
            "--set",
            "ray.shmVolume.sizeLimit=1Gi",
        ),
        "RayCluster",
    )
    for name, template in pod_templates(cluster).items():
        spec = template["spec"]
        context = spec["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (50000, 0, 0), name
        assert context["runAsNonRoot"] is True  # the other defaults stay
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["ray-tmp"]["emptyDir"]["sizeLimit"] == "20Gi"
        assert volumes["ray-shm"]["emptyDir"]["sizeLimit"] == "1Gi"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "ray.securityContext.readOnlyRootFileSystem=false"], "readOnlyRootFileSystem"),
        (["--set", "ray.podSecurityContext.runAsUser=-1"], "/ray/podSecurityContext/runAsUser"),
        (["--set", "ray.securityContext.seccompProfile.type=Off"], "/ray/securityContext/seccompProfile"),
        (["--set", "ray.tmpVolume.sizeLimit=lots"], "/ray/tmpVolume/sizeLimit"),
        (["--set", "networkPolicy.enabeld=false"], "enabeld"),
        (["--set", "ray.allowInsecureNoAuth=yes"], "/ray/allowInsecureNoAuth"),
    ],
)
def test_schema_rejects_misspelled_or_wrong_hardening_values(
    helm: str, args: list[str], message: str
) -> None:
    """A typo must fail loudly: the operator's CRD schema would silently prune an unknown field."""
    result = helm_template(helm, *TOKEN, *args)
    assert result.returncode != 0 and message in result.stderr, result.stderr


# --- 5. service-account tokens ------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], GPU_VALUES], ids=["default", "gpu"])
def test_no_service_account_token_in_ray_containers(helm: str, values: list[str]) -> None:
    docs = render(helm, *TOKEN, *values)
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    cluster = one(docs, "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True  # the default
    for name, template in pod_templates(cluster).items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            assert SA_TOKEN_PATH not in {m["mountPath"] for m in container["volumeMounts"]}, name
        projected = [v for v in spec["volumes"] if "projected" in v]
        if name == "head":
            # the token the autoscaler sidecar needs lives in the head pod only
            assert [v["name"] for v in projected] == ["autoscaler-kube-api-access"]
            sources = projected[0]["projected"]["sources"]
            assert sources[0]["serviceAccountToken"]["path"] == "token"
        else:
            assert projected == [], f"worker group {name} must not get a service-account token"
    mounts = {m["mountPath"]: m for m in autoscaler_container(cluster)["volumeMounts"]}
    assert mounts[SA_TOKEN_PATH]["name"] == "autoscaler-kube-api-access"
    assert mounts[SA_TOKEN_PATH]["readOnly"] is True


def test_without_autoscaling_no_pod_gets_a_token(helm: str) -> None:
    docs = render(helm, *TOKEN, "--set", "ray.autoscaling.enabled=false")
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    cluster = one(docs, "RayCluster")
    assert "autoscalerOptions" not in cluster["spec"]
    for name, template in pod_templates(cluster).items():
        assert template["spec"]["automountServiceAccountToken"] is False, name
        assert not [v for v in template["spec"]["volumes"] if "projected" in v], name


# --- 4. dashboard in the cluster only ------------------------------------------------------------


def test_dashboard_listens_on_loopback_and_the_head_service_is_internal(helm: str) -> None:
    docs = render(helm, *TOKEN)
    head = one(docs, "RayCluster")["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head["serviceType"] == "ClusterIP"
    assert not head.get("enableIngress")
    assert all(
        d["spec"].get("type") not in ("LoadBalancer", "NodePort") for d in docs if d["kind"] == "Service"
    )


# --- 2. NetworkPolicy ----------------------------------------------------------------------------


def ray_pod_rule(policy: dict) -> dict:
    rules = [
        r for r in policy["spec"]["ingress"] if r["from"] == [{"podSelector": policy["spec"]["podSelector"]}]
    ]
    assert len(rules) == 1
    return rules[0]


@pytest.mark.parametrize("values", [[], GPU_VALUES], ids=["default", "gpu"])
def test_network_policy_admits_only_ray_pods_and_airflow_workers(helm: str, values: list[str]) -> None:
    docs = render(helm, *TOKEN, *values)
    policy = one(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    templates = pod_templates(one(docs, "RayCluster"))
    # it selects every Ray pod of the release, and no Airflow pod nor another release's Ray pod
    for name, template in templates.items():
        assert selects(spec["podSelector"], template["metadata"]["labels"]), name
    assert not selects(spec["podSelector"], AIRFLOW_WORKER_LABELS)
    other_release = dict(templates["head"]["metadata"]["labels"], **{"app.kubernetes.io/instance": "other"})
    assert not selects(spec["podSelector"], other_release)

    assert len(spec["ingress"]) == 2
    # Ray pods <-> Ray pods: every port (Ray opens many), from these pods only
    internal = ray_pod_rule(policy)
    assert "ports" not in internal
    assert "namespaceSelector" not in internal["from"][0] and "ipBlock" not in internal["from"][0]
    # everyone else: only the Ray client and GCS ports, never the dashboard
    external = [r for r in spec["ingress"] if r is not internal]
    assert len(external) == 1
    for rule in external:
        ports = {(p["protocol"], p["port"]) for p in rule["ports"]}
        assert ports == {("TCP", 10001), ("TCP", 6379)}
        assert 8265 not in {p["port"] for p in rule["ports"]}
        for peer in rule["from"]:
            assert set(peer) <= {"podSelector", "namespaceSelector"}  # no ipBlock
            assert selects(peer["podSelector"], AIRFLOW_WORKER_LABELS)
            assert not any(selects(peer["podSelector"], t["metadata"]["labels"]) for t in templates.values())
            assert "namespaceSelector" not in peer  # default: Airflow in the release's namespace


def test_network_policy_values(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "ray": {"clientPort": 10002},
                "networkPolicy": {
                    "airflow": {
                        "podSelector": {"matchLabels": {"component": "worker", "release": "af"}},
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "airflow"}},
                    },
                    "extraIngress": [
                        {
                            "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                            "ports": [{"protocol": "TCP", "port": 8080}],
                        }
                    ],
                },
            }
        )
    )
    policy = one(render(helm, *TOKEN, "-f", str(values)), "NetworkPolicy")
    internal = ray_pod_rule(policy)
    airflow, extra = [r for r in policy["spec"]["ingress"] if r is not internal]
    # Helm merges the given matchLabels into the default ones (tier: airflow stays unless set to null)
    assert airflow["from"] == [
        {
            "podSelector": {"matchLabels": {"tier": "airflow", "component": "worker", "release": "af"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "airflow"}},
        }
    ]
    assert {p["port"] for p in airflow["ports"]} == {10002, 6379}
    assert extra["ports"] == [{"protocol": "TCP", "port": 8080}]
    kinds = {d["kind"] for d in render(helm, *TOKEN, "--set", "networkPolicy.enabled=false")}
    assert "NetworkPolicy" not in kinds and "RayCluster" in kinds


# --- 6. the Airflow overlay ----------------------------------------------------------------------


def test_airflow_overlay_passes_the_ray_token() -> None:
    overlay = yaml.safe_load((REPO / "charts" / "airflow-values.yaml").read_text())
    # the official chart renders extraEnv (a templated string) into every Airflow container's env
    extra_env = {e["name"]: e for e in yaml.safe_load(overlay["extraEnv"])}
    assert extra_env["RAY_AUTH_MODE"]["value"] == "token"
    assert extra_env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == TOKEN_REF
    assert "value" not in extra_env["RAY_AUTH_TOKEN"]
    # RAY_ADDRESS still comes from the chart's connection ConfigMap
    assert yaml.safe_load(overlay["extraEnvFrom"]) == [{"configMapRef": {"name": "RELEASE-connection"}}]
    # the chart's plain `env` list takes name/value only: a valueFrom there would be dropped
    assert all(set(e) == {"name", "value"} for e in overlay["env"])
    assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & {e["name"] for e in overlay["env"]}


def test_overlay_workers_are_admitted_by_the_default_network_policy(helm: str) -> None:
    """The default podSelector matches the labels the official chart puts on its workers."""
    policy = one(render(helm, *TOKEN), "NetworkPolicy")
    internal = ray_pod_rule(policy)
    (airflow,) = [r for r in policy["spec"]["ingress"] if r is not internal]
    assert airflow["from"][0]["podSelector"] == {"matchLabels": {"tier": "airflow", "component": "worker"}}


# --- offline validation --------------------------------------------------------------------------


def assert_mounts_resolve(template: dict, extra_containers: list[dict]) -> None:
    volumes = {v["name"] for v in template["spec"].get("volumes", [])}
    for container in template["spec"]["containers"] + extra_containers:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']} mounts unknown volume {mount['name']}"


@pytest.mark.parametrize(
    "args",
    [
        TOKEN,
        [*TOKEN, *GPU_VALUES],
        [*TOKEN, "--set", "ray.autoscaling.enabled=false"],
        ["--set", "ray.allowInsecureNoAuth=true"],
    ],
    ids=["default", "gpu", "no-autoscaling", "insecure"],
)
def test_hardened_objects_validate_offline(helm: str, args: list[str]) -> None:
    docs = render(helm, *args)
    assert "NetworkPolicy" in {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] == "RayCluster":
            jsonschema.validate(doc, json.loads(RAYCLUSTER_SCHEMA.read_text()))
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # the minimal RayCluster schema does not look into pod templates: validate each one, with the
    # autoscaler sidecar added to the head, against the Kubernetes PodTemplate schema
    cluster = one(docs, "RayCluster")
    autoscaling = cluster["spec"]["enableInTreeAutoscaling"]
    for name, template in pod_templates(cluster).items():
        extra = [autoscaler_container(cluster)] if autoscaling and name == "head" else []
        assert_mounts_resolve(template, extra)
        full = {
            **template,
            "spec": {**template["spec"], "containers": template["spec"]["containers"] + extra},
        }
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": name},
            "template": full,
        }
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def test_pod_template_validation_catches_a_bad_security_context() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "x"},
        "template": {
            "spec": {
                "containers": [
                    {"name": "c", "image": "i", "securityContext": {"readOnlyRootFileSystem": True}}
                ]
            }
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
