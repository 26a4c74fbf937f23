"""The hardening suite: each finding of the black-box attack (issue "Hardening"), as a test that
failed before its fix. The finding's number is in each docstring."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gc
import gzip
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import httpx
import pytest
import respx
import yaml

from exporter.app import App
from exporter.cli import run as cli_run
from exporter.collectors.dap_customers import DapCustomers, parse_dap_customer
from exporter.collectors.dap_statistics import DapStatistics, DapStatisticsClient
from exporter.collectors.gdap_relationships import GdapRelationships, parse_relationship
from exporter.config import ConfigError, load_config, load_yaml, shown
from exporter.exposition import Publisher
from exporter.http import protocol, routes
from exporter.http import server as server_module
from exporter.http.routes import landing_page
from exporter.http.server import ExporterServer, connection_limit
from exporter.model import PollError, Snapshot, SourceView
from exporter.poller import Poller
from exporter.simulator import Simulator
from exporter.simulator.certs import CertFiles, generate_certs
from exporter.webconfig import BasicAuth, WebConfig, WebConfigFile, bcrypt_cost, load_web_config
from tests.conftest import API_URL, StaticToken
from tests.helpers.e2e import ExporterProcess, http_get, wait_for, write_config

SURROGATE = "bad \ud800 surrogate"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes; read until the server closes (or the timeout passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


@pytest.fixture
def publisher() -> Publisher:
    pub = Publisher((90,), poll_interval=60)
    pub.publish(Snapshot((SourceView("contoso", "dap_statistics", data=DapStatistics(total_customers=3),
                                         attempted=True, last_poll_success=True,
                                         last_success_time=time.time()),)))
    return pub


@pytest.fixture
def serve(publisher: Publisher, start_server: Callable[..., ExporterServer]) -> Callable[..., ExporterServer]:
    return lambda **options: start_server(publisher, **options)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return generate_certs(tmp_path_factory.mktemp("certs"))


# --- 1. The poll loop cannot die ------------------------------------------------------------

def hostile_snapshot() -> Snapshot:
    """Every upstream string that reaches a label or the status page, holding a lone surrogate."""
    skipped: list[str] = []
    customer = parse_dap_customer({
        "customerTenantId": "c1" + SURROGATE, "organizationDisplayName": SURROGATE, "dapEnabled": True,
        "startDateTime": "2024-01-01T00:00:00Z", "lastSignInDateTime": None}, "value[0]", skipped)
    relationship = parse_relationship({
        "id": "r1" + SURROGATE, "displayName": SURROGATE, "status": "active",
        "endDateTime": "2030-01-01T00:00:00Z",
        "customer": {"tenantId": "c1" + SURROGATE, "displayName": SURROGATE}}, "value[0]", skipped)
    assert customer is not None
    assert relationship is not None
    assert not skipped
    error = PollError("client_error", f"Partner Center refused it [{SURROGATE}]")
    common = {"name": "contoso", "attempted": True, "last_success_time": time.time()}
    return Snapshot((
        SourceView(collector="dap_statistics", last_poll_success=False,
                       last_error_reason=error.reason, last_error_message=error.message,
                       **common),  # type: ignore[arg-type]
        SourceView(collector="gdap_relationships", last_poll_success=True,
                       data=GdapRelationships((relationship,), fetched_at=time.time()),
                       **common),  # type: ignore[arg-type]
        SourceView(collector="dap_customers", data=DapCustomers((customer,)),
                       last_poll_success=True, **common),  # type: ignore[arg-type]
    ))


def test_lone_surrogates_from_upstream_are_cleaned_at_parse_time() -> None:
    """1: a lone surrogate in any upstream name, id or error text is replaced by U+FFFD when parsed,
    so the exposition and the status page render (before: UnicodeEncodeError killed the poller)."""
    snapshot = hostile_snapshot()
    publisher = Publisher((90,), poll_interval=60)
    publisher.publish(snapshot)
    body = publisher.current.body.decode("utf-8")
    assert 'customer_name="bad \ufffd surrogate"' in body
    page = landing_page(snapshot, now=time.time(), thresholds=(90,)).decode("utf-8")
    assert "refused it [bad \ufffd surrogate]" in page


class _Source:
    name, collector = "contoso", "dap_statistics"
    requests_by_code: dict[str, int] = {}
    token_expires_at = None
    token_store_pending = None
    certificate_expires_at = None
    retirable = False

    def fetch(self) -> DapStatistics:
        return DapStatistics(total_customers=1)


def test_a_render_that_raises_is_counted_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """1: an exception while publishing is logged once with its traceback, counted under
    stage="publish", the last good exposition stays, and the next publish works."""
    published: list[Snapshot] = []
    fail = [True]

    def publish(snapshot: Snapshot) -> None:
        if fail[0]:
            fail[0] = False
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        published.append(snapshot)

    poller = Poller([_Source()], interval=900, concurrency=1, on_snapshot=publish,
                    spawn=lambda fn: fn())
    poller.step()
    assert published == []
    traced = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert len(traced) == 1
    poller.reconfigure([_Source()], interval=900, concurrency=1)  # something new to publish
    poller.step()
    assert published[-1].internal_errors == {"publish": 1}


def test_the_poll_thread_survives_a_failing_tick() -> None:
    """1: the loop's own callbacks raising (day-change refresh) do not end the poll thread."""
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        raise RuntimeError("boom")

    poller = Poller([_Source()], interval=900, concurrency=1, on_snapshot=lambda s: None,
                    on_tick=tick)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(ticks) >= 1 and poller.snapshot().internal_errors.get("tick"), 5,
                 "a failing tick")
        assert thread.is_alive()
    finally:
        poller.stop()
        thread.join(5)


