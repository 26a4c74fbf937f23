"""`--web.config.file` in the Prometheus exporter-toolkit format: TLS, basic auth, headers."""

from __future__ import annotations

import base64
import binascii
import collections
import functools
import hashlib
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from exporter.config.yamlio import ConfigError, ErrorList, key_text, load_file, shown
from exporter.files import CERTIFICATE_LIMIT, FileReadError, check_file

log = logging.getLogger("exporter.webconfig")

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version"}
# exporter-toolkit keys that Python's ssl module cannot honour the same way.
_UNSUPPORTED_TLS_KEYS = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
                         "client_allowed_sans"}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# The same allow-list as exporter-toolkit.
_ALLOWED_HEADERS = {"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
                    "X-XSS-Protection", "Content-Security-Policy"}


# bcrypt uses at most this many bytes of a password; bcrypt 5 refuses longer ones.
MAX_PASSWORD_BYTES = 72
# A failed check is remembered this long, so repeating a wrong password costs no bcrypt.
FAILED_TTL = 60.0
_MAX_REMEMBERED = 4096


# A bcrypt hash: version, a cost from 4 to 31, then 53 characters of salt and digest.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


def bcrypt_cost(hashed: bytes) -> int:
    """The cost factor of a `$2b$12$...` hash (one that matched _BCRYPT_HASH)."""
    return int(hashed[4:6])


