"""GDAP and DAP-customer clients at the HTTP boundary: paging, parsing, throttling and refusals."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
import respx

from exporter import client as client_module
from exporter.client import (
    MAX_INLINE_RETRY_AFTER,
    PAGE_SIZE,
    DapCustomersClient,
    GdapRelationshipsClient,
    parse_relationship,
)
from exporter.model import GLOBAL_ADMIN_ROLE, PollError
from tests.test_client import FakeTokens

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
    """A status Graph adds later is counted as unknownFutureValue; entries without a customer or
    with an unreadable end time are skipped and counted."""
    skipped: list[str] = []
    future = parse_relationship(rel("a", status="somethingNew"), "value[0]", skipped)
    assert future is not None
    assert future.status == "unknownFutureValue"
    no_customer = {**rel("b"), "customer": None}
    assert parse_relationship(no_customer, "value[1]", skipped) is None
    assert parse_relationship(rel("c", end="next tuesday"), "value[2]", skipped) is None
    assert parse_relationship("nope", "value[3]", skipped) is None
    assert [s.split(":")[0] for s in skipped] == [
        "value[1].customer.tenantId", "value[2].endDateTime", "value[3]"]


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


@respx.mock
def test_dap_customers_page_with_top_and_skip_until_a_short_page() -> None:
    """Pages of 300 are read with $skip until one comes back short; only dapEnabled customers count."""
    full = [{"customerTenantId": f"C{i}", "organizationDisplayName": f"n{i}", "dapEnabled": i % 2 == 0}
            for i in range(PAGE_SIZE)]
    first = respx.get(CUSTOMERS, params={"$top": "300", "$skip": "0"}).respond(200, json={"value": full})
    second = respx.get(CUSTOMERS, params={"$top": "300", "$skip": "300"}).respond(200, json={"value": [
        {"customerTenantId": "Z", "organizationDisplayName": "last", "dapEnabled": True}]})
    result = customers_client().fetch()
    assert (first.call_count, second.call_count) == (1, 1)
    assert len(result.customers) == PAGE_SIZE // 2 + 1
    assert {c.id for c in result.customers} >= {"c0", "z"}
    assert "c1" not in {c.id for c in result.customers}


@respx.mock
def test_dap_customer_entries_without_dap_enabled_are_skipped_and_counted() -> None:
    """An entry without a dapEnabled flag or a tenant id is skipped, not guessed."""
    respx.get(CUSTOMERS).respond(200, json={"value": [
        {"customerTenantId": "a", "organizationDisplayName": "A", "dapEnabled": True},
        {"customerTenantId": "b", "organizationDisplayName": "B"},
        {"organizationDisplayName": "C", "dapEnabled": True}]})
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
def test_a_next_link_that_never_ends_stops_at_the_page_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Graph that keeps pointing onwards fails the poll after MAX_PAGES pages instead of looping."""
    monkeypatch.setattr(client_module, "MAX_PAGES", 3)
    route = respx.get(RELATIONSHIPS).respond(200, json={
        "value": [rel("a")], "@odata.nextLink": f"{RELATIONSHIPS}?$skiptoken=again"})
    with pytest.raises(PollError) as caught:
        graph_client().fetch()
    assert caught.value.reason == "invalid_response"
    assert "more than 3 pages" in caught.value.message
    assert route.call_count == 3


@respx.mock
def test_dap_customers_that_never_end_stop_at_the_page_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full pages without end fail the poll after MAX_PAGES pages instead of looping."""
    monkeypatch.setattr(client_module, "MAX_PAGES", 2)
    full = [{"customerTenantId": f"c{i}", "dapEnabled": True} for i in range(PAGE_SIZE)]
    route = respx.get(CUSTOMERS).respond(200, json={"value": full})
    with pytest.raises(PollError) as caught:
        customers_client().fetch()
    assert caught.value.reason == "invalid_response"
    assert route.call_count == 2
