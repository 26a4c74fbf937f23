"""What each path answers: /metrics (the pre-rendered bytes), /healthz, /readyz and the status page,
behind basic auth where the web config asks for it. Nothing here parses HTTP or calls upstream."""

from __future__ import annotations

import asyncio
import functools
import html
from collections.abc import Callable
from dataclasses import dataclass

from exporter import __version__
from exporter.collectors import REGISTRY, Context
from exporter.exposition import CONTENT_TYPE, Publisher
from exporter.http.protocol import TEXT, Connection, Request
from exporter.logs import REDACTOR
from exporter.model import Snapshot, SourceView, ThresholdBuckets, utc_date
from exporter.selfmetrics import ProcessMetrics
from exporter.webconfig import BasicAuth, WebConfig

DEFAULT_TELEMETRY_PATH = "/metrics"
# Probes must work without credentials, as with Go exporters' health endpoints.
_OPEN_PATHS = {"/healthz", "/readyz"}


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


@dataclass(frozen=True)
class Routes:
    """Answers parsed requests; a connection calls `handle` with each one, in order."""

    publisher: Publisher
    telemetry_path: str
    clock: Callable[[], float]
    # None while the process is healthy; else why not, and /healthz answers 503 with it.
    health: Callable[[], str | None]
    process_metrics: ProcessMetrics | None
    check_password: Callable[[BasicAuth, str | None], asyncio.Future[bool] | None]

    def handle(self, request: Request, reply: Connection, web: WebConfig) -> None:
        if request.method not in ("GET", "HEAD"):
            reply.send(405, b"Only GET and HEAD are served\n", TEXT, head=False,
                       connection=request.connection, extra=(("Allow", "GET, HEAD"),))
            return
        if request.path not in _OPEN_PATHS and web.basic_auth:
            header = request.headers.get("authorization")
            known = web.basic_auth.known_result(header)
            if known is None:
                future = self.check_password(web.basic_auth, header)
                if future is None:
                    reply.send(429, b"Too many password checks at once; try again\n", TEXT,
                               head=request.method == "HEAD", connection=request.connection,
                               extra=(("Retry-After", "1"),))
                    return
                reply.hold_until(future, lambda done: self._checked(request, reply, done))
                return
            if not known:
                self._unauthorized(request, reply)
                return
        self._answer(request, reply)

    def _checked(self, request: Request, reply: Connection, done: asyncio.Future[bool]) -> None:
        if not done.cancelled() and done.exception() is None and done.result():
            self._answer(request, reply)
        else:
            self._unauthorized(request, reply)

    @staticmethod
    def _unauthorized(request: Request, reply: Connection) -> None:
        reply.send(401, b"Unauthorized\n", TEXT, head=request.method == "HEAD",
                   connection=request.connection,
                   extra=(("WWW-Authenticate", 'Basic realm="partnercenter-exporter"'),))

    def _answer(self, request: Request, reply: Connection) -> None:
        head = request.method == "HEAD"
        connection = request.connection
        path = request.path
        if path == self.telemetry_path:
            exposition = self.publisher.current
            process = self.process_metrics
            if accepts_gzip(request.headers.get("accept-encoding")):
                end = exposition.gzip_end if process is None else process.gzip_end(exposition)
                reply.send(200, (exposition.gzip_head, end), CONTENT_TYPE, head=head,
                           connection=connection,
                           extra=(("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")))
            else:
                parts = exposition.segments if process is None else (*exposition.segments, process.text())
                reply.send(200, parts, CONTENT_TYPE, head=head, connection=connection,
                           extra=(("Vary", "Accept-Encoding"),))
        elif path == "/healthz":
            problem = self.health()
            reply.send(200 if problem is None else 503, b"OK\n" if problem is None else
                       f"{problem}\n".encode(), TEXT, head=head, connection=connection)
        elif path == "/readyz":
            ready = self.publisher.current.snapshot.ready
            reply.send(200 if ready else 503,
                       b"OK\n" if ready else b"waiting for the first poll of every tenant\n",
                       TEXT, head=head, connection=connection)
        elif path == "/":
            page = landing_page(self.publisher.current.snapshot, now=self.clock(),
                                thresholds=self.publisher.thresholds, telemetry_path=self.telemetry_path)
            reply.send(200, page, "text/html; charset=utf-8", head=head, connection=connection)
        else:
            reply.send(404, f"Not found; try {self.telemetry_path}\n".encode(), TEXT, head=head,
                       connection=connection)
