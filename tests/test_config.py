"""Config loading: fixtures with the exact errors they must produce, defaults and secret handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config, parse_duration

FIXTURES = Path(__file__).parent / "fixtures" / "config"
# As AKS workload identity sets them: the vault's default credential in the fixtures.
ENV = {"PCX_FIXTURE_SECRET": "fixture-env-secret-value",
       "AZURE_FEDERATED_TOKEN_FILE": str(FIXTURES / "secrets" / "federated-token"),
       "AZURE_CLIENT_ID": "55555555-5555-5555-5555-555555555555"}


def expected_errors(path: Path) -> list[str]:
    directory = str(path.parent.resolve())
    return [line.removeprefix("# error: ").replace("{dir}", directory)
            for line in path.read_text().splitlines() if line.startswith("# error: ")]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.bad.yaml")), ids=lambda p: p.name)
def test_bad_fixture_reports_exactly_its_errors(path: Path) -> None:
    """Each *.bad.yaml fails with exactly the `# error:` lines it lists, all at once."""
    expected = expected_errors(path)
    assert expected, f"{path.name} lists no expected errors"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV)
    assert sorted(caught.value.errors) == sorted(expected)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.good.yaml")), ids=lambda p: p.name)
def test_good_fixture_loads(path: Path) -> None:
    """Each *.good.yaml loads without errors."""
    assert load_config(path, environ=ENV).tenants


def test_collectors_graph_auth_and_graph_endpoints_load() -> None:
    """Collectors come out in their canonical order, graph_auth carries its own client id and
    secret, and the Graph URL loses its slash; tenants without collectors get dap_statistics."""
    config = load_config(FIXTURES / "full.good.yaml", environ=ENV)
    contoso, fabrikam, northwind = config.tenants
    assert contoso.collectors == ("dap_statistics", "gdap_relationships", "dap_customers")
    assert fabrikam.collectors == ("gdap_relationships",)
    assert northwind.collectors == ("dap_statistics",)
    assert contoso.graph_client_id == "44444444-4444-4444-4444-444444444444"
    assert contoso.graph_auth is not None
    assert contoso.graph_auth.method == "client_credentials"
    assert contoso.graph_auth.client_secret is not None
    assert contoso.graph_auth.client_secret.value == "fixture-client-secret-value"
    assert fabrikam.graph_auth is None
    assert config.endpoints.graph_url == "https://graph.microsoft.us"
    assert config.endpoints.graph_scope == "https://graph.microsoft.us/.default"
    assert config.endpoints.dap_customers_url.endswith("/delegatedAdminCustomers")


def test_minimal_config_gets_documented_defaults() -> None:
    """Unset keys take the documented defaults and relative paths resolve next to the config."""
    config = load_config(FIXTURES / "minimal.good.yaml", environ={})
    assert config.poll_interval == 900
    assert config.request_timeout == 30
    assert config.inactive_thresholds_days == (30, 60, 90)
    assert config.poll_concurrency == 16
    assert config.endpoints.authority_host == "https://login.microsoftonline.com"
    assert config.endpoints.scope == "https://api.partnercustomeradministration.microsoft.com/.default"
    assert config.endpoints.dap_statistics_url.endswith(
        "/CustomerServiceAdminApi/Web/v1/delegatedAdminStatistics")
    assert config.endpoints.dap_customers_url == (
        "https://traf-pcsvcadmin-prod.trafficmanager.net/CustomerServiceAdminApi/Web/v1/delegatedAdminCustomers")
    assert config.endpoints.graph_url == "https://graph.microsoft.com"
    assert config.endpoints.graph_scope == "https://graph.microsoft.com/.default"
    assert config.tenants[0].collectors == ("dap_statistics",)
    auth = config.tenants[0].auth
    assert auth.method == "refresh_token"
    assert auth.token_cache_file == (FIXTURES / "state" / "contoso.json").resolve()


def test_full_config_resolves_every_secret_source() -> None:
    """Secrets load from *_file and *_env; thresholds are sorted; the authority loses its slash."""
    config = load_config(FIXTURES / "full.good.yaml", environ=ENV)
    contoso, fabrikam, northwind = config.tenants
    assert contoso.auth.client_secret is not None
    assert contoso.auth.client_secret.value == "fixture-env-secret-value"
    assert contoso.auth.refresh_token is not None
    assert contoso.auth.refresh_token.value == "fixture-refresh-token-seed"
    assert fabrikam.auth.client_secret is not None
    assert fabrikam.auth.client_secret.value == "fixture-client-secret-value"
    assert northwind.auth.password is not None
    assert northwind.auth.password.value == "fixture-password-value"
    assert config.inactive_thresholds_days == (30, 60, 90, 180)
    assert config.poll_interval == 5400
    assert config.endpoints.authority_host == "https://login.microsoftonline.us"
    assert sorted(config.secret_values()) == sorted([
        "fixture-env-secret-value", "fixture-refresh-token-seed", "fixture-client-secret-value",
        "fixture-client-secret-value", "fixture-password-value"])


def test_secret_values_never_show_in_repr_or_errors() -> None:
    """Neither a loaded secret's repr nor the literal-secret error text contains the value."""
    config = load_config(FIXTURES / "full.good.yaml", environ=ENV)
    assert "fixture-client-secret-value" not in repr(config)
    assert "fixture-env-secret-value" not in str(config.tenants[0].auth.client_secret)
    with pytest.raises(ConfigError) as caught:
        load_config(FIXTURES / "literal-secret.bad.yaml", environ=ENV)
    assert "must-not-be-echoed" not in str(caught.value)


def test_missing_config_file_is_one_clear_error(tmp_path: Path) -> None:
    """A config path that does not exist gives one line naming the file."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yml")
    assert caught.value.errors == [
        f"config.file: cannot read {tmp_path / 'nope.yml'}: No such file or directory"]


def test_unreadable_token_cache_is_reported(tmp_path: Path) -> None:
    """A token cache that is not JSON is caught by the check, not at the first poll."""
    (tmp_path / "cache.json").write_text("not json")
    (tmp_path / "c.yaml").write_text(
        "tenants:\n- name: a\n  tenant_id: a.onmicrosoft.com\n"
        "  client_id: 11111111-1111-1111-1111-111111111111\n  auth: {token_cache_file: cache.json}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert caught.value.errors == [
        f"tenants[0].auth.token_cache_file: {tmp_path / 'cache.json'} is not a valid token cache "
        f"(not JSON); move it away and run login again"]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("1h30m", 5400),
                                               ("1d", 86400), ("500ms", 0.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    """Prometheus-style durations parse to seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "m", "1.5m", "15 m", "-1m", "1w"])
def test_parse_duration_rejects(text: str) -> None:
    """Durations without a known unit, with spaces or fractions are refused."""
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def _vault_tenant(**vault: object) -> dict[str, object]:
    return {"tenants": [{"name": "a", "tenant_id": "00000000-0000-0000-0000-000000000001",
                         "client_id": "11111111-1111-1111-1111-111111111111", "auth": {"token_store": {
                             "azure_key_vault": {"vault_url": "https://v.vault.azure.net",
                                                 "secret_name": "pcx", **vault}}}}]}


def test_workload_identity_without_the_projected_token_says_how_to_get_it() -> None:
    """workload_identity: true with AZURE_FEDERATED_TOKEN_FILE unset names the variable and the
    pod label that makes AKS set it."""
    raw = {"tenants": [{"name": "a", "tenant_id": "00000000-0000-0000-0000-000000000001",
                        "client_id": "11111111-1111-1111-1111-111111111111",
                        "auth": {"method": "client_credentials", "workload_identity": True}}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={}, base_dir=FIXTURES)
    (line,) = caught.value.errors
    assert line.startswith("tenants[0].auth.workload_identity: environment variable "
                           "AZURE_FEDERATED_TOKEN_FILE is not set")
    assert 'azure.workload.identity/use: "true"' in line


@pytest.mark.parametrize(("environ", "expected"), [
    ({"AZURE_CLIENT_SECRET": "vault-secret", "AZURE_CLIENT_ID": "22222222-2222-2222-2222-222222222222"},
     "secret"),
    ({"AZURE_CLIENT_ID": "22222222-2222-2222-2222-222222222222"}, "user-assigned"),
    ({}, "system-assigned"),
])
def test_vault_credential_defaults_to_the_azure_environment(environ: dict[str, str], expected: str) -> None:
    """With no credential keys, the vault is reached as the Azure SDKs would: a secret from
    AZURE_CLIENT_SECRET, else the managed identity (user-assigned when AZURE_CLIENT_ID is set)."""
    store = parse_config(_vault_tenant(), environ=environ, base_dir=FIXTURES).tenants[0].auth.token_store
    assert store is not None
    access = store.access
    if expected == "secret":
        assert access.client_secret is not None
        assert access.client_secret.source == "environment variable AZURE_CLIENT_SECRET"
        assert store.client_id == environ["AZURE_CLIENT_ID"]
    else:
        assert access.managed_identity is not None
        assert access.managed_identity.client_id == environ.get("AZURE_CLIENT_ID")


def test_certificate_thumbprints_come_from_the_certificate() -> None:
    """The SHA-1 thumbprint the app registration shows is computed from the PEM's certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    config = load_config(FIXTURES / "azure-credentials.good.yaml", environ=ENV)
    cert = config.tenants[0].auth.client_certificate
    assert cert is not None
    pem = x509.load_pem_x509_certificates((FIXTURES / "secrets" / "client-cert.pem").read_bytes())[0]
    assert cert.thumbprint_sha1 == pem.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
    assert "PRIVATE KEY" not in repr(cert)


def test_vault_default_workload_identity_needs_its_token_file() -> None:
    """AZURE_FEDERATED_TOKEN_FILE naming a missing file is an error at the vault, naming the file."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_vault_tenant(), environ={"AZURE_FEDERATED_TOKEN_FILE": "/nonexistent/token",
                                               "AZURE_CLIENT_ID": "22222222-2222-2222-2222-222222222222"},
                     base_dir=FIXTURES)
    assert caught.value.errors == ["tenants[0].auth.token_store.azure_key_vault: file /nonexistent/token "
                                   "does not exist; it holds the federated token the platform (the "
                                   "kubelet, a CI runner) writes"]


