"""HTTP server over real sockets: pre-rendered bodies, gzip, keep-alive, probes, page, TLS, auth."""

from __future__ import annotations

import base64
import datetime as dt
import errno
import gzip
import http.client
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

import bcrypt
import pytest

from exporter.collectors.dap_statistics import DapStatistics
from exporter.collectors.gdap_relationships import GdapRelationship, GdapRelationships
from exporter.exposition import Publisher
from exporter.http.listen import ListenError, bind_listener, parse_listen_address, systemd_sockets
from exporter.http.routes import landing_page
from exporter.http.server import ExporterServer
from exporter.logs import Redactor
from exporter.model import Snapshot, SourceView
from exporter.selfmetrics import ProcessMetrics
from exporter.simulator.certs import CertFiles, generate_certs
from exporter.webconfig import BasicAuth, WebConfig
from tests.conftest import ipv6_loopback

PASSWORD_HASH = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4))


def snapshot(attempted: bool = True) -> Snapshot:
    return Snapshot((SourceView("contoso", "dap_statistics", data=DapStatistics(total_customers=12),
                                    attempted=attempted, last_poll_success=attempted,
                                    last_success_time=time.time() if attempted else None),))


@pytest.fixture
def publisher() -> Publisher:
    pub = Publisher((30, 60, 90), poll_interval=900)
    pub.publish(snapshot())
    return pub


def start(publisher: Publisher, web: WebConfig | None = None) -> ExporterServer:
    server = ExporterServer("127.0.0.1:0", publisher, web=web)
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
    publisher.publish(Snapshot((SourceView("fabrikam", "dap_statistics", attempted=True),)))
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
    failing = SourceView("fabrikam", "dap_statistics", attempted=True, last_error_reason="auth",
                             last_error_message="<script>alert(1)</script> super-secret-value")
    page = landing_page(Snapshot((failing,)), now=time.time(), thresholds=(90,), redact=redactor).decode()
    assert "fabrikam" in page
    assert "failing: auth" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "super-secret-value" not in page
    assert 'href="/metrics"' in page


