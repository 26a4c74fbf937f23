"""deploy/kubernetes: the kustomize base, built with the real kustomize and checked offline.

Core resources are validated against the Kubernetes OpenAPI schemas that kubernetes-validate ships;
the Prometheus Operator's resources are checked for how they fit the Service and the rule files.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devtools import build_monitoring
from devtools.release import image, released
from tests.conftest import require_binary
from tests.helpers.deploy import ContainerFiles, flag_value
from tests.helpers.e2e import ROOT, run_exporter

pytestmark = pytest.mark.e2e

BASE = ROOT / "deploy" / "kubernetes"
AKS_OVERLAY = ROOT / "deploy" / "aks-workload-identity"
GUIDE = ROOT / "docs" / "deployment.md"
CORE_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
              "NetworkPolicy"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The oldest Kubernetes release still in common support, and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.31", kubernetes_validate.latest_version()]
MIB = 1024 * 1024


def kubectl() -> str:
    return str(Path(sys.executable).parent / "kubectl")


@cache
def built(directory: Path = BASE) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize deploy/kubernetes` (or an overlay): the resources as a cluster would
    receive them."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(kind: str) -> dict[str, Any]:
    [resource] = [r for r in built() if r["kind"] == kind]
    return resource


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [exporter] = pod_spec()["containers"]
    return dict(exporter)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def quantity_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"Mi": MIB, "Gi": 1024 * MIB}[unit]


def guide_secret_keys() -> set[str]:
    """The keys the guide's `kubectl create secret` command puts into the Secret."""
    return set(re.findall(r"--from-file=([\w.-]+)=", GUIDE.read_text()))


