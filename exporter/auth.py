"""MSAL token provider per tenant: Secure Application Model refresh tokens, app-only and ROPC."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TextIO, get_args
from urllib.parse import parse_qs, urlsplit

import httpx
import msal
from msal.exceptions import MsalServiceError

from exporter.client import describe_transport_error, parse_retry_after, read_bounded
from exporter.config.types import AuthConfig, ClientAssertion, KeyVaultStore
from exporter.files import SECRET_LIMIT, FileReadError, read_text
from exporter.logs import REDACTOR
from exporter.model import PollError, escape_controls
from exporter.token_store import FileTokenCache, StoredTokenCache, VaultTokenCache

if TYPE_CHECKING:
    from exporter.keyvault import KeyVaultSecrets

log = logging.getLogger("exporter.auth")

_AADSTS_RE = re.compile(r"AADSTS(\d+)")
# What MSAL's own texts look like, where classification depends on them; tests/test_msal_contract.py
# pins each against the installed MSAL, so an upgrade that changes one fails there.
MSAL_REPLAYED_STATUS = re.compile(r"HTTP Error: (\d+)")  # MsalServiceError of a throttle-cache replay
MSAL_AUTHORITY_WORD = "authority"  # in the ValueError of a failed OpenID discovery
_LOGIN = "run `{login}`"
_PC_APP = "2832473f-ec63-45fb-976f-5d45a7d4bb91"
# Identity-platform error codes mapped to what the operator should do; README lists the same table.
# Codes from Microsoft's AADSTS reference (learn.microsoft.com/entra/identity-platform/reference-error-codes).
AAD_HINTS: Mapping[int, str] = {
    7000215: "the client secret is wrong: copy the secret's value (not its id) from the app "
             "registration into client_secret_file",
    7000222: "the client secret has expired: create a new one in the app registration and update "
             "client_secret_file",
    700016: "application {client_id} was not found in tenant {tenant_id}: check client_id and "
            "tenant_id, and that the app is registered or consented there",
    65001: "the app has no consent for the {permission}: grant admin consent in the app "
           "registration's API permissions, then " + _LOGIN,
    50126: "invalid username or password for {username}: fix username or password_file",
    # For refresh_token: the refresh token was fine; a Conditional Access policy now asks for MFA.
    50076: "Conditional Access now requires MFA for this sign-in, which the stored refresh token "
           "cannot satisfy: " + _LOGIN + " to sign in again with MFA",
    50079: "the account must now register for MFA (Conditional Access or security defaults): register, "
           "then " + _LOGIN,
    50078: "the MFA of the stored sign-in has expired: " + _LOGIN + " to sign in again with MFA",
    70043: "the refresh token is no longer accepted because of a Conditional Access sign-in frequency "
           "policy: " + _LOGIN + ", and ask for the policy to exclude this app or lengthen its "
           "frequency",
    500011: "the resource's service principal is missing in tenant {tenant_id}: for Partner Center, "
            "create it with `New-MgServicePrincipal -AppId " + _PC_APP + "` and grant admin consent",
    7000218: "the app {client_id} is a public client but public client flows are disabled: turn on "
             "Allow public client flows in the app registration (Authentication), or configure a "
             "client secret",
    53003: "Conditional Access blocked the sign-in: check the Entra sign-in log for the policy and "
           "exclude this app or the exporter's location, then " + _LOGIN,
    700082: "the refresh token has expired (unused for 90 days): " + _LOGIN,
    50173: "the refresh token was revoked (password change or session revocation), or it was already "
           "redeemed by a process that could not save the rotated one (a full disk or a vault "
           "outage; its log says 'cannot save the rotated refresh token'): " + _LOGIN,
    700025: "the refresh token belongs to a public client but a client secret was sent: remove "
            "client_secret_file for this tenant, or sign in again with a confidential flow",
    90002: "tenant {tenant_id} does not exist: check tenant_id",
    # Certificate and federated credentials (private_key_jwt, workload identity federation).
    700027: "the platform does not accept the signature of {credential}: upload that certificate's "
            "public part to app {client_id} (Certificates & secrets), or point client_certificate_file "
            "at the certificate registered there",
    700024: "the client assertion is outside its valid time: check this host's clock; for a federated "
            "token, check that the file is being renewed ({credential})",
    70021: "no federated identity credential of app {client_id} matches the assertion in {credential}: "
           "add one with the token's issuer and subject (for AKS: the cluster's OIDC issuer and "
           "system:serviceaccount:<namespace>:<name>) and audience api://AzureADTokenExchange",
    700213: "no federated identity credential of app {client_id} matches the assertion's subject in "
            "{credential}: check the credential's subject (it is case-sensitive)",
    50027: "the platform could not read the client assertion from {credential} as a JWT",
}
# Where the fix depends on the tenant's method: ROPC can never do MFA, a signed-in user can.
_METHOD_HINTS: Mapping[tuple[int, str], str] = {
    (50076, "username_password"): "the account must use MFA, which username_password (ROPC) cannot "
                                  "do; Partner Center requires MFA since April 2026: switch to method "
                                  "refresh_token and " + _LOGIN,
    (50079, "username_password"): "the account must register for MFA, which username_password (ROPC) "
                                  "cannot do; switch to method refresh_token and " + _LOGIN,
}


def aad_hint(code: int, method: str) -> str | None:
    """The operator's fix for an AADSTS code, for a tenant signing in with `method`."""
    return _METHOD_HINTS.get((code, method)) or AAD_HINTS.get(code)


