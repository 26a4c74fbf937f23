"""Token provider: each auth method over respx, reuse, forced refresh, rotation and error mapping."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from exporter.app import identity, login_command
from exporter.auth import AAD_HINTS, TokenProvider, classify_identity_error
from exporter.certificates import load_client_certificate
from exporter.config import AuthConfig, ManagedIdentity
from exporter.model import PollError
from exporter.simulator.assertions import write_client_certificate
from exporter.token_store import write_atomically
from tests.conftest import (
    DISCOVERY,
    DISCOVERY_URL,
    SCOPE,
    TENANT_ID,
    aad_error,
    endpoints,
    tenant,
    token_body,
)

NOW = 1_800_000_000.0


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


def provider(config: Any, **kwargs: Any) -> TokenProvider:
    return TokenProvider(identity(config, endpoints(), login=login_command("/etc/pcx.yml", config.name)),
                         httpx.Client(), clock=lambda: NOW, **kwargs)


def test_construction_does_no_network_io(aad: Any) -> None:
    """Building a provider makes no request; MSAL (which does discovery) is built lazily."""
    provider(tenant(seed="seed-rt", cache=Path("/nonexistent/cache.json")))
    assert len(aad.calls) == 0


def test_seed_is_imported_once_then_access_token_is_reused(aad: Any, tmp_path: Path) -> None:
    """An empty cache imports refresh_token_file; the access token is then reused without HTTP."""
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2")))
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    assert tokens.get_token() == "at-1"
    assert tokens.get_token() == "at-1"
    assert aad.token.call_count == 1
    sent = form(aad.token.calls[0].request)
    assert sent["grant_type"] == "refresh_token"
    assert sent["refresh_token"] == "seed-rt"
    assert SCOPE in sent["scope"].split()
    # MSAL derives a cached token's expires_in from the wall clock, so allow a little drift.
    assert tokens.expires_at == pytest.approx(NOW + 3600, abs=5)


def test_rotated_refresh_token_is_persisted_and_used_after_restart(aad: Any, tmp_path: Path) -> None:
    """Each rotated refresh token is written at once; a new process redeems the newest one."""
    cache = tmp_path / "cache.json"
    aad.token.mock(side_effect=[
        httpx.Response(200, json=token_body("at-1", "rt-2", expires_in=60)),
        httpx.Response(200, json=token_body("at-2", "rt-3", expires_in=60)),
        httpx.Response(200, json=token_body("at-3", "rt-4", expires_in=3600)),
    ])
    first = provider(tenant(seed="seed-rt", cache=cache))
    assert first.get_token() == "at-1"
    # expires_in=60 is inside MSAL's 5-minute margin, so the next call refreshes.
    assert first.get_token() == "at-2"
    assert "rt-3" in cache.read_text()
    assert "rt-2" not in cache.read_text()

    restarted = provider(tenant(seed="seed-rt", cache=cache))
    assert restarted.get_token() == "at-3"
    assert form(aad.token.calls[2].request)["refresh_token"] == "rt-3"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600


def test_no_account_and_no_seed_tells_the_user_to_run_login(aad: Any, tmp_path: Path) -> None:
    """With an empty cache and no seed, the error is auth with the exact login command."""
    tokens = provider(tenant(cache=tmp_path / "cache.json"))
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    assert caught.value.reason == "auth"
    assert "run `partnercenter-exporter login --config.file=/etc/pcx.yml --tenant=contoso`" \
        in caught.value.message
    assert aad.token.call_count == 0


def test_seed_is_not_imported_twice(aad: Any, tmp_path: Path) -> None:
    """A seed that was refused is not sent again on the next poll; the user is sent to login."""
    aad.token.mock(return_value=httpx.Response(400, json=aad_error("invalid_grant", 50173)))
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    with pytest.raises(PollError):
        tokens.get_token()
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    assert "partnercenter-exporter login" in caught.value.message
    assert aad.token.call_count == 1


def test_force_refresh_redeems_the_refresh_token_again(aad: Any, tmp_path: Path) -> None:
    """force_refresh skips the cached access token and redeems the newest refresh token."""
    aad.token.mock(side_effect=[httpx.Response(200, json=token_body("at-1", "rt-2")),
                                httpx.Response(200, json=token_body("at-2", "rt-3"))])
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    tokens.get_token()
    assert tokens.get_token(force_refresh=True) == "at-2"
    assert form(aad.token.calls[1].request)["refresh_token"] == "rt-2"


def test_client_credentials_sends_secret_and_reuses_token(aad: Any) -> None:
    """client_credentials posts the app secret, reuses the token, and force_refresh fetches anew."""
    aad.token.mock(side_effect=[httpx.Response(200, json=token_body("app-1", None)),
                                httpx.Response(200, json=token_body("app-2", None))])
    seen: list[str] = []
    tokens = provider(tenant("client_credentials", secret="app-secret"), on_token=seen.append)
    assert tokens.get_token() == "app-1"
    assert tokens.get_token() == "app-1"
    assert aad.token.call_count == 1
    sent = form(aad.token.calls[0].request)
    assert sent["grant_type"] == "client_credentials"
    assert sent["client_secret"] == "app-secret"
    assert tokens.get_token(force_refresh=True) == "app-2"
    assert seen == ["app-1", "app-1", "app-2"]


def test_username_password_uses_ropc_then_the_cache(aad: Any) -> None:
    """username_password posts the password grant once, then serves the cached token."""
    aad.get(url__regex=r"/common/userrealm/").mock(
        return_value=httpx.Response(200, json={"account_type": "Managed", "ver": "1.0"}))
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-ropc", "rt-ropc")))
    tokens = provider(tenant("username_password", username="admin@contoso.onmicrosoft.com",
                             password="pw-secret"))
    assert tokens.get_token() == "at-ropc"
    assert tokens.get_token() == "at-ropc"
    assert aad.token.call_count == 1
    sent = form(aad.token.calls[0].request)
    assert (sent["grant_type"], sent["username"], sent["password"]) == \
        ("password", "admin@contoso.onmicrosoft.com", "pw-secret")


def test_username_password_signs_in_again_when_its_refresh_token_is_revoked(aad: Any) -> None:
    """For username_password, a revoked cached refresh token leads to a new password grant."""
    aad.get(url__regex=r"/common/userrealm/").mock(
        return_value=httpx.Response(200, json={"account_type": "Managed", "ver": "1.0"}))
    aad.token.mock(side_effect=[
        httpx.Response(200, json=token_body("at-1", "rt-1", expires_in=60)),
        httpx.Response(400, json=aad_error("invalid_grant", 50173, "revoked")),
        httpx.Response(200, json=token_body("at-2", "rt-2")),
    ])
    tokens = provider(tenant("username_password", username="admin@contoso.onmicrosoft.com",
                             password="pw"))
    assert tokens.get_token() == "at-1"
    assert tokens.get_token() == "at-2"
    assert [form(call.request)["grant_type"] for call in aad.token.calls] == \
        ["password", "refresh_token", "password"]


def test_ropc_mfa_required_points_to_refresh_token_and_login(aad: Any) -> None:
    """AADSTS50076 on ROPC explains that ROPC cannot do MFA and names the way out."""
    aad.get(url__regex=r"/common/userrealm/").mock(
        return_value=httpx.Response(200, json={"account_type": "Managed", "ver": "1.0"}))
    aad.token.mock(return_value=httpx.Response(400, json=aad_error("invalid_grant", 50076)))
    tokens = provider(tenant("username_password", username="u@contoso.onmicrosoft.com", password="pw"))
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    message = caught.value.message
    assert caught.value.reason == "auth"
    assert "cannot do" in message
    assert "method refresh_token" in message
    assert "partnercenter-exporter login" in message
    assert message.endswith("[AADSTS50076]")


@pytest.mark.parametrize("code", sorted(AAD_HINTS))
def test_identity_platform_codes_map_to_actionable_messages(aad: Any, code: int) -> None:
    """Every AADSTS code in the table becomes reason auth with its hint and the code."""
    aad.token.mock(return_value=httpx.Response(400, json=aad_error("invalid_grant", code)))
    tokens = provider(tenant("client_credentials", secret="s3cr3t-value"))
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    assert caught.value.reason == "auth"
    assert caught.value.message.endswith(f"[AADSTS{code}]")
    assert AAD_HINTS[code].split(":")[0].split("{")[0][:25] in caught.value.message
    assert "\n" not in caught.value.message


def test_unknown_invalid_grant_on_refresh_token_says_run_login(aad: Any, tmp_path: Path) -> None:
    """An invalid_grant without a known code still sends the refresh_token user to login."""
    aad.token.mock(return_value=httpx.Response(400, json=aad_error("invalid_grant", 9999999)))
    tokens = provider(tenant(seed="seed", cache=tmp_path / "c.json"))
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    assert "the refresh token is no longer valid" in caught.value.message


def test_token_endpoint_429_is_throttled_with_retry_after(aad: Any) -> None:
    """A 429 from the identity platform is reason throttled and carries Retry-After."""
    aad.token.mock(return_value=httpx.Response(
        429, headers={"Retry-After": "17"}, json=aad_error("temporarily_unavailable", 50196)))
    with pytest.raises(PollError) as caught:
        provider(tenant("client_credentials", secret="s")).get_token()
    assert (caught.value.reason, caught.value.retry_after) == ("throttled", 17)


def test_token_endpoint_5xx_is_server_error(aad: Any) -> None:
    """A 503 from the token endpoint (which MSAL raises) is reason server_error."""
    aad.token.mock(return_value=httpx.Response(503, text="down"))
    with pytest.raises(PollError) as caught:
        provider(tenant("client_credentials", secret="s")).get_token()
    assert caught.value.reason == "server_error"


def test_replayed_5xx_says_msal_holds_off(aad: Any) -> None:
    """A retry that MSAL answers from its throttle cache says so, instead of a vague HTTP error."""
    aad.token.mock(return_value=httpx.Response(503, text="down"))
    tokens = provider(tenant("client_credentials", secret="s"))
    for _ in range(2):
        with pytest.raises(PollError) as caught:
            tokens.get_token()
    assert aad.token.call_count == 1
    assert caught.value.reason == "server_error"
    assert caught.value.message == ("the identity platform answered 503 a moment ago, and MSAL waits "
                                    "up to 60s before it asks again")


def test_token_endpoint_html_is_invalid_response(aad: Any) -> None:
    """An HTML page from the token endpoint is reason invalid_response."""
    aad.token.mock(return_value=httpx.Response(200, text="<html>proxy login</html>"))
    with pytest.raises(PollError) as caught:
        provider(tenant("client_credentials", secret="s")).get_token()
    assert caught.value.reason == "invalid_response"


@pytest.mark.parametrize(("error", "reason"), [
    (httpx.ConnectError("[Errno -2] Name or service not known"), "connection"),
    (httpx.ConnectError("[Errno 111] Connection refused"), "connection"),
    (httpx.ReadTimeout("timed out"), "timeout"),
])
def test_network_errors_raised_by_msal_are_classified(error: Exception, reason: str) -> None:
    """MSAL raises network errors (from discovery or token calls); they become poll reasons."""
    with respx.mock() as mock:
        mock.get(DISCOVERY_URL).mock(side_effect=error)
        tokens = provider(tenant("client_credentials", secret="s"))
        with pytest.raises(PollError) as caught:
            tokens.get_token()
    assert caught.value.reason == reason
    assert "identity platform" in caught.value.message


def test_failed_discovery_is_retried_on_the_next_poll(aad: Any) -> None:
    """A network failure while building MSAL does not stick: the next call builds it again."""
    aad.get(DISCOVERY_URL).mock(side_effect=[httpx.ConnectError("refused"),
                                             httpx.Response(200, json=DISCOVERY)])
    aad.token.mock(return_value=httpx.Response(200, json=token_body("app-1", None)))
    tokens = provider(tenant("client_credentials", secret="s"))
    with pytest.raises(PollError):
        tokens.get_token()
    assert tokens.get_token() == "app-1"


def test_unknown_tenant_in_discovery_is_auth_naming_tenant_id() -> None:
    """Discovery refused for the tenant (AADSTS90002) says to check tenant_id."""
    with respx.mock() as mock:
        mock.get(DISCOVERY_URL).mock(return_value=httpx.Response(
            400, json=aad_error("invalid_tenant", 90002)))
        with pytest.raises(PollError) as caught:
            provider(tenant("client_credentials", secret="s")).get_token()
    assert caught.value.reason == "auth"
    assert "tenant_id" in caught.value.message


def test_cache_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed write leaves the previous cache intact and no temp file behind."""
    target = tmp_path / "cache.json"
    write_atomically(str(target), json.dumps({"rt": "old"}))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_atomically(str(target), json.dumps({"rt": "new"}))
    assert json.loads(target.read_text()) == {"rt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_lock_left_by_a_killed_process_does_not_block_the_cache(aad: Any, tmp_path: Path) -> None:
    """A lock file left behind by a killed process does not stop the next one saving tokens."""
    cache = tmp_path / "cache.json"
    Path(f"{cache}.lockfile").write_text("12345 partnercenter-exporter")  # its holder is gone
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2")))
    assert provider(tenant(seed="seed-rt", cache=cache)).get_token() == "at-1"
    assert "rt-2" in cache.read_text()


def test_cache_lock_held_by_another_process_is_a_clear_error(aad: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache locked by a live process for too long fails the poll with auth, naming the file."""
    import fcntl

    cache = tmp_path / "cache.json"
    holder = os.open(f"{cache}.lockfile", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    monkeypatch.setattr("exporter.token_store.TOKEN_CACHE_LOCK_TIMEOUT", 0.05)
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2")))
    try:
        with pytest.raises(PollError) as caught:
            provider(tenant(seed="seed-rt", cache=cache)).get_token()
    finally:
        os.close(holder)
    assert caught.value.reason == "auth"
    assert f"cannot use token cache {cache}: another process held" in caught.value.message


GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def test_graph_tokens_come_from_the_same_refresh_token_and_cache(aad: Any, tmp_path: Path) -> None:
    """A Graph-scoped token redeems the newest refresh token of the same cache, and both resources'
    access tokens are then reused side by side, each with its own expiry."""
    graph_body = {**token_body("at-graph", "rt-3", expires_in=1800), "scope": GRAPH_SCOPE}
    aad.token.mock(side_effect=[httpx.Response(200, json=token_body("at-pc", "rt-2")),
                                httpx.Response(200, json=graph_body)])
    cache = tmp_path / "cache.json"
    tokens = provider(tenant(seed="seed-rt", cache=cache))
    graph = tokens.for_scope(GRAPH_SCOPE)
    assert tokens.get_token() == "at-pc"
    assert graph.get_token() == "at-graph"
    sent = form(aad.token.calls[1].request)
    assert (sent["grant_type"], sent["refresh_token"]) == ("refresh_token", "rt-2")
    assert GRAPH_SCOPE in sent["scope"].split()
    assert (tokens.get_token(), graph.get_token()) == ("at-pc", "at-graph")
    assert aad.token.call_count == 2
    assert "rt-3" in cache.read_text()
    assert tokens.expires_at == pytest.approx(NOW + 3600, abs=5)
    assert graph.expires_at == pytest.approx(NOW + 1800, abs=5)


def test_app_only_graph_tokens_use_client_credentials_for_the_graph_scope(aad: Any) -> None:
    """A client_credentials provider asks for the Graph scope when seen through for_scope."""
    aad.token.mock(return_value=httpx.Response(200, json={**token_body("app-graph", None),
                                                          "scope": GRAPH_SCOPE}))
    graph = provider(tenant("client_credentials", secret="graph-secret")).for_scope(GRAPH_SCOPE)
    assert graph.get_token() == "app-graph"
    sent = form(aad.token.calls[0].request)
    assert (sent["grant_type"], sent["scope"]) == ("client_credentials", GRAPH_SCOPE)
    assert graph.method == "client_credentials"


@pytest.mark.parametrize("code", [50076, 50079])
def test_mfa_required_on_refresh_says_sign_in_again_not_switch_methods(aad: Any, tmp_path: Path,
                                                                      code: int) -> None:
    """For a refresh_token tenant, 50076/50079 means Conditional Access changed: the fix is login
    (an MFA sign-in), and the message must not send the operator to refresh_token it already uses."""
    aad.token.mock(return_value=httpx.Response(400, json=aad_error("invalid_grant", code)))
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    message = caught.value.message
    assert "partnercenter-exporter login" in message
    assert "switch to method refresh_token" not in message
    assert message.endswith(f"[AADSTS{code}]")


def test_sign_in_frequency_arrives_as_interaction_required_and_asks_for_login(
        aad: Any, tmp_path: Path) -> None:
    """AADSTS70043 comes as error interaction_required; it names Conditional Access sign-in
    frequency and login."""
    aad.token.mock(return_value=httpx.Response(400, json=aad_error("interaction_required", 70043)))
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    assert "sign-in frequency" in caught.value.message
    assert "partnercenter-exporter login" in caught.value.message


@pytest.mark.parametrize(("method", "expected"), [
    ("refresh_token", "Microsoft Graph delegated permission DelegatedAdminRelationship.Read.All"),
    ("client_credentials", "Microsoft Graph application permission DelegatedAdminRelationship.Read.All"),
])
def test_missing_consent_for_graph_names_the_graph_permission(aad: Any, tmp_path: Path, method: str,
                                                              expected: str) -> None:
    """AADSTS65001 on a Graph token names Graph's permission, not Partner Center's."""
    aad.token.mock(return_value=httpx.Response(400, json=aad_error("invalid_grant", 65001)))
    config = (tenant(seed="seed-rt", cache=tmp_path / "cache.json") if method == "refresh_token"
              else tenant("client_credentials", secret="s3cr3t-value"))
    with pytest.raises(PollError) as caught:
        provider(config).get_token(scope="https://graph.microsoft.com/.default")
    assert expected in caught.value.message
    assert "Partner Center" not in caught.value.message


@pytest.mark.parametrize(("valid_from_days", "days", "says"), [
    (-400, 365, "expired on"),  # ended 35 days before NOW
    (10, 365, "is not valid before"),  # a clock behind, or a certificate made for later
], ids=["expired", "not-yet-valid"])
def test_a_certificate_outside_its_dates_fails_the_sign_in_without_a_request(
        aad: Any, tmp_path: Path, valid_from_days: int, days: int, says: str) -> None:
    """A certificate outside its validity at sign-in time is reason auth, named, with no request."""
    start = dt.datetime.fromtimestamp(NOW, dt.UTC) + dt.timedelta(days=valid_from_days)
    write_client_certificate(tmp_path / "app.pem", days=days, valid_from=start)
    auth = AuthConfig(method="client_credentials",
                      client_certificate=load_client_certificate(tmp_path / "app.pem", None))
    tokens = provider(dataclasses.replace(tenant("client_credentials"), auth=auth))
    with pytest.raises(PollError) as caught:
        tokens.get_token()
    assert caught.value.reason == "auth"
    assert f"the certificate in {tmp_path / 'app.pem'} {says}" in caught.value.message
    assert len(aad.calls) == 0
    ends = (start + dt.timedelta(days=days)).timestamp()
    assert tokens.certificate_expires_at == pytest.approx(ends, abs=1)


MI_ENDPOINT = "http://mi.test.invalid/msi/token"


@pytest.mark.parametrize(("answer", "says"), [
    (httpx.Response(200, text="<html>proxy login</html>", headers={"Content-Type": "text/html"}),
     "a body that is not JSON"),
    (httpx.Response(200, json=["not", "an", "object"]), "JSON that is not a token response"),
    (httpx.Response(200, json={"access_token": "at", "expires_on": "soon", "resource": "r",
                               "token_type": "Bearer"}), "a token response MSAL cannot read"),
], ids=["html", "json-list", "expires-on-not-a-number"])
def test_a_managed_identity_answer_that_is_no_token_response_names_the_endpoint(
        monkeypatch: pytest.MonkeyPatch, answer: httpx.Response, says: str) -> None:
    """HTML, a JSON list or an unreadable expiry from the managed identity endpoint: one line naming
    that endpoint and the identity, not the authority host and not "a bug"."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", MI_ENDPOINT)
    monkeypatch.setenv("IDENTITY_HEADER", "header")
    auth = AuthConfig(method="client_credentials", managed_identity=ManagedIdentity())
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=MI_ENDPOINT).mock(return_value=answer)
        tokens = provider(dataclasses.replace(tenant("client_credentials"), auth=auth))
        with pytest.raises(PollError) as caught:
            tokens.get_token()
    assert caught.value.reason == "invalid_response"
    assert caught.value.message.startswith(f"the managed identity endpoint answered with {says}; check "
                                           f"that this runs on an Azure resource with the system-assigned")


