"""GDAP and DAP-customer clients at the HTTP boundary: paging, parsing, throttling and refusals."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx
import pytest
import respx

from exporter import client
from exporter.collectors.dap_customers import DapCustomers, DapCustomersClient, parse_dap_customer
from exporter.collectors.gdap_relationships import (
    GLOBAL_ADMIN_ROLE,
    GdapRelationships,
    GdapRelationshipsClient,
    parse_relationship,
)
from exporter.collectors.graph import MAX_INLINE_RETRY_AFTER
from exporter.exposition import render
from exporter.model import PollError, Snapshot, SourceView
from exporter.poller import Poller
from tests.helpers.samples import FakeTokens

GRAPH = "https://graph.test.invalid"
RELATIONSHIPS = f"{GRAPH}/v1.0/tenantRelationships/delegatedAdminRelationships"
CUSTOMERS = "https://pc.test.invalid/CustomerServiceAdminApi/Web/v1/delegatedAdminCustomers"
NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp()


def graph_client(tokens: FakeTokens | None = None, sleeps: list[float] | None = None,
                 graph_url: str = GRAPH) -> GdapRelationshipsClient:
    record = sleeps if sleeps is not None else []
    return GdapRelationshipsClient("contoso", httpx.Client(), graph_url, tokens or FakeTokens(),
                                   clock=lambda: NOW, sleep=record.append)


def customers_client(tokens: FakeTokens | None = None) -> DapCustomersClient:
    return DapCustomersClient("contoso", httpx.Client(), CUSTOMERS, tokens or FakeTokens(), clock=lambda: NOW)


def rel(customer: str, status: str = "active", *, end: str | None = "2027-01-01T00:00:00Z",
        extend: str = "PT0S", roles: tuple[str, ...] = ("729827e3-9c14-49f7-bb1b-9608f156bbb8",)
        ) -> dict[str, Any]:
    return {"id": f"r-{customer}-{status}", "displayName": f"{customer} rel", "status": status,
            "endDateTime": end, "autoExtendDuration": extend,
            "customer": {"tenantId": customer.upper(), "displayName": f"{customer} Ltd"},
            "accessDetails": {"unifiedRoles": [{"roleDefinitionId": r} for r in roles]}}


@respx.mock
def test_relationships_follow_next_link_from_a_first_page_of_300() -> None:
    """The first request asks $top=300; each @odata.nextLink is followed as given until none is left."""
    next_link = f"{RELATIONSHIPS}?$top=300&$skiptoken=X1"
    route = respx.get(RELATIONSHIPS).mock(side_effect=[
        httpx.Response(200, json={"value": [rel("a")], "@odata.nextLink": next_link}),
        httpx.Response(200, json={"value": [rel("b"), rel("c")]})])
    result = graph_client().fetch()
    assert [str(call.request.url) for call in route.calls] == [f"{RELATIONSHIPS}?%24top=300", next_link]
    assert [r.customer_id for r in result.relationships] == ["a", "b", "c"]
    assert result.fetched_at == NOW


def test_relationship_fields_are_parsed() -> None:
    """Customer ids are lower-cased, P180D auto-extends and PT0S/P0D do not, the Global Admin
    template is found in the roles, and endDateTime becomes a Unix time."""
    skipped: list[str] = []
    ga = parse_relationship(rel("a", extend="P0D", roles=(GLOBAL_ADMIN_ROLE.upper(),)), "v", skipped)
    extended = parse_relationship(rel("b", extend="P180D", end="2027-01-01T00:00:00.0000000Z"), "v",
                                  skipped)
    assert ga is not None
    assert extended is not None
    assert (ga.customer_id, ga.customer_name, ga.global_admin, ga.auto_extend) == ("a", "a Ltd", True, False)
    assert (extended.global_admin, extended.auto_extend) == (False, True)
    assert extended.end_time == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    assert skipped == []


def test_unknown_statuses_count_as_unknown_future_value_and_bad_entries_are_skipped() -> None:
    """A status Graph adds later is counted as unknownFutureValue; an entry whose customer is not
    an object, or whose end time is unreadable, is skipped and counted."""
    skipped: list[str] = []
    future = parse_relationship(rel("a", status="somethingNew"), "value[0]", skipped)
    assert future is not None
    assert future.status == "unknownFutureValue"
    assert parse_relationship({**rel("b"), "customer": "b"}, "value[1]", skipped) is None
    assert parse_relationship(rel("c", end="next tuesday"), "value[2]", skipped) is None
    assert parse_relationship("nope", "value[3]", skipped) is None
    assert [s.split(":")[0] for s in skipped] == ["value[1].customer", "value[2].endDateTime", "value[3]"]


@respx.mock
def test_customer_less_and_reseller_relationships_are_all_counted() -> None:
    """Graph's `customer` is set "by the system after the customer approves", so created and
    approvalPending entries come without one or with null; reseller relationships come in the
    same list. Every entry counts in its status and nothing is skipped
    (learn.microsoft.com/graph/api/resources/delegatedadminrelationship)."""
    missing = {k: v for k, v in rel("a", "created", end=None).items() if k != "customer"}
    null = {**rel("b", "approvalPending", end=None), "customer": None}
    reseller = {**rel("c"), "@odata.type": "#microsoft.graph.resellerDelegatedAdminRelationship",
                "indirectProviderTenantId": "d4e5", "isPartnerConsentPending": False}
    respx.get(RELATIONSHIPS).respond(200, json={"value": [missing, null, reseller, rel("d", "expiring")]})
    result = graph_client().fetch()
    assert result.skipped_entries == 0
    counts = result.by_status()
    assert [counts[s] for s in ("created", "approvalPending", "active", "expiring")] == [1, 1, 1, 1]
    assert sum(counts.values()) == 4
    assert [(r.customer_id, r.reseller) for r in result.relationships] == [
        ("", False), ("", False), ("c", True), ("d", False)]
    assert result.customers_with_access() == {"c"}


@respx.mock
def test_an_empty_relationship_list_for_a_signed_in_user_logs_the_admin_agents_hint(
        caplog: pytest.LogCaptureFixture) -> None:
    """Graph answers 200 and an empty list, not 403, to a user outside Admin Agents
    (microsoft-graph-docs-contrib issue 8921): a delegated read warns once, naming the group."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": []})
    with caplog.at_level(logging.WARNING, logger="exporter.client"):
        graph_client(FakeTokens("refresh_token")).fetch()
    warnings = [r for r in caplog.records if "Admin Agents" in r.getMessage()]
    assert len(warnings) == 1
    assert "graph_auth" in warnings[0].getMessage()