def describe_credential(auth: AuthConfig) -> str:
    """The credential an app signs in with, as hints name it; never its value."""
    if auth.client_certificate is not None:
        return str(auth.client_certificate)
    if auth.client_assertion is not None:
        return str(auth.client_assertion)
    if auth.managed_identity is not None:
        return str(auth.managed_identity)
    if auth.client_secret is not None:
        return f"the client secret from {auth.client_secret.source}"
    return "the app's credential"


def _permission(scope: str | None, method: str) -> str:
    if scope is not None and "graph" in scope.lower():
        kind = "application" if method == "client_credentials" else "delegated"
        return (f"Microsoft Graph {kind} permission DelegatedAdminRelationship.Read.All (and "
                f"Directory.Read.All to list the partner's contracts)")
    return "Partner Center delegated permission (Partner Customer Delegated Administration)"


_ROPC_WARNING_LOCK = threading.Lock()


@dataclass(frozen=True)
class Identity:
    """Who asks the identity platform for tokens, and what its messages may name."""

    tenant: str  # the tenant's name in the config, for logs and messages
    tenant_id: str
    client_id: str
    auth: AuthConfig
    authority_host: str
    scope: str  # the resource asked for unless a caller names another
    # The command that signs in again, quoted in hints; the wiring knows the config file.
    login_command: str = "partnercenter-exporter login"

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"


