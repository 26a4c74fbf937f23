"""Typed upstream calls, one client per collector: Partner Center's DAP APIs and Graph's GDAP list."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from exporter.model import (
    GDAP_STATUSES,
    GLOBAL_ADMIN_ROLE,
    CollectorData,
    CollectorName,
    DapCustomer,
    DapCustomers,
    DapStatistics,
    GdapRelationship,
    GdapRelationships,
    PollError,
    clean_text,
    utc_date,
)

log = logging.getLogger("exporter.client")

MAX_RETRY_AFTER = 24 * 3600.0
# The largest response body read: a page of 300 customers or relationships is about 200 KiB, and
# statistics with 10,000 dates about 700 KiB.
MAX_RESPONSE_BYTES = 64 * 2**20
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
    _log_skipped(skipped, "delegatedAdminStatistics")
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


def read_bounded(http: httpx.Client, method: str, url: str, *, api: str, resource: str,
                 on_status: Callable[[int], None] = lambda status: None,
                 monotonic: Callable[[], float] = time.monotonic, **kwargs: Any) -> httpx.Response:
    """One request, its answer read whole within the client's read timeout (request_timeout) and
    MAX_RESPONSE_BYTES; raises PollError past either, httpx.TransportError as httpx does.

    httpx's timeouts apply to each read, so an upstream (or a proxy) that trickles a byte at a
    time would hold a poll for ever; and a body is read into memory, so its size is capped.
    """
    read_timeout = http.timeout.read
    deadline = None if read_timeout is None else monotonic() + read_timeout
    with http.stream(method, url, **kwargs) as streamed:
        on_status(streamed.status_code)
        body = bytearray()
        for chunk in streamed.iter_bytes():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise PollError("invalid_response", f"{api} sent more than {MAX_RESPONSE_BYTES:,} "
                                                    f"bytes for {resource}; refusing to read more")
            if deadline is not None and monotonic() > deadline:
                raise PollError("timeout", f"{api} did not send its whole answer within "
                                           f"request_timeout ({read_timeout:g}s); raise request_timeout "
                                           f"if it is just slow")
    # The body is decoded already: the new response must not decode it again.
    headers = [(name, value) for name, value in streamed.headers.multi_items()
               if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(streamed.status_code, headers=headers, content=bytes(body),
                          request=streamed.request)


class ApiClient:
    """One collector's upstream for one tenant: authorised GETs, counted by status code.

    Subclasses say what to fetch (fetch) and how to read it; the status handling, the one
    retry on 401 and the request counts are shared.
    """

    collector: CollectorName
    api: str = "Partner Center"  # who answers, in messages
    resource: str = ""  # the API's name, in messages
    url_setting: str = ""  # the config key of its URL, in messages

    def __init__(self, name: str, http: httpx.Client, url: str, tokens: TokenSource,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._http = http
        self._monotonic = monotonic
        self._url = url
        self.tokens = tokens
        self._clock = clock
        self._sleep = sleep
        self._origin = _origin(url)
        self.requests_by_code: dict[str, int] = {}

    @property
    def token_expires_at(self) -> float | None:
        return self.tokens.expires_at

    def fetch(self) -> CollectorData:
        raise NotImplementedError

    def _get_json(self, url: str, params: Mapping[str, str] | None = None) -> Any:
        """GET one document; a 401 gets one fresh token, any other failure raises PollError."""
        response = self._get(url, params, self.tokens.get_token())
        if response.status_code == 401 and not self._mfa_refused(response):
            # The identity platform may still think a revoked or rotated token is fine: one fresh try.
            # A refusal for missing MFA is not one of those: a refreshed token has no more MFA.
            response = self._get(url, params, self.tokens.get_token(force_refresh=True))
        if response.status_code != 200:
            raise self._error(response)
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json can read
            kind = response.headers.get("content-type", "unknown content type").split(";")[0]
            raise PollError("invalid_response",
                            f"{self.api} answered 200 with a body that is not JSON ({kind}, "
                            f"{len(response.content)} bytes); a proxy or outage page is likely") from None

    def _get(self, url: str, params: Mapping[str, str] | None, token: str) -> httpx.Response:
        try:
            return read_bounded(self._http, "GET", url, api=self.api, resource=self.resource,
                                on_status=self._count, monotonic=self._monotonic, params=params,
                                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        except httpx.TransportError as err:
            raise describe_transport_error(err, self.api) from None

    def _count(self, status: int) -> None:
        code = str(status)
        self.requests_by_code[code] = self.requests_by_code.get(code, 0) + 1

    def _error(self, response: httpx.Response) -> PollError:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if status == 429:
            wait = f"; retrying after {retry_after:.0f}s" if retry_after is not None else ""
            return PollError("throttled", f"{self.api} throttled the request (429){wait}",
                             retry_after=retry_after)
        if status in (401, 403):
            return PollError("auth", self._refused_message(status, response))
        if status in (404, 410):
            return PollError("not_found", self._not_found_message(status))
        detail = _error_detail(*partner_center_error(response)) if self.api == "Partner Center" else ""
        if status >= 500:
            return PollError("server_error", f"{self.api} answered {status} {response.reason_phrase}"
                                             f"{detail}",
                             retry_after=retry_after if status == 503 else None)
        return PollError("client_error", f"{self.api} refused the request with {status} "
                                         f"{response.reason_phrase}{detail}")

    def _next_link(self, payload: Any) -> str | None:
        link = payload.get("@odata.nextLink") if isinstance(payload, dict) else None
        if link is None:
            return None
        if not isinstance(link, str) or _origin(link) != self._origin:
            # The bearer token goes with every page: never to a host other than the configured one.
            raise PollError("invalid_response", f"{self.resource} pointed its next page away from "
                                                f"{self._origin}; refusing to send the token there")
        return link

    def _mfa_refused(self, response: httpx.Response) -> bool:
        """Partner Center's refusal of an App+User token without MFA, enforced since April 2026."""
        code, description = partner_center_error(response)
        return code == MFA_REQUIRED_CODE or "mfa" in description.lower() or (
            "multi-factor" in description.lower())

    def _not_found_message(self, status: int) -> str:
        return (f"{self.api} answered {status} for {self.resource}; Microsoft retires this API after "
                f"the DAP deprecation, so check whether it still exists and that {self.url_setting} "
                f"is right")

    def _refused_message(self, status: int, response: httpx.Response) -> str:
        detail = _error_detail(*partner_center_error(response))
        if status == 401 and self._mfa_refused(response):
            how = {"client_credentials": "app-only tokens", "username_password": "username_password "
                   "(ROPC)"}.get(self.tokens.method)
            cannot = f"; {how} cannot satisfy it" if how else ""
            return (f"Partner Center refused the token (401): it lacks MFA, which Partner Center "
                    f"requires for App+User calls since April 2026; run `partnercenter-exporter login` "
                    f"(an interactive sign-in with MFA) for this tenant{cannot}{detail}")
        if self.tokens.method == "client_credentials":
            return (f"Partner Center refused the app-only token ({status}): {self.resource} "
                    f"accepts App+User tokens only; switch to method refresh_token and run login{detail}")
        if status == 403:
            return ("Partner Center refused access (403): the signed-in user needs an admin agent or "
                    "global admin role in the partner tenant, and the app needs the delegated "
                    f"permission with admin consent{detail}")
        return ("Partner Center refused the access token (401) even after a fresh one; check that "
                "endpoints.scope is the Partner Customer Delegated Administration API and that the "
                "service principal 2832473f-ec63-45fb-976f-5d45a7d4bb91 exists in the partner "
                f"tenant{detail}")


