"""Azure-native credentials end to end over HTTPS against the simulator: certificate credentials,
workload identity federation, managed identity, and the token cache kept in Key Vault."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import token_store
from exporter.app import App, build_http_client, identity
from exporter.auth import interactive_login
from exporter.config import Config, parse_config
from exporter.model import Snapshot, SourceView
from exporter.simulator import Fault, Simulator
from exporter.simulator.assertions import write_client_certificate
from tests.conftest import CLIENT_ID, TENANT_ID
from tests.helpers.e2e import run_exporter

pytestmark = pytest.mark.e2e

APP_ID = "44444444-4444-4444-4444-444444444444"  # a confidential app with a certificate
GRAPH_APP = "55555555-5555-5555-5555-555555555555"  # the workload identity's app
VAULT_APP = "66666666-6666-6666-6666-666666666666"  # signs in to Key Vault
MANAGED_ID = "77777777-7777-7777-7777-777777777777"  # a user-assigned managed identity
SERVICE_ACCOUNT = "system:serviceaccount:monitoring:partnercenter-exporter"
SECRET_NAME = "pcx-contoso-token-cache"


def load(sim: Simulator, directory: Path, tenants: list[dict[str, Any]],
         environ: dict[str, str] | None = None) -> Config:
    raw = {"request_timeout": "5s", "endpoints": sim.endpoints_config(), "tenants": tenants}
    (directory / "config.yaml").write_text(yaml.safe_dump(raw))
    return parse_config(raw, environ=environ or {}, base_dir=directory)


def poll(app: App) -> Snapshot:
    """One poll of every source, keeping the app's HTTP client open for the next."""
    return app.poller.poll_all_once()


def view(snapshot: Snapshot, collector: str) -> SourceView:
    return next(v for v in snapshot.views if v.collector == collector)


def refresh_grants(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.target == "token" and r.detail == "refresh_token"
               and r.status == 200)


def stored_refresh_tokens(sim: Simulator) -> list[str]:
    """The refresh tokens in the newest version of the vault's secret."""
    cache = json.loads(sim.keyvault.versions(SECRET_NAME)[-1])
    return [entry["secret"] for entry in cache["RefreshToken"].values()]


# --- certificate credentials -------------------------------------------------------------------

def test_certificate_client_credentials_poll(tmp_path: Path) -> None:
    """A client_credentials tenant signs in with a certificate (a verified private_key_jwt
    assertion, no secret) and `--once` polls Partner Center."""
    with Simulator(accept_app_only=True) as sim:
        sim.add_tenant(TENANT_ID, customers=12)
        sim.add_client(APP_ID)
        sim.register_certificate(APP_ID, write_client_certificate(tmp_path / "app.pem"))
        load(sim, tmp_path, [{"name": "contoso", "tenant_id": TENANT_ID, "client_id": APP_ID, "auth": {
            "method": "client_credentials", "client_certificate_file": str(tmp_path / "app.pem")}}])
        result = run_exporter("--config.file", str(tmp_path / "config.yaml"), "--once")
        assert result.returncode == 0, result.stderr
        assert 'partnercenter_dap_customers{tenant="contoso"} 12' in result.stdout
        assert len(sim.assertions) == 1
        assert sim.count("token", 200) == 1


