"""Snapshot to metric families and pre-rendered exposition bodies; no I/O, no upstream calls."""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString as _go_float

from exporter import __version__
from exporter.model import (
    EXPIRY_WINDOWS_DAYS,
    INTERNAL_STAGES,
    REASONS,
    DapCustomers,
    DapStatistics,
    GdapRelationships,
    Snapshot,
    TenantSnapshot,
    ThresholdBuckets,
    data_of,
    utc_date,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CACHED = "Cached from the last successful poll."
_PER_CUSTOMER = ["tenant", "customer_tenant_id", "customer_name"]


def metric_families(snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int],
                    poll_interval: float, version: str = __version__) -> list[Metric]:
    """Build every metric family for one snapshot; `today` drives the over-threshold counts."""
    customers = GaugeMetricFamily(
        "partnercenter_dap_customers",
        f"Customers with a DAP relationship (totalDapCustomerCount). {_CACHED}", labels=["tenant"])
    established = GaugeMetricFamily(
        "partnercenter_dap_established_relationships",
        f"DAP relationships established on the date in the date label. {_CACHED}",
        labels=["tenant", "date"])
    inactive = GaugeMetricFamily(
        "partnercenter_dap_inactive_customers",
        "Customers whose last partner sign-in was on last_signin_date; inactive_over_days is the largest "
        f"configured threshold that date is more than that many days before today, or 0. {_CACHED}",
        labels=["tenant", "last_signin_date", "inactive_over_days"])
    over = GaugeMetricFamily(
        "partnercenter_dap_inactive_customers_over_threshold",
        "Customers whose last partner sign-in is more than threshold_days days before the current "
        f"UTC date. {_CACHED}", labels=["tenant", "threshold_days"])
    success = GaugeMetricFamily(
        "partnercenter_exporter_poll_success",
        "1 if the last poll of the tenant's collector succeeded, else 0.", labels=["tenant", "collector"])
    last_success = GaugeMetricFamily(
        "partnercenter_exporter_last_success_timestamp_seconds",
        "Unix time at which the last successful poll ended.", labels=["tenant", "collector"])
    duration = GaugeMetricFamily(
        "partnercenter_exporter_poll_duration_seconds",
        "Duration of the last poll, successful or not.", labels=["tenant", "collector"])
    last_error = GaugeMetricFamily(
        "partnercenter_exporter_last_poll_error",
        "1 for the reason the last poll failed with, 0 for the others; all 0 after a success.",
        labels=["tenant", "collector", "reason"])
    errors = CounterMetricFamily(
        "partnercenter_exporter_poll_errors",
        "Failed poll attempts by reason.", labels=["tenant", "collector", "reason"])
    requests = CounterMetricFamily(
        "partnercenter_exporter_api_requests",
        "HTTP requests to the collector's API (Partner Center or Microsoft Graph) by status code.",
        labels=["tenant", "collector", "code"])
    skipped = CounterMetricFamily(
        "partnercenter_exporter_skipped_entries",
        "Response entries skipped because they could not be parsed.", labels=["tenant", "collector"])
    interval = GaugeMetricFamily(
        "partnercenter_exporter_poll_interval_seconds",
        "The configured poll_interval; alert rules measure staleness in poll intervals.",
        labels=["tenant", "collector"])
    expiry = GaugeMetricFamily(
        "partnercenter_exporter_token_expiry_timestamp_seconds",
        "Unix time at which the access token in use expires.", labels=["tenant", "collector"])
    internal = CounterMetricFamily(
        "partnercenter_exporter_internal_errors",
        "Unexpected errors in the exporter itself (a bug) by poll-loop stage; the loop goes on with the "
        "last good data.", labels=["stage"])
    for stage in INTERNAL_STAGES:
        internal.add_metric([stage], snapshot.internal_errors.get(stage, 0))
    build = GaugeMetricFamily(
        "partnercenter_exporter_build_info", "Build information; always 1.", labels=["version"])
    build.add_metric([version], 1)

    migration = migration_families()
    buckets = ThresholdBuckets(thresholds, today)
    for name, views in snapshot.by_tenant():
        stats = data_of(views, DapStatistics)
        if stats is not None:
            customers.add_metric([name], stats.total_customers)
            for day, count in stats.established.items():
                established.add_metric([name, day.isoformat()], count)
            for day, count in stats.inactive.items():
                bucket = buckets(day)
                inactive.add_metric([name, day.isoformat(), str(bucket)], count)
            for threshold in thresholds:
                over.add_metric([name, str(threshold)], stats.inactive_over(threshold, today))
        add_migration(migration, name, views, buckets=buckets, thresholds=thresholds)
        for view in views:
            where = [name, view.collector]
            success.add_metric(where, 1 if view.last_poll_success else 0)
            interval.add_metric(where, poll_interval)
            if view.last_success_time is not None:
                last_success.add_metric(where, view.last_success_time)
            if view.last_duration is not None:
                duration.add_metric(where, view.last_duration)
            for reason in REASONS:
                last_error.add_metric([*where, reason], 1 if view.last_error_reason == reason else 0)
                errors.add_metric([*where, reason], view.errors_total.get(reason, 0))
            for code, count in sorted(view.api_requests_total.items()):
                requests.add_metric([*where, code], count)
            skipped.add_metric(where, view.skipped_entries_total)
            if view.token_expires_at is not None:
                expiry.add_metric(where, view.token_expires_at)
    return [customers, established, inactive, over, *migration, success, last_success, duration,
            interval, last_error, errors, requests, skipped, expiry, internal, build]


