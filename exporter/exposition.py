"""Snapshot to pre-rendered exposition bodies; no I/O, no upstream calls.

Every family is declared once (exporter.families): the collector kinds declare theirs, this
module the exporter's own. The fast renderer and the prometheus_client reference both render
the same samples from those declarations.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.collectors import REGISTRY, Context, Registry
from exporter.families import Family, Lines, Row, Rows, Samples
from exporter.model import INTERNAL_STAGES, REASONS, Snapshot, SourceView, ThresholdBuckets, utc_date
from exporter.version import PYTHON_VERSION, REVISION, VERSION

if TYPE_CHECKING:  # prometheus_client renders the reference only (tests, bench): not imported to serve
    from prometheus_client.core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_WHERE = ("tenant", "collector")

POLL_SUCCESS = Family(
    "partnercenter_exporter_poll_success", "gauge",
    "1 if the last poll of the tenant's collector succeeded, else 0.", _WHERE)
LAST_SUCCESS = Family(
    "partnercenter_exporter_last_success_timestamp_seconds", "gauge",
    "Unix time at which the last successful poll ended.", _WHERE)
POLL_DURATION = Family(
    "partnercenter_exporter_poll_duration_seconds", "gauge",
    "Duration of the last poll, successful or not.", _WHERE)
POLL_INTERVAL = Family(
    "partnercenter_exporter_poll_interval_seconds", "gauge",
    "The configured poll_interval; alert rules measure staleness in poll intervals.", _WHERE)
LAST_ERROR = Family(
    "partnercenter_exporter_last_poll_error", "gauge",
    "1 for the reason the last poll failed with, 0 for the others; all 0 after a success.",
    (*_WHERE, "reason"))
POLL_ERRORS = Family(
    "partnercenter_exporter_poll_errors", "counter", "Failed poll attempts by reason.",
    (*_WHERE, "reason"))
API_REQUESTS = Family(
    "partnercenter_exporter_api_requests", "counter",
    "HTTP requests to the collector's API (Partner Center or Microsoft Graph) by status code.",
    (*_WHERE, "code"))
SKIPPED = Family(
    "partnercenter_exporter_skipped_entries", "counter",
    "Response entries skipped because they could not be parsed.", _WHERE)
TOKEN_EXPIRY = Family(
    "partnercenter_exporter_token_expiry_timestamp_seconds", "gauge",
    "Unix time at which the access token in use expires.", _WHERE)
TOKEN_STORE_PENDING = Family(
    "partnercenter_exporter_token_store_write_pending", "gauge",
    "1 while the newest refresh token is kept in memory only because its token cache (the file, "
    "or the Key Vault of token_store) refused or missed the write; a restart then needs login. Only "
    "for refresh_token tenants.",
    _WHERE)
API_RETIRED = Family(
    "partnercenter_api_retired", "gauge",
    "1 when the collector's API last answered 404 or 410: Microsoft retired it after the DAP "
    "deprecation (or its URL is wrong), and the last good data stays; 0 when it last answered. Only "
    "for the DAP APIs Microsoft retires (delegatedAdminStatistics, delegatedAdminCustomers).", _WHERE)
CERTIFICATE_EXPIRY = Family(
    "partnercenter_exporter_client_certificate_expiry_timestamp_seconds", "gauge",
    "Unix time at which the first of the tenant's client certificates (client_certificate_file of "
    "auth, graph_auth or the token store's vault access) expires. Only for tenants with one.",
    ["tenant"])
HEALTH = (POLL_SUCCESS, LAST_SUCCESS, POLL_DURATION, POLL_INTERVAL, LAST_ERROR, POLL_ERRORS,
          API_REQUESTS, SKIPPED, TOKEN_EXPIRY, TOKEN_STORE_PENDING, API_RETIRED)
# A tenant's families that follow its data's, in exposition order.
HEALTH_FAMILIES = (*HEALTH, CERTIFICATE_EXPIRY)
INTERNAL_ERRORS = Family(
    "partnercenter_exporter_internal_errors", "counter",
    "Unexpected errors in the exporter itself (a bug) by poll-loop stage; the loop goes on with the "
    "last good data.", ["stage"])
RELOAD_SUCCESS = Family(
    "partnercenter_exporter_config_last_reload_successful", "gauge",
    "1 if the last load of the config file succeeded, 0 if it failed and the previous config is "
    "still in force. config is `config` (--config.file, on SIGHUP) or `web` (--web.config.file).",
    ["config"])
RELOAD_TIME = Family(
    "partnercenter_exporter_config_last_reload_success_timestamp_seconds", "gauge",
    "Unix time of the last successful load of the config file, at start-up or on reload.", ["config"])
# Each config file's last load: (which, succeeded, Unix time of the last success).
Reload = tuple[str, bool, float]
BUILD_INFO = Family(
    "partnercenter_exporter_build_info", "gauge",
    "Build information: the release version, the git commit and the Python running it; always 1.",
    ["version", "revision", "python_version"])
# This process's build_info labels; tests pass their own for stable golden files.
BUILD = (VERSION, REVISION, PYTHON_VERSION)


def health_samples(out: Samples, view: SourceView, poll_interval: float) -> None:
    """One source's poll health."""
    where = (view.name, view.collector)
    out.add(POLL_SUCCESS, where, 1 if view.last_poll_success else 0)
    if view.last_success_time is not None:
        out.add(LAST_SUCCESS, where, view.last_success_time)
    if view.last_duration is not None:
        out.add(POLL_DURATION, where, view.last_duration)
    out.add(POLL_INTERVAL, where, poll_interval)
    for reason in REASONS:
        out.add(LAST_ERROR, (*where, reason), 1 if view.last_error_reason == reason else 0)
        out.add(POLL_ERRORS, (*where, reason), view.errors_total.get(reason, 0))
    for code, count in sorted(view.api_requests_total.items()):
        out.add(API_REQUESTS, (*where, code), count)
    out.add(SKIPPED, where, view.skipped_entries_total)
    if view.token_expires_at is not None:
        out.add(TOKEN_EXPIRY, where, view.token_expires_at)
    if view.token_store_pending is not None:
        out.add(TOKEN_STORE_PENDING, where, 1 if view.token_store_pending else 0)
    if view.api_retired is not None:
        out.add(API_RETIRED, where, 1 if view.api_retired else 0)