# The test ends the poll thread on purpose, with an exception no code may catch.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_fails_when_the_poll_loop_ends_or_stops_waking(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1: the watchdog: /healthz answers 503 once the poll thread has ended, or once the loop has
    not woken for WATCHDOG_AFTER, so Kubernetes and Docker restart the process."""
    app = App(load_config(write_config(sim, tmp_path)), config_path=str(tmp_path / "config.yaml"),
              listen_address="127.0.0.1:0")
    stuck = threading.Event()

    def step() -> float:
        stuck.wait()
        raise SystemExit  # ends the thread, as an uncaught BaseException would

    monkeypatch.setattr(app.poller, "step", step)
    app.start()
    try:
        assert http_get(app.server.url + "/healthz")[0] == 200
        monkeypatch.setattr("exporter.app.WATCHDOG_AFTER", 0.2)
        time.sleep(0.3)
        status, body = http_get(app.server.url + "/healthz")
        assert (status, body.startswith(b"unhealthy: the poll loop has not run for")) == (503, True)
        monkeypatch.setattr("exporter.app.WATCHDOG_AFTER", 3600)
        stuck.set()
        wait_for(lambda: http_get(app.server.url + "/healthz")[0] == 503, 5, "the dead loop")
        assert http_get(app.server.url + "/healthz")[1] == \
            b"unhealthy: the poll loop has stopped; restart the exporter\n"
    finally:
        app.stop()


def test_a_request_that_raises_costs_one_500_and_one_log_line(
        serve: Callable[..., ExporterServer], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """1 (serving side): a bug while answering a request (here the status page raising) is a 500 for
    that request; the server goes on, and the error is logged once however often it repeats."""
    srv = serve()

    def broken(*args: object, **kwargs: object) -> bytes:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(routes, "landing_page", broken)
    for _ in range(5):
        assert exchange(srv.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500 ")
    assert exchange(srv.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n") \
        .startswith(b"HTTP/1.1 200 ")
    assert caplog.text.count("unexpected error while answering a request") == 1


# --- 2. Bounded memory per connection ------------------------------------------------------------

def non_reading_clients(port: int, count: int, request: bytes, volume: int) -> list[socket.socket]:
    """`count` connections, each sending up to `volume` bytes of pipelined `request`s without
    reading any answer (sends stop where the server stops reading)."""
    payload = request * max(1, volume // len(request))
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        socks.append(sock)
    sent = [0] * count
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(n < len(payload) for n in sent):
        for i, sock in enumerate(socks):
            if sent[i] < len(payload):
                with contextlib.suppress(BlockingIOError):
                    sent[i] += sock.send(payload[sent[i]:sent[i] + 65536])
        time.sleep(0.01)
    return socks


def metrics_publisher(size: int) -> Publisher:
    """A publisher whose /metrics body is about `size` bytes."""
    publisher = Publisher((90,), poll_interval=60)
    publisher.publish(Snapshot((SourceView(
        name="contoso", collector="dap_statistics", attempted=True, last_poll_success=True,
        data=DapStatistics(total_customers=1, established={
            dt.date(2000, 1, 1) + dt.timedelta(days=d): d for d in range(size // 80)})),)))
    return publisher


@pytest.mark.parametrize("auth", [False, True], ids=["metrics", "healthz-with-basic-auth"])
def test_clients_that_never_read_cost_bounded_memory_and_are_dropped(
        auth: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """2: 300 connections pipelining GET /metrics (or 1 MB each of GET /healthz with basic auth on)
    and never reading grow RSS by less than 64 MiB, and every one is dropped once its output has
    waited SEND_TIMEOUT (before: 1 MB each, held forever, swept and logged every second)."""
    monkeypatch.setattr(protocol, "SEND_TIMEOUT", 1.0)
    monkeypatch.setattr(protocol, "REQUEST_HEAD_TIMEOUT", 1.0)
    monkeypatch.setattr(protocol, "IDLE_TIMEOUT", 2.0)
    web = WebConfig(basic_auth=BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(4))})) if auth \
        else WebConfig()
    srv = ExporterServer("127.0.0.1:0", metrics_publisher(40_000), web=web)
    srv.start()
    try:
        gc.collect()
        before = rss_bytes()
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" if auth \
            else b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        count, volume = (100, 1 << 20) if auth else (300, 200 * len(request))
        socks = non_reading_clients(srv.port, count, request, volume)
        time.sleep(0.5)
        grown = rss_bytes() - before
        assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"
        wait_for(lambda: not srv.connections, 8, "every stalled connection to be dropped")
        for sock in socks:
            sock.close()
    finally:
        srv.shutdown()


# --- 3, 4, 5. Basic auth is no CPU lever, no hang, no user oracle ---------------------------------

def test_bcrypt_checks_are_bounded_and_the_rest_get_429_at_once(
        serve: Callable[..., ExporterServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """3: with MAX_AUTH_QUEUE checks running or waiting, a further request needing bcrypt is answered
    429 at once instead of joining an ever longer queue."""
    release = threading.Event()
    real = bcrypt.checkpw

    def slow(password: bytes, hashed: bytes) -> bool:
        release.wait(5)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow)
    srv = serve(web=WebConfig(basic_auth=BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(4))})))
    waiting = []
    for i in range(server_module.MAX_AUTH_QUEUE):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(f"GET /metrics HTTP/1.1\r\nAuthorization: {basic('u', f'guess{i}')}\r\n\r\n".encode())
        waiting.append(sock)
    time.sleep(0.2)
    started = time.monotonic()
    answer = exchange(srv.port, f"GET /metrics HTTP/1.1\r\nAuthorization: {basic('u', 'other')}\r\n"
                                f"Connection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert b"Retry-After: 1\r\n" in answer
    assert time.monotonic() - started < 1
    release.set()
    for sock in waiting:
        assert sock.recv(100).startswith(b"HTTP/1.1 401 ")
        sock.close()


def test_a_repeated_wrong_password_costs_no_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """3: a failed check is remembered for FAILED_TTL, so repeating a wrong guess (or an unknown
    user) runs bcrypt once, not every time."""
    calls: list[bytes] = []
    real = bcrypt.checkpw
    auth = BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(4))})
    def counting(pw: bytes, hashed: bytes) -> bool:
        calls.append(pw)
        return real(pw, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    for _ in range(20):
        assert not auth.check(basic("u", "wrong"))
        assert not auth.check(basic("nobody", "x"))
    assert len(calls) == 2


def test_a_web_config_reload_keeps_what_basic_auth_remembers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3: a reload (as each certificate rotation causes) keeps verified credentials of users whose
    hash did not change, so scrapes during an attack never wait for bcrypt; a changed hash does
    not match any more."""
    kept, changed = (bcrypt.hashpw(pw, bcrypt.gensalt(4)).decode() for pw in (b"a", b"b"))
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  kept: {kept}\n  changed: {changed}\n")
    web = WebConfigFile(path, recheck_interval=0, spawn=lambda fn: fn())
    assert web.current().basic_auth.check(basic("kept", "a"))
    assert web.current().basic_auth.check(basic("changed", "b"))
    path.write_text(f"basic_auth_users:\n  kept: {kept}\n  changed: "
                    f"{bcrypt.hashpw(b'b', bcrypt.gensalt(4)).decode()}\nhttp_server_config: {{}}\n")
    web.current()  # sees the change and reloads (here, on this thread)
    auth = web.current().basic_auth
    assert auth.known_result(basic("kept", "a")) is True
    assert auth.known_result(basic("changed", "b")) is None  # only bcrypt can tell now


