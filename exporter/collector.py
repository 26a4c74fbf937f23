"""Snapshot to metric families and pre-rendered exposition bodies; no I/O, no upstream calls."""

from __future__ import annotations

import datetime as dt
import gzip
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from exporter import __version__
from exporter.model import REASONS, Snapshot, largest_threshold_past, utc_date

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CACHED = "Cached from the last successful poll."


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
        "1 if the last poll of the tenant succeeded, else 0.", labels=["tenant"])
    last_success = GaugeMetricFamily(
        "partnercenter_exporter_last_success_timestamp_seconds",
        "Unix time at which the last successful poll ended.", labels=["tenant"])
    duration = GaugeMetricFamily(
        "partnercenter_exporter_poll_duration_seconds",
        "Duration of the last poll, successful or not.", labels=["tenant"])
    last_error = GaugeMetricFamily(
        "partnercenter_exporter_last_poll_error",
        "1 for the reason the last poll failed with, 0 for the others; all 0 after a success.",
        labels=["tenant", "reason"])
    errors = CounterMetricFamily(
        "partnercenter_exporter_poll_errors",
        "Failed poll attempts by reason.", labels=["tenant", "reason"])
    requests = CounterMetricFamily(
        "partnercenter_exporter_api_requests",
        "HTTP requests to the Partner Center API by status code.", labels=["tenant", "code"])
    skipped = CounterMetricFamily(
        "partnercenter_exporter_skipped_entries",
        "Response entries skipped because they could not be parsed.", labels=["tenant"])
    interval = GaugeMetricFamily(
        "partnercenter_exporter_poll_interval_seconds",
        "The configured poll_interval; alert rules measure staleness in poll intervals.", labels=["tenant"])
    expiry = GaugeMetricFamily(
        "partnercenter_exporter_token_expiry_timestamp_seconds",
        "Unix time at which the access token in use expires.", labels=["tenant"])
    build = GaugeMetricFamily(
        "partnercenter_exporter_build_info", "Build information; always 1.", labels=["version"])
    build.add_metric([version], 1)

    for tenant in sorted(snapshot.tenants, key=lambda t: t.name):
        name = tenant.name
        stats = tenant.stats
        if stats is not None:
            customers.add_metric([name], stats.total_customers)
            for day, count in stats.established.items():
                established.add_metric([name, day.isoformat()], count)
            for day, count in stats.inactive.items():
                bucket = largest_threshold_past(day, thresholds, today)
                inactive.add_metric([name, day.isoformat(), str(bucket)], count)
            for threshold in thresholds:
                over.add_metric([name, str(threshold)], stats.inactive_over(threshold, today))
        success.add_metric([name], 1 if tenant.last_poll_success else 0)
        interval.add_metric([name], poll_interval)
        if tenant.last_success_time is not None:
            last_success.add_metric([name], tenant.last_success_time)
        if tenant.last_duration is not None:
            duration.add_metric([name], tenant.last_duration)
        for reason in REASONS:
            last_error.add_metric([name, reason], 1 if tenant.last_error_reason == reason else 0)
            errors.add_metric([name, reason], tenant.errors_total.get(reason, 0))
        for code, count in sorted(tenant.api_requests_total.items()):
            requests.add_metric([name, code], count)
        skipped.add_metric([name], tenant.skipped_entries_total)
        if tenant.token_expires_at is not None:
            expiry.add_metric([name], tenant.token_expires_at)
    return [customers, established, inactive, over, success, last_success, duration, interval,
            last_error, errors, requests, skipped, expiry, build]


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(snapshot: Snapshot, *, today: dt.date, thresholds: Sequence[int], poll_interval: float,
           version: str = __version__) -> bytes:
    """The text exposition (format 0.0.4) of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metric_families(snapshot, today=today, thresholds=thresholds,
                                                poll_interval=poll_interval, version=version)))
    return bytes(generate_latest(registry))


@dataclass(frozen=True)
class Exposition:
    """Bodies served as they are; rendered once per poll, never per scrape."""

    body: bytes
    gzip_body: bytes
    snapshot: Snapshot
    day: dt.date


class Publisher:
    """Renders each new snapshot once and swaps the result in for the HTTP server to serve."""

    def __init__(self, thresholds: Sequence[int], *, poll_interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._thresholds = tuple(thresholds)
        self._poll_interval = poll_interval
        self._clock = clock
        self._lock = threading.Lock()
        self.current = self._render(Snapshot())

    def _render(self, snapshot: Snapshot) -> Exposition:
        day = utc_date(self._clock())
        body = render(snapshot, today=day, thresholds=self._thresholds, poll_interval=self._poll_interval)
        return Exposition(body=body, gzip_body=gzip.compress(body, compresslevel=6, mtime=0),
                          snapshot=snapshot, day=day)

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
