"""Processes the benchmarks measure; each prints its URL, then serves until stdin closes.

    python -m bench.child exporter CONFIG INTERVAL   the exporter pipeline (App, as `serve`
                                                     runs it), polling every INTERVAL seconds
    python -m bench.child naive CONFIG               the naive peer: prometheus_client's own
                                                     server and a collector that builds and
                                                     renders the families on every scrape
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric

from exporter.app import App, build_http_client, build_poller, build_sources, load_configs
from exporter.cli import tune_process
from exporter.exposition import Publisher, metric_families
from exporter.logs import setup_logging
from exporter.model import Snapshot, utc_date


def serve_exporter(config_path: str, interval: float) -> None:
    config, _ = load_configs(config_path, None)
    # The config's 1m minimum interval is for Partner Center's sake; the simulator needs none.
    app = App(dataclasses.replace(config, poll_interval=interval), config_path=config_path,
              listen_address="127.0.0.1:0", retry_initial=0.05)
    app.start()
    tune_process()  # as the entry point does: without it the figures are not what users run
    print(app.server.url, flush=True)
    sys.stdin.read()
    app.stop()


class NaiveCollector:
    """What most Python exporters do: build every family from cached data on each scrape."""

    def __init__(self, snapshot: Snapshot, thresholds: tuple[int, ...], interval: float) -> None:
        self._snapshot = snapshot
        self._thresholds = thresholds
        self._interval = interval

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._snapshot, today=utc_date(time.time()),
                                   thresholds=self._thresholds, poll_interval=self._interval)

    def describe(self) -> list[Metric]:
        return []


def serve_naive(config_path: str) -> None:
    """Poll once with the exporter's own code, then serve that data the naive way."""
    config, _ = load_configs(config_path, None)
    http = build_http_client(config)
    sources = [s for tenant in config.tenants for s in build_sources(tenant, config, http)]
    publisher = Publisher(config.inactive_thresholds_days, poll_interval=config.poll_interval)
    snapshot = build_poller(config, sources, publisher).poll_all_once()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NaiveCollector(snapshot, config.inactive_thresholds_days,
                                     config.poll_interval))
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()
    http.close()


def main() -> None:
    setup_logging("error")
    kind, config_path, *rest = sys.argv[1:]
    if kind == "exporter":
        serve_exporter(config_path, float(rest[0]))
    elif kind == "naive":
        serve_naive(config_path)
    else:
        raise SystemExit(f"unknown child {kind!r}")


if __name__ == "__main__":
    main()