def test_a_password_over_72_bytes_gets_401_not_a_hang(serve: Callable[..., ExporterServer]) -> None:
    """4: bcrypt reads at most 72 bytes and bcrypt 5 raises on more; such a password is answered
    401 at once (before: the ValueError escaped, no answer came, the client waited 30 s)."""
    srv = serve(web=WebConfig(basic_auth=BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(4))})))
    started = time.monotonic()
    answer = exchange(srv.port, f"GET /metrics HTTP/1.1\r\nAuthorization: {basic('u', 'x' * 100)}\r\n"
                                f"Connection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert time.monotonic() - started < 2


def test_unknown_users_cost_as_much_bcrypt_as_wrong_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """5: an unknown user is checked by bcrypt against a dummy hash of the configured cost, as a
    wrong password is, so timing does not tell users apart (before: a fixed cost 10). Checked by
    the cost of each bcrypt call, not by wall-clock time, which a loaded machine blurs."""
    auth = BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(8))})
    costs: list[int] = []
    real_checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        costs.append(bcrypt_cost(hashed))
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert not auth.check(basic("nobody", "wrong-1"))
    assert not auth.check(basic("u", "wrong-2"))
    assert costs == [8, 8]


def test_the_dummy_hash_has_the_highest_configured_cost() -> None:
    """5: with users of several costs, unknown users cost what the most expensive user costs."""
    auth = BasicAuth({"cheap": bcrypt.hashpw(b"p", bcrypt.gensalt(4)),
                      "dear": bcrypt.hashpw(b"p", bcrypt.gensalt(9))})
    assert auth._dummy.startswith(b"$2b$09$")