def test_landing_page_says_when_graph_shows_no_gdap_relationship() -> None:
    """An empty GDAP list gets a note naming the Admin Agents group, as Graph answers a user outside
    it with an empty list (microsoft-graph-docs-contrib issue 8921); a non-empty one does not."""
    def page(relationships: tuple[GdapRelationship, ...]) -> str:
        view = SourceView(name="contoso", collector="gdap_relationships", attempted=True,
                              last_poll_success=True, data=GdapRelationships(relationships, fetched_at=0))
        return landing_page(Snapshot((view,)), now=time.time(), thresholds=(90,)).decode()

    assert "no GDAP relationships visible" in page(())
    assert "Admin Agents" in page(())
    one = GdapRelationship("r", "r", "c", "C", "active", None, auto_extend=False, global_admin=False)
    assert "Admin Agents" not in page((one,))


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
    (":9867", ("", 9867)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9867", ("::1", 9867)),
    ("[::]:9867", ("::", 9867)), ("localhost:9867", ("localhost", 9867)),
])
def test_parse_listen_address(address: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, :PORT (every address) and [v6]:PORT are understood."""
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9867", "localhost", "host:http", "host:70000", "127.0.0.1:99999", "",
                                     "[::1:9867", "::1:9867", "[127.0.0.1]:9867"])
def test_parse_listen_address_rejects(address: str) -> None:
    """An address without a port from 0 to 65535, or with an unbracketed or half-bracketed IPv6
    host, is refused saying what is expected."""
    with pytest.raises(ValueError, match=r"expected HOST:PORT with a port from 0 to 65535"):
        parse_listen_address(address)


# --- The event-loop server: framing, bad input, flow control, timeouts -------------------------

def raw_exchange(srv: ExporterServer, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class _Reader:
    """One buffered reader for several responses on a socket (HTTPResponse would read ahead
    into a buffer of its own and close it)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def makefile(self, mode: str) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        pass


def read_responses(sock: socket.socket, count: int) -> list[tuple[http.client.HTTPResponse, bytes]]:
    reader = _Reader(sock)
    responses = []
    for _ in range(count):
        response = http.client.HTTPResponse(reader)  # type: ignore[arg-type]
        response.begin()
        responses.append((response, response.read()))
    return responses


def test_pipelined_requests_are_answered_in_order(server: ExporterServer) -> None:
    """Three requests sent in one write get three answers, in the order asked."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [r.status for r, _ in read_responses(sock, 3)] == [200, 404, 200]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
], ids=["request-line", "version", "header", "body", "chunked", "too-large"])
def test_malformed_requests_get_an_error_and_the_connection_closes(
        server: ExporterServer, request_bytes: bytes, status: int) -> None:
    """Bad framing is answered with its status, Connection: close, and the socket is closed."""
    answer = raw_exchange(server, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nConnection: close\r\n" in answer


def test_other_methods_get_405_with_allow(server: ExporterServer) -> None:
    """POST is answered 405 with `Allow: GET, HEAD`, and the connection stays usable."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        (first, _), (second, _) = read_responses(sock, 2)
    assert (first.status, first.getheader("Allow"), second.status) == (405, "GET, HEAD", 200)


def test_http_1_0_without_keep_alive_is_closed_after_the_answer(server: ExporterServer) -> None:
    """An HTTP/1.0 request gets one answer with Connection: close, then the server hangs up."""
    answer = raw_exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nOK\n")
    assert b"\r\nConnection: close\r\n" in answer


def test_absolute_form_and_query_string_still_find_the_path(server: ExporterServer,
                                                            publisher: Publisher) -> None:
    """`GET http://host/metrics?x=1` serves /metrics, as proxies and some clients send it."""
    answer = raw_exchange(server, b"GET http://example/metrics?x=1 HTTP/1.1\r\nHost: example\r\n"
                                  b"Connection: close\r\n\r\n")
    assert answer.endswith(publisher.current.body)


def big_publisher(tenants: int) -> Publisher:
    """A publisher whose body is about 0.4 MB per tenant, in many segments."""
    publisher = Publisher((90,), poll_interval=60)
    publisher.publish(Snapshot(tuple(
        SourceView(f"t{i:02d}", "dap_statistics", attempted=True, last_poll_success=True,
                       data=DapStatistics(total_customers=1, established={
                           dt.date(2000, 1, 1) + dt.timedelta(days=d): d for d in range(5000)}))
        for i in range(tenants))))
    return publisher


def test_large_body_is_streamed_not_buffered_for_a_slow_reader() -> None:
    """A client that pipelines 40 scrapes of a 6 MB body and reads nothing holds at most a few MB
    in the server's buffers; when it reads, every byte of all 40 answers arrives intact."""
    publisher = big_publisher(15)
    body = publisher.current.body
    assert len(body) > 5_000_000
    assert len(publisher.current.segments) > 1
    srv = start(publisher)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
            time.sleep(0.5)
            buffered = [c._transport.get_write_buffer_size() for c in srv.connections
                        if c._transport is not None]
            assert buffered
            assert max(buffered) <= 2 * 1024 * 1024
            answers = read_responses(sock, 40)
        assert all(response.status == 200 and received == body for response, received in answers)
    finally:
        srv.shutdown()


def test_a_bcrypt_check_does_not_hold_up_other_connections(publisher: Publisher) -> None:
    """While one client's wrong password is checked with bcrypt (slow), a client whose credentials
    were verified before gets its scrape first."""
    slow_hash = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=14))  # about a second
    srv = start(publisher, WebConfig(basic_auth=BasicAuth({"prometheus": slow_hash})))
    good = "Basic " + base64.b64encode(b"prometheus:scrape-pass").decode()
    bad = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
    try:
        assert get(srv, "/healthz", {"Authorization": good})[0] == 200
        assert srv.web.basic_auth.check(good)  # verified once, as an earlier scrape would have
        finished: list[str] = []
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        slow.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {bad}\r\n\r\n".encode())
        time.sleep(0.05)
        assert get(srv, "/metrics", {"Authorization": good})[0] == 200
        finished.append("verified")
        assert read_responses(slow, 1)[0][0].status == 401
        finished.append("bcrypt")
        slow.close()
        assert finished == ["verified", "bcrypt"]
    finally:
        srv.shutdown()


