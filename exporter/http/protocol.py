"""HTTP/1.1 on asyncio with httptools: request heads, keep-alive and pipelining, backpressure, TLS.

A connection parses each request head and hands the request to its host's `handle` (the routes),
which answers through `send`. Nothing here knows a path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import functools
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import httptools

from exporter.webconfig import WebConfig

log = logging.getLogger("exporter.server")

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0
# A request head must arrive in full within this long of its first byte (slow-loris guard).
REQUEST_HEAD_TIMEOUT = 30.0
# Output that the client has not taken for this long is dropped with the connection (abort): a
# client that pipelines and never reads must not hold our memory until the idle timeout.
SEND_TIMEOUT = 30.0
MAX_REQUEST_HEAD = 16 * 1024
# Per connection, at most this much unparsed input is held: reading stops beyond it, so a client
# that pipelines faster than it reads its answers is throttled by TCP, not buffered by us.
MAX_PENDING_INPUT = MAX_REQUEST_HEAD + 4
# Each read takes at most this much, into one buffer shared by all connections (the event loop
# reads one socket at a time), so a read never allocates more than this.
READ_CHUNK = 16 * 1024
# Unsent output per connection above which no further request is answered until the client
# reads: with the kernel's socket buffer full, this bounds what a non-reading client costs us.
_WRITE_HIGH = 64 * 1024
# Smaller bodies are copied behind the header and sent in one write; larger ones are not copied.
_JOIN_BELOW = 64 * 1024
# Large bodies go out this much at a time, as the client reads: a slow scraper of a 20 MB body
# holds about this much of our memory, not a copy of the whole body. Each write is a syscall that
# lets poll threads take the GIL, so a 5,000-series body (about 470 KiB) still goes in one.
_WRITE_CHUNK = 512 * 1024
# A request line starts with a method: a short run of letters, then a space.
_MAX_METHOD = 20
# What a TLS client gets when it speaks TLS to the plain port, and the reverse (as Go answers it).
_PLAIN_ON_TLS = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
TEXT = "text/plain; charset=utf-8"


class Host(Protocol):
    """What a connection needs from the server that accepted it."""

    read_buffer: memoryview
    connections: set[Connection]

    @property
    def web(self) -> WebConfig: ...

    def admit(self, connection: Connection) -> bool: ...

    def handle(self, request: Request, reply: Connection, web: WebConfig) -> None:
        """Answer one parsed request through `reply`, with the web config in force for it."""

    def report(self, message: str, *, exc_info: bool = False, **fields: str) -> None: ...

    def response_head(self, web: WebConfig, status: int, content_type: str, length: int,
                      extra: tuple[tuple[str, str], ...], connection: str) -> bytes: ...


class HttpDate:
    """The Date header, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._value, self._second = email.utils.formatdate(now, usegmt=True), now
        return self._value


# The answer's Connection header: "close" ends the connection once the answer is out; "" (HTTP/1.1)
# and "keep-alive" (HTTP/1.0, which keeps a connection only if the answer says so, RFC 9112 9.3)
# keep it open.
CLOSE = "close"


class Request:
    """One parsed request head: what the routes answer."""

    __slots__ = ("connection", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], connection: str) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.connection = connection  # the answer's Connection header (see CLOSE)