class RecordingHttp:
    """The httpx.Client MSAL sees; remembers the last status so throttling can be classified."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self.last_status: int | None = None
        self.last_retry_after: str | None = None

    def reset(self) -> None:
        self.last_status = self.last_retry_after = None

    def _record(self, response: httpx.Response) -> httpx.Response:
        self.last_status = response.status_code
        self.last_retry_after = response.headers.get("retry-after")
        return response

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._record(read_bounded(self._client, method, url, api="the identity platform",
                                         resource="a token request", **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        data = kwargs.get("data")
        if isinstance(data, Mapping):
            # MSAL hands a signed client assertion over as bytes, and httpx form-encodes bytes as
            # the text "b'...'", which the platform refuses. The simulator parses assertions as
            # Entra does, so the certificate tests fail without this.
            kwargs["data"] = {key: value.decode() if isinstance(value, bytes) else value
                              for key, value in data.items()}
        return self._request("POST", url, **kwargs)


def build_msal_app(identity: Identity, http: RecordingHttp, cache: msal.TokenCache, *,
                   confidential: bool) -> msal.ClientApplication:
    """Construct the MSAL app; this does network I/O (OpenID discovery), so call it lazily."""
    host = urlsplit(identity.authority_host).hostname or ""
    options: dict[str, Any] = {
        "authority": identity.authority,
        "http_client": http,
        "token_cache": cache,
    }
    if host not in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS:
        # Otherwise MSAL asks login.microsoftonline.com about sovereign clouds and the simulator.
        options["instance_discovery"] = False
    if confidential:
        return msal.ConfidentialClientApplication(
            identity.client_id, client_credential=client_credential(identity.auth), **options)
    return msal.PublicClientApplication(identity.client_id, **options)


def client_credential(auth: AuthConfig) -> str | dict[str, Any]:
    """The confidential app's credential in the form MSAL's client_credential takes."""
    if auth.client_certificate is not None:
        cert = auth.client_certificate
        if cert.send_chain:
            # With the certificate, MSAL sends the x5c chain (subject name/issuer auth) and signs
            # with PS256 under the SHA-256 thumbprint.
            return {"private_key": cert.private_key_pem, "public_certificate": cert.certificate_pem}
        return {"private_key": cert.private_key_pem, "thumbprint": cert.thumbprint_sha1}
    if auth.client_assertion is not None:
        return {"client_assertion": assertion_reader(auth.client_assertion)}
    assert auth.client_secret is not None
    return auth.client_secret.value


def assertion_reader(assertion: ClientAssertion) -> Callable[[], str]:
    """Reads the federated token at every token request: the kubelet replaces it about hourly."""
    def read() -> str:
        try:
            text = read_text(assertion.path, SECRET_LIMIT).strip()
        except FileReadError as err:
            raise PollError("auth", f"cannot read {assertion}: {err}") from None
        if not text:
            raise PollError("auth", f"{assertion} is empty")
        return text
    return read


SecretsKeeper = Callable[[str, Iterable[str]], None]  # (owner, its secrets now): Redactor.keep


def open_token_cache(identity: Identity, http: httpx.Client, *,
                     on_token: Callable[[str], None] | None = None,
                     keep_secrets: SecretsKeeper | None = None,
                     login: bool = False) -> msal.SerializableTokenCache:
    """The refresh_token tenant's cache: its file, or its Key Vault secret read now. `login`: the
    sign-in being made is the newest, written over whatever a running exporter put there."""
    auth = identity.auth
    on_secrets = _secrets_of(identity, keep_secrets)
    if auth.token_store is not None:
        cache = VaultTokenCache(vault_secrets(identity, auth.token_store, http, on_token=on_token),
                                auth.token_store.secret_name, tenant=identity.tenant, on_secrets=on_secrets,
                                newest_wins=not login)
        cache.load()
        return cache
    assert auth.token_cache_file is not None
    return FileTokenCache(auth.token_cache_file, on_secrets=on_secrets, tenant=identity.tenant)


def _secrets_of(identity: Identity, keep: SecretsKeeper | None) -> Callable[[Iterable[str]], None] | None:
    """Where one tenant's token cache reports the refresh tokens it holds."""
    if keep is None:
        return None
    owner = f"{identity.tenant}/{identity.client_id}/{identity.auth.cache_name}"
    return lambda values: keep(owner, values)


def vault_secrets(identity: Identity, store: KeyVaultStore, http: httpx.Client, *,
                  on_token: Callable[[str], None] | None = None) -> KeyVaultSecrets:
    """The store's vault, signed in to app-only with the store's own credential."""
    from exporter.keyvault import KeyVaultSecrets  # only configs with a vault token store load it

    access = Identity(tenant=identity.tenant, tenant_id=store.tenant_id or identity.tenant_id,
                      client_id=store.client_id or identity.client_id, auth=store.access,
                      authority_host=identity.authority_host, scope="", login_command=identity.login_command)
    tokens = TokenProvider(access, http, on_token=on_token)
    who = (str(store.access.managed_identity) if store.access.managed_identity is not None
           else f"app {access.client_id} ({describe_credential(store.access)})")

    def vault_token(scope: str, fresh: bool) -> str:
        try:
            return tokens.get_token(scope=scope, force_refresh=fresh)
        except PollError as err:  # say it was the vault's sign-in, not Partner Center's
            raise PollError(err.reason, f"signing in to Key Vault {store.vault_url} as {who}: "
                                        f"{err.message}", retry_after=err.retry_after) from None

    return KeyVaultSecrets(store.vault_url, http, vault_token, identity=who)


