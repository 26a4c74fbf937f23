"""Types shared along the pipeline: poll errors, each collector's parsed data, the immutable snapshot."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias, TypeVar

Reason = Literal["auth", "throttled", "timeout", "connection", "server_error", "client_error",
                 "invalid_response", "not_found"]
REASONS: tuple[Reason, ...] = ("auth", "throttled", "timeout", "connection", "server_error",
                               "client_error", "invalid_response", "not_found")
# Failures that may clear up by themselves soon, so a retry within the interval is worth it.
RETRYABLE_REASONS: frozenset[Reason] = frozenset(
    {"throttled", "timeout", "connection", "server_error", "invalid_response"})


# Where in the poll loop an unexpected error (a bug) can happen; each is counted, none ends the loop.
INTERNAL_STAGES = ("poll", "publish", "tick", "loop")

# JSON may carry a lone surrogate (`"\\ud800"`): valid JSON, a valid Python str, but not encodable
# as UTF-8, so it would break every render, log line or page it reached. A surrogate left in a
# str after json.loads is always a lone one (pairs are joined into one code point).
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Upstream text made safe to encode: each lone surrogate becomes U+FFFD."""
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


class PollError(Exception):
    """A failed poll: a short reason for metrics and a one-line, secret-free message for people."""

    def __init__(self, reason: Reason, message: str, *, retry_after: float | None = None) -> None:
        message = clean_text(message)  # it may quote upstream text; it goes to logs and pages
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message
        self.retry_after = retry_after


CollectorName = Literal["dap_statistics", "gdap_relationships", "dap_customers"]
# The order collectors appear in for a tenant: on /metrics, the status page and in the config.
COLLECTORS: tuple[CollectorName, ...] = ("dap_statistics", "gdap_relationships", "dap_customers")
DEFAULT_COLLECTORS: tuple[CollectorName, ...] = ("dap_statistics",)

# delegatedAdminRelationshipStatus as Graph v1.0 documents it. Graph sends unknownFutureValue for
# members added later, unless the client opts in to them, so this list is closed.
GDAP_STATUSES: tuple[str, ...] = (
    "activating", "active", "approvalPending", "approved", "created", "expired", "expiring",
    "terminated", "terminating", "terminationRequested", "unknownFutureValue")
# Statuses in which the relationship gives the partner access to the customer today. Graph v1.0's
# delegatedAdminRelationshipStatus: `expiring` means "the relationship has passed its expiration
# date" and is being deprovisioned, so only `active` grants access.
# https://learn.microsoft.com/graph/api/resources/delegatedadminrelationship
GDAP_ACCESS_STATUSES = frozenset({"active"})
GLOBAL_ADMIN_ROLE = "62e90394-69f5-4237-9190-012177145e10"
EXPIRY_WINDOWS_DAYS: tuple[int, ...] = (7, 30)


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
class GdapRelationship:
    """One Graph delegatedAdminRelationship, reduced to what the metrics need."""

    id: str
    display_name: str
    # The customer's tenant id, lower case, and name; "" while Graph names no customer yet, as it
    # may for `created` and `approvalPending` relationships.
    customer_id: str
    customer_name: str
    status: str  # one of GDAP_STATUSES
    end_time: float | None  # Unix time of endDateTime
    auto_extend: bool
    global_admin: bool
    reseller: bool = False  # a resellerDelegatedAdminRelationship (indirect reseller)

    @property
    def grants_access(self) -> bool:
        return self.status in GDAP_ACCESS_STATUSES and bool(self.customer_id)


@dataclass(frozen=True)
class GdapRelationships:
    """Every GDAP relationship of the partner, as one poll of Graph found them."""

    relationships: tuple[GdapRelationship, ...]
    fetched_at: float  # expiry windows are counted from here
    skipped_entries: int = 0

    def by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(GDAP_STATUSES, 0)
        for relationship in self.relationships:
            counts[relationship.status] += 1
        return counts

    def with_access(self) -> list[GdapRelationship]:
        return [r for r in self.relationships if r.grants_access]

    def customers_with_access(self) -> frozenset[str]:
        return frozenset(r.customer_id for r in self.relationships if r.grants_access)

    def expiring_without_auto_extend(self, within_days: int) -> int:
        """Relationships with access that end within that many days and will not be extended.

        An end already past is not "within N days": that relationship has ended.
        """
        limit = self.fetched_at + within_days * 86400
        return sum(1 for r in self.relationships if r.grants_access and not r.auto_extend
                   and r.end_time is not None and self.fetched_at < r.end_time <= limit)


