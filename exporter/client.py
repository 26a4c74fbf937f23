"""Typed Partner Center calls: fetch delegatedAdminStatistics and turn it into DapStatistics."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from exporter.model import DapStatistics, PollError, utc_date

log = logging.getLogger("exporter.client")

MAX_RETRY_AFTER = 24 * 3600.0
# getaddrinfo's messages on Linux (glibc, musl) and macOS.
_DNS_FAILURES = ("Name or service not known", "Temporary failure in name resolution",
                 "nodename nor servname", "No address associated with hostname", "Try again")
# Tolerates time-zone skew between Partner Center's dates and our UTC "today".
FUTURE_DATE_SLACK = dt.timedelta(days=1)


class TokenSource(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def expires_at(self) -> float | None: ...

    def get_token(self, *, force_refresh: bool = False) -> str: ...

    def wait_idle(self, timeout: float) -> bool: ...


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
    if skipped:
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        log.warning("skipped unparseable entries", extra={
            "skipped": len(skipped), "examples": "; ".join(skipped[:3]) + more})
    return DapStatistics(total_customers=total, established=established, inactive=inactive,
                         skipped_entries=len(skipped))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def describe_transport_error(err: httpx.TransportError, what: str) -> PollError:
    """Classify a network failure; the message names the host but never a URL query or body."""
    try:
        host = err.request.url.host
    except RuntimeError:
        host = "?"
    if isinstance(err, httpx.TimeoutException):
        return PollError("timeout", f"{what} at {host} did not answer in time ({type(err).__name__}); "
                                    f"raise request_timeout if it is just slow")
    detail = str(err).strip() or type(err).__name__
    if isinstance(err, httpx.ConnectError) and any(text in detail for text in _DNS_FAILURES):
        return PollError("connection", f"cannot resolve the host name {host} of {what} (DNS): check "
                                       f"the endpoint URL and this machine's DNS ({detail})")
    if isinstance(err, httpx.ConnectError):
        return PollError("connection", f"cannot reach {what} at {host}: {detail}")
    return PollError("connection", f"the connection to {what} at {host} broke off mid-request: {detail}")


class DapStatisticsClient:
    """Fetches delegatedAdminStatistics for one tenant and counts requests by status code."""

    def __init__(self, name: str, http: httpx.Client, url: str, tokens: TokenSource,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._http = http
        self._url = url
        self.tokens = tokens
        self._clock = clock
        self.requests_by_code: dict[str, int] = {}

    @property
    def token_expires_at(self) -> float | None:
        return self.tokens.expires_at

    def fetch(self) -> DapStatistics:
        response = self._get(self.tokens.get_token())
        if response.status_code == 401:
            # The identity platform may still think a revoked or rotated token is fine: one fresh try.
            response = self._get(self.tokens.get_token(force_refresh=True))
        return self._interpret(response)

    def _get(self, token: str) -> httpx.Response:
        try:
            response = self._http.get(self._url, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json"})
        except httpx.TransportError as err:
            raise describe_transport_error(err, "Partner Center") from None
        code = str(response.status_code)
        self.requests_by_code[code] = self.requests_by_code.get(code, 0) + 1
        return response

    def _interpret(self, response: httpx.Response) -> DapStatistics:
        status = response.status_code
        if status == 200:
            try:
                payload = json.loads(response.content)
            except ValueError:
                kind = response.headers.get("content-type", "unknown content type").split(";")[0]
                raise PollError("invalid_response",
                                f"Partner Center answered 200 with a body that is not JSON ({kind}, "
                                f"{len(response.content)} bytes); a proxy or outage page is likely") from None
            return parse_statistics(payload, utc_date(self._clock()))
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if status == 429:
            wait = f"; retrying after {retry_after:.0f}s" if retry_after is not None else ""
            raise PollError("throttled", f"Partner Center throttled the request (429){wait}",
                            retry_after=retry_after)
        if status in (401, 403):
            raise PollError("auth", self._refused_message(status))
        if status in (404, 410):
            raise PollError("not_found",
                            f"Partner Center answered {status} for delegatedAdminStatistics; Microsoft "
                            f"retires this API after the DAP deprecation, so check whether it still exists "
                            f"and that endpoints.dap_statistics_url is right")
        if status >= 500:
            raise PollError("server_error", f"Partner Center answered {status} {response.reason_phrase}",
                            retry_after=retry_after if status == 503 else None)
        raise PollError("client_error", f"Partner Center refused the request with {status} "
                                        f"{response.reason_phrase}")

    def _refused_message(self, status: int) -> str:
        if self.tokens.method == "client_credentials":
            return (f"Partner Center refused the app-only token ({status}): delegatedAdminStatistics "
                    f"accepts App+User tokens only; switch to method refresh_token and run login")
        if status == 403:
            return ("Partner Center refused access (403): the signed-in user needs an admin agent or "
                    "global admin role in the partner tenant, and the app needs the delegated "
                    "permission with admin consent")
        return ("Partner Center refused the access token (401) even after a fresh one; check that "
                "endpoints.scope is the Partner Customer Delegated Administration API and that the "
                "service principal 2832473f-ec63-45fb-976f-5d45a7d4bb91 exists in the partner tenant")
