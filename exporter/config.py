"""Load and validate the exporter's YAML config, reporting every error at once with its path."""

from __future__ import annotations

import json
import os
import re
import reprlib
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import yaml

from exporter.certificates import CertificateError, ClientCertificate, load_client_certificate
from exporter.collectors import DEFAULT_COLLECTORS, REGISTRY
from exporter.endpoints import (
    DEFAULT_AUTHORITY_HOST,
    DEFAULT_DAP_CUSTOMERS_URL,
    DEFAULT_DAP_STATISTICS_URL,
    DEFAULT_GRAPH_SCOPE,
    DEFAULT_GRAPH_URL,
    DEFAULT_SCOPE,
    Endpoints,
)
from exporter.files import (
    CA_BUNDLE_LIMIT,
    CONFIG_LIMIT,
    SECRET_LIMIT,
    TOKEN_CACHE_LIMIT,
    FileReadError,
    read_file,
    read_text,
)
from exporter.token_store import is_msal_cache

DEFAULT_POLL_INTERVAL = 15 * 60.0
MIN_POLL_INTERVAL = 60.0
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_THRESHOLDS = (30, 60, 90)
DEFAULT_POLL_CONCURRENCY = 16

AuthMethod = Literal["refresh_token", "client_credentials", "username_password"]
AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)

# MSAL adds these to every user flow itself and raises if they are passed in.
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}
_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}$")
_DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d))+$")
_DURATION_PART_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


# Control characters and line separators (from odd keys or values) would break one line per error.
_CONTROL_ESCAPES = {c: repr(chr(c))[1:-1] for c in [*range(32), 127, 0x85, 0x2028, 0x2029]}


class ConfigError(Exception):
    """Raised with every problem found in a config; each line is `path: message`."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = [line.translate(_CONTROL_ESCAPES) for line in errors]
        super().__init__("\n".join(self.errors))


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
    collectors: tuple[str, ...] = DEFAULT_COLLECTORS
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


def parse_duration(text: str) -> float:
    """Parse a Prometheus-style duration such as `30s`, `15m`, `1h30m` into seconds."""
    if not _DURATION_RE.match(text):
        raise ValueError(f"invalid duration {shown(text)}: write a number and a unit, like 30s, 15m or 1h")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(text))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML otherwise silently overwrites, and
    keys that are not plain values (`? [a]`)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *shared`: construct_mapping merges it; keys written here override it
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark)
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Anchors and aliases share blocks (an auth block for several tenants); expanded, they must not
# add more than this many values, or a few lines could stand for billions ("billion laughs").
MAX_ALIAS_EXPANSION = 10_000


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _alias_expansion(root: yaml.Node, what: str) -> int:
    """How many values aliases add when the document is expanded, counted without expanding it."""
    sizes: dict[int, int] = {}
    path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = min(total, 10 * MAX_ALIAS_EXPANSION)
            continue
        if key in sizes:
            continue
        if key in path:
            raise ConfigError([f"{what}: an alias refers to a block that contains it; YAML like this "
                               f"has no end"])
        path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    return sizes[id(root)] - len(sizes)


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


def load_yaml(data: bytes, what: str) -> Any:
    """Strict YAML (no duplicate or complex keys, bounded aliases) from a file's bytes.

    Every failure is a ConfigError naming `what`, whatever the bytes are."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"{what}: not UTF-8 text (invalid byte at offset {err.start}); save the "
                           f"file as UTF-8"]) from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _alias_expansion(node, what) > MAX_ALIAS_EXPANSION:
            raise ConfigError([f"{what}: aliases expand to more than {MAX_ALIAS_EXPANSION} values; "
                               f"share smaller blocks, or write them out"])
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError([f"{what}: {_yaml_problem(err)}"]) from None
    except RecursionError:
        raise ConfigError([f"{what}: nested too deeply to read"]) from None
    except ValueError as err:  # such as an integer with more digits than Python converts
        raise ConfigError([f"{what}: a value cannot be read: {shown(str(err))}"]) from None
    finally:
        loader.dispose()


