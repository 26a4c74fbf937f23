"""Partner Center client: payload parsing, status classification, Retry-After and the 401 retry."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging

import httpx
import pytest
import respx

from exporter.client import parse_retry_after
from exporter.collectors.dap_statistics import DapStatisticsClient, parse_date, parse_statistics
from exporter.model import PollError
from tests.conftest import API_URL
from tests.helpers.samples import FakeTokens

TODAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC).timestamp()


def client(tokens: FakeTokens | None = None) -> DapStatisticsClient:
    return DapStatisticsClient("contoso", httpx.Client(), API_URL, tokens or FakeTokens(),
                               clock=lambda: NOW)


PAYLOAD = {"id": "p", "partnerTenantId": "p", "totalDapCustomerCount": 200,
           "establishedDapCount": [{"date": "6/18/2021", "count": 1}, {"date": "2/18/2022", "count": 1}],
           "inactiveDapCount": [{"date": "2/18/2022", "count": 1}, {"date": "2/24/2022", "count": 1}]}


@pytest.mark.parametrize(("text", "expected"), [
    ("6/18/2021", dt.date(2021, 6, 18)),
    ("12/1/2025", dt.date(2025, 12, 1)),
    ("2/29/2024", dt.date(2024, 2, 29)),
    ("6/18/2021 12:00:00 AM", dt.date(2021, 6, 18)),
    ("2021-06-18", dt.date(2021, 6, 18)),
    ("2021-06-18T23:59:59Z", dt.date(2021, 6, 18)),
    ("2021-06-18T10:00:00.1234567+02:00", dt.date(2021, 6, 18)),
])
def test_parse_date_accepts_documented_and_iso_forms(text: str, expected: dt.date) -> None:
    """M/D/YYYY (with or without a time) and ISO 8601 dates parse to the calendar date."""
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", ["18/6/2021", "2/30/2022", "6/18/21", "yesterday", "", "2021-13-01"])
def test_parse_date_rejects_impossible_dates(text: str) -> None:
    """Day-first, impossible, two-digit-year and free-text dates are refused."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message is covered by the skipping test
        parse_date(text)


def test_documented_example_parses() -> None:
    """Microsoft's documented response example parses into the expected counts."""
    stats = parse_statistics(PAYLOAD, TODAY)
    assert stats.total_customers == 200
    assert dict(stats.established) == {dt.date(2021, 6, 18): 1, dt.date(2022, 2, 18): 1}
    assert dict(stats.inactive) == {dt.date(2022, 2, 18): 1, dt.date(2022, 2, 24): 1}
    assert stats.skipped_entries == 0


def test_duplicate_dates_are_summed_across_formats() -> None:
    """The same day given twice, even in two formats, is one label with the summed count."""
    stats = parse_statistics({"totalDapCustomerCount": 5, "inactiveDapCount": [
        {"date": "3/1/2026", "count": 2}, {"date": "2026-03-01", "count": 3}]}, TODAY)
    assert dict(stats.inactive) == {dt.date(2026, 3, 1): 5}


def test_missing_and_null_arrays_are_empty() -> None:
    """Absent or null count lists mean no entries, not an error."""
    stats = parse_statistics({"totalDapCustomerCount": 0, "establishedDapCount": None}, TODAY)
    assert dict(stats.established) == {}
    assert dict(stats.inactive) == {}