# Partner Center's code for an App+User token without MFA (enforced since 1 April 2026).
MFA_REQUIRED_CODE = "900421"
# Upstream text goes into messages and logs: short, one line, no control characters.
MAX_UPSTREAM_TEXT = 160


def partner_center_error(response: httpx.Response) -> tuple[str, str]:
    """The `code` and `description` of a Partner Center error body, or empty strings.

    Partner Center REST errors are `{"code", "description", "data", "source"}`:
    https://learn.microsoft.com/partner-center/developer/error-codes
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    code, description = body.get("code"), body.get("description")
    code_text = str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else ""
    return (_one_line(code_text, 32), _one_line(description, MAX_UPSTREAM_TEXT)
            if isinstance(description, str) else "")


def _one_line(text: str, limit: int) -> str:
    # Cut first: a huge upstream description costs no more than a short one.
    # Lone surrogates are not printable, so they go too.
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text[: limit * 2]).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _error_detail(code: str, description: str) -> str:
    """` [code: description]` for a message, or "" when the body said nothing."""
    text = ": ".join(part for part in (code, description) if part)
    return f" [{text}]" if text else ""


def _log_skipped(skipped: list[str], what: str) -> None:
    if skipped:
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        log.warning("skipped unparseable entries", extra={
            "api": what, "skipped": len(skipped), "examples": "; ".join(skipped[:3]) + more})


class DapStatisticsClient(ApiClient):
    """delegatedAdminStatistics: DAP customer counts by date."""

    collector: CollectorName = "dap_statistics"
    resource = "delegatedAdminStatistics"
    url_setting = "endpoints.dap_statistics_url"

    def fetch(self) -> DapStatistics:
        return parse_statistics(self._get_json(self._url), utc_date(self._clock()))


# $top's largest value, for delegatedAdminCustomers and Graph's delegatedAdminRelationships alike.
PAGE_SIZE = 300
# A bound on pages per poll, so an upstream that keeps pointing onwards cannot loop us forever.
MAX_PAGES = 1000


def _page_items(payload: Any, what: str) -> list[Any]:
    items = payload.get("value") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise PollError("invalid_response", f"expected a JSON object with a value list from {what}, "
                                            f"got {type(payload).__name__}")
    return items


def _text(entry: dict[str, Any], *keys: str) -> str | None:
    """The first non-blank string among keys, cleaned here so no later step can fail on it."""
    for key in keys:
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            return clean_text(value.strip())
    return None


# Counts from upstream are exported as floats: larger ones would not be exact (or not render at all).
MAX_COUNT = 2**53


def parse_time(value: Any) -> float | None:
    """Unix time of an ISO 8601 timestamp (Partner Center sends 7 fractional digits); None if absent.

    Raises ValueError for text that is not a timestamp.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    moment = dt.datetime.fromisoformat(value.strip())
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def parse_dap_customer(entry: Any, where: str, skipped: list[str]) -> DapCustomer | None:
    """One delegatedAdminCustomers entry; None (and a note in skipped) if it is not usable or not DAP.

    Fields as "List the delegated admin customers of a partner" documents them:
    https://learn.microsoft.com/partner-center/developer/list-delegated-admin-customers
    """
    if not isinstance(entry, dict):
        skipped.append(f"{where}: not an object")
        return None
    enabled = entry.get("dapEnabled")
    if not isinstance(enabled, bool):
        skipped.append(f"{where}.dapEnabled: missing or not true/false")
        return None
    customer_id = _text(entry, "customerTenantId", "tenantId", "id")
    if customer_id is None:
        skipped.append(f"{where}.customerTenantId: missing")
        return None
    if not enabled:
        return None
    times: dict[str, float | None] = {}
    for key in ("lastSignInDateTime", "startDateTime"):
        try:
            times[key] = parse_time(entry.get(key))
        except ValueError:
            skipped.append(f"{where}.{key}: not an ISO 8601 time ({str(entry.get(key))[:40]!r})")
            return None
    signins = entry.get("globalAdminSignInCount")
    name = _text(entry, "organizationDisplayName", "displayName", "companyName") or customer_id
    return DapCustomer(id=customer_id.lower(), name=name, last_signin=times["lastSignInDateTime"],
                       start_time=times["startDateTime"],
                       global_admin_signins=signins if type(signins) is int and 0 <= signins < MAX_COUNT
                       else 0)


