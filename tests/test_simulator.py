"""The real client and token provider against the simulator over HTTPS: faults and their reasons."""

from __future__ import annotations

import io
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from exporter.app import identity
from exporter.auth import TokenProvider, interactive_login
from exporter.collectors.dap_statistics import DapStatisticsClient
from exporter.endpoints import DEFAULT_GRAPH_SCOPE
from exporter.model import PollError
from exporter.simulator import Fault, Simulator
from exporter.simulator import app as simulator_app
from exporter.simulator.data import dap_customer_json, relationship_json
from tests.conftest import CLIENT_ID, SCOPE, TENANT_ID, endpoints, free_port, tenant
from tests.helpers.e2e import cached_refresh_tokens


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sim.certs.ca_file))
    with httpx.Client(verify=context, timeout=1.0) as client:
        yield client


def make_client(sim: Simulator, http: httpx.Client, tmp_path: Path,
                **endpoint_overrides: str) -> DapStatisticsClient:
    config = tenant(seed=sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test"),
                    cache=tmp_path / "cache.json")
    ends = endpoints(**{"authority_host": sim.authority_host,
                        "dap_statistics_url": sim.dap_statistics_url, **endpoint_overrides})
    return DapStatisticsClient("contoso", http, ends.dap_statistics_url,
                               TokenProvider(identity(config, ends), http))


def reason_of(client: DapStatisticsClient) -> PollError:
    with pytest.raises(PollError) as caught:
        client.fetch()
    return caught.value