def classify_identity_error(result: Mapping[str, Any], *, identity: Identity,
                            status: int | None, retry_after: float | None,
                            scope: str | None = None, login: bool = False) -> PollError:
    """Map an identity-platform error response to a reason and a one-line, actionable message."""
    error = REDACTOR.shown(str(result.get("error") or "unknown_error"), 64)
    description = str(result.get("error_description") or "").strip()
    first_line = REDACTOR.shown(description.splitlines()[0], 240) if description else error
    codes = [int(c) for c in result.get("error_codes") or [] if isinstance(c, int)]
    codes += [int(c) for c in _AADSTS_RE.findall(description) if int(c) not in codes]
    if status == 429:
        wait = f"; retrying after {retry_after:.0f}s" if retry_after is not None else ""
        return PollError("throttled", f"the identity platform throttled the token request (429){wait}",
                         retry_after=retry_after)
    if status is not None and status >= 500:
        detail = f": {first_line}" if result else ""
        return PollError("server_error", f"the identity platform answered {status}{detail}",
                         retry_after=retry_after)
    method = identity.auth.method
    if identity.auth.managed_identity is not None:
        return PollError("auth", f"{identity.auth.managed_identity} got no token: {first_line}; check that "
                                 f"it is assigned to this Azure resource")
    fields = {"client_id": identity.client_id, "tenant_id": identity.tenant_id,
              "username": identity.auth.username or "the user", "login": identity.login_command,
              "permission": _permission(scope, method), "credential": describe_credential(identity.auth)}
    for code in codes:
        hint = aad_hint(code, method)
        if hint is not None and not (login and _LOGIN in hint):
            return PollError("auth", f"{hint.format(**fields)} [AADSTS{code}]")
    if login:
        # Hints that say "run login" are for a running exporter; this is login, refused.
        return PollError("auth", f"the identity platform refused the sign-in: {error}: {first_line}; sign "
                                 f"in as a partner admin of tenant {identity.tenant_id}, the tenant_id of "
                                 f"{identity.tenant} in the config, and try again")
    if error == "invalid_grant" and method == "refresh_token":
        return PollError("auth", "the refresh token is no longer valid: " + _LOGIN.format(**fields)
                         + f" [{first_line}]")
    return PollError("auth", f"the identity platform refused the token request: {error}: {first_line}")