@functools.lru_cache(maxsize=32)
def _dummy_hash(cost: int) -> bytes:
    import bcrypt  # loaded by web configs with basic_auth_users only

    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes, at a bounded cost.

    Successes and failures are remembered (by a digest of user, password and hash), so a
    scraper's repeated credentials and an attacker's repeated guesses cost no bcrypt. An unknown
    user is checked against a dummy hash of the highest configured cost, so timing does not tell
    which users exist. What is remembered carries over a reload for users whose hash is the same.
    """

    def __init__(self, users: Mapping[str, bytes], *, previous: BasicAuth | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._users = dict(users)
        cost = max((bcrypt_cost(hashed) for hashed in self._users.values()), default=4)
        self._dummy = _dummy_hash(cost) if users else b""
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._verified: set[bytes] = set()
        self._failed: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        if previous is not None:
            # Keys include the hash, so a changed password never matches an old entry.
            with previous._lock:
                self._verified = set(previous._verified)
                self._failed = collections.OrderedDict(previous._failed)

    def __bool__(self) -> bool:
        return bool(self._users)

    @staticmethod
    def _credentials(header: str | None) -> tuple[str, str] | None:
        scheme, _, encoded = (header or "").strip().partition(" ")
        if scheme.lower() != "basic":  # RFC 7617: the scheme is case-insensitive
            return None
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password

    def _key(self, user: str, password: str) -> bytes:
        hashed = self._users.get(user, self._dummy)
        return hashlib.sha256(user.encode() + b"\0" + password.encode()
                              + b"\0" + hashed).digest()

    def known_result(self, header: str | None) -> bool | None:
        """The answer without bcrypt when there is one: True (verified before), False (malformed,
        too long, or failed within FAILED_TTL); None when only bcrypt can tell."""
        credentials = self._credentials(header)
        if credentials is None or len(credentials[1].encode()) > MAX_PASSWORD_BYTES:
            return False
        key = self._key(*credentials)
        with self._lock:
            if key in self._verified:
                return True
            failed_until = self._failed.get(key)
            if failed_until is not None:
                if failed_until > self._monotonic():
                    return False
                del self._failed[key]
        return None

    def check(self, header: str | None) -> bool:
        """The full check; slow (bcrypt) unless the answer is already known."""
        known = self.known_result(header)
        if known is not None:
            return known
        credentials = self._credentials(header)
        assert credentials is not None
        user, password = credentials
        key = self._key(user, password)
        hashed = self._users.get(user)
        import bcrypt

        try:
            ok = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:  # a malformed hash; the config check makes this unlikely
            ok = False
        with self._lock:
            if ok:
                if len(self._verified) < _MAX_REMEMBERED:
                    self._verified.add(key)
            else:
                self._failed[key] = self._monotonic() + FAILED_TTL
                while len(self._failed) > _MAX_REMEMBERED:
                    self._failed.popitem(last=False)
        return ok


class WebConfigProvider(Protocol):
    def current(self) -> WebConfig: ...


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    basic_auth: BasicAuth = field(default_factory=lambda: BasicAuth({}))
    headers: Mapping[str, str] = field(default_factory=dict)
    # The certificate, key and CA files it was built from; a change to any of them reloads it.
    files: tuple[Path, ...] = ()

    def current(self) -> WebConfig:
        """A fixed config is its own provider (see WebConfigFile)."""
        return self


_Fingerprint = tuple[tuple[int, int, int, int] | None, ...]


def _fingerprint(paths: tuple[Path, ...]) -> _Fingerprint:
    prints: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            prints.append(None)
            continue
        prints.append((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(prints)


def _spawn_daemon(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="web-config-reload", daemon=True).start()


class WebConfigFile:
    """The `--web.config.file`, re-read whenever it or a file it names changes.

    As in exporter-toolkit, a certificate or password can be rotated without a restart. The
    files are stat()ed at most once per `recheck_interval` (a second), not on every request; a
    change is parsed on a thread of its own, never on the caller's (the server's event loop), and
    takes effect once parsed, within about a second. A broken edit is logged once and the previous
    good config stays in force, so a half-written file never opens or closes the door.
    """

    def __init__(self, path: str | Path, *, recheck_interval: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 spawn: Callable[[Callable[[], None]], None] = _spawn_daemon) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._recheck_interval = recheck_interval
        self._monotonic = monotonic
        self._spawn = spawn
        self._reloading = False
        # Told of each reload after the first load: True when it took effect, False when it failed.
        self.on_reload: Callable[[bool], None] = lambda ok: None
        self._config = load_web_config(self.path)  # the first load must succeed
        self._seen = self._fingerprint(self._config)
        self._next_check = monotonic() + recheck_interval

    def _fingerprint(self, config: WebConfig) -> _Fingerprint:
        return _fingerprint((self.path, *config.files))

    def current(self) -> WebConfig:
        config = self._config
        now = self._monotonic()
        if now < self._next_check:
            return config
        self._next_check = now + self._recheck_interval
        with self._lock:
            if self._reloading or self._fingerprint(config) == self._seen:
                return config
            self._reloading = True
        self._spawn(self.reload)
        return config

    def reload(self) -> None:
        """Read the files again if they changed (on the calling thread); keep the old on error."""
        try:
            with self._lock:
                seen = self._fingerprint(self._config)
                if seen == self._seen:
                    return
                self._seen = seen
            try:
                config = load_web_config(self.path, previous=self._config)
            except ConfigError as err:
                log.error("web config reload failed; keeping the previous one", extra={
                    "file": str(self.path), "errors": "; ".join(err.errors)})
                self.on_reload(False)
                return
            with self._lock:
                self._config = config
                # Stat after loading, so a file that changed mid-load is read again next time.
                self._seen = self._fingerprint(config)
            log.info("web config reloaded", extra={"file": str(self.path),
                                                   "tls": config.ssl_context is not None,
                                                   "basic_auth": bool(config.basic_auth)})
            self.on_reload(True)
        finally:
            with self._lock:
                self._reloading = False


def load_web_config(path: str | Path, *, previous: WebConfig | None = None) -> WebConfig:
    """Parse and check a web config file; raise ConfigError listing every problem.

    With `previous`, what its basic auth remembers carries over (see BasicAuth)."""
    where = Path(path)
    return load_file(where, "web.config.file", lambda raw: _web_config(raw, where, previous))


def _web_config(raw: Any, where: Path, previous: WebConfig | None) -> WebConfig:
    errors = ErrorList()
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(["web.config.file: must be a mapping"])
    errors.mapping(raw, "", {"tls_server_config", "http_server_config", "basic_auth_users"})
    files: list[Path] = []
    context = _tls(raw.get("tls_server_config"), where.parent, errors, files)
    users = _users(raw.get("basic_auth_users"), errors)
    headers = _headers(raw.get("http_server_config"), errors)
    errors.raise_if_any()
    return WebConfig(ssl_context=context, headers=headers, files=tuple(files),
                     basic_auth=BasicAuth(users, previous=previous.basic_auth if previous else None))


def _file(value: Any, base: Path, where: str, errors: ErrorList) -> Path | None:
    if not isinstance(value, str) or not value:
        errors.add(where, "required")
        return None
    candidate = Path(value)
    candidate = candidate if candidate.is_absolute() else base / candidate
    try:
        check_file(candidate, CERTIFICATE_LIMIT)  # ssl reads it itself, and would block on a FIFO
    except FileReadError as err:
        errors.add(where, str(err))
        return None
    return candidate


def _tls(value: Any, base: Path, errors: ErrorList, files: list[Path]) -> ssl.SSLContext | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.add("tls_server_config", "must be a mapping")
        return None
    for key in value:
        if key in _UNSUPPORTED_TLS_KEYS:
            errors.add(f"tls_server_config.{key_text(key)}", "not supported by this exporter "
                       "(Python's ssl module chooses ciphers and curves); remove it")
        elif key not in _TLS_KEYS:
            errors.add(f"tls_server_config.{key_text(key)}",
                       f"unknown key; allowed keys: {', '.join(sorted(_TLS_KEYS))}")
    cert = _file(value.get("cert_file"), base, "tls_server_config.cert_file", errors)
    key = _file(value.get("key_file"), base, "tls_server_config.key_file", errors)
    auth_type = value.get("client_auth_type", "NoClientCert")
    if not isinstance(auth_type, str) or auth_type not in _CLIENT_AUTH:
        hint = (" (Python's ssl module cannot ask for a client certificate without verifying it)"
                if auth_type in ("RequestClientCert", "RequireAnyClientCert") else "")
        errors.add("tls_server_config.client_auth_type",
                   f"must be one of {', '.join(_CLIENT_AUTH)}, got {shown(auth_type)}{hint}")
        auth_type = "NoClientCert"
    ca = None
    if auth_type != "NoClientCert" or value.get("client_ca_file") is not None:
        ca = _file(value.get("client_ca_file"), base, "tls_server_config.client_ca_file", errors)
    versions = []
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = value.get(name, default)
        if not isinstance(version, str) or version not in _TLS_VERSIONS:
            errors.add(f"tls_server_config.{name}",
                       f"must be one of {', '.join(_TLS_VERSIONS)}, got {shown(version)}")
            version = default
        versions.append(_TLS_VERSIONS[version])
    files += [path for path in (cert, key, ca) if path is not None]
    if cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = versions
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as err:
        errors.add("tls_server_config", f"cannot load cert_file and key_file: {err}")
        return None
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if ca is not None:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as err:
            errors.add("tls_server_config.client_ca_file", f"not a PEM CA bundle: {err}")
    return context


def _users(value: Any, errors: ErrorList) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add("basic_auth_users", "must be a mapping of username to bcrypt hash")
        return {}
    users = {}
    for user, hashed in value.items():
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            errors.add(f"basic_auth_users.{key_text(user)}", "must be a bcrypt hash (like the output "
                       "of `htpasswd -nBC 10 \"\" | tr -d ':\\n'`), not a plain password")
            continue
        users[str(user)] = hashed.encode()
    return users


def _headers(value: Any, errors: ErrorList) -> dict[str, str]:
    # http2 is accepted for compatibility; this server speaks HTTP/1.1.
    item = errors.mapping(value, "http_server_config", {"headers", "http2"}).get("headers")
    if item is None:
        return {}
    if not isinstance(item, dict):
        errors.add("http_server_config.headers", "must be a mapping of header to value")
        return {}
    headers: dict[str, str] = {}
    for name, text in item.items():
        if name not in _ALLOWED_HEADERS:
            errors.add(f"http_server_config.headers.{key_text(name)}",
                       f"not allowed; allowed headers: {', '.join(sorted(_ALLOWED_HEADERS))}")
        elif not isinstance(text, str) or "\n" in text or "\r" in text:
            errors.add(f"http_server_config.headers.{key_text(name)}", "must be a one-line string")
        else:
            headers[name] = text
    return headers