@respx.mock
def test_an_empty_relationship_list_read_app_only_is_not_blamed_on_admin_agents(
        caplog: pytest.LogCaptureFixture) -> None:
    """App-only tokens are not subject to Admin Agents membership: no such warning for them."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": []})
    with caplog.at_level(logging.WARNING, logger="exporter.client"):
        graph_client(FakeTokens("client_credentials")).fetch()
    assert not [r for r in caplog.records if "Admin Agents" in r.getMessage()]


@respx.mock
def test_a_short_graph_throttle_is_waited_out_inside_the_poll() -> None:
    """A 429 with a short Retry-After sleeps that long and asks for the same page again."""
    route = respx.get(RELATIONSHIPS).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(200, json={"value": [rel("a")]})])
    sleeps: list[float] = []
    client = graph_client(sleeps=sleeps)
    assert len(client.fetch().relationships) == 1
    assert (route.call_count, sleeps) == (2, [2.0])
    assert client.requests_by_code == {"429": 1, "200": 1}


@respx.mock
def test_a_long_graph_throttle_ends_the_poll_with_its_retry_after() -> None:
    """A Retry-After longer than the inline limit is handed to the poller as reason throttled."""
    wait = MAX_INLINE_RETRY_AFTER + 1
    respx.get(RELATIONSHIPS).respond(429, headers={"Retry-After": f"{wait:.0f}"})
    sleeps: list[float] = []
    with pytest.raises(PollError) as caught:
        graph_client(sleeps=sleeps).fetch()
    assert (caught.value.reason, caught.value.retry_after, sleeps) == ("throttled", wait, [])
    assert caught.value.message == f"Microsoft Graph throttled the request (429); retrying after {wait:.0f}s"


@respx.mock
def test_persistent_graph_throttling_gives_up_after_a_few_waits() -> None:
    """Three inline waits at most; the fourth 429 fails the poll."""
    route = respx.get(RELATIONSHIPS).respond(429, headers={"Retry-After": "1"})
    sleeps: list[float] = []
    with pytest.raises(PollError) as caught:
        graph_client(sleeps=sleeps).fetch()
    assert (caught.value.reason, route.call_count, sleeps) == ("throttled", 4, [1.0, 1.0, 1.0])


@respx.mock
def test_a_next_link_to_another_host_is_refused() -> None:
    """The bearer token is never sent to a host other than endpoints.graph_url."""
    respx.get(RELATIONSHIPS).respond(200, json={
        "value": [rel("a")], "@odata.nextLink": "https://evil.test.invalid/steal?$skiptoken=1"})
    evil = respx.get("https://evil.test.invalid/steal").respond(200, json={"value": []})
    with pytest.raises(PollError) as caught:
        graph_client().fetch()
    assert caught.value.reason == "invalid_response"
    assert "refusing to send the token" in caught.value.message
    assert evil.call_count == 0


@respx.mock
@pytest.mark.parametrize(("method", "expected"), [
    ("client_credentials", "grant the app the application permission DelegatedAdminRelationship.Read.All"),
    ("refresh_token", "grant the app the delegated permission DelegatedAdminRelationship.Read.All"),
])
def test_graph_403_names_the_permission_and_graph_error_code(method: str, expected: str) -> None:
    """A 403 names the permission the method needs and Graph's error code, not Graph's free text."""
    respx.get(RELATIONSHIPS).respond(403, json={"error": {
        "code": "Authorization_RequestDenied", "message": "secret-ish free text from upstream"}})
    with pytest.raises(PollError) as caught:
        graph_client(FakeTokens(method)).fetch()
    assert caught.value.reason == "auth"
    assert expected in caught.value.message
    assert "[Authorization_RequestDenied]" in caught.value.message
    assert "free text" not in caught.value.message


@respx.mock
def test_graph_401_is_retried_once_with_a_fresh_token() -> None:
    """Graph's 401 forces one new token, as for Partner Center."""
    respx.get(RELATIONSHIPS).mock(side_effect=[httpx.Response(401), httpx.Response(200, json={"value": []})])
    tokens = FakeTokens()
    assert graph_client(tokens).fetch().relationships == ()
    assert tokens.calls == [False, True]


