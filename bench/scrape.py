"""Scrape speed: /metrics against nginx serving the byte-identical body, and the naive peer."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

from bench.report import Report, Row
from bench.tools import (
    NEW_HEAD_EACH_REQUEST,
    Child,
    Nginx,
    TenantSpec,
    WrkResult,
    exporter,
    get,
    median_result,
    series_count,
    wait_ready,
    write_config,
    wrk,
)
from exporter.simulator import Simulator

# Per tenant the exporter writes 2 series per date plus 27 fixed ones; plus build_info.
SIZES = {"~200 series": [TenantSpec(dates=86)], "~5,000 series": [TenantSpec(dates=236)] * 10}
LARGE = "~5,000 series"
THROUGHPUT_TARGETS = {1: 0.80, 10: 0.60}  # of nginx, at 5,000 series
# One Python process against one nginx worker, gzip at 10 connections: the like-for-like figure.
ONE_WORKER_TARGET = 0.90
P99_TARGET = 3.0  # times nginx's p99, at 1 connection
NAIVE_TARGET = 50.0  # times the naive peer's throughput, at 5,000 series


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int = 7
    seconds: int = 2
    naive_seconds: int = 4


def compare(report: Report, section: str, label: str, ours_url: str, nginx: Nginx, *,
            connections: int, gzipped: bool, settings: Settings, targets: bool,
            script: Path | None = None, throughput_goal: float | None = None) -> WrkResult:
    """Alternate runs against nginx and the exporter; report medians and their ratios."""
    nginx_path = "/metrics.gz" if gzipped else "/metrics"
    for url in (nginx.url + nginx_path, ours_url + "/metrics"):  # warm-up runs, not counted
        wrk(url, connections=connections, seconds=1, gzipped=gzipped, script=script)
    nginx_runs, our_runs = [], []
    for _ in range(settings.rounds):
        nginx_runs.append(wrk(nginx.url + nginx_path, connections=connections, seconds=settings.seconds,
                              gzipped=gzipped, script=script))
        our_runs.append(wrk(ours_url + "/metrics", connections=connections, seconds=settings.seconds,
                            gzipped=gzipped, script=script))
    base, ours = median_result(nginx_runs), median_result(our_runs)
    share = ours.requests_per_second / base.requests_per_second  # shown floored: 59.9% is a MISS
    goal = throughput_goal or (THROUGHPUT_TARGETS.get(connections) if targets else None)
    errors = f", {ours.errors} errors" if ours.errors else ""
    report.add(Row(section, f"{label}, {connections} conn: throughput",
                   f"{ours.requests_per_second:,.0f} req/s{errors}",
                   f"nginx {base.requests_per_second:,.0f} req/s", f"{math.floor(share * 100)}% of nginx",
                   f">= {goal:.0%}" if goal else "", share >= goal if goal else None))
    p99_ratio = ours.p99_ms / base.p99_ms if base.p99_ms else float("inf")
    p99_goal = connections == 1 and targets
    report.add(Row(section, f"{label}, {connections} conn: p50 / p99",
                   f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f} ms",
                   f"nginx {base.p50_ms:.2f} / {base.p99_ms:.2f} ms", f"p99 {p99_ratio:.1f}x nginx",
                   f"p99 < {P99_TARGET:.0f}x nginx" if p99_goal else "",
                   p99_ratio < P99_TARGET if p99_goal else None))
    if ours.errors or base.errors:
        raise RuntimeError(f"{label}: wrk saw errors (ours {ours.errors}, nginx {base.errors})")
    return ours


def run(report: Report, settings: Settings, workdir: Path) -> None:
    section = "Scrape throughput and latency (wrk, keep-alive, medians of alternating runs)"
    with Simulator(cert_dir=workdir / "certs") as sim, Nginx(workdir / "nginx") as nginx:
        large_ours: dict[tuple[int, bool], WrkResult] = {}
        large_config: Path | None = None
        for size, tenants in SIZES.items():
            config = write_config(sim, workdir / size.strip("~").replace(",", "").replace(" ", "-"),
                                  tenants)
            with exporter(config, interval=3600.0) as child:
                wait_ready(child.url)
                body = get(child.url, "/metrics")[1]
                gzip_body = get(child.url, "/metrics", gzipped=True)[1]
                nginx.serve(body, gzip_body)
                report.add(Row(section, f"{size}: body", f"{series_count(body):,} series, "
                               f"{len(body) / 1024:,.0f} KiB, gzip {len(gzip_body) / 1024:,.0f} KiB"))
                for gzipped in (False, True):
                    for connections in (1, 10):
                        label = f"{size}, {'gzip' if gzipped else 'identity'}"
                        result = compare(report, section, label, child.url, nginx,
                                         connections=connections, gzipped=gzipped, settings=settings,
                                         targets=size == LARGE)
                        if size == LARGE:
                            large_ours[(connections, gzipped)] = result
                if size == LARGE:
                    with Nginx(workdir / "nginx-one-worker", workers=1) as single:
                        single.serve(body, gzip_body)
                        compare(report, section, f"{size}, gzip, against one nginx worker", child.url,
                                single, connections=10, gzipped=True, settings=settings, targets=False,
                                throughput_goal=ONE_WORKER_TARGET)
                if size != LARGE:
                    # A new request head on every request defeats the cache of parsed heads: what
                    # the request parser itself costs.
                    script = workdir / "new-head-each-request.lua"
                    script.write_text(NEW_HEAD_EACH_REQUEST)
                    compare(report, section, f"{size}, identity, a new request head each request",
                            child.url, nginx, connections=1, gzipped=False, settings=settings,
                            targets=False, script=script)
            if size == LARGE:
                large_config = config
        assert large_config is not None
        naive(report, large_config, large_ours, settings)


def naive(report: Report, config: Path, ours: dict[tuple[int, bool], WrkResult],
          settings: Settings) -> None:
    """The same data through prometheus_client's server and a per-scrape collector."""
    section = "Naive prometheus_client peer (builds and renders families on every scrape)"
    with Child("bench.child", "naive", str(config)) as peer:
        for connections, gzipped in ((1, False), (10, False), (10, True)):
            result = wrk(peer.url + "/metrics", connections=connections, seconds=settings.naive_seconds,
                         gzipped=gzipped)
            mine = ours[(connections, gzipped)]
            if result.requests:
                naive_rps = result.requests / settings.naive_seconds
                factor = mine.requests_per_second / naive_rps
                seen = f"naive {naive_rps:,.1f} req/s, p50 {result.p50_ms:.1f} ms"
                ratio = f"{factor:,.0f}x naive"
            else:  # not one answer within the run: all we know is an upper bound
                factor = mine.requests_per_second * settings.naive_seconds
                seen = f"naive: no answer within {settings.naive_seconds} s"
                ratio = f"> {factor:,.0f}x naive"
            report.add(Row(section, f"{LARGE}, {'gzip' if gzipped else 'identity'}, {connections} conn",
                           f"ours {mine.requests_per_second:,.0f} req/s, p50 {mine.p50_ms:.2f} ms", seen,
                           ratio, f">= {NAIVE_TARGET:.0f}x", factor >= NAIVE_TARGET))


def main() -> None:
    report = Report()
    with tempfile.TemporaryDirectory(prefix="pcx-bench-") as tmp:
        run(report, Settings(rounds=1, seconds=1, naive_seconds=2), Path(tmp))
    print(report.table())


if __name__ == "__main__":
    main()