class TokenProvider:
    """Hands out access tokens for one tenant, reusing them until MSAL decides to refresh."""

    def __init__(self, identity: Identity, http: httpx.Client, *,
                 clock: Callable[[], float] = time.time,
                 on_token: Callable[[str], None] | None = None,
                 keep_secrets: SecretsKeeper | None = None) -> None:
        self.identity = identity
        self.method = identity.auth.method
        self._default_scope = identity.scope
        # Per scope: Partner Center and Graph tokens come from the one app, cache and refresh token.
        self._expires_at: dict[str, float] = {}
        self._raw_http = http
        self._http = RecordingHttp(http)
        self._clock = clock
        self._on_token = on_token
        self._keep_secrets = keep_secrets
        self._app: Any = None  # an msal ClientApplication or ManagedIdentityClient, built lazily
        self._cache: msal.TokenCache | None = None
        self._reload_store = False  # a sign-in failed: read the vault again (a login may have run)
        self._seed_imported = False
        # Held while a token request is in flight; shutdown waits for it (see wait_idle).
        self._in_flight = threading.Lock()
        self._ahead_error: tuple[str, PollError] | None = None  # from sign_in_ahead, for get_token

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no token request is in flight, so a rotated refresh token reaches the cache."""
        if not self._in_flight.acquire(timeout=max(0.0, timeout)):
            return False
        self._in_flight.release()
        return True

    def flush(self, timeout: float) -> None:
        """At shutdown: one more try, within `timeout` seconds, to save a token the token store
        has not taken yet."""
        with self._in_flight:
            if isinstance(self._cache, StoredTokenCache) and not self._cache.flush(timeout):
                log.error("the newest refresh token could not be saved to %s and ends with this "
                          "process: after a restart, run `%s`", self._cache, self.identity.login_command,
                          extra={"tenant": self.identity.tenant})

    @property
    def expires_at(self) -> float | None:
        """Expiry of the latest access token for the Partner Center scope."""
        return self._expires_at.get(self._default_scope)

    @property
    def store_pending(self) -> bool | None:
        """None without a token store; else whether the store lags behind the newest token."""
        if isinstance(self._cache, (FileTokenCache, VaultTokenCache)):
            return self._cache.pending
        return None

    def for_scope(self, scope: str) -> ScopedTokens:
        """This provider's tokens for another resource, such as Microsoft Graph."""
        return ScopedTokens(self, scope)

    def expires_at_for(self, scope: str) -> float | None:
        return self._expires_at.get(scope)

    def get_token(self, *, force_refresh: bool = False, scope: str | None = None) -> str:
        scope = scope or self._default_scope
        with self._in_flight:
            ahead, self._ahead_error = self._ahead_error, None
            if ahead is not None and ahead[0] == scope and not force_refresh:
                raise ahead[1]
            return self._get_token(force_refresh, scope)

    def sign_in_ahead(self, *, scope: str | None = None) -> None:
        """Get a token before the first poll asks for it, so a cold start's sign-ins run beside
        the polls rather than inside their slots. A sign-in already in flight is left alone. A
        failure is kept for the next get_token, which raises it: the poll reports it, and the
        platform is not asked twice (MSAL would answer a repeated refusal from its own cache)."""
        if not self._in_flight.acquire(blocking=False):
            return
        scope = scope or self._default_scope
        try:
            self._get_token(False, scope)
        except PollError as err:
            self._ahead_error = (scope, err)
        finally:
            self._in_flight.release()

    @property
    def certificate_expires_at(self) -> float | None:
        """When the first of the client certificates this provider signs in with expires (its own,
        and its token store's), as Unix time; None without one."""
        auth = self.identity.auth
        store = auth.token_store.access if auth.token_store is not None else None
        ends = [cert.not_after.timestamp() for cert in (auth.client_certificate,
                                                         store.client_certificate if store else None)
                if cert is not None]
        return min(ends) if ends else None

    def _get_token(self, force_refresh: bool, scope: str) -> str:
        cert = self.identity.auth.client_certificate
        problem = cert.problem(dt.datetime.fromtimestamp(self._clock(), dt.UTC)) if cert else None
        if problem is not None:  # this tenant fails; the others go on
            raise PollError("auth", problem)
        self._http.reset()
        try:
            if self._app is None:
                self._app = self._build()
            result = self._acquire(self._app, force_refresh, [scope])
        except PollError:
            raise
        except MsalServiceError as err:
            # MSAL raises for 5xx from the token endpoint instead of returning the error body.
            raise self._service_error(str(err)) from None
        except httpx.TransportError as err:
            where = ("the managed identity endpoint (is this running on Azure with the identity "
                     "assigned?)" if self.identity.auth.managed_identity else "the identity platform")
            raise describe_transport_error(err, where) from None
        except (json.JSONDecodeError, RecursionError):
            raise self._not_a_token_response("a body that is not JSON") from None
        except OSError as err:
            raise PollError("auth", f"cannot use {self.identity.auth.cache_name}: "
                                    f"{getattr(err, 'strerror', None) or type(err).__name__}") from None
        except ValueError as err:
            if self.identity.auth.managed_identity is not None:  # e.g. expires_on "soon"
                raise self._not_a_token_response("a token response MSAL cannot read") from None
            raise self._setup_error(err) from None
        except (AttributeError, TypeError, KeyError, IndexError):
            # MSAL reads the answer as a JSON object: a list, a string or a number ends here.
            raise self._not_a_token_response("JSON that is not a token response") from None
        if "access_token" not in result:
            self._reload_store = self.method == "refresh_token"
            raise classify_identity_error(
                result, identity=self.identity, status=self._http.last_status,
                retry_after=parse_retry_after(self._http.last_retry_after, self._clock()), scope=scope)
        token = str(result["access_token"])
        self._expires_at[scope] = self._clock() + float(result.get("expires_in") or 0)
        if self._on_token is not None:
            self._on_token(token)
        return token

    def _not_a_token_response(self, what: str) -> PollError:
        if self.identity.auth.managed_identity is not None:
            return PollError("invalid_response", f"the managed identity endpoint answered with {what}; "
                                                 f"check that this runs on an Azure resource with "
                                                 f"{self.identity.auth.managed_identity} assigned, and "
                                                 f"that no proxy answers for IDENTITY_ENDPOINT (or IMDS)")
        return PollError("invalid_response", f"the identity platform answered with {what}; check "
                                             f"endpoints.authority_host, and any proxy in between")

    def _service_error(self, text: str) -> PollError:
        status = self._http.last_status
        if status is None:
            # No request went out: MSAL replayed a recent 429/5xx from its throttle cache, which
            # it keeps for Retry-After, or 60 s (public clients) or 5 s without one.
            match = MSAL_REPLAYED_STATUS.search(text)
            code = match.group(1) if match else "an error"
            return PollError("throttled" if code == "429" else "server_error",
                             f"the identity platform answered {code} a moment ago, and MSAL waits up to "
                             f"60s before it asks again")
        # MSAL raised instead of returning the body; the status alone decides, as for any answer.
        return classify_identity_error(
            {}, identity=self.identity, status=status,
            retry_after=parse_retry_after(self._http.last_retry_after, self._clock()))

    def _build(self) -> Any:
        auth = self.identity.auth
        if auth.method == "username_password":
            log.warning("username_password (ROPC) cannot do MFA, which Partner Center requires for "
                        "App+User calls since April 2026; prefer method refresh_token with login",
                        extra={"tenant": self.identity.tenant})
        if auth.managed_identity is not None:
            mi = auth.managed_identity
            which = (msal.UserAssignedManagedIdentity(client_id=mi.client_id) if mi.client_id
                     else msal.SystemAssignedManagedIdentity())
            return msal.ManagedIdentityClient(which, http_client=self._http, token_cache=msal.TokenCache())
        if auth.method == "refresh_token":
            self._cache = open_token_cache(self.identity, self._raw_http, on_token=self._on_token,
                                           keep_secrets=self._keep_secrets)
        else:  # ROPC's refresh tokens are secrets too
            self._cache = StoredTokenCache(_secrets_of(self.identity, self._keep_secrets))
        return build_msal_app(self.identity, self._http, self._cache, confidential=auth.confidential)

    def _acquire(self, app: Any, force_refresh: bool, scopes: list[str]) -> dict[str, Any]:
        auth = self.identity.auth
        if auth.managed_identity is not None:
            if force_refresh:  # the client has no call that drops its cached token
                self._app = app = self._build()
            return dict(app.acquire_token_for_client(resource=scopes[0].removesuffix("/.default")))
        if auth.method == "client_credentials":
            if force_refresh:
                app.remove_tokens_for_client()
            return dict(app.acquire_token_for_client(scopes))
        if isinstance(self._cache, VaultTokenCache):
            self._cache.sync(force=self._reload_store)
        self._reload_store = False
        accounts = app.get_accounts(username=auth.username) if auth.username else app.get_accounts()
        if accounts:
            result = app.acquire_token_silent_with_error(
                scopes, account=accounts[0], force_refresh=force_refresh)
            # With a password at hand, a refresh token that stopped working is no dead end.
            if result is not None and ("access_token" in result or auth.method != "username_password"):
                return dict(result)
        if auth.method == "username_password":
            assert auth.username is not None
            assert auth.password is not None
            with _ROPC_WARNING_LOCK, warnings.catch_warnings():
                # MSAL warns that public-client ROPC is deprecated; we say so in our own log line.
                warnings.filterwarnings("ignore", category=DeprecationWarning,
                                        message="This API has been deprecated")
                return dict(app.acquire_token_by_username_password(
                    auth.username, auth.password.value, scopes=scopes))
        if auth.refresh_token is not None and not self._seed_imported:
            # Imported once: a seed is single-use, because the platform rotates it on redemption.
            self._seed_imported = True
            log.info("importing refresh token seed into the empty token cache",
                     extra={"tenant": self.identity.tenant, "source": auth.refresh_token.source})
            return dict(app.acquire_token_by_refresh_token(auth.refresh_token.value, scopes))
        self._reload_store = True
        raise PollError("auth", f"{auth.cache_name} holds no signed-in account: "
                        + _LOGIN.format(login=self.identity.login_command))

    def _setup_error(self, err: ValueError) -> PollError:
        status = self._http.last_status
        if status is not None and status >= 500:
            return PollError("server_error", f"OpenID discovery at the identity platform answered {status}")
        if status == 429:
            return PollError("throttled", "OpenID discovery at the identity platform was throttled (429)")
        if MSAL_AUTHORITY_WORD in str(err).lower():
            return PollError("auth", f"OpenID discovery failed for tenant {self.identity.tenant_id} at "
                                     f"{self.identity.authority_host}: check tenant_id and "
                                     f"endpoints.authority_host")
        return PollError("auth", f"MSAL refused the request: {REDACTOR.shown(str(err), 200)}")