def tenant_health(out: Samples, name: str, views: Sequence[SourceView], poll_interval: float) -> None:
    """One tenant's samples of HEALTH_FAMILIES: each source's poll health, its certificate expiry."""
    for view in views:
        health_samples(out, view, poll_interval)
    expiries = [v.certificate_expires_at for v in views if v.certificate_expires_at is not None]
    if expiries:
        out.add(CERTIFICATE_EXPIRY, (name,), min(expiries))


def tenant_samples(out: Samples, name: str, views: Sequence[SourceView], ctx: Context,
                   poll_interval: float, registry: Registry = REGISTRY) -> None:
    """Every per-tenant sample of one tenant: its kinds' data, the joins, each source's health."""
    registry.samples(out, name, views, ctx)
    tenant_health(out, name, views, poll_interval)


def own_families(snapshot: Snapshot, reloads: Sequence[Reload],
                 build: tuple[str, str, str]) -> list[tuple[Family, list[Row]]]:
    """The exporter's families that are not per tenant, with their rows, in exposition order:
    error counts for every poll-loop stage, each config file's last load, build_info."""
    return [
        (INTERNAL_ERRORS, [((stage,), snapshot.internal_errors.get(stage, 0)) for stage in INTERNAL_STAGES]),
        (RELOAD_SUCCESS, [((which,), 1 if ok else 0) for which, ok, _ in reloads]),
        (RELOAD_TIME, [((which,), at) for which, _, at in reloads]),
        (BUILD_INFO, [(build, 1)]),
    ]


