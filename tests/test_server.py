"""HTTP server over real sockets: pre-rendered bodies, gzip, keep-alive, probes, page, TLS, auth."""

from __future__ import annotations

import base64
import gzip
import http.client
import socket
import ssl
import time
from collections.abc import Iterator

import bcrypt
import pytest

from exporter.collector import Publisher
from exporter.logs import Redactor
from exporter.model import DapStatistics, Snapshot, TenantSnapshot
from exporter.server import ExporterServer, landing_page, parse_listen_address
from exporter.simulator.certs import CertFiles, generate_certs
from exporter.webconfig import BasicAuth, WebConfig

PASSWORD_HASH = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4))


def snapshot(attempted: bool = True) -> Snapshot:
    return Snapshot((TenantSnapshot(name="contoso", stats=DapStatistics(total_customers=12),
                                    attempted=attempted, last_poll_success=attempted,
                                    last_success_time=time.time() if attempted else None),))


@pytest.fixture
def publisher() -> Publisher:
    pub = Publisher((30, 60, 90), poll_interval=900)
    pub.publish(snapshot())
    return pub


def start(publisher: Publisher, web: WebConfig | None = None) -> ExporterServer:
    server = ExporterServer("127.0.0.1:0", publisher, thresholds=(30, 60, 90), web=web)
    server.start()
    return server


@pytest.fixture
def server(publisher: Publisher) -> Iterator[ExporterServer]:
    srv = start(publisher)
    yield srv
    srv.shutdown()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return generate_certs(tmp_path_factory.mktemp("certs"))