# --- 6. SIGHUP without leaks or storms -------------------------------------------------------------

def test_fifty_reloads_leak_nothing_and_poll_nothing_early(sim: Simulator, tmp_path: Path) -> None:
    """6: 50 reloads, each changing request_timeout (so the HTTP client is rebuilt), leave no extra
    file descriptor and send no extra request upstream; the replaced clients are closed."""
    path = write_config(sim, tmp_path, collectors=["dap_statistics", "gdap_relationships"])
    app = App(load_config(path), config_path=str(path), listen_address="127.0.0.1:0")
    app.start()
    try:
        wait_for(lambda: app.publisher.current.snapshot.ready, 10, "the first polls")
        first_client = app.http_client
        fds, api, tokens = open_fds(), sim.count("api"), sim.count("token")
        raw = yaml.safe_load(path.read_text())
        for i in range(50):
            raw["request_timeout"] = f"{5 + i % 2 + 1}s"
            path.write_text(yaml.safe_dump(raw))
            app.reload(load_config(path))
            app.tidy()
        time.sleep(0.5)
        app.tidy()
        assert first_client.is_closed
        assert (sim.count("api"), sim.count("token")) == (api, tokens)
        assert open_fds() <= fds
        body = app.publisher.current.body.decode()
        assert 'partnercenter_exporter_poll_success{collector="dap_statistics",tenant="contoso"} 1.0' \
            in body  # the data carried over the rebuild
    finally:
        app.stop()


