"""End to end: the exporter as a subprocess, the simulator over HTTPS, real scrapes and promtool."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.simulator import Fault, Simulator
from tests.conftest import TENANT_ID, free_port, ipv6_loopback, require_binary
from tests.helpers.e2e import (
    ROOT,
    ExporterProcess,
    exporter_command,
    exporter_on,
    http_get,
    inactive_over_90,
    run_exporter,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e


def metric(body: str, name_and_labels: str) -> float:
    match = re.search(rf"^{re.escape(name_and_labels)} (\S+)$", body, re.MULTILINE)
    assert match, f"{name_and_labels} not in exposition"
    return float(match.group(1))


@pytest.fixture
def exporter(sim: Simulator, tmp_path: Path) -> Iterator[ExporterProcess]:
    config = write_config(sim, tmp_path)
    proc = ExporterProcess(["--config.file", str(config), "--web.listen-address=127.0.0.1:0",
                            "--log.level=debug"], tmp_path / "exporter.log")
    yield proc
    proc.kill()


def test_scraped_metrics_match_simulator_data_and_pass_promtool(
        sim: Simulator, exporter: ExporterProcess) -> None:
    """Metrics scraped over HTTP carry the simulator's numbers, the process metrics and the reload
    gauges, and pass promtool check metrics."""
    exporter.wait_ready()
    status, body = http_get(exporter.url + "/metrics")
    assert status == 200
    text = body.decode()
    customers = sim.tenants[TENANT_ID].customers
    assert metric(text, 'partnercenter_dap_customers{tenant="contoso"}') == len(customers) == 250
    over_90 = inactive_over_90(sim, TENANT_ID)
    assert over_90 > 0
    assert metric(text, 'partnercenter_dap_inactive_customers_over_threshold'
                        '{tenant="contoso",threshold_days="90"}') == over_90
    assert metric(text, 'partnercenter_exporter_poll_success{'
            'collector="dap_statistics",tenant="contoso"}') == 1
    assert metric(text, 'partnercenter_exporter_api_requests_total{code="200",'
            'collector="dap_statistics",tenant="contoso"}') == 1
    assert metric(text, "process_resident_memory_bytes") > 10 * 2**20
    assert abs(metric(text, "process_start_time_seconds") - time.time()) < 120
    assert metric(text, 'partnercenter_exporter_config_last_reload_successful{config="config"}') == 1
    promtool = require_binary("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=30, check=False)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")


def test_scrapes_never_call_upstream(sim: Simulator, exporter: ExporterProcess) -> None:
    """Fifty scrapes of /metrics and / cause no request to the API or the identity platform."""
    exporter.wait_ready()
    before = len(sim.requests)
    for _ in range(25):
        assert http_get(exporter.url + "/metrics")[0] == 200
        assert http_get(exporter.url + "/")[0] == 200
    assert len(sim.requests) == before


def test_rotated_refresh_token_reaches_the_cache_file(sim: Simulator, exporter: ExporterProcess,
                                                      tmp_path: Path) -> None:
    """After the first poll, the cache holds the live rotated token and the seed is dead."""
    exporter.wait_ready()
    live = sim.live_refresh_tokens()
    cache = (tmp_path / "contoso.cache.json").read_text()
    assert len(live) == 1
    assert live[0] in cache
    assert (tmp_path / "contoso.seed").read_text() not in live


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_cleanly_within_5s(exporter: ExporterProcess, sig: int) -> None:
    """SIGTERM and SIGINT stop the exporter with exit code 0 within 5 seconds."""
    exporter.wait_ready()
    started = time.monotonic()
    assert exporter.stop(sig, timeout=5) == 0
    assert time.monotonic() - started < 5
    assert "shutting down" in exporter.log


def test_signal_exits_quickly_even_while_upstream_hangs(sim: Simulator, tmp_path: Path) -> None:
    """A poll stuck on a slow upstream does not hold up shutdown."""
    sim.inject(Fault("api", status=None, delay=4.5))
    proc = ExporterProcess(["--config.file", str(write_config(sim, tmp_path)),
                            "--web.listen-address=127.0.0.1:0"], tmp_path / "exporter.log")
    try:
        deadline = time.monotonic() + 10
        while sim.count("token") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        started = time.monotonic()
        assert proc.stop(timeout=5) == 0
        assert time.monotonic() - started < 2
    finally:
        proc.kill()


def test_once_prints_metrics_and_exits_zero(sim: Simulator, tmp_path: Path) -> None:
    """--once polls, prints the exposition on stdout and exits 0 when every tenant succeeded."""
    result = run_exporter("--config.file", str(write_config(sim, tmp_path)), "--once")
    assert result.returncode == 0, result.stderr
    assert 'partnercenter_dap_customers{tenant="contoso"} 250.0' in result.stdout


def test_once_exits_one_and_explains_when_a_tenant_fails(sim: Simulator, tmp_path: Path) -> None:
    """--once exits 1 when a tenant fails and names the tenant, reason and fix on stderr."""
    result = run_exporter("--config.file", str(write_config(sim, tmp_path, seed=False)), "--once")
    assert result.returncode == 1
    assert "error: tenant contoso: dap_statistics: auth: token cache" in result.stderr
    assert "partnercenter-exporter login" in result.stderr
    failed = 'partnercenter_exporter_poll_success{collector="dap_statistics",tenant="contoso"} 0.0'
    assert failed in result.stdout


def test_config_check_ok_and_errors(sim: Simulator, tmp_path: Path) -> None:
    """--config.check prints OK (exit 0), or every error (exit 2)."""
    good = run_exporter("--config.file", str(write_config(sim, tmp_path)), "--config.check")
    assert (good.returncode, good.stdout.strip()) == (0, "OK")
    assert sim.requests == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("poll_interval: 10s\ntenants:\n- name: X\n")
    result = run_exporter("--config.file", str(bad), "--config.check")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "poll_interval: must be at least 1m; Partner Center throttles per partner tenant",
        "tenants[0].name: must match [a-z0-9_-]+ (it becomes the tenant label), got 'X'",
        "tenants[0].tenant_id: required",
        "tenants[0].client_id: required",
        "tenants[0].auth.token_cache_file: required",
    ]


def test_config_example_passes_config_check(tmp_path: Path) -> None:
    """config.example.yaml passes --config.check once the files it names exist."""
    text = (ROOT / "config.example.yaml").read_text()
    for prefix in ("/run/secrets/", "/var/lib/partnercenter-exporter/"):
        local = tmp_path / prefix.strip("/").replace("/", "_")
        local.mkdir()
        text = text.replace(prefix, f"{local}/")
    for key, path in re.findall(r"(\w+)_file: (\S+)", text):
        if key != "token_cache":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text("example-secret-value\n")
            Path(path).chmod(0o600)  # as docs/security.md keeps secrets; 0644 would be warned about
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = run_exporter("--config.file", str(config), "--config.check",
                          env={"PC_FABRIKAM_CLIENT_SECRET": "example-env-secret"})
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "OK", "")


def test_config_example_without_its_files_reports_only_missing_files() -> None:
    """Unchanged, config.example.yaml fails only on files and variables absent here."""
    result = run_exporter("--config.file", "config.example.yaml", "--config.check")
    assert result.returncode == 2
    for line in result.stderr.splitlines():
        assert re.search(r"does not exist|is not set", line), line


def test_login_stores_tokens_that_the_exporter_then_uses(sim: Simulator, tmp_path: Path) -> None:
    """login prints the code and URL, fills the cache; --once then succeeds from that cache."""
    config = write_config(sim, tmp_path, seed=False)
    login = run_exporter("login", "--config.file", str(config), "--tenant", "contoso")
    assert login.returncode == 0, login.stderr
    assert f"{sim.base_url}/devicelogin" in login.stdout
    assert re.search(r"enter the code [A-Z0-9]{9}", login.stdout)
    assert "Signed in as admin@" in login.stdout
    once = run_exporter("--config.file", str(config), "--once")
    assert once.returncode == 0, once.stderr


def test_login_refuses_unknown_tenant(sim: Simulator, tmp_path: Path) -> None:
    """login with a tenant name not in the config lists the known names and exits 2."""
    result = run_exporter("login", "--config.file", str(write_config(sim, tmp_path)), "--tenant", "x")
    assert result.returncode == 2
    assert "no tenant named 'x'" in result.stderr
    assert "contoso" in result.stderr


def test_demo_serves_metrics_for_four_tenants(tmp_path: Path) -> None:
    """`demo` starts the simulator and exporter and serves metrics for its four tenants, each with
    all three collectors succeeding and customers without GDAP listed; for tailspin, whose admin is
    not in Admin Agents, Graph shows no relationship and every DAP customer is without GDAP."""
    proc = subprocess.Popen(exporter_command("demo", "--web.listen-address=127.0.0.1:0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            if "metrics:" in line:
                url = line.split("metrics:")[1].strip()
                break
        assert url is not None
        assert url.endswith("/metrics")
        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline:
            body = http_get(url)[1].decode()
            if body.count("partnercenter_exporter_poll_success{") == 12 and \
                    body.count("partnercenter_dap_customers_without_gdap{") == 4:
                break
            time.sleep(0.1)
        for name in ("contoso", "fabrikam", "northwind", "tailspin"):
            for collector in ("dap_statistics", "gdap_relationships", "dap_customers"):
                labels = f'{{collector="{collector}",tenant="{name}"}}'
                assert metric(body, f"partnercenter_exporter_poll_success{labels}") == 1
            assert metric(body, f'partnercenter_dap_customers_without_gdap{{tenant="{name}"}}') > 0
        assert metric(body, 'partnercenter_gdap_relationships{status="active",tenant="tailspin"}') == 0
        assert metric(body, 'partnercenter_dap_customers_without_gdap{tenant="tailspin"}') == \
            metric(body, 'partnercenter_dap_enabled_customers{tenant="tailspin"}') == 60
        # The demo a person opens has plain names; the hostile ones are the simulator's --hostile.
        assert "<script>" not in body
        assert "\ufffd" not in body
        assert http_get(url.removesuffix("metrics"))[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "Traceback" not in log
        assert "level=error" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_version_flag() -> None:
    """--version prints the program name and version, then the commit and Python it runs on."""
    from exporter.version import PYTHON_VERSION, REVISION, VERSION

    result = subprocess.run([sys.executable, "-m", "exporter", "--version"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert (result.returncode, result.stdout.splitlines()) == (0, [
        f"partnercenter-exporter {VERSION}", f"  revision: {REVISION}", f"  python:   {PYTHON_VERSION}"])


def test_port_in_use_is_one_clear_error(sim: Simulator, exporter: ExporterProcess, tmp_path: Path) -> None:
    """Starting on a port that is taken fails with one line naming the flag and address."""
    address = exporter.url.removeprefix("http://")
    other = tmp_path / "other"
    other.mkdir()
    result = run_exporter("--config.file", str(write_config(sim, other)),
                          f"--web.listen-address={address}", timeout=20)
    assert result.returncode == 1
    assert f"--web.listen-address: {address} is already in use" in result.stderr


def test_web_config_basic_auth_is_enforced(sim: Simulator, tmp_path: Path) -> None:
    """--web.config.file with basic_auth_users protects /metrics; /healthz stays open."""
    import base64

    import bcrypt

    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: "
                   + bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4)).decode() + "\n")
    proc = ExporterProcess(["--config.file", str(write_config(sim, tmp_path)),
                            "--web.listen-address=127.0.0.1:0", f"--web.config.file={web}"],
                           tmp_path / "exporter.log")
    try:
        credentials = {"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-pass").decode()}
        assert http_get(proc.url + "/metrics")[0] == 401
        assert http_get(proc.url + "/metrics", headers=credentials)[0] == 200
        assert http_get(proc.url + "/healthz")[0] == 200
    finally:
        proc.kill()


def test_config_check_reports_web_config_errors_too(sim: Simulator, tmp_path: Path) -> None:
    """--config.check also validates --web.config.file and prefixes its errors."""
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: plaintext\n")
    result = run_exporter("--config.file", str(write_config(sim, tmp_path)),
                          f"--web.config.file={web}", "--config.check")
    assert result.returncode == 2
    assert result.stderr.startswith("web.config.file: basic_auth_users.prometheus: must be a bcrypt hash")
    assert "plaintext" not in result.stderr


def test_runs_with_a_read_only_root_filesystem(sim: Simulator, tmp_path: Path) -> None:
    """As in `docker run --read-only`: only the token cache directory is writable, and a poll works."""
    unshare = require_binary("unshare")
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(sim, state)
    # The state directory becomes its own writable mount; everything else turns read-only.
    script = (f'mount --bind "{state}" "{state}" && mount -o remount,bind,ro / && '
              f'touch /probe-read-only 2>/dev/null && exit 99; exec "$@"')
    result = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             *exporter_command("--config.file", str(config), "--once")],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    if result.returncode != 0 and "Operation not permitted" in result.stderr and not os.environ.get("CI"):
        pytest.skip("needs a mount namespace (root); CI runs it")
    assert result.returncode == 0, result.stderr
    succeeded = 'partnercenter_exporter_poll_success{collector="dap_statistics",tenant="contoso"} 1.0'
    assert succeeded in result.stdout
    assert sim.live_refresh_tokens()[0] in (state / "contoso.cache.json").read_text()


def _listeners(proc: ExporterProcess) -> list[str]:
    line = next(x for x in proc.log.splitlines() if "msg=listening" in x)
    return re.search(r" listeners=(\S+)", line).group(1).split(",")  # type: ignore[union-attr]


def test_repeated_listen_addresses_serve_alike_without_exporter_metrics(
        sim: Simulator, tmp_path: Path) -> None:
    """Two --web.listen-address flags (IPv6 loopback as the second where the machine has it) serve the
    same body; --web.disable-exporter-metrics leaves out process_* and python_*, not the reload gauges;
    --web.telemetry-path moves the body."""
    second = "[::1]:0" if ipv6_loopback() else "127.0.0.2:0"
    proc = ExporterProcess(["--config.file", str(write_config(sim, tmp_path)),
                            "--web.listen-address=127.0.0.1:0", f"--web.listen-address={second}",
                            "--web.disable-exporter-metrics", "--web.telemetry-path=/x/metrics"],
                           tmp_path / "exporter.log")
    try:
        proc.wait_ready()
        first_url, second_url = (f"http://{listener}" for listener in _listeners(proc))
        assert second_url.startswith("http://[::1]:" if second.startswith("[") else "http://127.0.0.2:")
        body = http_get(first_url + "/x/metrics")[1]
        assert http_get(second_url + "/x/metrics")[1] == body
        assert http_get(first_url + "/metrics")[0] == 404
        assert b"partnercenter_exporter_config_last_reload_successful" in body
        assert b"process_" not in body
        assert b"\npython_" not in body
    finally:
        proc.kill()


def test_systemd_socket_activation_serves_on_the_passed_socket(sim: Simulator, tmp_path: Path) -> None:
    """Started by systemd-socket-activate (systemd's own launcher), --web.systemd-socket serves on the
    socket it was handed, at the first connection."""
    launcher = require_binary("systemd-socket-activate")
    port = free_port()
    log = (tmp_path / "exporter.log").open("w")
    proc = subprocess.Popen([launcher, "-l", f"127.0.0.1:{port}", *exporter_command(
        "--config.file", str(write_config(sim, tmp_path)), "--web.systemd-socket")],
        stderr=log, stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_for(lambda: "Listening on 127.0.0.1" in (tmp_path / "exporter.log").read_text(), 10,
                 "systemd-socket-activate to listen")
        status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=20)
        assert status == 200
        assert b"partnercenter_exporter_build_info" in body
        # The server answers from the moment it starts; the "listening" line follows it.
        wait_for(lambda: f"listeners=127.0.0.1:{port}" in (tmp_path / "exporter.log").read_text(), 10,
                 "the listening line naming the passed socket")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_systemd_socket_without_systemd_is_one_clear_error(sim: Simulator, tmp_path: Path) -> None:
    """--web.systemd-socket outside socket activation exits 1 with one line saying what to do."""
    result = run_exporter("--config.file", str(write_config(sim, tmp_path)), "--web.systemd-socket",
                          timeout=20)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "--web.systemd-socket: systemd passed no socket (LISTEN_FDS is not set)")


def test_the_simulators_hostile_names_arrive_cleaned_and_escaped(tmp_path: Path) -> None:
    """With `python -m exporter.simulator --hostile`, customer names with a lone surrogate, a line
    break, quotes and a backslash, and markup reach /metrics cleaned and escaped."""
    sim = subprocess.Popen([sys.executable, "-m", "exporter.simulator", "--hostile", "--dir", str(tmp_path)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        printed = "".join(sim.stdout.readline() for _ in range(4))
        assert f"config:    {tmp_path}/config.yaml" in printed
        exporter = exporter_on(tmp_path / "config.yaml", tmp_path)
        try:
            exporter.wait_ready(30)
            body = http_get(f"{exporter.url}/metrics")[1].decode()
        finally:
            exporter.stop()
        assert 'customer_name="Broken \ufffd Surrogate BV"' in body
        assert 'customer_name="Line Break Inc"' in body  # a line break in a name becomes a space
        assert 'customer_name="Quote \\" Backslash \\\\ Ltd"' in body
        assert 'customer_name="<script>alert(1)</script> LLC"' in body  # text/plain: no markup
    finally:
        sim.terminate()
        sim.communicate(timeout=10)
