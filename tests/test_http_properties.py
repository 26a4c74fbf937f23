"""Property tests of the HTTP server's request handling over a real socket: random and malformed
request bytes never crash it, never get more answers than requests, and a malformed head never
gets a 200."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.exposition import Publisher
from exporter.http.server import ExporterServer

HTTP_SETTINGS = settings(max_examples=150, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")
VALID = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"


@pytest.fixture
def server(start_server: Callable[..., ExporterServer]) -> ExporterServer:
    return start_server(Publisher((90,), poll_interval=60))


def exchange(server: ExporterServer, data: bytes) -> bytes:
    """Send the bytes, say we are done sending, and read every answer until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in STATUS_LINE.findall(answer)]


def assert_alive(server: ExporterServer) -> None:
    assert statuses(exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]


PIECES = st.sampled_from([
    VALID, b"\r\n", b"\r\n\r\n", b"GET ", b"HEAD / HTTP/1.0", b" HTTP/1.1", b"Host: x\r\n",
    b"Content-Length: 0\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"\n", b":", b" ", b"\t", b"\x00",
    b"\x16\x03\x01", b"/", b"?", b"%", b"\xff", b"Authorization: Basic !!\r\n"])
REQUEST_BYTES = st.one_of(st.binary(max_size=400), st.lists(PIECES, max_size=12).map(b"".join))


@HTTP_SETTINGS
@given(REQUEST_BYTES)
def test_random_request_bytes_never_get_more_answers_than_requests(server: ExporterServer,
                                                                   data: bytes) -> None:
    """However the bytes look: at most one answer per complete request head (plus one for a
    broken remainder), nothing after an error that closes, and the server keeps serving."""
    answer = exchange(server, data)
    codes = statuses(answer)
    assert len(codes) <= data.count(b"\r\n\r\n") + 1
    for code in codes[:-1]:
        assert code < 400  # an error answer closes the connection: it is always the last one
    assert_alive(server)


# RFC 9110 5.6.2: the characters of a header name.
TOKEN_CHARACTERS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Each makes the valid head malformed in one way RFC 9112 (or this server's no-body policy) refuses.
MUTATIONS: list[Callable[[bytes], bytes]] = [
    lambda head: head.replace(b"Host:", b"Host :"),  # whitespace before the colon
    lambda head: head.replace(b"Host:", b"Ho st:"),  # not a token
    lambda head: head.replace(b"Host: x", b"Host: x\x01y"),  # a control character in a value
    lambda head: head + b" folded\r\n",  # obsolete line folding
    lambda head: head + b"no colon here\r\n",
    lambda head: head.replace(b"HTTP/1.1", b"HTTP/1.x"),
    lambda head: head.replace(b"HTTP/1.1", b"HTTP/3.0"),
    # Not here: two spaces after the method. RFC 9112 3 lets a server parse the request line on
    # whitespace, and llhttp does.
    lambda head: head.replace(b"GET", b"get"),
    lambda head: head.replace(b"GET /metrics", b"GET /met\x00rics"),
    lambda head: head.replace(b"\r\n", b"\n", 1),  # a bare LF ends the request line
    lambda head: head + b"Content-Length: 0\r\nContent-Length: 0\r\n",
    lambda head: head + b"Content-Length: 7\r\n",  # a body, which nothing here takes
    lambda head: head + b"Transfer-Encoding: chunked\r\n",
    lambda head: head + b"Content-Length: -1\r\n",
    lambda head: head.replace(b"/metrics", b""),  # no target
]


@HTTP_SETTINGS
@given(st.sampled_from(range(len(MUTATIONS))), st.text(TOKEN_CHARACTERS, min_size=1, max_size=20))
def test_a_malformed_head_never_gets_a_200(server: ExporterServer, mutation: int, name: str) -> None:
    """One malformed request (with an extra well-formed header of any token-ish name): exactly one
    answer, never a success, and the server keeps serving."""
    head = MUTATIONS[mutation](VALID + f"X-{name}: 1\r\n".encode())
    codes = statuses(exchange(server, head + b"\r\n"))
    assert len(codes) == 1
    assert codes[0] >= 400
    assert_alive(server)


def test_the_unmutated_head_is_served() -> None:
    """The mutations start from a head the server answers with 200, so their 4xx is theirs."""
    from exporter.http.protocol import parse_request_head

    request = parse_request_head(VALID.rstrip(b"\r\n"))
    assert (request.method, request.path) == ("GET", "/metrics")
