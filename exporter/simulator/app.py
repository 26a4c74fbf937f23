"""A fake Microsoft identity platform and Partner Center on loopback HTTPS, for demo and tests."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import secrets
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from cryptography import x509

from exporter.simulator.assertions import (
    TOKEN_EXCHANGE_AUDIENCE,
    AppCredentials,
    FederatedCredential,
    OidcIssuer,
    verify_client_assertion,
)
from exporter.simulator.certs import generate_certs
from exporter.simulator.data import (
    Customer,
    Relationship,
    assignment_json,
    contract_json,
    dap_customer_json,
    generate_customers,
    generate_customers_without_delegation,
    generate_relationships,
    relationship_json,
    spread_customers,
    statistics_payload,
)
from exporter.simulator.keyvault import Caller, FakeKeyVault

STATISTICS_PATH = "/CustomerServiceAdminApi/Web/v1/delegatedAdminStatistics"
CUSTOMERS_PATH = "/CustomerServiceAdminApi/Web/v1/delegatedAdminCustomers"
RELATIONSHIPS_PATH = "/v1.0/tenantRelationships/delegatedAdminRelationships"
# An item of a simulated Graph collection, rendered to JSON only when its page is served.
T = TypeVar("T")
CONTRACTS_PATH = "/v1.0/contracts"
# Directory objects: $top up to 999, 100 a page unless asked.
CONTRACTS_MAX_TOP = 999
BATCH_PATH = "/v1.0/$batch"
# JSON batching: "up to 20 requests" (https://learn.microsoft.com/graph/json-batching).
GRAPH_MAX_BATCH = 20
# The App Service / Container Apps managed identity endpoint (IDENTITY_ENDPOINT), which MSAL's
# ManagedIdentityClient calls with X-IDENTITY-HEADER and api-version 2019-08-01
# (learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference).
MANAGED_IDENTITY_PATH = "/msi/token"
PARTNER_API_RESOURCE = "https://api.partnercustomeradministration.microsoft.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_MAX_PAGE = 300
# delegatedAdminCustomers: "$top supports up to 300 objects"; the server may send fewer a page
# and a nextLink, as Microsoft's GDAP bulk-migration tool expects (it follows @odata.nextLink).
CUSTOMERS_MAX_TOP = 300
CUSTOMERS_SERVER_PAGE = 100
# Partner Center's code for an App+User token without MFA, enforced since 1 April 2026.
MFA_REQUIRED_CODE = 900421
GRAPH_DEFAULT_PAGE = 100
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}


@dataclass
class Fault:
    """What the simulator does instead of answering, for the next `times` matching requests.

    target: "api" (delegatedAdminStatistics), "customers" (delegatedAdminCustomers), "graph"
    (delegatedAdminRelationships and accessAssignments), "contracts", "token", "discovery",
    "devicecode", "managed_identity" or "vault" (Key Vault secrets).
    status None with a delay means: wait, then answer normally.
    reset: send the headers and part of the body, then drop the connection.
    trickle: send the body one byte every `trickle` seconds, as a stuck proxy can: each read
    arrives well within a read timeout, the whole answer never in time.
    trickle_head: the same with the response head: the status line, then a header one byte every
    `trickle_head` seconds, never ending (a TLS-inspecting proxy can do this).
    A body with {{ECHO}} in it has that replaced by the credentials the request carried (its bearer
    token without the word Bearer, or the token request's refresh_token, client_secret, password,
    client_assertion and code), as a proxy or a server that quotes the request it refuses would.
    """

    target: str
    status: int | None = 500
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    trickle: float = 0.0
    trickle_head: float = 0.0
    times: int = 1
    tenant: str | None = None  # only requests for this tenant id (None: any)


ECHO = "{{ECHO}}"
ECHOED_FIELDS = ("refresh_token", "client_secret", "password", "client_assertion", "code")


def _echo(authorization: str | None, form: dict[str, str]) -> str:
    """The credentials a request carried, as a server that quotes it would show them."""
    bearer = (authorization or "").split()[-1:]  # the token alone, which no "Bearer" pattern finds
    parts = bearer + [f"{name}={form[name]}" for name in ECHOED_FIELDS if name in form]
    return " ".join(part for part in parts if part)


@dataclass
class SimTenant:
    tenant_id: str
    customers: list[Customer]  # with DAP
    relationships: list[Relationship] = field(default_factory=list)
    other_customers: list[Customer] = field(default_factory=list)  # listed without DAP
    # Customers with neither DAP nor a GDAP relationship: only the partner's contracts list them.
    unmanaged_customers: list[Customer] = field(default_factory=list)
    # False: the signed-in users are not in the partner's Admin Agents group, and Graph answers
    # their delegated calls with 200 and an empty list, not 403 (microsoft-graph-docs-contrib
    # issue 8921: by design). App-only calls still see every relationship.
    users_in_admin_agents: bool = True

    def without_gdap(self, *, assignments: bool = True) -> list[Customer]:
        """DAP customers nobody at the partner can administer: what the exporter must find. With
        assignments=False, the relationship-only view (no active relationship)."""
        covered = {r.customer_id for r in self.relationships
                   if (r.gives_access if assignments else r.grants_access)}
        return [c for c in self.customers if c.id not in covered]

    @property
    def contract_customers(self) -> list[Customer]:
        """Every customer of the partner, as Graph's contracts list them."""
        return [*self.customers, *self.other_customers, *self.unmanaged_customers]

    def without_access(self) -> list[Customer]:
        """Every customer of the partner that nobody there can administer through GDAP, as a caller
        that sees the relationships finds it."""
        covered = {r.customer_id for r in self.relationships if r.gives_access}
        return [c for c in self.contract_customers if c.id not in covered]


@dataclass
class _Token:
    tenant_id: str
    client_id: str
    username: str | None
    scope: str
    expires_at: float
    valid: bool = True
    mfa: bool = False  # the sign-in behind it did MFA (device code, auth code, an admin's seed)