def tenant_families(registry: Registry = REGISTRY) -> tuple[Family, ...]:
    """The families with a sample per tenant, in exposition order."""
    return (*registry.families(), *HEALTH_FAMILIES)


def metric_families(snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int],
                    poll_interval: float, build: tuple[str, str, str] = BUILD,
                    reloads: Sequence[Reload] = (), registry: Registry = REGISTRY) -> list[Metric]:
    """The prometheus_client families of one snapshot: the reference the renderer must equal."""
    ctx = Context(today, ThresholdBuckets(thresholds, today))
    out = Rows()
    for name, views in snapshot.by_tenant(registry.order):
        tenant_samples(out, name, views, ctx, poll_interval, registry)
    return [*(family.reference(out.rows.get(family, [])) for family in tenant_families(registry)),
            *(family.reference(rows) for family, rows in own_families(snapshot, reloads, build))]


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def reference_render(snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int],
                     poll_interval: float, build: tuple[str, str, str] = BUILD,
                     reloads: Sequence[Reload] = ()) -> bytes:
    """The exposition as prometheus_client renders metric_families: what render() must equal."""
    from prometheus_client.core import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metric_families(snapshot, today=today, thresholds=thresholds,
                                                poll_interval=poll_interval, build=build,
                                                reloads=reloads)))
    return bytes(generate_latest(registry))


def _data_lines(name: str, views: Sequence[SourceView], ctx: Context, registry: Registry,
                ) -> dict[Family, bytes]:
    """One tenant's sample lines of its kinds' data and the joins, per family; families without
    samples are left out."""
    out = Lines()
    registry.samples(out, name, views, ctx)
    return {family: "".join(lines).encode() for family, lines in out.lines.items()}


def _health_lines(name: str, views: Sequence[SourceView], poll_interval: float) -> dict[Family, bytes]:
    """One tenant's lines of HEALTH_FAMILIES, per family; families without samples are left out."""
    out = Lines()
    tenant_health(out, name, views, poll_interval)
    return {family: "".join(lines).encode() for family, lines in out.lines.items()}


@dataclass(frozen=True)
class _Kept:
    """One tenant's lines from the last render, with what they were rendered from."""

    settings: tuple[object, ...]
    views: tuple[SourceView, ...]
    data_lines: dict[Family, bytes]
    health_lines: dict[Family, bytes]


def _same(kept: Sequence[object], now: Sequence[object]) -> bool:
    return len(kept) == len(now) and all(a is b for a, b in zip(kept, now, strict=True))


def _same_data(kept: Sequence[SourceView], now: Sequence[SourceView]) -> bool:
    """Whether each view's collector is the same and its data the very same object."""
    return len(kept) == len(now) and all(a.collector == b.collector and a.data is b.data
                                         for a, b in zip(kept, now, strict=True))


