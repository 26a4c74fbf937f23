"""Types shared along the pipeline: poll errors, parsed statistics and the immutable snapshot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Reason = Literal["auth", "throttled", "timeout", "connection", "server_error", "client_error",
                 "invalid_response", "not_found"]
REASONS: tuple[Reason, ...] = ("auth", "throttled", "timeout", "connection", "server_error",
                               "client_error", "invalid_response", "not_found")
# Failures that may clear up by themselves soon, so a retry within the interval is worth it.
RETRYABLE_REASONS: frozenset[Reason] = frozenset(
    {"throttled", "timeout", "connection", "server_error", "invalid_response"})


class PollError(Exception):
    """A failed poll: a short reason for metrics and a one-line, secret-free message for people."""

    def __init__(self, reason: Reason, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message
        self.retry_after = retry_after


def utc_date(timestamp: float) -> dt.date:
    """The UTC calendar date of a Unix time: the "today" that day-based counts are relative to."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


def _frozen(mapping: Mapping[dt.date, int]) -> Mapping[dt.date, int]:
    return MappingProxyType(dict(sorted(mapping.items())))


def cutoff(threshold_days: int, today: dt.date) -> dt.date:
    """The earliest date that is not more than threshold_days days before today."""
    return today - dt.timedelta(days=threshold_days)


def is_past(day: dt.date, threshold_days: int, today: dt.date) -> bool:
    """A sign-in on `day` is more than threshold_days days before today (exactly N days is not past N)."""
    return day < cutoff(threshold_days, today)


class ThresholdBuckets:
    """For each day, the largest threshold it is past (0 if none): is_past, worked out once per day."""

    def __init__(self, thresholds: Sequence[int], today: dt.date) -> None:
        # Earliest cutoff first, which is the largest threshold: the first one a day is before wins.
        self._cutoffs = sorted((cutoff(t, today), t) for t in set(thresholds))

    def __call__(self, day: dt.date) -> int:
        for limit, threshold in self._cutoffs:
            if day < limit:
                return threshold
        return 0


@dataclass(frozen=True)
class DapStatistics:
    """One parsed delegatedAdminStatistics response."""

    total_customers: int
    established: Mapping[dt.date, int] = field(default_factory=dict)
    inactive: Mapping[dt.date, int] = field(default_factory=dict)
    skipped_entries: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "established", _frozen(self.established))
        object.__setattr__(self, "inactive", _frozen(self.inactive))

    def inactive_over(self, threshold_days: int, today: dt.date) -> int:
        """Customers whose last sign-in is more than threshold_days days before today."""
        limit = cutoff(threshold_days, today)
        return sum(count for day, count in self.inactive.items() if day < limit)


@dataclass(frozen=True)
class TenantSnapshot:
    """What is known about one tenant after its latest poll; stats is the last good data."""

    name: str
    stats: DapStatistics | None = None
    attempted: bool = False
    last_poll_success: bool = False
    last_success_time: float | None = None
    last_duration: float | None = None
    last_error_reason: Reason | None = None
    last_error_message: str | None = None
    errors_total: Mapping[str, int] = field(default_factory=dict)
    api_requests_total: Mapping[str, int] = field(default_factory=dict)
    skipped_entries_total: int = 0
    token_expires_at: float | None = None


@dataclass(frozen=True)
class Snapshot:
    tenants: tuple[TenantSnapshot, ...] = ()

    @property
    def ready(self) -> bool:
        """True once there are tenants and every one has finished its first poll attempt."""
        return bool(self.tenants) and all(t.attempted for t in self.tenants)
