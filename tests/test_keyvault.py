"""The Key Vault client against the simulator's vault: challenge, domain check, throttling, errors."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from exporter.keyvault import MAX_SECRET_BYTES, KeyVaultSecrets
from exporter.model import PollError
from exporter.simulator import Fault, Simulator

VAULT_APP = "66666666-6666-6666-6666-666666666666"
TENANT = "00000000-0000-0000-0000-0000000000aa"


class Tokens:
    """Tokens from the simulator's identity platform, reused until a fresh one is asked for;
    records what was asked."""

    def __init__(self, sim: Simulator, http: httpx.Client) -> None:
        self.sim, self.http = sim, http
        self.asked: list[tuple[str, bool]] = []
        self.cached: str | None = None

    def __call__(self, scope: str, fresh: bool) -> str:
        self.asked.append((scope, fresh))
        if self.cached is not None and not fresh:
            return self.cached
        answer = self.http.post(f"{self.sim.base_url}/{TENANT}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": VAULT_APP, "client_secret": "s3cret",
            "scope": scope})
        self.cached = str(answer.json()["access_token"])
        return self.cached


Vault = tuple[Simulator, KeyVaultSecrets, "Tokens", list[float]]


@pytest.fixture
def vault() -> Iterator[Vault]:
    with Simulator() as sim:
        sim.add_tenant(TENANT, customers=1)
        sim.add_client(VAULT_APP, secret="s3cret")
        sim.keyvault.grant(VAULT_APP)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(sim.certs.ca_file))) as http:
            tokens = Tokens(sim, http)
            slept: list[float] = []
            yield sim, KeyVaultSecrets(sim.vault_url, http, tokens, sleep=slept.append), tokens, slept


def test_first_call_learns_the_scope_from_the_challenge(vault: Vault) -> None:
    """The first request goes without a token; the 401 challenge's resource becomes the scope."""
    sim, secrets, tokens, _ = vault
    assert secrets.get("absent") is None  # 404 SecretNotFound: no secret yet
    secrets.set("cache", "v1")
    assert secrets.get("cache") == "v1"
    assert tokens.asked[0] == (sim.keyvault.resource + "/.default", False)
    assert [r.status for r in sim.requests if r.target == "vault"] == [401, 404, 200, 200]


def test_a_challenge_for_another_domain_gets_no_token(vault: Vault) -> None:
    """A challenge naming a resource the vault's host is not under is refused, token unsent."""
    sim, secrets, tokens, _ = vault
    sim.keyvault.resource = "https://vault.azure.net"
    with pytest.raises(PollError, match="which is not its domain"):
        secrets.get("cache")
    assert tokens.asked == []


def test_throttling_waits_retry_after_then_succeeds(vault: Vault) -> None:
    """429 with Retry-After is retried after that many seconds."""
    sim, secrets, _, slept = vault
    sim.inject(Fault("vault", 429, {"error": {"code": "Throttled", "message": "Too many"}},
                     headers={"Retry-After": "7"}))
    secrets.set("cache", "v1")
    assert slept == [7.0]
    assert sim.keyvault.versions("cache") == ["v1"]


def test_throttling_that_outlasts_the_attempts_is_reported(vault: Vault) -> None:
    """A vault that keeps answering 429 ends in a `throttled` error, not a hang."""
    sim, secrets, _, _ = vault
    sim.inject(Fault("vault", 429, headers={"Retry-After": "1"}, times=100))
    with pytest.raises(PollError) as caught:
        secrets.get("cache")
    assert caught.value.reason == "throttled"


def test_a_missing_role_names_the_action_and_the_role(vault: Vault) -> None:
    """403 ForbiddenByRbac: the message names the denied action and Key Vault Secrets Officer."""
    sim, secrets, _, _ = vault
    sim.keyvault.revoke(VAULT_APP)
    sim.keyvault.grant(VAULT_APP, "get")  # Secrets User: read only
    secrets.get("cache")
    with pytest.raises(PollError, match=r"setSecret/action\): give it the role Key Vault Secrets "
                                        r"Officer") as caught:
        secrets.set("cache", "v1")
    assert caught.value.reason == "auth"


def test_a_value_over_the_vault_limit_is_refused_before_sending(vault: Vault) -> None:
    """Key Vault keeps at most 25 KB a secret; a larger value fails here, not in the vault."""
    sim, secrets, _, _ = vault
    with pytest.raises(PollError, match="over Key Vault's limit"):
        secrets.set("cache", "x" * (MAX_SECRET_BYTES + 1))
    assert sim.count("vault") == 0


def test_a_revoked_token_is_replaced_once(vault: Vault) -> None:
    """A 401 for a token the vault used to accept asks the identity platform for a fresh one."""
    sim, secrets, tokens, _ = vault
    secrets.set("cache", "v1")
    sim.invalidate_access_tokens()
    assert secrets.get("cache") == "v1"
    assert tokens.asked[-1][1] is True