def customer(i: int, *, dap: bool = True, **fields: Any) -> dict[str, Any]:
    """A delegatedAdminCustomers entry with the documented fields
    (learn.microsoft.com/partner-center/developer/list-delegated-admin-customers)."""
    return {"id": f"c{i}", "customerTenantId": f"C{i}", "organizationDisplayName": f"n{i}",
            "partnerAgentCount": 0, "partnerSignInCount": 0, "globalAdminSignInCount": 0,
            "dapEnabled": dap, "startDateTime": "2022-04-20T06:11:11.7227953Z", "endDateTime": None,
            "lastSignInDateTime": "2026-11-01T08:00:00.1234567Z", **fields}


@respx.mock
def test_dap_customers_without_next_link_skip_by_what_was_received_until_an_empty_page() -> None:
    """230 customers at a server page size of 100 and no nextLink: $skip advances by the entries
    received (100, 200, 230), not by $top, and an empty page ends the list; all 230 are read."""
    everyone = [customer(i) for i in range(230)]

    def page(request: httpx.Request) -> httpx.Response:
        skip = int(request.url.params.get("$skip", "0"))
        assert request.url.params["$top"] == "300"
        return httpx.Response(200, json={"value": everyone[skip:skip + 100]})

    route = respx.get(CUSTOMERS).mock(side_effect=page)
    result = customers_client().fetch()
    assert len(result.customers) == 230
    assert [call.request.url.params.get("$skip", "0") for call in route.calls] == ["0", "100", "200", "230"]