def get(server: ExporterServer, path: str, headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", server.port, context=context, timeout=5)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_metrics_serves_the_prerendered_body(server: ExporterServer, publisher: Publisher) -> None:
    """/metrics returns exactly the publisher's bytes with the text-format content type."""
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert body == publisher.current.body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_metrics_serves_cached_gzip_when_asked(server: ExporterServer, publisher: Publisher) -> None:
    """With Accept-Encoding: gzip, the cached gzip body is sent as it is."""
    status, headers, body = get(server, "/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert body == publisher.current.gzip_body
    assert gzip.decompress(body) == publisher.current.body


def test_gzip_refused_with_q_zero(server: ExporterServer) -> None:
    """gzip;q=0 means no gzip."""
    _, headers, _ = get(server, "/metrics", {"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in headers


def test_keep_alive_serves_many_requests_on_one_connection(server: ExporterServer) -> None:
    """HTTP/1.1 keep-alive: several scrapes over one TCP connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    conn.close()


def test_head_has_length_but_no_body(server: ExporterServer, publisher: Publisher) -> None:
    """HEAD /metrics gives the headers of GET without a body."""
    status, headers, body = get(server, "/metrics", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) == len(publisher.current.body)


def test_new_snapshot_is_served_on_the_next_scrape(server: ExporterServer, publisher: Publisher) -> None:
    """A publish swaps the body; the next scrape serves the new one."""
    publisher.publish(Snapshot((TenantSnapshot(name="fabrikam", attempted=True),)))
    _, _, body = get(server, "/metrics")
    assert b'tenant="fabrikam"' in body
    assert b'tenant="contoso"' not in body


def test_healthz_and_unknown_path(server: ExporterServer) -> None:
    """/healthz answers 200; an unknown path answers 404."""
    assert get(server, "/healthz")[0] == 200
    assert get(server, "/nope")[0] == 404


def test_readyz_waits_for_every_first_attempt(publisher: Publisher) -> None:
    """/readyz is 503 until every tenant has finished its first poll attempt, then 200."""
    publisher.publish(snapshot(attempted=False))
    srv = start(publisher)
    try:
        assert get(srv, "/readyz")[0] == 503
        publisher.publish(snapshot(attempted=True))
        assert get(srv, "/readyz")[0] == 200
    finally:
        srv.shutdown()


def test_readyz_is_not_ready_before_any_snapshot() -> None:
    """Before the first snapshot with tenants is published, /readyz is 503, not vacuously 200."""
    srv = start(Publisher((90,), poll_interval=900))
    try:
        assert get(srv, "/readyz")[0] == 503
    finally:
        srv.shutdown()


def test_landing_page_shows_state_escaped_and_redacted() -> None:
    """The landing page lists tenants, escapes HTML and redacts secrets in error messages."""
    redactor = Redactor()
    redactor.add_secret("super-secret-value")
    failing = TenantSnapshot(name="fabrikam", attempted=True, last_error_reason="auth",
                             last_error_message="<script>alert(1)</script> super-secret-value")
    page = landing_page(Snapshot((failing,)), now=time.time(), thresholds=(90,), redact=redactor).decode()
    assert "fabrikam" in page
    assert "failing: auth" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "super-secret-value" not in page
    assert 'href="/metrics"' in page


def test_basic_auth_protects_metrics_but_not_probes(publisher: Publisher) -> None:
    """With basic_auth_users, /metrics and / need credentials; /healthz and /readyz do not."""
    srv = start(publisher, WebConfig(basic_auth=BasicAuth({"prometheus": PASSWORD_HASH})))
    good = "Basic " + base64.b64encode(b"prometheus:scrape-pass").decode()
    bad = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
    try:
        status, headers, _ = get(srv, "/metrics")
        assert status == 401
        assert headers["www-authenticate"].startswith("Basic")
        assert get(srv, "/metrics", {"Authorization": bad})[0] == 401
        assert get(srv, "/", {"Authorization": bad})[0] == 401
        assert get(srv, "/metrics", {"Authorization": good})[0] == 200
        assert get(srv, "/healthz")[0] == 200
        assert get(srv, "/readyz")[0] == 200
    finally:
        srv.shutdown()


def test_configured_headers_are_sent(publisher: Publisher) -> None:
    """http_server_config.headers are added to every response."""
    srv = start(publisher, WebConfig(headers={"X-Frame-Options": "DENY"}))
    try:
        assert get(srv, "/metrics")[1]["x-frame-options"] == "DENY"
    finally:
        srv.shutdown()


def tls_web(certs: CertFiles) -> WebConfig:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.cert_file), str(certs.key_file))
    return WebConfig(ssl_context=context)


def test_tls_scrape(publisher: Publisher, certs: CertFiles) -> None:
    """With a TLS context, /metrics is served over HTTPS and verifies against the CA."""
    srv = start(publisher, tls_web(certs))
    try:
        status, _, body = get(srv, "/metrics", context=ssl.create_default_context(cafile=str(certs.ca_file)))
        assert (status, body) == (200, publisher.current.body)
        assert srv.url.startswith("https://")
    finally:
        srv.shutdown()


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_idle_connections_do_not_block_scrapes(publisher: Publisher, certs: CertFiles,
                                               use_tls: bool) -> None:
    """20 idle TCP connections (no TLS handshake sent) do not stall a scrape."""
    srv = start(publisher, tls_web(certs) if use_tls else None)
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    try:
        context = ssl.create_default_context(cafile=str(certs.ca_file)) if use_tls else None
        started = time.monotonic()
        status, _, _ = get(srv, "/metrics", context=context)
        assert status == 200
        assert time.monotonic() - started < 2.0
    finally:
        for sock in idle:
            sock.close()
        srv.shutdown()


@pytest.mark.parametrize(("address", "expected"), [
    (":9867", ("0.0.0.0", 9867)),  # noqa: S104 - asserting the documented default ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9867", ("::1", 9867)),
])
def test_parse_listen_address(address: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, :PORT and [v6]:PORT are understood."""
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9867", "localhost", "host:http", "host:70000"])
def test_parse_listen_address_rejects(address: str) -> None:
    """An address without a numeric port is refused with the flag's name."""
    with pytest.raises(ValueError, match=r"--web\.listen-address"):
        parse_listen_address(address)