def test_certificate_the_platform_does_not_know_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A key not registered on the app: AADSTS700027, exit 1, and a hint naming the certificate."""
    with Simulator(accept_app_only=True) as sim:
        sim.add_tenant(TENANT_ID, customers=12)
        sim.add_client(APP_ID)
        sim.register_certificate(APP_ID, write_client_certificate(tmp_path / "registered.pem"))
        write_client_certificate(tmp_path / "other.pem")
        load(sim, tmp_path, [{"name": "contoso", "tenant_id": TENANT_ID, "client_id": APP_ID, "auth": {
            "method": "client_credentials", "client_certificate_file": str(tmp_path / "other.pem")}}])
        result = run_exporter("--config.file", str(tmp_path / "config.yaml"), "--once")
    assert result.returncode == 1
    assert "AADSTS700027" in result.stderr
    assert f"certificate {tmp_path / 'other.pem'} (thumbprint " in result.stderr
    assert "upload that certificate's public part to app " + APP_ID in result.stderr


EXPIRED_CERTIFICATE = Path(__file__).parent / "fixtures" / "config" / "secrets" / "client-cert-expired.pem"
EXPIRED_APP = "88888888-8888-8888-8888-888888888888"
EXPIRED_TENANT = "00000000-0000-0000-0000-0000000000e1"


def test_an_expired_certificate_fails_its_tenant_only(tmp_path: Path) -> None:
    """A tenant whose certificate expired fails with reason auth and says so; the other tenant is
    polled, the expiry is exported, and --config.check names the certificate (exit 1)."""
    expired = tmp_path / "expired.pem"  # the fixture, kept as a key should be (0600): no warning
    expired.write_bytes(EXPIRED_CERTIFICATE.read_bytes())
    expired.chmod(0o600)
    with Simulator(accept_app_only=True) as sim:
        sim.add_tenant(TENANT_ID, customers=12)
        sim.add_tenant(EXPIRED_TENANT, customers=3)
        sim.add_client(APP_ID)
        sim.add_client(EXPIRED_APP)
        sim.register_certificate(APP_ID, write_client_certificate(tmp_path / "app.pem"))
        load(sim, tmp_path, [
            {"name": "contoso", "tenant_id": TENANT_ID, "client_id": APP_ID, "auth": {
                "method": "client_credentials", "client_certificate_file": str(tmp_path / "app.pem")}},
            {"name": "lapsed", "tenant_id": EXPIRED_TENANT, "client_id": EXPIRED_APP, "auth": {
                "method": "client_credentials", "client_certificate_file": str(expired)}}])
        once = run_exporter("--config.file", str(tmp_path / "config.yaml"), "--once")
        check = run_exporter("--config.file", str(tmp_path / "config.yaml"), "--config.check")
        requests = [r for r in sim.requests if r.tenant == EXPIRED_TENANT]
    assert once.returncode == 1
    assert 'partnercenter_dap_customers{tenant="contoso"} 12' in once.stdout
    assert (f"error: tenant lapsed: dap_statistics: auth: the certificate in {expired} expired "
            f"on 2025-12-02") in once.stderr
    assert "error: tenant contoso" not in once.stderr
    assert not requests  # refused before any sign-in is tried
    assert re.search(r'partnercenter_exporter_client_certificate_expiry_timestamp_seconds\{tenant="lapsed"\} '
                     r"1\.7646", once.stdout)  # 2025-12-02
    assert 'client_certificate_expiry_timestamp_seconds{tenant="contoso"}' in once.stdout
    assert check.returncode == 1
    assert check.stderr.strip() == (f"tenants[1].auth.client_certificate_file: the certificate in "
                                    f"{expired} expired on 2025-12-02; create a new one, upload "
                                    f"it to the app registration and replace the file")


# --- workload identity and managed identity for Graph ----------------------------------------

def test_workload_identity_graph_poll_reads_the_replaced_token_file(tmp_path: Path) -> None:
    """graph_auth with workload_identity reads AZURE_FEDERATED_TOKEN_FILE at every token request:
    after the kubelet replaces the file, the next poll presents the new token."""
    token_file = tmp_path / "azure-identity-token"
    # Tokens live 60 s, inside MSAL's 5-minute margin: every poll asks for a new Graph token.
    with Simulator(token_lifetime=60) as sim:
        sim.add_tenant(TENANT_ID, customers=30)
        sim.add_client(CLIENT_ID)
        sim.add_client(GRAPH_APP)
        sim.add_federated_credential(GRAPH_APP, SERVICE_ACCOUNT)
        first = sim.federated_token(SERVICE_ACCOUNT)
        token_file.write_text(first)
        (tmp_path / "seed").write_text(sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test"))
        config = load(sim, tmp_path, [{
            "name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
            "collectors": ["gdap_relationships"], "graph_auth": {"workload_identity": True},
            "auth": {"token_cache_file": str(tmp_path / "cache.json"),
                     "refresh_token_file": str(tmp_path / "seed")}}],
            environ={"AZURE_FEDERATED_TOKEN_FILE": str(token_file), "AZURE_CLIENT_ID": GRAPH_APP})
        app = App(config, config_path=str(tmp_path / "config.yaml"), listen_address=None)
        try:
            assert view(poll(app), "gdap_relationships").last_poll_success
            assert sim.assertions == [first]
            second = sim.federated_token(SERVICE_ACCOUNT)
            (tmp_path / "rotated").write_text(second)
            os.replace(tmp_path / "rotated", token_file)  # as the kubelet swaps the projected file
            assert view(poll(app), "gdap_relationships").last_poll_success
        finally:
            app.stop()
    assert second != first
    assert sim.assertions == [first, second]


def test_managed_identity_graph_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """graph_auth with a user-assigned managed identity gets its Graph token from the managed
    identity endpoint (IDENTITY_ENDPOINT, as Container Apps sets it) through MSAL."""
    with Simulator() as sim:
        sim.add_tenant(TENANT_ID, customers=30)
        sim.add_client(CLIENT_ID)
        sim.add_managed_identity(TENANT_ID, MANAGED_ID)
        for name, value in sim.managed_identity_environment().items():
            monkeypatch.setenv(name, value)
        (tmp_path / "seed").write_text(sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test"))
        config = load(sim, tmp_path, [{
            "name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
            "collectors": ["gdap_relationships"],
            "graph_auth": {"managed_identity": {"client_id": MANAGED_ID}},
            "auth": {"token_cache_file": str(tmp_path / "cache.json"),
                     "refresh_token_file": str(tmp_path / "seed")}}])
        app = App(config, config_path=str(tmp_path / "config.yaml"), listen_address=None)
        try:
            graph = view(poll(app), "gdap_relationships")
        finally:
            app.stop()
        assert graph.last_poll_success, graph.last_error_message
        assert sim.count("managed_identity", 200) == 1
        assert sim.count("graph", 200) >= 1


# --- the token cache in Key Vault ----------------------------------------------------------------

class VaultStack:
    """A refresh_token tenant whose token cache lives only in the simulator's Key Vault, reached
    with a certificate; Partner Center tokens live 60 s, so every poll rotates the refresh token."""

    def __init__(self, sim: Simulator, directory: Path) -> None:
        self.sim = sim
        self.directory = directory
        sim.add_tenant(TENANT_ID, customers=40)
        sim.add_client(CLIENT_ID)
        sim.add_client(VAULT_APP)
        sim.register_certificate(VAULT_APP, write_client_certificate(directory / "vault-app.pem"))
        sim.keyvault.grant(VAULT_APP, "get", "set")
        self.config = load(sim, directory, [{
            "name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID, "auth": {"token_store": {
                "azure_key_vault": {"vault_url": sim.vault_url, "secret_name": SECRET_NAME,
                                    "client_id": VAULT_APP,
                                    "client_certificate_file": str(directory / "vault-app.pem")}}}}])

    def login(self) -> None:
        with build_http_client(self.config) as http:
            interactive_login(identity(self.config.tenants[0], self.config.endpoints), http,
                              out=io.StringIO())

    def app(self) -> App:
        return App(self.config, config_path=str(self.directory / "config.yaml"), listen_address=None)

    def poll_new_process(self) -> SourceView:
        """What a freshly started exporter sees: a new App, polled once, then stopped."""
        app = self.app()
        try:
            return view(poll(app), "dap_statistics")
        finally:
            app.stop()


@pytest.fixture
def vault(tmp_path: Path) -> Any:
    with Simulator(token_lifetime=60) as sim:
        stack = VaultStack(sim, tmp_path)
        stack.login()
        yield stack


def test_login_writes_the_token_cache_to_key_vault(vault: VaultStack) -> None:
    """`login` for a tenant with token_store saves its sign-in as one secret version holding the
    refresh token, its account and nothing that expires within the hour."""
    versions = vault.sim.keyvault.versions(SECRET_NAME)
    assert len(versions) == 1
    assert set(json.loads(versions[0])) == {"RefreshToken", "Account", "AppMetadata"}
    assert stored_refresh_tokens(vault.sim) == vault.sim.refresh_token_history(TENANT_ID)[-1:]


def test_each_rotation_is_one_vault_write_and_a_restart_redeems_the_newest(vault: VaultStack) -> None:
    """Over several polls every refresh-token rotation makes exactly one new secret version; a new
    process reads the vault and redeems the newest refresh token."""
    app = vault.app()
    try:
        for _ in range(3):
            assert view(poll(app), "dap_statistics").last_poll_success
    finally:
        app.stop()
    rotations = refresh_grants(vault.sim)
    assert rotations >= 3
    assert len(vault.sim.keyvault.versions(SECRET_NAME)) == 1 + rotations  # login, then one per rotation
    assert stored_refresh_tokens(vault.sim) == vault.sim.refresh_token_history(TENANT_ID)[-1:]

    assert vault.poll_new_process().last_poll_success
    assert vault.sim.count("token", 400) == 0  # no redeemed (stale) refresh token was sent
    assert refresh_grants(vault.sim) == rotations + 1


def test_polls_go_on_through_a_vault_outage_and_the_newest_token_lands_after(vault: VaultStack) -> None:
    """While the vault answers 503 the polls succeed on the in-memory token and the view says the
    store lags; once the vault is back the newest refresh token is written, so a restart signs in."""
    app = vault.app()
    try:
        assert view(poll(app), "dap_statistics").last_poll_success
        assert view(poll(app), "dap_statistics").token_store_pending is False
        vault.sim.inject(Fault("vault", 503, headers={"Retry-After": "0"}, times=10**6))
        for _ in range(2):
            during = view(poll(app), "dap_statistics")
            assert during.last_poll_success
            assert during.token_store_pending is True  # partnercenter_exporter_token_store_write_pending 1
        stored_during = stored_refresh_tokens(vault.sim)
        assert stored_during != vault.sim.refresh_token_history(TENANT_ID)[-1:]  # the vault lags
        vault.sim.clear_faults("vault")
        after = view(poll(app), "dap_statistics")
        assert after.last_poll_success
        assert after.token_store_pending is False
    finally:
        app.stop()
    assert stored_refresh_tokens(vault.sim) == vault.sim.refresh_token_history(TENANT_ID)[-1:]
    assert vault.poll_new_process().last_poll_success


def test_a_missing_vault_role_is_a_clear_error(vault: VaultStack) -> None:
    """Without a data-plane role the vault answers 403 and the poll fails naming the role to grant."""
    vault.sim.keyvault.revoke(VAULT_APP)
    failed = vault.poll_new_process()
    assert not failed.last_poll_success
    assert failed.last_error_reason == "auth"
    message = failed.last_error_message or ""
    assert f"refused app {VAULT_APP}" in message
    assert "getSecret" in message
    assert "Key Vault Secrets Officer" in message


def test_a_vault_sign_in_failure_says_it_was_the_vault(vault: VaultStack) -> None:
    """When the vault's own credential is refused, the poll error names the vault's sign-in (and
    the certificate), not Partner Center's."""
    # The app's certificate was rotated in Entra, but not in the exporter.
    vault.sim.app_credentials[VAULT_APP].certificates[:] = [
        write_client_certificate(vault.directory / "rotated.pem")]
    failed = vault.poll_new_process()
    message = failed.last_error_message or ""
    assert message.startswith(f"signing in to Key Vault {vault.sim.vault_url} as app {VAULT_APP}")
    assert "AADSTS700027" in message
    assert "vault-app.pem" in message