# --- 7, 8. No traceback from any config file; no alias bomb ------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    (b"tenants: [\xff\xfe]\n", "config.file: not UTF-8 text (invalid byte at offset 10)"),
    (b"? [a]\n: b\n", "config.file: invalid YAML at line 1, column 3: a key must be a plain value"),
    (b"poll_concurrency: " + b"9" * 5000 + b"\n", "config.file: a value cannot be read"),
    (b"a: " + b"[" * 5000 + b"\n", "config.file: "),
])
def test_a_config_file_of_any_content_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str) -> None:
    """7: invalid UTF-8, a complex key, an integer too long to convert and deep nesting each end in
    a one-line error and exit 2, never a traceback."""
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    assert cli_run(["--config.file", str(path), "--config.check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_web_config_of_bad_bytes_is_a_config_error(tmp_path: Path) -> None:
    """7: invalid UTF-8 and complex keys in --web.config.file are ConfigErrors naming the file."""
    path = tmp_path / "web.yml"
    for content, expected in ((b"basic_auth_users: {\xff: x}\n", "not UTF-8 text"),
                              (b"? [a]\n: b\n", "a key must be a plain value"),
                              (b"a: 1\na: 2\n", "duplicate key 'a'")):
        path.write_bytes(content)
        with pytest.raises(ConfigError) as caught:
            load_web_config(path)
        assert caught.value.errors[0].startswith("web.config.file: ")
        assert expected in caught.value.errors[0]


def test_a_bcrypt_hash_with_a_bad_cost_is_a_field_error(tmp_path: Path) -> None:
    """7: a hash of bcrypt's shape but with a cost that is not a number names the user's field
    (before: "cannot be used (ValueError); this is a bug")."""
    path = tmp_path / "web.yml"
    path.write_text(f'basic_auth_users:\n  prometheus: "$2b$xx${"a" * 53}"\n')
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.errors[0].startswith("basic_auth_users.prometheus: must be a bcrypt hash")


def test_a_live_web_config_edit_into_bad_bytes_is_reported_as_a_reload_failure(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """7: invalid UTF-8 written into the web config while running is logged as `web config reload
    failed` with the cause, and serving goes on (before: a dropped connection and an ERROR)."""
    path = tmp_path / "web.yml"
    path.write_text("http_server_config: {}\n")
    srv = ExporterServer("127.0.0.1:0", metrics_publisher(1000),
                         web=WebConfigFile(path, recheck_interval=0))
    srv.start()
    try:
        path.write_bytes(b"basic_auth_users: {\xff: x}\n")
        wait_for(lambda: http_get(f"http://127.0.0.1:{srv.port}/metrics")[0] == 200
                 and "web config reload failed" in caplog.text, 5, "the failed reload")
    finally:
        srv.shutdown()
    (failure,) = [r for r in caplog.records if r.getMessage().startswith("web config reload failed")]
    assert "not UTF-8 text" in failure.__dict__["errors"]
    assert "error while serving" not in caplog.text


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize("field", ["poll_concurrency: *i", "inactive_thresholds_days: [*i]"])
def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path, field: str) -> None:
    """8: aliases that would expand past MAX_ALIAS_EXPANSION values are refused with a message that
    says so, at once (before: an error message echoed the value and expanded 10^9 of them)."""
    path = tmp_path / "config.yaml"
    path.write_text(BOMB + field + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert time.monotonic() - started < 2
    assert caught.value.errors == [
        "config.file: aliases expand to more than 10000 values; share smaller blocks, or write them out"]


def test_an_alias_bomb_in_the_web_config_is_refused(tmp_path: Path) -> None:
    """8: the same holds for --web.config.file (`min_version: *i`), which is re-read while serving."""
    path = tmp_path / "web.yml"
    path.write_text(BOMB + "tls_server_config:\n  min_version: *i\n")
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        load_web_config(path)


def test_error_messages_never_echo_more_than_a_short_value() -> None:
    """8: a value quoted in an error is cut to a fixed length, whatever its size or depth."""
    shared: list[object] = ["x" * 100] * 10
    for _ in range(8):
        shared = [shared] * 10
    assert len(shown(shared)) <= 60
    assert len(shown(10**5000)) <= 60


def test_anchors_aliases_and_merge_keys_for_shared_blocks_still_work() -> None:
    """8: modest aliases, such as one auth block shared by tenants, and merge keys that override
    part of it, are still accepted."""
    text = (b"shared: &auth {method: refresh_token, client_secret_env: SECRET}\n"
            b"a: *auth\n"
            b"b:\n  <<: *auth\n  method: client_credentials\n")
    shared = {"method": "refresh_token", "client_secret_env": "SECRET"}
    assert load_yaml(text, "config.file") == {
        "shared": shared, "a": shared, "b": {**shared, "method": "client_credentials"}}


def test_a_recursive_alias_is_a_config_error(tmp_path: Path) -> None:
    """8: an alias inside the block it names is refused, not followed forever."""
    with pytest.raises(ConfigError, match="an alias refers to a block that contains it"):
        load_yaml(b"a: &a [1, *a]\n", "config.file")


# --- 9. A cap on connections ---------------------------------------------------------------------------

def test_past_the_connection_cap_the_quietest_connection_makes_room(
        serve: Callable[..., ExporterServer], caplog: pytest.LogCaptureFixture) -> None:
    """9: at --web.max-connections, a new connection (a scrape) is served by dropping the longest-
    quiet one, and the limit is logged once, not per connection."""
    srv = serve(max_connections=10)
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(10)]
    time.sleep(0.2)
    for _ in range(20):
        assert exchange(srv.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n") \
            .startswith(b"HTTP/1.1 200 ")
    assert len(srv.connections) <= 10
    assert caplog.text.count("connection limit reached") == 1
    for sock in idle:
        sock.close()


def test_the_connection_cap_stays_within_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """9: the cap is lowered to half of `ulimit -n`, so connections cannot use every descriptor."""
    monkeypatch.setattr("resource.getrlimit", lambda _: (64, 4096))
    assert connection_limit(512) == 32
    assert connection_limit(10) == 10


@pytest.mark.e2e
def test_idle_connections_under_a_low_ulimit_neither_block_scrapes_nor_flood_the_log(
        sim: Simulator, tmp_path: Path) -> None:
    """9: with `ulimit -n 64`, 120 idle connections leave scrapes working and write at most a few
    error lines (before: scrapes timed out and 4,522 ERROR lines in 7 s)."""
    proc = ExporterProcess(["--config.file", str(write_config(sim, tmp_path)),
                            "--web.listen-address=127.0.0.1:0"], tmp_path / "exporter.log",
                           open_files=64)
    idle: list[socket.socket] = []
    try:
        proc.wait_ready()
        port = int(proc.url.rsplit(":", 1)[1])
        for _ in range(120):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(2)
        for _ in range(5):
            assert http_get(proc.url + "/metrics", timeout=3)[0] == 200
        time.sleep(1)
        assert proc.log.count("level=error") <= 2, proc.log[-2000:]
    finally:
        for sock in idle:
            sock.close()
        proc.kill()


# --- 10, 11, 12. HTTP correctness ---------------------------------------------------------------------------

def test_an_unparseable_target_is_a_400_and_no_error_log(
        serve: Callable[..., ExporterServer], caplog: pytest.LogCaptureFixture) -> None:
    """10: `GET http://[x/` is answered 400 with at most a debug line (before: a reset connection
    and one ERROR per request)."""
    srv = serve()
    for _ in range(50):
        assert exchange(srv.port, b"GET http://[x/ HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
            b"HTTP/1.1 400 ")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("lengths", [("27", "0"), ("0", "0")])
def test_more_than_one_content_length_is_a_400(serve: Callable[..., ExporterServer],
                                               lengths: tuple[str, str]) -> None:
    """11: two Content-Length headers, conflicting or not, make the framing ambiguous (RFC 9112
    6.3): 400, and nothing after them is read as a request."""
    srv = serve()
    answer = exchange(srv.port, f"GET /healthz HTTP/1.1\r\nContent-Length: {lengths[0]}\r\n"
                                f"Content-Length: {lengths[1]}\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n"
                      .encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.count(b"HTTP/1.1") == 1


def test_http_1_0_keep_alive_answers_say_keep_alive(serve: Callable[..., ExporterServer]) -> None:
    """12: an HTTP/1.0 client that asks for keep-alive gets `Connection: keep-alive`, without which
    it must assume the connection closes."""
    srv = serve()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"\r\nConnection: keep-alive\r\n" in sock.recv(1000)


def test_the_basic_scheme_is_case_insensitive() -> None:
    """12: RFC 7617: `basic` and `BASIC` are the Basic scheme too."""
    auth = BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(4))})
    encoded = basic("u", "p").split(" ", 1)[1]
    assert auth.check(f"basic {encoded}")
    assert auth.check(f"BASIC {encoded}")


def test_a_tls_client_on_the_plain_port_is_answered_at_once(serve: Callable[..., ExporterServer]) -> None:
    """12: a TLS ClientHello on the plain port gets a 400 at once (before: held 30 s)."""
    srv = serve()
    context = ssl.create_default_context()
    started = time.monotonic()
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        context.wrap_socket(raw, server_hostname="localhost")
    assert time.monotonic() - started < 1


def test_plain_http_on_the_tls_port_gets_a_400_saying_so(
        serve: Callable[..., ExporterServer], certs: CertFiles, tmp_path: Path) -> None:
    """12: plain HTTP sent to the TLS port is answered as Go's servers answer it (before: closed)."""
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {certs.cert_file}\n"
                    f"  key_file: {certs.key_file}\n")
    srv = serve(web=load_web_config(path))
    answer = exchange(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert answer.endswith(b"Client sent an HTTP request to an HTTPS server.\n")


def cache_config(sim: Simulator, tmp_path: Path, cache: object, mode: int) -> Path:
    path = write_config(sim, tmp_path, seed=False)
    cache_file = tmp_path / "contoso.cache.json"
    cache_file.write_text(json.dumps(cache))
    cache_file.chmod(mode)
    return path


def test_a_token_cache_readable_by_others_is_refused_with_the_fix(
        sim: Simulator, tmp_path: Path) -> None:
    """12: a token cache at mode 0644 is refused by --config.check (and so at start), with the
    chmod that fixes it (before: no warning, and it stayed 0644)."""
    path = cache_config(sim, tmp_path, {}, 0o644)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    cache_file = tmp_path / "contoso.cache.json"
    assert caught.value.errors == [
        f"tenants[0].auth.token_cache_file: {cache_file} is readable by others (mode 0644); it holds "
        f"a refresh token: run chmod 600 {cache_file}"]


def test_a_token_cache_that_is_json_but_not_msal_is_a_config_error(
        sim: Simulator, tmp_path: Path) -> None:
    """12: a cache holding `[1,2,3]` fails --config.check (before: it passed, and every poll then
    failed with "unexpected AttributeError ... this is a bug")."""
    path = cache_config(sim, tmp_path, [1, 2, 3], 0o600)
    with pytest.raises(ConfigError, match="is JSON but not an MSAL token cache; move it away and run "
                                          "login again"):
        load_config(path)


# --- A hostile upstream, beyond the numbered findings ---------------------------------------------

@respx.mock
def test_a_body_over_max_response_bytes_is_refused_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A response body is read into memory, so past MAX_RESPONSE_BYTES the poll fails as
    invalid_response instead of reading on (the stream is cut, not held whole)."""
    monkeypatch.setattr("exporter.client.MAX_RESPONSE_BYTES", 1000)
    respx.get(API_URL).mock(return_value=httpx.Response(200, content=b'{"pad": "' + b"x" * 5000 + b'"}'))
    with httpx.Client() as http:
        pc = DapStatisticsClient("contoso", http, API_URL, StaticToken())
        with pytest.raises(PollError) as caught:
            pc.fetch()
    assert caught.value.reason == "invalid_response"
    assert "sent more than 1,000 bytes for delegatedAdminStatistics" in caught.value.message
    assert pc.requests_by_code == {"200": 1}


@respx.mock
def test_a_gzipped_body_is_read_decoded() -> None:
    """The streamed read still decodes Content-Encoding once: a gzipped answer parses."""
    body = gzip.compress(json.dumps({"totalDapCustomerCount": 7, "establishedDapCount": [],
                                     "inactiveDapCount": []}).encode())
    respx.get(API_URL).mock(return_value=httpx.Response(200, content=body, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/json"}))
    with httpx.Client() as http:
        assert DapStatisticsClient("contoso", http, API_URL, StaticToken()).fetch().total_customers == 7