class BadRequest(Exception):
    """A request head that is answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _HeadSink:
    """httptools' callbacks for one request head."""

    __slots__ = ("complete", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


@functools.lru_cache(maxsize=256)  # a scraper sends the same request head every time
def parse_request_head(head: bytes) -> Request:
    """Request line and headers (without the blank line); raises BadRequest for bad input.

    httptools (llhttp, Node.js's parser, with its lenient flags off) does the parsing: the request line,
    header tokens and values, obsolete line folding, duplicate Content-Length. What is left here is
    policy: no bodies, HTTP/1.x only, which answers keep the connection. The result is shared
    between calls with the same head, so it must not be changed.
    """
    sink = _HeadSink()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(head + b"\r\n\r\n")
    except httptools.HttpParserUpgrade:
        raise BadRequest(400, "protocol upgrades are not served") from None
    except httptools.HttpParserError as err:
        raise BadRequest(400, f"malformed request: {str(err)[:80]}") from None
    if not sink.complete:
        raise BadRequest(400, "malformed request head")
    version = parser.get_http_version()
    if version not in ("1.1", "1.0"):
        raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are served")
    headers = {name.decode("latin-1").lower(): value.decode("latin-1").rstrip(" \t")
               for name, value in sink.headers}
    length = headers.get("content-length", "0")
    if "transfer-encoding" in headers or not length.isdigit() or int(length) != 0:
        # Nothing here takes a body; refusing one keeps request framing unambiguous.
        raise BadRequest(400, "request bodies are not accepted")
    connection = headers.get("connection", "").lower()
    if version == "1.0":
        answer = "keep-alive" if "keep-alive" in connection else CLOSE
    else:
        answer = CLOSE if "close" in connection else ""
    try:
        path = httptools.parse_url(sink.url).path or b"/"
    except httptools.HttpParserInvalidURLError:  # such as "http://[x/": an unbalanced IPv6 bracket
        raise BadRequest(400, "malformed request target") from None
    return Request(parser.get_method().decode("latin-1"), path.decode("latin-1"), headers, answer)


def _bad_start(data: bytearray) -> bool:
    """True if a request line cannot begin like this (a method is letters, then a space): a
    TLS ClientHello or binary garbage is answered at once rather than held to the head timeout."""
    space = data.find(b" ", 0, _MAX_METHOD + 1)
    if space < 0:
        return len(data) > _MAX_METHOD or not bytes(data).isalpha()
    return space == 0 or not bytes(data[:space]).isalpha()


class Connection(asyncio.BufferedProtocol):
    """One client connection: parses pipelined requests in order and answers each."""

    def __init__(self, server: Host) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._raw: socket.socket | None = None  # during a TLS handshake: to answer plain HTTP
        self._input = bytearray()
        self._busy = False  # TLS handshake or a bcrypt check under way: hold further requests
        self._write_paused = False
        # The rest of a large body, written as the client drains it rather than all at once.
        self._outgoing: collections.deque[memoryview] = collections.deque()
        self._close_when_sent = False
        self._closing = False
        self._web: WebConfig = WebConfig()
        self.client = "?"
        self.deadline = time.monotonic() + IDLE_TIMEOUT
        self.last_active = time.monotonic()

    # --- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        # A Unix socket's peer is a path (usually empty), a TCP one's (host, port, ...).
        self.client = (str(peer[0]) if isinstance(peer, tuple) and peer else
                       "unix" if isinstance(peer, (str, bytes)) else "?")
        if not self._server.admit(self):
            self._closing = True
            transport.abort()
            return
        context = self._server.web.ssl_context
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        if context is not None:
            self._busy = True
            self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            transport.pause_reading()
            try:
                self._raw = transport.get_extra_info("socket").dup()
            except OSError:
                self._raw = None  # out of file descriptors: plain HTTP just gets no 400 then
            self._handshake = asyncio.ensure_future(self._start_tls(transport, context))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._outgoing.clear()
        self._close_raw()
        self._server.connections.discard(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if not self._input:
            self.deadline = time.monotonic() + REQUEST_HEAD_TIMEOUT
        self.last_active = time.monotonic()
        self._input += self._server.read_buffer[:nbytes]
        self._process()

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once our answers are out

    def pause_writing(self) -> None:
        self._write_paused = True
        self.deadline = time.monotonic() + SEND_TIMEOUT

    def resume_writing(self) -> None:
        # asyncio calls this from inside its write-ready handler; a write that fails there makes
        # it close the transport twice (CPython 3.11). Writing on the next turn avoids that.
        self._write_paused = False
        # The client reads: it is neither stalled nor quiet.
        self.deadline = time.monotonic() + SEND_TIMEOUT
        self.last_active = time.monotonic()
        asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self._pump()
        self._process()

    @property
    def unsent(self) -> int:
        """Bytes answered but not yet taken by the client (beyond the kernel's socket buffer)."""
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return buffered + sum(len(part) for part in self._outgoing)

    @property
    def evictable(self) -> bool:
        """Not in the middle of a TLS handshake or a password check: safe to drop for a newcomer."""
        return not self._busy and not self._closing

    def close(self) -> None:
        """Close after what is already written has gone out, within SEND_TIMEOUT (see expire)."""
        if self._transport is not None and not self._closing:
            self._closing = True
            self.deadline = time.monotonic() + SEND_TIMEOUT
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping anything unsent."""
        self._closing = True
        self._outgoing.clear()
        self._server.connections.discard(self)  # it no longer counts, even before asyncio says so
        if self._transport is not None:
            self._transport.abort()

    def expire(self) -> None:
        """The deadline passed: close if nothing is left to send, else drop the unsent output."""
        if self._closing or self.unsent:
            log.debug("dropping a connection that stopped reading its answers",
                      extra={"client": self.client, "unsent_bytes": self.unsent})
            self.abort()
        else:
            log.debug("closing an idle connection", extra={"client": self.client})
            self.close()

    # --- internals -------------------------------------------------------------------------
    def _close_raw(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(transport, self, context, server_side=True,
                                       ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (TimeoutError, ssl.SSLError, OSError) as err:
            log.debug("TLS handshake failed", extra={"client": self.client, "error": str(err)})
            if isinstance(err, ssl.SSLError) and err.reason == "HTTP_REQUEST" and self._raw is not None:
                # Plain HTTP on the TLS port: say so, as Go's servers do, rather than just hang up.
                with contextlib.suppress(OSError):
                    self._raw.send(_PLAIN_ON_TLS)
            self._close_raw()
            transport.abort()
            return
        self._close_raw()
        if tls is None:  # the connection went away during the handshake
            return
        # Application data that came with the handshake's last flight is already in _input.
        tls.set_write_buffer_limits(high=_WRITE_HIGH)
        self._transport = tls
        self._busy = False
        self.deadline = time.monotonic() + IDLE_TIMEOUT
        self._process()

    def _process(self) -> None:
        try:
            self._process_requests()
        except Exception:
            # A bug must cost this one connection at most, with a 500, never the server.
            self._server.report("unexpected error while answering a request", exc_info=True,
                                client=self.client)
            self.send(500, b"Internal Server Error\n", TEXT, head=False, connection=CLOSE)

    def _process_requests(self) -> None:
        transport = self._transport
        while not (self._busy or self._write_paused or self._outgoing or self._closing):
            end = self._input.find(b"\r\n\r\n", 0, MAX_REQUEST_HEAD + 4)
            if end < 0:
                if len(self._input) >= MAX_REQUEST_HEAD + 4:
                    self._refuse(BadRequest(431, "request head too large"))
                elif self._input and _bad_start(self._input):
                    self._refuse(BadRequest(400, "not an HTTP request"))
                break
            head = bytes(self._input[:end])
            del self._input[:end + 4]
            try:
                request = parse_request_head(head)
            except BadRequest as err:
                self._refuse(err)
                break
            self._handle(request)
        if transport is None or self._closing:
            return
        reading = transport.is_reading()
        if len(self._input) >= MAX_PENDING_INPUT and reading:
            transport.pause_reading()
        elif len(self._input) < MAX_PENDING_INPUT and not reading and not self._busy:
            transport.resume_reading()
        if not self._input and not self._busy and not self._write_paused:
            self.deadline = time.monotonic() + IDLE_TIMEOUT

    def _refuse(self, err: BadRequest) -> None:
        log.debug("bad request", extra={"client": self.client, "error": str(err)})
        self._input.clear()
        self._web = self._server.web
        self.send(err.status, f"{err}\n".encode(), TEXT, head=False, connection=CLOSE)

    def _handle(self, request: Request) -> None:
        web = self._web = self._server.web
        self._server.handle(request, self, web)

    def hold_until(self, future: asyncio.Future[bool], then: Callable[[asyncio.Future[bool]], None]) -> None:
        """Answer nothing further on this connection until `future` is done (a password check),
        then call `then` with it, unless the connection closed meanwhile."""
        self._busy = True

        def done(finished: asyncio.Future[bool]) -> None:
            self._busy = False
            if self._closing:
                return
            then(finished)
            self._process()

        future.add_done_callback(done)

    def send(self, status: int, body: bytes | tuple[bytes, ...], content_type: str, *, head: bool,
              connection: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer one request: `connection` is the answer's Connection header (CLOSE ends it)."""
        transport = self._transport
        if transport is None or self._closing:
            return
        parts = (body,) if isinstance(body, bytes) else body
        length = sum(len(part) for part in parts)
        header = self._server.response_head(self._web, status, content_type, length, extra, connection)
        if head or not length:
            transport.write(header)
        elif length < _JOIN_BELOW:
            transport.write(header + b"".join(parts))  # one copy of a small body, one syscall
        else:
            transport.write(header)
            self._outgoing.extend(memoryview(part) for part in parts)
            self._pump()
        if connection == CLOSE:
            self._close_when_sent = True
            self._pump()

    def _pump(self) -> None:
        """Write body segments until the transport's buffer is full; resume_writing calls again."""
        transport = self._transport
        if transport is None or self._closing:
            return
        outgoing = self._outgoing
        while outgoing and not self._write_paused:
            segment = outgoing.popleft()
            if len(segment) > _WRITE_CHUNK:
                outgoing.appendleft(segment[_WRITE_CHUNK:])
                segment = segment[:_WRITE_CHUNK]
            transport.write(segment)
        if not outgoing and self._close_when_sent:
            self.close()
