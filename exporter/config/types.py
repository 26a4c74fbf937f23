"""The exporter's config as frozen values: what the schema produces and the rest of the exporter reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from exporter.certificates import ClientCertificate
from exporter.endpoints import Endpoints

DEFAULT_POLL_INTERVAL = 15 * 60.0
MIN_POLL_INTERVAL = 60.0
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_THRESHOLDS = (30, 60, 90)
DEFAULT_POLL_CONCURRENCY = 16

AuthMethod = Literal["refresh_token", "client_credentials", "username_password"]
AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)


@dataclass(frozen=True)
class Secret:
    """A secret value; its repr and str never show the value."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


@dataclass(frozen=True)
class ClientAssertion:
    """A federated token in a file, read again for every token request: the kubelet rotates it."""

    path: Path
    source: str  # how the path was named: client_assertion_file or AZURE_FEDERATED_TOKEN_FILE

    def __str__(self) -> str:
        return f"client assertion file {self.path} (from {self.source})"


@dataclass(frozen=True)
class ManagedIdentity:
    """The Azure resource's own identity; client_id None means the system-assigned one."""

    client_id: str | None = None

    def __str__(self) -> str:
        if self.client_id is None:
            return "the system-assigned managed identity"
        return f"the user-assigned managed identity {self.client_id}"


@dataclass(frozen=True)
class KeyVaultStore:
    """The token cache kept as one secret in Azure Key Vault instead of a file."""

    vault_url: str
    secret_name: str
    # How the exporter signs in to the vault: app-only, as workload identity, managed identity,
    # a certificate or a secret. tenant_id None: the partner tenant's.
    access: AuthConfig
    client_id: str | None = None
    tenant_id: str | None = None

    def __str__(self) -> str:
        return f"Key Vault secret {self.secret_name} in {self.vault_url}"


@dataclass(frozen=True)
class AuthConfig:
    method: AuthMethod
    client_secret: Secret | None = None
    client_certificate: ClientCertificate | None = None
    client_assertion: ClientAssertion | None = None
    managed_identity: ManagedIdentity | None = None
    token_cache_file: Path | None = None
    token_store: KeyVaultStore | None = None
    refresh_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None

    @property
    def confidential(self) -> bool:
        """Whether the app proves who it is (secret, certificate or assertion) as a confidential client."""
        return any(x is not None for x in (self.client_secret, self.client_certificate,
                                           self.client_assertion))

    @property
    def cache_name(self) -> str:
        """Where the token cache lives, as messages name it."""
        if self.token_store is not None:
            return str(self.token_store)
        return f"token cache {self.token_cache_file}"


@dataclass(frozen=True)
class TenantConfig:
    name: str
    tenant_id: str
    client_id: str
    auth: AuthConfig
    # The schema fills in the default list: this module does not know the collector registry.
    collectors: tuple[str, ...]
    # App-only credentials for Microsoft Graph; None: Graph uses `auth` as well.
    graph_auth: AuthConfig | None = None
    graph_client_id: str | None = None


@dataclass(frozen=True)
class Config:
    tenants: tuple[TenantConfig, ...]
    poll_interval: float = DEFAULT_POLL_INTERVAL
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    inactive_thresholds_days: tuple[int, ...] = DEFAULT_THRESHOLDS
    poll_concurrency: int = DEFAULT_POLL_CONCURRENCY
    endpoints: Endpoints = field(default_factory=Endpoints)
    # Said at each load, not errors: a file holding a secret that others can read.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def sign_ins(self) -> Iterator[tuple[str, AuthConfig]]:
        """Every way the config signs in, by the key that holds it: each tenant's auth, graph_auth
        and its token store's vault access."""
        for i, tenant in enumerate(self.tenants):
            store = tenant.auth.token_store
            for where, auth in (("auth", tenant.auth), ("graph_auth", tenant.graph_auth),
                                ("auth.token_store.azure_key_vault", store.access if store else None)):
                if auth is not None:
                    yield f"tenants[{i}].{where}", auth

    def certificates(self) -> list[tuple[str, ClientCertificate]]:
        """Every client certificate the config signs in with, by the key that names it."""
        return [(f"{where}.client_certificate_file", auth.client_certificate)
                for where, auth in self.sign_ins() if auth.client_certificate is not None]

    def secret_values(self) -> list[str]:
        """Every secret the config loaded, so logs and errors can redact them."""
        values = []
        for _, auth in self.sign_ins():
            values += [secret.value for secret in (auth.client_secret, auth.refresh_token, auth.password)
                       if secret is not None]
            if auth.client_certificate is not None:
                # The key's base64 lines: any one of them in a text is a leak.
                values += [line for line in auth.client_certificate.private_key_pem.splitlines()
                           if not line.startswith("-----")]
        return values