class DapCustomersClient(ApiClient):
    """delegatedAdminCustomers: every customer, and whether it has DAP.

    Pages by @odata.nextLink when Partner Center sends one (Microsoft's GDAP bulk-migration tool
    follows it); otherwise by $skip, advanced by the entries actually received, until an empty
    page, so a server page smaller than $top loses nothing.
    """

    collector: CollectorName = "dap_customers"
    resource = "delegatedAdminCustomers"
    url_setting = "endpoints.dap_customers_url"

    def fetch(self) -> DapCustomers:
        customers: dict[str, DapCustomer] = {}
        seen: set[str] = set()
        skipped: list[str] = []
        received = 0
        url = self._url
        params: dict[str, str] | None = {"$top": str(PAGE_SIZE)}
        for _ in range(MAX_PAGES):
            payload = self._get_json(url, params)
            items = _page_items(payload, self.resource)
            if not items:
                break
            ids = {str(e.get("customerTenantId") or e.get("id") or "").lower()
                   for e in items if isinstance(e, dict)} - {""}
            if ids and ids <= seen:
                # The same customers again: the server ignores $skip or its link goes round in a
                # circle. Reading on would repeat them up to MAX_PAGES times.
                raise PollError("invalid_response", f"{self.resource} sent customers it had already "
                                                    f"listed after {received} entries (it ignores $skip "
                                                    f"or its nextLink loops); stopped reading")
            seen |= ids
            for entry in items:
                customer = parse_dap_customer(entry, f"value[{received}]", skipped)
                received += 1
                if customer is not None:
                    customers.setdefault(customer.id, customer)
            link = self._next_link(payload)
            if link is not None:
                url, params = link, None
            elif url == self._url:
                params = {"$top": str(PAGE_SIZE), "$skip": str(received)}
            else:
                break  # a nextLink chain that ends: the list is complete
        else:
            raise PollError("invalid_response", f"{self.resource} had more than {MAX_PAGES} pages; "
                                                f"stopped reading")
        _log_skipped(skipped, self.resource)
        return DapCustomers(tuple(sorted(customers.values(), key=lambda c: (c.name.lower(), c.id))),
                            skipped_entries=len(skipped))


