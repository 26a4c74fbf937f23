"""Files a config names never block, never read without end, and fail in one line saying why."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from exporter.auth import assertion_reader
from exporter.config import ClientAssertion, ConfigError, load_config
from exporter.files import FileReadError, read_file, within
from exporter.model import PollError
from exporter.simulator import Simulator
from tests.helpers.e2e import exporter_on, http_get, run_exporter, wait_for, write_config

# A read that blocks would hang the test; each must finish long before this.
QUICK = 2.0


def _big(path: Path) -> Path:
    path.write_bytes(b"x" * 70_000)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(("make", "says"), [
    (lambda d: _fifo(d / "fifo"), "is a FIFO (named pipe), not a regular file"),
    (lambda d: Path("/dev/zero"), "is a character device, not a regular file"),
    (lambda d: d, "is a directory, not a regular file"),
    (lambda d: _big(d / "big"), "is larger than 64 KiB"),
], ids=["fifo", "dev-zero", "directory", "too-large"])
def test_what_is_not_a_small_regular_file_is_refused_at_once(
        tmp_path: Path, make: Callable[[Path], Path], says: str) -> None:
    """A FIFO without a writer, a device, a directory or an oversized file: refused, not read."""
    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(FileReadError) as caught:
        read_file(path, 64 * 1024)
    assert time.monotonic() - started < QUICK
    assert says in str(caught.value)


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_secret_file_that_is_a_fifo_or_dev_zero_is_one_config_error(tmp_path: Path, special: str) -> None:
    """client_secret_file naming a FIFO or /dev/zero gives one line for that key, fast, no MemoryError."""
    secret = str(_fifo(tmp_path / "secret")) if special == "fifo" else special
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"tenants": [{
        "name": "a", "tenant_id": "00000000-0000-0000-0000-000000000001",
        "client_id": "11111111-1111-1111-1111-111111111111",
        "auth": {"method": "client_credentials", "client_secret_file": secret}}]}))
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert time.monotonic() - started < QUICK
    assert [line for line in caught.value.errors if "client_secret_file" in line] == [
        f"tenants[0].auth.client_secret_file: {secret} is "
        f"{'a FIFO (named pipe)' if special == 'fifo' else 'a character device'}, not a regular file; "
        f"point the setting at a file"]


def test_a_federated_token_file_replaced_by_a_fifo_fails_the_sign_in_at_once(tmp_path: Path) -> None:
    """A workload identity token file that became a FIFO is an auth error, not a poll that never ends."""
    read = assertion_reader(ClientAssertion(_fifo(tmp_path / "token"), "client_assertion_file"))
    started = time.monotonic()
    with pytest.raises(PollError) as caught:
        read()
    assert time.monotonic() - started < QUICK
    assert caught.value.reason == "auth"
    assert "is a FIFO (named pipe)" in caught.value.message


def test_a_load_that_never_returns_is_given_up_in_time() -> None:
    """A load stuck in a read (a hung mount) ends as a TimeoutError naming what was read."""
    stuck = threading.Event()
    with pytest.raises(TimeoutError, match=r"reading --config\.file took over 0\.2s"):
        within(stuck.wait, "--config.file", timeout=0.2)
    stuck.set()


@pytest.mark.e2e
def test_config_check_with_a_fifo_secret_ends_at_once(sim: Simulator, tmp_path: Path) -> None:
    """--config.check naming a FIFO exits 2 with the key's error instead of hanging."""
    config = write_config(sim, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["tenants"][0]["auth"]["refresh_token_file"] = str(_fifo(tmp_path / "seed-fifo"))
    config.write_text(yaml.safe_dump(raw))
    result = run_exporter("--config.file", str(config), "--config.check", timeout=20)
    assert result.returncode == 2
    assert "refresh_token_file: " in result.stderr
    assert "is a FIFO (named pipe)" in result.stderr


@pytest.mark.e2e
def test_sighup_while_a_file_is_a_fifo_fails_that_reload_and_the_next_good_one_applies(
        sim: Simulator, tmp_path: Path) -> None:
    """A reload whose config names a FIFO fails visibly (gauge 0, log line); the next good SIGHUP
    applies; SIGTERM still ends the process within its grace."""
    config = write_config(sim, tmp_path)
    good = config.read_text()
    proc = exporter_on(config, tmp_path)
    try:
        proc.wait_ready()
        raw = yaml.safe_load(good)
        raw["tenants"][0]["auth"]["refresh_token_file"] = str(_fifo(tmp_path / "seed-fifo"))
        config.write_text(yaml.safe_dump(raw))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload failed" in proc.log, 5, "the failed reload")
        assert "is a FIFO (named pipe)" in proc.log
        gauge = 'partnercenter_exporter_config_last_reload_successful{config="config"}'
        assert f"{gauge} 0.0" in http_get(proc.url + "/metrics")[1].decode()
        config.write_text(good.replace("poll_interval: 1m", "poll_interval: 2m"))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: f"{gauge} 1.0" in http_get(proc.url + "/metrics")[1].decode(), 5, "the good reload")
        started = time.monotonic()
        assert proc.stop(signal.SIGTERM, timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
