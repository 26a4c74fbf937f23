"""Shared helpers: config builders, fake identity-platform responses, and the running simulator."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from exporter.collectors import DEFAULT_COLLECTORS
from exporter.config import AuthConfig, Secret, TenantConfig
from exporter.endpoints import Endpoints
from exporter.exposition import Publisher
from exporter.http.server import ExporterServer
from exporter.simulator import Simulator

# `scripts/test --fast` sets this and runs only the tests not marked e2e; starting a process there
# fails loudly, so a test that needs one cannot slip into the fast tier unmarked.
FAST_TIER = os.environ.get("PCX_TEST_TIER") == "fast"


class _NoProcesses(subprocess.Popen):  # type: ignore[type-arg]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the fast test tier starts no process: mark this test @pytest.mark.e2e")


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    # From collection on, so a test module that starts a process on import fails too. Not before:
    # pytest-xdist starts its workers, and they report their platform, in the session's start.
    if FAST_TIER:
        subprocess.Popen = _NoProcesses  # type: ignore[misc]


AUTHORITY = "https://login.test.invalid"
API_URL = "https://pc.test.invalid/CustomerServiceAdminApi/Web/v1/delegatedAdminStatistics"
TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
CLIENT_ID = "11111111-1111-1111-1111-111111111111"
TOKEN_URL = f"{AUTHORITY}/{TENANT_ID}/oauth2/v2.0/token"
DISCOVERY_URL = f"{AUTHORITY}/{TENANT_ID}/v2.0/.well-known/openid-configuration"
SCOPE = "https://api.partnercustomeradministration.microsoft.com/.default"


class StaticToken:
    """A token source that always has the same App+User token, for clients tested at the HTTP
    boundary."""

    method = "refresh_token"
    expires_at = None
    store_pending = None
    certificate_expires_at = None

    def get_token(self, *, force_refresh: bool = False) -> str:
        return "token"

    def wait_idle(self, timeout: float) -> bool:
        return True

    def flush(self, timeout: float) -> None:
        pass


def endpoints(**overrides: Any) -> Endpoints:
    return Endpoints(**{"authority_host": AUTHORITY, "dap_statistics_url": API_URL, **overrides})


def tenant(method: str = "refresh_token", *, cache: Path | None = None, secret: str | None = None,
           seed: str | None = None, username: str | None = None, password: str | None = None,
           name: str = "contoso", tenant_id: str = TENANT_ID, client_id: str = CLIENT_ID) -> TenantConfig:
    return TenantConfig(name=name, tenant_id=tenant_id, client_id=client_id, auth=AuthConfig(
        method=method,  # type: ignore[arg-type]
        client_secret=Secret(secret, "test") if secret else None,
        token_cache_file=cache, refresh_token=Secret(seed, "test") if seed else None,
        username=username, password=Secret(password, "test") if password else None),
        collectors=DEFAULT_COLLECTORS)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def token_body(access: str = "at-1", refresh: str | None = "rt-2", *, expires_in: int = 3600,
               user: str = "admin@contoso.onmicrosoft.com") -> dict[str, Any]:
    """A v2 token response as the identity platform sends it (id_token unsigned, as MSAL allows)."""
    body: dict[str, Any] = {"token_type": "Bearer", "scope": SCOPE, "expires_in": expires_in,
                            "ext_expires_in": expires_in, "access_token": access}
    if refresh is not None:
        body["refresh_token"] = refresh
        body["client_info"] = _b64({"uid": "uid-1", "utid": TENANT_ID})
        body["id_token"] = _b64({"alg": "none"}) + "." + _b64({
            "iss": f"{AUTHORITY}/{TENANT_ID}/v2.0", "aud": CLIENT_ID, "sub": "s", "oid": "uid-1",
            "tid": TENANT_ID, "preferred_username": user, "iat": 0, "exp": 4102444800}) + "."
    return body


def aad_error(error: str, code: int, text: str = "details") -> dict[str, Any]:
    return {"error": error, "error_codes": [code],
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: t\r\nCorrelation ID: c\r\n"
                                 f"Timestamp: 2026-11-23 10:00:00Z"}


DISCOVERY = {
    "issuer": f"{AUTHORITY}/{TENANT_ID}/v2.0",
    "authorization_endpoint": f"{AUTHORITY}/{TENANT_ID}/oauth2/v2.0/authorize",
    "token_endpoint": TOKEN_URL,
    "device_authorization_endpoint": f"{AUTHORITY}/{TENANT_ID}/oauth2/v2.0/devicecode",
}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A running simulator with one partner tenant and one public client."""
    with Simulator() as simulator:
        simulator.add_client(CLIENT_ID)
        simulator.add_tenant(TENANT_ID, customers=250)
        yield simulator


@pytest.fixture
def start_server() -> Iterator[Callable[..., ExporterServer]]:
    """Starts ExporterServers on free loopback ports (arguments as ExporterServer takes them after
    the address); each is shut down after the test."""
    servers: list[ExporterServer] = []

    def start(publisher: Publisher, **options: Any) -> ExporterServer:
        server = ExporterServer("127.0.0.1:0", publisher, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def free_port() -> int:
    """A loopback port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ipv6_loopback() -> bool:
    """True if this machine can listen on ::1 (containers and CI runners may have no IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def require_binary(name: str) -> str:
    """Path of a binary for end-to-end tests; missing is a failure under CI, a skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; CI must install it (see scripts/test)")
        pytest.skip(f"{name} is not installed; scripts/test installs it")
    return path


@pytest.fixture
def aad() -> Iterator[Any]:
    """The identity platform at the HTTP boundary: discovery answers, `aad.token` is the token route."""
    with respx.mock(assert_all_called=False) as mock:
        mock.get(DISCOVERY_URL).mock(return_value=httpx.Response(200, json=DISCOVERY))
        mock.token = mock.post(TOKEN_URL)  # type: ignore[attr-defined]
        yield mock