class Renderer:
    """Renders snapshots to the text exposition, byte for byte what reference_render gives.

    Each tenant's lines are kept in two parts: its data (kinds and joins) and its poll health. A
    publish after a poll re-renders the health of that tenant and its data only when the data is a
    new object (the poller keeps unchanged data as the same object); the others' bytes are joined
    as they are. With hundreds of tenants a poll round stays cheap.
    """

    def __init__(self, build: tuple[str, str, str] = BUILD, registry: Registry = REGISTRY) -> None:
        self._build = build
        self._registry = registry
        self._kept: dict[str, _Kept] = {}

    def render(self, snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int],
               poll_interval: float, reloads: Sequence[Reload] = ()) -> list[bytes]:
        """The exposition in pieces, in order: family headers and each tenant's lines."""
        data_part, rest = self.render_parts(snapshot, today=today, thresholds=thresholds,
                                            poll_interval=poll_interval, reloads=reloads)
        return [*data_part, *rest]

    def render_parts(self, snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int],
                     poll_interval: float, reloads: Sequence[Reload] = (),
                     ) -> tuple[list[bytes], list[bytes]]:
        """The exposition in pieces, as two lists: the data families' (kinds and joins), then the
        rest (health, the exporter's own families). While no tenant's data changes, the first list
        holds the very same bytes objects as last time."""
        settings = (today, tuple(thresholds), poll_interval)
        ctx = Context(today, ThresholdBuckets(thresholds, today))
        kept: dict[str, _Kept] = {}
        for name, views in snapshot.by_tenant(self._registry.order):
            previous = self._kept.get(name)
            if previous is None or previous.settings != settings:
                data_lines = _data_lines(name, views, ctx, self._registry)
                health_lines = _health_lines(name, views, poll_interval)
            else:
                data_lines = (previous.data_lines if _same_data(previous.views, views)
                              else _data_lines(name, views, ctx, self._registry))
                health_lines = (previous.health_lines if _same(previous.views, views)
                                else _health_lines(name, views, poll_interval))
            kept[name] = _Kept(settings, views, data_lines, health_lines)
        self._kept = kept
        data_part: list[bytes] = []
        for family in self._registry.families():
            data_part.append(family.header)
            data_part.extend(tenant.data_lines[family] for tenant in kept.values()
                             if family in tenant.data_lines)
        rest: list[bytes] = []
        for family in HEALTH_FAMILIES:
            rest.append(family.header)
            rest.extend(tenant.health_lines[family] for tenant in kept.values()
                        if family in tenant.health_lines)
        for family, rows in own_families(snapshot, reloads, self._build):
            rest.append(family.header)
            rest.append(family.text(rows).encode())
        return [piece for piece in data_part if piece], [piece for piece in rest if piece]


def render(snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int], poll_interval: float,
           build: tuple[str, str, str] = BUILD, reloads: Sequence[Reload] = ()) -> bytes:
    """The text exposition (format 0.0.4) of one snapshot."""
    return b"".join(Renderer(build).render(snapshot, today=today, thresholds=thresholds,
                                           poll_interval=poll_interval, reloads=reloads))


# A body smaller than this is kept as one bytes object. A larger one keeps each tenant's big
# pieces as they are and joins only runs of small ones, so it is never held twice in memory.
JOIN_WHOLE_BELOW = 4 * 1024 * 1024
_SEGMENT = 64 * 1024


def segments(pieces: Sequence[bytes]) -> tuple[bytes, ...]:
    """Group pieces into few, large segments: a handful of writes per scrape, little copying."""
    if sum(len(piece) for piece in pieces) < JOIN_WHOLE_BELOW:
        return (b"".join(pieces),)
    result: list[bytes] = []
    run: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= _SEGMENT:
            if run:
                result.append(b"".join(run))
                run, size = [], 0
            result.append(piece)
            continue
        run.append(piece)
        size += len(piece)
        if size >= _SEGMENT:
            result.append(b"".join(run))
            run, size = [], 0
    if run:
        result.append(b"".join(run))
    return tuple(result)


# A data part this large is compressed once and its compressor kept: while no tenant's data
# changes, a publish compresses only what follows it. A smaller one costs less to compress again
# than the kept compressor's memory (zlib's state at level 6 is about 384 KiB).
GZIP_KEEP_FROM = 256 * 1024


