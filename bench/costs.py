"""What data costs: parse and render time per tenant for large payloads, and the process's RSS."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gzip
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.report import Report, Row
from bench.tools import (
    Served,
    TenantSpec,
    exporter,
    get,
    rss_mib,
    wait_ready,
    wakeups,
    write_config,
    wrk,
)
from exporter.collectors import dap_statistics
from exporter.exposition import Renderer, gzip_end, gzip_pieces, reference_render, segments
from exporter.model import Snapshot, SourceView
from exporter.simulator import Simulator
from exporter.simulator.data import spread_customers, statistics_payload

PARSE_RENDER_TARGET_MS = 150.0  # 10,000 dates, one tenant
RSS_ONE_TENANT_TARGET = 38.0  # a refresh_token config; the others have no target of their own
IDLE_TENANTS = 3
IDLE_WAKEUPS_TARGET = 1.0  # per second, with no scrapes and no poll due
IDLE_SECONDS = 10.0
CERT_APP = "22222222-2222-2222-2222-222222222222"
VAULT_APP = "33333333-3333-3333-3333-333333333333"
RSS_LARGE_TARGET = 120.0
MEMORY = "Memory (RSS of the exporter process)"
# Clients that never read cost at most about 64 KiB of unsent output each, plus one answer.
STALLED_GROWTH_TARGET = 64.0
THRESHOLDS = (30, 60, 90)


@dataclasses.dataclass(frozen=True)
class Settings:
    date_counts: tuple[int, ...] = (1, 1000, 10_000)
    repeats: int = 5
    large_tenants: int = 100
    large_dates: int = 1000
    large_rounds: int = 3
    scrape_seconds: int = 3


def _median_ms(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def payload_costs(report: Report, settings: Settings) -> None:
    section = "Cost of a large payload, per tenant (medians; date cache cleared: the first poll's cost)"
    today = dt.datetime.now(dt.UTC).date()
    for count in settings.date_counts:
        raw = json.dumps(statistics_payload("t", spread_customers(count, today), "https://x")).encode()

        def parse(raw: bytes = raw) -> object:
            dap_statistics.parse_date_cached.cache_clear()
            return dap_statistics.parse_statistics(json.loads(raw), today)

        stats = dap_statistics.parse_statistics(json.loads(raw), today)
        snapshot = Snapshot((SourceView("t", "dap_statistics", data=stats, attempted=True,
                                        last_poll_success=True, last_success_time=time.time(),
                                        last_duration=0.2),))

        def render(snapshot: Snapshot = snapshot) -> object:
            pieces = Renderer().render(snapshot, today=today, thresholds=THRESHOLDS, poll_interval=300)
            head, compressor = gzip_pieces(pieces)
            return segments(pieces), head + gzip_end(compressor)

        def reference(snapshot: Snapshot = snapshot) -> object:
            body = reference_render(snapshot, today=today, thresholds=THRESHOLDS, poll_interval=300)
            return gzip.compress(body, compresslevel=6, mtime=0)

        def decode(raw: bytes = raw) -> object:
            return json.loads(raw)

        json_ms = _median_ms(decode, settings.repeats)
        parse_ms = _median_ms(parse, settings.repeats)
        render_ms = _median_ms(render, settings.repeats)
        reference_ms = _median_ms(reference, settings.repeats)
        label = f"{count:,} dates ({len(raw) / 1024:,.0f} KiB JSON)"
        report.add(Row(section, f"{label}: parse", f"{parse_ms:.1f} ms", f"json.loads {json_ms:.1f} ms",
                       f"{parse_ms / json_ms:.1f}x json.loads"))
        report.add(Row(section, f"{label}: render + gzip", f"{render_ms:.1f} ms",
                       f"prometheus_client {reference_ms:.1f} ms",
                       f"{reference_ms / render_ms:.1f}x faster"))
        goal = count == 10_000
        total = parse_ms + render_ms
        report.add(Row(section, f"{label}: parse + render", f"{total:.1f} ms", "", "",
                       f"< {PARSE_RENDER_TARGET_MS:.0f} ms" if goal else "",
                       total < PARSE_RENDER_TARGET_MS if goal else None))


def _bare_python_rss() -> float:
    code = ("import re; print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout) / 1024


def _with_certificate(sim: Simulator, directory: Path) -> Path:
    """One refresh_token tenant whose app proves itself with a client certificate."""
    from exporter.simulator.assertions import write_client_certificate

    path = write_config(sim, directory, [TenantSpec()])
    document = yaml.safe_load(path.read_text())
    sim.add_client(CERT_APP)
    sim.register_certificate(CERT_APP, write_client_certificate(directory / "app.pem"))
    (directory / "app.pem").chmod(0o600)
    tenant = document["tenants"][0]
    seed = Path(tenant["auth"]["refresh_token_file"])
    seed.write_text(sim.issue_refresh_token(tenant["tenant_id"], CERT_APP, "admin@cert.test"))
    tenant["client_id"] = CERT_APP
    tenant["auth"]["client_certificate_file"] = str(directory / "app.pem")
    path.write_text(yaml.safe_dump(document))
    return path


def _with_vault(sim: Simulator, directory: Path) -> Path:
    """One refresh_token tenant whose token cache is a Key Vault secret (the vault app: a secret)."""
    path = write_config(sim, directory, [TenantSpec()])
    document = yaml.safe_load(path.read_text())
    sim.add_client(VAULT_APP, secret="vault-app-secret")  # noqa: S106 -- the simulator's app
    sim.keyvault.grant(VAULT_APP)
    secret = directory / "vault-app-secret"
    secret.write_text("vault-app-secret")
    secret.chmod(0o600)
    tenant = document["tenants"][0]
    del tenant["auth"]["token_cache_file"]
    tenant["auth"]["token_store"] = {"azure_key_vault": {
        "vault_url": sim.vault_url, "secret_name": "pcx-bench", "tenant_id": tenant["tenant_id"],
        "client_id": VAULT_APP, "client_secret_file": str(secret)}}
    path.write_text(yaml.safe_dump(document))
    return path


def configurations(report: Report, workdir: Path, bare: str) -> None:
    """RSS of `partnercenter-exporter` itself (its real import set) after its first poll, by what
    the config uses; and its wake-ups per second while idle."""
    section = MEMORY
    with Simulator(cert_dir=workdir / "certs") as sim:
        configs = {"refresh token": write_config(sim, workdir / "refresh-token", [TenantSpec()]),
                   "refresh token, app with a client certificate": _with_certificate(sim, workdir / "cert"),
                   "refresh token, token cache in Key Vault": _with_vault(sim, workdir / "vault")}
        for label, config in configs.items():
            with Served(config) as served:
                time.sleep(1.0)
                rss = rss_mib(served.pid)
            goal = label == "refresh token"
            report.add(Row(section, f"1 tenant, {label}: after start and first poll", f"{rss:.1f} MiB", bare,
                           target=f"<= {RSS_ONE_TENANT_TARGET:.0f} MiB" if goal else "",
                           passed=rss <= RSS_ONE_TENANT_TARGET if goal else None))
        idle = write_config(sim, workdir / "idle", [TenantSpec()] * IDLE_TENANTS)
        with Served(idle) as served:
            time.sleep(1.0)
            before = wakeups(served.pid)
            time.sleep(IDLE_SECONDS)
            rate = (wakeups(served.pid) - before) / IDLE_SECONDS
        report.add(Row(section, f"{IDLE_TENANTS} tenants, idle (no scrape, no poll due): wake-ups",
                       f"{rate:.1f} per second", target=f"<= {IDLE_WAKEUPS_TARGET:.0f} per second",
                       passed=rate <= IDLE_WAKEUPS_TARGET))


def memory(report: Report, settings: Settings, workdir: Path) -> None:
    section = MEMORY
    bare = f"bare python {_bare_python_rss():.1f} MiB"
    configurations(report, workdir / "configurations", bare)
    with Simulator(cert_dir=workdir / "certs") as sim:
        config = write_config(sim, workdir / "one", [TenantSpec()])
        with exporter(config, interval=3600.0) as child:
            wait_ready(child.url)
            time.sleep(1.0)
            rss = rss_mib(child.pid)
            stalled = peak_rss_during(child.pid, lambda: non_reading_clients(child.url, 300, 200))
        report.add(Row(section, "1 tenant, 300 clients pipelining 200 scrapes each and reading none",
                       f"+{stalled - rss:.1f} MiB", f"{rss:.1f} MiB before", "",
                       f"< +{STALLED_GROWTH_TARGET:.0f} MiB", stalled - rss < STALLED_GROWTH_TARGET))
        tenants, dates = settings.large_tenants, settings.large_dates
        config = write_config(sim, workdir / "large", [TenantSpec(dates=dates)] * tenants,
                              request_timeout="20s")
        with exporter(config, interval=2.0) as child:
            wait_ready(child.url)
            polls_at_start = sim.count("api")
            peak = rss_mib(child.pid)
            while sim.count("api") < polls_at_start + tenants * settings.large_rounds:
                peak = max(peak, rss_mib(child.pid))
                time.sleep(0.05)
            rss = rss_mib(child.pid)
            peak = max(peak, rss)
            size = len(get(child.url, "/metrics")[1])
            scraping = peak_rss_during(child.pid, lambda: wrk(child.url + "/metrics", connections=10,
                                                             seconds=settings.scrape_seconds))
        label = f"{tenants} tenants x {dates:,} dates ({tenants * dates * 2:,} date series)"
        report.add(Row(section, f"{label}, {settings.large_rounds} rounds after the first",
                       f"{rss:.1f} MiB (peak {peak:.1f})", bare, "", f"< {RSS_LARGE_TARGET:.0f} MiB",
                       peak < RSS_LARGE_TARGET))
        report.add(Row(section, f"same, while 10 connections scrape its {size / 2**20:.1f} MiB body",
                       f"peak {scraping:.1f} MiB", f"{rss:.1f} MiB before", "",
                       f"< {RSS_LARGE_TARGET:.0f} MiB", scraping < RSS_LARGE_TARGET))


def non_reading_clients(url: str, count: int, requests: int, seconds: float = 3.0) -> None:
    """`count` connections, each sending `requests` pipelined scrapes and reading no answer, held
    open for `seconds`: what a careless or hostile client costs (the exporter drops them later)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    payload = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * requests
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            socks.append(sock)
        deadline = time.monotonic() + seconds
        sent = [0] * count
        while time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                if sent[i] < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent[i] += sock.send(payload[sent[i]:])
            time.sleep(0.01)
    finally:
        for sock in socks:
            sock.close()


def peak_rss_during(pid: int, work: Callable[[], object]) -> float:
    """The highest RSS of `pid`, sampled every 20 ms while `work` runs in this thread."""
    peak = [rss_mib(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return peak[0]
