"""Scale-out end to end: two exporters with different tenants behind one Prometheus, and a store behind it.

The topology of docs/deployment.md with real processes: exporter A polls contoso, exporter B polls
fabrikam and northwind, all against one simulator. The edge Prometheus runs
deploy/prometheus/remote-write.yml (both exporters as one job, our rules) and remote-writes to a
receiving Prometheus; a central Prometheus federates from the edge with
deploy/prometheus/federation.yml. Intervals are cut to 1s; nothing else in those files changes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.grafana import (
    PanelQuery,
    PrometheusAPI,
    QueryContext,
    dashboard_range,
    load_dashboards,
    panel_queries,
    run_query,
)
from exporter.simulator import Simulator
from tests.conftest import CLIENT_ID, free_port, require_binary
from tests.helpers.e2e import (
    ALL_COLLECTORS,
    ROOT,
    ExporterProcess,
    alert_rules_with_short_for,
    inactive_over_90,
    queries_without_data,
    seeded_tenant,
    start_service,
    wait_for,
)
from tests.helpers.samples import rules

pytestmark = pytest.mark.e2e

SNIPPETS = ROOT / "deploy" / "prometheus"
TENANTS = {"contoso": "00000000-0000-0000-0000-00000000c001",
           "fabrikam": "00000000-0000-0000-0000-00000000c002",
           "northwind": "00000000-0000-0000-0000-00000000c003"}
SPLIT = {"a": ["contoso"], "b": ["fabrikam", "northwind"]}
CUSTOMERS = {"contoso": 180, "fabrikam": 120, "northwind": 60}
SCRAPE_INTERVAL = 1.0
# Queries whose values depend only on the polled data, not on when they are evaluated.
TIME_DEPENDENT = ("time()", "rate(", "increase(", "poll_duration", "build_info")


@dataclass
class Fleet:
    sim: Simulator
    exporters: dict[str, ExporterProcess]
    servers: dict[str, PrometheusAPI]

    def instance(self, exporter: str) -> str:
        return self.exporters[exporter].url.removeprefix("http://")


def exporter_config(sim: Simulator, directory: Path, tenants: list[str]) -> Path:
    directory.mkdir()
    config = {"poll_interval": "1m", "request_timeout": "5s",
              "endpoints": sim.endpoints_config(),
              "tenants": [seeded_tenant(sim, directory, name, TENANTS[name], customers=CUSTOMERS[name],
                                       collectors=ALL_COLLECTORS)
                          for name in tenants]}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def edge_config(path: Path, targets: list[str], receiver_url: str, alert_rules: Path) -> Path:
    """deploy/prometheus/remote-write.yml pointed at the test's exporters and receiver, at 1s intervals."""
    config = yaml.safe_load((SNIPPETS / "remote-write.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ROOT / "prometheus" / "recording_rules.yml"), str(alert_rules)]
    del config["alerting"]
    [job] = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": targets}]
    [remote] = config["remote_write"]
    remote["url"] = receiver_url
    remote["queue_config"] = {"batch_send_deadline": "1s"}
    path.write_text(yaml.safe_dump(config))
    return path


def federation_config(path: Path, edge: str) -> Path:
    """deploy/prometheus/federation.yml pointed at the test's edge Prometheus, at 1s intervals."""
    config = yaml.safe_load((SNIPPETS / "federation.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    [job] = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [edge]}]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    prometheus = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("scaleout")
    processes: list[subprocess.Popen[bytes]] = []
    exporters: dict[str, ExporterProcess] = {}

    def start_prometheus(name: str, config: Path, *flags: str) -> PrometheusAPI:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes.append(start_service(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / (name + '-data')}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *flags],
            tmp / f"{name}.log", url + "/-/ready", f"prometheus {name}"))
        return PrometheusAPI(url)

    with Simulator() as sim:
        sim.add_client(CLIENT_ID)
        try:
            for name, tenants in SPLIT.items():
                exporters[name] = ExporterProcess(
                    ["--config.file", str(exporter_config(sim, tmp / name, tenants)),
                     "--web.listen-address=127.0.0.1:0"], tmp / f"exporter-{name}.log")
            for exporter in exporters.values():
                exporter.wait_ready()
            (tmp / "receiver.yml").write_text("global: {}\n")
            receiver = start_prometheus("receiver", tmp / "receiver.yml",
                                        "--web.enable-remote-write-receiver")
            edge = start_prometheus("edge", edge_config(
                tmp / "edge.yml", [e.url.removeprefix("http://") for e in exporters.values()],
                receiver.url + "/api/v1/write",
                alert_rules_with_short_for(tmp / "alert_rules.yml", ["PartnerCenterExporterDown"])))
            central = start_prometheus("central", federation_config(tmp / "central.yml",
                                                                     edge.url.removeprefix("http://")))
            yield Fleet(sim, exporters, {"edge": edge, "remote_write": receiver, "federation": central})
        finally:
            # Last started first, so the edge can flush its remote-write queue to a live receiver.
            for proc in reversed(processes):
                proc.terminate()
                proc.wait(timeout=15)
            for exporter in exporters.values():
                exporter.kill()


def by_tenant(samples: list[dict[str, Any]]) -> dict[str, float]:
    return {s["metric"]["tenant"]: float(s["value"][1]) for s in samples}


def context(dashboard: dict[str, Any], tenants: list[str]) -> QueryContext:
    return QueryContext({"tenant": tenants}, dashboard_range(dashboard), SCRAPE_INTERVAL)


def last_values(result: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], str]:
    """Each series' latest value, keyed by its labels without the sender's external label."""
    values = {}
    for series in result:
        labels = frozenset((k, v) for k, v in series["metric"].items() if k != "prometheus")
        values[labels] = series["value"][1] if "value" in series else series["values"][-1][1]
    return values


@pytest.mark.parametrize("server", ["edge", "remote_write", "federation"])
def test_each_tenant_comes_from_its_own_exporter(fleet: Fleet, server: str) -> None:
    """Each tenant has one DAP customers series, from the exporter polling it, with the simulator's count."""
    api = fleet.servers[server]
    expected = {t: float(len(fleet.sim.tenants[TENANTS[t]].customers)) for t in TENANTS}
    wait_for(lambda: by_tenant(api.instant("partnercenter_dap_customers")) == expected, 30,
             f"all tenants' customer counts on {server}")
    samples = api.instant("partnercenter_dap_customers")
    owners = {s["metric"]["tenant"]: s["metric"]["instance"] for s in samples}
    assert owners == {t: fleet.instance(name) for name, tenants in SPLIT.items() for t in tenants}
    assert {s["metric"]["job"] for s in api.instant("partnercenter_dap_customers")} == {"partnercenter"}


@pytest.mark.parametrize("server", ["edge", "remote_write", "federation"])
def test_every_dashboard_query_returns_data_for_each_tenant(fleet: Fleet, server: str) -> None:
    """On each server, every panel query of both dashboards returns data for each tenant on its own."""
    dashboards = load_dashboards()
    empty = queries_without_data(fleet.servers[server], dashboards, [[t] for t in TENANTS], SCRAPE_INTERVAL)
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_per_tenant_stats_match_the_simulator(fleet: Fleet) -> None:
    """The DAP customers and inactive-over-90 stats, per tenant and in total, match the simulator."""
    dashboard = load_dashboards()["partnercenter-dap-overview.json"]
    stats = {q.panel: q for q in panel_queries({"d": dashboard}) if q.panel_type == "stat"}

    def stat(title: str, tenants: list[str]) -> float:
        [sample] = run_query(fleet.servers["edge"], stats[title], context(dashboard, tenants))
        return float(sample["value"][1])

    for tenants in [[t] for t in TENANTS] + [sorted(TENANTS)]:
        customers = sum(len(fleet.sim.tenants[TENANTS[t]].customers) for t in tenants)
        inactive = sum(inactive_over_90(fleet.sim, TENANTS[t]) for t in tenants)
        def shown(ts: list[str] = tenants, c: int = customers) -> bool:
            return stat("DAP customers", ts) == c
        wait_for(shown, 20, f"customers of {tenants}")
        assert stat("Inactive over 90 days", tenants) == inactive
    assert sum(inactive_over_90(fleet.sim, t) for t in TENANTS.values()) > 0


def test_stores_serve_the_same_dap_values_as_the_edge(fleet: Fleet) -> None:
    """Each data panel of the overview shows the same series and values from both stores as from the edge."""
    dashboard = load_dashboards()["partnercenter-dap-overview.json"]
    queries = [q for q in panel_queries({"d": dashboard}) if not any(m in q.expr for m in TIME_DEPENDENT)]
    assert len(queries) >= 8
    ctx = context(dashboard, sorted(TENANTS))
    for query in queries:
        instant = PanelQuery(query.dashboard, query.panel, query.panel_type, query.ref, query.expr, True)
        edge = last_values(run_query(fleet.servers["edge"], instant, ctx))
        assert edge, query.expr
        for server in ("remote_write", "federation"):
            def same(s: str = server, q: PanelQuery = instant, e: Any = edge) -> bool:
                return bool(last_values(run_query(fleet.servers[s], q, ctx)) == e)
            wait_for(same, 20, f"{server} to match the edge for {query.panel}: {query.expr}")


def test_recording_rules_keep_each_exporters_tenants(fleet: Fleet) -> None:
    """Each recorded series exists per tenant, from that tenant's exporter, on the edge and both stores."""
    records = [rule["record"] for rule in rules("record")]
    owners = {t: fleet.instance(name) for name, tenants in SPLIT.items() for t in tenants}
    for server, api in fleet.servers.items():
        for record in records:
            def tenants_to_instances(r: str = record, a: PrometheusAPI = api) -> dict[str, str]:
                return {s["metric"]["tenant"]: s["metric"]["instance"] for s in a.instant(r)}
            def owned(f: Any = tenants_to_instances) -> bool:
                return bool(f() == owners)
            wait_for(owned, 20, f"{record} per tenant on {server}")


def test_stopping_one_exporter_fires_exporter_down_for_it_only(fleet: Fleet) -> None:
    """With exporter B stopped, PartnerCenterExporterDown fires for B alone, and A's tenant stays."""
    fleet.exporters["b"].stop()
    edge = fleet.servers["edge"]

    def firing() -> set[str]:
        return {s["metric"]["instance"] for s in
                edge.instant('ALERTS{alertname="PartnerCenterExporterDown",alertstate="firing"}')}

    wait_for(lambda: firing() == {fleet.instance("b")}, 30, "ExporterDown for exporter b")
    up = {s["metric"]["instance"]: s["value"][1] for s in edge.instant('up{job="partnercenter"}')}
    assert up == {fleet.instance("a"): "1", fleet.instance("b"): "0"}
    assert set(by_tenant(edge.instant("partnercenter_dap_customers"))) == set(SPLIT["a"])