def test_kustomize_builds_every_resource() -> None:
    """The base builds the core resources and the two Prometheus Operator resources, in one namespace."""
    kinds = [r["kind"] for r in built()]
    assert sorted(kinds) == sorted(CORE_KINDS | OPERATOR_KINDS)
    namespaced = [r for r in built() if r["kind"] != "Namespace"]
    assert {r["metadata"]["namespace"] for r in namespaced} == {one("Namespace")["metadata"]["name"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_resources_pass_the_kubernetes_schemas(version: str) -> None:
    """Every core resource validates strictly (unknown fields are errors) against that Kubernetes version."""
    for resource in built():
        if resource["kind"] in CORE_KINDS:
            kubernetes_validate.validate(resource, version, strict=True)


def test_schema_validation_catches_a_misplaced_field() -> None:
    """The validation above is real: a field in the wrong place of the Deployment is refused."""
    deployment = yaml.safe_load(yaml.safe_dump(one("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_deployment_is_one_replica_replaced_not_rolled() -> None:
    """One replica with the Recreate strategy, so two pods never share the rotating token cache."""
    spec = one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    """Non-root, no privilege escalation, every capability dropped, seccomp RuntimeDefault, read-only root."""
    pod, box = pod_spec(), container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert box["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                      "capabilities": {"drop": ["ALL"]}}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in v for v in pod["volumes"])
    assert pod["automountServiceAccountToken"] is False
    namespace_labels = one("Namespace")["metadata"]["labels"]
    assert namespace_labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_image_is_the_one_the_repository_produces() -> None:
    """The base runs the image of CHANGELOG.md's newest release, or before the first release the one
    scripts/build-image builds from the checkout (partnercenter-exporter:local)."""
    assert container()["image"] == image(released())


def test_probes_hit_healthz_and_readyz_on_the_listening_port() -> None:
    """Liveness and startup probe /healthz, readiness /readyz, on the port the exporter listens on."""
    box = container()
    listen_port = int(flag_value(box["args"], "--web.listen-address").rpartition(":")[2])
    [port] = box["ports"]
    assert port["containerPort"] == listen_port
    probes = {name: box[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {name: get["path"] for name, get in probes.items()} == {
        "startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert {get["port"] for get in probes.values()} == {port["name"]}


def test_memory_request_and_limit_cover_the_benchmark() -> None:
    """The request covers one tenant's measured RSS, the limit the 100-tenant peak (docs/performance.md)."""
    table = (ROOT / "docs" / "performance.md").read_text()
    one_tenant = float(re.search(r"^\| 1 tenant, after start and first poll \| ([\d.]+) MiB", table, re.M)
                       .group(1))  # type: ignore[union-attr]
    peak = float(re.search(r"^\| same, while 10 connections scrape .*? \| peak ([\d.]+) MiB", table, re.M)
                 .group(1))  # type: ignore[union-attr]
    resources = container()["resources"]
    assert quantity_bytes(resources["requests"]["memory"]) >= one_tenant * MIB
    assert quantity_bytes(resources["limits"]["memory"]) >= 1.5 * peak * MIB
    assert resources["requests"]["cpu"]
    assert resources["limits"]["cpu"]


def test_token_cache_is_on_the_claim_and_config_check_passes_as_mounted(tmp_path: Path) -> None:
    """The ConfigMap's config passes --config.check with ConfigMap, Secret and claim mounted as in the pod."""
    pod, box = pod_spec(), container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    view = ContainerFiles(tmp_path / "pod")
    config_map = one("ConfigMap")
    claims = set()
    for mount in box["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] == config_map["metadata"]["name"]
            for key, text in config_map["data"].items():
                view.file(f"{mount['mountPath']}/{key}", text)
        elif "secret" in volume:
            for key in guide_secret_keys():
                view.file(f"{mount['mountPath']}/{key}", "stand-in secret value\n")
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert claim == one("PersistentVolumeClaim")["metadata"]["name"]
            assert not mount.get("readOnly"), "the token cache must be writable"
            view.volume(mount["mountPath"])
            claims.add(mount["mountPath"])
    container_config = flag_value(box["args"], "--config.file")
    config = yaml.safe_load(view.path(container_config).read_text())
    assert {str(Path(t["auth"]["token_cache_file"]).parent) for t in config["tenants"]} <= claims
    config_file = view.config_for_host(container_config, tmp_path / "config.yml")
    result = run_exporter(f"--config.file={config_file}", "--config.check")
    assert (result.returncode, result.stdout.strip()) == (0, "OK"), result.stderr


def test_secret_files_in_the_config_are_the_keys_the_guide_creates() -> None:
    """The secret files the config names are the keys of the guide's `kubectl create secret` command."""
    [secret_volume] = [v for v in pod_spec()["volumes"] if "secret" in v]
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == secret_volume["name"]]
    config = yaml.safe_load(one("ConfigMap")["data"]["config.yml"])
    named = {Path(value).name for tenant in config["tenants"] for key, value in tenant["auth"].items()
             if key.endswith("_file") and value.startswith(mount["mountPath"] + "/")}
    assert named
    assert named == guide_secret_keys()
    assert f"kubectl create secret generic {secret_volume['secret']['secretName']}" in GUIDE.read_text()


def test_service_and_service_monitor_select_the_pod_and_keep_the_job_name() -> None:
    """The Service selects the pod; the ServiceMonitor selects the Service and sets the rules' job name."""
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service, monitor = one("Service"), one("ServiceMonitor")
    assert matches(service["spec"]["selector"], pod_labels)
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == container()["ports"][0]["name"]
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    job = {r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job"}
    rules = (ROOT / "prometheus" / "alert_rules.yml").read_text()
    assert job == set(re.findall(r'up\{job="([^"]+)"\}', rules))
    scrape = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert job == {s["job_name"] for s in scrape}


def test_prometheus_rule_holds_the_same_groups_as_the_rule_files() -> None:
    """deploy/kubernetes/prometheusrule.yaml's groups equal prometheus/*.yml's (both from the mixin)."""
    rule = one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    expected = [group for path in build_monitoring.RULE_FILES
                for group in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected


def test_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    """The PrometheusRule's groups, as a rule file, pass promtool check rules."""
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": one("PrometheusRule")["spec"]["groups"]}))
    result = subprocess.run([require_binary("promtool"), "check", "rules", str(rules)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_network_policy_allows_out_only_dns_and_https() -> None:
    """The pod's egress is DNS (53 UDP/TCP) and HTTPS (443 TCP) only; ingress only the metrics port."""
    policy = one("NetworkPolicy")["spec"]
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["podSelector"]["matchLabels"], pod_labels)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    ingress = {(p["port"], p["protocol"]) for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress == {(container()["ports"][0]["name"], "TCP")}


def test_guide_login_command_runs_in_the_deployment_with_its_config() -> None:
    """The guide's `kubectl exec ... login` names this namespace, Deployment, config and a known tenant."""
    match = re.search(r"kubectl -n (\S+) exec -it deploy/(\S+) -- \\?\s*partnercenter-exporter login "
                      r"--config\.file=(\S+) --tenant=(\S+)", GUIDE.read_text())
    assert match, "the guide has no kubectl exec login command"
    namespace, deployment, config_file, tenant = match.groups()
    assert namespace == one("Namespace")["metadata"]["name"]
    assert deployment == one("Deployment")["metadata"]["name"]
    assert config_file == flag_value(container()["args"], "--config.file")
    config = yaml.safe_load(one("ConfigMap")["data"]["config.yml"])
    assert tenant in {t["name"] for t in config["tenants"] if "client_secret_file" not in t["auth"]}


def test_guide_overlay_builds_on_the_base(tmp_path: Path) -> None:
    """The guide's example overlay replaces the config and image and adds the release label."""
    block = re.search(r"```yaml\n( *)# my-partnercenter/kustomization.yaml\n(.*?)```", GUIDE.read_text(),
                      re.S)
    assert block, "the guide has no example overlay"
    indent = len(block.group(1))
    overlay = tmp_path / "my-partnercenter"
    overlay.mkdir()
    (tmp_path / "partnercenter-exporter").symlink_to(ROOT)
    lines = [line[indent:] for line in block.group(2).splitlines()]
    (overlay / "kustomization.yaml").write_text("\n".join(lines))
    config = yaml.safe_load((BASE / "config.yml").read_text())
    config["tenants"] = config["tenants"][:1]
    (overlay / "config.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    resources = {r["kind"]: r for r in yaml.safe_load_all(result.stdout)}
    assert yaml.safe_load(resources["ConfigMap"]["data"]["config.yml"]) == config
    [box] = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert box["image"] == "registry.example.com/partnercenter-exporter:VERSION"
    for kind in OPERATOR_KINDS:
        assert resources[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert "release" not in resources["Deployment"]["metadata"]["labels"]


def test_aks_workload_identity_overlay_validates_and_keeps_no_state_on_disk() -> None:
    """The AKS overlay validates strictly like the base; it has no claim and no state volume, labels
    the pod and annotates the service account for the workload identity webhook."""
    resources = built(AKS_OVERLAY)
    assert {r["kind"] for r in resources} == (CORE_KINDS - {"PersistentVolumeClaim"}) | OPERATOR_KINDS
    for version in KUBERNETES_VERSIONS:
        for resource in resources:
            if resource["kind"] in CORE_KINDS:
                kubernetes_validate.validate(resource, version, strict=True)
    [deployment] = [r for r in resources if r["kind"] == "Deployment"]
    [account] = [r for r in resources if r["kind"] == "ServiceAccount"]
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    client_id = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", client_id)
    assert not any("persistentVolumeClaim" in v for v in pod["spec"]["volumes"])
    [box] = pod["spec"]["containers"]
    assert "/var/lib/partnercenter-exporter" not in {m["mountPath"] for m in box["volumeMounts"]}
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]) == (1, "Recreate")


def test_aks_overlay_config_checks_with_the_webhook_environment(tmp_path: Path) -> None:
    """The overlay's config passes --config.check with the variables the webhook sets, and keeps
    its token cache in Key Vault, not in a file."""
    [config_map] = [r for r in built(AKS_OVERLAY) if r["kind"] == "ConfigMap"]
    config = yaml.safe_load(config_map["data"]["config.yml"])
    assert all("token_store" in t["auth"] and "token_cache_file" not in t["auth"] for t in config["tenants"])
    (tmp_path / "config.yml").write_text(config_map["data"]["config.yml"])
    token = tmp_path / "azure-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n")
    result = run_exporter(f"--config.file={tmp_path / 'config.yml'}", "--config.check", env={
        "AZURE_FEDERATED_TOKEN_FILE": str(token), "AZURE_CLIENT_ID": "00000000-0000-0000-0000-0000000000c1",
        "AZURE_TENANT_ID": "00000000-0000-0000-0000-0000000000c2"})
    assert (result.returncode, result.stdout.strip()) == (0, "OK"), result.stderr