def migration_families() -> list[GaugeMetricFamily]:
    """The GDAP and DAP-customer families, empty, in exposition order."""
    return [
        GaugeMetricFamily(
            "partnercenter_gdap_relationships",
            f"GDAP relationships of the partner by status, every documented status listed. {_CACHED}",
            labels=["tenant", "status"]),
        GaugeMetricFamily(
            "partnercenter_gdap_relationship_end_timestamp_seconds",
            "Unix time at which a GDAP relationship that grants access (status active) ends, one "
            f"series per relationship. {_CACHED}",
            labels=["tenant", "relationship_id", "relationship_name", "customer_tenant_id",
                    "customer_name", "auto_extend", "global_admin"]),
        GaugeMetricFamily(
            "partnercenter_gdap_relationships_expiring_without_auto_extend",
            "Active GDAP relationships that end within within_days days of the last successful poll "
            f"(not already past) and are not extended automatically. {_CACHED}",
            labels=["tenant", "within_days"]),
        GaugeMetricFamily(
            "partnercenter_gdap_relationships_with_global_admin",
            "Active GDAP relationships that include the Global Administrator role. "
            f"{_CACHED}", labels=["tenant"]),
        GaugeMetricFamily(
            "partnercenter_gdap_customers",
            f"Distinct customers with at least one active GDAP relationship. {_CACHED}",
            labels=["tenant"]),
        GaugeMetricFamily(
            "partnercenter_dap_enabled_customers",
            f"Customers that delegatedAdminCustomers lists with dapEnabled. {_CACHED}", labels=["tenant"]),
        GaugeMetricFamily(
            "partnercenter_dap_customers_without_gdap",
            "Customers with DAP and no active GDAP relationship: removing DAP cuts the partner off "
            f"from them. {_CACHED}", labels=["tenant"]),
        GaugeMetricFamily(
            "partnercenter_dap_customer_without_gdap_info",
            f"1 for each customer with DAP and no active GDAP relationship. {_CACHED}",
            labels=_PER_CUSTOMER),
        GaugeMetricFamily(
            "partnercenter_dap_customer_last_signin_timestamp_seconds",
            "Unix time of the last partner sign-in to a customer with DAP (lastSignInDateTime); 0 when "
            f"no partner ever signed in. {_CACHED}",
            labels=_PER_CUSTOMER),
        GaugeMetricFamily(
            "partnercenter_dap_customer_start_timestamp_seconds",
            f"Unix time at which the customer's DAP relationship was established (startDateTime). {_CACHED}",
            labels=_PER_CUSTOMER),
        GaugeMetricFamily(
            "partnercenter_dap_customer_global_admin_signins",
            "Partner sign-ins with the Global Administrator role to a customer with DAP in the last "
            f"day (globalAdminSignInCount). {_CACHED}",
            labels=_PER_CUSTOMER),
        GaugeMetricFamily(
            "partnercenter_dap_customers_inactive",
            "Customers with DAP and no partner sign-in for more than threshold_days days before the "
            "current UTC date (or never, with DAP older than that), by whether an active GDAP "
            f"relationship covers them (gdap). {_CACHED}", labels=["tenant", "threshold_days", "gdap"]),
    ]


