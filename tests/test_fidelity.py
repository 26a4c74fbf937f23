"""The real clients against the simulator where it follows Microsoft's reference pages: paging,
customer-less and reseller relationships, MFA enforcement, Admin Agents and the auth-code login."""

from __future__ import annotations

import datetime as dt
import io
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.app import identity
from exporter.auth import TokenProvider, interactive_login
from exporter.collectors.dap_customers import DapCustomersClient
from exporter.collectors.dap_statistics import DapStatisticsClient
from exporter.collectors.gdap_relationships import GdapRelationshipsClient
from exporter.collectors.partner_customers import PartnerCustomersClient
from exporter.endpoints import Endpoints
from exporter.model import PollError
from exporter.simulator import Simulator
from exporter.simulator.data import (
    Relationship,
    generate_customers,
    generate_relationships,
    relationship_json,
)
from exporter.simulator.scenario import DEMO_OUTSIDE_ADMIN_AGENTS, DEMO_TENANTS
from tests.conftest import CLIENT_ID, TENANT_ID, endpoints, tenant
from tests.helpers.e2e import exporter_command

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sim.certs.ca_file))
    with httpx.Client(verify=context, timeout=5.0) as client:
        yield client


def sim_endpoints(sim: Simulator) -> Endpoints:
    return endpoints(**sim.endpoints_config())


def signed_in(sim: Simulator, http: httpx.Client, tmp_path: Path, *, mfa: bool = True) -> TokenProvider:
    seed = sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test", mfa=mfa)
    return TokenProvider(identity(tenant(seed=seed, cache=tmp_path / "cache.json"), sim_endpoints(sim)), http)


