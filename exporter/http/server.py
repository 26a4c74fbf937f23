"""The HTTP server's lifecycle: one asyncio event loop in its own thread serves every connection.

A scrape is a header line or ten and the body bytes the publisher rendered at poll time, so its
Python work is a few microseconds and no big object is built per request. TLS is negotiated per
connection with the web config in force at that moment; bcrypt runs in a worker thread, never on
the loop. Here: listeners opened, the connection cap, bcrypt admission, response heads; the
protocol (`protocol.py`) parses, the routes (`routes.py`) answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from exporter import __version__
from exporter.exposition import Publisher
from exporter.http.listen import ListenError, bind_listener
from exporter.http.protocol import READ_CHUNK, Connection, HttpDate
from exporter.http.routes import DEFAULT_TELEMETRY_PATH, Routes
from exporter.logs import Throttled
from exporter.selfmetrics import ProcessMetrics
from exporter.webconfig import BasicAuth, WebConfig, WebConfigProvider

log = logging.getLogger("exporter.server")

DEFAULT_MAX_CONNECTIONS = 512
# At most this many bcrypt checks run or wait; beyond it a request needing one gets 429 at once.
MAX_AUTH_QUEUE = 4
# Threads for bcrypt: half the cores, so wrong passwords cannot take all of them.
AUTH_WORKERS = max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class ServeOptions:
    """How to serve, from the --web.* flags other than the addresses (exporter-toolkit's names)."""

    telemetry_path: str = DEFAULT_TELEMETRY_PATH
    systemd_socket: bool = False  # listen on the sockets systemd passes instead of the addresses
    exporter_metrics: bool = True  # process_*, python_gc_* and python_info on the telemetry path


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
        self.max_connections = connection_limit(max_connections)
        self.read_buffer = memoryview(bytearray(READ_CHUNK))
        self._auth_pool = concurrent.futures.ThreadPoolExecutor(AUTH_WORKERS, thread_name_prefix="auth")
        self._auth_queued = 0
        self._throttled = Throttled(60.0)
        self._web: WebConfigProvider = web or WebConfig()
        self.routes = Routes(publisher, telemetry_path=telemetry_path, clock=clock, health=health,
                             process_metrics=process_metrics, check_password=self.check_password)
        self.handle = self.routes.handle
        self.http_date = HttpDate()
        self.connections: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
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

    def admit(self, connection: Connection) -> bool:
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
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(1.0, self._close_idle)
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
        servers = [loop.run_until_complete(loop.create_server(lambda: Connection(self), sock=sock,
                                                              backlog=self.max_connections))
                   for sock in self._sockets]
        started.set()
        try:
            loop.run_forever()
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()
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
        # One sweep a second rather than a timer per request keeps the scrape path lean; with no
        # connection open there is none, so an idle exporter's event loop sleeps.
        now = time.monotonic()
        for connection in [c for c in self.connections if c.deadline < now]:
            connection.expire()
        self._sweeper = self._loop.call_later(1.0, self._close_idle) if self.connections else None

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
