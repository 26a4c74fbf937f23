"""Azure Key Vault secrets over REST: read and write one secret, with the vault's challenge-based
authentication and its throttling. Two calls do not need the Azure SDK; docs/security.md has the
measurement behind that choice.

Behaviour from Microsoft's pages:
- Get Secret / Set Secret: GET and PUT {vault}/secrets/{name}?api-version=7.4; a PUT makes a new
  version and answers the bundle (`value`, `id` ending in the version, `attributes`)
  (learn.microsoft.com/rest/api/keyvault/secrets/get-secret, .../set-secret).
- A request without a token gets 401 with `WWW-Authenticate: Bearer authorization="<authority>",
  resource="https://vault.azure.net"`; the client asks for `<resource>/.default`. The Azure SDKs
  check that the vault's host lies under the resource's domain before sending it a token
  (learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses).
- Throttling: 429 with Retry-After; errors are `{"error": {"code", "message", "innererror"}}`; a
  missing RBAC role is 403 `Forbidden` / `ForbiddenByRbac` naming the denied action
  (learn.microsoft.com/azure/key-vault/general/overview-throttling, .../rest-error-codes).
- A secret value is at most 25 KB (learn.microsoft.com/azure/key-vault/general/service-limits).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from exporter.client import describe_transport_error, parse_retry_after, read_bounded
from exporter.logs import REDACTOR
from exporter.model import PollError

API_VERSION = "7.4"
MAX_SECRET_BYTES = 25 * 1024
CONTENT_TYPE = "application/vnd.partnercenter-exporter.msal-token-cache+json"
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_ACTION_RE = re.compile(r"Action: '([^']+)'")
# Transient answers worth another try within one call; each waits Retry-After or a backoff.
_RETRYABLE = {429, 500, 502, 503, 504}

# Gets a token for a scope; the second argument asks for a fresh one (the vault refused the last).
TokenGetter = Callable[[str, bool], str]


class KeyVaultSecrets:
    """One vault's secrets: `get` and `set`. Failures raise PollError with a one-line reason."""

    def __init__(self, vault_url: str, http: httpx.Client, get_token: TokenGetter, *,
                 identity: str = "the exporter's identity", attempts: int = 3, max_wait: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        self.vault_url = vault_url.rstrip("/")
        self._host = (urlsplit(self.vault_url).hostname or "").lower()
        self._http = http
        self._get_token = get_token
        self._identity = identity  # who signs in to the vault, as messages name it
        self._attempts = attempts
        self._max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self._scope: str | None = None  # learnt from the vault's first challenge

    def get(self, name: str, *, attempts: int | None = None, timeout: float | None = None) -> str | None:
        """The secret's newest value, or None when the vault has no such secret."""
        response = self._call("GET", name, None, attempts, timeout)
        if response.status_code == 404:
            return None
        value = _json(response, self.vault_url).get("value")
        if not isinstance(value, str):
            raise PollError("invalid_response", f"Key Vault {self.vault_url} answered secret {name} "
                                                f"without a value")
        return value

    def set(self, name: str, value: str, *, attempts: int | None = None,
            timeout: float | None = None) -> str:
        """Store a new version of the secret; returns the version's id."""
        size = len(value.encode())
        if size > MAX_SECRET_BYTES:
            raise PollError("client_error", f"secret {name} would be {size:,} bytes, over Key Vault's "
                                            f"limit of {MAX_SECRET_BYTES:,}")
        response = self._call("PUT", name, {"value": value, "contentType": CONTENT_TYPE}, attempts, timeout)
        if response.status_code == 404:
            raise self._refused(response, name)
        return str(_json(response, self.vault_url).get("id") or "").rsplit("/", 1)[-1]

    def _call(self, method: str, name: str, body: dict[str, Any] | None,
              attempts: int | None = None, timeout: float | None = None) -> httpx.Response:
        url = f"{self.vault_url}/secrets/{quote(name, safe='')}"
        fresh = False
        challenges = tries = 0
        attempts = attempts or self._attempts
        # A per-call timeout bounds each phase (connect, write, read) tighter than request_timeout.
        limit: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        while True:
            headers = {}
            if self._scope is not None:
                headers["Authorization"] = f"Bearer {self._get_token(self._scope, fresh)}"
            try:
                response = read_bounded(self._http, method, url, api="Azure Key Vault",
                                        resource=f"secret {name}", params={"api-version": API_VERSION},
                                        json=body, headers=headers, **limit)
            except httpx.TransportError as err:
                raise describe_transport_error(err, f"Azure Key Vault {self.vault_url}") from None
            status = response.status_code
            if status == 401 and challenges < 2:  # a challenge is not an attempt
                challenges += 1
                scope = self._challenge_scope(response)
                # A token refused although the scope is right: it was revoked; ask for a new one.
                fresh = self._scope == scope and "Authorization" in headers
                self._scope = scope
                continue
            tries += 1
            if status in _RETRYABLE and tries < attempts:
                wait = parse_retry_after(response.headers.get("retry-after"), self._clock())
                self._sleep(min(self._max_wait, wait if wait is not None else 2.0 ** tries))
                continue
            if status < 300 or (status == 404 and _error(response)[0] == "SecretNotFound"):
                return response
            raise self._refused(response, name)

    def _challenge_scope(self, response: httpx.Response) -> str:
        header = response.headers.get("www-authenticate", "")
        if not header.lower().startswith("bearer"):
            raise PollError("auth", f"{self.vault_url} answered 401 without a Bearer challenge; is "
                                    f"vault_url a Key Vault?")
        params = dict(_CHALLENGE_PARAM_RE.findall(header))
        resource = params.get("resource") or params.get("scope", "").removesuffix("/.default")
        resource_host = (urlsplit(resource).hostname or "").lower()
        # Only a resource the vault's own domain belongs to gets a token, as the Azure SDKs check:
        # a look-alike host must not learn a token for the real vaults.
        if not resource_host or not (self._host == resource_host
                                     or self._host.endswith("." + resource_host)):
            raise PollError("auth", f"{self.vault_url} asked for a token for {resource or 'nothing'}, "
                                    f"which is not its domain; refusing to send one")
        return str(resource).rstrip("/") + "/.default"

    def _refused(self, response: httpx.Response, name: str) -> PollError:
        status = response.status_code
        code, message = _error(response)
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if status == 403:
            action = _ACTION_RE.search(message)
            denied = f" ({action.group(1)})" if action else ""
            return PollError("auth", f"Key Vault {self.vault_url} refused {self._identity} access to "
                                     f"secret {name}{denied}: give it the role Key Vault Secrets Officer "
                                     f"on the secret or the vault (Secrets User cannot write the rotated "
                                     f"token) [{code or 403}]")
        if status == 429:
            return PollError("throttled", f"Key Vault {self.vault_url} throttled the request (429)",
                             retry_after=retry_after)
        if status >= 500:
            return PollError("server_error", f"Key Vault {self.vault_url} answered {status}",
                             retry_after=retry_after)
        if status == 401:
            return PollError("auth", f"Key Vault {self.vault_url} refused the token of {self._identity} "
                                     f"(401 {code}): {REDACTOR.shown(message, 200)}")
        first = REDACTOR.shown(message, 200)
        return PollError("client_error", f"Key Vault {self.vault_url} answered {status} {code} for "
                                         f"secret {name}: {first}")


def _json(response: httpx.Response, vault: str) -> dict[str, Any]:
    try:
        payload = json.loads(response.content)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise PollError("invalid_response", f"Key Vault {vault} answered with a body that is not a "
                                            f"JSON object")
    return payload


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        error = json.loads(response.content).get("error") or {}
        return str(error.get("code") or ""), str(error.get("message") or "")
    except (ValueError, AttributeError):
        return "", ""