def add_migration(families: Sequence[GaugeMetricFamily], name: str, views: Sequence[TenantSnapshot],
                  *, buckets: ThresholdBuckets, thresholds: Sequence[int]) -> None:
    """Add one tenant's GDAP and DAP-customer samples; the join needs both collectors' data."""
    (by_status, end_time, expiring, global_admin, gdap_customers, dap_enabled, without_count,
     without, last_signin, start, ga_signins, inactive) = families
    gdap = data_of(views, GdapRelationships)
    if gdap is not None:
        for status, count in gdap.by_status().items():
            by_status.add_metric([name, status], count)
        with_access = gdap.with_access()
        for r in with_access:
            if r.end_time is not None:
                end_time.add_metric([name, r.id, r.display_name, r.customer_id, r.customer_name,
                                     _bool(r.auto_extend), _bool(r.global_admin)], r.end_time)
        for days in EXPIRY_WINDOWS_DAYS:
            expiring.add_metric([name, str(days)], gdap.expiring_without_auto_extend(days))
        global_admin.add_metric([name], sum(1 for r in with_access if r.global_admin))
        gdap_customers.add_metric([name], len(gdap.customers_with_access()))
    dap = data_of(views, DapCustomers)
    if dap is not None:
        dap_enabled.add_metric([name], len(dap.customers))
        for customer in dap.customers:
            who = [name, customer.id, customer.name]
            last_signin.add_metric(who, customer.last_signin or 0)
            if customer.start_time is not None:
                start.add_metric(who, customer.start_time)
            ga_signins.add_metric(who, customer.global_admin_signins)
        if gdap is not None:
            missing = dap.without_gdap(gdap)
            without_count.add_metric([name], len(missing))
            for customer in missing:
                without.add_metric([name, customer.id, customer.name], 1)
            for threshold, (covered, uncovered) in dap.inactive_by_coverage(gdap, buckets,
                                                                            thresholds).items():
                inactive.add_metric([name, str(threshold), "true"], covered)
                inactive.add_metric([name, str(threshold), "false"], uncovered)


def _bool(value: bool) -> str:
    return "true" if value else "false"


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def reference_render(snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int],
                     poll_interval: float, version: str = __version__) -> bytes:
    """The exposition as prometheus_client renders metric_families: what render() must equal."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metric_families(snapshot, today=today, thresholds=thresholds,
                                                poll_interval=poll_interval, version=version)))
    return bytes(generate_latest(registry))


# Each family's HELP and TYPE lines, taken from metric_families: names and help are written once.
_HEADERS: tuple[bytes, ...] = tuple(
    f"# HELP {f.name}{'_total' if f.type == 'counter' else ''} {f.documentation}\n"
    f"# TYPE {f.name}{'_total' if f.type == 'counter' else ''} {f.type}\n".encode()
    for f in metric_families(Snapshot(), today=dt.date(2000, 1, 1), thresholds=(), poll_interval=0))


def _go_string(value: float) -> str:
    """A value as prometheus_client writes it (Go's float formatting)."""
    return str(_go_float(value))  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=65536)
def _count_text(value: int) -> str:
    return _go_string(value)


def _number(value: float) -> str:
    # Counts repeat a lot, so their text is remembered; timestamps and durations hardly repeat.
    return _count_text(value) if type(value) is int else _go_string(value)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# Most tenants run dap_statistics only: building eight empty families for each would cost more
# than the rest of their lines.
_NO_MIGRATION = ("",) * len(migration_families())


def _family_lines(family: Metric) -> str:
    """A family's samples as prometheus_client writes them: labels sorted by name."""
    lines = []
    for sample in family.samples:
        labels = ",".join([f'{key}="{_label(value)}"' for key, value in sorted(sample.labels.items())])
        lines.append(f"{sample.name}{{{labels}}} {_number(sample.value)}\n")
    return "".join(lines)


