"""The file token cache on a full disk: the rotated refresh token is kept, retried, flagged and saved."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporter import token_store
from exporter.app import App
from exporter.config import parse_config
from exporter.model import SourceView
from exporter.simulator import Simulator
from tests.conftest import CLIENT_ID, TENANT_ID

pytestmark = pytest.mark.e2e


class Disk:
    """A directory whose disk can be filled: a 256 KiB tmpfs where this machine lets us mount one,
    else a plain directory whose file writes fail with ENOSPC while full."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._monkeypatch = pytest.MonkeyPatch()
        self.tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                                    capture_output=True, check=False).returncode == 0
        self._filler = path / "filler"

    def fill(self) -> None:
        if not self.tmpfs:
            def no_space(*args: object, **kwargs: object) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._monkeypatch.setattr(token_store, "write_atomically", no_space)
            return
        with contextlib.suppress(OSError), self._filler.open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()

    def free(self) -> None:
        self._monkeypatch.undo()
        self._filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    (tmp_path / "state").mkdir()
    disk = Disk(tmp_path / "state")
    try:
        yield disk
    finally:
        disk.free()
        disk.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # Tokens that live 60 s are inside MSAL's 5-minute margin: every poll rotates the refresh token.
    with Simulator(token_lifetime=60) as simulator:
        simulator.add_client(CLIENT_ID)
        simulator.add_tenant(TENANT_ID, customers=20)
        yield simulator


def _app(sim: Simulator, disk: Disk) -> App:
    raw = {"request_timeout": "5s", "endpoints": sim.endpoints_config(), "tenants": [
        {"name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID, "collectors": ["dap_statistics"],
         "auth": {"token_cache_file": str(disk.path / "cache.json"),
                  "refresh_token_file": str(disk.path.parent / "seed")}}]}
    (disk.path.parent / "seed").write_text(sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "a@contoso.test"))
    (disk.path.parent / "config.yaml").write_text(yaml.safe_dump(raw))
    config = parse_config(raw, environ={}, base_dir=disk.path.parent)
    return App(config, config_path=str(disk.path.parent / "config.yaml"), listen_address=None)


def _poll(app: App) -> SourceView:
    return app.poller.poll_all_once().views[0]


def _save_refused_then_room(app: App, disk: Disk) -> None:
    """A good poll, one whose rotation the full disk refuses (pending), then room again."""
    assert _poll(app).last_poll_success
    disk.fill()
    assert _poll(app).token_store_pending is True
    disk.free()


def _cached(disk: Disk) -> list[str]:
    cache = json.loads((disk.path / "cache.json").read_text())
    return [entry["secret"] for entry in cache["RefreshToken"].values()]


def test_a_full_disk_keeps_polling_flags_pending_and_saves_once_there_is_room(
        sim: Simulator, disk: Disk, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the disk is full, polls go on, the pending gauge says the file lags and the log says
    why; once there is room, the next lookup saves the newest refresh token, which a new process redeems."""
    app = _app(sim, disk)
    try:
        assert _poll(app).token_store_pending is False
        disk.fill()
        with caplog.at_level(logging.WARNING, logger="exporter.auth"):
            during = _poll(app)
        assert during.last_poll_success
        assert during.token_store_pending is True
        assert "No space left on device" in caplog.text
        assert _cached(disk) != sim.refresh_token_history(TENANT_ID)[-1:]  # the file lags
        disk.free()
        monkeypatch.setattr(token_store, "RETRY_FIRST", 0.0)  # retry at once, not in 5 s
        after = _poll(app)
        assert after.last_poll_success
        assert after.token_store_pending is False
    finally:
        app.stop()
    assert _cached(disk) == sim.refresh_token_history(TENANT_ID)[-1:]
    restarted = _app(sim, disk)
    try:
        assert _poll(restarted).last_poll_success
    finally:
        restarted.stop()
    assert sim.count("token", 400) == 0


def test_shutdown_saves_a_rotation_the_full_disk_refused(sim: Simulator, disk: Disk) -> None:
    """A rotation the full disk refused is written at shutdown when there is room by then."""
    app = _app(sim, disk)
    try:
        _save_refused_then_room(app, disk)
    finally:
        app.stop()
    assert _cached(disk) == sim.refresh_token_history(TENANT_ID)[-1:]


def test_a_login_while_a_save_is_pending_wins(sim: Simulator, disk: Disk) -> None:
    """A file another process (login) writes while this one's save is pending is adopted, not
    overwritten by the retry."""
    app = _app(sim, disk)
    try:
        _save_refused_then_room(app, disk)
        login = sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "a@contoso.test")
        cache = json.loads((disk.path / "cache.json").read_text())
        next(iter(cache["RefreshToken"].values()))["secret"] = login
        token_store.write_atomically(str(disk.path / "cache.json"), json.dumps(cache))
        after = _poll(app)
        assert after.last_poll_success
        assert after.token_store_pending is False
    finally:
        app.stop()
    assert login not in sim.live_refresh_tokens()  # the exporter redeemed the login's token
    assert _cached(disk) == sim.refresh_token_history(TENANT_ID)[-1:]
