"""The dap_statistics collector: Partner Center's delegatedAdminStatistics, DAP customer counts by date.

https://learn.microsoft.com/partner-center/developer/get-delegated-admin-relation-statistics

`inactiveDapCount` is "the count of customers who have had sign-ins with the last date of sign-in":
a customer no partner ever signed in to (DAP monitoring data starts on 7 December 2021, and the DAP
FAQ's "days inactive" may be blank) is in none of its dates, so totalDapCustomerCount can exceed
their sum. Those customers count as inactive past every threshold: nothing says otherwise.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from exporter.client import ApiClient, log_skipped
from exporter.collectors.kind import Context, Kind
from exporter.families import CACHED, Family, Samples
from exporter.model import PollError, utc_date

NAME = "dap_statistics"
# Tolerates time-zone skew between Partner Center's dates and our UTC "today".
FUTURE_DATE_SLACK = dt.timedelta(days=1)


def _frozen(mapping: Mapping[dt.date, int]) -> Mapping[dt.date, int]:
    return MappingProxyType(dict(sorted(mapping.items())))


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

    @property
    def without_signin_date(self) -> int:
        """Customers with DAP in none of inactiveDapCount's dates: no partner sign-in on record."""
        return max(0, self.total_customers - sum(self.inactive.values()))


def parse_date(text: str) -> dt.date:
    """Parse `M/D/YYYY` (the documented form) or an ISO 8601 date or timestamp."""
    value = text.strip()
    if "/" in value:
        month, day, year = value.split(" ")[0].split("/")
        if len(year) != 4:
            raise ValueError(f"expected M/D/YYYY, got {text!r}")
        return dt.date(int(year), int(month), int(day))
    try:
        return dt.datetime.fromisoformat(value).date()
    except ValueError:
        raise ValueError(f"expected M/D/YYYY or ISO 8601, got {text!r}") from None


# Dates repeat across entries, tenants and polls; parsing each text once keeps large payloads cheap.
parse_date_cached = functools.lru_cache(maxsize=100_000)(parse_date)


def _count_list(payload: dict[str, Any], key: str, today: dt.date,
                skipped: list[str]) -> dict[dt.date, int]:
    entries = payload.get(key)
    if entries is None:
        return {}
    if not isinstance(entries, list):
        skipped.append(f"{key} is {type(entries).__name__}, not a list")
        return {}
    latest = today + FUTURE_DATE_SLACK
    counts: dict[dt.date, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            skipped.append(f"{key}[{i}]: not an object")
            continue
        raw_date, count = entry.get("date"), entry.get("count")
        if not isinstance(raw_date, str):
            skipped.append(f"{key}[{i}].date: missing or not a string")
            continue
        try:
            day = parse_date_cached(raw_date)
        except ValueError as err:
            skipped.append(f"{key}[{i}].date: {err}")
            continue
        if day > latest:
            skipped.append(f"{key}[{i}].date: {day.isoformat()} is in the future")
            continue
        if type(count) is not int or count < 0:
            skipped.append(f"{key}[{i}].count: must be a whole number >= 0, got {count!r}")
            continue
        counts[day] = counts.get(day, 0) + count
    return counts


def parse_statistics(payload: Any, today: dt.date) -> DapStatistics:
    """Turn a response body into DapStatistics; bad entries are skipped, a bad document raises."""
    if not isinstance(payload, dict):
        raise PollError("invalid_response",
                        f"expected a JSON object from delegatedAdminStatistics, got {type(payload).__name__}")
    total = payload.get("totalDapCustomerCount")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise PollError("invalid_response",
                        f"totalDapCustomerCount is missing or not a whole number >= 0 (got {total!r})")
    skipped: list[str] = []
    established = _count_list(payload, "establishedDapCount", today, skipped)
    inactive = _count_list(payload, "inactiveDapCount", today, skipped)
    log_skipped(skipped, "delegatedAdminStatistics")
    return DapStatistics(total_customers=total, established=established, inactive=inactive,
                         skipped_entries=len(skipped))


class DapStatisticsClient(ApiClient[DapStatistics]):
    """delegatedAdminStatistics: DAP customer counts by date."""

    collector = NAME
    resource = "delegatedAdminStatistics"
    url_setting = "endpoints.dap_statistics_url"
    retirable = True

    def fetch(self) -> DapStatistics:
        return parse_statistics(self._get_json(self._url), utc_date(self._clock()))


CUSTOMERS = Family(
    "partnercenter_dap_customers", "gauge",
    f"Customers with a DAP relationship (totalDapCustomerCount). {CACHED}", ["tenant"])
ESTABLISHED = Family(
    "partnercenter_dap_established_relationships", "gauge",
    f"DAP relationships established on the date in the date label. {CACHED}", ["tenant", "date"])
INACTIVE = Family(
    "partnercenter_dap_inactive_customers", "gauge",
    "Customers whose last partner sign-in was on last_signin_date; inactive_over_days is the largest "
    f"configured threshold that date is more than that many days before today, or 0. {CACHED}",
    ["tenant", "last_signin_date", "inactive_over_days"])
OVER_THRESHOLD = Family(
    "partnercenter_dap_inactive_customers_over_threshold", "gauge",
    "Customers whose last partner sign-in is more than threshold_days days before the current "
    f"UTC date, and those with no sign-in date, which count past every threshold. {CACHED}",
    ["tenant", "threshold_days"])
WITHOUT_SIGNIN_DATE = Family(
    "partnercenter_dap_customers_without_signin_date", "gauge",
    "Customers with DAP that no partner has signed in to since monitoring began: "
    f"totalDapCustomerCount minus the customers in inactiveDapCount's dates, never below 0. {CACHED}",
    ["tenant"])


def samples(out: Samples, tenant: str, data: DapStatistics, ctx: Context) -> None:
    out.add(CUSTOMERS, (tenant,), data.total_customers)
    out.extend(ESTABLISHED, [((tenant, day.isoformat()), count) for day, count in data.established.items()])
    per_bucket: dict[int, int] = {}
    rows = []
    for day, count in data.inactive.items():
        bucket = ctx.buckets(day)
        per_bucket[bucket] = per_bucket.get(bucket, 0) + count
        rows.append(((tenant, day.isoformat(), str(bucket)), count))
    out.extend(INACTIVE, rows)
    unknown = data.without_signin_date
    for threshold, count in ctx.buckets.totals(per_bucket).items():
        out.add(OVER_THRESHOLD, (tenant, str(threshold)), count + unknown)
    out.add(WITHOUT_SIGNIN_DATE, (tenant,), unknown)


def figures(data: DapStatistics, ctx: Context) -> str:
    top = max(ctx.thresholds)
    unknown = data.without_signin_date
    return (f"{data.total_customers} DAP customers, "
            f"{ctx.buckets.past(data.inactive)[top] + unknown} inactive &gt; {top} days"
            + (f" ({unknown} without a sign-in date)" if unknown else ""))


KIND: Kind[DapStatistics] = Kind(
    name=NAME,
    build=lambda s: DapStatisticsClient(s.tenant, s.http, s.endpoints.dap_statistics_url, s.tokens),
    families=(CUSTOMERS, ESTABLISHED, INACTIVE, OVER_THRESHOLD, WITHOUT_SIGNIN_DATE), samples=samples,
    figures=figures,
    summary=lambda data: {"dap_customers": data.total_customers})
