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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msal

from exporter.files import TOKEN_CACHE_LIMIT, read_text
from exporter.model import PollError

if TYPE_CHECKING:  # the vault client is imported only by configs that use the vault
    from exporter.keyvault import KeyVaultSecrets

log = logging.getLogger("exporter.auth")


class StoredTokenCache(msal.SerializableTokenCache):  # type: ignore[misc]
    """MSAL's serializable cache with a store behind it, on MSAL's public cache API only.

    MSAL reads the cache through `search` and changes it through `add` (a token response) and
    `modify` (`add` calls it once per entry; removals call it directly). A store hooks in with
    `_before_read` (outside any change), `_changing` (around the outermost change) and `_save`
    (after it, when `has_state_changed` says so): one save per token response, however nested.

    Every refresh token the cache holds goes to `on_secrets` the moment it arrives (loaded, or
    in a token response), so no output shows one, whoever echoes it.
    """

    has_state_changed: bool  # SerializableTokenCache's public flag

    def __init__(self, on_secrets: Callable[[Iterable[str]], None] | None = None, *, tenant: str = "",
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._guard = threading.RLock()
        self._depth = 0
        self._on_secrets = on_secrets
        self._tenant = tenant
        self._monotonic = monotonic
        self._pending: str | None = None  # what the store should hold but a write failed
        self._failures = 0
        self._next_try = 0.0

    @property
    def pending(self) -> bool:
        """Whether the store lags behind the newest token in memory."""
        return self._pending is not None

    def _due(self) -> bool:
        return self._pending is not None and self._monotonic() >= self._next_try

    def _persist(self, text: str, attempts: int | None, timeout: float | None) -> None:
        """Put `text` in the store; raises PollError or OSError. Stores without one keep nothing."""

    def _write(self, text: str, attempts: int | None = None, timeout: float | None = None) -> None:
        """Save, or keep `text` pending and retry with backoff: a failed save never fails the poll
        (the newest token lives in memory) and is never silent (the pending gauge, its alert)."""
        try:
            self._persist(text, attempts, timeout)
        except (PollError, OSError) as err:
            self._pending = text
            self._failures += 1
            wait = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
            self._next_try = self._monotonic() + wait
            why = err.message if isinstance(err, PollError) else (err.strerror or type(err).__name__)
            log.warning("cannot save the rotated refresh token to %s, keeping it in memory and "
                        "retrying in %.0fs: %s", self, wait, why,
                        extra={"tenant": self._tenant, "reason": getattr(err, "reason", "io")})
            return
        if self._failures:
            log.info("saved the token cache to %s after %d failed attempts", self, self._failures,
                     extra={"tenant": self._tenant})
        self._pending, self._failures = None, 0

    def flush(self, timeout: float) -> bool:
        """Write a pending change now, in one try within `timeout` seconds (shutdown cannot wait);
        True when the store is up to date."""
        with self._guard:
            if self._pending is not None:
                self._write(self._pending, attempts=1, timeout=timeout)
            return self._pending is None

    def _report_secrets(self) -> None:
        if self._on_secrets is not None:
            # The base class's search: this one would read the store again.
            entries = msal.SerializableTokenCache.search(self, self.CredentialType.REFRESH_TOKEN)
            self._on_secrets([str(entry.get("secret") or "") for entry in entries])

    def deserialize(self, state: str | None) -> None:
        if state:
            _check_cache_text(state, self)
        with self._guard:
            super().deserialize(state)
            self._report_secrets()

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
                self._report_secrets()
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


class NotATokenCache(OSError):
    """The store holds something other than an MSAL token cache; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)

    def __str__(self) -> str:
        return str(self.strerror)


# The sections of an MSAL token cache (SerializableTokenCache.serialize); each maps keys to entries.
MSAL_SECTIONS = frozenset({"AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata"})


def is_msal_cache(data: Any) -> bool:
    """Whether parsed JSON has an MSAL token cache's shape: an object whose sections are objects,
    the entries of MSAL's own sections objects too. MSAL itself fails on anything else with errors
    that name nothing (a list, a string, a document 100,000 deep)."""
    return isinstance(data, dict) and all(
        isinstance(entries, dict)
        and (section not in MSAL_SECTIONS or all(isinstance(entry, dict) for entry in entries.values()))
        for section, entries in data.items())


def _check_cache_text(text: str, where: object) -> None:
    """That `text` is an MSAL cache (is_msal_cache), else NotATokenCache saying what it holds."""
    unparsed = object()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = unparsed
    if not is_msal_cache(data):
        what = ("text that is not JSON" if data is unparsed
                else f"JSON that is not an MSAL token cache (a {type(data).__name__})")
        raise NotATokenCache(f"{where} holds {what}: something else wrote it; move it away (or delete "
                             f"the secret) and run login")


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

    A save that fails (a full disk, a read-only mount) keeps the newest token in memory, pending,
    and is retried with backoff at the next token lookups and once more at shutdown. A file another
    process replaces meanwhile holds a newer sign-in (login): it is adopted.
    """

    def __init__(self, path: Path, on_secrets: Callable[[Iterable[str]], None] | None = None, *,
                 tenant: str = "", monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(on_secrets, tenant=tenant, monotonic=monotonic)
        self._path = str(path)
        self._lock_path = f"{path}.lockfile"
        self._seen: tuple[int, int, int] | None = None  # the file's identity when last read or written

    def __str__(self) -> str:
        return f"token cache {self._path}"

    def _file_identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _reload_if_replaced(self) -> None:
        # No lock for a read: files are replaced whole, so a reader sees old or new.
        identity = self._file_identity()
        if identity is None or identity == self._seen:
            return
        if self._pending is not None:
            log.info("%s was replaced by another process (a login) while this process's newest "
                     "refresh token was unsaved; using the file's", self, extra={"tenant": self._tenant})
            self._pending, self._failures = None, 0
        self.deserialize(read_text(self._path, TOKEN_CACHE_LIMIT))  # clears has_state_changed
        self._seen = identity

    def _before_read(self) -> None:
        self._reload_if_replaced()
        if self._due():
            try:
                with _flock(self._lock_path):
                    self._reload_if_replaced()
                    if self._pending is not None:
                        self._write(self._pending)
            except OSError as err:  # the lock itself
                log.warning("cannot lock %s to save the rotated refresh token: %s", self,
                            err.strerror or type(err).__name__, extra={"tenant": self._tenant})

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        with _flock(self._lock_path):
            self._reload_if_replaced()
            yield

    def _save(self) -> None:
        self._write(self.serialize())
        self.has_state_changed = False

    def _persist(self, text: str, attempts: int | None, timeout: float | None) -> None:
        write_atomically(self._path, text)
        self._seen = self._file_identity()


# What redeeming the refresh token needs. Access and ID tokens are left out: they expire within
# the hour, and without them the secret stays a few KB, far under Key Vault's 25 KB.
STORED_SECTIONS = ("RefreshToken", "Account", "AppMetadata")
RETRY_FIRST, RETRY_MAX = 5.0, 300.0
# How often a running exporter looks for a newer sign-in in the vault: under the shortest
# poll_interval (1m), so `login`'s "from its next poll" holds; one read per tenant and poll.
RECHECK_EVERY = 50.0


class VaultTokenCache(StoredTokenCache):
    """The cache as one Key Vault secret: read at start (`load`); written when what is stored
    would change, which is each refresh-token rotation: one write per token response, never more.

    A failed write is logged with its reason and retried, with backoff, at the next token
    lookups; until then the newest token lives in memory, so polls go on and nothing is lost
    unless the process ends first (shutdown tries once more: `flush`).

    Key Vault has no conditional write, so another process's `login` is found by reading: before
    each write, and at most every RECHECK_EVERY seconds (`sync`). A vault that holds something other
    than what this process last read or wrote holds a newer sign-in: it is adopted, never
    overwritten. `login` itself (newest_wins False) writes its sign-in whatever the vault holds.
    """

    def __init__(self, secrets: KeyVaultSecrets, name: str, *, tenant: str,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_secrets: Callable[[Iterable[str]], None] | None = None,
                 newest_wins: bool = True) -> None:
        super().__init__(on_secrets, tenant=tenant, monotonic=monotonic)
        self._secrets = secrets
        self.name = name
        self._newest_wins = newest_wins
        self._stored: str | None = None  # what the vault holds, as last read or written
        self._checked_at = monotonic()  # when the vault was last read

    def __str__(self) -> str:
        return f"Key Vault secret {self.name} in {self._secrets.vault_url}"

    def load(self) -> None:
        """Replace the cache with the vault's; an absent secret is an empty cache (login fills it)."""
        with self._guard:
            text = self._secrets.get(self.name)
            self._checked_at = self._monotonic()
            self._replace(text)
            self._stored, self._pending = text, None

    def _replace(self, text: str | None) -> None:
        try:
            self.deserialize(text)  # None: empty
        except NotATokenCache as err:
            raise PollError("auth", str(err)) from None
        except ValueError:
            raise PollError("auth", f"{self} does not hold an MSAL token cache; delete the "
                                    f"secret and run login") from None

    def sync(self, *, force: bool = False) -> None:
        """Adopt a newer sign-in from the vault, if another process wrote one: read at most every
        RECHECK_EVERY seconds, or now when `force` (a sign-in just failed: a login may have run)."""
        with self._guard:
            now = self._monotonic()
            if not force and now - self._checked_at < RECHECK_EVERY:
                return
            self._checked_at = now
            try:
                current = self._secrets.get(self.name)
            except PollError as err:
                if force:
                    raise
                log.debug("cannot read %s to look for a newer sign-in: %s", self, err.message,
                          extra={"tenant": self._tenant, "reason": err.reason})
                return
            self._adopt_if_newer(current)

    def _adopt_if_newer(self, current: str | None) -> bool:
        if current is None or current == self._stored:
            return False
        self._replace(current)
        log.info("%s holds a newer sign-in (a login since this process read it); using it, and "
                 "dropping this process's own refresh token", self, extra={"tenant": self._tenant})
        self._stored, self._pending, self._failures = current, None, 0
        return True

    def stored_text(self) -> str:
        """The part of the cache the vault keeps, in a stable spelling."""
        everything = json.loads(self.serialize())
        kept = {section: everything[section] for section in STORED_SECTIONS if everything.get(section)}
        return json.dumps(kept, sort_keys=True, separators=(",", ":"))

    def _before_read(self) -> None:
        if self._due():
            assert self._pending is not None
            self._write(self._pending)

    def _save(self) -> None:
        text = self.stored_text()  # serialize() clears has_state_changed
        if text != self._stored and text != self._pending:
            self._write(text)

    def _persist(self, text: str, attempts: int | None, timeout: float | None) -> None:
        if self._newest_wins and self._adopt_if_newer(
                self._secrets.get(self.name, attempts=attempts, timeout=timeout)):
            return
        version = self._secrets.set(self.name, text, attempts=attempts, timeout=timeout)
        log.debug("saved the token cache to %s (version %s)", self, version, extra={"tenant": self._tenant})
        self._stored = text