def gzip_pieces(pieces: Sequence[bytes], level: int = 6) -> tuple[bytes, Any]:
    """gzip the pieces as one stream, without joining them first: the compressed bytes so far, and
    the compressor, not yet flushed, so more text can still be appended to the same stream."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: with the gzip header and trailer
    return b"".join(compressor.compress(piece) for piece in pieces), compressor


def gzip_end(compressor: Any, tail: bytes = b"") -> bytes:
    """The rest of the gzip stream after `tail`, from a copy: the compressor stays open for reuse."""
    copy = compressor.copy()
    end: bytes = copy.compress(tail) + copy.flush()
    return end


@dataclass(frozen=True)
class Exposition:
    """Bodies served as they are; rendered once per poll, never per scrape."""

    segments: tuple[bytes, ...]  # the text body, in order; see segments()
    gzip_head: bytes  # the gzip stream of the body, all but its end
    gzip_end: bytes  # the end: gzip_head + gzip_end is the whole body, gzipped
    compressor: Any  # zlib's, just after the body: gzip_end(compressor, more) appends `more`
    snapshot: Snapshot
    day: dt.date

    @property
    def gzip_body(self) -> bytes:
        """The gzipped body in one piece."""
        return self.gzip_head + self.gzip_end

    @property
    def body(self) -> bytes:
        """The text body in one piece: a copy when it is large, so the server sends segments."""
        return self.segments[0] if len(self.segments) == 1 else b"".join(self.segments)


class Publisher:
    """Renders each new snapshot once and swaps the result in for the HTTP server to serve."""

    def __init__(self, thresholds: Sequence[int], *, poll_interval: float,
                 clock: Callable[[], float] = time.time, loaded: Sequence[str] = ()) -> None:
        """`loaded`: the config files (`config`, `web`) that were just loaded for this start."""
        self._thresholds = tuple(thresholds)
        self._poll_interval = poll_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._renderer = Renderer()
        # The data part last compressed, its gzip bytes and the compressor just after it.
        self._gzip_data: tuple[list[bytes], bytes, Any] | None = None
        self._reloads: dict[str, Reload] = {name: (name, True, clock()) for name in loaded}
        self.current = self._render(Snapshot())

    @property
    def thresholds(self) -> tuple[int, ...]:
        return self._thresholds

    def _render(self, snapshot: Snapshot) -> Exposition:
        day = utc_date(self._clock())
        data_part, rest = self._renderer.render_parts(snapshot, today=day, thresholds=self._thresholds,
                                                      poll_interval=self._poll_interval,
                                                      reloads=tuple(self._reloads.values()))
        head, compressor = self._gzip(data_part, rest)
        return Exposition(segments=segments([*data_part, *rest]), gzip_head=head,
                          gzip_end=gzip_end(compressor), compressor=compressor, snapshot=snapshot, day=day)

    def _gzip(self, data_part: list[bytes], rest: list[bytes]) -> tuple[bytes, Any]:
        """gzip_pieces of both parts; a large data part is compressed once, while it stays the same."""
        kept = self._gzip_data
        if kept is None or not _same(kept[0], data_part):
            if sum(len(piece) for piece in data_part) < GZIP_KEEP_FROM:
                self._gzip_data = None
                return gzip_pieces([*data_part, *rest])
            head, after_data = gzip_pieces(data_part)
            kept = self._gzip_data = (data_part, head, after_data)
        compressor = kept[2].copy()
        return kept[1] + b"".join(compressor.compress(piece) for piece in rest), compressor

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.current = self._render(snapshot)

    def reconfigure(self, thresholds: Sequence[int], *, poll_interval: float) -> None:
        """A reloaded config: its thresholds and interval, and the load itself, in one render."""
        with self._lock:
            self._thresholds = tuple(thresholds)
            self._poll_interval = poll_interval
            self._reloads["config"] = ("config", True, self._clock())
            self.current = self._render(self.current.snapshot)

    def loaded(self, config: str, ok: bool) -> None:
        """Record a load of a config file (`config` or `web`): at start-up, on reload, or a failed one."""
        with self._lock:
            previous = self._reloads.get(config)
            last_success = self._clock() if ok else (previous[2] if previous else 0.0)
            self._reloads[config] = (config, ok, last_success)
            self.current = self._render(self.current.snapshot)

    def refresh_if_new_day(self) -> bool:
        """Re-render when the UTC date moved on, so over-threshold counts age without a poll."""
        with self._lock:
            if utc_date(self._clock()) == self.current.day:
                return False
            self.current = self._render(self.current.snapshot)
            return True
