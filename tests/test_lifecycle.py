"""Process lifecycle over real sockets: SIGHUP reload, SIGTERM mid-poll, SIGKILL and shared caches."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from exporter.simulator import Fault, Simulator
from tests.conftest import CLIENT_ID, TENANT_ID
from tests.helpers.e2e import (
    ROOT,
    ExporterProcess,
    cached_refresh_tokens,
    exporter_command,
    exporter_on,
    http_get,
    run_exporter,
    seeded_tenant,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e

FABRIKAM_ID = "00000000-0000-0000-0000-0000000000fb"
KILLS = 50


def scrape(proc: ExporterProcess) -> str:
    return http_get(proc.url + "/metrics")[1].decode()


def reload_success_time(body: str) -> float:
    prefix = 'partnercenter_exporter_config_last_reload_success_timestamp_seconds{config="config"} '
    return float(next(line for line in body.splitlines() if line.startswith(prefix)).split()[-1])


def test_sighup_adds_a_tenant_and_leaves_unchanged_tenants_alone(sim: Simulator, tmp_path: Path) -> None:
    """SIGHUP applies a new tenant at once; an unchanged tenant is not polled or signed in again."""
    config = write_config(sim, tmp_path)
    proc = exporter_on(config, tmp_path)
    try:
        proc.wait_ready()
        tokens_before, api_before = sim.count("token"), sim.count("api")
        raw = yaml.safe_load(config.read_text())
        raw["tenants"].append(seeded_tenant(sim, tmp_path, "fabrikam", FABRIKAM_ID))
        config.write_text(yaml.safe_dump(raw))
        proc.proc.send_signal(signal.SIGHUP)
        added = 'partnercenter_exporter_poll_success{collector="dap_statistics",tenant="fabrikam"} 1.0'
        wait_for(lambda: added in scrape(proc), 10, "the added tenant's first poll")
        body = scrape(proc)
        requests = 'partnercenter_exporter_api_requests_total{code="200",collector="dap_statistics",'
        assert requests + 'tenant="contoso"} 1.0' in body
        assert (sim.count("token"), sim.count("api")) == (tokens_before + 1, api_before + 1)
        assert "config reloaded" in proc.log
    finally:
        proc.kill()


def test_sighup_with_a_bad_config_keeps_the_running_one(sim: Simulator, tmp_path: Path) -> None:
    """A bad config on SIGHUP is logged with its errors and sets the reload gauge to 0; the old config
    keeps serving; a fix applies and sets the gauge back to 1 with a newer success time."""
    config = write_config(sim, tmp_path)
    good = config.read_text()
    proc = exporter_on(config, tmp_path)
    try:
        proc.wait_ready()
        config.write_text(good.replace("poll_interval: 1m", "poll_interval: 10s"))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload failed" in proc.log, 10, "the reload error")
        line = next(x for x in proc.log.splitlines() if "config reload failed" in x)
        assert "level=error" in line
        assert "poll_interval: must be at least 1m" in line
        assert proc.proc.poll() is None
        labels = '{collector="dap_statistics",tenant="contoso"}'
        assert f"partnercenter_exporter_poll_success{labels} 1.0" in scrape(proc)
        assert f"partnercenter_exporter_poll_interval_seconds{labels} 60.0" in scrape(proc)
        assert 'partnercenter_exporter_config_last_reload_successful{config="config"} 0.0' in scrape(proc)
        started_at = reload_success_time(scrape(proc))
        config.write_text(good.replace("poll_interval: 1m", "poll_interval: 2m"))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: f"partnercenter_exporter_poll_interval_seconds{labels} 120.0" in scrape(proc), 10,
                 "the fixed config")
        assert 'partnercenter_exporter_config_last_reload_successful{config="config"} 1.0' in scrape(proc)
        assert reload_success_time(scrape(proc)) > started_at
    finally:
        proc.kill()


def test_sigterm_during_a_token_refresh_saves_the_rotated_token(sim: Simulator, tmp_path: Path) -> None:
    """SIGTERM while a refresh token is being redeemed exits within 5 s, with the new token cached."""
    sim.inject(Fault("token", status=None, delay=2.0))
    proc = ExporterProcess(["--config.file", str(write_config(sim, tmp_path)),
                            "--web.listen-address=127.0.0.1:0"], tmp_path / "exporter.log")
    try:
        wait_for(lambda: sim.count("discovery"), 10, "OpenID discovery")
        time.sleep(0.3)  # the token request is now in flight, held by the simulator
        started = time.monotonic()
        assert proc.stop(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
    newest = sim.refresh_token_history(TENANT_ID)[-1]
    assert cached_refresh_tokens(tmp_path / "contoso.cache.json") == [newest]
    assert newest in sim.live_refresh_tokens()


@pytest.fixture
def rotating_sim() -> Simulator:
    # Tokens that live 60 s are inside MSAL's 5-minute margin, so every poll rotates the refresh token.
    simulator = Simulator(token_lifetime=60)
    simulator.add_client(CLIENT_ID)
    simulator.add_tenant(TENANT_ID, customers=20)
    return simulator.start()


def test_sigkill_at_random_points_never_corrupts_the_token_cache(
        rotating_sim: Simulator, tmp_path: Path) -> None:
    """50 SIGKILLs while tokens rotate: the cache always parses and holds the newest usable token."""
    sim = rotating_sim
    config = str(write_config(sim, tmp_path))
    cache = tmp_path / "contoso.cache.json"
    started = time.monotonic()
    assert run_exporter("--config.file", config, "--once").returncode == 0
    full_run = time.monotonic() - started
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    lost = rotated = 0
    try:
        for i in range(KILLS):
            issued = len(sim.refresh_token_history(TENANT_ID))
            proc = subprocess.Popen(exporter_command("--config.file", config, "--once"), cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if i % 2:
                # Right after the platform rotated the token: the answer in transit, MSAL, the save.
                redeemed = sim.count("token") + 1
                wait_for(lambda p=proc, n=redeemed: sim.count("token") >= n or p.poll() is not None,  # type: ignore[misc]
                         10, "the token request", interval=0.001)
                time.sleep(rng.uniform(0, 0.03))
            else:
                time.sleep(full_run * rng.uniform(0.5, 1.05))  # anywhere, start-up mostly skipped
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            history = sim.refresh_token_history(TENANT_ID)
            rotated += len(history) > issued
            cached = cached_refresh_tokens(cache)
            assert len(cached) == 1, f"kill {i} (seed {seed}): {len(cached)} refresh tokens"
            if cached[0] != history[-1]:
                # Killed after the platform rotated the token but before the answer arrived:
                # the newest token was never used, and the one before it is what the cache keeps.
                assert cached[0] == history[-2], f"kill {i} (seed {seed}): cache holds an old token"
                assert history[-1] in sim.live_refresh_tokens()
                lost += 1
                login = run_exporter("login", "--config.file", config, "--tenant", "contoso")
                assert login.returncode == 0, login.stderr
        final = run_exporter("--config.file", config, "--once")
        assert final.returncode == 0, final.stderr
    finally:
        sim.stop()
    print(f"{KILLS} kills (seed {seed}, full run {full_run:.2f}s): {rotated} after a rotation, "
          f"{lost} of them between rotation and save")


def test_two_processes_sharing_one_cache_do_not_corrupt_it(rotating_sim: Simulator, tmp_path: Path) -> None:
    """Two exporters rotating tokens in one cache file at once leave it parseable with a live token."""
    sim = rotating_sim
    config = str(write_config(sim, tmp_path))
    cache = tmp_path / "contoso.cache.json"
    try:
        assert run_exporter("--config.file", config, "--once").returncode == 0
        for _ in range(8):
            pair = [subprocess.Popen(exporter_command("--config.file", config, "--once"), cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for _ in range(2)]
            codes = sorted(proc.wait(timeout=60) for proc in pair)
            assert codes in ([0, 0], [0, 1])  # the slower one may lose the rotation race
            cached = cached_refresh_tokens(cache)
            assert cached == [sim.refresh_token_history(TENANT_ID)[-1]]
            assert cached[0] in sim.live_refresh_tokens()
    finally:
        sim.stop()
