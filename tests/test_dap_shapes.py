"""The DAP APIs on Microsoft's real shapes: customers without a sign-in date, the OData error body of
the CustomerServiceAdminApi host, and a retired API as a state rather than an outage."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable

import httpx
import pytest
import respx

from exporter.client import ApiClient
from exporter.collectors.dap_customers import DapCustomersClient
from exporter.collectors.dap_statistics import DapStatistics, DapStatisticsClient, parse_statistics
from exporter.collectors.gdap_relationships import GdapRelationshipsClient
from exporter.exposition import render
from exporter.http.routes import landing_page
from exporter.model import PollError, Snapshot, SourceView
from exporter.poller import Poller
from tests.conftest import API_URL
from tests.helpers.samples import FakeTokens

TODAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp()
CUSTOMERS = "https://pc.test.invalid/CustomerServiceAdminApi/Web/v1/delegatedAdminCustomers"
GRAPH = "https://graph.test.invalid"
ERROR_CONTEXT = ("https://pc.test.invalid/CustomerServiceAdminApi/Web/v1/$metadata"
                 "#microsoft.partner.customerserviceadministration.errorResponse")


def odata_error(code: str, message: str) -> dict[str, object]:
    """The OData error shape Microsoft's GDAP bulk-migration tool logged from this host (issue 13 of
    its repository)."""
    return {"@odata.context": ERROR_CONTEXT, "error": {"code": code, "message": message}}


def stats_client(tokens: FakeTokens | None = None) -> DapStatisticsClient:
    return DapStatisticsClient("contoso", httpx.Client(), API_URL, tokens or FakeTokens(), clock=lambda: NOW)


def customers_client(tokens: FakeTokens | None = None) -> DapCustomersClient:
    return DapCustomersClient("contoso", httpx.Client(), CUSTOMERS, tokens or FakeTokens(), clock=lambda: NOW)


def day(days_ago: int) -> str:
    moment = TODAY - dt.timedelta(days=days_ago)
    return f"{moment.month}/{moment.day}/{moment.year}"


def snapshot_of(stats: DapStatistics) -> Snapshot:
    return Snapshot((SourceView("contoso", "dap_statistics", data=stats, attempted=True,
                                last_poll_success=True, last_success_time=NOW),))


def values(body: str, name: str) -> dict[str, float]:
    return {labels: float(value) for labels, value in
            re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", body, re.MULTILINE)}


def test_customers_in_no_inactive_date_count_past_every_threshold() -> None:
    """totalDapCustomerCount 10 with 6 customers in inactiveDapCount's dates: 4 without a sign-in
    date, and 4 more than the dates alone in every threshold (get-delegated-admin-relation-statistics:
    inactiveDapCount counts "customers who have had sign-ins")."""
    payload = {"totalDapCustomerCount": 10, "establishedDapCount": [{"date": day(900), "count": 10}],
               "inactiveDapCount": [{"date": day(10), "count": 2}, {"date": day(45), "count": 2},
                                    {"date": day(100), "count": 2}]}
    stats = parse_statistics(payload, TODAY)
    assert stats.without_signin_date == 4
    body = render(snapshot_of(stats), today=TODAY, thresholds=(30, 60, 90), poll_interval=900).decode()
    assert values(body, "partnercenter_dap_customers_without_signin_date") == {'tenant="contoso"': 4}
    # By date alone: 4 past 30 days (45 and 100), 2 past 60 and 2 past 90.
    assert values(body, "partnercenter_dap_inactive_customers_over_threshold") == {
        'tenant="contoso",threshold_days="30"': 4 + 4,
        'tenant="contoso",threshold_days="60"': 2 + 4,
        'tenant="contoso",threshold_days="90"': 2 + 4}


def test_more_dated_customers_than_the_total_never_give_a_negative_count() -> None:
    """Counts that disagree the other way (more in the dates than the total) give 0, not below."""
    stats = DapStatistics(total_customers=3, inactive={TODAY - dt.timedelta(days=5): 7})
    assert stats.without_signin_date == 0


MFA_BODIES = {
    "odata": odata_error("900421", "Multi-factor authentication is required for this request."),
    # Partner Center REST's shape (learn.microsoft.com/partner-center/developer/error-codes).
    "rest": {"code": 900421, "description": "MFA is required for this request.", "data": [],
             "source": "PartnerCenter"},
}


@pytest.mark.parametrize("shape", sorted(MFA_BODIES))
@pytest.mark.parametrize("make", [stats_client, customers_client], ids=["statistics", "customers"])
@respx.mock
def test_a_401_with_the_mfa_code_is_auth_with_the_mfa_message_and_one_request(
        make: Callable[[FakeTokens], ApiClient[object]], shape: str) -> None:
    """A 401 with code 900421, in the OData shape or REST's, from either API, is reason auth with the
    MFA message (run login), after exactly one request: a fresh token has no more MFA, so none is
    fetched."""
    route = respx.get(url__startswith=API_URL if make is stats_client else CUSTOMERS).respond(
        401, json=MFA_BODIES[shape])
    tokens = FakeTokens()
    with pytest.raises(PollError) as caught:
        make(tokens).fetch()
    assert caught.value.reason == "auth"
    assert "lacks MFA" in caught.value.message
    assert "partnercenter-exporter login" in caught.value.message
    assert "endpoints.scope" not in caught.value.message
    assert route.call_count == 1
    assert tokens.calls == [False]


@respx.mock
def test_an_odata_401_that_says_mfa_without_the_code_is_read_as_mfa() -> None:
    """MFA detection reads error.message too: a refusal that says multi-factor is required."""
    route = respx.get(API_URL).respond(401, json=odata_error(
        "Unauthorized", "Access denied: multi-factor authentication (MFA) required."))
    with pytest.raises(PollError) as caught:
        stats_client().fetch()
    assert "lacks MFA" in caught.value.message
    assert route.call_count == 1


@pytest.mark.parametrize("body", [
    odata_error("2000", "Bad $filter.\r\nTrace: " + "xx " * 200),
    {"code": 2000, "description": "Bad $filter.\r\nTrace: " + "xx " * 200, "source": "PartnerCenter"},
], ids=["odata", "rest"])
@respx.mock
def test_an_error_body_of_either_shape_shows_its_code_and_message_on_one_short_line(
        body: dict[str, object]) -> None:
    """A 400's code and message, from OData's error.code/error.message or REST's code/description,
    are named in the error, cut short, on one line."""
    respx.get(url__startswith=CUSTOMERS).respond(400, json=body)
    with pytest.raises(PollError) as caught:
        customers_client().fetch()
    message = caught.value.message
    assert caught.value.reason == "client_error"
    assert "[2000: Bad $filter. Trace: xx xx" in message
    assert "\n" not in message
    assert "\r" not in message
    assert len(message) < 300


@respx.mock
def test_an_upstream_message_that_quotes_a_token_is_redacted_on_the_status_page() -> None:
    """Upstream text in an error reaches the status page redacted: a bearer token it quotes is not shown."""
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    respx.get(API_URL).respond(400, json=odata_error("BadRequest", f"bad token Bearer {token}"))
    poller = Poller([stats_client()], interval=900, concurrency=1, on_snapshot=lambda s: None)
    page = landing_page(poller.poll_all_once(), now=NOW, thresholds=(90,)).decode()
    assert "BadRequest" in page
    assert token not in page


@pytest.mark.parametrize("status", [404, 410])
@respx.mock
def test_a_retired_api_keeps_its_data_and_says_so_once(status: int, caplog: pytest.LogCaptureFixture) -> None:
    """A 404 or 410 after a good poll: partnercenter_api_retired 1, the last good figures stay,
    reason not_found is still counted, and the change is logged once at warning with what to do."""
    route = respx.get(API_URL).mock(side_effect=[
        httpx.Response(200, json={"totalDapCustomerCount": 7}),
        *[httpx.Response(status, json=odata_error("NotFound", "gone")) for _ in range(3)]])
    poller = Poller([stats_client()], interval=900, concurrency=1, on_snapshot=lambda s: None)
    poller.poll_all_once()
    with caplog.at_level(logging.DEBUG, logger="exporter.poller"):
        for _ in range(3):
            snapshot = poller.poll_all_once()
    assert route.call_count == 4
    [view] = snapshot.views
    assert view.api_retired is True
    assert view.errors_total == {"not_found": 3}
    body = render(snapshot, today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert values(body, "partnercenter_api_retired") == {'collector="dap_statistics",tenant="contoso"': 1}
    assert values(body, "partnercenter_dap_customers") == {'tenant="contoso"': 7}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "the API answers as retired; the last good data stays; drop the collector from the tenant's "
        "collectors, or fix its endpoint URL if that was changed"]
    assert "API retired" in landing_page(snapshot, now=NOW, thresholds=(90,)).decode()


@respx.mock
def test_a_retired_api_that_answers_again_is_0_and_a_timeout_meanwhile_changes_nothing() -> None:
    """Retired stays 1 through a failure that says nothing about it (a timeout), and turns 0 when the
    API answers again."""
    respx.get(API_URL).mock(side_effect=[
        httpx.Response(410), httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"totalDapCustomerCount": 1})])
    poller = Poller([stats_client()], interval=900, concurrency=1, on_snapshot=lambda s: None)
    retired = [poller.poll_all_once().views[0].api_retired for _ in range(3)]
    assert retired == [True, True, False]


@respx.mock
def test_a_graph_404_is_not_a_retired_api() -> None:
    """Graph's APIs are not the DAP ones Microsoft retires: a 404 leaves no partnercenter_api_retired."""
    respx.get(url__startswith=GRAPH).respond(404, json={"error": {"code": "NotFound", "message": "x"}})
    client = GdapRelationshipsClient("contoso", httpx.Client(), GRAPH, FakeTokens(), clock=lambda: NOW)
    snapshot = Poller([client], interval=900, concurrency=1, on_snapshot=lambda s: None).poll_all_once()
    assert snapshot.views[0].api_retired is None
    assert snapshot.views[0].last_error_reason == "not_found"
    body = render(snapshot, today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert "partnercenter_api_retired{" not in body


@respx.mock
def test_a_dap_customer_listed_on_two_pages_is_one_customer_and_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """Paging that shifts while it is read can list a customer twice: it is one customer (the first
    listing), and the log says how many were counted once."""
    def customer(tid: str, name: str) -> dict[str, object]:
        return {"customerTenantId": tid, "displayName": name, "dapEnabled": True}

    respx.get(CUSTOMERS).mock(side_effect=[
        httpx.Response(200, json={"value": [customer("a1", "Alpha"), customer("b2", "Beta")],
                                  "@odata.nextLink": f"{CUSTOMERS}?page=2"}),
        httpx.Response(200, json={"value": [customer("b2", "Beta again"), customer("c3", "Gamma")]})])
    with caplog.at_level(logging.WARNING, logger="exporter.client"):
        listed = customers_client().fetch()
    assert [(c.id, c.name) for c in listed.customers] == [
        ("a1", "Alpha"), ("b2", "Beta"), ("c3", "Gamma")]
    [warning] = [r for r in caplog.records
                 if r.getMessage() == "entries listed more than once were counted once"]
    assert warning.__dict__["duplicates"] == 1
