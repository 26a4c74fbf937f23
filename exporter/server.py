"""HTTP server: /metrics (pre-rendered bytes), /healthz, /readyz, landing page, TLS, basic auth."""

from __future__ import annotations

import html
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from exporter import __version__
from exporter.collector import CONTENT_TYPE, Publisher
from exporter.logs import REDACTOR
from exporter.model import Snapshot, TenantSnapshot, utc_date
from exporter.webconfig import WebConfig, WebConfigProvider

log = logging.getLogger("exporter.server")

DEFAULT_PORT = 9867
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0
# Probes must work without credentials, as with Go exporters' health endpoints.
_OPEN_PATHS = {"/healthz", "/readyz"}


def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port`, `:port` or `[v6]:port` to (host, port); an empty host means all IPv4."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web.listen-address: expected HOST:PORT such as {DEFAULT_LISTEN_ADDRESS}"
                         f" or 127.0.0.1:{DEFAULT_PORT}, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - the documented default


class TLSThreadingHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that does the TLS handshake in the connection's own thread.

    Wrapping the listening socket would handshake in the accept loop, where one idle client
    stalls every other scrape.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is routine; anything else deserves a log line.
        error = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(error, (ConnectionError, ssl.SSLError, TimeoutError)) \
            else logging.ERROR
        log.log(level, "error while serving a request", extra={
            "client": client_address[0], "error": f"{type(error).__name__}: {error}"})

    def current_ssl_context(self) -> ssl.SSLContext | None:
        return self.ssl_context

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.current_ssl_context()
        if context is None:
            self.serve_connection(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            log.debug("TLS handshake failed", extra={"client": client_address[0], "error": str(err)})
            return
        try:
            self.serve_connection(tls, client_address)
        finally:
            tls.close()

    def serve_connection(self, connection: socket.socket, client_address: Any) -> None:
        """Run the handler on a connection that is ready (with TLS: after the handshake)."""
        super().finish_request(connection, client_address)


def _accepts_gzip(header: str | None) -> bool:
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
                 redact: Callable[[str], str] = REDACTOR) -> bytes:
    """The `/` page: links and each tenant's state; every dynamic value is escaped and redacted."""
    top = max(thresholds) if thresholds else 90
    rows = []
    for tenant in sorted(snapshot.tenants, key=lambda t: t.name):
        rows.append(_tenant_row(tenant, now=now, threshold=top, redact=redact))
    table = "".join(rows) or '<tr><td colspan="6">no tenants configured</td></tr>'
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Partner Center exporter</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}
.ok{{color:#137333}}.fail{{color:#b3261e}}.pending{{color:#8a6d00}}</style></head>
<body><h1>Partner Center exporter</h1>
<p>Prometheus exporter for Partner Center delegated admin (DAP) statistics, version {__version__}.
Values are cached from the last successful poll; scrapes never call Partner Center.</p>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li>
<li><a href="/readyz">/readyz</a></li></ul>
<h2>Tenants</h2>
<table><tr><th>tenant</th><th>state</th><th>last success</th><th>DAP customers</th>
<th>inactive &gt; {top} days</th><th>last error</th></tr>
{table}</table></body></html>
"""
    return page.encode("utf-8")


def _tenant_row(tenant: TenantSnapshot, *, now: float, threshold: int,
                redact: Callable[[str], str]) -> str:
    if not tenant.attempted:
        state = '<span class="pending">first poll pending</span>'
    elif tenant.last_poll_success:
        state = '<span class="ok">ok</span>'
    else:
        state = f'<span class="fail">failing: {html.escape(tenant.last_error_reason or "")}</span>'
    last = _age(now - tenant.last_success_time) if tenant.last_success_time is not None else "never"
    customers = over = "-"
    if tenant.stats is not None:
        customers = str(tenant.stats.total_customers)
        over = str(tenant.stats.inactive_over(threshold, utc_date(now)))
    error = html.escape(redact(tenant.last_error_message or ""))
    return (f"<tr><td>{html.escape(tenant.name)}</td><td>{state}</td><td>{last}</td>"
            f"<td>{customers}</td><td>{over}</td><td>{error}</td></tr>\n")


class _WebConfiguredHTTPServer(TLSThreadingHTTPServer):
    """Asks the web config for the TLS context on every connection, so certificates can rotate."""

    web_config: WebConfigProvider = WebConfig()

    def current_ssl_context(self) -> ssl.SSLContext | None:
        return self.web_config.current().ssl_context


class ExporterServer:
    """Serves the publisher's current exposition; nothing here ever calls upstream."""

    def __init__(self, listen_address: str, publisher: Publisher, *, thresholds: tuple[int, ...],
                 web: WebConfigProvider | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        host, port = parse_listen_address(listen_address)
        self._publisher = publisher
        self._web: WebConfigProvider = web or WebConfig()
        self.thresholds = thresholds
        handler = _make_handler(self, clock)
        self._httpd = _WebConfiguredHTTPServer((host, port), handler)
        self._httpd.web_config = self._web
        self._thread: threading.Thread | None = None

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    @publisher.setter
    def publisher(self, publisher: Publisher) -> None:
        self._publisher = publisher

    @property
    def web(self) -> WebConfig:
        """The web config in force now (re-read from its file when that changed)."""
        return self._web.current()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        if host in ("0.0.0.0", "::"):  # noqa: S104 - only to print a usable URL
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.web.ssl_context else "http"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,), name="http",
                                        daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(server: ExporterServer, clock: Callable[[], float]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # keep-alive stalls ~40 ms per request without it
        timeout = IDLE_TIMEOUT
        server_version = f"partnercenter-exporter/{__version__}"
        sys_version = ""
        web: WebConfig = WebConfig()  # the config in force for the current request

        def do_GET(self) -> None:
            self._dispatch(head=False)

        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http request", extra={"client": self.client_address[0],
                                             "request": format % args})

        def _dispatch(self, *, head: bool) -> None:
            path = urlsplit(self.path).path
            web = self.web = server.web
            if path not in _OPEN_PATHS and web.basic_auth \
                    and not web.basic_auth.check(self.headers.get("Authorization")):
                self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8", head=head,
                           extra={"WWW-Authenticate": 'Basic realm="partnercenter-exporter"'})
                return
            exposition = server.publisher.current
            if path == "/metrics":
                if _accepts_gzip(self.headers.get("Accept-Encoding")):
                    self._send(200, exposition.gzip_body, CONTENT_TYPE, head=head,
                               extra={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
                else:
                    self._send(200, exposition.body, CONTENT_TYPE, head=head,
                               extra={"Vary": "Accept-Encoding"})
            elif path == "/healthz":
                self._send(200, b"OK\n", "text/plain; charset=utf-8", head=head)
            elif path == "/readyz":
                ready = exposition.snapshot.ready
                self._send(200 if ready else 503,
                           b"OK\n" if ready else b"waiting for the first poll of every tenant\n",
                           "text/plain; charset=utf-8", head=head)
            elif path == "/":
                body = landing_page(exposition.snapshot, now=clock(), thresholds=server.thresholds)
                self._send(200, body, "text/html; charset=utf-8", head=head)
            else:
                self._send(404, b"Not found; try /metrics\n", "text/plain; charset=utf-8", head=head)

        def _send(self, status: int, body: bytes, content_type: str, *, head: bool,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in {**self.web.headers, **(extra or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler
