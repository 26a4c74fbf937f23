"""Client credentials, one per app (a secret, a certificate, a federated token or a managed
identity), the Azure SDKs' `AZURE_*` environment conventions, and the Key Vault token store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from exporter.certificates import CertificateError, ClientCertificate, load_client_certificate
from exporter.config.types import AuthConfig, ClientAssertion, KeyVaultStore, ManagedIdentity, Secret
from exporter.config.walker import Walker
from exporter.config.yamlio import join_path, shown

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# Ways an app proves who it is, wherever app credentials are read (auth, graph_auth, the vault).
CREDENTIAL_KEYS = {"client_secret", "client_secret_file", "client_secret_env", "client_certificate_file",
                   "client_certificate_password_file", "client_certificate_password_env",
                   "client_certificate_send_chain", "client_assertion_file", "workload_identity"}
_TOKEN_STORE_KEYS = {"azure_key_vault"}
_VAULT_KEYS = {"vault_url", "secret_name", "tenant_id", "client_id", "managed_identity", *CREDENTIAL_KEYS}
# The Azure SDKs' environment conventions (EnvironmentCredential, WorkloadIdentityCredential,
# ManagedIdentityCredential), which AKS workload identity and most Azure hosting fill in.
AZURE_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"  # noqa: S105 -- a variable name
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
AZURE_TENANT_ID = "AZURE_TENANT_ID"
AZURE_CLIENT_CERTIFICATE_PATH = "AZURE_CLIENT_CERTIFICATE_PATH"
AZURE_CLIENT_CERTIFICATE_PASSWORD = "AZURE_CLIENT_CERTIFICATE_PASSWORD"  # noqa: S105 -- a variable name
AZURE_CLIENT_SECRET = "AZURE_CLIENT_SECRET"  # noqa: S105 -- a variable name
# Key Vault: secret names are 1-127 letters, digits and dashes; a value is at most 25 KB.
_SECRET_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")


@dataclass(frozen=True)
class Credential:
    """The one credential an app proves itself with; at most one field is set."""

    client_secret: Secret | None = None
    client_certificate: ClientCertificate | None = None
    client_assertion: ClientAssertion | None = None
    managed_identity: ManagedIdentity | None = None


def guid(c: Walker, data: dict[str, Any], key: str, path: str) -> str | None:
    value = c.string(data, key, path)
    if value is not None and not GUID_RE.match(value):
        c.add(join_path(path, key),
              f"must be the app registration's application id (a GUID), got {shown(value)}")
        return None
    return value


def _flag(c: Walker, data: dict[str, Any], key: str, path: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        c.add(join_path(path, key), f"must be true or false, got {shown(value)}")
        return False
    return value


def read_credential(c: Walker, data: dict[str, Any], path: str, *, required_why: str | None,
                managed_identity: bool) -> Credential | None:
    """The app's one credential: a secret, a certificate, a federated assertion or (where Azure
    offers it) a managed identity. None, with errors added, when there is not exactly one."""
    errors_before = len(c.errors)
    if "client_secret" in data:
        c.add(f"{path}.client_secret", "literal secrets are not allowed in the config; put the value "
                                       "in a file and set client_secret_file, or name an environment "
                                       "variable with client_secret_env")
    given = [key for key in ("client_secret_file", "client_secret_env", "client_certificate_file",
                             "client_assertion_file", "workload_identity", "managed_identity")
             if data.get(key) not in (None, False)]
    kinds = {key.removesuffix("_file").removesuffix("_env") for key in given}
    if len(kinds) > 1:
        c.add(path, f"set exactly one client credential, got {' and '.join(given)}")
        return None
    secret = c.secret(data, "client_secret", path, required=False)
    certificate = _certificate(c, data, path)
    assertion = _assertion(c, data, path)
    identity: ManagedIdentity | None = None
    if data.get("managed_identity") not in (None, False):
        if managed_identity:
            identity = _managed_identity(c, data["managed_identity"], f"{path}.managed_identity")
        else:
            c.add(f"{path}.managed_identity", "a managed identity can sign in only as itself (app-only): "
                                              "use it in graph_auth or for the token store's vault")
    if len(c.errors) > errors_before:
        return None
    if not given and required_why is not None:
        options = ("client_secret_file, client_secret_env, client_certificate_file, client_assertion_file, "
                   "workload_identity: true")
        if managed_identity:
            options += ", managed_identity"
        c.add(path, f"a client credential is required{required_why}: set one of {options}")
        return None
    return Credential(secret, certificate, assertion, identity)


def _certificate(c: Walker, data: dict[str, Any], path: str) -> ClientCertificate | None:
    file_value = c.string(data, "client_certificate_file", path)
    send_chain = _flag(c, data, "client_certificate_send_chain", path)
    if file_value is None:
        for key in ("client_certificate_password_file", "client_certificate_password_env",
                    "client_certificate_send_chain"):
            if key in data:
                c.add(join_path(path, key), "only used with client_certificate_file")
        return None
    password = c.secret(data, "client_certificate_password", path, required=False)
    cert_path = c.path(file_value)
    assert cert_path is not None
    try:
        certificate = load_client_certificate(cert_path, password.value if password else None,
                                              send_chain=send_chain)
    except CertificateError as err:
        c.add(join_path(path, "client_certificate_file"), str(err))
        return None
    c.warn_if_shared(cert_path, join_path(path, "client_certificate_file"), "a private key")
    return certificate


def _assertion(c: Walker, data: dict[str, Any], path: str) -> ClientAssertion | None:
    file_value = c.string(data, "client_assertion_file", path)
    workload = _flag(c, data, "workload_identity", path)
    if file_value is not None:
        return _token_file(c, file_value, join_path(path, "client_assertion_file"), "client_assertion_file")
    if not workload:
        return None
    where = join_path(path, "workload_identity")
    named = c.environ.get(AZURE_FEDERATED_TOKEN_FILE, "").strip()
    if not named:
        c.add(where, f"environment variable {AZURE_FEDERATED_TOKEN_FILE} is not set; in AKS, label "
                     f"the pod azure.workload.identity/use: \"true\" and run it with a service "
                     f"account annotated azure.workload.identity/client-id")
        return None
    return _token_file(c, named, where, AZURE_FEDERATED_TOKEN_FILE)


def _token_file(c: Walker, named: str, where: str, source: str) -> ClientAssertion | None:
    """A federated token file, which must exist now: the platform writes it before the start."""
    path = c.path(named)
    assert path is not None
    if not path.is_file():
        c.add(where, f"file {path} does not exist; it holds the federated token the "
                     f"platform (the kubelet, a CI runner) writes")
        return None
    return ClientAssertion(path, source)


def _managed_identity(c: Walker, value: Any, path: str) -> ManagedIdentity | None:
    if value is True:
        return ManagedIdentity()
    data = c.mapping(value, path, {"client_id"})
    if not isinstance(value, dict):
        return None
    return ManagedIdentity(guid(c, data, "client_id", path))


def token_store_config(c: Walker, value: Any, path: str) -> KeyVaultStore | None:
    """token_store: {azure_key_vault: {...}}: the cache in a Key Vault secret, reached app-only."""
    if value is None:
        return None
    data = c.mapping(value, path, _TOKEN_STORE_KEYS)
    if "azure_key_vault" not in data:
        if isinstance(value, dict):
            c.add(path, "name a store: azure_key_vault")
        return None
    where = f"{path}.azure_key_vault"
    vault = c.mapping(data["azure_key_vault"], where, _VAULT_KEYS)
    errors_before = len(c.errors)
    vault_url = c.string(vault, "vault_url", where, required=True)
    if vault_url is not None:
        parts = urlsplit(vault_url)
        if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            c.add(f"{where}.vault_url", f"must be the vault's URL, like https://contoso-pcx.vault.azure.net, "
                                        f"got {shown(vault_url)}")
    secret_name = c.string(vault, "secret_name", where, required=True)
    if secret_name is not None and not _SECRET_NAME_RE.match(secret_name):
        c.add(f"{where}.secret_name", f"must be 1-127 letters, digits and dashes (Key Vault's rule), "
                                      f"got {shown(secret_name)}")
    tenant_id = c.string(vault, "tenant_id", where) or c.environ.get(AZURE_TENANT_ID, "").strip() or None
    client_id = guid(c, vault, "client_id", where) or c.environ.get(AZURE_CLIENT_ID, "").strip() or None
    if any(key in vault for key in CREDENTIAL_KEYS | {"managed_identity"}):
        credential = read_credential(c, vault, where, required_why=None, managed_identity=True)
        source = "the config"
    else:
        credential, source = _azure_environment_credential(c, where, client_id)
    if credential is None or len(c.errors) > errors_before:
        return None
    if credential.managed_identity is None and client_id is None:
        c.add(f"{where}.client_id", f"required to sign in to the vault with {source}'s credential; "
                                    f"or set {AZURE_CLIENT_ID}")
        return None
    assert vault_url is not None
    assert secret_name is not None
    return KeyVaultStore(vault_url=vault_url.rstrip("/"), secret_name=secret_name,
                         access=AuthConfig(method="client_credentials", **vars(credential)),
                         client_id=client_id, tenant_id=tenant_id)


def _azure_environment_credential(c: Walker, where: str,
                                  client_id: str | None) -> tuple[Credential | None, str]:
    """What DefaultAzureCredential would pick from the environment: workload identity, then a
    certificate, then a secret, then the managed identity."""
    env = c.environ
    source = "the environment"
    if env.get(AZURE_FEDERATED_TOKEN_FILE, "").strip():
        assertion = _token_file(c, env[AZURE_FEDERATED_TOKEN_FILE].strip(), where,
                                AZURE_FEDERATED_TOKEN_FILE)
        return (Credential(client_assertion=assertion) if assertion else None), source
    if env.get(AZURE_CLIENT_CERTIFICATE_PATH, "").strip():
        path = c.path(env[AZURE_CLIENT_CERTIFICATE_PATH].strip())
        assert path is not None
        try:
            return Credential(client_certificate=load_client_certificate(
                path, env.get(AZURE_CLIENT_CERTIFICATE_PASSWORD) or None)), source
        except CertificateError as err:
            c.add(where, f"{AZURE_CLIENT_CERTIFICATE_PATH}: {err}")
            return None, source
    if env.get(AZURE_CLIENT_SECRET, "").strip():
        return Credential(client_secret=Secret(env[AZURE_CLIENT_SECRET].strip(),
                                                f"environment variable {AZURE_CLIENT_SECRET}")), source
    return Credential(managed_identity=ManagedIdentity(client_id)), source