@dataclass(frozen=True)
class RequestRecord:
    target: str
    detail: str
    status: int
    at: float  # the simulator's clock when it answered
    tenant: str | None = None  # the tenant id in the path, or of the API call's token


class _SimServer(ThreadingHTTPServer):
    """HTTPS in a thread per connection, handshake included, so one idle client stalls nobody.

    Keeps track of open connections, so an outage can cut them as a real one would.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.ssl_context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up, as the tests' faults make them do, are routine here

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            connection = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        # wrap_socket detaches the plain socket, so track (and later cut) the wrapped one.
        with self.connections_lock:
            self.connections.add(connection)
        try:
            super().finish_request(connection, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(connection)
            connection.close()

    def drop_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class Simulator:
    """Serves OpenID discovery, the v2 token and device code endpoints, and the DAP statistics API.

    Device codes are approved as soon as they are issued, so `login` completes on its first poll.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, cert_dir: Path | None = None,
                 today: dt.date | None = None, accept_app_only: bool = False,
                 token_lifetime: int = 3600, latency: float = 0.0, graph_throttle_every: int = 0,
                 enforce_mfa: bool = True, clock: Callable[[], float] = time.time) -> None:
        self._tempdir = None if cert_dir else tempfile.TemporaryDirectory(prefix="pcsim-")
        self.certs = generate_certs(cert_dir or Path(self._tempdir.name))  # type: ignore[union-attr]
        self.today = today or dt.datetime.now(dt.UTC).date()
        self.accept_app_only = accept_app_only
        self.token_lifetime = token_lifetime
        # Seconds added to every answer, as a distant Microsoft data centre would (benchmarks).
        self.latency = latency
        # Every Nth Graph request answers 429 with Retry-After: 1, as Graph does under load (0: never).
        self.graph_throttle_every = graph_throttle_every
        # Counted apart for plain requests and batch steps, so each kind sees every Nth throttled.
        self._graph_requests = {"request": 0, "step": 0}
        # Partner Center refuses App+User tokens without MFA (401, code 900421), as since April 2026.
        self.enforce_mfa = enforce_mfa
        # The largest page delegatedAdminCustomers sends, and whether it sends @odata.nextLink.
        self.customers_page = CUSTOMERS_SERVER_PAGE
        self.customers_next_link = True
        # The largest page accessAssignments sends, whatever $top asks.
        self.assignments_page = GRAPH_DEFAULT_PAGE
        # The largest page contracts sends, whatever $top asks.
        self.contracts_page = CONTRACTS_MAX_TOP
        # Apps without admin consent to DelegatedAdminRelationship.Read.All: Graph answers them 403.
        self.graph_unconsented: set[str] = set()
        # Apps without admin consent to Directory.Read.All: Graph answers their contracts call 403.
        self.directory_unconsented: set[str] = set()
        # Errors of the CustomerServiceAdminApi host: "odata" ({"error": {"code", "message"}}, as
        # Microsoft's GDAP bulk-migration tool logged them) or "rest" (Partner Center REST's
        # {"code", "description", "data", "source"}).
        self.error_shape = "odata"
        # delegatedAdminStatistics: False dates no customer no partner signed in to (Microsoft's
        # definition: inactiveDapCount counts "customers who have had sign-ins"); True dates them
        # at their DAP start, the other reading, under which the counts add up to the total.
        self.date_never_signed_in = False
        # Retired APIs: target ("api", "customers") -> the status they answer (404 or 410), and
        # the tenant ids they are retired for (None: all).
        self.retired: dict[str, tuple[int, frozenset[str] | None]] = {}
        self.clock = clock
        self.tenants: dict[str, SimTenant] = {}
        self.clients: dict[str, str | None] = {}  # client_id -> secret (None: public client)
        self.redirect_uris: dict[str, tuple[str, ...]] = {}  # client_id -> registered redirect URIs
        # code -> tenant, client, redirect URI, PKCE challenge, nonce
        self._codes: dict[str, tuple[str, str, str, str, str]] = {}
        self.users: dict[str, tuple[str, bool]] = {}  # username -> (password, needs MFA)
        self.requests: list[RequestRecord] = []
        self._faults: list[Fault] = []
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._devices: dict[str, tuple[str, str]] = {}  # device_code -> (tenant, client_id)
        self._lock = threading.Lock()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(self.certs.cert_file), str(self.certs.key_file))
        try:
            self._httpd = self._listen((host, port))
        except OSError:
            if self._tempdir is not None:
                self._tempdir.cleanup()  # the caller may try another port; leave no directory behind
            raise
        self._thread: threading.Thread | None = None
        # Certificates and federated identity credentials registered on apps.
        self.app_credentials: dict[str, AppCredentials] = {}
        # A cluster's service account issuer, for workload identity tokens.
        self.oidc = OidcIssuer(f"{self.base_url}/oidc/cluster")
        self.assertions: list[str] = []  # every client assertion received (for leak checks)
        # Managed identities of "this Azure resource": client id (None: system-assigned) -> tenant.
        self.managed_identities: dict[str | None, str] = {}
        self.identity_header = secrets.token_hex(16)
        self.keyvault = FakeKeyVault(self.base_url, f"https://{self._httpd.server_address[0]!s}",
                                     f"{self.base_url}/common", self._vault_caller, clock=clock)

    def _listen(self, address: tuple[str, int]) -> _SimServer:
        return _SimServer(address, _make_handler(self), self._context)

    # --- set-up -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"https://{host}:{self._httpd.server_address[1]}"

    @property
    def authority_host(self) -> str:
        return self.base_url

    @property
    def dap_statistics_url(self) -> str:
        return self.base_url + STATISTICS_PATH

    @property
    def dap_customers_url(self) -> str:
        return self.base_url + CUSTOMERS_PATH

    @property
    def graph_url(self) -> str:
        return self.base_url

    def endpoints_config(self) -> dict[str, str]:
        """The config's `endpoints` section that points an exporter at this simulator."""
        return {"authority_host": self.authority_host, "dap_statistics_url": self.dap_statistics_url,
                "dap_customers_url": self.dap_customers_url, "graph_url": self.graph_url,
                "ca_file": str(self.certs.ca_file)}

    def add_tenant(self, tenant_id: str, *, customers: int | None = None, dates: int | None = None,
                   relationships: list[Relationship] | None = None) -> SimTenant:
        """A partner tenant with seeded customers, or with `dates` distinct dates in each list.

        GDAP relationships are generated to match the customers unless given.
        """
        dap = (spread_customers(dates, self.today) if dates is not None
               else generate_customers(tenant_id, self.today, customers))
        tenant = SimTenant(tenant_id, dap, unmanaged_customers=generate_customers_without_delegation(
            tenant_id, self.today))
        if relationships is None:
            now = dt.datetime.combine(self.today, dt.time(12), dt.UTC)
            tenant.relationships, tenant.other_customers = generate_relationships(tenant_id, dap, now)
        else:
            tenant.relationships = relationships
        self.tenants[tenant_id] = tenant
        return tenant

    def add_client(self, client_id: str, secret: str | None = None,
                   redirect_uris: tuple[str, ...] = ("http://localhost",)) -> None:
        self.clients[client_id] = secret
        self.redirect_uris[client_id] = redirect_uris

    def register_certificate(self, client_id: str, certificate: x509.Certificate) -> None:
        """Upload a certificate's public part to the app registration (Certificates & secrets)."""
        self.app_credentials.setdefault(client_id, AppCredentials()).certificates.append(certificate)

    def add_federated_credential(self, client_id: str, subject: str, *, issuer: str | None = None,
                                 audience: str = TOKEN_EXCHANGE_AUDIENCE) -> None:
        """A federated identity credential: tokens from `issuer` (the simulated cluster's unless
        given) for `subject` may sign in as the app."""
        self.app_credentials.setdefault(client_id, AppCredentials()).federated.append(
            FederatedCredential(issuer or self.oidc.url, subject, audience))

    def federated_token(self, subject: str, *, audience: str = TOKEN_EXCHANGE_AUDIENCE,
                        lifetime: int = 3600) -> str:
        """A service account token as the kubelet projects it into a workload identity pod."""
        return self.oidc.token(subject, audience=audience, lifetime=lifetime, now=self.clock())

    def add_managed_identity(self, tenant_id: str, client_id: str | None = None) -> None:
        """Assign a managed identity to the simulated Azure resource (client_id None: system)."""
        self.managed_identities[client_id] = tenant_id

    def managed_identity_environment(self) -> dict[str, str]:
        """What App Service and Container Apps set for a process with a managed identity."""
        return {"IDENTITY_ENDPOINT": self.base_url + MANAGED_IDENTITY_PATH,
                "IDENTITY_HEADER": self.identity_header}

    @property
    def vault_url(self) -> str:
        return self.keyvault.url

    def _vault_caller(self, token: str) -> Caller | None:
        with self._lock:
            info = self._access.get(token)
        if info is None or not info.valid or info.expires_at < self.clock():
            return None
        return Caller(info.client_id, info.tenant_id, info.scope)

    def add_user(self, username: str, password: str, *, mfa: bool = False) -> None:
        self.users[username] = (password, mfa)

    def issue_refresh_token(self, tenant_id: str, client_id: str, username: str, *,
                            mfa: bool = True) -> str:
        """A refresh token as an admin's interactive sign-in would have produced (mfa=False: one
        from a sign-in without MFA, as a password-only sign-in before April 2026 gave)."""
        token = "sim-rt-" + secrets.token_urlsafe(32)
        with self._lock:
            self._refresh[token] = _Token(tenant_id, client_id, username,
                                          PARTNER_API_RESOURCE + "/.default", float("inf"), mfa=mfa)
        return token

    def throttle_graph_now(self, kind: str = "request") -> bool:
        """Count a Graph request (or a batch step); True if graph_throttle_every says this one gets a 429."""
        with self._lock:
            self._graph_requests[kind] += 1
            count = self._graph_requests[kind]
        return bool(self.graph_throttle_every) and count % self.graph_throttle_every == 0

    # --- fault injection ------------------------------------------------------------------
    def retire(self, target: str, status: int = 410, tenant: str | None = None) -> None:
        """From now on `target` ("api" or "customers") answers `status`, as a retired API does: for
        every caller, or for one tenant's."""
        _, tenants = self.retired.get(target, (status, frozenset()))
        self.retired[target] = (status, None if tenant is None or tenants is None
                                else tenants | {tenant})

    def _retired_answer(self, target: str, tenant: str | None) -> tuple[int, dict[str, Any]] | None:
        status, tenants = self.retired.get(target, (0, frozenset()))
        if not status or (tenants is not None and tenant not in tenants):
            return None
        return status, self._pc_error("NotFound" if status == 404 else "Gone",
                                      "The requested resource is no longer available.")

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self, target: str | None = None) -> None:
        """Remove injected faults that have not run out yet (all, or one target's)."""
        with self._lock:
            self._faults = [f for f in self._faults if target not in (None, f.target)]

    def revoke_refresh_tokens(self, tenant_id: str | None = None) -> None:
        """Revoke every refresh token, or only those of one tenant."""
        with self._lock:
            for token in self._refresh.values():
                if tenant_id in (None, token.tenant_id):
                    token.valid = False

    def invalidate_access_tokens(self, tenant_id: str | None = None) -> None:
        """The API refuses issued tokens (one tenant's, or all) that the identity platform thinks fine."""
        with self._lock:
            for token in self._access.values():
                if tenant_id in (None, token.tenant_id):
                    token.valid = False

    def go_down(self) -> None:
        """Stop listening and cut open connections: new connections are refused until come_back()."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()

    def come_back(self) -> None:
        """Listen again on the same address after go_down()."""
        self._httpd = self._listen(self._httpd.server_address[:2])  # type: ignore[arg-type]
        self.start()

    def drop_connections(self) -> None:
        """Cut every open connection (clients must reconnect, and resolve the host again)."""
        self._httpd.drop_connections()

    def count(self, target: str, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests
                       if r.target == target and (status is None or r.status == status))

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token handed out so far (for leak checks)."""
        with self._lock:
            return [*self._access, *self._refresh]

    def refresh_token_history(self, tenant_id: str) -> list[str]:
        """A tenant's refresh tokens in the order they were issued (the newest last)."""
        with self._lock:
            return [t for t, info in self._refresh.items() if info.tenant_id == tenant_id]

    def live_refresh_tokens(self) -> list[str]:
        with self._lock:
            return [t for t, info in self._refresh.items() if info.valid]

    def _take_fault(self, target: str, tenant: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.target == target and fault.tenant in (None, tenant):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, target: str, detail: str, status: int, tenant: str | None) -> None:
        with self._lock:
            self.requests.append(RequestRecord(target, detail, status, self.clock(), tenant))

    def _tenant_of(self, authorization: str | None) -> str | None:
        with self._lock:
            info = self._access.get((authorization or "").removeprefix("Bearer "))
        return info.tenant_id if info is not None else None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Simulator:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,),
                                        name="simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- identity platform ------------------------------------------------------------------
    def discovery(self, tenant: str) -> tuple[int, dict[str, Any]]:
        if tenant not in self.tenants and tenant != "common":
            return 400, _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{self.base_url}/{tenant}"
        return 200, {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        client_id = form.get("client_id", "")
        if tenant not in self.tenants:
            return 400, _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        if client_id not in self.clients:
            return 400, _aad_error("unauthorized_client", 700016,
                                   f"Application with identifier '{client_id}' was not found in "
                                   f"the directory '{tenant}'.")
        refusal = self._authenticate_client(tenant, client_id, form)
        if refusal is not None:
            return refusal
        scope = " ".join(s for s in form.get("scope", "").split() if s not in _RESERVED_SCOPES)
        if grant == "client_credentials":
            return 200, self._issue(tenant, client_id, None, scope)
        if grant == "password":
            username, password = form.get("username", ""), form.get("password", "")
            known = self.users.get(username)
            if known is None or not secrets.compare_digest(known[0], password):
                return 400, _aad_error("invalid_grant", 50126,
                                       "Error validating credentials due to invalid username or password.")
            if known[1]:
                return 400, _aad_error("invalid_grant", 50076, "Due to a configuration change made "
                                       "by your administrator, or because you moved to a new "
                                       "location, you must use multi-factor authentication.")
            # A password alone is one factor: Partner Center will refuse this token (900421).
            return 200, self._issue(tenant, client_id, username, scope, mfa=False)
        if grant == "refresh_token":
            return self._redeem_refresh_token(tenant, client_id, form.get("refresh_token", ""), scope)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._redeem_device_code(form.get("device_code", ""), scope)
        if grant == "authorization_code":
            return self._redeem_auth_code(tenant, client_id, form, scope)
        return 400, _aad_error("unsupported_grant_type", 70003,
                               f"The app requested an unsupported grant type '{grant}'.")

    def _authenticate_client(self, tenant: str, client_id: str,
                             form: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        """None if the request proves the app (or needs no proof: a public client), else the error."""
        expected_secret = self.clients[client_id]
        extra = self.app_credentials.get(client_id, AppCredentials())
        confidential = expected_secret is not None or bool(extra.certificates or extra.federated)
        sent_secret = form.get("client_secret")
        if "client_assertion" in form or "client_assertion_type" in form:
            if not confidential:
                return 400, _aad_error("invalid_request", 700025, "Client is public so neither "
                                       "'client_assertion' nor 'client_secret' should be presented.")
            with self._lock:
                self.assertions.append(form.get("client_assertion", ""))
            refusal = verify_client_assertion(
                form, client_id=client_id, token_endpoint=f"{self.base_url}/{tenant}/oauth2/v2.0/token",
                app=extra, issuers={self.oidc.url: self.oidc}, now=self.clock())
            if refusal is not None:
                return refusal.status, _aad_error(refusal.error, refusal.code, refusal.text)
            return None
        if expected_secret is None and sent_secret:
            return 400, _aad_error("invalid_request", 700025, "Client is public so neither "
                                   "'client_assertion' nor 'client_secret' should be presented.")
        if expected_secret is None and confidential:
            return 401, _aad_error("invalid_client", 7000218, "The request body must contain the "
                                   "following parameter: 'client_assertion' or 'client_secret'.")
        if expected_secret is not None and not secrets.compare_digest(sent_secret or "",
                                                                     expected_secret):
            return 401, _aad_error("invalid_client", 7000215,
                                   "Invalid client secret provided. Ensure the secret being sent in "
                                   "the request is the client secret value, not the client secret ID.")
        return None

    def managed_identity_token(self, header: str | None, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The App Service managed identity endpoint: errors are {statusCode, message}."""
        if header != self.identity_header:
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or not valid."}
        if query.get("api-version") != "2019-08-01" or not query.get("resource"):
            return 400, {"statusCode": 400, "message": "api-version 2019-08-01 and resource are required."}
        client_id = query.get("client_id")
        tenant = self.managed_identities.get(client_id)
        if tenant is None:
            return 400, {"statusCode": 400, "message": "No Managed Identity found for specified "
                                                       "ClientId/ResourceId/PrincipalId."}
        principal = client_id or f"system-{tenant}"
        issued = self._issue(tenant, principal, None, query["resource"])
        return 200, {"access_token": issued["access_token"], "token_type": "Bearer",
                     "expires_on": str(int(self.clock()) + self.token_lifetime),
                     "resource": query["resource"], "client_id": principal}

    def _redeem_refresh_token(self, tenant: str, client_id: str, token: str,
                              scope: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            info = self._refresh.get(token)
            if info is None or info.tenant_id != tenant or info.client_id != client_id:
                return 400, _aad_error("invalid_grant", 9002313, "Invalid request. Request is "
                                       "malformed or invalid: the refresh token is not known.")
            if not info.valid:
                return 400, _aad_error("invalid_grant", 50173, "The provided grant has expired due "
                                       "to it being revoked, a fresh auth token is needed.")
            if info.expires_at < self.clock():
                return 400, _aad_error("invalid_grant", 700082, "The refresh token has expired due "
                                       "to inactivity.")
            info.valid = False  # rotation: a refresh token works once
        return 200, self._issue(tenant, client_id, info.username, scope or info.scope, mfa=info.mfa)

    def _redeem_device_code(self, device_code: str, scope: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            # Every device code counts as approved at once: the demo has no one to sign in.
            entry = self._devices.pop(device_code, None)
            if entry is None:
                return 400, _aad_error("expired_token", 70019, "Verification code expired.")
            tenant, client_id = entry
        return 200, self._issue(tenant, client_id, _admin(tenant), scope, mfa=True)

    def authorize(self, tenant: str, query: dict[str, str]) -> tuple[int, str]:
        """The authorization endpoint, as the admin's browser meets it: (status, redirect or page).

        The simulated admin signs in with MFA at once, and the browser is sent to the redirect URI
        with `code` and `state`, per the authorization code flow with PKCE
        (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow).
        """
        client_id, redirect_uri = query.get("client_id", ""), query.get("redirect_uri", "")
        if tenant not in self.tenants:
            return 400, f"AADSTS90002: Tenant '{tenant}' not found."
        if client_id not in self.clients:
            return 400, f"AADSTS700016: Application with identifier '{client_id}' was not found."
        if redirect_uri not in self.redirect_uris.get(client_id, ()):
            return 400, (f"AADSTS50011: The redirect URI '{redirect_uri}' specified in the request "
                         f"does not match the redirect URIs configured for the application.")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, "AADSTS501491: Invalid size of Code_Challenge parameter."
        code = "sim-code-" + secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = (tenant, client_id, redirect_uri, query["code_challenge"],
                                 query.get("nonce", ""))
        params = {"code": code, "state": query.get("state", ""), "session_state": str(uuid.uuid4())}
        return 302, f"{redirect_uri}?{urlencode(params)}"

    def _redeem_auth_code(self, tenant: str, client_id: str, form: dict[str, str],
                          scope: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            entry = self._codes.pop(form.get("code", ""), None)
        if entry is None or entry[:2] != (tenant, client_id):
            return 400, _aad_error("invalid_grant", 70000, "The provided authorization code is "
                                   "invalid or has expired.")
        if form.get("redirect_uri") != entry[2]:
            return 400, _aad_error("invalid_grant", 50011, "The redirect URI does not match the one "
                                   "in the authorization request.")
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if _b64(digest) != entry[3]:
            return 400, _aad_error("invalid_grant", 501481, "The Code_Verifier does not match the "
                                   "code_challenge supplied in the authorization request.")
        return 200, self._issue(tenant, client_id, _admin(tenant), scope, mfa=True, nonce=entry[4])

    def devicecode(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id = form.get("client_id", "")
        if tenant not in self.tenants:
            return 400, _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        if client_id not in self.clients:
            return 400, _aad_error("unauthorized_client", 700016,
                                   f"Application with identifier '{client_id}' was not found.")
        device_code = secrets.token_urlsafe(24)
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        with self._lock:
            self._devices[device_code] = (tenant, client_id)
        uri = f"{self.base_url}/devicelogin"
        return 200, {"device_code": device_code, "user_code": user_code, "verification_uri": uri,
                     "expires_in": 900, "interval": 1,
                     "message": f"To sign in, use a web browser to open the page {uri} and enter "
                                f"the code {user_code} to authenticate."}

    def _issue(self, tenant: str, client_id: str, username: str | None, scope: str, *,
               mfa: bool = False, nonce: str = "") -> dict[str, Any]:
        now = self.clock()
        access = "sim-at-" + secrets.token_urlsafe(32)
        with self._lock:
            self._access[access] = _Token(tenant, client_id, username, scope,
                                          now + self.token_lifetime, mfa=mfa)
        body: dict[str, Any] = {"token_type": "Bearer", "scope": scope,
                                "expires_in": self.token_lifetime,
                                "ext_expires_in": self.token_lifetime, "access_token": access}
        if username is not None:
            oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{username}"))
            refresh = "sim-rt-" + secrets.token_urlsafe(32)
            with self._lock:
                self._refresh[refresh] = _Token(tenant, client_id, username, scope, float("inf"),
                                                mfa=mfa)
            body["refresh_token"] = refresh
            body["client_info"] = _b64(json.dumps({"uid": oid, "utid": tenant}).encode())
            claims = {
                "iss": f"{self.base_url}/{tenant}/v2.0", "aud": client_id, "sub": oid, "oid": oid,
                "tid": tenant, "preferred_username": username, "name": username.split("@")[0],
                "iat": int(now), "nbf": int(now), "exp": int(now) + self.token_lifetime}
            if nonce:
                claims["nonce"] = nonce
            body["id_token"] = _unsigned_jwt(claims)
        return body

    # --- Partner Center -----------------------------------------------------------------------
    def _pc_error(self, code: int | str, message: str) -> dict[str, Any]:
        """An error of the CustomerServiceAdminApi host in the shape `error_shape` says."""
        if self.error_shape == "rest":
            return _pc_rest_error(code, message)
        return _pc_odata_error(code, message, self.base_url)

    def _partner_center_tenant(self, authorization: str | None) -> SimTenant | tuple[int, dict[str, Any]]:
        """The caller's tenant, or the error Partner Center gives for its token."""
        if not authorization or not authorization.startswith("Bearer "):
            return 401, self._pc_error(401, "Authorization header missing")
        with self._lock:
            info = self._access.get(authorization[7:])
        if info is None or not info.valid or info.expires_at < self.clock():
            return 401, self._pc_error(401, "The access token is invalid or expired")
        if not info.scope.startswith(PARTNER_API_RESOURCE):
            return 401, self._pc_error(401, "The token's audience is not this API")
        if info.username is None and not self.accept_app_only:
            return 401, self._pc_error(401, "App-only tokens are not supported; use App+User")
        if info.username is not None and self.enforce_mfa and not info.mfa:
            # The exact body is not documented; the code is what partners report.
            return 401, self._pc_error(MFA_REQUIRED_CODE, "Multi-factor authentication (MFA) is required "
                                                          "for this request. Sign in with MFA and try again.")
        return self.tenants[info.tenant_id]

    def statistics(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        tenant = self._partner_center_tenant(authorization)
        if not isinstance(tenant, SimTenant):
            return tenant
        return 200, statistics_payload(tenant.tenant_id, tenant.customers, self.base_url,
                                       date_never_signed_in=self.date_never_signed_in)

    def dap_customers(self, authorization: str | None, query: dict[str, str]) -> tuple[int, Any]:
        """delegatedAdminCustomers: every customer, DAP first, paged with $top and $skip; $filter on
        dapEnabled and $count as the reference lists them, OData's 400 for a filter it cannot apply.

        https://learn.microsoft.com/partner-center/developer/list-delegated-admin-customers
        """
        tenant = self._partner_center_tenant(authorization)
        if not isinstance(tenant, SimTenant):
            return tenant
        try:
            top = int(query.get("$top", CUSTOMERS_MAX_TOP))
            skip = int(query.get("$skip", 0))
        except ValueError:
            return 400, self._pc_error("BadRequest", "$top and $skip must be whole numbers")
        if not 1 <= top <= CUSTOMERS_MAX_TOP or skip < 0:
            return 400, self._pc_error("BadRequest", f"$top must be between 1 and {CUSTOMERS_MAX_TOP}, "
                                                     f"$skip >= 0")
        wanted = _dap_filter(query.get("$filter"))
        if wanted is _BAD_FILTER:
            # OData's answer to a $filter it cannot parse or apply.
            return 400, self._pc_error("BadRequest", "The query specified in the URI is not valid. "
                                                     "Could not apply the $filter expression.")
        groups = [(group, dap) for group, dap in ((tenant.customers, True), (tenant.other_customers, False))
                  if wanted is None or wanted is dap]
        total = sum(len(group) for group, _ in groups)
        size = min(top, self.customers_page)
        body: dict[str, Any] = {
            "@odata.context": f"{self.base_url}/CustomerServiceAdminApi/Web/v1/$metadata"
                              "#delegatedAdminCustomers"}
        if query.get("$count", "").lower() == "true":
            body["@odata.count"] = total
        # Only the page's entries are built: a 100,000-customer list pages in linear time.
        page: list[dict[str, Any]] = []
        start = skip
        for group, dap in groups:
            page += [dap_customer_json(c, dap) for c in group[start:start + size - len(page)]]
            start = max(0, start - len(group))
        body["value"] = page
        if self.customers_next_link and skip + size < total:
            kept = {k: v for k, v in query.items() if k in ("$filter", "$count")}
            body["@odata.nextLink"] = (f"{self.base_url}{CUSTOMERS_PATH}?"
                                       + urlencode({**kept, "$top": top, "$skip": skip + size}))
        return 200, body

    # --- Microsoft Graph ------------------------------------------------------------------------
    def _graph_caller(self, authorization: str | None, unconsented: set[str] | None = None,
                      ) -> _Token | tuple[int, dict[str, Any]]:
        """The caller's token, or the error Graph gives for it: 401 for a bad token, 403 for an app
        without consent to the permission the resource needs (unconsented: the apps without it;
        by default those without the GDAP read permission)."""
        if not authorization or not authorization.startswith("Bearer "):
            return 401, _graph_error("InvalidAuthenticationToken", "Access token is empty.")
        with self._lock:
            info = self._access.get(authorization[7:])
        if info is None or not info.valid or info.expires_at < self.clock():
            return 401, _graph_error("InvalidAuthenticationToken", "Access token has expired or is not "
                                                                   "yet valid.")
        if not info.scope.startswith(GRAPH_RESOURCE):
            return 401, _graph_error("InvalidAuthenticationToken", "Invalid audience.")
        if info.client_id in (self.graph_unconsented if unconsented is None else unconsented):
            return 403, _graph_error("Authorization_RequestDenied",
                                     "Insufficient privileges to complete the operation.")
        return info

    def _graph_page(self, items: Sequence[T], render: Callable[[T], dict[str, Any]], query: dict[str, str],
                    path: str, context: str, server_page: int = GRAPH_MAX_PAGE,
                    max_top: int = GRAPH_MAX_PAGE) -> tuple[int, Any]:
        """One page of a Graph collection: at most $top (up to max_top) and the server's own page
        size, then @odata.nextLink with a $skiptoken. Only the page's items are rendered, so a long
        list pages in linear time."""
        try:
            top = int(query.get("$top", GRAPH_DEFAULT_PAGE))
            skip = int(query.get("$skiptoken", 0))
        except ValueError:
            return 400, _graph_error("BadRequest", "Invalid $top or $skiptoken.")
        if not 1 <= top <= max_top:
            return 400, _graph_error("BadRequest", f"$top must be between 1 and {max_top}.")
        size = min(top, server_page)
        body: dict[str, Any] = {"@odata.context": f"{self.graph_url}/v1.0/$metadata#{context}",
                                "value": [render(item) for item in items[skip:skip + size]]}
        if skip + size < len(items):
            body["@odata.nextLink"] = f"{self.graph_url}{path}?$top={top}&$skiptoken={skip + size}"
        return 200, body

    def gdap_relationships(self, authorization: str | None, query: dict[str, str]) -> tuple[int, Any]:
        """delegatedAdminRelationships: at most $top (up to 300) a page, then @odata.nextLink."""
        caller = self._graph_caller(authorization)
        if not isinstance(caller, _Token):
            return caller
        return self._graph_page(self._visible_relationships(caller), relationship_json, query,
                                RELATIONSHIPS_PATH, "tenantRelationships/delegatedAdminRelationships")

    def contracts(self, authorization: str | None, query: dict[str, str]) -> tuple[int, Any]:
        """contracts: every customer tenant of the partner, with Directory.Read.All; $top up to 999
        (directory objects), then @odata.nextLink.

        https://learn.microsoft.com/graph/api/contract-list
        """
        caller = self._graph_caller(authorization, self.directory_unconsented)
        if not isinstance(caller, _Token):
            return caller
        tenant = self.tenants[caller.tenant_id]
        return self._graph_page(tenant.contract_customers, contract_json, query,
                                CONTRACTS_PATH, "contracts", server_page=self.contracts_page,
                                max_top=CONTRACTS_MAX_TOP)

    def _visible_relationships(self, caller: _Token) -> list[Relationship]:
        """What Graph shows this caller: nothing to a signed-in user outside Admin Agents."""
        tenant = self.tenants[caller.tenant_id]
        hidden = caller.username is not None and not tenant.users_in_admin_agents
        return [] if hidden else tenant.relationships

    def access_assignments(self, authorization: str | None, relationship_id: str,
                           query: dict[str, str]) -> tuple[int, Any]:
        """A relationship's accessAssignments: "$top supports up to 300 objects"; the server's page
        may be smaller (assignments_page), with @odata.nextLink.

        https://learn.microsoft.com/graph/api/delegatedadminrelationship-list-accessassignments
        """
        caller = self._graph_caller(authorization)
        if not isinstance(caller, _Token):
            return caller
        found = next((r for r in self._visible_relationships(caller) if r.id == relationship_id), None)
        if found is None:
            return 404, _graph_error("NotFound", f"The delegatedAdminRelationship '{relationship_id}' "
                                                 f"was not found.")
        path = f"{RELATIONSHIPS_PATH}/{relationship_id}/accessAssignments"
        return self._graph_page(found.assignments, functools.partial(assignment_json, found), query, path,
                                f"tenantRelationships/delegatedAdminRelationships('{relationship_id}')/"
                                f"accessAssignments", server_page=self.assignments_page)

    def graph_batch(self, authorization: str | None, raw: bytes) -> tuple[int, Any]:
        """JSON batching: up to 20 requests, each answered with its own status, headers and body,
        throttled on its own (a 429 with its own Retry-After), in any order.

        https://learn.microsoft.com/graph/json-batching
        """
        caller = self._graph_caller(authorization)
        if isinstance(caller, tuple) and caller[0] == 401:
            return caller
        try:
            requests = json.loads(raw)["requests"]
        except (ValueError, KeyError, TypeError):
            return 400, _graph_error("BadRequest", "Invalid batch payload format.")
        if not isinstance(requests, list) or not requests or len(requests) > GRAPH_MAX_BATCH:
            return 400, _graph_error("BadRequest", f"Number of batch request steps exceeds the maximum "
                                                   f"of {GRAPH_MAX_BATCH}.")
        ids = [str(r.get("id")) if isinstance(r, dict) else "" for r in requests]
        if len(set(ids)) != len(ids):
            return 400, _graph_error("BadRequest", "Batch request ids must be unique.")
        responses = []
        for step_id, step in zip(ids, requests, strict=True):
            headers = {"Content-Type": "application/json"}
            if self.throttle_graph_now("step"):
                status, body = 429, _graph_error("TooManyRequests", "Too many requests.")
                headers["Retry-After"] = "1"
            else:
                status, body = self._batch_step(authorization, step)
            # A step is no HTTP request of its own: counted apart from the "graph" requests.
            self._record("graph_batch_step", str(step_id), status,
                         caller.tenant_id if isinstance(caller, _Token) else None)
            responses.append({"id": step_id, "status": status, "headers": headers, "body": body})
        # "Responses ... might appear in a different order": the client must match them by id.
        return 200, {"responses": responses[::-1]}

    def _batch_step(self, authorization: str | None, step: Any) -> tuple[int, Any]:
        if not isinstance(step, dict) or step.get("method") != "GET":
            return 405, _graph_error("BadRequest", "The simulator batches GET requests only.")
        url = urlsplit(str(step.get("url", "")))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = "/v1.0/" + url.path.lstrip("/")
        if path == RELATIONSHIPS_PATH:
            return self.gdap_relationships(authorization, query)
        parts = path.removeprefix(RELATIONSHIPS_PATH + "/").split("/")
        if path.startswith(RELATIONSHIPS_PATH + "/") and len(parts) == 2 and parts[1] == "accessAssignments":
            return self.access_assignments(authorization, unquote(parts[0]), query)
        # Graph's answer to a path it does not know.
        return 400, _graph_error("BadRequest", f"Resource not found for the segment '{url.path}'.")


def _admin(tenant: str) -> str:
    """The admin who signs in interactively (device code or browser) to a simulated tenant."""
    domain = tenant if "." in tenant else f"{tenant[:8]}.onmicrosoft.com"
    return f"admin@{domain}"


def _pc_rest_error(code: int | str, description: str) -> dict[str, Any]:
    """A Partner Center REST error body: code, description, data, source.

    https://learn.microsoft.com/partner-center/developer/error-codes
    """
    return {"code": code, "description": description, "data": [], "source": "PartnerCenter"}


def _pc_odata_error(code: int | str, message: str, base_url: str) -> dict[str, Any]:
    """An OData error body of the CustomerServiceAdminApi host, as Microsoft's GDAP bulk-migration
    tool logged one (issue 13 of its repository): `@odata.context` and `error.code`/`error.message`."""
    return {"@odata.context": f"{base_url}/CustomerServiceAdminApi/Web/v1/$metadata"
                              "#microsoft.partner.customerserviceadministration.errorResponse",
            "error": {"code": str(code), "message": message}}


_BAD_FILTER = object()


def _dap_filter(expression: str | None) -> bool | object | None:
    """The dapEnabled value a $filter asks for, None without one, _BAD_FILTER for any other."""
    if expression is None:
        return None
    words = expression.split()
    if len(words) == 3 and words[0] == "dapEnabled" and words[1] == "eq" and words[2] in ("true", "false"):
        return words[2] == "true"
    return _BAD_FILTER


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _graph_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                     "request-id": str(uuid.uuid4())}}}


def _aad_error(error: str, code: int, text: str) -> dict[str, Any]:
    trace, correlation = uuid.uuid4(), uuid.uuid4()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return {"error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                                 f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
            "error_codes": [code], "timestamp": stamp, "trace_id": str(trace),
            "correlation_id": str(correlation)}


def _make_handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        timeout = 60

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = url.path
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            parts = [unquote(p) for p in path.strip("/").split("/")]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            call: Callable[[], tuple[int, Any]]
            authorization = self.headers.get("Authorization")
            headers: dict[str, str] = {}  # beyond Content-Type, from the answering endpoint
            if method == "GET" and path == STATISTICS_PATH:
                target, call = "api", lambda: sim.statistics(authorization)
            elif method == "GET" and path == CUSTOMERS_PATH:
                target, call = "customers", lambda: sim.dap_customers(authorization, query)
            elif method == "GET" and path == RELATIONSHIPS_PATH:
                target, call = "graph", lambda: sim.gdap_relationships(authorization, query)
            elif method == "GET" and path == CONTRACTS_PATH:
                target, call = "contracts", lambda: sim.contracts(authorization, query)
            elif (method == "GET" and path.startswith(RELATIONSHIPS_PATH + "/")
                  and path.endswith("/accessAssignments") and len(parts) == 5):
                target, call = "graph", lambda: sim.access_assignments(authorization, parts[3], query)
            elif method == "POST" and path == BATCH_PATH:
                target, call = "graph_batch", lambda: sim.graph_batch(authorization, raw)
            elif method == "GET" and path == MANAGED_IDENTITY_PATH:
                identity_header = self.headers.get("X-IDENTITY-HEADER")
                target, call = "managed_identity", lambda: sim.managed_identity_token(identity_header, query)
            elif method in ("GET", "PUT") and parts[0] == "secrets":
                def vault_call() -> tuple[int, Any]:
                    status, body, extra = sim.keyvault.handle(method, parts, authorization, raw)
                    headers.update(extra)  # the 401 challenge
                    return status, body
                target, call = "vault", vault_call
            elif method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                target, call = "discovery", lambda: sim.discovery(parts[0])
            elif method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
                target, call = "token", lambda: sim.token(parts[0], form)
            elif method == "GET" and parts[1:] == ["oauth2", "v2.0", "authorize"]:
                status, where = sim.authorize(parts[0], query)
                sim._record("authorize", "", status, parts[0])
                if status == 302:
                    self._send(302, b"", {"Location": where})
                else:
                    self._send(status, where.encode(), {"Content-Type": "text/plain; charset=utf-8"})
                return
            elif method == "POST" and parts[1:] == ["oauth2", "v2.0", "devicecode"]:
                target, call = "devicecode", lambda: sim.devicecode(parts[0], form)
            elif method == "GET" and parts[:2] == ["common", "userrealm"]:
                target, call = "userrealm", lambda: (200, {
                    "ver": "1.0", "account_type": "Managed", "domain_name": parts[-1].split("@")[-1]})
            elif method == "GET" and path == "/devicelogin":
                self._send(200, b"<p>The simulator approves device codes by itself.</p>",
                           {"Content-Type": "text/html"})
                return
            else:
                self._send(404, b'{"error":"not_found"}', {"Content-Type": "application/json"})
                return
            if sim.latency:
                time.sleep(sim.latency)
            api_call = target in ("api", "customers", "graph", "graph_batch", "contracts", "vault")
            tenant = sim._tenant_of(authorization) if api_call else parts[0]
            retired = sim._retired_answer(target, tenant)
            if retired is not None:
                # A retired API answers whoever asks, before it looks at the token.
                call = lambda: retired  # noqa: E731
            fault = sim._take_fault(target, tenant)
            if fault is None and target in ("graph", "contracts") and sim.throttle_graph_now():
                fault = Fault("graph", 429, _graph_error("TooManyRequests", "Too many requests."),
                              headers={"Retry-After": "1"})
            if fault is not None:
                time.sleep(fault.delay)
                if fault.status is not None:
                    sim._record(target, "fault", fault.status, tenant)
                    self._fault(fault, _echo(authorization, form))
                    return
            status, body = call()
            sim._record(target, method if target == "vault" else form.get("grant_type", ""), status, tenant)
            self._send(status, json.dumps(body).encode(),
                       {"Content-Type": "application/json; charset=utf-8", **headers})

        def _fault(self, fault: Fault, echo: str = "") -> None:
            body = fault.body
            data = json.dumps(body).encode() if isinstance(body, dict) else (
                body.encode() if isinstance(body, str) else body)
            data = data.replace(ECHO.encode(), json.dumps(echo)[1:-1].encode())
            headers = {"Content-Type": "application/json", **fault.headers}
            if fault.reset:
                self.send_response(fault.status or 200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data) + 1000))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if fault.trickle_head:
                self.wfile.write(f"HTTP/1.1 {fault.status or 200} OK\r\nX-Padding: ".encode())
                with contextlib.suppress(OSError):  # the client gave up and closed
                    for _ in range(16 * 1024):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(fault.trickle_head)
                self.close_connection = True
                return
            if fault.trickle:
                self.send_response(fault.status or 200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for index in range(len(data)):
                    self.wfile.write(data[index:index + 1])
                    self.wfile.flush()
                    time.sleep(fault.trickle)
                return
            self._send(fault.status or 200, data, headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
