"""What every Microsoft Graph collector shares: the Graph host and path, paging by @odata.nextLink,
Graph's throttling (429 with Retry-After) and its refusals, named by the permission each resource
needs.

Graph's error body is `{"error": {"code", "message", "innerError"}}`:
https://learn.microsoft.com/graph/errors
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from exporter.client import ApiClient, Listing, TokenSource, page_items
from exporter.model import PollError

log = logging.getLogger("exporter.client")

# A throttled page is asked again after Retry-After when that is this short, so one 429 does not
# throw away the pages read so far; a longer wait ends the poll and the poller waits instead.
MAX_INLINE_RETRY_AFTER = 30.0
MAX_INLINE_RETRIES = 3

D = TypeVar("D")


class GraphClient(ApiClient[D]):
    """One Graph resource under endpoints.graph_url, with the permission it needs."""

    api = "Microsoft Graph"
    url_setting = "endpoints.graph_url"
    path = ""  # the resource's path under the Graph host, like /v1.0/contracts
    permission = ""  # the Graph permission (delegated or application) that reads it
    # Who the signed-in user must be, for a delegated 403; "" when the permission is enough.
    user_needs = ""

    def __init__(self, name: str, http: httpx.Client, graph_url: str, tokens: TokenSource,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(name, http, graph_url.rstrip("/") + self.path, tokens, clock, sleep)

    def _pages(self, params: dict[str, str] | None) -> Iterator[Any]:
        """Every entry of the resource's list, following @odata.nextLink within the bounds of a
        Listing (entries and time, not pages), a page at a time: a caller parses each page before
        the next is read, so the raw JSON of one page is held, not of the whole list."""
        listing = Listing(self.resource, self._monotonic)
        received = 0
        url: str | None = self._url
        with listing.paced():
            while url is not None:
                payload = self._page_with_retries(functools.partial(self._get_json, url, params))
                items = page_items(payload, self.resource)
                received += len(items)
                listing.check(received)
                yield from items
                url, params = self._next_link(payload), None

    def _page_with_retries(self, request: Callable[[], Any]) -> Any:
        """One Graph request, asked again while Graph throttles it with a short Retry-After."""
        for attempt in range(MAX_INLINE_RETRIES + 1):
            try:
                return request()
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
        code = graph_error_code(response)
        detail = f" [{code}]" if code else ""
        if status == 401:
            return (f"Microsoft Graph refused the access token (401){detail}; check endpoints.graph_scope "
                    f"(https://graph.microsoft.com/.default)")
        if self.tokens.method == "client_credentials":
            return (f"Microsoft Graph refused access (403){detail}: grant the app the application "
                    f"permission {self.permission} with admin consent")
        user = f"; {self.user_needs}" if self.user_needs else ""
        return (f"Microsoft Graph refused access (403){detail}: grant the app the delegated permission "
                f"{self.permission} with admin consent{user}")


def graph_error_code(response: httpx.Response) -> str | None:
    """error.code of a Graph error body, when it is a short token: never free text from upstream."""
    try:
        error = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) < 64 else None
