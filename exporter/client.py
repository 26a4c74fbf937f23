"""The shared HTTP part of every collector kind: ApiClient (authorised GETs, status handling,
request counts), bounded reads, Retry-After, transport errors, paging and field helpers."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from exporter.logs import REDACTOR
from exporter.model import PollError, clean_text
from exporter.transport import DEADLINE_PASSED, deadline

log = logging.getLogger("exporter.client")

MAX_RETRY_AFTER = 24 * 3600.0
# The largest response body read: a page of 300 customers or relationships is about 200 KiB, and
# statistics with 10,000 dates about 700 KiB.
MAX_RESPONSE_BYTES = 64 * 2**20
# getaddrinfo's messages on Linux (glibc, musl) and macOS.
_DNS_FAILURES = ("Name or service not known", "Temporary failure in name resolution",
                 "nodename nor servname", "No address associated with hostname", "Try again")


class TokenSource(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def expires_at(self) -> float | None: ...

    @property
    def store_pending(self) -> bool | None: ...

    @property
    def certificate_expires_at(self) -> float | None: ...

    def get_token(self, *, force_refresh: bool = False) -> str: ...

    def wait_idle(self, timeout: float) -> bool: ...

    def flush(self, timeout: float) -> None: ...


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
    """One request, the whole exchange (connect, TLS, head, body) within the client's read timeout
    (request_timeout, or the call's `timeout`) and the body within MAX_RESPONSE_BYTES; raises
    PollError past either, httpx.TransportError as httpx does.

    httpx's timeouts apply to each read, so an upstream (or a proxy) that trickles a byte at a
    time would hold a poll for ever (exporter.transport); a body is read into memory, so its size
    is capped.
    """
    limit = kwargs.get("timeout")
    read_timeout = limit if isinstance(limit, (int, float)) else http.timeout.read
    late = PollError("timeout", f"{api} did not send its whole answer within request_timeout "
                                f"({read_timeout or 0:g}s); raise request_timeout if it is just slow")
    end = None if read_timeout is None else monotonic() + read_timeout
    try:
        with deadline(read_timeout, monotonic), http.stream(method, url, **kwargs) as streamed:
            on_status(streamed.status_code)
            body = bytearray()
            for chunk in streamed.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise PollError("invalid_response", f"{api} sent more than {MAX_RESPONSE_BYTES:,} "
                                                        f"bytes for {resource}; refusing to read more")
                if end is not None and monotonic() > end:  # a transport without sockets (respx)
                    raise late
    except httpx.TimeoutException as err:
        if str(err) != DEADLINE_PASSED:
            raise
        raise late from None
    # The body is decoded already: the new response must not decode it again.
    headers = [(name, value) for name, value in streamed.headers.multi_items()
               if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(streamed.status_code, headers=headers, content=bytes(body),
                          request=streamed.request)


D = TypeVar("D")


class ApiClient(Generic[D]):
    """One collector's upstream for one tenant: authorised GETs, counted by status code.

    Subclasses say what to fetch (fetch) and how to read it; the status handling, the one
    retry on 401 and the request counts are shared.
    """

    collector: str  # the kind's name in the registry
    api: str = "Partner Center"  # who answers, in messages
    resource: str = ""  # the API's name, in messages
    url_setting: str = ""  # the config key of its URL, in messages
    # Microsoft retires this API after the DAP deprecation: a 404 or 410 is that, not an outage.
    retirable: bool = False

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
        self._origin = origin(url)
        self.requests_by_code: dict[str, int] = {}

    @property
    def token_expires_at(self) -> float | None:
        return self.tokens.expires_at

    @property
    def token_store_pending(self) -> bool | None:
        return self.tokens.store_pending

    @property
    def certificate_expires_at(self) -> float | None:
        return self.tokens.certificate_expires_at

    def fetch(self) -> D:
        raise NotImplementedError

    def _get_json(self, url: str, params: Mapping[str, str] | None = None) -> Any:
        """GET one document; a 401 gets one fresh token, any other failure raises PollError."""
        return self._call_json("GET", url, params=params)

    def _call_json(self, method: str, url: str, **kwargs: Any) -> Any:
        """One request and its JSON answer (params= or json= as httpx takes them), as _get_json."""
        response = self._send(method, url, self.tokens.get_token(), **kwargs)
        if response.status_code == 401 and not self._mfa_refused(response):
            # The identity platform may still think a revoked or rotated token is fine: one fresh try.
            # A refusal for missing MFA is not one of those: a refreshed token has no more MFA.
            response = self._send(method, url, self.tokens.get_token(force_refresh=True), **kwargs)
        if response.status_code != 200:
            raise self._error(response)
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json can read
            kind = response.headers.get("content-type", "unknown content type").split(";")[0]
            raise PollError("invalid_response",
                            f"{self.api} answered 200 with a body that is not JSON ({kind}, "
                            f"{len(response.content)} bytes); a proxy or outage page is likely") from None

    def _send(self, method: str, url: str, token: str, **kwargs: Any) -> httpx.Response:
        try:
            return read_bounded(self._http, method, url, api=self.api, resource=self.resource,
                                on_status=self._count, monotonic=self._monotonic,
                                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                                **kwargs)
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

    def _next_link(self, payload: Any, resource: str | None = None) -> str | None:
        """A page's @odata.nextLink, on the configured host only; resource names the list in messages."""
        link = payload.get("@odata.nextLink") if isinstance(payload, dict) else None
        if link is None:
            return None
        if not isinstance(link, str) or origin(link) != self._origin:
            # The bearer token goes with every page: never to a host other than the configured one.
            raise PollError("invalid_response", f"{resource or self.resource} pointed its next page away "
                                                f"from {self._origin}; refusing to send the token there")
        return link

    def _mfa_refused(self, response: httpx.Response) -> bool:
        """Partner Center's refusal of an App+User token without MFA, enforced since April 2026."""
        code, description = partner_center_error(response)
        return code == MFA_REQUIRED_CODE or "mfa" in description.lower() or (
            "multi-factor" in description.lower())

    def _not_found_message(self, status: int) -> str:
        return (f"{self.api} answered {status} for {self.resource}: Microsoft retires this API after "
                f"the DAP deprecation; drop {self.collector} from the tenant's collectors, or fix "
                f"{self.url_setting} if it was changed")

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
    """The code and message of a Partner Center error body, or empty strings.

    Two shapes answer from Partner Center's hosts: the REST API's `{"code", "description", "data",
    "source"}` (https://learn.microsoft.com/partner-center/developer/error-codes), and the OData
    `{"@odata.context": "...errorResponse", "error": {"code", "message"}}` that Microsoft's GDAP
    bulk-migration tool logged from the CustomerServiceAdminApi host. Both are read.
    """
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error = body.get("error")
    if isinstance(error, dict):
        code, text = error.get("code"), error.get("message")
    else:
        code, text = body.get("code"), body.get("description")
    code_text = str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else ""
    return (_one_line(code_text, 32), _one_line(text, MAX_UPSTREAM_TEXT)
            if isinstance(text, str) else "")


def _one_line(text: str, limit: int) -> str:
    return REDACTOR.shown(text, limit)


def _error_detail(code: str, description: str) -> str:
    """` [code: description]` for a message, or "" when the body said nothing."""
    text = ": ".join(part for part in (code, description) if part)
    return f" [{text}]" if text else ""


def log_skipped(skipped: list[str], what: str) -> None:
    if skipped:
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        log.warning("skipped unparseable entries", extra={
            "api": what, "skipped": len(skipped), "examples": "; ".join(skipped[:3]) + more})


E = TypeVar("E")


def drop_duplicates(entries: Sequence[E], key: Callable[[E], str]) -> tuple[list[E], int]:
    """Each entry once, as first listed (paging that shifted while it was read lists some twice, and
    one thing must be one series), and how many were dropped. An entry without a key is kept."""
    kept: dict[str, E] = {}
    for i, entry in enumerate(entries):
        kept.setdefault(key(entry) or f"#{i}", entry)
    return list(kept.values()), len(entries) - len(kept)


def log_duplicates(duplicates: int, what: str) -> None:
    """Entries listed twice (paging that shifted while it was read) were counted once: say so."""
    if duplicates:
        log.warning("entries listed more than once were counted once", extra={
            "api": what, "duplicates": duplicates})


# $top's largest value, for delegatedAdminCustomers and Graph's delegatedAdminRelationships alike.
PAGE_SIZE = 300
# A bound on pages per poll for lists that are small by nature (one relationship's assignments).
MAX_PAGES = 1000
# A list that grows with the partner (customers, relationships, contracts) is bounded by what it
# holds and how long it takes instead: 100,000 customers are 334 pages of 300, or 1,000 of 100.
MAX_LIST_ENTRIES = 500_000  # parsed, about 1 KB each: 500 MB at most
MAX_LIST_SECONDS = 1800.0
# A listing that failed after this long waits at least as long as it ran before it starts again.
LONG_LISTING_SECONDS = 60.0


class Listing:
    """One paged listing within MAX_LIST_ENTRIES and MAX_LIST_SECONDS (see docs/reliability.md)."""

    def __init__(self, resource: str, monotonic: Callable[[], float]) -> None:
        self._resource = resource
        self._monotonic = monotonic
        self._started = monotonic()

    def check(self, received: int) -> None:
        """After each page: stop past either bound."""
        if received > MAX_LIST_ENTRIES:
            raise PollError("invalid_response", f"{self._resource} listed more than {MAX_LIST_ENTRIES:,} "
                                                f"entries, the exporter's bound; stopped reading")
        if self._monotonic() - self._started > MAX_LIST_SECONDS:
            raise PollError("timeout", f"{self._resource} took more than {MAX_LIST_SECONDS / 60:.0f} "
                                       f"minutes to list, the exporter's bound; stopped reading")

    @contextlib.contextmanager
    def paced(self) -> Iterator[None]:
        """A long listing that fails is not started again sooner than it ran: a retry starts from the
        first page, so a quick one would spend the upstream's quota on the same pages again."""
        try:
            yield
        except PollError as err:
            ran = self._monotonic() - self._started
            if ran > LONG_LISTING_SECONDS:
                err.retry_after = max(err.retry_after or 0.0, ran)
            raise


def page_items(payload: Any, what: str) -> list[Any]:
    items = payload.get("value") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise PollError("invalid_response", f"expected a JSON object with a value list from {what}, "
                                            f"got {type(payload).__name__}")
    return items


def text_field(entry: dict[str, Any], *keys: str) -> str | None:
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


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


