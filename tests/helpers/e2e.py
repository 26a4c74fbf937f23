"""Start the exporter as a user would (a subprocess) and talk to it over real sockets."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from devtools.grafana import PrometheusAPI, QueryContext, dashboard_range, panel_queries, run_query
from exporter.simulator import Simulator
from tests.conftest import CLIENT_ID, TENANT_ID

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"msg=listening address=(\S+)")


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def inactive_over_90(sim: Simulator, tenant_id: str) -> int:
    """The simulator's own count of a tenant's customers whose last sign-in is over 90 days ago,
    and those no partner ever signed in to: the statistics leave them out of inactiveDapCount, so
    they count past every threshold."""
    today = dt.datetime.now(dt.UTC).date()
    return sum(1 for c in sim.tenants[tenant_id].customers
               if c.last_signin is None or (today - c.last_signin).days > 90)


def exporter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter", *args]


def run_exporter(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(exporter_command(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})}, check=False)


# Every collector, so the GDAP migration dashboard, rules and alerts have data too.
ALL_COLLECTORS = ["dap_statistics", "gdap_relationships", "gdap_access_assignments", "dap_customers",
                  "partner_customers"]


def seeded_tenant(sim: Simulator, directory: Path, name: str, tenant_id: str,
                  customers: int = 120, collectors: Sequence[str] | None = None) -> dict[str, object]:
    """Register another tenant in the simulator; return its config entry with a fresh seed."""
    sim.add_tenant(tenant_id, customers=customers)
    seed = directory / f"{name}.seed"
    seed.write_text(sim.issue_refresh_token(tenant_id, CLIENT_ID, f"admin@{name}.test"))
    entry: dict[str, object] = {"name": name, "tenant_id": tenant_id, "client_id": CLIENT_ID,
                                "auth": {"token_cache_file": str(directory / f"{name}.cache.json"),
                                         "refresh_token_file": str(seed)}}
    if collectors is not None:
        entry["collectors"] = list(collectors)
    return entry


def cached_refresh_tokens(path: Path) -> list[str]:
    """The refresh tokens in an MSAL token cache file; fails if the file does not parse."""
    cache = json.loads(path.read_text())
    return [entry["secret"] for entry in cache.get("RefreshToken", {}).values()]


def write_config(sim: Simulator, directory: Path, *, seed: bool = True, name: str = "contoso",
                 extra_tenants: Sequence[dict[str, object]] = (), collectors: Sequence[str] | None = None,
                 **top: object) -> Path:
    """A config with one refresh_token tenant against the simulator (seeded unless told not to)."""
    auth: dict[str, object] = {"token_cache_file": str(directory / f"{name}.cache.json")}
    if seed:
        seed_file = directory / f"{name}.seed"
        seed_file.write_text(sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test"))
        auth["refresh_token_file"] = str(seed_file)
    tenant: dict[str, object] = {"name": name, "tenant_id": TENANT_ID, "client_id": CLIENT_ID, "auth": auth}
    if collectors is not None:
        tenant["collectors"] = list(collectors)
    config = {"poll_interval": "1m", "request_timeout": "5s", **top,
              "endpoints": sim.endpoints_config(), "tenants": [tenant, *extra_tenants]}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def http_get(url: str, timeout: float = 5, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def installed_exporter_runs(exe: Path, cwd: Path) -> tuple[str, str]:
    """An installed `partnercenter-exporter`: `--version` and `demo --once` both succeed, and the
    demo prints metrics; returns both outputs."""
    shown = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, cwd=cwd,
                           check=False)
    assert shown.returncode == 0, shown.stderr
    once = subprocess.run([str(exe), "demo", "--once"], capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)
    assert once.returncode == 0, once.stderr[-2000:]
    assert "partnercenter_dap_customers{" in once.stdout
    return shown.stdout, once.stdout


def exporter_on(config: Path, directory: Path) -> ExporterProcess:
    """The exporter serving `config` on a free loopback port, its log in `directory`."""
    return ExporterProcess(["--config.file", str(config), "--web.listen-address=127.0.0.1:0"],
                           directory / "exporter.log")


class ExporterProcess:
    """The exporter in a subprocess on a free loopback port; its log goes to a file."""

    def __init__(self, args: Sequence[str], log_path: Path, *, open_files: int | None = None) -> None:
        """`open_files`: run under that `ulimit -n`."""
        self.log_path = log_path
        self._log: IO[str] = log_path.open("w")

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(exporter_command(*args), stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, cwd=ROOT, preexec_fn=limit)
        self.url = self._wait_for_address()

    def _wait_for_address(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_text())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited early: {self.log_path.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"exporter did not start: {self.log_path.read_text()}")

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_get(self.url + "/readyz")[0] == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"exporter never became ready: {self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
            if self.proc.stdout:
                self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        if self.proc.stdout:
            self.proc.stdout.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text()


def alert_rules_with_short_for(path: Path, alerts: Sequence[str]) -> Path:
    """The shipped alert rules with `for` cut to 1s for the named alerts, which a test waits for."""
    rules = yaml.safe_load((ROOT / "prometheus" / "alert_rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] in alerts:
                rule["for"] = "1s"
    path.write_text(yaml.safe_dump(rules))
    return path


def start_service(args: list[str], log: Path, ready_url: str, what: str) -> subprocess.Popen[bytes]:
    """Start Prometheus or Alertmanager with its output in `log`; wait until ready_url answers 200."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            return http_get(ready_url, timeout=1)[0] == 200
        except OSError:
            return False

    wait_for(ready, 30, f"{what} to be ready")
    return proc


def queries_without_data(api: PrometheusAPI, dashboards: dict[str, dict[str, Any]],
                         tenant_choices: Sequence[list[str]], scrape_interval: float) -> list[str]:
    """Each panel query that, for some value of the tenant variable, returns no data within 20 s."""
    empty = []
    for query in panel_queries(dashboards):
        for tenants in tenant_choices:
            context = QueryContext({"tenant": tenants}, dashboard_range(dashboards[query.dashboard]),
                                   scrape_interval)

            def has_data(c: QueryContext = context, q: Any = query) -> bool:
                result = run_query(api, q, c)
                return bool(result) and all(s.get("value") or s.get("values") for s in result)
            try:
                wait_for(has_data, 20, "data")
            except AssertionError:
                where = f"{query.dashboard} / {query.panel} / {query.ref}"
                empty.append(f"{','.join(tenants)}: {where}: {query.expr}")
    return empty