@pytest.mark.parametrize("cache", ['{"RefreshToken": {"k": 1}}', '{"Other": []}'])
def test_a_token_cache_the_exporter_would_refuse_fails_the_check(tmp_path: Path, cache: str) -> None:
    """The config check refuses every cache the token store refuses at run time (one shape check):
    an MSAL section whose entries are not objects, or any section that is not an object."""
    (tmp_path / "cache.json").write_text(cache)
    (tmp_path / "cache.json").chmod(0o600)
    (tmp_path / "c.yaml").write_text(
        "tenants:\n- name: a\n  tenant_id: a.onmicrosoft.com\n"
        "  client_id: 11111111-1111-1111-1111-111111111111\n  auth: {token_cache_file: cache.json}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert caught.value.errors == [f"tenants[0].auth.token_cache_file: {tmp_path / 'cache.json'} is JSON but "
                                   f"not an MSAL token cache; move it away and run login again"]


def _secret_file_config(tmp_path: Path, mode: int) -> Path:
    """A config whose one secret, a client secret file, has `mode`."""
    secret = tmp_path / "client-secret"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(mode)
    (tmp_path / "c.yaml").write_text(
        "tenants:\n- name: a\n  tenant_id: a.onmicrosoft.com\n"
        "  client_id: 11111111-1111-1111-1111-111111111111\n"
        "  auth: {method: client_credentials, client_secret_file: client-secret}\n")
    return tmp_path / "c.yaml"


def test_a_secret_file_others_can_read_gets_a_warning_naming_the_chmod(tmp_path: Path) -> None:
    """A secret file at 0644 loads, with one warning that names the key, the file and the fix."""
    config = load_config(_secret_file_config(tmp_path, 0o644))
    secret = tmp_path / "client-secret"
    assert config.warnings == (f"tenants[0].auth.client_secret_file: {secret} is readable by others "
                               f"(mode 0644); it holds a secret: run chmod 0400 {secret}",)


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o640])
def test_a_secret_file_kept_to_this_user_or_its_own_group_gets_no_warning(tmp_path: Path, mode: int) -> None:
    """0400, 0600, and 0640 with the process's own group (Kubernetes' fsGroup, a systemd unit's
    group) are how the guides keep secrets: no warning."""
    assert load_config(_secret_file_config(tmp_path, mode)).warnings == ()


def test_a_private_key_others_can_read_gets_a_warning(tmp_path: Path) -> None:
    """A client certificate file (it holds the private key) readable by others is named too."""
    pem = tmp_path / "cert.pem"
    pem.write_bytes((FIXTURES / "secrets" / "client-cert.pem").read_bytes())
    pem.chmod(0o644)
    (tmp_path / "c.yaml").write_text(
        "tenants:\n- name: a\n  tenant_id: a.onmicrosoft.com\n"
        "  client_id: 11111111-1111-1111-1111-111111111111\n"
        "  auth: {method: client_credentials, client_certificate_file: cert.pem}\n")
    assert load_config(tmp_path / "c.yaml").warnings == (
        f"tenants[0].auth.client_certificate_file: {pem} is readable by others (mode 0644); it holds a "
        f"private key: run chmod 0400 {pem}",)
