"""The partner_customers collector: Graph's contracts (every customer of the partner), paged, and
every one of them in the per-customer access view."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx
import pytest
import respx

from exporter.collectors.gdap_relationships import GdapRelationships
from exporter.collectors.partner_customers import PartnerCustomer, PartnerCustomers, PartnerCustomersClient
from exporter.exposition import render
from exporter.model import PollError, Snapshot, SourceView
from tests.helpers.samples import FakeTokens, relationship

GRAPH = "https://graph.test.invalid"
CONTRACTS = f"{GRAPH}/v1.0/contracts"
TODAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp()


def contract(customer: str, kind: str = "ResellerPartner") -> dict[str, Any]:
    """A contract as Graph v1.0 lists it (https://learn.microsoft.com/graph/api/resources/contract)."""
    return {"id": f"contract-{customer}", "deletedDateTime": None, "contractType": kind,
            "customerId": f"ID-{customer}", "defaultDomainName": f"{customer}.onmicrosoft.com",
            "displayName": f"{customer} Ltd"}


def client(tokens: FakeTokens | None = None) -> PartnerCustomersClient:
    return PartnerCustomersClient("contoso", httpx.Client(), GRAPH, tokens or FakeTokens(), clock=lambda: NOW)


@respx.mock
def test_contracts_are_read_through_next_links_one_customer_each() -> None:
    """$top=999 on the first page, @odata.nextLink after it; a customer with two kinds of contract
    counts once, ids lower case."""
    link = f"{CONTRACTS}?$top=999&$skiptoken=X"
    route = respx.get(url__startswith=CONTRACTS).mock(side_effect=[
        httpx.Response(200, json={"value": [contract("a"), contract("b")], "@odata.nextLink": link}),
        httpx.Response(200, json={"value": [contract("c"), contract("a", "BreadthPartner")]})])
    data = client().fetch()
    assert route.calls[0].request.url.params["$top"] == "999"
    assert str(route.calls[1].request.url) == link
    assert [(c.id, c.name) for c in data.customers] == [
        ("id-a", "a Ltd"), ("id-b", "b Ltd"), ("id-c", "c Ltd")]


@respx.mock
def test_a_contract_without_customer_id_is_skipped_and_counted() -> None:
    """An entry without customerId cannot be joined: it is skipped and counted, the rest stay."""
    respx.get(url__startswith=CONTRACTS).respond(200, json={"value": [
        contract("a"), {**contract("b"), "customerId": None}, "junk"]})
    data = client().fetch()
    assert [c.id for c in data.customers] == ["id-a"]
    assert data.skipped_entries == 2


@pytest.mark.parametrize(("method", "grant"), [
    ("client_credentials", "application permission Directory.Read.All"),
    ("refresh_token", "delegated permission Directory.Read.All")])
@respx.mock
def test_a_403_names_directory_read_all(method: str, grant: str) -> None:
    """Graph's refusal names the permission contracts need, for app-only and delegated tokens."""
    respx.get(url__startswith=CONTRACTS).respond(403, json={"error": {
        "code": "Authorization_RequestDenied",
        "message": "Insufficient privileges to complete the operation."}})
    with pytest.raises(PollError) as caught:
        client(FakeTokens(method)).fetch()
    assert caught.value.reason == "auth"
    assert grant in caught.value.message
    assert "[Authorization_RequestDenied]" in caught.value.message


def values(body: str, name: str) -> dict[str, float]:
    return {labels: float(value) for labels, value in
            re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", body, re.MULTILINE)}


def test_every_contract_customer_gets_an_access_series_0_when_nothing_covers_it() -> None:
    """5 contracts, 3 of them with an active relationship: partnercenter_customers 5, and the other
    2 appear in partnercenter_gdap_customer_access at 0."""
    gdap = GdapRelationships((relationship("a"), relationship("b"), relationship("c")), fetched_at=NOW)
    partner = PartnerCustomers(tuple(PartnerCustomer(f"id-{c}", f"{c} Ltd") for c in "abcde"))
    views = (SourceView("contoso", "gdap_relationships", data=gdap, attempted=True, last_poll_success=True),
             SourceView("contoso", "partner_customers", data=partner, attempted=True, last_poll_success=True))
    body = render(Snapshot(views), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert values(body, "partnercenter_customers") == {'tenant="contoso"': 5}
    access = values(body, "partnercenter_gdap_customer_access")
    assert len(access) == 5
    assert {labels for labels, value in access.items() if value == 0} == {
        'customer_name="d Ltd",customer_tenant_id="id-d",tenant="contoso"',
        'customer_name="e Ltd",customer_tenant_id="id-e",tenant="contoso"'}


def test_access_waits_for_the_contracts_of_a_tenant_that_runs_partner_customers() -> None:
    """Until partner_customers has data, no access series is written, so no customer shows up late
    as if it had just lost access."""
    gdap = GdapRelationships((relationship("a"),), fetched_at=NOW)
    views = (SourceView("contoso", "gdap_relationships", data=gdap, attempted=True, last_poll_success=True),
             SourceView("contoso", "partner_customers"))
    body = render(Snapshot(views), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert values(body, "partnercenter_gdap_customer_access") == {}