def test_bad_entries_are_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Unparseable entries are dropped and counted; the good ones in the same payload are kept."""
    payload = {"totalDapCustomerCount": 9, "inactiveDapCount": [
        {"date": "1/2/2026", "count": 4},
        {"date": "not a date", "count": 1},
        {"date": "1/3/2026", "count": "7"},
        {"date": "1/4/2026", "count": -1},
        {"date": "1/5/2026", "count": True},
        {"count": 2},
        "junk",
        {"date": "1/1/2030", "count": 1},
    ]}
    with caplog.at_level(logging.WARNING):
        stats = parse_statistics(payload, TODAY)
    assert dict(stats.inactive) == {dt.date(2026, 1, 2): 4}
    assert stats.skipped_entries == 7
    record = caplog.records[-1]
    assert record.skipped == 7  # type: ignore[attr-defined]
    assert "inactiveDapCount[1].date" in record.examples  # type: ignore[attr-defined]


def test_a_list_that_is_not_a_list_is_skipped() -> None:
    """A count field of the wrong type is one skipped entry, not a failed poll."""
    stats = parse_statistics({"totalDapCustomerCount": 1, "establishedDapCount": {"date": "x"}}, TODAY)
    assert stats.skipped_entries == 1


@pytest.mark.parametrize("payload", [[], "text", {"totalDapCustomerCount": "200"},
                                     {"totalDapCustomerCount": -1}, {}])
def test_unusable_document_is_invalid_response(payload: object) -> None:
    """A body without a usable totalDapCustomerCount fails the poll as invalid_response."""
    with pytest.raises(PollError) as caught:
        parse_statistics(payload, TODAY)
    assert caught.value.reason == "invalid_response"


def test_retry_after_seconds_and_http_date() -> None:
    """Retry-After is read as delta-seconds or as an HTTP date relative to now."""
    later = email.utils.formatdate(NOW + 120, usegmt=True)
    assert parse_retry_after("30", NOW) == 30
    assert parse_retry_after(later, NOW) == pytest.approx(120)
    assert parse_retry_after(email.utils.formatdate(NOW - 60, usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("999999999", NOW) == 86400


@respx.mock
def test_fetch_sends_bearer_and_counts_status_codes() -> None:
    """A fetch sends the bearer token and counts the response code."""
    route = respx.get(API_URL).mock(return_value=httpx.Response(200, json=PAYLOAD))
    pc = client()
    assert pc.fetch().total_customers == 200
    assert route.calls.last.request.headers["Authorization"] == "Bearer token-1"
    assert pc.requests_by_code == {"200": 1}


@respx.mock
def test_401_forces_one_fresh_token_and_retries_once() -> None:
    """A 401 gets exactly one retry with a force-refreshed token."""
    route = respx.get(API_URL).mock(side_effect=[httpx.Response(401), httpx.Response(200, json=PAYLOAD)])
    tokens = FakeTokens()
    pc = client(tokens)
    assert pc.fetch().total_customers == 200
    assert tokens.calls == [False, True]
    assert route.calls[1].request.headers["Authorization"] == "Bearer token-2"
    assert pc.requests_by_code == {"401": 1, "200": 1}


@respx.mock
def test_second_401_is_auth_error_without_more_retries() -> None:
    """Two 401s in a row end the poll with reason auth; no third request is made."""
    route = respx.get(API_URL).mock(return_value=httpx.Response(401))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == "auth"
    assert route.call_count == 2


@respx.mock
def test_app_only_token_refusal_says_app_plus_user_is_needed() -> None:
    """With client_credentials, a refusal explains that the API takes App+User tokens only."""
    respx.get(API_URL).mock(return_value=httpx.Response(401))
    with pytest.raises(PollError) as caught:
        client(FakeTokens("client_credentials")).fetch()
    assert "App+User tokens only" in caught.value.message
    assert "refresh_token" in caught.value.message


@pytest.mark.parametrize(("status", "reason"), [
    (400, "client_error"), (403, "auth"), (404, "not_found"), (410, "not_found"),
    (409, "client_error"), (429, "throttled"), (500, "server_error"), (502, "server_error"),
    (503, "server_error"), (504, "server_error"),
])
@respx.mock
def test_status_codes_map_to_reasons(status: int, reason: str) -> None:
    """Each HTTP status maps to its documented poll error reason."""
    respx.get(API_URL).mock(return_value=httpx.Response(status))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == reason


@respx.mock
def test_not_found_mentions_retirement() -> None:
    """404/410 tell the operator that Microsoft retires this API after the DAP deprecation."""
    respx.get(API_URL).mock(return_value=httpx.Response(410))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert "retires this API" in caught.value.message


@pytest.mark.parametrize("status", [429, 503])
@respx.mock
def test_retry_after_is_carried_on_429_and_503(status: int) -> None:
    """429 and 503 carry the server's Retry-After to the poller."""
    respx.get(API_URL).mock(return_value=httpx.Response(status, headers={"Retry-After": "42"}))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.retry_after == 42


@respx.mock
def test_html_page_with_200_is_invalid_response() -> None:
    """An HTML error page served with 200 is invalid_response, naming the content type."""
    respx.get(API_URL).mock(return_value=httpx.Response(
        200, text="<html>Service Unavailable</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == "invalid_response"
    assert "text/html" in caught.value.message


@respx.mock
def test_truncated_json_is_invalid_response() -> None:
    """A body cut off mid-document is invalid_response."""
    respx.get(API_URL).mock(return_value=httpx.Response(200, text='{"totalDapCustomerCount": 2, "inac'))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == "invalid_response"


@pytest.mark.parametrize(("error", "reason"), [
    (httpx.ConnectTimeout("timed out"), "timeout"),
    (httpx.ReadTimeout("timed out"), "timeout"),
    (httpx.ConnectError("[Errno 111] Connection refused"), "connection"),
    (httpx.ConnectError("[Errno -2] Name or service not known"), "connection"),
    (httpx.RemoteProtocolError("peer closed connection"), "connection"),
])
@respx.mock
def test_network_errors_map_to_reasons(error: Exception, reason: str) -> None:
    """Timeouts, refused connections, DNS failures and resets get their own reasons."""
    respx.get(API_URL).mock(side_effect=error)
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == reason
    assert "pc.test.invalid" in caught.value.message