def test_shutdown_saves_a_token_the_vault_missed(vault: VaultStack) -> None:
    """A rotation the vault missed is written at shutdown when the vault is back by then."""
    app = vault.app()
    try:
        assert view(poll(app), "dap_statistics").last_poll_success  # read the vault at start
        vault.sim.inject(Fault("vault", 503, headers={"Retry-After": "0"}, times=10**6))
        assert view(poll(app), "dap_statistics").token_store_pending is True
        vault.sim.clear_faults("vault")
    finally:
        app.stop()
    assert stored_refresh_tokens(vault.sim) == vault.sim.refresh_token_history(TENANT_ID)[-1:]


def test_a_login_while_the_exporter_runs_is_used_not_overwritten(
        vault: VaultStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `login` made while the exporter runs is what its next poll redeems; the exporter's own
    rotation neither overwrites it in the vault nor leaves it a live, orphaned refresh token."""
    app = vault.app()
    try:
        assert view(poll(app), "dap_statistics").last_poll_success  # rotates and writes the vault
        vault.login()
        logged_in = stored_refresh_tokens(vault.sim)
        monkeypatch.setattr(token_store, "RECHECK_EVERY", 0.0)  # the next poll is a minute on
        assert view(poll(app), "dap_statistics").last_poll_success
    finally:
        app.stop()
    assert not set(logged_in) & set(vault.sim.live_refresh_tokens())  # redeemed, so not orphaned
    assert stored_refresh_tokens(vault.sim) == vault.sim.refresh_token_history(TENANT_ID)[-1:]


def test_the_rotation_write_adopts_a_login_it_finds_in_the_vault(vault: VaultStack) -> None:
    """Even before its periodic look, a rotation reads the vault first and adopts a newer login
    rather than writing over it."""
    app = vault.app()
    try:
        assert view(poll(app), "dap_statistics").last_poll_success
        vault.login()
        logged_in = stored_refresh_tokens(vault.sim)
        poll(app)  # rotates the exporter's own token, then finds the login at the write
        assert stored_refresh_tokens(vault.sim) == logged_in
        assert view(poll(app), "dap_statistics").last_poll_success  # on the login's token
    finally:
        app.stop()
    assert not set(logged_in) & set(vault.sim.live_refresh_tokens())


@pytest.mark.parametrize(("stored", "says"), [
    ("[]", "JSON that is not an MSAL token cache (a list)"),
    ('"x"', "JSON that is not an MSAL token cache (a str)"),
    ("null", "JSON that is not an MSAL token cache (a NoneType)"),
    ("[" * 100_000, "text that is not JSON"),
], ids=["list", "string", "null", "nested-100k"])
def test_a_vault_secret_that_is_no_token_cache_says_so(vault: VaultStack, stored: str, says: str) -> None:
    """A vault secret someone overwrote with other JSON (or none) fails the tenant with reason auth,
    naming the secret and what to do, never "this is a bug"."""
    vault.sim.keyvault.put(SECRET_NAME, stored)
    failed = vault.poll_new_process()
    assert failed.last_error_reason == "auth"
    assert failed.last_error_message == (
        f"Key Vault secret {SECRET_NAME} in {vault.sim.vault_url} holds {says}: something else wrote it; "
        f"move it away (or delete the secret) and run login")