RELATIONSHIPS_PATH = "/v1.0/tenantRelationships/delegatedAdminRelationships"
# A throttled page is asked again after Retry-After when that is this short, so one 429 does not
# throw away the pages read so far; a longer wait ends the poll and the poller waits instead.
MAX_INLINE_RETRY_AFTER = 30.0
MAX_INLINE_RETRIES = 3


def _is_zero_duration(value: str) -> bool:
    # ISO 8601 durations: PT0S and P0D mean no auto-extension; P180D is the only other documented value.
    return not any(ch in "123456789" for ch in value)


RESELLER_TYPE = "#microsoft.graph.resellerDelegatedAdminRelationship"


def parse_relationship(entry: Any, where: str, skipped: list[str]) -> GdapRelationship | None:
    """One delegatedAdminRelationship; None (and a note in skipped) if it cannot be used.

    `customer` is "configured either by the partner at the time the relationship is created or by
    the system after the customer approves", so a `created` or `approvalPending` relationship may
    have none, or null: it still counts. Reseller relationships come in the same list.
    https://learn.microsoft.com/graph/api/resources/delegatedadminrelationship
    https://learn.microsoft.com/graph/api/resources/resellerdelegatedadminrelationship
    """
    if not isinstance(entry, dict):
        skipped.append(f"{where}: not an object")
        return None
    customer = entry.get("customer")
    if customer is not None and not isinstance(customer, dict):
        skipped.append(f"{where}.customer: not an object")
        return None
    customer = customer or {}
    customer_id = _text(customer, "tenantId") or ""
    status = entry.get("status")
    if not isinstance(status, str) or status not in GDAP_STATUSES:
        status = "unknownFutureValue"
    try:
        end_time = parse_time(entry.get("endDateTime"))
    except ValueError:
        skipped.append(f"{where}.endDateTime: not an ISO 8601 time ({str(entry.get('endDateTime'))[:40]!r})")
        return None
    extend = entry.get("autoExtendDuration")
    access = entry.get("accessDetails")
    roles = access.get("unifiedRoles") if isinstance(access, dict) else None
    role_ids = {str(r.get("roleDefinitionId", "")).lower() for r in roles or [] if isinstance(r, dict)}
    relationship_id = _text(entry, "id") or ""
    return GdapRelationship(
        id=relationship_id, display_name=_text(entry, "displayName") or relationship_id,
        customer_id=customer_id.lower(), customer_name=_text(customer, "displayName") or customer_id,
        status=status, end_time=end_time,
        auto_extend=isinstance(extend, str) and not _is_zero_duration(extend),
        global_admin=GLOBAL_ADMIN_ROLE in role_ids, reseller=entry.get("@odata.type") == RESELLER_TYPE)