class ScopedTokens:
    """A TokenProvider seen through one scope: what an API client for that resource needs."""

    def __init__(self, provider: TokenProvider, scope: str) -> None:
        self._provider = provider
        self.scope = scope

    @property
    def method(self) -> str:
        return self._provider.method

    @property
    def expires_at(self) -> float | None:
        return self._provider.expires_at_for(self.scope)

    @property
    def store_pending(self) -> bool | None:
        return self._provider.store_pending

    @property
    def certificate_expires_at(self) -> float | None:
        return self._provider.certificate_expires_at

    def get_token(self, *, force_refresh: bool = False) -> str:
        return self._provider.get_token(force_refresh=force_refresh, scope=self.scope)

    def sign_in_ahead(self) -> None:
        self._provider.sign_in_ahead(scope=self.scope)

    def wait_idle(self, timeout: float) -> bool:
        return self._provider.wait_idle(timeout)

    def flush(self, timeout: float) -> None:
        self._provider.flush(timeout)


class LoginError(Exception):
    """Interactive login failed; the message says why and what to do."""


LoginFlow = Literal["device-code", "auth-code"]
LOGIN_FLOWS: tuple[LoginFlow, ...] = get_args(LoginFlow)
DEFAULT_REDIRECT_URI = "http://localhost"