def test_idle_and_half_sent_connections_are_closed(publisher: Publisher,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection idle past the idle timeout, or stuck mid-request-head past the head timeout,
    is closed by the server."""
    monkeypatch.setattr("exporter.http.protocol.IDLE_TIMEOUT", 0.3)
    monkeypatch.setattr("exporter.http.protocol.REQUEST_HEAD_TIMEOUT", 0.3)
    srv = start(publisher)
    try:
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        half = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert idle.recv(1) == b""  # closed by the server within the sweep (about a second)
        assert half.recv(1) == b""
        idle.close()
        half.close()
    finally:
        srv.shutdown()


def test_clients_resetting_mid_body_are_routine(caplog: pytest.LogCaptureFixture) -> None:
    """Scrapers that reset their connections halfway through a large body cause no error log,
    and the server goes on serving."""
    publisher = big_publisher(40)
    srv = start(publisher)
    try:
        for _ in range(3):
            socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(10)]
            for sock in socks:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            for sock in socks:
                received = 0
                while received < 3_000_000:
                    received += len(sock.recv(1 << 20))
                # Close with a reset, as a scraper that gives up or is killed does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        time.sleep(0.3)
        assert get(srv, "/healthz")[0] == 200
    finally:
        srv.shutdown()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_accepted_connections_have_tcp_nodelay(server: ExporterServer) -> None:
    """Connections the server accepts have Nagle's algorithm off, so keep-alive answers do not
    wait ~40 ms for a delayed ACK."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)[0][0].status == 200
        (connection,) = server.connections
        assert connection._transport is not None
        accepted = connection._transport.get_extra_info("socket")
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


# --- Listeners as exporter-toolkit makes them: dual-stack, repeated, systemd's ---------------------

def _get_at(host: str, port: int, path: str = "/metrics") -> int:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_empty_host_listens_on_ipv4_and_ipv6_as_go_does(publisher: Publisher) -> None:
    """`:PORT` is one dual-stack socket: the server answers on 127.0.0.1 and on ::1 alike."""
    probe = bind_listener(":0")
    port = probe.getsockname()[1]
    probe.close()
    server = ExporterServer(f":{port}", publisher)
    server.start()
    try:
        assert server.addresses == [("::", port)]
        assert (_get_at("127.0.0.1", port), _get_at("::1", port)) == (200, 200)
    finally:
        server.shutdown()


def test_explicit_ipv4_wildcard_stays_ipv4_only() -> None:
    """`0.0.0.0:PORT` binds IPv4 only, so IPv6 on the same port stays free for something else."""
    sock = bind_listener("0.0.0.0:0")
    try:
        assert sock.family == socket.AF_INET
    finally:
        sock.close()


def test_empty_host_falls_back_to_ipv4_without_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel has no IPv6 (no AF_INET6 sockets), `:PORT` listens on every IPv4 address."""
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", no_ipv6)
    sock = bind_listener(":0")
    try:
        assert (sock.family, sock.getsockname()[0]) == (socket.AF_INET, "0.0.0.0")  # noqa: S104
    finally:
        sock.close()


def test_a_datagram_socket_from_systemd_is_refused_and_closed() -> None:
    """A ListenDatagram= socket is not one to serve HTTP on: one clear error, the descriptor closed."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = udp.detach()
    with pytest.raises(ListenError, match=rf"descriptor {fd} is not a stream socket; use ListenStream="):
        systemd_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}, first_fd=fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_repeated_listen_addresses_all_serve(publisher: Publisher) -> None:
    """Each --web.listen-address gets its own listener, all serving the same body."""
    server = ExporterServer(["127.0.0.1:0", "127.0.0.2:0"], publisher)
    server.start()
    try:
        [(first, port1), (second, port2)] = server.addresses
        assert (first, second) == ("127.0.0.1", "127.0.0.2")
        assert (_get_at(first, port1), _get_at(second, port2)) == (200, 200)
    finally:
        server.shutdown()