def _tenant_lines(name: str, views: Sequence[TenantSnapshot], *, today: dt.date,
                  buckets: ThresholdBuckets, thresholds: Sequence[int],
                  poll_interval: float) -> tuple[bytes, ...]:
    """One tenant's samples of each family (except build_info), in metric_families' order."""
    t = f'tenant="{_label(name)}"'
    num = _number
    customers = established = inactive = over = ""
    stats = data_of(views, DapStatistics)
    if stats is not None:
        customers = f"partnercenter_dap_customers{{{t}}} {num(stats.total_customers)}\n"
        established = "".join([
            f'partnercenter_dap_established_relationships{{date="{day.isoformat()}",{t}}} {num(n)}\n'
            for day, n in stats.established.items()])
        per_bucket: dict[int, int] = {}
        lines = []
        for day, n in stats.inactive.items():
            bucket = buckets(day)
            per_bucket[bucket] = per_bucket.get(bucket, 0) + n
            lines.append(f'partnercenter_dap_inactive_customers{{inactive_over_days="{bucket}",'
                         f'last_signin_date="{day.isoformat()}",{t}}} {num(n)}\n')
        inactive = "".join(lines)
        # Past a threshold means in its bucket or in the bucket of a larger one.
        over = "".join([
            f'partnercenter_dap_inactive_customers_over_threshold{{{t},threshold_days="{threshold}"}} '
            f"{num(sum(n for b, n in per_bucket.items() if b >= threshold > 0))}\n"
            for threshold in thresholds])
    migration = _NO_MIGRATION
    if any(isinstance(view.stats, (GdapRelationships, DapCustomers)) for view in views):
        families = migration_families()
        add_migration(families, name, views, buckets=buckets, thresholds=thresholds)
        migration = tuple(map(_family_lines, families))
    health = [_health_lines(view, t, poll_interval) for view in views]
    return tuple(text.encode() for text in (
        customers, established, inactive, over, *migration,
        *(health[0] if len(health) == 1 else ("".join(parts) for parts in zip(*health, strict=True)))))


def _health_lines(view: TenantSnapshot, t: str, poll_interval: float) -> tuple[str, ...]:
    """One collector's poll health samples, a string per family."""
    num = _number
    c = f'collector="{view.collector}"'
    ct = f"{c},{t}"
    success = f"partnercenter_exporter_poll_success{{{ct}}} {num(1 if view.last_poll_success else 0)}\n"
    last_success = "" if view.last_success_time is None else (
        f"partnercenter_exporter_last_success_timestamp_seconds{{{ct}}} {num(view.last_success_time)}\n")
    duration = "" if view.last_duration is None else (
        f"partnercenter_exporter_poll_duration_seconds{{{ct}}} {num(view.last_duration)}\n")
    interval = f"partnercenter_exporter_poll_interval_seconds{{{ct}}} {num(poll_interval)}\n"
    last_error = "".join([
        f'partnercenter_exporter_last_poll_error{{{c},reason="{reason}",{t}}} '
        f"{num(1 if view.last_error_reason == reason else 0)}\n" for reason in REASONS])
    errors = "".join([
        f'partnercenter_exporter_poll_errors_total{{{c},reason="{reason}",{t}}} '
        f"{num(view.errors_total.get(reason, 0))}\n" for reason in REASONS])
    requests = "".join([
        f'partnercenter_exporter_api_requests_total{{code="{_label(code)}",{ct}}} {num(count)}\n'
        for code, count in sorted(view.api_requests_total.items())])
    skipped = f"partnercenter_exporter_skipped_entries_total{{{ct}}} {num(view.skipped_entries_total)}\n"
    expiry = "" if view.token_expires_at is None else (
        f"partnercenter_exporter_token_expiry_timestamp_seconds{{{ct}}} {num(view.token_expires_at)}\n")
    return (success, last_success, duration, interval, last_error, errors, requests, skipped, expiry)