@respx.mock
def test_dap_customers_follow_next_link_and_only_dap_enabled_count() -> None:
    """The list is asked for DAP customers only ($filter=dapEnabled eq true, as Microsoft's GDAP
    bulk-migration tool asks), @odata.nextLink is followed as given, and a customer without
    dapEnabled that comes anyway does not count."""
    link = f"{CUSTOMERS}?$filter=dapEnabled%20eq%20true&$top=300&$skip=100"
    route = respx.get(CUSTOMERS).mock(side_effect=[
        httpx.Response(200, json={"value": [customer(i, dap=i % 2 == 0) for i in range(100)],
                                  "@odata.nextLink": link}),
        httpx.Response(200, json={"value": [customer(100)]})])
    result = customers_client().fetch()
    first = route.calls[0].request.url
    assert first.params["$filter"] == "dapEnabled eq true"
    assert first.params["$top"] == "300"
    assert str(route.calls[1].request.url) == link
    assert len(result.customers) == 51
    assert "c1" not in {c.id for c in result.customers}


@respx.mock
def test_a_dap_customers_next_link_to_another_host_is_refused() -> None:
    """The Partner Center token is never sent to a host other than endpoints.dap_customers_url's."""
    respx.get(CUSTOMERS).respond(200, json={"value": [customer(0)],
                                            "@odata.nextLink": "https://evil.test.invalid/x"})
    evil = respx.get("https://evil.test.invalid/x").respond(200, json={"value": []})
    with pytest.raises(PollError) as caught:
        customers_client().fetch()
    assert caught.value.reason == "invalid_response"
    assert evil.call_count == 0


@respx.mock
def test_a_server_that_ignores_skip_fails_the_poll_within_a_few_requests() -> None:
    """The same page again means $skip is ignored: invalid_response at once, not 1,000 requests."""
    route = respx.get(CUSTOMERS).respond(200, json={"value": [customer(i) for i in range(100)]})
    with pytest.raises(PollError) as caught:
        customers_client().fetch()
    assert caught.value.reason == "invalid_response"
    assert "ignores $skip" in caught.value.message
    assert route.call_count <= 10


def test_dap_customer_activity_fields_are_parsed_to_the_second() -> None:
    """lastSignInDateTime with seven fractional digits becomes its Unix time; null or empty means
    no partner ever signed in (None); startDateTime and globalAdminSignInCount are kept."""
    skipped: list[str] = []
    seen = parse_dap_customer(customer(1, globalAdminSignInCount=3), "v", skipped)
    never = parse_dap_customer(customer(2, lastSignInDateTime=None), "v", skipped)
    empty = parse_dap_customer(customer(3, lastSignInDateTime=""), "v", skipped)
    assert seen is not None
    assert never is not None
    assert empty is not None
    assert int(seen.last_signin or 0) == int(dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC).timestamp())
    assert seen.start_time == pytest.approx(dt.datetime(2022, 4, 20, 6, 11, 11, 722795,
                                                        tzinfo=dt.UTC).timestamp())
    assert seen.global_admin_signins == 3
    assert (never.last_signin, empty.last_signin) == (None, None)
    huge = parse_dap_customer(customer(5, globalAdminSignInCount=10**400), "v", skipped)
    assert huge is not None
    assert huge.global_admin_signins == 0
    assert parse_dap_customer(customer(4, lastSignInDateTime="yesterday"), "value[4]", skipped) is None
    assert [s.split(":")[0] for s in skipped] == ["value[4].lastSignInDateTime"]


@respx.mock
def test_dap_customer_entries_without_dap_enabled_are_skipped_and_counted() -> None:
    """An entry without a dapEnabled flag or a tenant id is skipped, not guessed."""
    respx.get(CUSTOMERS).mock(side_effect=[httpx.Response(200, json={"value": [
        {"customerTenantId": "a", "organizationDisplayName": "A", "dapEnabled": True},
        {"customerTenantId": "b", "organizationDisplayName": "B"},
        {"organizationDisplayName": "C", "dapEnabled": True}]}), httpx.Response(200, json={"value": []})])
    result = customers_client().fetch()
    assert [c.id for c in result.customers] == ["a"]
    assert result.skipped_entries == 2


