"""Fault matrix, end to end: every upstream failure over real sockets, its metrics, logs and recovery.

The exporter's pipeline (exporter.app.App: HTTP client, MSAL, poller, publisher, server) runs in
this process, so it can poll every 2 s and retry after 0.2 s; the config's 1m minimum would make
the matrix take an hour. Everything between the pieces is real: TLS to the simulator, HTTP to
/metrics. Each case checks the exported state, that the last good data stays, the log line, that
/metrics stays fast, that polling recovers by itself, and that no secret leaks.
"""

from __future__ import annotations

import dataclasses
import email.utils
import errno
import io
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter import token_store
from exporter.app import App, Controls, identity, load_configs, run_until
from exporter.auth import interactive_login
from exporter.logs import setup_logging
from exporter.simulator import Fault, Simulator
from exporter.simulator.app import ECHO, STATISTICS_PATH
from exporter.simulator.assertions import write_client_certificate
from tests.conftest import CLIENT_ID, TENANT_ID
from tests.helpers.e2e import cached_refresh_tokens, http_get, run_exporter, wait_for

# The simulator binds port 443 (MSAL's ROPC path): scripts/test runs this tier with --dist loadfile,
# so one worker runs this module and binds it once.
pytestmark = pytest.mark.e2e

# Distinctive fake secrets: any of them, or 8 characters of one, in an output is a leak.
CLIENT_SECRET = "Kx8Q~zT4mW9vR2pL7nB5jH3gD6fS1aYcE0uI"
PASSWORD = "Pw!7rQ2-Zebra-Lantern-Quartz-9931"
ROPC_TENANT = "00000000-0000-0000-0000-0000000000cc"
ROPC_CLIENT = "33333333-3333-3333-3333-333333333333"
ROPC_USER = "svc-dap@contoso.test"
# A tenant whose token cache lives only in Key Vault, reached with a certificate: its key, its
# signed assertions and its vault tokens are secrets too.
VAULT_TENANT = "00000000-0000-0000-0000-0000000000dd"
VAULT_APP = "44444444-4444-4444-4444-444444444444"
INTERVAL = 2.0
REQUEST_TIMEOUT = 1.0
# /metrics serves a pre-rendered body; a scrape that takes this long means it waited on upstream.
SLOW_SCRAPE = 0.5

Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class LogCapture(io.TextIOBase):
    """A thread-safe text sink for the exporter's log lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
        return len(text)

    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)


@dataclasses.dataclass
class Env:
    sim: Simulator
    app: App
    logs: LogCapture
    config_path: Path
    ropc: bool  # the simulator runs on port 443, where MSAL's ROPC user-realm lookup goes
    dns_down: bool = False
    slowest_scrape: float = 0.0

    @property
    def url(self) -> str:
        return self.app.server.url

    def scrape(self) -> Values:
        started = time.monotonic()
        status, body = http_get(self.url + "/metrics")
        self.slowest_scrape = max(self.slowest_scrape, time.monotonic() - started)
        assert status == 200
        self.last_body = body.decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(self.last_body) for s in family.samples}

    def value(self, values: Values, name: str, tenant: str = "contoso", **labels: str) -> float:
        if name.startswith("partnercenter_exporter_"):
            labels.setdefault("collector", "dap_statistics")  # the only collector these tenants run
        return values.get((name, tuple(sorted({"tenant": tenant, **labels}.items()))), float("nan"))

    def secrets(self) -> list[str]:
        key = (self.config_path.parent / "vault-app.pem").read_text().split("-----BEGIN PRIVATE KEY-----")[1]
        key_lines = [line for line in key.splitlines() if line and not line.startswith("-----")]
        # An assertion's header and claims are ordinary base64 JSON; its signature is the secret.
        signatures = [assertion.rsplit(".", 1)[-1] for assertion in self.sim.assertions]
        return [CLIENT_SECRET, PASSWORD, *self.sim.issued_tokens(), *key_lines, *signatures]


def _bind_simulator() -> tuple[Simulator, bool]:
    # Tokens that live 60 s are inside MSAL's 5-minute margin: every poll redeems a refresh token.
    try:
        # enforce_mfa off: the ROPC tenant plays an account from before Partner Center enforced MFA;
        # tests/test_fidelity.py covers the enforcement.
        return Simulator(port=443, token_lifetime=60, enforce_mfa=False), True
    except OSError:
        if os.environ.get("CI"):
            raise
        return Simulator(token_lifetime=60, enforce_mfa=False), False


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    directory = tmp_path_factory.mktemp("matrix")
    sim, ropc = _bind_simulator()
    sim.add_client(CLIENT_ID)
    sim.add_client(ROPC_CLIENT, secret=CLIENT_SECRET)
    sim.add_tenant(TENANT_ID, customers=250)
    sim.add_tenant(ROPC_TENANT, customers=30)
    sim.add_tenant(VAULT_TENANT, customers=20)
    sim.add_client(VAULT_APP)
    sim.register_certificate(VAULT_APP, write_client_certificate(directory / "vault-app.pem"))
    sim.keyvault.grant(VAULT_APP)
    seed = sim.issue_refresh_token(VAULT_TENANT, CLIENT_ID, "admin@vault.test")
    (directory / "vault-seed").write_text(seed)
    sim.add_user(ROPC_USER, PASSWORD)
    (directory / "seed").write_text(sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test"))
    (directory / "secret").write_text(CLIENT_SECRET)
    (directory / "password").write_text(PASSWORD)
    port = sim.base_url.rsplit(":", 1)[1]
    tenants: list[dict[str, Any]] = [
        {"name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
         "auth": {"token_cache_file": str(directory / "cache.json"),
                  "refresh_token_file": str(directory / "seed")}}]
    tenants.append({"name": "vaulted", "tenant_id": VAULT_TENANT, "client_id": CLIENT_ID, "auth": {
        "refresh_token_file": str(directory / "vault-seed"),
        "token_store": {"azure_key_vault": {
            "vault_url": sim.vault_url, "secret_name": "pcx-vaulted", "tenant_id": VAULT_TENANT,
            "client_id": VAULT_APP, "client_certificate_file": str(directory / "vault-app.pem")}}}})
    if ropc:
        tenants.append({"name": "ropc", "tenant_id": ROPC_TENANT, "client_id": ROPC_CLIENT,
                        "auth": {"method": "username_password", "username": ROPC_USER,
                                 "password_file": str(directory / "password"),
                                 "client_secret_file": str(directory / "secret")}})
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "request_timeout": f"{REQUEST_TIMEOUT:.0f}s",
        # The API by host name, so a DNS failure can be staged; the identity platform by address.
        "endpoints": {**sim.endpoints_config(), "dap_statistics_url": f"https://localhost:{port}{STATISTICS_PATH}"},
        "tenants": tenants}))
    config, _ = load_configs(str(config_path), None)
    logs = LogCapture()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("debug", "logfmt", logs)  # type: ignore[arg-type]
    real_getaddrinfo = socket.getaddrinfo
    box: dict[str, Env] = {}

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            if box["env"].dns_down:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            host = "127.0.0.1"  # like a hosts file: the simulator listens on IPv4 only
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        sim.start()
        app = App(dataclasses.replace(config, poll_interval=INTERVAL), config_path=str(config_path),
                  listen_address="127.0.0.1:0", retry_initial=0.2)
        app.start()
        box["env"] = Env(sim, app, logs, config_path, ropc)
        try:
            yield box["env"]
        finally:
            app.stop()
            sim.stop()
            root.handlers[:], root.level = saved


def healthy(env: Env, tenant: str = "contoso") -> Values:
    """Wait for a successful poll of the tenant and return the exported values."""
    values: Values = wait_for(lambda: (v := env.scrape()) and env.value(
        v, "partnercenter_exporter_poll_success", tenant) == 1 and v, 15, f"{tenant} to poll fine")
    return values


def assert_no_leak(env: Env, outputs: dict[str, str]) -> None:
    for secret in env.secrets():
        core = secret.removeprefix("sim-at-").removeprefix("sim-rt-")
        for where, text in outputs.items():
            assert secret not in text, f"a secret appears in {where}"
            assert core[:8] not in text, f"an 8-character prefix of a secret appears in {where}"


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    reason: str
    log: str  # a fragment of the poll-failed log line that tells the operator what happened
    inject: Callable[[Env], None]
    clear: Callable[[Env], None]
    tenant: str = "contoso"
    # What the status page says of the source meanwhile (default: failing with the reason).
    state: str = ""


def api_fault(status: int | None, body: Any = b"", **kwargs: Any) -> Callable[[Env], None]:
    return lambda env: env.sim.inject(Fault("api", status=status, body=body, times=10**6,
                                            tenant=TENANT_ID, **kwargs))


def clear(target: str) -> Callable[[Env], None]:
    return lambda env: env.sim.clear_faults(target)


def _revoke(env: Env) -> None:
    # As a revoked session does: the refresh token dies and the API refuses the access token.
    env.sim.revoke_refresh_tokens(TENANT_ID)
    env.sim.invalidate_access_tokens(TENANT_ID)


def _login(env: Env, name: str = "contoso") -> None:
    # The runbook's remedy for a revoked grant: sign in again; the running exporter picks it up.
    tenant = next(t for t in env.app.config.tenants if t.name == name)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(env.sim.certs.ca_file))) as http:
        interactive_login(identity(tenant, env.app.config.endpoints), http, out=io.StringIO())


def _clear_and_login(env: Env) -> None:
    env.sim.clear_faults("token")
    _login(env)


def _require_mfa(env: Env) -> None:
    env.sim.add_user(ROPC_USER, PASSWORD, mfa=True)
    # So the next poll has to sign in with the password again.
    env.sim.revoke_refresh_tokens(ROPC_TENANT)
    env.sim.invalidate_access_tokens(ROPC_TENANT)


def _switch_ropc_to_refresh_token(env: Env) -> None:
    # The remedy the error names: method refresh_token (here seeded, as login would), then SIGHUP.
    raw = yaml.safe_load(env.config_path.read_text())
    seed = env.config_path.parent / "ropc.seed"
    seed.write_text(env.sim.issue_refresh_token(ROPC_TENANT, ROPC_CLIENT, ROPC_USER))
    ropc = next(tenant for tenant in raw["tenants"] if tenant["name"] == "ropc")
    ropc["auth"] = {"method": "refresh_token", "refresh_token_file": str(seed),
                    "token_cache_file": str(env.config_path.parent / "ropc.cache.json"),
                    "client_secret_file": ropc["auth"]["client_secret_file"]}
    switched = env.config_path.parent / "config-after-mfa.yaml"
    switched.write_text(yaml.safe_dump(raw))
    config, _ = load_configs(str(switched), None)
    env.app.reload(dataclasses.replace(config, poll_interval=INTERVAL))


def _dns(down: bool) -> Callable[[Env], None]:
    def flip(env: Env) -> None:
        env.dns_down = down
        env.sim.drop_connections()  # pooled connections would skip the lookup
    return flip


CASES = [
    Case("500", "server_error", "Partner Center answered 500 Internal Server Error",
         api_fault(500), clear("api")),
    Case("502", "server_error", "Partner Center answered 502 Bad Gateway", api_fault(502), clear("api")),
    Case("503", "server_error", "Partner Center answered 503 Service Unavailable",
         api_fault(503), clear("api")),
    Case("slower-than-request_timeout", "timeout", "did not send its whole answer within request_timeout",
         api_fault(None, delay=REQUEST_TIMEOUT + 0.5), clear("api")),
    # A byte every 0.1 s never trips the 1 s read timeout; the whole answer must still come in time.
    Case("trickled-body", "timeout", "did not send its whole answer within request_timeout",
         api_fault(200, {"totalDapCustomerCount": 250, "pad": "x" * 100}, trickle=0.1), clear("api")),
    # The head too: a status line, then a header byte every 0.2 s, as a TLS-inspecting proxy can.
    Case("trickled-head", "timeout", "did not send its whole answer within request_timeout",
         api_fault(200, trickle_head=0.2), clear("api")),
    Case("deeply-nested-json", "invalid_response", "body that is not JSON (application/json",
         api_fault(200, "[" * 100_000), clear("api")),
    Case("connection-refused", "connection", "cannot reach the identity platform at 127.0.0.1",
         lambda env: env.sim.go_down(), lambda env: env.sim.come_back()),
    Case("reset-mid-body", "connection", "the connection to Partner Center at localhost broke off",
         api_fault(200, {"totalDapCustomerCount": 250, "pad": "x" * 4000}, reset=True), clear("api")),
    Case("html-error-page-with-200", "invalid_response",
         "Partner Center answered 200 with a body that is not JSON (text/html",
         api_fault(200, "<html><body>Service temporarily unavailable</body></html>",
                   headers={"Content-Type": "text/html"}), clear("api")),
    Case("truncated-json", "invalid_response", "body that is not JSON (application/json",
         api_fault(200, '{"totalDapCustomerCount": 250, "establishedDapCount": [{"date": "6/1'),
         clear("api")),
    Case("counts-as-strings", "invalid_response", "totalDapCustomerCount is missing or not a whole number",
         api_fault(200, {"totalDapCustomerCount": "250", "establishedDapCount": [],
                         "inactiveDapCount": []}), clear("api")),
    # A retired API is a state: the status page says so, rather than "failing".
    Case("404-retired-api", "not_found", "Partner Center answered 404 for delegatedAdminStatistics",
         api_fault(404), clear("api"), state="API retired (404/410)"),
    Case("410-retired-api", "not_found", "Partner Center answered 410 for delegatedAdminStatistics",
         api_fault(410), clear("api"), state="API retired (404/410)"),
    # With Retry-After: without one, MSAL holds a public client's 5xx for 60 s (see reliability.md).
    Case("identity-platform-down", "server_error", "the identity platform answered 503",
         lambda env: env.sim.inject(Fault("token", status=503, body="<html>down</html>",
                                          headers={"Content-Type": "text/html", "Retry-After": "1"},
                                          times=10**6, tenant=TENANT_ID)),
         clear("token")),
    Case("identity-platform-trickles", "timeout",
         "the identity platform did not send its whole answer within request_timeout",
         lambda env: env.sim.inject(Fault("token", status=503, body="<html>down</html>" * 2,
                                          headers={"Content-Type": "text/html", "Retry-After": "1"},
                                          trickle=0.1, times=10**6, tenant=TENANT_ID)),
         clear("token")),
    Case("identity-platform-trickles-head", "timeout",
         "the identity platform did not send its whole answer within request_timeout",
         lambda env: env.sim.inject(Fault("token", status=200, trickle_head=0.2, times=10**6,
                                          tenant=TENANT_ID)),
         clear("token")),
    # A refusal that quotes the (rotated, never configured) refresh token it was sent. MSAL replays a
    # 400 for 60 s, so the remedy is the one its message names: sign in again.
    Case("echoed-refresh-token", "auth", "Invalid request: refresh_token=[REDACTED]",
         lambda env: env.sim.inject(Fault("token", status=400, times=10**6, tenant=TENANT_ID, body={
             "error": "invalid_grant", "error_description": f"AADSTS9002313: Invalid request: {ECHO}"})),
         lambda env: _clear_and_login(env)),
    Case("refresh-token-revoked", "auth", "AADSTS50173", _revoke, _login),
    Case("mfa-required-for-ropc", "auth", "AADSTS50076", _require_mfa, _switch_ropc_to_refresh_token,
         tenant="ropc"),
    Case("dns-failure", "connection", "cannot resolve the host name localhost of Partner Center (DNS)",
         _dns(True), _dns(False)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_is_reported_data_is_kept_and_polling_recovers(env: Env, case: Case) -> None:
    """The fault shows as poll_success 0 and its reason; last good data stays; polling recovers."""
    if case.tenant == "ropc" and not env.ropc:
        pytest.skip("ROPC needs the simulator on port 443 (run as root); CI always runs it")
    before = healthy(env, case.tenant)
    last_success = env.value(before, "partnercenter_exporter_last_success_timestamp_seconds", case.tenant)
    customers = env.value(before, "partnercenter_dap_customers", case.tenant)
    errors_name = "partnercenter_exporter_poll_errors_total"
    errors = env.value(before, errors_name, case.tenant, reason=case.reason)
    log_start = len(env.logs.text())
    env.slowest_scrape = 0.0

    case.inject(env)
    try:
        failing = wait_for(lambda: (v := env.scrape()) and env.value(
            v, errors_name, case.tenant, reason=case.reason) > errors and v, 15, f"{case.name} to show")
        page = http_get(env.url + "/")[1].decode()
    finally:
        case.clear(env)
    assert env.value(failing, "partnercenter_exporter_poll_success", case.tenant) == 0
    assert env.value(failing, "partnercenter_exporter_last_poll_error", case.tenant,
                     reason=case.reason) == 1
    assert env.value(failing, "partnercenter_exporter_last_success_timestamp_seconds",
                     case.tenant) == last_success
    assert env.value(failing, "partnercenter_dap_customers", case.tenant) == customers
    assert (case.state or f"failing: {case.reason}") in page

    recovered = healthy(env, case.tenant)
    assert env.value(recovered, "partnercenter_exporter_last_success_timestamp_seconds",
                     case.tenant) > last_success
    log = env.logs.text()[log_start:]
    failed = [line for line in log.splitlines() if "msg=\"poll failed\"" in line
              and f"tenant={case.tenant}" in line and f"reason={case.reason}" in line]
    assert failed, f"no poll-failed log line for {case.name}"
    assert case.log in failed[0]
    assert env.slowest_scrape < SLOW_SCRAPE
    assert_no_leak(env, {"debug log": log, "/metrics": env.last_body, "/": page})


@pytest.mark.parametrize("retry_after", ["seconds", "http-date"])
def test_429_is_honoured_until_retry_after_expires(env: Env, retry_after: str) -> None:
    """After a 429, the next request waits for Retry-After, given in seconds or as an HTTP date."""
    healthy(env)
    until = int(time.time()) + 5  # an HTTP date has whole seconds
    header = "3" if retry_after == "seconds" else email.utils.formatdate(until, usegmt=True)
    env.sim.inject(Fault("api", status=429, headers={"Retry-After": header}, tenant=TENANT_ID))
    env.slowest_scrape = 0.0
    throttled = wait_for(lambda: (v := env.scrape()) and env.value(
        v, "partnercenter_exporter_poll_success") == 0 and v, 15, "the 429 to show")
    assert env.value(throttled, "partnercenter_exporter_last_poll_error", reason="throttled") == 1
    healthy(env)
    api = contoso_requests(env, "api")
    refused = max(i for i, r in enumerate(api) if r.status == 429)
    not_before = api[refused].at + 3 if retry_after == "seconds" else until
    assert api[refused + 1].at >= not_before - 0.05
    assert "Partner Center throttled the request (429); retrying after" in env.logs.text()
    assert env.slowest_scrape < SLOW_SCRAPE


def contoso_requests(env: Env, target: str) -> list[Any]:
    return [r for r in env.sim.requests if r.target == target and r.tenant == TENANT_ID]


def test_401_with_a_token_the_identity_platform_still_accepts(env: Env) -> None:
    """The API refusing a live token costs one forced refresh inside the poll, not a failed poll."""
    env.sim.token_lifetime = 3600  # a token MSAL keeps using, until the API refuses it
    try:
        issued = len(contoso_requests(env, "token"))
        wait_for(lambda: len(contoso_requests(env, "token")) > issued, 15, "a long-lived token")
        before = healthy(env)
        env.sim.invalidate_access_tokens(TENANT_ID)
        after = wait_for(lambda: (v := env.scrape()) and env.value(
            v, "partnercenter_exporter_api_requests_total", code="401") == 1 and v, 15, "the 401")
    finally:
        env.sim.token_lifetime = 60
    assert env.value(after, "partnercenter_exporter_poll_success") == 1
    errors = [(name, labels) for (name, labels) in before
              if name == "partnercenter_exporter_poll_errors_total" and ("tenant", "contoso") in labels]
    assert [after[key] for key in errors] == [before[key] for key in errors]


def _serve_payload(env: Env, body: dict[str, Any]) -> Values:
    """Have the API answer `body` until it is served; return the exported values at that point."""
    env.sim.inject(Fault("api", status=200, body=body, times=10**6))
    try:
        values: Values = wait_for(lambda: (v := env.scrape()) and env.value(
            v, "partnercenter_dap_customers") == body["totalDapCustomerCount"] and v, 15,
            "the odd payload to be served")
        return values
    finally:
        env.sim.clear_faults("api")


def test_bad_entries_are_skipped_and_counted(env: Env) -> None:
    """String and negative counts and future dates are skipped and counted; the rest is served."""
    future = time.strftime("%m/%d/%Y", time.gmtime(time.time() + 30 * 86400))
    skipped = env.value(healthy(env), "partnercenter_exporter_skipped_entries_total")
    values = _serve_payload(env, {"totalDapCustomerCount": 7, "establishedDapCount": [
        {"date": "1/2/2020", "count": 5}, {"date": "1/3/2020", "count": "3"},
        {"date": "1/4/2020", "count": -1}, {"date": future, "count": 2}], "inactiveDapCount": []})
    assert env.value(values, "partnercenter_exporter_poll_success") == 1
    assert env.value(values, "partnercenter_dap_established_relationships", date="2020-01-02") == 5
    assert env.value(values, "partnercenter_exporter_skipped_entries_total") == skipped + 3
    assert "skipped unparseable entries" in env.logs.text()
    healthy(env)


def test_ten_thousand_dates_are_served_and_scrapes_stay_fast(env: Env) -> None:
    """A payload of 10,000 dates is parsed and served, and /metrics stays quick while it is."""
    start = time.time() - 10_001 * 86400
    dates = [time.strftime("%m/%d/%Y", time.gmtime(start + i * 86400)) for i in range(10_000)]
    healthy(env)
    env.slowest_scrape = 0.0
    values = _serve_payload(env, {"totalDapCustomerCount": 10_000,
                               "establishedDapCount": [{"date": d, "count": 1} for d in dates],
                               "inactiveDapCount": []})
    served = sum(1 for (name, labels) in values
                 if name == "partnercenter_dap_established_relationships" and ("tenant", "contoso") in labels)
    assert served == 10_000
    for _ in range(20):
        env.scrape()
    assert env.slowest_scrape < SLOW_SCRAPE
    healthy(env)


def pending(env: Env, tenant: str) -> float:
    return env.value(env.scrape(), "partnercenter_exporter_token_store_write_pending", tenant)


def test_a_full_disk_keeps_polling_and_the_newest_token_lands_after(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the token cache's disk is full (ENOSPC injected), polls succeed and the pending gauge is
    1; once there is room, the newest refresh token reaches the file."""
    healthy(env)
    monkeypatch.setattr(token_store, "RETRY_FIRST", 0.2)  # retry at the next polls, not in 5 s
    with pytest.MonkeyPatch.context() as full:
        def no_space(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        full.setattr(token_store, "write_atomically", no_space)
        # An earlier test may have left a long-lived access token: make the next poll rotate.
        env.sim.invalidate_access_tokens(TENANT_ID)
        wait_for(lambda: pending(env, "contoso") == 1, 15, "the pending gauge")
        assert env.value(env.scrape(), "partnercenter_exporter_poll_success") == 1
    cache = env.config_path.parent / "cache.json"
    wait_for(lambda: pending(env, "contoso") == 0 and cached_refresh_tokens(cache)
             == env.sim.refresh_token_history(TENANT_ID)[-1:], 15, "the newest token in the file")
    assert "No space left on device" in env.logs.text()


def test_a_reload_naming_a_fifo_fails_at_once_and_polling_goes_on(env: Env) -> None:
    """SIGHUP's reload of a config whose secret file is a FIFO fails within a second, visibly, and
    the running config keeps polling."""
    raw = yaml.safe_load(env.config_path.read_text())
    fifo = env.config_path.parent / "seed-fifo"
    os.mkfifo(fifo)
    raw["tenants"][0]["auth"]["refresh_token_file"] = str(fifo)
    broken = env.config_path.parent / "config-fifo.yaml"
    broken.write_text(yaml.safe_dump(raw))
    controls = Controls()
    controls.reload()
    loop = threading.Thread(target=run_until, args=(env.app, controls,
                                                    lambda: load_configs(str(broken), None)[0]))
    started = time.monotonic()
    loop.start()
    try:
        gauge = ("partnercenter_exporter_config_last_reload_successful", (("config", "config"),))
        wait_for(lambda: env.scrape().get(gauge) == 0, 5, "the failed reload")
        assert time.monotonic() - started < 2
    finally:
        controls.stop()
        loop.join(5)
        env.app.publisher.loaded("config", True)
    assert "is a FIFO (named pipe)" in env.logs.text()
    healthy(env)


def test_a_login_to_the_vault_while_running_is_redeemed_not_overwritten(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login for the vaulted tenant while the exporter runs is what its next poll redeems; the
    exporter's rotation does not write over it."""
    healthy(env, "vaulted")
    monkeypatch.setattr(token_store, "RECHECK_EVERY", 0.0)
    _login(env, "vaulted")
    cache = json.loads(env.sim.keyvault.versions("pcx-vaulted")[-1])
    logged_in = {entry["secret"] for entry in cache["RefreshToken"].values()}
    wait_for(lambda: not logged_in & set(env.sim.live_refresh_tokens()), 15, "the login's token redeemed")
    healthy(env, "vaulted")
    assert "holds a newer sign-in" in env.logs.text()


def test_no_secret_in_the_whole_debug_log_or_config_check(env: Env) -> None:
    """Over the whole run, the debug log and --config.check show no secret or 8-character prefix."""
    result = run_exporter("--config.file", str(env.config_path), "--config.check", "--log.level=debug")
    assert (result.returncode, result.stdout.strip()) == (0, "OK")
    log = env.logs.text()
    assert 'msg="poll failed"' in log
    assert len(env.secrets()) > 20  # every poll rotated tokens, so there is plenty to leak
    assert env.sim.assertions  # the vaulted tenant's certificate signed in to the vault
    assert len(env.sim.keyvault.versions("pcx-vaulted")) > 1  # and its rotations were stored
    assert_no_leak(env, {"--config.check": result.stdout + result.stderr, "debug log": log,
                         "/metrics": http_get(env.url + "/metrics")[1].decode(),
                         "/": http_get(env.url + "/")[1].decode()})
