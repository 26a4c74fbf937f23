"""Polling at scale: round wall time for 1 to 500 tenants with 200 ms upstream latency, scrape
latency while a 100-tenant poll is in progress, and one round of a tenant with 2,000 active GDAP
relationships' access assignments."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from pathlib import Path

from bench.report import Report, Row
from bench.tools import (
    Nginx,
    TenantSpec,
    exporter,
    get,
    median_result,
    timed,
    wait_ready,
    write_config,
    wrk,
)
from exporter.app import App, build_http_client, build_sources, load_configs
from exporter.client import PAGE_SIZE
from exporter.collectors.gdap_access_assignments import BATCH_SIZE
from exporter.config.types import DEFAULT_POLL_CONCURRENCY
from exporter.simulator import Simulator
from exporter.simulator.data import customer_id, relationship

LATENCY = 0.2
ROUND_TARGET_SECONDS = 2.0  # 100 tenants at 200 ms latency, default concurrency
FIRST_ROUND_TENANTS = 500
FIRST_ROUND_TARGET_SECONDS = 10.0  # their first round: sign-in and poll
BUSY_TENANTS = 100
BUSY_P99_TARGET = 1.5  # times nginx's p99 in the same phase


@dataclasses.dataclass(frozen=True)
class Settings:
    tenant_counts: tuple[int, ...] = (1, 10, 100, 500)
    busy_rounds: int = 5
    busy_seconds: int = 2
    active_relationships: int = 2000


def poll_round(config_path: Path) -> tuple[float, float, int]:
    """Two rounds of `--once`'s poll (bounded concurrency): the first, as at start, also signs every
    tenant in (beside the polls, App.sign_in_ahead)."""
    config, _ = load_configs(str(config_path), None)
    app = App(config, config_path=str(config_path), listen_address=None)
    try:
        def first() -> object:
            app.sign_in_ahead()
            return app.poller.poll_all_once()

        _, cold = timed(first)
        snapshot, warm = timed(app.poller.poll_all_once)
        return cold, warm, sum(1 for t in snapshot.views if t.last_poll_success)
    finally:
        app.http_client.close()


def scaling(report: Report, settings: Settings, workdir: Path) -> None:
    section = (f"Poll scaling: one round, {LATENCY * 1000:.0f} ms upstream latency per request, "
               f"concurrency {DEFAULT_POLL_CONCURRENCY} (the default)")
    with Simulator(cert_dir=workdir / "certs", latency=LATENCY) as sim:
        single: float | None = None
        for count in settings.tenant_counts:
            config = write_config(sim, workdir / f"poll-{count}", [TenantSpec()] * count)
            cold, warm, ok = poll_round(config)
            single = single or warm
            goal = count == BUSY_TENANTS
            tenants = f"{count} tenant{'s' if count > 1 else ''}"
            report.add(Row(section, f"{tenants}: round with tokens cached",
                           f"{warm:.2f} s ({ok}/{count} ok)", f"1 tenant {single:.2f} s",
                           f"{warm / single:.1f}x", f"< {ROUND_TARGET_SECONDS:.0f} s" if goal else "",
                           warm < ROUND_TARGET_SECONDS and ok == count if goal else None))
            first_goal = count == FIRST_ROUND_TENANTS
            report.add(Row(section, f"{tenants}: first round (sign-in + poll)", f"{cold:.2f} s",
                           target=f"< {FIRST_ROUND_TARGET_SECONDS:.0f} s" if first_goal else "",
                           passed=cold < FIRST_ROUND_TARGET_SECONDS if first_goal else None))


def scrape_while_polling(report: Report, settings: Settings, workdir: Path) -> None:
    """wrk at 1 and 10 connections while 100 tenants are polled back to back, against nginx."""
    section = (f"Scrape latency while {BUSY_TENANTS} tenants are being polled "
               f"({LATENCY * 1000:.0f} ms latency)")
    with Simulator(cert_dir=workdir / "certs", latency=LATENCY) as sim, Nginx(workdir / "nginx") as nginx:
        config = write_config(sim, workdir / "busy", [TenantSpec()] * BUSY_TENANTS)
        # An interval shorter than a round keeps a poll in progress the whole time.
        with exporter(config, interval=0.5) as child:
            wait_ready(child.url)
            nginx.serve(get(child.url, "/metrics")[1], get(child.url, "/metrics", gzipped=True)[1])
            for gzipped, connections in ((False, 1), (True, 1), (False, 10), (True, 10)):
                nginx_runs, our_runs = [], []
                polls, busy_time = 0, 0.0
                for _ in range(settings.busy_rounds):
                    nginx_runs.append(wrk(nginx.url + ("/metrics.gz" if gzipped else "/metrics"),
                                          connections=connections, seconds=settings.busy_seconds,
                                          gzipped=gzipped))
                    started, polls_before = time.monotonic(), sim.count("api")
                    our_runs.append(wrk(child.url + "/metrics", connections=connections,
                                        seconds=settings.busy_seconds, gzipped=gzipped))
                    busy_time += time.monotonic() - started
                    polls += sim.count("api") - polls_before
                base, ours = median_result(nginx_runs), median_result(our_runs)
                ratio = ours.p99_ms / base.p99_ms
                report.add(Row(section, f"{'gzip' if gzipped else 'identity'}, {connections} conn: p50 / p99",
                               f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f} ms "
                               f"({ours.requests_per_second:,.0f} req/s, {polls / busy_time:.0f} polls/s "
                               f"alongside)",
                               f"nginx {base.p50_ms:.2f} / {base.p99_ms:.2f} ms", f"p99 {ratio:.1f}x nginx",
                               f"p99 <= {BUSY_P99_TARGET}x nginx", ratio <= BUSY_P99_TARGET))


# Parsing 2,000 assignments and the simulator's own work, on top of one latency per request.
ACCESS_HEADROOM = 1.4


def access_assignments_round(report: Report, settings: Settings, workdir: Path) -> None:
    """One poll of gdap_access_assignments for a tenant whose relationships are all active, each with
    one active assignment, against the relationship list alone (gdap_relationships) as the baseline.

    The target: the list's pages plus one $batch POST per 20 relationships, sent one after the other
    (Graph throttles per partner, so a tenant's batches do not race each other), each costing at
    least one upstream latency: 107 requests and 21.4 s for 2,000 at 200 ms, with 40% headroom.
    """
    count = settings.active_relationships
    section = (f"GDAP access assignments: one tenant, {count:,} active relationships, "
               f"{LATENCY * 1000:.0f} ms upstream latency per request")
    with Simulator(cert_dir=workdir / "certs", latency=LATENCY) as sim:
        config_path = write_config(sim, workdir / "access", [TenantSpec(
            customers=1, collectors=("gdap_relationships", "gdap_access_assignments"))])
        [tenant] = sim.tenants.values()
        now = dt.datetime.now(dt.UTC)
        tenant.relationships = [relationship(customer_id("bench", i), f"Customer {i}", now=now, name=f"r{i}")
                                for i in range(count)]
        config, _ = load_configs(str(config_path), None)
        http = build_http_client(config)
        try:
            listing, access = build_sources(config.tenants[0], config, http)
            listing.fetch()  # signs in: the rounds below measure polls only
            _, list_seconds = timed(listing.fetch)
            data, seconds = timed(access.fetch)
        finally:
            http.close()
    requests = sum(access.requests_by_code.values())
    pages = math.ceil(count / PAGE_SIZE)
    floor = pages + math.ceil(count / BATCH_SIZE)
    limit = floor * LATENCY * ACCESS_HEADROOM
    assigned = sum(len(a) for a in data.assignments.values())
    report.add(Row(section, "requests in one round (list pages + $batch POSTs)", f"{requests:,}",
                   f"{count + pages:,} without batching", f"{requests / (count + pages):.2f}x",
                   f"<= {floor}", requests <= floor and assigned == count))
    report.add(Row(section, "one round", f"{seconds:.1f} s ({assigned:,} assignments)",
                   f"list alone {list_seconds:.1f} s", f"{seconds / list_seconds:.0f}x", f"< {limit:.1f} s",
                   seconds < limit and assigned == count))
