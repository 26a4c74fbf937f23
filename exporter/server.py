"""HTTP server: /metrics (pre-rendered bytes), /healthz, /readyz, landing page, TLS, basic auth.

One asyncio event loop in its own thread serves every connection. A scrape is a header line or
ten and the body bytes the publisher rendered at poll time, so its Python work is a few
microseconds and no big object is built per request. TLS is negotiated per connection with
the web config in force at that moment; bcrypt runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import email.utils
import errno
import functools
import html
import logging
import os
import resource
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from exporter import __version__
from exporter.collectors import REGISTRY, Context
from exporter.exposition import CONTENT_TYPE, Publisher
from exporter.logs import REDACTOR, Throttled
from exporter.model import Snapshot, SourceView, ThresholdBuckets, utc_date
from exporter.selfmetrics import ProcessMetrics
from exporter.webconfig import BasicAuth, WebConfig, WebConfigProvider

log = logging.getLogger("exporter.server")

DEFAULT_PORT = 9867
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"
DEFAULT_TELEMETRY_PATH = "/metrics"
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
_READ_CHUNK = 16 * 1024
# Unsent output per connection above which no further request is answered until the client
# reads: with the kernel's socket buffer full, this bounds what a non-reading client costs us.
_WRITE_HIGH = 64 * 1024
# Smaller bodies are copied behind the header and sent in one write; larger ones are not copied.
_JOIN_BELOW = 64 * 1024
# Large bodies go out this much at a time, as the client reads: a slow scraper of a 20 MB body
# holds about this much of our memory, not a copy of the whole body. Each write is a syscall that
# lets poll threads take the GIL, so a 5,000-series body (about 470 KiB) still goes in one.
_WRITE_CHUNK = 512 * 1024
DEFAULT_MAX_CONNECTIONS = 512
# At most this many bcrypt checks run or wait; beyond it a request needing one gets 429 at once.
MAX_AUTH_QUEUE = 4
# Threads for bcrypt: half the cores, so wrong passwords cannot take all of them.
AUTH_WORKERS = max(1, (os.cpu_count() or 2) // 2)
# A request line starts with a method: a short run of letters, then a space.
_MAX_METHOD = 20
# What a TLS client gets when it speaks TLS to the plain port, and the reverse (as Go answers it).
_PLAIN_ON_TLS = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
# Probes must work without credentials, as with Go exporters' health endpoints.
_OPEN_PATHS = {"/healthz", "/readyz"}
_TEXT = "text/plain; charset=utf-8"

def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port`, `:port` or `[v6]:port` to (host, port); an empty host means every address."""
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and ":" in host
    # As Go's net.SplitHostPort: an IPv6 host needs its brackets, and nothing else has any.
    bad_host = (":" in host or "[" in host or "]" in host) and not bracketed
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or bad_host:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, such as {DEFAULT_LISTEN_ADDRESS}, "
                         f"127.0.0.1:{DEFAULT_PORT} or [::1]:{DEFAULT_PORT}, got {address[:60]!r}")
    return host[1:-1] if bracketed else host, int(port)


@dataclass(frozen=True)
class ServeOptions:
    """How to serve, from the --web.* flags other than the addresses (exporter-toolkit's names)."""

    telemetry_path: str = DEFAULT_TELEMETRY_PATH
    systemd_socket: bool = False  # listen on the sockets systemd passes instead of the addresses
    exporter_metrics: bool = True  # process_*, python_gc_* and python_info on the telemetry path


class ListenError(Exception):
    """A listener that cannot be opened; the message names the flag, the address and what to do."""