@pytest.mark.parametrize("garbage", ["not json at all", "[1, 2]", "[" * 100_000])
def test_a_token_cache_file_replaced_by_garbage_says_so(aad: Any, tmp_path: Path, garbage: str) -> None:
    """A cache file another program overwrote is an auth error naming the file and what to do."""
    cache = tmp_path / "cache.json"
    cache.write_text(garbage)
    with pytest.raises(PollError) as caught:
        provider(tenant(cache=cache)).get_token()
    assert caught.value.reason == "auth"
    assert f"token cache {cache} holds " in caught.value.message
    assert "move it away (or delete the secret) and run login" in caught.value.message
    assert "authority_host" not in caught.value.message


def test_login_refused_for_another_tenant_does_not_say_run_login() -> None:
    """A sign-in login makes that the platform refuses (a code from another tenant) names the tenant
    to sign in to, not "run login" (the command that was just run)."""
    who = identity(tenant(), endpoints())
    error = classify_identity_error(aad_error("invalid_grant", 700005, "Provided Authorization Code is "
                                              "intended to use against other tenant"),
                                    identity=who, status=400, retry_after=None, login=True)
    assert "login" not in error.message.replace("the sign-in", "")
    assert f"sign in as a partner admin of tenant {TENANT_ID}" in error.message
    assert "AADSTS700005" in error.message