def test_a_taken_address_among_several_is_named_and_nothing_stays_bound(publisher: Publisher) -> None:
    """If the second address is taken the error names it, and the first listener is closed again."""
    taken = bind_listener("127.0.0.1:0")
    free = bind_listener("127.0.0.1:0")
    free_port_number = free.getsockname()[1]
    free.close()
    try:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ListenError, match=rf"^--web\.listen-address: {address} is already in use"):
            ExporterServer([f"127.0.0.1:{free_port_number}", address], publisher)
        bind_listener(f"127.0.0.1:{free_port_number}").close()  # released again
    finally:
        taken.close()


def test_telemetry_path_moves_the_metrics(publisher: Publisher) -> None:
    """--web.telemetry-path serves the body there; /metrics is then a 404 that names the path."""
    server = ExporterServer("127.0.0.1:0", publisher, telemetry_path="/probe/metrics")
    server.start()
    try:
        status, _, body = get(server, "/probe/metrics")
        assert (status, body) == (200, publisher.current.body)
        status, _, body = get(server, "/metrics")
        assert (status, body) == (404, b"Not found; try /probe/metrics\n")
        assert b'href="/probe/metrics"' in get(server, "/")[2]
    finally:
        server.shutdown()


def test_systemd_socket_serves_on_the_passed_descriptor(publisher: Publisher) -> None:
    """With LISTEN_PID and LISTEN_FDS for this process, the server listens on the descriptors systemd
    passed, and the variables are removed so that child processes do not take the sockets."""
    listener = bind_listener("127.0.0.1:0")
    port = listener.getsockname()[1]
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "partnercenter"}
    sockets = systemd_sockets(env, first_fd=listener.detach())
    assert env == {}
    server = ExporterServer([], publisher, sockets=sockets)
    server.start()
    try:
        assert server.addresses == [("127.0.0.1", port)]
        assert _get_at("127.0.0.1", port) == 200
    finally:
        server.shutdown()


@pytest.mark.parametrize(("env", "message"), [
    ({}, "systemd passed no socket"),
    ({"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "are not for this process"),
])
def test_systemd_socket_without_sockets_is_one_clear_error(env: dict[str, str], message: str) -> None:
    """Without systemd's variables for this process the flag fails with what to do."""
    with pytest.raises(ListenError, match=rf"^--web\.systemd-socket: .*{message}.*\.socket unit"):
        systemd_sockets(env)


# --- Self-metrics ------------------------------------------------------------------------------

def test_process_metrics_follow_the_body_in_text_and_gzip(publisher: Publisher) -> None:
    """With process metrics, /metrics is the pre-rendered body plus process_* and python_info, in
    text and in one gzip stream alike."""
    server = ExporterServer("127.0.0.1:0", publisher, process_metrics=ProcessMetrics())
    server.start()
    try:
        _, _, plain = get(server, "/metrics")
        _, headers, zipped = get(server, "/metrics", {"Accept-Encoding": "gzip"})
    finally:
        server.shutdown()
    assert headers["content-encoding"] == "gzip"
    body = publisher.current.body
    for text in (plain, gzip.decompress(zipped)):
        assert text.startswith(body)
        rest = text[len(body):].decode()
        assert "\nprocess_resident_memory_bytes " in rest
        assert "\nprocess_start_time_seconds " in rest
        assert 'python_info{implementation="CPython"' in rest


def test_process_metrics_are_read_at_most_once_a_second() -> None:
    """Within the refresh interval the same text is served; after it, a fresh read."""
    now = [100.0]
    metrics = ProcessMetrics(monotonic=lambda: now[0])
    first = metrics.text()
    now[0] += 0.9
    assert metrics.text() is first
    now[0] += 0.2
    assert metrics.text() is not first


def test_without_process_metrics_the_body_is_exactly_the_rendered_one(server: ExporterServer,
                                                                      publisher: Publisher) -> None:
    """--web.disable-exporter-metrics: no process_* or python_* series, only the rendered bytes."""
    _, _, plain = get(server, "/metrics")
    _, _, zipped = get(server, "/metrics", {"Accept-Encoding": "gzip"})
    assert plain == gzip.decompress(zipped) == publisher.current.body
    assert b"process_" not in plain