def _listen(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """A listening TCP socket; IPv6 wildcards take IPv4 too (IPV6_V6ONLY off, whatever the sysctl)."""
    # Made as a TCP socket by name: asyncio sets TCP_NODELAY only on those, and without it
    # keep-alive answers stall ~40 ms on delayed ACKs (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def bind_listener(address: str) -> socket.socket:
    """A listening socket for one --web.listen-address, as Go's net.Listen("tcp", ...) makes it.

    `:port` and `[::]:port` listen on every IPv4 and IPv6 address (one dual-stack socket), or on
    every IPv4 address where the host has no usable IPv6; `0.0.0.0:port` on IPv4 only.
    """
    host, port = parse_listen_address(address)
    try:
        if host not in ("", "::"):
            return _listen(socket.AF_INET6 if ":" in host else socket.AF_INET, host, port)
        try:
            return _listen(socket.AF_INET6, "::", port)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise
        return _listen(socket.AF_INET, "0.0.0.0", port)  # noqa: S104 - `:port` means every address
    except OSError as err:
        reason = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be used: {err.strerror}"
        raise ListenError(f"--web.listen-address: {address} {reason}; choose another address") from None


# systemd passes activated sockets from this descriptor on (sd_listen_fds(3)).
_SD_LISTEN_FDS_START = 3


def systemd_sockets(environ: MutableMapping[str, str] | None = None, *,
                    first_fd: int = _SD_LISTEN_FDS_START) -> list[socket.socket]:
    """The listening sockets systemd passed by socket activation (LISTEN_PID, LISTEN_FDS).

    The variables are removed, as sd_listen_fds(1) does, so child processes do not take them."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    listen_pid, count = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", "")
    env.pop("LISTEN_FDNAMES", None)
    if not listen_pid or not count:
        raise ListenError("--web.systemd-socket: systemd passed no socket (LISTEN_FDS is not set); start "
                          "the exporter from its .socket unit (deploy/systemd), or drop the flag")
    if listen_pid != str(os.getpid()) or not count.isdigit() or int(count) < 1:
        raise ListenError(f"--web.systemd-socket: LISTEN_PID={listen_pid} LISTEN_FDS={count} are not for "
                          "this process; start the exporter from its .socket unit, or drop the flag")
    sockets: list[socket.socket] = []
    try:
        for fd in range(first_fd, first_fd + int(count)):
            sockets.append(_passed_socket(fd))
    except ListenError:
        for sock in sockets:
            sock.close()  # the process ends; systemd keeps its own copies
        raise
    return sockets


_STREAM_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def _passed_socket(fd: int) -> socket.socket:
    """Descriptor `fd` as a listening stream socket (TCP or Unix), or one ListenError saying why not."""
    where = f"--web.systemd-socket: descriptor {fd}"
    try:
        kind = os.fstat(fd).st_mode
    except OSError:
        raise ListenError(f"{where} is not open, although LISTEN_FDS counts it; start the exporter "
                          "from its .socket unit") from None
    if not stat.S_ISSOCK(kind):
        raise ListenError(f"{where} is not a socket; use ListenStream= in the .socket unit")
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM or sock.family not in _STREAM_FAMILIES:
        sock.close()
        raise ListenError(f"{where} is not a stream socket; use ListenStream= in the .socket unit "
                          "(a TCP port or a Unix socket path)")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.close()
        raise ListenError(f"{where} is a connection, not a listening socket: the .socket unit has "
                          "Accept=yes; set Accept=no (the default), the exporter accepts connections itself")
    return sock


@functools.lru_cache(maxsize=64)  # scrapers send the same header every time
def accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def landing_page(snapshot: Snapshot, *, now: float, thresholds: tuple[int, ...],
                 redact: Callable[[str], str] = REDACTOR,
                 telemetry_path: str = DEFAULT_TELEMETRY_PATH) -> bytes:
    """The `/` page: links and each tenant's state; every dynamic value is escaped and redacted."""
    ctx = Context(utc_date(now), ThresholdBuckets(thresholds or (90,), utc_date(now)))
    rows = [_tenant_row(view, views, now=now, ctx=ctx, redact=redact)
            for _, views in snapshot.by_tenant(REGISTRY.order) for view in views]
    table = "".join(rows) or '<tr><td colspan="6">no tenants configured</td></tr>'
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Partner Center exporter</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}
.ok{{color:#137333}}.fail{{color:#b3261e}}.pending{{color:#8a6d00}}</style></head>
<body><h1>Partner Center exporter</h1>
<p>Prometheus exporter for Partner Center delegated admin (DAP) statistics and GDAP relationships,
version {__version__}. Values are cached from the last successful poll; scrapes never call Partner
Center or Microsoft Graph.</p>
<ul><li><a href="{html.escape(telemetry_path)}">{html.escape(telemetry_path)}</a></li>
<li><a href="/healthz">/healthz</a></li>
<li><a href="/readyz">/readyz</a></li></ul>
<h2>Tenants</h2>
<table><tr><th>tenant</th><th>collector</th><th>state</th><th>last success</th><th>figures</th>
<th>last error</th></tr>
{table}</table></body></html>
"""
    return page.encode("utf-8")


def _tenant_row(view: SourceView, views: tuple[SourceView, ...], *, now: float, ctx: Context,
                redact: Callable[[str], str]) -> str:
    """One collector's row; views are all of its tenant's, for the joins' figures."""
    if not view.attempted:
        state = '<span class="pending">first poll pending</span>'
    elif view.last_poll_success:
        state = '<span class="ok">ok</span>'
    elif view.api_retired:
        state = '<span class="pending">API retired (404/410): showing the last good data</span>'
    else:
        state = f'<span class="fail">failing: {html.escape(view.last_error_reason or "")}</span>'
    last = _age(now - view.last_success_time) if view.last_success_time is not None else "never"
    figures = REGISTRY.figures(view, views, ctx)
    error = html.escape(redact(view.last_error_message or ""))
    return (f"<tr><td>{html.escape(view.name)}</td><td>{view.collector}</td><td>{state}</td>"
            f"<td>{last}</td><td>{figures}</td><td>{error}</td></tr>\n")


class _HttpDate:
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
_CLOSE = "close"


class _Request:
    __slots__ = ("connection", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], connection: str) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.connection = connection  # the answer's Connection header (see _CLOSE)


class _BadRequest(Exception):
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
def parse_request_head(head: bytes) -> _Request:
    """Request line and headers (without the blank line); raises _BadRequest for bad input.

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
        raise _BadRequest(400, "protocol upgrades are not served") from None
    except httptools.HttpParserError as err:
        raise _BadRequest(400, f"malformed request: {str(err)[:80]}") from None
    if not sink.complete:
        raise _BadRequest(400, "malformed request head")
    version = parser.get_http_version()
    if version not in ("1.1", "1.0"):
        raise _BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are served")
    headers = {name.decode("latin-1").lower(): value.decode("latin-1").rstrip(" \t")
               for name, value in sink.headers}
    length = headers.get("content-length", "0")
    if "transfer-encoding" in headers or not length.isdigit() or int(length) != 0:
        # Nothing here takes a body; refusing one keeps request framing unambiguous.
        raise _BadRequest(400, "request bodies are not accepted")
    connection = headers.get("connection", "").lower()
    if version == "1.0":
        answer = "keep-alive" if "keep-alive" in connection else _CLOSE
    else:
        answer = _CLOSE if "close" in connection else ""
    try:
        path = httptools.parse_url(sink.url).path or b"/"
    except httptools.HttpParserInvalidURLError:  # such as "http://[x/": an unbalanced IPv6 bracket
        raise _BadRequest(400, "malformed request target") from None
    return _Request(parser.get_method().decode("latin-1"), path.decode("latin-1"), headers, answer)


def _bad_start(data: bytearray) -> bool:
    """True if a request line cannot begin like this (a method is letters, then a space): a
    TLS ClientHello or binary garbage is answered at once rather than held to the head timeout."""
    space = data.find(b" ", 0, _MAX_METHOD + 1)
    if space < 0:
        return len(data) > _MAX_METHOD or not bytes(data).isalpha()
    return space == 0 or not bytes(data[:space]).isalpha()


class _Connection(asyncio.BufferedProtocol):
    """One client connection: parses pipelined requests in order and answers each."""

    def __init__(self, server: ExporterServer) -> None:
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
            self._send(500, b"Internal Server Error\n", _TEXT, head=False, connection=_CLOSE)

    def _process_requests(self) -> None:
        transport = self._transport
        while not (self._busy or self._write_paused or self._outgoing or self._closing):
            end = self._input.find(b"\r\n\r\n", 0, MAX_REQUEST_HEAD + 4)
            if end < 0:
                if len(self._input) >= MAX_REQUEST_HEAD + 4:
                    self._refuse(_BadRequest(431, "request head too large"))
                elif self._input and _bad_start(self._input):
                    self._refuse(_BadRequest(400, "not an HTTP request"))
                break
            head = bytes(self._input[:end])
            del self._input[:end + 4]
            try:
                request = parse_request_head(head)
            except _BadRequest as err:
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

    def _refuse(self, err: _BadRequest) -> None:
        log.debug("bad request", extra={"client": self.client, "error": str(err)})
        self._input.clear()
        self._web = self._server.web
        self._send(err.status, f"{err}\n".encode(), _TEXT, head=False, connection=_CLOSE)

    def _handle(self, request: _Request) -> None:
        web = self._web = self._server.web
        if request.method not in ("GET", "HEAD"):
            self._send(405, b"Only GET and HEAD are served\n", _TEXT, head=False,
                       connection=request.connection, extra=(("Allow", "GET, HEAD"),))
            return
        if request.path not in _OPEN_PATHS and web.basic_auth:
            header = request.headers.get("authorization")
            known = web.basic_auth.known_result(header)
            if known is None:
                future = self._server.check_password(web.basic_auth, header)
                if future is None:
                    self._send(429, b"Too many password checks at once; try again\n", _TEXT,
                               head=request.method == "HEAD", connection=request.connection,
                               extra=(("Retry-After", "1"),))
                    return
                self._busy = True
                future.add_done_callback(lambda done: self._authorized(request, done))
                return
            if not known:
                self._unauthorized(request)
                return
        self._answer(request)

    def _authorized(self, request: _Request, done: asyncio.Future[bool]) -> None:
        self._busy = False
        if self._closing:
            return
        if not done.cancelled() and done.exception() is None and done.result():
            self._answer(request)
        else:
            self._unauthorized(request)
        self._process()

    def _unauthorized(self, request: _Request) -> None:
        self._send(401, b"Unauthorized\n", _TEXT, head=request.method == "HEAD",
                   connection=request.connection,
                   extra=(("WWW-Authenticate", 'Basic realm="partnercenter-exporter"'),))

    def _answer(self, request: _Request) -> None:
        head = request.method == "HEAD"
        connection = request.connection
        path = request.path
        if path == self._server.telemetry_path:
            exposition = self._server.publisher.current
            process = self._server.process_metrics
            if accepts_gzip(request.headers.get("accept-encoding")):
                end = exposition.gzip_end if process is None else process.gzip_end(exposition)
                self._send(200, (exposition.gzip_head, end), CONTENT_TYPE, head=head,
                           connection=connection,
                           extra=(("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")))
            else:
                parts = exposition.segments if process is None else (*exposition.segments, process.text())
                self._send(200, parts, CONTENT_TYPE, head=head, connection=connection,
                           extra=(("Vary", "Accept-Encoding"),))
        elif path == "/healthz":
            problem = self._server.health()
            self._send(200 if problem is None else 503, b"OK\n" if problem is None else
                       f"{problem}\n".encode(), _TEXT, head=head, connection=connection)
        elif path == "/readyz":
            ready = self._server.publisher.current.snapshot.ready
            self._send(200 if ready else 503,
                       b"OK\n" if ready else b"waiting for the first poll of every tenant\n",
                       _TEXT, head=head, connection=connection)
        elif path == "/":
            publisher = self._server.publisher
            page = landing_page(publisher.current.snapshot, now=self._server.clock(),
                                thresholds=publisher.thresholds, telemetry_path=self._server.telemetry_path)
            self._send(200, page, "text/html; charset=utf-8", head=head, connection=connection)
        else:
            self._send(404, f"Not found; try {self._server.telemetry_path}\n".encode(), _TEXT, head=head,
                       connection=connection)

    def _send(self, status: int, body: bytes | tuple[bytes, ...], content_type: str, *, head: bool,
              connection: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
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
        if connection == _CLOSE:
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


def connection_limit(wanted: int) -> int:
    """The connection cap: as asked, but never more than half the open-files limit allows, so
    the exporter keeps descriptors for its own outbound calls and files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    limit = max(1, soft // 2)
    if wanted > limit:
        log.warning("--web.max-connections lowered by the open-files limit", extra={
            "asked": wanted, "using": limit, "ulimit_n": soft})
        return limit
    return wanted


class ExporterServer:
    """Serves the publisher's current exposition; nothing here ever calls upstream."""

    server_version = f"partnercenter-exporter/{__version__}"

    def __init__(self, listen_address: str | Sequence[str], publisher: Publisher, *,
                 web: WebConfigProvider | None = None,
                 clock: Callable[[], float] = time.time,
                 health: Callable[[], str | None] = lambda: None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 telemetry_path: str = DEFAULT_TELEMETRY_PATH,
                 process_metrics: ProcessMetrics | None = None,
                 sockets: Sequence[socket.socket] = ()) -> None:
        """Listen on `sockets` if given (systemd's), else on each listen address; bind errors are
        ListenError, raised here in the caller's thread."""
        self.publisher = publisher
        self.telemetry_path = telemetry_path
        self.process_metrics = process_metrics
        self.max_connections = connection_limit(max_connections)
        self.read_buffer = memoryview(bytearray(_READ_CHUNK))
        self._auth_pool = concurrent.futures.ThreadPoolExecutor(AUTH_WORKERS, thread_name_prefix="auth")
        self._auth_queued = 0
        self._throttled = Throttled(60.0)
        # None while the process is healthy; else why not, and /healthz answers 503 with it.
        self.health = health
        self._web: WebConfigProvider = web or WebConfig()
        self.clock = clock
        self.http_date = _HttpDate()
        self.connections: set[_Connection] = set()
        # Response heads of this second and web config, built on the event loop thread only.
        self._heads: dict[tuple[object, ...], bytes] = {}
        self._heads_date = ""
        self._heads_web: WebConfig | None = None
        addresses = [listen_address] if isinstance(listen_address, str) else list(listen_address)
        self._sockets: list[socket.socket] = list(sockets)
        try:
            for address in addresses if not sockets else ():
                self._sockets.append(bind_listener(address))
        except ListenError:
            for sock in self._sockets:
                sock.close()
            raise
        for sock in self._sockets:
            sock.setblocking(False)
        self._address = self._sockets[0].getsockname()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._thread: threading.Thread | None = None

    def response_head(self, web: WebConfig, status: int, content_type: str, length: int,
                      extra: tuple[tuple[str, str], ...], connection: str) -> bytes:
        """Status line and headers; scrapes repeat them, so they are built once a second.

        `connection` is the Connection header's value, or "" for none."""
        date = self.http_date()
        if date is not self._heads_date or web is not self._heads_web:
            self._heads.clear()
            self._heads_date, self._heads_web = date, web
        key = (status, content_type, length, extra, connection)
        head = self._heads.get(key)
        if head is None:
            lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nServer: {self.server_version}\r\n"
                     f"Date: {date}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"]
            lines.extend(f"{name}: {value}\r\n" for name, value in (*web.headers.items(), *extra))
            if connection:
                lines.append(f"Connection: {connection}\r\n")
            lines.append("\r\n")
            head = "".join(lines).encode("latin-1")
            if len(self._heads) < 256:
                self._heads[key] = head
        return head

    def admit(self, connection: _Connection) -> bool:
        """Take a new connection, making room if at the limit: the longest-quiet connection that
        is not mid-handshake or mid-check goes; if none can, the newcomer is refused."""
        connections = self.connections
        if len(connections) >= self.max_connections:
            victims = [c for c in connections if c.evictable]
            held = self._throttled("limit")
            if held is not None:
                log.warning("connection limit reached; dropping the longest-quiet connection" if victims
                            else "connection limit reached; refusing new connections", extra={
                                "limit": self.max_connections, "since_last_warning": held,
                                "fix": "raise --web.max-connections (and ulimit -n) if this is "
                                       "legitimate load"})
            if not victims:
                return False
            min(victims, key=lambda c: c.last_active).abort()
        connections.add(connection)
        return True

    def check_password(self, auth: BasicAuth, header: str | None) -> asyncio.Future[bool] | None:
        """Run bcrypt on the auth threads; None if MAX_AUTH_QUEUE checks are already queued."""
        if self._auth_queued >= MAX_AUTH_QUEUE:
            held = self._throttled("auth-queue")
            if held is not None:
                log.warning("password checks queued up; answering 429 until they drain", extra={
                    "queue": MAX_AUTH_QUEUE, "since_last_warning": held})
            return None
        self._auth_queued += 1
        future = asyncio.get_running_loop().run_in_executor(self._auth_pool, auth.check, header)

        def done(_: asyncio.Future[bool]) -> None:
            self._auth_queued -= 1

        future.add_done_callback(done)
        return future

    def report(self, message: str, *, exc_info: bool = False, **fields: str) -> None:
        """An error a client can provoke at will: logged at most once a minute per message."""
        held = self._throttled(message)
        if held is not None:
            log.error(message, exc_info=exc_info, extra={**fields, "since_last_report": held})

    @property
    def web(self) -> WebConfig:
        """The web config in force now (re-read from its file when that changed)."""
        return self._web.current()

    @property
    def port(self) -> int:
        """The first socket's TCP port; 0 for a Unix socket."""
        return 0 if isinstance(self._address, str) else int(self._address[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every listening socket, in flag order; ("unix:PATH", 0) for a Unix one."""
        return [(f"unix:{name}", 0) if isinstance(name := sock.getsockname(), str)
                else (str(name[0]), int(name[1])) for sock in self._sockets]

    @property
    def url(self) -> str:
        scheme = "https" if self.web.ssl_context else "http"
        if isinstance(self._address, str):  # a Unix socket systemd passed
            return f"{scheme}+unix://{self._address}"
        host = str(self._address[0])
        if host in ("0.0.0.0", "::"):  # noqa: S104 - only to print a usable URL
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="http", daemon=True)
        self._thread.start()
        started.wait()

    def shutdown(self) -> None:
        if self._thread is None:
            for sock in self._sockets:
                sock.close()
            self._loop.close()
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self, started: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        servers = [loop.run_until_complete(loop.create_server(lambda: _Connection(self), sock=sock,
                                                              backlog=self.max_connections))
                   for sock in self._sockets]
        sweeper = loop.call_later(1.0, self._close_idle)
        started.set()
        try:
            loop.run_forever()
        finally:
            sweeper.cancel()
            for server in servers:
                server.close()
            for connection in list(self.connections):
                connection.abort()
            loop.run_until_complete(asyncio.sleep(0))  # lets the transports finish closing
            for server in servers:
                loop.run_until_complete(server.wait_closed())
            loop.run_until_complete(loop.shutdown_default_executor())
            self._auth_pool.shutdown(wait=False, cancel_futures=True)
            loop.close()

    def _close_idle(self) -> None:
        # One sweep a second rather than a timer per request keeps the scrape path lean.
        now = time.monotonic()
        for connection in [c for c in self.connections if c.deadline < now]:
            connection.expire()
        self._loop.call_later(1.0, self._close_idle)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        message = context.get("message", "")
        text = f"{type(error).__name__}: {error}" if error else message
        # A client that hangs up mid-response is routine; anything else deserves a log line, but
        # not one per connection: a flood (say, out of file descriptors) is reported once a minute.
        if isinstance(error, (ConnectionError, ssl.SSLError, TimeoutError)):
            log.debug("error while serving a request", extra={"error": text})
        else:
            self.report("error while serving a request", error=text)