@dataclass(frozen=True)
class DapCustomer:
    """One delegatedAdminCustomers entry with dapEnabled."""

    id: str  # the customer's tenant id, lower case
    name: str
    # Unix time of lastSignInDateTime; None when Partner Center says "no sign-ins to customer
    # tenant by partners" (null or empty).
    last_signin: float | None = None
    start_time: float | None = None  # startDateTime: when the DAP relationship was established
    global_admin_signins: int = 0  # globalAdminSignInCount: partner Global Admin sign-ins, last day

    @property
    def activity_day(self) -> dt.date | None:
        """The UTC date inactivity counts from: the last partner sign-in or, when no partner ever
        signed in, the DAP start (Microsoft removes DAP without a sign-in in 90 days); None if
        neither is known."""
        since = self.last_signin if self.last_signin is not None else self.start_time
        return None if since is None else utc_date(since)


@dataclass(frozen=True)
class DapCustomers:
    """The customers that delegatedAdminCustomers lists with dapEnabled."""

    customers: tuple[DapCustomer, ...]
    skipped_entries: int = 0

    def without_gdap(self, gdap: GdapRelationships) -> list[DapCustomer]:
        covered = gdap.customers_with_access()
        return [c for c in self.customers if c.id not in covered]

    def inactive_by_coverage(self, gdap: GdapRelationships, buckets: ThresholdBuckets,
                             thresholds: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Per threshold, DAP customers inactive over it: (with active GDAP, without).

        One pass: each customer's largest threshold passed comes from `buckets`, as for the
        statistics' dates; a customer of unknown age is past every threshold.
        """
        covered = gdap.customers_with_access()
        top = max(thresholds, default=0)
        per_bucket: dict[tuple[int, bool], int] = {}
        for customer in self.customers:
            day = customer.activity_day
            key = (top if day is None else buckets(day), customer.id in covered)
            per_bucket[key] = per_bucket.get(key, 0) + 1
        return {t: (sum(n for (b, cov), n in per_bucket.items() if cov and b >= t > 0),
                    sum(n for (b, cov), n in per_bucket.items() if not cov and b >= t > 0))
                for t in thresholds}


CollectorData: TypeAlias = DapStatistics | GdapRelationships | DapCustomers
_Data = TypeVar("_Data", DapStatistics, GdapRelationships, DapCustomers)


def data_of(views: Sequence[TenantSnapshot], kind: type[_Data]) -> _Data | None:
    """One tenant's last good data of one kind, if that collector runs and has succeeded once."""
    return next((v.stats for v in views if isinstance(v.stats, kind)), None)


@dataclass(frozen=True)
class TenantSnapshot:
    """What is known about one collector of one tenant after its latest poll.

    stats is the last good data; for dap_statistics a DapStatistics, and so on.
    """

    name: str
    collector: CollectorName = "dap_statistics"
    stats: CollectorData | None = None
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
    """One view per configured (tenant, collector)."""

    tenants: tuple[TenantSnapshot, ...] = ()
    # Unexpected errors in the exporter itself (a bug), by the poll-loop stage they happened in.
    internal_errors: Mapping[str, int] = field(default_factory=dict)

    def by_tenant(self) -> list[tuple[str, tuple[TenantSnapshot, ...]]]:
        """Each tenant's views, tenants by name and each tenant's collectors in COLLECTORS order."""
        grouped: dict[str, list[TenantSnapshot]] = {}
        for view in self.tenants:
            grouped.setdefault(view.name, []).append(view)
        return [(name, tuple(sorted(grouped[name], key=lambda v: COLLECTORS.index(v.collector))))
                for name in sorted(grouped)]

    @property
    def ready(self) -> bool:
        """True once there are tenants and every one has finished its first poll attempt."""
        return bool(self.tenants) and all(t.attempted for t in self.tenants)