def test_customer_list_is_read_whole_through_next_links_at_a_page_of_100(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Partner Center sends at most 100 a page here, below the $top of 300 we ask, with a nextLink:
    every DAP customer of the 250 is read, with its last sign-in to the second and 0 skipped."""
    client = DapCustomersClient("contoso", http, sim.dap_customers_url, signed_in(sim, http, tmp_path))
    result = client.fetch()
    simulated = sim.tenants[TENANT_ID].customers
    assert len(result.customers) == len(simulated) == 250
    assert result.skipped_entries == 0
    assert sim.count("customers") >= 3
    by_id = {c.id: c for c in result.customers}
    for customer in simulated:
        expected = customer.last_signin_at
        got = by_id[customer.id].last_signin
        assert (None if got is None else int(got)) == (
            None if expected is None else int(expected.timestamp()))
    assert any(c.last_signin_at is None for c in simulated), "the simulator has a never-signed-in customer"


def test_customer_list_without_next_link_is_read_whole_by_skip(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Without nextLink, $skip by the entries received still reads every customer."""
    sim.customers_next_link = False
    client = DapCustomersClient("contoso", http, sim.dap_customers_url, signed_in(sim, http, tmp_path))
    assert len(client.fetch().customers) == 250
    # DAP customers only ($filter): two full pages, the short one, the empty one.
    assert sim.count("customers") == 250 // 100 + 2


def test_generated_relationships_parse_whole_including_customer_less_and_reseller_ones(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Graph's shapes as the simulator sends them (no customer, null customer, reseller type,
    expiring past its end date) all parse: nothing skipped, statuses counted as simulated, and
    coverage is what the simulator's oracle says."""
    relationships = sim.tenants[TENANT_ID].relationships
    assert {r.customer_field for r in relationships} == {"object", "missing", "null"}
    assert any(r.indirect_provider for r in relationships)
    now = dt.datetime.now(dt.UTC)
    assert all(r.end is not None and r.end < now for r in relationships if r.status == "expiring")
    tokens = signed_in(sim, http, tmp_path).for_scope(GRAPH_SCOPE)
    result = GdapRelationshipsClient("contoso", http, sim.graph_url, tokens).fetch()
    assert result.skipped_entries == 0
    counts = result.by_status()
    for status in {r.status for r in relationships}:
        assert counts[status] == sum(1 for r in relationships if r.status == status)
    covered = result.customers_with_access()
    assert {c.id for c in sim.tenants[TENANT_ID].customers if c.id not in covered} == {
        c.id for c in sim.tenants[TENANT_ID].without_gdap(assignments=False)}


def test_graph_shows_a_user_outside_admin_agents_an_empty_list_but_app_only_sees_all(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Graph answers the delegated call with 200 and no relationships when the user is not in
    Admin Agents (microsoft-graph-docs-contrib issue 8921); the exporter reads that as an empty
    list, not an error."""
    sim.tenants[TENANT_ID].users_in_admin_agents = False
    tokens = signed_in(sim, http, tmp_path).for_scope(GRAPH_SCOPE)
    assert GdapRelationshipsClient("contoso", http, sim.graph_url, tokens).fetch().relationships == ()


@pytest.mark.parametrize("shape", ["odata", "rest"])
def test_partner_center_refuses_a_token_without_mfa_with_900421(
        sim: Simulator, http: httpx.Client, tmp_path: Path, shape: str) -> None:
    """A token from a sign-in without MFA gets Partner Center's 401 with code 900421, in the host's
    OData error shape or Partner Center REST's: reason auth, the MFA message, and one request (no
    forced refresh)."""
    sim.error_shape = shape
    client = DapStatisticsClient("contoso", http, sim.dap_statistics_url,
                                 signed_in(sim, http, tmp_path, mfa=False))
    with pytest.raises(PollError) as caught:
        client.fetch()
    assert caught.value.reason == "auth"
    assert "lacks MFA" in caught.value.message
    assert "[900421:" in caught.value.message
    assert (sim.count("api", 401), sim.count("token")) == (1, 1)


def browser(http: httpx.Client, printed: str) -> str:
    """What the admin's browser does: open the printed URL, sign in, end up at the redirect URI."""
    url = re.search(r"https://\S+/oauth2/v2\.0/authorize\?\S+", printed)
    assert url is not None, printed
    response = http.get(url.group(0), follow_redirects=False)
    assert response.status_code == 302
    return response.headers["location"]


def test_auth_code_login_with_a_pasted_redirect_url_fills_the_cache(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """--flow=auth-code: PKCE authorization code flow; the pasted redirect URL is redeemed and the
    cache then serves Partner Center tokens, which pass MFA enforcement."""
    out = io.StringIO()
    cache = tmp_path / "cache.json"
    user = interactive_login(identity(tenant(cache=cache), sim_endpoints(sim)), http, out=out,
                             flow="auth-code", read_line=lambda: browser(http, out.getvalue()))
    assert user.startswith("admin@")
    assert sim.count("devicecode") == 0
    provider = TokenProvider(identity(tenant(cache=cache), sim_endpoints(sim)), http)
    client = DapStatisticsClient("contoso", http, sim.dap_statistics_url, provider)
    assert client.fetch().total_customers == 250


def test_auth_code_login_refuses_text_that_is_not_the_redirect_url(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Pasting something else gives a one-line error that says what to paste."""
    from exporter.auth import LoginError

    with pytest.raises(LoginError) as caught:
        interactive_login(identity(tenant(cache=tmp_path / "c.json"), sim_endpoints(sim)), http,
                          out=io.StringIO(), flow="auth-code", read_line=lambda: "hello")
    assert "code= and state=" in str(caught.value)


@pytest.mark.e2e
def test_login_command_with_auth_code_flow_over_a_real_terminal_pipe(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """`partnercenter-exporter login --flow=auth-code` prints the URL, reads the pasted redirect URL
    from standard input and writes the token cache."""
    cache = tmp_path / "cache.json"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"endpoints": sim.endpoints_config(), "tenants": [{
        "name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
        "auth": {"token_cache_file": str(cache)}}]}))
    process = subprocess.Popen(
        exporter_command("login", f"--config.file={config}", "--tenant=contoso", "--flow=auth-code"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdin is not None
    printed = ""
    while "paste it here" not in printed:
        line = process.stdout.readline()
        assert line, "login ended before asking for the redirect URL"
        printed += line
    process.stdin.write(browser(http, printed) + "\n")
    process.stdin.flush()
    rest, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    assert "Signed in as admin@" in rest
    assert cache.exists()


def demo_tenants() -> list[tuple[list[Any], list[Any]]]:
    """The demo's GDAP tenants (not the one outside Admin Agents) as the simulator generates them."""
    today = dt.date(2026, 11, 23)
    now = dt.datetime.combine(today, dt.time(12), dt.UTC)
    tenants = []
    for name, tenant_id in DEMO_TENANTS.items():
        if name != DEMO_OUTSIDE_ADMIN_AGENTS:
            dap = generate_customers(tenant_id, today)
            relationships, _ = generate_relationships(tenant_id, dap, now)
            tenants.append((dap, relationships))
    return tenants


def test_relationship_lifecycle_fields_agree_with_each_other() -> None:
    """As Graph's delegatedAdminRelationship documents them: endDateTime = activatedDateTime +
    duration; created before activated, modified not before created; no activatedDateTime or
    endDateTime before the relationship is active; every documented status occurs; a reseller
    relationship's isPartnerConsentPending is true only while the customer has not approved.
    https://learn.microsoft.com/graph/api/resources/delegatedadminrelationship"""
    statuses: set[str] = set()
    for _, relationships in demo_tenants():
        for r in relationships:
            body = relationship_json(r)
            statuses.add(r.status)
            created = dt.datetime.fromisoformat(body["createdDateTime"])
            assert dt.datetime.fromisoformat(body["lastModifiedDateTime"]) >= created
            if r.status in ("created", "approvalPending", "approved", "activating"):
                assert (body["activatedDateTime"], body["endDateTime"]) == (None, None)
                continue
            activated = dt.datetime.fromisoformat(body["activatedDateTime"])
            days = int(body["duration"].removeprefix("P").removesuffix("D"))
            assert dt.datetime.fromisoformat(body["endDateTime"]) == activated + dt.timedelta(days=days)
            assert created < activated
            if r.indirect_provider is not None:
                assert body["isPartnerConsentPending"] is (r.status in ("created", "approvalPending"))
    assert statuses == {"created", "approvalPending", "approved", "activating", "active", "expiring",
                        "expired", "terminationRequested", "terminating", "terminated"}


def test_every_demo_tenant_shows_each_access_case() -> None:
    """Each demo tenant with GDAP has: a DAP customer whose active relationship has no active access
    assignment, an assignment in error, one stuck in pending, a customer whose access ends within 30
    days without auto-extend, a Global Administrator relationship that says P180D, and a customer
    with two active relationships, one ending within 30 days and one much later."""
    soon = dt.datetime.combine(dt.date(2026, 11, 23), dt.time(12), dt.UTC) + dt.timedelta(days=30)
    for dap, relationships in demo_tenants():
        dap_ids = {c.id for c in dap}
        with_access = {r.customer_id for r in relationships if r.gives_access}
        assert any(r.grants_access and not r.gives_access and r.customer_id in dap_ids
                   and r.customer_id not in with_access for r in relationships)
        assignments = {a.status for r in relationships if r.status == "active" for a in r.assignments}
        assert {"error", "pending", "active", "deleted"} <= assignments
        giving: dict[str, list[Relationship]] = {}
        for r in relationships:
            if r.gives_access:
                giving.setdefault(r.customer_id, []).append(r)
        assert any(max(r.end for r in rs if r.end) < soon and not any(r.really_auto_extends for r in rs)
                   for rs in giving.values())
        assert any(r.auto_extend and not r.really_auto_extends for r in relationships)
        assert any(len(rs) == 2 and min(r.end for r in rs if r.end) < soon < max(r.end for r in rs if r.end)
                   for rs in giving.values())


@pytest.mark.parametrize("date_them", [False, True])
def test_statistics_leave_out_customers_no_partner_signed_in_to(
        sim: Simulator, http: httpx.Client, tmp_path: Path, date_them: bool) -> None:
    """By default the simulator follows get-delegated-admin-relation-statistics: inactiveDapCount
    counts "customers who have had sign-ins", so the customers without a sign-in date are the total
    minus its dates; with date_never_signed_in (the other reading) the counts add up."""
    sim.date_never_signed_in = date_them
    never = sum(1 for c in sim.tenants[TENANT_ID].customers if c.last_signin is None)
    assert never > 0
    tokens = signed_in(sim, http, tmp_path)
    stats = DapStatisticsClient("contoso", http, sim.dap_statistics_url, tokens).fetch()
    assert stats.total_customers == 250
    assert stats.without_signin_date == (0 if date_them else never)


def test_customer_list_filters_on_dap_enabled_and_refuses_a_filter_it_cannot_apply(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """delegatedAdminCustomers applies $filter=dapEnabled eq true|false and $count=true, and answers a
    filter it cannot apply with OData's 400 in the host's error shape."""
    token = signed_in(sim, http, tmp_path).get_token()
    headers = {"Authorization": f"Bearer {token}"}
    tenant = sim.tenants[TENANT_ID]
    for wanted, expected in (("true", len(tenant.customers)), ("false", len(tenant.other_customers))):
        body = http.get(sim.dap_customers_url, headers=headers, params={
            "$filter": f"dapEnabled eq {wanted}", "$count": "true", "$top": "300"}).json()
        assert body["@odata.count"] == expected
        assert {c["dapEnabled"] for c in body["value"]} == {wanted == "true"}
    refused = http.get(sim.dap_customers_url, headers=headers,
                       params={"$filter": "startswith(organizationDisplayName, 'A')"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "BadRequest"
    assert refused.json()["@odata.context"].endswith(".errorResponse")


def test_a_retired_statistics_api_answers_410_to_anyone(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Retired, delegatedAdminStatistics answers 410 in the host's error shape, before it looks at the
    token; the client reports reason not_found and how to react."""
    sim.retire("api", 410)
    client = DapStatisticsClient("contoso", http, sim.dap_statistics_url, signed_in(sim, http, tmp_path))
    with pytest.raises(PollError) as caught:
        client.fetch()
    assert caught.value.reason == "not_found"
    assert "drop dap_statistics from the tenant's collectors" in caught.value.message
    assert sim.count("api", 410) == 1
    assert http.get(sim.dap_statistics_url).status_code == 410


def test_contracts_list_every_customer_paged_unmanaged_ones_included(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Graph's contracts list every customer of the partner, also those with neither DAP nor a
    relationship, at most a page of the server's size, followed by @odata.nextLink."""
    sim.contracts_page = 50
    tenant = sim.tenants[TENANT_ID]
    assert tenant.unmanaged_customers
    tokens = signed_in(sim, http, tmp_path).for_scope(GRAPH_SCOPE)
    data = PartnerCustomersClient("contoso", http, sim.graph_url, tokens).fetch()
    everyone = {c.id for c in tenant.contract_customers}
    assert {c.id for c in data.customers} == everyone
    assert {c.id for c in tenant.unmanaged_customers} <= everyone
    assert sim.count("contracts") == -(-len(everyone) // 50)


def test_contracts_need_directory_read_all_and_relationships_do_not(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """An app without consent to Directory.Read.All gets Graph's 403 for contracts only: the
    relationships, which need DelegatedAdminRelationship.Read.All, still read."""
    sim.directory_unconsented.add(CLIENT_ID)
    tokens = signed_in(sim, http, tmp_path).for_scope(GRAPH_SCOPE)
    with pytest.raises(PollError) as caught:
        PartnerCustomersClient("contoso", http, sim.graph_url, tokens).fetch()
    assert caught.value.reason == "auth"
    assert "Directory.Read.All" in caught.value.message
    assert GdapRelationshipsClient("contoso", http, sim.graph_url, tokens).fetch().relationships