def test_happy_path_over_https(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """Seed import, token and statistics over real TLS give the simulator's customer count."""
    assert make_client(sim, http, tmp_path).fetch().total_customers == 250


def test_429_with_retry_after(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """A simulated 429 with Retry-After is reason throttled with that delay."""
    sim.inject(Fault("api", status=429, headers={"Retry-After": "120"}))
    error = reason_of(make_client(sim, http, tmp_path))
    assert (error.reason, error.retry_after) == ("throttled", 120)


def test_slow_upstream_is_timeout(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """An answer slower than the client timeout is reason timeout."""
    sim.inject(Fault("api", status=None, delay=1.5))
    assert reason_of(make_client(sim, http, tmp_path)).reason == "timeout"


def test_reset_mid_body_is_connection(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """A connection dropped halfway through the body is reason connection."""
    sim.inject(Fault("api", status=200, body={"totalDapCustomerCount": 1, "x": "y" * 200}, reset=True))
    error = reason_of(make_client(sim, http, tmp_path))
    assert error.reason == "connection"
    assert "the connection to Partner Center at 127.0.0.1 broke off mid-request" in error.message


def test_revoked_refresh_token_sends_user_to_login(sim: Simulator, http: httpx.Client,
                                                   tmp_path: Path) -> None:
    """Once the refresh token is revoked, a forced refresh fails with AADSTS50173 and `login`."""
    client = make_client(sim, http, tmp_path)
    client.fetch()
    sim.revoke_refresh_tokens()
    sim.invalidate_access_tokens()
    error = reason_of(client)
    assert error.reason == "auth"
    assert "login" in error.message
    assert error.message.endswith("[AADSTS50173]")


def test_revoking_one_tenant_leaves_the_others_working(sim: Simulator, http: httpx.Client,
                                                      tmp_path: Path) -> None:
    """revoke_refresh_tokens and invalidate_access_tokens with a tenant id touch only that tenant."""
    other_id = "00000000-0000-0000-0000-0000000000bb"
    sim.add_tenant(other_id, customers=40)
    ends = endpoints(authority_host=sim.authority_host, dap_statistics_url=sim.dap_statistics_url)
    other_config = tenant(seed=sim.issue_refresh_token(other_id, CLIENT_ID, "admin@fabrikam.test"),
                          cache=tmp_path / "other.json", name="fabrikam", tenant_id=other_id)
    other = DapStatisticsClient("fabrikam", http, ends.dap_statistics_url,
                                TokenProvider(identity(other_config, ends), http))
    client = make_client(sim, http, tmp_path)
    client.fetch()
    other.fetch()
    sim.revoke_refresh_tokens(TENANT_ID)
    sim.invalidate_access_tokens(TENANT_ID)
    assert reason_of(client).reason == "auth"
    assert other.fetch().total_customers == 40
    assert other.requests_by_code == {"200": 2}


def test_api_401_with_a_valid_looking_token_recovers_by_refresh(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """When the API rejects a token MSAL still considers valid, one forced refresh fixes it."""
    client = make_client(sim, http, tmp_path)
    client.fetch()
    sim.invalidate_access_tokens()
    assert client.fetch().total_customers == 250
    assert client.requests_by_code == {"200": 2, "401": 1}


def test_unknown_tenant_is_auth(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """A tenant the identity platform does not know fails discovery with a tenant_id hint."""
    ends = endpoints(authority_host=sim.authority_host, dap_statistics_url=sim.dap_statistics_url)
    config = tenant(tenant_id="contoso-missing.onmicrosoft.com", seed="x", cache=tmp_path / "c.json")
    client = DapStatisticsClient("x", http, ends.dap_statistics_url,
                                 TokenProvider(identity(config, ends), http))
    error = reason_of(client)
    assert error.reason == "auth"
    assert "tenant_id" in error.message


def test_connection_refused_and_dns_failure(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """A closed port and an unresolvable host are both reason connection."""
    refused = make_client(sim, http, tmp_path, authority_host=f"https://127.0.0.1:{free_port()}")
    assert reason_of(refused).reason == "connection"
    unresolvable = make_client(sim, http, tmp_path,
                               authority_host="https://login.nonexistent.invalid")
    error = reason_of(unresolvable)
    assert error.reason == "connection"
    assert "cannot resolve the host name login.nonexistent.invalid of the identity platform (DNS)" \
        in error.message


def test_interactive_login_fills_the_cache(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """The device code flow prints the code and leaves an account the provider can use."""
    cache = tmp_path / "cache.json"
    ends = endpoints(authority_host=sim.authority_host, dap_statistics_url=sim.dap_statistics_url)
    out = io.StringIO()
    user = interactive_login(identity(tenant(cache=cache), ends), http, out=out)
    assert user.startswith("admin@")
    assert "enter the code" in out.getvalue()
    provider = TokenProvider(identity(tenant(cache=cache), ends), http)
    assert provider.get_token().startswith("sim-at-")


def test_login_replaces_an_earlier_sign_in(sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """After login as another user, the cache holds only the new account, which the exporter uses."""
    client = make_client(sim, http, tmp_path)
    client.fetch()
    sim.revoke_refresh_tokens()
    ends = endpoints(authority_host=sim.authority_host, dap_statistics_url=sim.dap_statistics_url)
    user = interactive_login(identity(tenant(cache=tmp_path / "cache.json"), ends), http,
                             out=io.StringIO())
    assert user != "admin@contoso.test"
    assert cached_refresh_tokens(tmp_path / "cache.json") == [sim.live_refresh_tokens()[-1]]
    sim.invalidate_access_tokens()
    assert make_client(sim, http, tmp_path).fetch().total_customers == 250


def _signed_in_with_2000_customers(sim: Simulator, scope: str) -> tuple[Any, str]:
    """A tenant with 2,000 customers and a bearer token for `scope`."""
    sim.add_client(CLIENT_ID)
    tenant_data = sim.add_tenant(TENANT_ID, customers=2_000)
    seed = sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test")
    _, answer = sim.token(TENANT_ID, {"grant_type": "refresh_token", "client_id": CLIENT_ID,
                                      "refresh_token": seed, "scope": scope})
    return tenant_data, f"Bearer {answer['access_token']}"


def test_a_graph_list_renders_only_the_page_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paging 2,000 relationships 100 at a time renders each relationship once, not the whole list
    for every page (which made long lists quadratic)."""
    rendered: list[int] = []

    def counting(relationship: Any) -> dict[str, Any]:
        rendered.append(1)
        return relationship_json(relationship)

    monkeypatch.setattr(simulator_app, "relationship_json", counting)
    with Simulator() as sim:
        tenant_data, token = _signed_in_with_2000_customers(sim, DEFAULT_GRAPH_SCOPE)
        query, served = {"$top": "100"}, 0
        while True:
            status, body = sim.gdap_relationships(token, query)
            assert status == 200, body
            served += len(body["value"])
            if "@odata.nextLink" not in body:
                break
            query = {k: v[0] for k, v in parse_qs(urlsplit(body["@odata.nextLink"]).query).items()}
    assert served == len(tenant_data.relationships) > 1_000
    assert len(rendered) == served


def test_the_customer_list_builds_only_the_page_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page of delegatedAdminCustomers builds the JSON of its own entries only, so listing
    2,000 customers in pages of 100 builds 2,000 entries, not one list per page (quadratic)."""
    built: list[int] = []
    real = dap_customer_json

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(simulator_app, "dap_customer_json", counting)
    with Simulator() as sim:
        tenant_data, token = _signed_in_with_2000_customers(sim, SCOPE)
        served = 0
        while True:
            status, body = sim.dap_customers(token, {"$top": "100", "$skip": str(served)})
            assert status == 200, body
            if not body["value"]:
                break
            served += len(body["value"])
    assert served == len(tenant_data.customers) + len(tenant_data.other_customers)
    assert len(built) == served
