"""Where a refresh_token tenant's MSAL cache is kept: a file shared by processes, or one Azure Key
Vault secret. Both sit on MSAL's public cache hooks through one mechanism, `StoredTokenCache`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msal

from exporter.keyvault import KeyVaultSecrets
from exporter.model import PollError

log = logging.getLogger("exporter.auth")


class StoredTokenCache(msal.SerializableTokenCache):  # type: ignore[misc]
    """MSAL's serializable cache with a store behind it, on MSAL's public cache API only.

    MSAL reads the cache through `search` and changes it through `add` (a token response) and
    `modify` (`add` calls it once per entry; removals call it directly). A store hooks in with
    `_before_read` (outside any change), `_changing` (around the outermost change) and `_save`
    (after it, when `has_state_changed` says so): one save per token response, however nested.
    """

    has_state_changed: bool  # SerializableTokenCache's public flag

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.RLock()
        self._depth = 0

    def _before_read(self) -> None:
        """Bring the cache up to date with its store before MSAL reads it."""

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Held around the outermost change."""
        yield

    def _save(self) -> None:
        """Keep the changed cache; has_state_changed is set."""

    @contextlib.contextmanager
    def _change(self) -> Iterator[None]:
        with self._guard:
            if self._depth:  # modify() inside add(): one change, one save
                yield
                return
            with self._changing():
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                if self.has_state_changed:
                    self._save()

    def search(self, credential_type: str, **kwargs: Any) -> Any:
        with self._guard:
            if not self._depth:
                self._before_read()
        return super().search(credential_type, **kwargs)

    def add(self, event: dict[str, Any], **kwargs: Any) -> None:
        with self._change():
            super().add(event, **kwargs)

    def modify(self, credential_type: str, old_entry: dict[str, Any],
               new_key_value_pairs: dict[str, Any] | None = None) -> None:
        with self._change():
            super().modify(credential_type, old_entry, new_key_value_pairs)


def write_atomically(path: str, content: str) -> None:
    """Replace a file's content so a reader (or a crash) never sees half of it: temp file in the
    same directory (created 0600), fsync, rename, fsync of the directory."""
    directory = os.path.dirname(path) or "."
    fd, temp_path = tempfile.mkstemp(prefix=".tokencache-", dir=directory)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        Path(temp_path).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class TokenCacheLockTimeout(OSError):
    """Another process held the token cache lock for too long."""


TOKEN_CACHE_LOCK_TIMEOUT = 5.0


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        timeout = TOKEN_CACHE_LOCK_TIMEOUT
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TokenCacheLockTimeout(
                        0, f"another process held {path} for over {timeout:.0f}s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class FileTokenCache(StoredTokenCache):
    """The cache in a file that other processes (login, a second exporter) share.

    Before a read, the file is loaded again if another process replaced it. A change is made
    under an flock on `<cache>.lockfile`, on top of the file's newest content, and written once,
    atomically. The kernel drops an flock when its holder dies, so a SIGKILLed process never
    leaves the cache locked.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = str(path)
        self._lock_path = f"{path}.lockfile"
        self._seen: tuple[int, int, int] | None = None  # the file's identity when last read or written

    def _file_identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _before_read(self) -> None:
        # No lock for a read: files are replaced whole, so a reader sees old or new.
        identity = self._file_identity()
        if identity is None or identity == self._seen:
            return
        with open(self._path, encoding="utf-8") as handle:
            self.deserialize(handle.read())  # clears has_state_changed
        self._seen = identity

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        with _flock(self._lock_path):
            self._before_read()
            yield

    def _save(self) -> None:
        write_atomically(self._path, self.serialize())
        self.has_state_changed = False
        self._seen = self._file_identity()


# What redeeming the refresh token needs. Access and ID tokens are left out: they expire within
# the hour, and without them the secret stays a few KB, far under Key Vault's 25 KB.
STORED_SECTIONS = ("RefreshToken", "Account", "AppMetadata")
RETRY_FIRST, RETRY_MAX = 5.0, 300.0


class VaultTokenCache(StoredTokenCache):
    """The cache as one Key Vault secret: read at start (`load`); written when what is stored
    would change, which is each refresh-token rotation: one write per token response, never more.

    A failed write is logged with its reason and retried, with backoff, at the next token
    lookups; until then the newest token lives in memory, so polls go on and nothing is lost
    unless the process ends first (shutdown tries once more: `flush`).
    """

    def __init__(self, secrets: KeyVaultSecrets, name: str, *, tenant: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._secrets = secrets
        self.name = name
        self._tenant = tenant
        self._monotonic = monotonic
        self._stored: str | None = None  # what the vault holds, as last read or written
        self._pending: str | None = None  # what it should hold but a write failed
        self._failures = 0
        self._next_try = 0.0

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

    def _before_read(self) -> None:
        if self._pending is not None and self._monotonic() >= self._next_try:
            self._write(self._pending)

    def _save(self) -> None:
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
        if self._failures:
            log.info("saved the token cache to %s after %d failed attempts", self, self._failures,
                     extra={"tenant": self._tenant})
        else:
            log.debug("saved the token cache to %s (version %s)", self, version,
                      extra={"tenant": self._tenant})
        self._stored, self._pending, self._failures = text, None, 0