@respx.mock
def test_dap_customers_refuse_app_only_tokens_with_a_hint() -> None:
    """delegatedAdminCustomers is App+User only, like the statistics API, and says so."""
    respx.get(CUSTOMERS).respond(401)
    with pytest.raises(PollError) as caught:
        customers_client(FakeTokens("client_credentials")).fetch()
    assert caught.value.reason == "auth"
    assert "delegatedAdminCustomers accepts App+User tokens only" in caught.value.message


@respx.mock
def test_dap_customers_404_names_its_own_setting() -> None:
    """A retired or mistyped delegatedAdminCustomers URL points at endpoints.dap_customers_url."""
    respx.get(CUSTOMERS).respond(404)
    with pytest.raises(PollError) as caught:
        customers_client().fetch()
    assert caught.value.reason == "not_found"
    assert "endpoints.dap_customers_url" in caught.value.message


@respx.mock
def test_a_next_link_that_never_ends_stops_at_the_entry_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Graph that keeps pointing onwards fails the poll past MAX_LIST_ENTRIES instead of looping."""
    monkeypatch.setattr(client, "MAX_LIST_ENTRIES", 3)
    route = respx.get(RELATIONSHIPS).respond(200, json={
        "value": [rel("a")], "@odata.nextLink": f"{RELATIONSHIPS}?$skiptoken=again"})
    with pytest.raises(PollError) as caught:
        graph_client().fetch()
    assert caught.value.reason == "invalid_response"
    assert "listed more than 3 entries, the exporter's bound" in caught.value.message
    assert route.call_count == 4


@respx.mock
def test_dap_customers_that_never_end_stop_at_the_entry_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of new customers without end fail the poll past MAX_LIST_ENTRIES instead of looping."""
    monkeypatch.setattr(client, "MAX_LIST_ENTRIES", 150)
    pages = iter(range(10))

    def page(request: httpx.Request) -> httpx.Response:
        n = next(pages)
        return httpx.Response(200, json={"value": [customer(n * 100 + i) for i in range(100)]})

    route = respx.get(CUSTOMERS).mock(side_effect=page)
    with pytest.raises(PollError) as caught:
        customers_client().fetch()
    assert caught.value.reason == "invalid_response"
    assert "listed more than 150 entries" in caught.value.message
    assert route.call_count == 2


@respx.mock
def test_a_list_of_more_pages_than_the_old_ceiling_is_read_whole() -> None:
    """1,200 pages of 100 (120,000 customers, a large partner's list in small pages) are all read:
    no page count ends a listing."""
    def page(request: httpx.Request) -> httpx.Response:
        skip = int(request.url.params.get("$skip", 0))
        if skip >= 120_000:
            return httpx.Response(200, json={"value": []})
        return httpx.Response(200, json={"value": [customer(skip + i) for i in range(100)]})

    route = respx.get(CUSTOMERS).mock(side_effect=page)
    assert len(customers_client().fetch().customers) == 120_000
    assert route.call_count == 1_201


@respx.mock
def test_a_long_listing_that_fails_waits_as_long_as_it_ran_and_stops_at_its_time_bound() -> None:
    """A listing that fails after running 10 minutes asks not to start again for 10 minutes; one that
    runs past MAX_LIST_SECONDS stops as reason timeout."""
    now = [0.0]
    served = iter(range(1_000))

    def page(request: httpx.Request) -> httpx.Response:
        n = next(served)
        now[0] += 120.0  # each page takes two minutes
        if n == 5:
            return httpx.Response(503)
        return httpx.Response(200, json={"value": [customer(n * 100 + i) for i in range(100)]})

    respx.get(CUSTOMERS).mock(side_effect=page)
    # A long request_timeout: the fake clock jumps two minutes inside each request.
    slow = DapCustomersClient("contoso", httpx.Client(timeout=10_000), CUSTOMERS, FakeTokens(),
                              clock=lambda: NOW, monotonic=lambda: now[0])
    with pytest.raises(PollError) as caught:
        slow.fetch()
    assert caught.value.reason == "server_error"
    assert caught.value.retry_after == pytest.approx(720.0)
    with pytest.raises(PollError) as caught:
        slow.fetch()  # pages go on: 15 more take 30 minutes
    assert caught.value.reason == "timeout"
    assert "took more than 30 minutes to list" in caught.value.message


