"""Every upstream exchange ends within request_timeout, a response head sent one byte at a time too."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from exporter.app import build_http_client
from exporter.auth import Identity, TokenProvider
from exporter.client import read_bounded
from exporter.collectors.dap_statistics import DapStatisticsClient
from exporter.collectors.gdap_relationships import GdapRelationshipsClient
from exporter.config import AuthConfig, Config, ManagedIdentity, Secret, load_config
from exporter.keyvault import KeyVaultSecrets
from exporter.model import PollError
from exporter.simulator import Fault, Simulator
from tests.conftest import CLIENT_ID, SCOPE, TENANT_ID, StaticToken

TIMEOUT = 1.0
# A whole exchange may overrun request_timeout by one socket operation's scheduling, no more.
BOUND = 3 * TIMEOUT
APP_SECRET = "Tq8~trickle-app-secret-0123456789"


def _config(sim: Simulator, directory: Path) -> Config:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump({
        "request_timeout": f"{TIMEOUT:g}s", "endpoints": sim.endpoints_config(),
        "tenants": [{"name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
                     "auth": {"token_cache_file": str(directory / "cache.json")}}]}))
    return load_config(str(path))


def _ends_in_time(call: Callable[[], object]) -> PollError:
    """Run `call` in a thread; it must raise a PollError within BOUND seconds."""
    box: dict[str, BaseException | object] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as err:  # handed to the test thread
            box["error"] = err

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), f"still running after {BOUND:g}s"
    elapsed = time.monotonic() - started
    error = box.get("error")
    assert isinstance(error, PollError), f"expected a PollError, got {box!r}"
    assert elapsed >= TIMEOUT * 0.9
    return error


@pytest.fixture
def trickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Simulator, httpx.Client]]:
    with Simulator() as sim:
        sim.add_client(CLIENT_ID, secret=APP_SECRET)
        sim.add_tenant(TENANT_ID, customers=5)
        sim.add_managed_identity(TENANT_ID)
        sim.keyvault.grant(CLIENT_ID)
        for name, value in sim.managed_identity_environment().items():
            monkeypatch.setenv(name, value)
        with build_http_client(_config(sim, tmp_path)) as http:
            yield sim, http


def _app_only(sim: Simulator, *, managed: bool = False) -> Identity:
    auth = (AuthConfig(method="client_credentials", managed_identity=ManagedIdentity())
            if managed else AuthConfig(method="client_credentials", client_secret=Secret(APP_SECRET, "test")))
    return Identity(tenant="contoso", tenant_id=TENANT_ID, client_id=CLIENT_ID, auth=auth,
                    authority_host=sim.authority_host, scope=SCOPE)


UPSTREAMS: dict[str, tuple[str, Callable[[Simulator, httpx.Client], Callable[[], object]]]] = {
    "partner-center": ("api", lambda sim, http: DapStatisticsClient(
        "contoso", http, sim.dap_statistics_url, StaticToken()).fetch),
    "graph": ("graph", lambda sim, http: GdapRelationshipsClient(
        "contoso", http, sim.graph_url, StaticToken()).fetch),
    "identity-platform": ("token", lambda sim, http: TokenProvider(_app_only(sim), http).get_token),
    "managed-identity": ("managed_identity", lambda sim, http: TokenProvider(
        _app_only(sim, managed=True), http).get_token),
    "key-vault": ("vault", lambda sim, http: lambda: KeyVaultSecrets(
        sim.vault_url, http, lambda scope, fresh: "token", attempts=1).get("cache")),
}


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
def test_a_trickled_response_head_ends_within_request_timeout(
        trickled: tuple[Simulator, httpx.Client], upstream: str) -> None:
    """A head sent one byte every 0.2 s (each read well inside the timeout) ends as reason timeout."""
    sim, http = trickled
    target, build = UPSTREAMS[upstream]
    call = build(sim, http)
    sim.inject(Fault(target, status=200, trickle_head=0.2, times=10**6))
    error = _ends_in_time(call)
    assert error.reason == "timeout"
    assert "whole answer within request_timeout (1s)" in error.message


def test_a_stuck_token_request_does_not_hold_the_token_lock(trickled: tuple[Simulator, httpx.Client]) -> None:
    """After the deadline, the tenant's token lock is free for the next poll."""
    sim, http = trickled
    tokens = TokenProvider(_app_only(sim), http)
    sim.inject(Fault("token", status=200, trickle_head=0.2, times=10**6))
    _ends_in_time(tokens.get_token)
    assert tokens.wait_idle(0)


@contextlib.contextmanager
def _trickling_proxy() -> Iterator[str]:
    """An HTTP proxy that answers CONNECT with a head one byte every 0.2 s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\nX-Padding: ")
                while not stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()


def test_the_deadline_covers_a_proxy_from_https_proxy(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Through HTTPS_PROXY, a proxy that trickles its CONNECT answer ends within request_timeout."""
    with Simulator() as sim, _trickling_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with build_http_client(_config(sim, tmp_path)) as http:
            error = _ends_in_time(lambda: read_bounded(
                http, "GET", "https://pc.test.invalid/x", api="Partner Center", resource="x"))
    assert error.reason == "timeout"
