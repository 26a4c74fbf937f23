"""The exporter config's schema: top keys, endpoints, tenants and their auth; the one module of the
config package that knows the collector registry."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter.collectors import DEFAULT_COLLECTORS, REGISTRY
from exporter.config.credentials import (
    AZURE_CLIENT_ID,
    CREDENTIAL_KEYS,
    GUID_RE,
    guid,
    read_credential,
    token_store_config,
)
from exporter.config.file_checks import check_token_cache
from exporter.config.types import (
    AUTH_METHODS,
    DEFAULT_POLL_CONCURRENCY,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_THRESHOLDS,
    MIN_POLL_INTERVAL,
    AuthConfig,
    AuthMethod,
    Config,
    TenantConfig,
)
from exporter.config.walker import Walker
from exporter.config.yamlio import ConfigError, load_file, os_reason, shown
from exporter.endpoints import (
    DEFAULT_AUTHORITY_HOST,
    DEFAULT_DAP_CUSTOMERS_URL,
    DEFAULT_DAP_STATISTICS_URL,
    DEFAULT_GRAPH_SCOPE,
    DEFAULT_GRAPH_URL,
    DEFAULT_SCOPE,
    Endpoints,
)
from exporter.files import CA_BUNDLE_LIMIT, FileReadError, read_text

# MSAL adds these to every user flow itself and raises if they are passed in.
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}
_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
_DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}$")
_TOP_KEYS = {"poll_interval", "request_timeout", "inactive_thresholds_days", "poll_concurrency",
             "endpoints", "tenants"}
_ENDPOINT_KEYS = {"authority_host", "dap_statistics_url", "dap_customers_url", "scope", "graph_url",
                  "graph_scope", "ca_file"}
_TENANT_KEYS = {"name", "tenant_id", "client_id", "auth", "collectors", "graph_auth"}
_GRAPH_AUTH_KEYS = {"method", "client_id", "managed_identity", *CREDENTIAL_KEYS}
_AUTH_KEYS = {"method", "token_cache_file", "token_store", "refresh_token", "refresh_token_file",
              "refresh_token_env", "username", "password", "password_file", "password_env",
              *CREDENTIAL_KEYS}
# Keys that only mean something for one method; naming them under another is a mistake.
_METHOD_ONLY_KEYS: dict[str, AuthMethod] = {
    "token_cache_file": "refresh_token", "token_store": "refresh_token",
    "refresh_token_file": "refresh_token", "refresh_token_env": "refresh_token",
    "username": "username_password",
    "password_file": "username_password", "password_env": "username_password",
    # A federated token proves an app, not a user: only app-only sign-ins use one.
    "client_assertion_file": "client_credentials", "workload_identity": "client_credentials",
}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load, validate and resolve a config file; raise ConfigError listing every problem."""
    config_path = Path(path)
    return load_file(config_path, "config.file", lambda raw: parse_config(
        raw, environ=os.environ if environ is None else environ, base_dir=config_path.resolve().parent))


def parse_config(raw: Any, *, environ: Mapping[str, str], base_dir: Path) -> Config:
    """Validate an already-parsed YAML document; relative paths resolve against base_dir."""
    c = Walker(environ, base_dir)
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
                  poll_concurrency=concurrency, endpoints=endpoints, warnings=tuple(c.warnings))


def _thresholds(c: Walker, value: Any) -> tuple[int, ...]:
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


def _https_url(c: Walker, value: str | None, where: str, *, bare_host: bool) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        c.add(where, f"must be an https:// URL, got {shown(value)}")
    elif bare_host and parts.path not in ("", "/"):
        c.add(where, f"must be a scheme and host only, like {DEFAULT_AUTHORITY_HOST}; "
                     f"the tenant is appended from tenants[].tenant_id")


def _endpoints(c: Walker, value: Any) -> Endpoints:
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
            c.add("endpoints.ca_file", f"{ca_file} is not a readable PEM CA bundle: {os_reason(err)}")
    return Endpoints(authority_host=(authority or DEFAULT_AUTHORITY_HOST).rstrip("/"),
                     dap_statistics_url=url or DEFAULT_DAP_STATISTICS_URL,
                     dap_customers_url=customers_url or DEFAULT_DAP_CUSTOMERS_URL,
                     scope=scope, graph_url=(graph_url or DEFAULT_GRAPH_URL).rstrip("/"),
                     graph_scope=graph_scope, ca_file=ca_file)


def _scope(c: Walker, data: dict[str, Any], key: str, default: str) -> str:
    scope = c.string(data, key, "endpoints", default=default)
    if scope and (set(scope.split()) & _RESERVED_SCOPES or len(scope.split()) != 1):
        c.add(f"endpoints.{key}", f"must be one resource scope such as {default}; openid, profile "
                                  f"and offline_access are added by MSAL")
    return scope or default


def _tenants(c: Walker, value: Any) -> list[TenantConfig]:
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
        if tenant_id is not None and not (GUID_RE.match(tenant_id) or _DOMAIN_RE.match(tenant_id)):
            c.add(f"{path}.tenant_id", "must be the partner tenant's id (a GUID) or its domain, "
                                       f"like contoso.onmicrosoft.com; got {shown(tenant_id)}")
        client_id = c.string(data, "client_id", path, required=True)
        if client_id is not None and not GUID_RE.match(client_id):
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


def _collectors(c: Walker, value: Any, path: str) -> tuple[str, ...] | None:
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


def _graph_auth(c: Walker, value: Any, path: str,
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
    client_id = guid(c, data, "client_id", path)
    credential = read_credential(c, data, path, required_why=" for app-only Graph access",
                             managed_identity=True)
    if len(c.errors) > errors_before or credential is None:
        return None, None
    if client_id is None and credential.client_assertion is not None and "workload_identity" in data:
        client_id = c.environ.get(AZURE_CLIENT_ID, "").strip() or None  # the workload identity's app
    return AuthConfig(method="client_credentials", **vars(credential)), client_id


def _auth(c: Walker, value: Any, path: str) -> AuthConfig | None:
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
    credential = read_credential(c, data, path, required_why=(" for method client_credentials"
                                                          if method == "client_credentials" else None),
                             managed_identity=False)
    token_cache_file = token_store = refresh_token = username = password = None
    if method == "refresh_token":
        token_store = token_store_config(c, data.get("token_store"), f"{path}.token_store")
        if token_store is None and "token_store" not in data:
            token_cache_file = c.path(c.string(data, "token_cache_file", path, required=True))
        elif "token_cache_file" in data:
            c.add(f"{path}.token_cache_file", "set either token_cache_file or token_store, not both")
        if token_cache_file is not None:
            check_token_cache(c, token_cache_file, f"{path}.token_cache_file")
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