def test_a_sign_in_ahead_saves_the_first_poll_its_token_request(aad: Any, tmp_path: Path) -> None:
    """sign_in_ahead gets the token at start; the poll's get_token then uses it, with no request."""
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2")))
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    tokens.sign_in_ahead()
    assert aad.token.call_count == 1
    assert tokens.get_token() == "at-1"
    assert aad.token.call_count == 1


def test_a_failed_sign_in_ahead_is_the_polls_error_without_asking_again(aad: Any, tmp_path: Path) -> None:
    """A refusal during sign_in_ahead is raised, as it was, by the poll's get_token: one request,
    one classification; the poll after that asks the platform again."""
    aad.token.mock(side_effect=[httpx.Response(400, json=aad_error("invalid_grant", 70000)),
                                httpx.Response(200, json=token_body("at-1", "rt-2"))])
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    tokens.sign_in_ahead()
    with pytest.raises(PollError) as refused:
        tokens.get_token()
    assert "the refresh token is no longer valid" in refused.value.message  # the refusal itself
    assert aad.token.call_count == 1
    with pytest.raises(PollError, match="holds no signed-in account"):  # the next poll's own error
        tokens.get_token()


def test_a_sign_in_ahead_leaves_a_sign_in_in_flight_alone(aad: Any, tmp_path: Path) -> None:
    """While a poll's sign-in holds the provider, sign_in_ahead returns at once, asking nothing."""
    tokens = provider(tenant(seed="seed-rt", cache=tmp_path / "cache.json"))
    with tokens._in_flight:
        tokens.sign_in_ahead()
    assert len(aad.calls) == 0