@respx.mock
def test_partner_center_mfa_refusal_tells_ropc_users_it_cannot_work() -> None:
    """For username_password, the MFA message says ROPC cannot satisfy it."""
    respx.get(CUSTOMERS).respond(401, json={"code": "900421", "description": "x"})
    with pytest.raises(PollError) as caught:
        customers_client(FakeTokens("username_password")).fetch()
    assert "username_password (ROPC) cannot satisfy it" in caught.value.message


@respx.mock
def test_a_server_that_starts_ignoring_skip_keeps_the_last_good_customer_list() -> None:
    """Polled through the poller: after a good poll, a server ignoring $skip fails the next poll as
    invalid_response within a few requests, and the customers of the good poll stay published."""
    everyone = [customer(i) for i in range(150)]
    ignore_skip = False

    def page(request: httpx.Request) -> httpx.Response:
        skip = 0 if ignore_skip else int(request.url.params.get("$skip", "0"))
        return httpx.Response(200, json={"value": everyone[skip:skip + 100]})

    route = respx.get(CUSTOMERS).mock(side_effect=page)
    poller = Poller([customers_client()], interval=900, concurrency=1, on_snapshot=lambda s: None)
    good = poller.poll_all_once().views[0].data
    assert isinstance(good, DapCustomers)
    assert len(good.customers) == 150
    ignore_skip, before = True, route.call_count
    view = poller.poll_all_once().views[0]
    assert (view.last_poll_success, view.last_error_reason) == (False, "invalid_response")
    assert view.data is good
    assert route.call_count - before <= 10


def test_lifecycle_times_are_exported_for_relationships_not_active_yet() -> None:
    """createdDateTime and lastModifiedDateTime of created, approvalPending, approved and activating
    relationships are exported (customer-less ones with an empty customer id); active and terminal
    ones get none."""
    entries = [{**rel(name, status, end=None), "createdDateTime": "2026-09-01T00:00:00Z",
                "lastModifiedDateTime": "2026-09-02T00:00:00.1234567Z"}
               for name, status in (("a", "approvalPending"), ("b", "approved"), ("c", "activating"),
                                    ("d", "created"), ("e", "active"), ("f", "terminated"))]
    entries[3]["customer"] = None
    skipped: list[str] = []
    parsed = tuple(p for i, e in enumerate(entries) if (p := parse_relationship(e, f"v{i}", skipped)))
    data = GdapRelationships(parsed, fetched_at=NOW)
    view = SourceView("contoso", "gdap_relationships", data=data, attempted=True, last_poll_success=True)
    today = dt.date(2026, 11, 23)
    body = render(Snapshot((view,)), today=today, thresholds=(90,), poll_interval=900).decode()
    created = [line for line in body.splitlines()
               if line.startswith("partnercenter_gdap_relationship_created_timestamp_seconds{")]
    assert sorted(line.split('status="')[1].split('"')[0] for line in created) == [
        "activating", "approvalPending", "approved", "created"]
    assert all(line.endswith(" 1.7882208e+09") for line in created)
    assert 'customer_tenant_id=""' in next(line for line in created if 'status="created"' in line)
    assert body.count("partnercenter_gdap_relationship_last_modified_timestamp_seconds{") == 4


@respx.mock
def test_a_relationship_listed_twice_is_one_series_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Graph paging that shifts under us lists one relationship on two pages: it counts once, and
    the log says how many were dropped."""
    respx.get(RELATIONSHIPS).mock(side_effect=[
        httpx.Response(200, json={"value": [rel("a"), rel("b")],
                                  "@odata.nextLink": f"{RELATIONSHIPS}?$skiptoken=2"}),
        httpx.Response(200, json={"value": [rel("b"), rel("c")]})])
    with caplog.at_level(logging.WARNING):
        data = graph_client().fetch()
    assert sorted(r.id for r in data.relationships) == ["r-a-active", "r-b-active", "r-c-active"]
    record = next(r for r in caplog.records
                  if r.getMessage() == "entries listed more than once were counted once")
    assert record.__dict__["duplicates"] == 1