NONE_VISIBLE_HINT = (
    "Microsoft Graph listed no GDAP relationships: if the partner has any, the signed-in user is not "
    "in the partner's Admin Agents group (Graph then answers with an empty list, not an error); add "
    "the user to Admin Agents and run login again, or read Graph app-only with graph_auth")


class GdapRelationshipsClient(ApiClient):
    """Microsoft Graph delegatedAdminRelationships, following @odata.nextLink."""

    collector: CollectorName = "gdap_relationships"
    api = "Microsoft Graph"
    resource = "delegatedAdminRelationships"
    url_setting = "endpoints.graph_url"

    def __init__(self, name: str, http: httpx.Client, graph_url: str, tokens: TokenSource,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(name, http, graph_url.rstrip("/") + RELATIONSHIPS_PATH, tokens, clock, sleep)

    def fetch(self) -> GdapRelationships:
        relationships: list[GdapRelationship] = []
        skipped: list[str] = []
        url: str | None = self._url
        params: dict[str, str] | None = {"$top": str(PAGE_SIZE)}
        pages = 0
        while url is not None:
            if pages == MAX_PAGES:
                raise PollError("invalid_response", f"{self.resource} had more than {MAX_PAGES} pages; "
                                                    f"stopped reading")
            payload = self._get_page(url, params)
            pages += 1
            for entry in _page_items(payload, self.resource):
                relationship = parse_relationship(entry, f"value[{len(relationships) + len(skipped)}]",
                                                  skipped)
                if relationship is not None:
                    relationships.append(relationship)
            url, params = self._next_link(payload), None
        _log_skipped(skipped, self.resource)
        if not relationships and not skipped and self.tokens.method != "client_credentials":
            # Graph answers 200 with an empty list, not 403, when the signed-in user is not in the
            # partner's Admin Agents group (by design, microsoft-graph-docs-contrib issue 8921).
            log.warning(NONE_VISIBLE_HINT, extra={"tenant": self.name})
        return GdapRelationships(tuple(relationships), fetched_at=self._clock(),
                                 skipped_entries=len(skipped))

    def _get_page(self, url: str, params: dict[str, str] | None) -> Any:
        for attempt in range(MAX_INLINE_RETRIES + 1):
            try:
                return self._get_json(url, params)
            except PollError as err:
                wait = err.retry_after
                if (err.reason != "throttled" or attempt == MAX_INLINE_RETRIES or wait is None
                        or wait > MAX_INLINE_RETRY_AFTER):
                    raise
                log.info("Graph throttled a page; waiting as Retry-After asks",
                         extra={"tenant": self.name, "retry_after": f"{wait:.0f}s"})
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _not_found_message(self, status: int) -> str:
        return (f"Microsoft Graph answered {status} for {self.resource}; check endpoints.graph_url "
                f"(the Graph host, like https://graph.microsoft.com)")

    def _refused_message(self, status: int, response: httpx.Response) -> str:
        code = _graph_error_code(response)
        detail = f" [{code}]" if code else ""
        if status == 401:
            return (f"Microsoft Graph refused the access token (401){detail}; check endpoints.graph_scope "
                    f"(https://graph.microsoft.com/.default)")
        if self.tokens.method == "client_credentials":
            return (f"Microsoft Graph refused access (403){detail}: grant the app the application "
                    f"permission DelegatedAdminRelationship.Read.All with admin consent")
        return (f"Microsoft Graph refused access (403){detail}: grant the app the delegated permission "
                f"DelegatedAdminRelationship.Read.All with admin consent; the signed-in user needs a "
                f"role that can read GDAP relationships, such as Admin agent")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _graph_error_code(response: httpx.Response) -> str | None:
    try:
        error = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    # A short, known-shape token only: never echo free text from upstream into our messages.
    return code if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) < 64 else None
