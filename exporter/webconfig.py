"""`--web.config.file` in the Prometheus exporter-toolkit format: TLS, basic auth, headers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import bcrypt
import yaml

from exporter.config import ConfigError

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


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes; caches successes, as bcrypt is slow."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        # Unknown users are checked against this, so usernames cannot be probed by timing.
        self._dummy = bcrypt.hashpw(b"", bcrypt.gensalt(rounds=10)) if users else b""
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._users)

    @staticmethod
    def _credentials(header: str | None) -> tuple[str, str] | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password

    def _key(self, user: str, password: str) -> bytes | None:
        hashed = self._users.get(user)
        if hashed is None:
            return None
        return hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()

    def _known(self, key: bytes) -> bool:
        with self._lock:
            return any(hmac.compare_digest(key, known) for known in self._verified)

    def verified_before(self, header: str | None) -> bool:
        """True if these credentials passed bcrypt before: the fast path, with no bcrypt at all."""
        credentials = self._credentials(header)
        key = self._key(*credentials) if credentials else None
        return key is not None and self._known(key)

    def check(self, header: str | None) -> bool:
        """The full check; slow (bcrypt) unless the credentials were verified before."""
        credentials = self._credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        key = self._key(user, password)
        if key is None:
            bcrypt.checkpw(password.encode(), self._dummy)
            return False
        if self._known(key):
            return True
        if not bcrypt.checkpw(password.encode(), self._users[user]):
            return False
        with self._lock:
            if len(self._verified) < 1024:
                self._verified.add(key)
        return True


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


class WebConfigFile:
    """The `--web.config.file`, re-read whenever it or a file it names changes.

    As in exporter-toolkit, a certificate or password can be rotated without a restart. The
    files are stat()ed at most once per `recheck_interval` (a second), not on every request, so
    a rotation takes effect within a second. A broken edit is logged once and the previous good
    config stays in force, so a half-written file never opens or closes the door.
    """

    def __init__(self, path: str | Path, *, recheck_interval: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._recheck_interval = recheck_interval
        self._monotonic = monotonic
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
        if self._fingerprint(config) == self._seen:
            return config
        with self._lock:
            config = self._config
            seen = self._fingerprint(config)
            if seen == self._seen:
                return config
            self._seen = seen
            try:
                config = load_web_config(self.path)
            except ConfigError as err:
                log.error("web config reload failed; keeping the previous one", extra={
                    "file": str(self.path), "errors": "; ".join(err.errors)})
                return self._config
            self._config = config
            # Stat after loading, so a file that changed mid-load is read again next time.
            self._seen = self._fingerprint(config)
            log.info("web config reloaded", extra={"file": str(self.path),
                                                   "tls": config.ssl_context is not None,
                                                   "basic_auth": bool(config.basic_auth)})
            return config


def load_web_config(path: str | Path) -> WebConfig:
    """Parse and check a web config file; raise ConfigError listing every problem."""
    where = Path(path)
    try:
        raw = yaml.safe_load(where.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError([f"web.config.file: cannot read {where}: {err.strerror or err}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"web.config.file: invalid YAML: {str(err).splitlines()[0]}"]) from None
    errors: list[str] = []
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(["web.config.file: must be a mapping"])
    for key in raw:
        if key not in {"tls_server_config", "http_server_config", "basic_auth_users"}:
            errors.append(f"{key}: unknown key; allowed keys: basic_auth_users, http_server_config, "
                          f"tls_server_config")
    files: list[Path] = []
    context = _tls(raw.get("tls_server_config"), where.parent, errors, files)
    users = _users(raw.get("basic_auth_users"), errors)
    headers = _headers(raw.get("http_server_config"), errors)
    if errors:
        raise ConfigError(errors)
    return WebConfig(ssl_context=context, basic_auth=BasicAuth(users), headers=headers,
                     files=tuple(files))


def _file(value: Any, base: Path, where: str, errors: list[str]) -> Path | None:
    if not isinstance(value, str) or not value:
        errors.append(f"{where}: required")
        return None
    candidate = Path(value)
    candidate = candidate if candidate.is_absolute() else base / candidate
    if not candidate.is_file():
        errors.append(f"{where}: file {candidate} does not exist")
        return None
    return candidate


def _tls(value: Any, base: Path, errors: list[str], files: list[Path]) -> ssl.SSLContext | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append("tls_server_config: must be a mapping")
        return None
    for key in value:
        if key in _UNSUPPORTED_TLS_KEYS:
            errors.append(f"tls_server_config.{key}: not supported by this exporter (Python's ssl "
                          f"module chooses ciphers and curves); remove it")
        elif key not in _TLS_KEYS:
            errors.append(f"tls_server_config.{key}: unknown key; allowed keys: "
                          f"{', '.join(sorted(_TLS_KEYS))}")
    cert = _file(value.get("cert_file"), base, "tls_server_config.cert_file", errors)
    key = _file(value.get("key_file"), base, "tls_server_config.key_file", errors)
    auth_type = value.get("client_auth_type", "NoClientCert")
    if not isinstance(auth_type, str) or auth_type not in _CLIENT_AUTH:
        hint = (" (Python's ssl module cannot ask for a client certificate without verifying it)"
                if auth_type in ("RequestClientCert", "RequireAnyClientCert") else "")
        errors.append(f"tls_server_config.client_auth_type: must be one of "
                      f"{', '.join(_CLIENT_AUTH)}, got {auth_type!r}{hint}")
        auth_type = "NoClientCert"
    ca = None
    if auth_type != "NoClientCert" or value.get("client_ca_file") is not None:
        ca = _file(value.get("client_ca_file"), base, "tls_server_config.client_ca_file", errors)
    versions = []
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = value.get(name, default)
        if not isinstance(version, str) or version not in _TLS_VERSIONS:
            errors.append(f"tls_server_config.{name}: must be one of {', '.join(_TLS_VERSIONS)}, "
                          f"got {version!r}")
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
        errors.append(f"tls_server_config: cannot load cert_file and key_file: {err}")
        return None
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if ca is not None:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as err:
            errors.append(f"tls_server_config.client_ca_file: not a PEM CA bundle: {err}")
    return context


def _users(value: Any, errors: list[str]) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append("basic_auth_users: must be a mapping of username to bcrypt hash")
        return {}
    users = {}
    for user, hashed in value.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")) \
                or len(hashed) != 60:
            errors.append(f"basic_auth_users.{user}: must be a bcrypt hash (like the output of "
                          f"`htpasswd -nBC 10 \"\" | tr -d ':\\n'`), not a plain password")
            continue
        users[str(user)] = hashed.encode()
    return users


def _headers(value: Any, errors: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append("http_server_config: must be a mapping")
        return {}
    headers: dict[str, str] = {}
    for key, item in value.items():
        if key == "http2":
            continue  # Accepted for compatibility; this server speaks HTTP/1.1.
        if key != "headers":
            errors.append(f"http_server_config.{key}: unknown key; allowed keys: headers, http2")
            continue
        if not isinstance(item, dict):
            errors.append("http_server_config.headers: must be a mapping of header to value")
            continue
        for name, text in item.items():
            if name not in _ALLOWED_HEADERS:
                errors.append(f"http_server_config.headers.{name}: not allowed; allowed headers: "
                              f"{', '.join(sorted(_ALLOWED_HEADERS))}")
            elif not isinstance(text, str) or "\n" in text or "\r" in text:
                errors.append(f"http_server_config.headers.{name}: must be a one-line string")
            else:
                headers[name] = text
    return headers
