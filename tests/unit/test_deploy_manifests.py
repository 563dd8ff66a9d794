"""deploy/: the Kubernetes manifests against the API's published JSON schemas (offline, from kubernetes-validate),
the security rules they must keep, and the Dockerfile (hadolint, and the rules a linter does not know)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chamberlain.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
# The oldest Kubernetes the manifests promise to work on: the container `preStop: sleep` handler is 1.30's.
KUBERNETES_VERSION = "1.30.0"
SECRET_NAME = "chamberlain-secrets"
ALLOWED_EGRESS = {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 6379), ("TCP", 443)}
CLIENT_NAMESPACE_LABEL = {"chamberlain.io/client": "true"}
# Manifests applied by hand, outside kustomization.yaml (a one-off Job).
ONE_OFF = {"init-job.yaml"}

Manifest = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(path for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")


def _documents(path: Path) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


def _all_documents() -> list[Manifest]:
    return [document for path in _manifest_files() for document in _documents(path)]


def _one(kind: str) -> Manifest:
    found = [document for document in _all_documents() if document["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_specs() -> Iterator[tuple[str, Manifest]]:
    for document in _all_documents():
        if document["kind"] in ("Deployment", "Job"):
            yield document["kind"], document["spec"]["template"]["spec"]


def _dockerfile_uid() -> int:
    match = re.search(r"^ARG UID=(\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "deploy/Dockerfile declares no ARG UID"
    return int(match.group(1))


# --- rules, as functions returning problems, so each is also shown refusing a broken manifest ---


def container_problems(pod: Manifest) -> list[str]:
    problems = []
    pod_context = pod.get("securityContext", {})
    if pod_context.get("runAsNonRoot") is not True:
        problems.append("pod: runAsNonRoot is not true")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("pod: the service account token is mounted")
    for container in pod.get("initContainers", []) + pod["containers"]:
        name = container["name"]
        context = container.get("securityContext", {})
        expected = {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        }
        problems += [f"{name}: {key} is not {value}" for key, value in expected.items() if context.get(key) != value]
        if context.get("privileged", False):
            problems.append(f"{name}: privileged")
        if context.get("capabilities", {}).get("drop") != ["ALL"] or context["capabilities"].get("add"):
            problems.append(f"{name}: capabilities are not exactly drop ALL")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccomp profile is not RuntimeDefault")
        if context.get("runAsUser", pod_context.get("runAsUser")) in (None, 0):
            problems.append(f"{name}: no fixed non-root uid")
    return problems


def role_problems(role: Manifest) -> list[str]:
    problems = []
    for rule in role["rules"]:
        if rule.get("apiGroups") != [""] or rule.get("resources") != ["secrets"]:
            problems.append(f"rule on {rule.get('apiGroups')}/{rule.get('resources')}: only core secrets allowed")
        if rule.get("verbs") != ["get"]:
            problems.append(f"verbs {rule.get('verbs')}: only get allowed")
        names = rule.get("resourceNames")
        if not names or "*" in names:
            problems.append("a rule not limited to named secrets")
    return problems


def egress_ports(policy: Manifest) -> set[tuple[str, int | str]]:
    """Every (protocol, port) the policy lets out; a rule without ports opens them all, shown as ("*", "*")."""
    ports: set[tuple[str, int | str]] = set()
    for rule in policy["spec"]["egress"]:
        if not rule.get("ports"):
            ports.add(("*", "*"))
        for port in rule.get("ports", []):
            ports.add((port.get("protocol", "TCP"), port.get("port", "*")))
    return ports


def ingress_problems(policy: Manifest) -> list[str]:
    problems = []
    spec = policy["spec"]
    if "Ingress" not in spec.get("policyTypes", []) or "Egress" not in spec.get("policyTypes", []):
        problems.append("policyTypes must list Ingress and Egress, or the missing one is unrestricted")
    for rule in spec.get("ingress", []):
        sources = rule.get("from")
        if not sources:
            problems.append("an ingress rule without `from` admits every source")
        for source in sources or []:
            selector = source.get("namespaceSelector", {}).get("matchLabels")
            if set(source) != {"namespaceSelector"} or not selector:
                problems.append(f"ingress source {source} is not a labelled namespace")
    return problems


# --- the manifests ---


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda path: path.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    for document in _documents(path):
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            # The library's message embeds the whole schema; the path and the reason are what a reader needs.
            location = "/".join(str(part) for part in error.absolute_path)
            pytest.fail(f"{path.name}: {location}: {error.message}")


def test_schema_check_catches_a_misspelt_field() -> None:
    service = copy.deepcopy(_one("Service"))
    service["spec"]["portz"] = service["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError, match="portz"):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in _manifest_files()} - ONE_OFF
    assert "namespace" not in kustomization, "the base stays namespace-agnostic; overlays choose the namespace"
    assert all("namespace" not in document["metadata"] for document in _all_documents())


def test_the_required_objects_exist() -> None:
    kinds = sorted(document["kind"] for document in _all_documents())
    for kind in (
        "Deployment",
        "Service",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ):
        assert kind in kinds


def test_every_pod_runs_locked_down() -> None:
    for kind, pod in _pod_specs():
        assert container_problems(pod) == [], kind


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("securityContext", "readOnlyRootFilesystem"), False, "readOnlyRootFilesystem"),
        (("securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
        (("securityContext", "capabilities"), {"drop": ["ALL"], "add": ["NET_ADMIN"]}, "drop ALL"),
        (("securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "drop ALL"),
        (("securityContext", "seccompProfile"), {"type": "Unconfined"}, "seccomp"),
        (("securityContext", "privileged"), True, "privileged"),
        (("securityContext", "runAsNonRoot"), False, "runAsNonRoot"),
        (("securityContext", "runAsUser"), 0, "non-root uid"),
    ],
)
def test_a_loosened_container_is_refused(path: tuple[str, str], value: object, expected: str) -> None:
    pod = copy.deepcopy(_one("Deployment")["spec"]["template"]["spec"])
    pod["containers"][0][path[0]][path[1]] = value
    assert any(expected in problem for problem in container_problems(pod))


def test_the_uid_is_the_images() -> None:
    uid = _dockerfile_uid()
    for kind, pod in _pod_specs():
        assert pod["securityContext"]["runAsUser"] == uid, kind
        assert pod["securityContext"]["runAsGroup"] == uid, kind
        for container in pod["containers"]:
            assert container["securityContext"]["runAsUser"] == uid, kind


def test_the_role_only_gets_the_deployments_own_secrets() -> None:
    role = _one("Role")
    assert role_problems(role) == []
    named = {name for rule in role["rules"] for name in rule["resourceNames"]}
    container = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    used = {
        variable["valueFrom"]["secretKeyRef"]["name"]
        for variable in container["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert named == used == {SECRET_NAME}
    binding = _one("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "chamberlain"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "chamberlain"}]
    assert _one("ServiceAccount")["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "rule",
    [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"], "resourceNames": [SECRET_NAME]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["*"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": [SECRET_NAME]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
    ],
)
def test_a_wider_role_is_refused(rule: Manifest) -> None:
    role = copy.deepcopy(_one("Role"))
    role["rules"].append(rule)
    assert role_problems(role) != []


def test_secrets_come_from_the_secret_not_the_manifest() -> None:
    container = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    by_name = {variable["name"]: variable for variable in container["env"]}
    for name in ("CHAMBERLAIN_MASTER_KEY", "CHAMBERLAIN_DATABASE_URL", "CHAMBERLAIN_REDIS_URL"):
        assert by_name[name]["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
        assert "value" not in by_name[name]
    assert not any(document["kind"] == "Secret" for document in _all_documents())


def test_the_deployments_environment_loads(tmp_path: Path) -> None:
    container = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    samples = {
        "CHAMBERLAIN_MASTER_KEY": "A" * 43,
        "CHAMBERLAIN_DATABASE_URL": "postgresql://chamberlain@db/chamberlain",
        "CHAMBERLAIN_REDIS_URL": "redis://redis:6379/0",
        "CHAMBERLAIN_METRICS__BEARER_TOKEN": "b" * 32,
    }
    environ = {
        variable["name"]: samples.get(variable["name"], variable.get("value", "")) for variable in container["env"]
    }
    environ["CHAMBERLAIN_CONFIG"] = str(tmp_path / "chamberlain.yaml")
    (tmp_path / "chamberlain.yaml").write_text(_one("ConfigMap")["data"]["chamberlain.yaml"], encoding="utf-8")
    settings = load_settings(data_dir=tmp_path, environ=environ)
    assert settings.redis_url == samples["CHAMBERLAIN_REDIS_URL"]
    assert settings.public_url.startswith("https://")


def test_network_policy_lets_out_only_dns_databases_and_tls() -> None:
    policy = _one("NetworkPolicy")
    assert egress_ports(policy) == ALLOWED_EGRESS
    dns = [
        rule for rule in policy["spec"]["egress"] if ("UDP", 53) in {(p["protocol"], p["port"]) for p in rule["ports"]}
    ]
    assert dns[0]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]


def test_network_policy_admits_only_labelled_namespaces() -> None:
    policy = _one("NetworkPolicy")
    assert ingress_problems(policy) == []
    selectors = [
        source["namespaceSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for source in rule["from"]
    ]
    assert CLIENT_NAMESPACE_LABEL in selectors
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize(
    ("where", "rule"),
    [
        ("egress", {"ports": [{"protocol": "TCP", "port": 22}]}),
        ("egress", {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
        ("ingress", {"ports": [{"protocol": "TCP", "port": 8080}]}),
        ("ingress", {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
        ("ingress", {"from": [{"namespaceSelector": {}}]}),
    ],
)
def test_a_wider_network_policy_is_refused(where: str, rule: Manifest) -> None:
    policy = copy.deepcopy(_one("NetworkPolicy"))
    policy["spec"][where].append(rule)
    assert egress_ports(policy) != ALLOWED_EGRESS or ingress_problems(policy) != []


def test_probes_use_liveness_and_readiness_endpoints() -> None:
    container = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {port["name"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names


def test_resources_replicas_and_disruption() -> None:
    deployment = _one("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _one("PodDisruptionBudget")["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert _one("Service")["spec"]["selector"] == selector
    autoscaler = _one("HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert [metric["resource"]["name"] for metric in autoscaler["spec"]["metrics"]] == ["cpu"]
    # Writable paths are volumes: the root filesystem is read-only, so /tmp and the data dir must be mounted.
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/chamberlain"} <= mounts  # noqa: S108 (the container's path, not a temporary file here)


# --- the Dockerfile ---


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages[1:]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_runs_as_the_fixed_uid_without_tools() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    instructions = [instruction for instruction, _ in final]
    # No RUN at all: the runtime image has no shell, package manager or compiler to run one with.
    assert "RUN" not in instructions
    assert not any(re.search(r"\b(apt|apt-get|apk|pip|gcc)\b", arguments) for _, arguments in final)
    users = [arguments for instruction, arguments in final if instruction == "USER"]
    assert users == ["${UID}:${GID}"]
    assert re.fullmatch(r"\d+", str(_dockerfile_uid()))
    assert _dockerfile_uid() != 0
    healthcheck = [arguments for instruction, arguments in final if instruction == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    # Exec form with the image's Python: distroless has neither a shell nor curl.
    assert 'CMD ["/usr/bin/python3", "-c"' in healthcheck[0]
    assert "http://127.0.0.1:8080/healthz" in healthcheck[0]
    assert ("ENTRYPOINT", '["chamberlain"]') in final
    assert ("EXPOSE", "8080") in final


def test_every_uid_arg_is_the_same() -> None:
    values = set(re.findall(r"^ARG (?:UID|GID)=(\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE))
    assert values == {str(_dockerfile_uid())}


def test_build_context_excludes_everything_but_the_package() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line for line in ignore if line and not line.startswith("#")]
    assert patterns[0] == "**"
    assert {"!pyproject.toml", "!README.md", "!src/**"} <= set(patterns)