class ErrorList:
    """`path: message` errors collected while a config file is walked, all reported at once.

    Both config files (the exporter's and the web config) report through it.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.errors)

    def add(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError(self.errors)

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping, got {_type_name(value)}")
            return {}
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                self.add(_join(path, key_text(key)),
                         f"unknown key; allowed keys: {', '.join(sorted(allowed))}")
        return {k: v for k, v in value.items() if isinstance(k, str) and k in allowed}


class _Errors(ErrorList):
    """The exporter config's walker: errors, plus reading strings, durations, paths and secrets."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path) -> None:
        super().__init__()
        self.environ = environ
        self.base_dir = base_dir

    def string(self, data: dict[str, Any], key: str, path: str, *, required: bool = False,
               default: str | None = None) -> str | None:
        value = data.get(key)
        where = _join(path, key)
        if value is None:
            if required:
                self.add(where, "required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(where, f"must be a non-empty string, got {_type_name(value)}")
            return default
        return value.strip()

    def duration(self, data: dict[str, Any], key: str, path: str, default: float) -> float:
        value = data.get(key)
        where = _join(path, key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.add(where, f"write durations with a unit, like 30s, 15m or 1h (got {shown(value)})")
            return default
        try:
            return parse_duration(value.strip())
        except ValueError as err:
            self.add(where, str(err))
            return default

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        candidate = Path(value).expanduser()
        # Resolved, so two spellings of one file compare equal.
        return (candidate if candidate.is_absolute() else self.base_dir / candidate).resolve()

    def secret(self, data: dict[str, Any], name: str, path: str, *, required: bool,
               required_why: str = "") -> Secret | None:
        """Read `<name>_file` or `<name>_env`."""
        file_key, env_key = f"{name}_file", f"{name}_env"
        file_value = self.string(data, file_key, path)
        env_value = self.string(data, env_key, path)
        if file_value and env_value:
            self.add(_join(path, env_key), f"set either {file_key} or {env_key}, not both")
            return None
        if file_value:
            secret_path = self.path(file_value)
            assert secret_path is not None
            try:
                text = read_text(secret_path, SECRET_LIMIT).strip()
            except FileReadError as err:
                self.add(_join(path, file_key), str(err))
                return None
            if not text:
                self.add(_join(path, file_key), f"file {secret_path} is empty")
                return None
            return Secret(text, f"file {secret_path}")
        if env_value:
            text = self.environ.get(env_value, "").strip()
            if not text:
                self.add(_join(path, env_key), f"environment variable {env_value} is not set or empty")
                return None
            return Secret(text, f"environment variable {env_value}")
        if required:
            self.add(_join(path, file_key), f"required{required_why}; or set {env_key}")
        return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 2, 40, 40, 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4
MAX_SHOWN = 60


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, never longer than MAX_SHOWN characters,
    so a huge value (or an alias expanding to one) is never spelled out."""
    try:
        text = _SHOWN.repr(value)
    except Exception:  # such as an int with more digits than str() allows
        text = f"<{_type_name(value)}>"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def key_text(key: Any) -> str:
    """A mapping key as a path segment: short, whatever the key is."""
    if isinstance(key, str):
        return key if len(key) <= 40 else key[:37] + "..."
    return shown(key)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _os_reason(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


_TOP_KEYS = {"poll_interval", "request_timeout", "inactive_thresholds_days", "poll_concurrency",
             "endpoints", "tenants"}
_ENDPOINT_KEYS = {"authority_host", "dap_statistics_url", "dap_customers_url", "scope", "graph_url",
                  "graph_scope", "ca_file"}
_TENANT_KEYS = {"name", "tenant_id", "client_id", "auth", "collectors", "graph_auth"}
# Ways an app proves who it is, wherever app credentials are read (auth, graph_auth, the vault).
_CREDENTIAL_KEYS = {"client_secret", "client_secret_file", "client_secret_env", "client_certificate_file",
                    "client_certificate_password_file", "client_certificate_password_env",
                    "client_certificate_send_chain", "client_assertion_file", "workload_identity"}
_GRAPH_AUTH_KEYS = {"method", "client_id", "managed_identity", *_CREDENTIAL_KEYS}
_AUTH_KEYS = {"method", "token_cache_file", "token_store", "refresh_token", "refresh_token_file",
              "refresh_token_env", "username", "password", "password_file", "password_env",
              *_CREDENTIAL_KEYS}
_TOKEN_STORE_KEYS = {"azure_key_vault"}
_VAULT_KEYS = {"vault_url", "secret_name", "tenant_id", "client_id", "managed_identity", *_CREDENTIAL_KEYS}
# Keys that only mean something for one method; naming them under another is a mistake.
_METHOD_ONLY_KEYS: dict[str, AuthMethod] = {
    "token_cache_file": "refresh_token", "token_store": "refresh_token",
    "refresh_token_file": "refresh_token", "refresh_token_env": "refresh_token",
    "username": "username_password",
    "password_file": "username_password", "password_env": "username_password",
    # A federated token proves an app, not a user: only app-only sign-ins use one.
    "client_assertion_file": "client_credentials", "workload_identity": "client_credentials",
}
# The Azure SDKs' environment conventions (EnvironmentCredential, WorkloadIdentityCredential,
# ManagedIdentityCredential), which AKS workload identity and most Azure hosting fill in.
AZURE_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"  # noqa: S105 -- a variable name
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
AZURE_TENANT_ID = "AZURE_TENANT_ID"
AZURE_CLIENT_CERTIFICATE_PATH = "AZURE_CLIENT_CERTIFICATE_PATH"
AZURE_CLIENT_CERTIFICATE_PASSWORD = "AZURE_CLIENT_CERTIFICATE_PASSWORD"  # noqa: S105 -- a variable name
AZURE_CLIENT_SECRET = "AZURE_CLIENT_SECRET"  # noqa: S105 -- a variable name
# Key Vault: secret names are 1-127 letters, digits and dashes; a value is at most 25 KB.
_SECRET_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")


_Parsed = TypeVar("_Parsed")


def load_file(path: Path, what: str, parse: Callable[[Any], _Parsed]) -> _Parsed:
    """Read `path` as strict YAML and `parse` it. Nothing a file can hold ends in a traceback:
    every failure is a ConfigError whose lines start with `what`."""
    try:
        data = read_file(path, CONFIG_LIMIT)
    except FileReadError as err:
        reason = f"cannot read {path}: No such file or directory" if err.missing else str(err)
        raise ConfigError([f"{what}: {reason}"]) from None
    try:
        return parse(load_yaml(data, what))
    except ConfigError:
        raise
    except Exception as err:  # a check missed a case: still one line, no traceback
        raise ConfigError([f"{what}: cannot be used ({type(err).__name__}); this is a bug, "
                           f"please report it"]) from None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load, validate and resolve a config file; raise ConfigError listing every problem."""
    config_path = Path(path)
    return load_file(config_path, "config.file", lambda raw: parse_config(
        raw, environ=os.environ if environ is None else environ, base_dir=config_path.resolve().parent))


def parse_config(raw: Any, *, environ: Mapping[str, str], base_dir: Path) -> Config:
    """Validate an already-parsed YAML document; relative paths resolve against base_dir."""
    c = _Errors(environ, base_dir)
    if raw is None:
        raise ConfigError(["config.file: the file is empty; it needs at least a tenants list"])
    top = c.mapping(raw, "", _TOP_KEYS)
    if not top and not isinstance(raw, dict):
        raise ConfigError(c.errors)

    poll_interval = c.duration(top, "poll_interval", "", DEFAULT_POLL_INTERVAL)
    if poll_interval < MIN_POLL_INTERVAL:
        c.add("poll_interval", "must be at least 1m; Partner Center throttles per partner tenant")
    request_timeout = c.duration(top, "request_timeout", "", DEFAULT_REQUEST_TIMEOUT)
    if request_timeout <= 0:
        c.add("request_timeout", "must be greater than 0s")
    elif request_timeout >= poll_interval >= MIN_POLL_INTERVAL:
        c.add("request_timeout", "must be shorter than poll_interval")
    thresholds = _thresholds(c, top.get("inactive_thresholds_days"))
    concurrency = top.get("poll_concurrency", DEFAULT_POLL_CONCURRENCY)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 256:
        c.add("poll_concurrency", f"must be a whole number from 1 to 256, got {shown(concurrency)}")
        concurrency = DEFAULT_POLL_CONCURRENCY
    endpoints = _endpoints(c, top.get("endpoints"))
    tenants = _tenants(c, top.get("tenants"))
    if c.errors:
        raise ConfigError(c.errors)
    return Config(tenants=tuple(tenants), poll_interval=poll_interval,
                  request_timeout=request_timeout, inactive_thresholds_days=thresholds,
                  poll_concurrency=concurrency, endpoints=endpoints)


def _thresholds(c: _Errors, value: Any) -> tuple[int, ...]:
    if value is None:
        return DEFAULT_THRESHOLDS
    if not isinstance(value, list) or not value:
        c.add("inactive_thresholds_days", "must be a non-empty list of whole days, like [30, 60, 90]")
        return DEFAULT_THRESHOLDS
    result: list[int] = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= 3650:
            c.add(f"inactive_thresholds_days[{i}]",
                  f"must be a whole number of days from 1 to 3650, got {shown(item)}")
        elif item in result:
            c.add(f"inactive_thresholds_days[{i}]", f"duplicate threshold {item}")
        else:
            result.append(item)
    return tuple(sorted(result)) or DEFAULT_THRESHOLDS


def _https_url(c: _Errors, value: str | None, where: str, *, bare_host: bool) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        c.add(where, f"must be an https:// URL, got {shown(value)}")
    elif bare_host and parts.path not in ("", "/"):
        c.add(where, f"must be a scheme and host only, like {DEFAULT_AUTHORITY_HOST}; "
                     f"the tenant is appended from tenants[].tenant_id")


def _endpoints(c: _Errors, value: Any) -> Endpoints:
    data = c.mapping(value, "endpoints", _ENDPOINT_KEYS)
    authority = c.string(data, "authority_host", "endpoints", default=DEFAULT_AUTHORITY_HOST)
    _https_url(c, authority, "endpoints.authority_host", bare_host=True)
    url = c.string(data, "dap_statistics_url", "endpoints", default=DEFAULT_DAP_STATISTICS_URL)
    _https_url(c, url, "endpoints.dap_statistics_url", bare_host=False)
    customers_url = c.string(data, "dap_customers_url", "endpoints", default=DEFAULT_DAP_CUSTOMERS_URL)
    _https_url(c, customers_url, "endpoints.dap_customers_url", bare_host=False)
    graph_url = c.string(data, "graph_url", "endpoints", default=DEFAULT_GRAPH_URL)
    _https_url(c, graph_url, "endpoints.graph_url", bare_host=False)
    scope = _scope(c, data, "scope", DEFAULT_SCOPE)
    graph_scope = _scope(c, data, "graph_scope", DEFAULT_GRAPH_SCOPE)
    ca_file = c.path(c.string(data, "ca_file", "endpoints"))
    if ca_file is not None:
        try:
            ssl.create_default_context().load_verify_locations(cadata=read_text(ca_file, CA_BUNDLE_LIMIT))
        except FileReadError as err:
            c.add("endpoints.ca_file", str(err))
        except (OSError, ssl.SSLError) as err:
            c.add("endpoints.ca_file", f"{ca_file} is not a readable PEM CA bundle: {_os_reason(err)}")
    return Endpoints(authority_host=(authority or DEFAULT_AUTHORITY_HOST).rstrip("/"),
                     dap_statistics_url=url or DEFAULT_DAP_STATISTICS_URL,
                     dap_customers_url=customers_url or DEFAULT_DAP_CUSTOMERS_URL,
                     scope=scope, graph_url=(graph_url or DEFAULT_GRAPH_URL).rstrip("/"),
                     graph_scope=graph_scope, ca_file=ca_file)


def _scope(c: _Errors, data: dict[str, Any], key: str, default: str) -> str:
    scope = c.string(data, key, "endpoints", default=default)
    if scope and (set(scope.split()) & _RESERVED_SCOPES or len(scope.split()) != 1):
        c.add(f"endpoints.{key}", f"must be one resource scope such as {default}; openid, profile "
                                  f"and offline_access are added by MSAL")
    return scope or default


def _tenants(c: _Errors, value: Any) -> list[TenantConfig]:
    if value is None:
        c.add("tenants", "required: list at least one partner tenant")
        return []
    if not isinstance(value, list) or not value:
        c.add("tenants", "must be a non-empty list of partner tenants")
        return []
    tenants: list[TenantConfig] = []
    names: set[str] = set()
    caches: dict[Path, int] = {}
    secrets: dict[tuple[str, str], int] = {}  # Key Vault secret names are case-insensitive
    for i, item in enumerate(value):
        path = f"tenants[{i}]"
        data = c.mapping(item, path, _TENANT_KEYS)
        if not isinstance(item, dict):
            continue
        name = c.string(data, "name", path, required=True)
        if name is not None:
            if not _NAME_RE.match(name):
                c.add(f"{path}.name",
                      f"must match [a-z0-9_-]+ (it becomes the tenant label), got {shown(name)}")
            elif name in names:
                c.add(f"{path}.name", f"duplicate tenant name {shown(name)}")
            names.add(name)
        tenant_id = c.string(data, "tenant_id", path, required=True)
        if tenant_id is not None and not (_GUID_RE.match(tenant_id) or _DOMAIN_RE.match(tenant_id)):
            c.add(f"{path}.tenant_id", "must be the partner tenant's id (a GUID) or its domain, "
                                       f"like contoso.onmicrosoft.com; got {shown(tenant_id)}")
        client_id = c.string(data, "client_id", path, required=True)
        if client_id is not None and not _GUID_RE.match(client_id):
            c.add(f"{path}.client_id",
                  f"must be the app registration's application id (a GUID), got {shown(client_id)}")
        auth = _auth(c, data.get("auth"), f"{path}.auth")
        collectors = _collectors(c, data.get("collectors"), f"{path}.collectors")
        graph_auth, graph_client_id = _graph_auth(c, data.get("graph_auth"), f"{path}.graph_auth",
                                                  collectors)
        # One cache holds one tenant's account: shared, a refresh token could go to the wrong tenant.
        if auth is not None and auth.token_cache_file is not None:
            owner = caches.setdefault(auth.token_cache_file, i)
            if owner != i:
                c.add(f"{path}.auth.token_cache_file", f"already used by tenants[{owner}]; each tenant "
                                                       f"needs its own token cache file")
        if auth is not None and auth.token_store is not None:
            store = auth.token_store
            owner = secrets.setdefault((store.vault_url, store.secret_name.lower()), i)
            if owner != i:
                c.add(f"{path}.auth.token_store.azure_key_vault.secret_name",
                      f"already used by tenants[{owner}]; each tenant needs its own secret")
        if name and tenant_id and client_id and auth and collectors:
            tenants.append(TenantConfig(name=name, tenant_id=tenant_id, client_id=client_id, auth=auth,
                                        collectors=collectors, graph_auth=graph_auth,
                                        graph_client_id=graph_client_id))
    return tenants


def _collectors(c: _Errors, value: Any, path: str) -> tuple[str, ...] | None:
    if value is None:
        return DEFAULT_COLLECTORS
    known = REGISTRY.names
    if not isinstance(value, list) or not value:
        c.add(path, f"must be a non-empty list of collectors, from: {', '.join(known)}")
        return None
    errors_before = len(c.errors)
    chosen: list[str] = []
    for i, item in enumerate(value):
        if item not in known:
            c.add(f"{path}[{i}]", f"unknown collector {shown(item)}; known: {', '.join(known)}")
        elif item in chosen:
            c.add(f"{path}[{i}]", f"duplicate collector {shown(item)}")
        else:
            chosen.append(item)
    for name in chosen:
        for needed, why in REGISTRY[name].requires.items():
            if needed not in chosen:
                c.add(path, f"{why}; add {needed} to the list")
    if len(c.errors) > errors_before:
        return None
    # Config order does not matter; the registry's order is the one everything else uses.
    return tuple(sorted(chosen, key=REGISTRY.order))


def _graph_auth(c: _Errors, value: Any, path: str,
                collectors: tuple[str, ...] | None) -> tuple[AuthConfig | None, str | None]:
    """Optional app-only credentials for Graph, so the GDAP collector needs no user sign-in."""
    if value is None:
        return None, None
    data = c.mapping(value, path, _GRAPH_AUTH_KEYS)
    errors_before = len(c.errors)
    graph_kinds = [name for name in REGISTRY.names if REGISTRY[name].uses_graph]
    if collectors is not None and not set(graph_kinds) & set(collectors):
        c.add(path, f"only used by the Graph collectors ({', '.join(graph_kinds)}), none of which this "
                    f"tenant runs")
    method = c.string(data, "method", path, default="client_credentials")
    if method != "client_credentials":
        c.add(f"{path}.method", f"must be client_credentials (app-only, with the application "
                                f"permissions of the Graph collectors), got {shown(method)}; "
                                f"leave graph_auth out to use the tenant's auth for Graph too")
    client_id = _guid(c, data, "client_id", path)
    credential = _credential(c, data, path, required_why=" for app-only Graph access",
                             managed_identity=True)
    if len(c.errors) > errors_before or credential is None:
        return None, None
    if client_id is None and credential.client_assertion is not None and "workload_identity" in data:
        client_id = c.environ.get(AZURE_CLIENT_ID, "").strip() or None  # the workload identity's app
    return AuthConfig(method="client_credentials", **vars(credential)), client_id


@dataclass(frozen=True)
class _Credential:
    client_secret: Secret | None = None
    client_certificate: ClientCertificate | None = None
    client_assertion: ClientAssertion | None = None
    managed_identity: ManagedIdentity | None = None


def _guid(c: _Errors, data: dict[str, Any], key: str, path: str) -> str | None:
    value = c.string(data, key, path)
    if value is not None and not _GUID_RE.match(value):
        c.add(_join(path, key), f"must be the app registration's application id (a GUID), got {shown(value)}")
        return None
    return value


def _flag(c: _Errors, data: dict[str, Any], key: str, path: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        c.add(_join(path, key), f"must be true or false, got {shown(value)}")
        return False
    return value


def _credential(c: _Errors, data: dict[str, Any], path: str, *, required_why: str | None,
                managed_identity: bool) -> _Credential | None:
    """The app's one credential: a secret, a certificate, a federated assertion or (where Azure
    offers it) a managed identity. None, with errors added, when there is not exactly one."""
    errors_before = len(c.errors)
    if "client_secret" in data:
        c.add(f"{path}.client_secret", "literal secrets are not allowed in the config; put the value "
                                       "in a file and set client_secret_file, or name an environment "
                                       "variable with client_secret_env")
    given = [key for key in ("client_secret_file", "client_secret_env", "client_certificate_file",
                             "client_assertion_file", "workload_identity", "managed_identity")
             if data.get(key) not in (None, False)]
    kinds = {key.removesuffix("_file").removesuffix("_env") for key in given}
    if len(kinds) > 1:
        c.add(path, f"set exactly one client credential, got {' and '.join(given)}")
        return None
    secret = c.secret(data, "client_secret", path, required=False)
    certificate = _certificate(c, data, path)
    assertion = _assertion(c, data, path)
    identity: ManagedIdentity | None = None
    if data.get("managed_identity") not in (None, False):
        if managed_identity:
            identity = _managed_identity(c, data["managed_identity"], f"{path}.managed_identity")
        else:
            c.add(f"{path}.managed_identity", "a managed identity can sign in only as itself (app-only): "
                                              "use it in graph_auth or for the token store's vault")
    if len(c.errors) > errors_before:
        return None
    if not given and required_why is not None:
        options = ("client_secret_file, client_secret_env, client_certificate_file, client_assertion_file, "
                   "workload_identity: true")
        if managed_identity:
            options += ", managed_identity"
        c.add(path, f"a client credential is required{required_why}: set one of {options}")
        return None
    return _Credential(secret, certificate, assertion, identity)


def _certificate(c: _Errors, data: dict[str, Any], path: str) -> ClientCertificate | None:
    file_value = c.string(data, "client_certificate_file", path)
    send_chain = _flag(c, data, "client_certificate_send_chain", path)
    if file_value is None:
        for key in ("client_certificate_password_file", "client_certificate_password_env",
                    "client_certificate_send_chain"):
            if key in data:
                c.add(_join(path, key), "only used with client_certificate_file")
        return None
    password = c.secret(data, "client_certificate_password", path, required=False)
    cert_path = c.path(file_value)
    assert cert_path is not None
    try:
        return load_client_certificate(cert_path, password.value if password else None,
                                       send_chain=send_chain)
    except CertificateError as err:
        c.add(_join(path, "client_certificate_file"), str(err))
        return None


def _assertion(c: _Errors, data: dict[str, Any], path: str) -> ClientAssertion | None:
    file_value = c.string(data, "client_assertion_file", path)
    workload = _flag(c, data, "workload_identity", path)
    if file_value is not None:
        return _token_file(c, file_value, _join(path, "client_assertion_file"), "client_assertion_file")
    if not workload:
        return None
    where = _join(path, "workload_identity")
    named = c.environ.get(AZURE_FEDERATED_TOKEN_FILE, "").strip()
    if not named:
        c.add(where, f"environment variable {AZURE_FEDERATED_TOKEN_FILE} is not set; in AKS, label "
                     f"the pod azure.workload.identity/use: \"true\" and run it with a service "
                     f"account annotated azure.workload.identity/client-id")
        return None
    return _token_file(c, named, where, AZURE_FEDERATED_TOKEN_FILE)


def _token_file(c: _Errors, named: str, where: str, source: str) -> ClientAssertion | None:
    """A federated token file, which must exist now: the platform writes it before the start."""
    path = c.path(named)
    assert path is not None
    if not path.is_file():
        c.add(where, f"file {path} does not exist; it holds the federated token the "
                     f"platform (the kubelet, a CI runner) writes")
        return None
    return ClientAssertion(path, source)


def _managed_identity(c: _Errors, value: Any, path: str) -> ManagedIdentity | None:
    if value is True:
        return ManagedIdentity()
    data = c.mapping(value, path, {"client_id"})
    if not isinstance(value, dict):
        return None
    return ManagedIdentity(_guid(c, data, "client_id", path))


def _auth(c: _Errors, value: Any, path: str) -> AuthConfig | None:
    data = c.mapping(value, path, _AUTH_KEYS)
    errors_before = len(c.errors)
    method = c.string(data, "method", path, default="refresh_token")
    if method not in AUTH_METHODS:
        c.add(f"{path}.method", f"must be one of {', '.join(AUTH_METHODS)}, got {shown(method)}")
        return None
    for literal in ("refresh_token", "password"):
        if literal in data:
            c.add(f"{path}.{literal}",
                  f"literal secrets are not allowed in the config; put the value in a file and set "
                  f"{literal}_file, or name an environment variable with {literal}_env")
    for key, owner in _METHOD_ONLY_KEYS.items():
        if key in data and owner != method:
            c.add(f"{path}.{key}", f"only used with method {owner} (method is {method})")
    credential = _credential(c, data, path, required_why=(" for method client_credentials"
                                                          if method == "client_credentials" else None),
                             managed_identity=False)
    token_cache_file = token_store = refresh_token = username = password = None
    if method == "refresh_token":
        token_store = _token_store(c, data.get("token_store"), f"{path}.token_store")
        if token_store is None and "token_store" not in data:
            token_cache_file = c.path(c.string(data, "token_cache_file", path, required=True))
        elif "token_cache_file" in data:
            c.add(f"{path}.token_cache_file", "set either token_cache_file or token_store, not both")
        if token_cache_file is not None:
            _check_token_cache(c, token_cache_file, f"{path}.token_cache_file")
        refresh_token = c.secret(data, "refresh_token", path, required=False)
    elif method == "username_password":
        username = c.string(data, "username", path, required=True)
        password = c.secret(data, "password", path, required=True,
                            required_why=" for method username_password")
    if len(c.errors) > errors_before or credential is None:
        return None
    return AuthConfig(method=method, token_cache_file=token_cache_file, token_store=token_store,
                      refresh_token=refresh_token, username=username, password=password,
                      **vars(credential))


def _token_store(c: _Errors, value: Any, path: str) -> KeyVaultStore | None:
    """token_store: {azure_key_vault: {...}}: the cache in a Key Vault secret, reached app-only."""
    if value is None:
        return None
    data = c.mapping(value, path, _TOKEN_STORE_KEYS)
    if "azure_key_vault" not in data:
        if isinstance(value, dict):
            c.add(path, "name a store: azure_key_vault")
        return None
    where = f"{path}.azure_key_vault"
    vault = c.mapping(data["azure_key_vault"], where, _VAULT_KEYS)
    errors_before = len(c.errors)
    vault_url = c.string(vault, "vault_url", where, required=True)
    if vault_url is not None:
        parts = urlsplit(vault_url)
        if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            c.add(f"{where}.vault_url", f"must be the vault's URL, like https://contoso-pcx.vault.azure.net, "
                                        f"got {shown(vault_url)}")
    secret_name = c.string(vault, "secret_name", where, required=True)
    if secret_name is not None and not _SECRET_NAME_RE.match(secret_name):
        c.add(f"{where}.secret_name", f"must be 1-127 letters, digits and dashes (Key Vault's rule), "
                                      f"got {shown(secret_name)}")
    tenant_id = c.string(vault, "tenant_id", where) or c.environ.get(AZURE_TENANT_ID, "").strip() or None
    client_id = _guid(c, vault, "client_id", where) or c.environ.get(AZURE_CLIENT_ID, "").strip() or None
    if any(key in vault for key in _CREDENTIAL_KEYS | {"managed_identity"}):
        credential = _credential(c, vault, where, required_why=None, managed_identity=True)
        source = "the config"
    else:
        credential, source = _azure_environment_credential(c, where, client_id)
    if credential is None or len(c.errors) > errors_before:
        return None
    if credential.managed_identity is None and client_id is None:
        c.add(f"{where}.client_id", f"required to sign in to the vault with {source}'s credential; "
                                    f"or set {AZURE_CLIENT_ID}")
        return None
    assert vault_url is not None
    assert secret_name is not None
    return KeyVaultStore(vault_url=vault_url.rstrip("/"), secret_name=secret_name,
                         access=AuthConfig(method="client_credentials", **vars(credential)),
                         client_id=client_id, tenant_id=tenant_id)


def _azure_environment_credential(c: _Errors, where: str,
                                  client_id: str | None) -> tuple[_Credential | None, str]:
    """What DefaultAzureCredential would pick from the environment: workload identity, then a
    certificate, then a secret, then the managed identity."""
    env = c.environ
    source = "the environment"
    if env.get(AZURE_FEDERATED_TOKEN_FILE, "").strip():
        assertion = _token_file(c, env[AZURE_FEDERATED_TOKEN_FILE].strip(), where,
                                AZURE_FEDERATED_TOKEN_FILE)
        return (_Credential(client_assertion=assertion) if assertion else None), source
    if env.get(AZURE_CLIENT_CERTIFICATE_PATH, "").strip():
        path = c.path(env[AZURE_CLIENT_CERTIFICATE_PATH].strip())
        assert path is not None
        try:
            return _Credential(client_certificate=load_client_certificate(
                path, env.get(AZURE_CLIENT_CERTIFICATE_PASSWORD) or None)), source
        except CertificateError as err:
            c.add(where, f"{AZURE_CLIENT_CERTIFICATE_PATH}: {err}")
            return None, source
    if env.get(AZURE_CLIENT_SECRET, "").strip():
        return _Credential(client_secret=Secret(env[AZURE_CLIENT_SECRET].strip(),
                                                f"environment variable {AZURE_CLIENT_SECRET}")), source
    return _Credential(managed_identity=ManagedIdentity(client_id)), source


def _check_token_cache(c: _Errors, path: Path, where: str) -> None:
    directory = path.parent
    if not directory.is_dir():
        c.add(where, f"directory {directory} does not exist; create it "
                     f"(the rotating refresh token is kept there)")
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        c.add(where, f"directory {directory} is not writable by this user; "
                     f"the refresh token rotates and must be saved")
        return
    if path.exists():
        try:
            mode = path.stat().st_mode & 0o777
            cache = json.loads(read_text(path, TOKEN_CACHE_LIMIT) or "{}")
        except FileReadError as err:
            c.add(where, str(err))
            return
        except OSError as err:
            c.add(where, f"cannot read {path}: {_os_reason(err)}")
            return
        except (ValueError, RecursionError):
            c.add(where, f"{path} is not a valid token cache (not JSON); move it away and run login again")
            return
        if mode & 0o077:
            # It holds a refresh token that opens every customer's tenant for 90 days.
            c.add(where, f"{path} is readable by others (mode {mode:04o}); it holds a refresh token: "
                         f"run chmod 600 {path}")
        if not is_msal_cache(cache):
            c.add(where, f"{path} is JSON but not an MSAL token cache; move it away and run login again")
