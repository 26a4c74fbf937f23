"""MSAL's token cache kept as one Azure Key Vault secret, for hosts with no disk worth trusting."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msal

from exporter.keyvault import KeyVaultSecrets
from exporter.model import PollError

log = logging.getLogger("exporter.auth")

# What redeeming the refresh token needs. Access and ID tokens are left out: they expire within
# the hour, and without them the secret stays a few KB, far under Key Vault's 25 KB.
STORED_SECTIONS = ("RefreshToken", "Account", "AppMetadata")
RETRY_FIRST, RETRY_MAX = 5.0, 300.0


class VaultTokenCache(msal.SerializableTokenCache):  # type: ignore[misc]
    """Read from the vault at start (`load`); written when what is stored would change, which is
    each refresh-token rotation: one write per token response, never more.

    A failed write is logged with its reason and retried, with backoff, at the next token
    lookups; until then the newest token lives in memory, so polls go on and nothing is lost
    unless the process ends first (shutdown tries once more: `flush`).
    """

    has_state_changed: bool  # SerializableTokenCache's public flag

    def __init__(self, secrets: KeyVaultSecrets, name: str, *, tenant: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._secrets = secrets
        self.name = name
        self._tenant = tenant
        self._monotonic = monotonic
        self._guard = threading.RLock()
        self._depth = 0
        self._stored: str | None = None  # what the vault holds, as last read or written
        self._pending: str | None = None  # what it should hold but a write failed
        self._failures = 0
        self._next_try = 0.0
        self.writes = 0

    def __str__(self) -> str:
        return f"Key Vault secret {self.name} in {self._secrets.vault_url}"

    @property
    def pending(self) -> bool:
        """Whether the vault lags behind the newest token in memory."""
        return self._pending is not None

    def load(self) -> None:
        """Replace the cache with the vault's; an absent secret is an empty cache (login fills it)."""
        with self._guard:
            text = self._secrets.get(self.name)
            try:
                self.deserialize(text)  # None: empty
            except ValueError:
                raise PollError("auth", f"{self} does not hold an MSAL token cache; delete the "
                                        f"secret and run login") from None
            self._stored = self.stored_text() if text else None
            self._pending = None

    def stored_text(self) -> str:
        """The part of the cache the vault keeps, in a stable spelling."""
        everything = json.loads(self.serialize())
        kept = {section: everything[section] for section in STORED_SECTIONS if everything.get(section)}
        return json.dumps(kept, sort_keys=True, separators=(",", ":"))

    def flush(self, timeout: float) -> bool:
        """Write a pending change now, in one try within `timeout` seconds (shutdown cannot wait);
        True when the vault is up to date."""
        with self._guard:
            if self._pending is not None:
                self._write(self._pending, attempts=1, timeout=timeout)
            return self._pending is None

    @contextmanager
    def _change(self) -> Iterator[None]:
        with self._guard:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            if self._depth == 0 and self.has_state_changed:
                text = self.stored_text()  # serialize() clears has_state_changed
                if text != self._stored and text != self._pending:
                    self._write(text)

    def _write(self, text: str, attempts: int | None = None, timeout: float | None = None) -> None:
        try:
            version = self._secrets.set(self.name, text, attempts=attempts, timeout=timeout)
        except PollError as err:
            self._pending = text
            self._failures += 1
            wait = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
            self._next_try = self._monotonic() + wait
            log.warning("cannot save the rotated refresh token to %s, keeping it in memory and "
                        "retrying in %.0fs: %s", self, wait, err.message,
                        extra={"tenant": self._tenant, "reason": err.reason})
            return
        self.writes += 1
        if self._failures:
            log.info("saved the token cache to %s after %d failed attempts", self, self._failures,
                     extra={"tenant": self._tenant})
        else:
            log.debug("saved the token cache to %s (version %s)", self, version,
                      extra={"tenant": self._tenant})
        self._stored, self._pending, self._failures = text, None, 0

    def search(self, credential_type: str, **kwargs: Any) -> Any:
        with self._guard:
            if self._pending is not None and self._depth == 0 and self._monotonic() >= self._next_try:
                self._write(self._pending)
        return super().search(credential_type, **kwargs)

    def add(self, event: dict[str, Any], **kwargs: Any) -> None:
        with self._change():
            super().add(event, **kwargs)

    def modify(self, credential_type: str, old_entry: dict[str, Any],
               new_key_value_pairs: dict[str, Any] | None = None) -> None:
        with self._change():
            super().modify(credential_type, old_entry, new_key_value_pairs)
