"""Types shared along the pipeline: poll errors, days past a threshold, per-source views, the
immutable snapshot. Nothing here knows a collector kind."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

Reason = Literal["auth", "throttled", "timeout", "connection", "server_error", "client_error",
                 "invalid_response", "not_found"]
REASONS: tuple[Reason, ...] = get_args(Reason)
# Failures that may clear up by themselves soon, so a retry within the interval is worth it.
RETRYABLE_REASONS: frozenset[Reason] = frozenset(
    {"throttled", "timeout", "connection", "server_error", "invalid_response"})


# Where in the poll loop an unexpected error (a bug) can happen; each is counted, none ends the loop.
INTERNAL_STAGES = ("poll", "publish", "tick", "loop")

# JSON may carry a lone surrogate (`"\\ud800"`): valid JSON, a valid Python str, but not encodable
# as UTF-8, so it would break every render, log line or page it reached. A surrogate left in a
# str after json.loads is always a lone one (pairs are joined into one code point).
# Control characters (C0, DEL, C1) in a customer's display name (its own admin sets it) would reach
# label values, terminals that curl /metrics, and alert texts: ESC can rewrite a terminal.
_UNSAFE = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BREAKS = re.compile("[\t\n\r]")


def clean_text(text: str) -> str:
    """Upstream text made safe to encode and to show: a tab, newline or carriage return becomes a
    space; any other control character (C0, DEL, C1) and each lone surrogate becomes U+FFFD."""
    if text.isascii() and text.isprintable():
        return text
    return _UNSAFE.sub("\ufffd", _BREAKS.sub(" ", text))


def escape_controls(text: str) -> str:
    """Text for a terminal: each control character written out as \\xNN, so upstream text or a paste
    can neither move the cursor, retitle the window nor fake a line."""
    return "".join(ch if ch.isprintable() or ch == " " else
                   (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}") for ch in text)


class PollError(Exception):
    """A failed poll: a short reason for metrics and a one-line, secret-free message for people."""

    def __init__(self, reason: Reason, message: str, *, retry_after: float | None = None) -> None:
        message = clean_text(message)  # it may quote upstream text; it goes to logs and pages
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message
        self.retry_after = retry_after


def utc_date(timestamp: float) -> dt.date:
    """The UTC calendar date of a Unix time: the "today" that day-based counts are relative to."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


def cutoff(threshold_days: int, today: dt.date) -> dt.date:
    """The earliest date that is not more than threshold_days days before today."""
    return today - dt.timedelta(days=threshold_days)


class ThresholdBuckets:
    """The one place that says what "past N days" means.

    A day is past threshold N when it is before cutoff(N, today): exactly N days ago is not past
    N. Each day's bucket is the largest threshold it is past (0 if none); it is past every
    threshold up to its bucket. The colour label, the over-threshold counts and the status page
    all go through here.
    """

    def __init__(self, thresholds: Sequence[int], today: dt.date) -> None:
        self.thresholds = tuple(thresholds)
        # Earliest cutoff first, which is the largest threshold: the first one a day is before wins.
        self._cutoffs = sorted((cutoff(t, today), t) for t in set(thresholds))

    def __call__(self, day: dt.date) -> int:
        for limit, threshold in self._cutoffs:
            if day < limit:
                return threshold
        return 0

    def totals(self, per_bucket: Mapping[int, int]) -> dict[int, int]:
        """Per configured threshold, the sum of the counts in the buckets past it."""
        return {t: sum(n for bucket, n in per_bucket.items() if bucket >= t > 0) for t in self.thresholds}

    def past(self, counts: Mapping[dt.date, int]) -> dict[int, int]:
        """Per configured threshold, the sum of the counts of the days past it."""
        per_bucket: dict[int, int] = {}
        for day, count in counts.items():
            bucket = self(day)
            per_bucket[bucket] = per_bucket.get(bucket, 0) + count
        return self.totals(per_bucket)


class SourceData(Protocol):
    """What the pipeline needs of any collector kind's parsed data."""

    @property
    def skipped_entries(self) -> int: ...


@dataclass(frozen=True)
class SourceView:
    """What is known about one source, a collector of a tenant, after its latest poll.

    data is the last good data, of the collector kind's own type.
    """

    name: str  # the tenant's name
    collector: str  # the collector kind's name in the registry
    data: SourceData | None = None
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
    # For a token cache in Key Vault: whether the newest refresh token is not saved there yet.
    token_store_pending: bool | None = None
    certificate_expires_at: float | None = None  # the first of its client certificates to expire
    # For an API Microsoft retires (the DAP ones): whether its last answer was 404 or 410. None for
    # other APIs, and until an answer says either way.
    api_retired: bool | None = None


@dataclass(frozen=True)
class Snapshot:
    """One view per configured (tenant, collector)."""

    views: tuple[SourceView, ...] = ()
    # Unexpected errors in the exporter itself (a bug), by the poll-loop stage they happened in.
    internal_errors: Mapping[str, int] = field(default_factory=dict)

    def by_tenant(self, order: Callable[[str], int] = lambda collector: 0,
                  ) -> list[tuple[str, tuple[SourceView, ...]]]:
        """Each tenant's views, tenants by name and each tenant's collectors by `order`."""
        grouped: dict[str, list[SourceView]] = {}
        for view in self.views:
            grouped.setdefault(view.name, []).append(view)
        return [(name, tuple(sorted(grouped[name], key=lambda v: order(v.collector))))
                for name in sorted(grouped)]

    @property
    def ready(self) -> bool:
        """True once there are tenants and every one has finished its first poll attempt."""
        return bool(self.views) and all(v.attempted for v in self.views)
