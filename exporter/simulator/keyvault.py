"""A fake Azure Key Vault secrets API: versions, the challenge, RBAC refusals, the size limit.

From Microsoft's pages (learn.microsoft.com/rest/api/keyvault/secrets/get-secret and set-secret,
.../key-vault/general/authentication-requests-and-responses, .../rest-error-codes,
.../service-limits) and the bodies users report (403 ForbiddenByRbac naming the denied action):
- GET /secrets/{name}[/{version}] answers the bundle `{value, id, attributes, ...}`; an unknown
  name is 404 `SecretNotFound`. PUT /secrets/{name} with `{"value": ...}` makes a new version.
- Without a valid token: 401 and `WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
  resource="<vault resource>"`. A token for another audience is 401 as well.
- A caller without the data-plane role: 403 Forbidden, innererror ForbiddenByRbac, with
  `Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'` (or setSecret).
- A value over 25 KB: 400 BadParameter.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_SECRET_BYTES = 25 * 1024
ROLE_ACTIONS = {"get": "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                "set": "Microsoft.KeyVault/vaults/secrets/setSecret/action"}


@dataclass(frozen=True)
class Caller:
    """Who a valid access token belongs to, as the vault sees it."""

    client_id: str
    tenant_id: str
    audience: str


class FakeKeyVault:
    """The secrets of one vault at `url`; `caller` resolves a bearer token (None: not valid)."""

    def __init__(self, url: str, resource: str, authority: str,
                 caller: Callable[[str], Caller | None], clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.resource = resource
        self.authority = authority  # "<authority host>/<tenant>" for the challenge
        self._caller = caller
        self._clock = clock
        self._lock = threading.Lock()
        self._versions: dict[str, list[dict[str, Any]]] = {}  # lower-case name -> versions, oldest first
        self.roles: dict[str, set[str]] = {}  # client id -> {"get", "set"}

    def grant(self, client_id: str, *roles: str) -> None:
        """Give a principal data-plane rights: "get", "set" (Secrets Officer is both)."""
        self.roles.setdefault(client_id, set()).update(roles or ("get", "set"))

    def revoke(self, client_id: str) -> None:
        self.roles.pop(client_id, None)

    def versions(self, name: str) -> list[str]:
        """The values a secret has had, oldest first: one entry per successful write."""
        with self._lock:
            return [v["value"] for v in self._versions.get(name.lower(), [])]

    def put(self, name: str, value: str) -> None:
        """Set a secret directly, as an admin in the portal would."""
        self._store(name, value, None)

    def handle(self, method: str, parts: list[str], authorization: str | None,
               body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, extra headers) for a request to /secrets/..."""
        token = (authorization or "").removeprefix("Bearer ")
        caller = self._caller(token) if token and token != authorization else None
        if caller is None or not caller.audience.startswith(self.resource):
            message = ("AKV10000: Request is missing a Bearer or PoP token." if caller is None
                       else "AKV10022: Invalid audience.")
            return 401, _error("Unauthorized", message), {
                "WWW-Authenticate": f'Bearer authorization="{self.authority}", resource="{self.resource}"'}
        if len(parts) < 2 or not parts[1]:
            return 400, _error("BadParameter", "The request URI is invalid."), {}
        name = parts[1]
        role = "get" if method == "GET" else "set"
        if role not in self.roles.get(caller.client_id, set()):
            return 403, _forbidden(caller, role, self.url, name), {}
        if method == "GET":
            with self._lock:
                versions = self._versions.get(name.lower(), [])
                found = (versions[-1] if versions and len(parts) == 2
                         else next((v for v in versions if v["id"].endswith("/" + parts[2])), None)
                         if len(parts) > 2 else None)
            if found is None:
                return 404, _error("SecretNotFound", f"A secret with (name/id) {name} was not found in "
                                                     f"this key vault. If you recently deleted this "
                                                     f"secret you may be able to recover it using the "
                                                     f"correct recovery command."), {}
            return 200, found, {}
        try:
            payload = json.loads(body)
            value = payload["value"]
            if not isinstance(value, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return 400, _error("BadParameter", "The request body is not a secret: value is required."), {}
        if len(value.encode()) > MAX_SECRET_BYTES:
            return 400, _error("BadParameter", f"The secret value is larger than the maximum of "
                                               f"{MAX_SECRET_BYTES} bytes."), {}
        return 200, self._store(name, value, payload.get("contentType")), {}

    def _store(self, name: str, value: str, content_type: Any) -> dict[str, Any]:
        now = int(self._clock())
        version = uuid.uuid4().hex
        bundle = {"value": value, "id": f"{self.url}/secrets/{name}/{version}",
                  "attributes": {"enabled": True, "created": now, "updated": now,
                                 "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}}
        if content_type is not None:
            bundle["contentType"] = content_type
        with self._lock:
            self._versions.setdefault(name.lower(), []).append(bundle)
        return bundle


def _error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


def _forbidden(caller: Caller, role: str, vault: str, name: str) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return _error("Forbidden", (
        f"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny "
        f"assignments or role definitions were changed recently, please observe propagation time.\r\n"
        f"Caller: appid={caller.client_id};iss=https://sts.windows.net/{caller.tenant_id}/\r\n"
        f"Action: '{ROLE_ACTIONS[role]}'\r\nResource: '{vault}/secrets/{name.lower()}'\r\n"
        f"Assignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n"
        f"Vault: simulator;location=local;date={stamp}\r\n"), inner="ForbiddenByRbac")