def interactive_login(identity: Identity, http: httpx.Client, *, out: TextIO, flow: LoginFlow = "device-code",
                      redirect_uri: str = DEFAULT_REDIRECT_URI,
                      read_line: Callable[[], str] = input,
                      keep_secrets: SecretsKeeper | None = None) -> str:
    """Secure Application Model bootstrap: an admin signs in with MFA; the result goes to the cache.

    device-code: the admin enters a code at Microsoft's device login page. auth-code: the
    authorization code flow with PKCE, for partners whose Conditional Access blocks device code
    flow (as Microsoft recommends); the admin opens the printed URL in any browser and pastes the
    URL the browser was redirected to, which works on a headless server too.
    """
    auth, name, scope = identity.auth, identity.tenant, identity.scope
    if auth.method != "refresh_token":
        raise LoginError(f"tenant {name} uses method {auth.method}; login is only for "
                         f"method refresh_token, which keeps its tokens in token_cache_file or token_store")
    if auth.confidential:
        raise LoginError(f"tenant {name} has a client credential, but an interactive sign-in makes "
                         f"public-client tokens that cannot be redeemed with one: remove "
                         f"client_secret_*/client_certificate_* for this tenant, or obtain a refresh "
                         f"token with your Secure Application Model tooling and set refresh_token_file")
    recording = RecordingHttp(http)

    def refused(result: Mapping[str, Any]) -> LoginError:
        return LoginError(classify_identity_error(
            result, identity=identity, status=recording.last_status, retry_after=None,
            scope=scope, login=True).message)

    try:
        cache = open_token_cache(identity, http, keep_secrets=keep_secrets, login=True)
        app = build_msal_app(identity, recording, cache, confidential=False)
        if flow == "auth-code":
            result = _auth_code_flow(app, [scope], redirect_uri, out, read_line)
        else:
            device = app.initiate_device_flow(scopes=[scope])
            if "user_code" not in device:
                raise refused(device)
            # The identity platform's text, shown on a terminal: no control character gets through.
            print(escape_controls(str(device.get("message") or f"Open {device['verification_uri']} and "
                                                               f"enter the code {device['user_code']}")),
                  file=out, flush=True)
            result = app.acquire_token_by_device_flow(device)
    except httpx.TransportError as err:
        raise LoginError(describe_transport_error(err, "the identity platform").message) from None
    except PollError as err:  # the token store's vault
        raise LoginError(err.message) from None
    except OSError as err:
        raise LoginError(f"cannot use {auth.cache_name}: {err.strerror or type(err).__name__}") from None
    except ValueError as err:
        raise LoginError(f"sign-in could not start for tenant {identity.tenant_id}: "
                         f"{REDACTOR.shown(str(err), 200)}") from None
    if "access_token" not in result:
        raise refused(result)
    claims = result.get("id_token_claims") or {}
    user = claims.get("preferred_username")
    for account in app.get_accounts():
        if account.get("username") != user:
            # The exporter uses the cache's one account; an older sign-in must not shadow this one.
            app.remove_account(account)
    if isinstance(cache, StoredTokenCache) and not cache.flush(http.timeout.read or 30.0):
        raise LoginError(f"signed in, but the token cache could not be saved to {cache} (the log line "
                         f"above says why); fix that and run login again")
    return str(user or claims.get("name") or "the signed-in user")