class Renderer:
    """Renders snapshots to the text exposition, byte for byte what reference_render gives.

    Each tenant's lines are kept, so a publish after one tenant's poll renders that tenant only
    and joins the others' bytes: with hundreds of tenants a poll round stays cheap.
    """

    def __init__(self, version: str = __version__) -> None:
        self._build = (f'partnercenter_exporter_build_info{{version="{_label(version)}"}} 1.0\n').encode()
        self._kept: dict[str, tuple[tuple[TenantSnapshot, ...], tuple[object, ...], tuple[bytes, ...]]] = {}

    def render(self, snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int],
               poll_interval: float) -> list[bytes]:
        """The exposition in pieces, in order: family headers and each tenant's lines."""
        settings = (today, tuple(thresholds), poll_interval)
        buckets = ThresholdBuckets(thresholds, today)
        kept: dict[str, tuple[tuple[TenantSnapshot, ...], tuple[object, ...], tuple[bytes, ...]]] = {}
        per_tenant = []
        for name, views in snapshot.by_tenant():
            previous = self._kept.get(name)
            if (previous is not None and previous[1] == settings and len(previous[0]) == len(views)
                    and all(a is b for a, b in zip(previous[0], views, strict=True))):
                lines = previous[2]
            else:
                lines = _tenant_lines(name, views, today=today, buckets=buckets, thresholds=thresholds,
                                      poll_interval=poll_interval)
            kept[name] = (views, settings, lines)
            per_tenant.append(lines)
        self._kept = kept
        pieces: list[bytes] = []
        for index, header in enumerate(_HEADERS[:-2]):
            pieces.append(header)
            pieces.extend(lines[index] for lines in per_tenant)
        pieces.append(_HEADERS[-2])
        pieces.append("".join(f'partnercenter_exporter_internal_errors_total{{stage="{stage}"}} '
                              f"{_count_text(snapshot.internal_errors.get(stage, 0))}\n"
                              for stage in INTERNAL_STAGES).encode())
        pieces.append(_HEADERS[-1])
        pieces.append(self._build)
        return [piece for piece in pieces if piece]


def render(snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int], poll_interval: float,
           version: str = __version__) -> bytes:
    """The text exposition (format 0.0.4) of one snapshot."""
    return b"".join(Renderer(version).render(snapshot, today=today, thresholds=thresholds,
                                             poll_interval=poll_interval))


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


def gzip_pieces(pieces: Sequence[bytes], level: int = 6) -> bytes:
    """gzip the pieces as one stream, without joining them first."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: with the gzip header and trailer
    return b"".join([*(compressor.compress(piece) for piece in pieces), compressor.flush()])


@dataclass(frozen=True)
class Exposition:
    """Bodies served as they are; rendered once per poll, never per scrape."""

    segments: tuple[bytes, ...]  # the text body, in order; see segments()
    gzip_body: bytes
    snapshot: Snapshot
    day: dt.date

    @property
    def body(self) -> bytes:
        """The text body in one piece: a copy when it is large, so the server sends segments."""
        return self.segments[0] if len(self.segments) == 1 else b"".join(self.segments)


class Publisher:
    """Renders each new snapshot once and swaps the result in for the HTTP server to serve."""

    def __init__(self, thresholds: Sequence[int], *, poll_interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._thresholds = tuple(thresholds)
        self._poll_interval = poll_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._renderer = Renderer()
        self.current = self._render(Snapshot())

    @property
    def thresholds(self) -> tuple[int, ...]:
        return self._thresholds

    def _render(self, snapshot: Snapshot) -> Exposition:
        day = utc_date(self._clock())
        pieces = self._renderer.render(snapshot, today=day, thresholds=self._thresholds,
                                       poll_interval=self._poll_interval)
        return Exposition(segments=segments(pieces), gzip_body=gzip_pieces(pieces), snapshot=snapshot,
                          day=day)

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.current = self._render(snapshot)

    def reconfigure(self, thresholds: Sequence[int], *, poll_interval: float) -> None:
        """New thresholds or interval from a reloaded config, applied to the current snapshot."""
        with self._lock:
            self._thresholds = tuple(thresholds)
            self._poll_interval = poll_interval
            self.current = self._render(self.current.snapshot)

    def refresh_if_new_day(self) -> bool:
        """Re-render when the UTC date moved on, so over-threshold counts age without a poll."""
        with self._lock:
            if utc_date(self._clock()) == self.current.day:
                return False
            self.current = self._render(self.current.snapshot)
            return True