def _auth_code_flow(app: msal.ClientApplication, scopes: list[str], redirect_uri: str, out: TextIO,
                    read_line: Callable[[], str]) -> dict[str, Any]:
    """Authorization code with PKCE: print the sign-in URL, read back the redirected-to URL."""
    with warnings.catch_warnings():
        # MSAL recommends response_mode=form_post, but the admin pastes the code from the address
        # bar: with form_post it would go in a POST to a localhost page nobody serves. PKCE and
        # MSAL's state check protect the code instead.
        warnings.filterwarnings("ignore", category=UserWarning, message="response_mode='form_post'")
        flow = app.initiate_auth_code_flow(scopes, redirect_uri=redirect_uri, prompt="select_account")
    print(f"Open this URL in a browser and sign in as a partner admin (with MFA):\n\n"
          f"  {flow['auth_uri']}\n\n"
          f"The browser is then sent to {redirect_uri}; that page may not load, which is fine. "
          f"Copy the full address from the browser's address bar and paste it here:",
          file=out, flush=True)
    try:
        pasted = read_line().strip()
    except EOFError:
        raise LoginError("no redirect URL was pasted (standard input ended); run login in a "
                         "terminal") from None
    parts = urlsplit(pasted)
    response = {key: values[0] for key, values in parse_qs(parts.query or parts.fragment).items()}
    if "code" not in response and "error" not in response:
        raise LoginError(f"the pasted text is not the URL the browser was redirected to: it should "
                         f"start with {redirect_uri} and hold code= and state=")
    try:
        return dict(app.acquire_token_by_auth_code_flow(flow, response))
    except ValueError:
        # MSAL checks state, so a URL from another sign-in attempt cannot be replayed here.
        raise LoginError("the pasted URL belongs to another sign-in attempt (its state does not "
                         "match): run login again and paste the URL of this attempt") from None
