"""All five collectors in a real exporter process against the simulator over HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import Fault, Simulator
from tests.conftest import CLIENT_ID
from tests.helpers.e2e import ALL_COLLECTORS, ExporterProcess, http_get

pytestmark = pytest.mark.e2e

CONTOSO = "6f1b2c3d-4e5f-4a7b-8c9d-0e1f2a3b4c5d"
FABRIKAM = "7a2b3c4d-5e6f-4b8c-9d0e-1f2a3b4c5d6e"
GRAPH_CLIENT_ID = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
GRAPH_SECRET = "graph-app-secret-value-e2e"
ALL = ALL_COLLECTORS

Samples = list[tuple[str, dict[str, str], float]]


class Stack:
    def __init__(self, sim: Simulator, exporter: ExporterProcess) -> None:
        self.sim = sim
        self.exporter = exporter

    def scrape(self) -> Samples:
        status, body = http_get(self.exporter.url + "/metrics")
        assert status == 200
        self.body = body.decode()
        return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(self.body)
                for s in family.samples]

    def values(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(ls, v) for n, ls, v in self.scrape()
                if n == name and all(ls.get(k) == want for k, want in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.values(name, **labels)
        assert len(found) <= 1, found
        return found[0][1] if found else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("gdap")
    # Every third Graph request is throttled, so the throttling path runs in every poll.
    with Simulator(graph_throttle_every=3) as sim:
        sim.add_client(CLIENT_ID)
        sim.add_client(GRAPH_CLIENT_ID, GRAPH_SECRET)
        tenants = []
        for name, tenant_id in (("contoso", CONTOSO), ("fabrikam", FABRIKAM)):
            sim.add_tenant(tenant_id, customers=400 if name == "contoso" else 150)
            seed = directory / f"{name}.seed"
            seed.write_text(sim.issue_refresh_token(tenant_id, CLIENT_ID, f"admin@{name}.test"))
            tenants.append({"name": name, "tenant_id": tenant_id, "client_id": CLIENT_ID,
                            "collectors": ALL,
                            "auth": {"token_cache_file": str(directory / f"{name}.cache.json"),
                                     "refresh_token_file": str(seed)}})
        secret = directory / "graph.secret"
        secret.write_text(GRAPH_SECRET)
        tenants[1]["graph_auth"] = {"client_id": GRAPH_CLIENT_ID, "client_secret_file": str(secret)}
        config = directory / "config.yaml"
        config.write_text(yaml.safe_dump({"poll_interval": "1m", "request_timeout": "5s",
                                          "endpoints": sim.endpoints_config(), "tenants": tenants}))
        exporter = ExporterProcess(["--config.file", str(config), "--web.listen-address", "127.0.0.1:0",
                                    "--log.level", "debug"], directory / "exporter.log")
        try:
            exporter.wait_ready()
            yield Stack(sim, exporter)
        finally:
            exporter.stop()


def test_every_collector_of_every_tenant_polls_successfully(stack: Stack) -> None:
    """Ten sources (two tenants, five collectors) each report their own successful poll."""
    success = stack.values("partnercenter_exporter_poll_success")
    assert sorted((ls["tenant"], ls["collector"], v) for ls, v in success) == sorted(
        (t, c, 1.0) for t in ("contoso", "fabrikam") for c in ALL)


def test_customers_without_gdap_are_the_simulators(stack: Stack) -> None:
    """The count and the per-customer series name exactly the DAP customers that the simulator gave
    no active relationship with an active access assignment (expiring ones have passed their end
    date), with their names."""
    for name, tenant_id in (("contoso", CONTOSO), ("fabrikam", FABRIKAM)):
        expected = {(c.id, c.name) for c in stack.sim.tenants[tenant_id].without_gdap()}
        assert expected, "the seeded data should leave some DAP customers without GDAP"
        series = stack.values("partnercenter_dap_customer_without_gdap_info", tenant=name)
        assert {(ls["customer_tenant_id"], ls["customer_name"]) for ls, _ in series} == expected
        assert stack.value("partnercenter_dap_customers_without_gdap", tenant=name) == len(expected)
        assert stack.value("partnercenter_dap_enabled_customers", tenant=name) == len(
            stack.sim.tenants[tenant_id].customers)


def test_relationships_across_pages_are_counted_by_status(stack: Stack) -> None:
    """More than one Graph page (over 300 relationships) is read completely and counted by status."""
    relationships = stack.sim.tenants[CONTOSO].relationships
    assert len(relationships) > 300
    counts = stack.values("partnercenter_gdap_relationships", tenant="contoso")
    by_status = {ls["status"]: v for ls, v in counts}
    for status in {r.status for r in relationships}:
        assert by_status[status] == sum(1 for r in relationships if r.status == status)
    assert sum(by_status.values()) == len(relationships)


def test_end_timestamps_and_expiry_windows_match_the_simulator(stack: Stack) -> None:
    """One end timestamp per active relationship, at its endDateTime; the 7- and 30-day counts
    are those without auto-extend and not yet ended; Global Admin relationships are flagged and
    counted, and never auto-extend. Expiring relationships (past their end date) are in none of
    these."""
    relationships = [r for r in stack.sim.tenants[CONTOSO].relationships if r.grants_access]
    assert any(r.status == "expiring" for r in stack.sim.tenants[CONTOSO].relationships)
    series = stack.values("partnercenter_gdap_relationship_end_timestamp_seconds", tenant="contoso")
    assert {ls["relationship_id"]: v for ls, v in series} == pytest.approx(
        {r.id: r.end.timestamp() for r in relationships if r.end is not None})
    ga = {ls["relationship_id"] for ls, _ in series if ls["global_admin"] == "true"}
    assert ga == {r.id for r in relationships if "62e90394-69f5-4237-9190-012177145e10" in r.roles}
    assert stack.value("partnercenter_gdap_relationships_with_global_admin", tenant="contoso") == len(ga)
    polled = stack.value("partnercenter_exporter_last_success_timestamp_seconds", tenant="contoso",
                         collector="gdap_relationships")
    assert polled is not None
    for days in (7, 30):
        limit = polled + days * 86400
        expected = sum(1 for r in relationships if not r.really_auto_extends and r.end is not None
                       and polled < r.end.timestamp() <= limit)
        assert stack.value("partnercenter_gdap_relationships_expiring_without_auto_extend",
                           tenant="contoso", within_days=str(days)) == pytest.approx(expected, abs=1)


def test_graph_throttling_is_waited_out_and_counted(stack: Stack) -> None:
    """Graph's 429s show in the request counts, yet the polls succeed (Retry-After waited out); the
    429s inside JSON batches are waited out too."""
    graph_collectors = ("gdap_relationships", "gdap_access_assignments", "partner_customers")
    throttled = sum(v for ls, v in stack.values("partnercenter_exporter_api_requests_total", code="429")
                    if ls["collector"] in graph_collectors)
    assert throttled >= 1
    assert stack.sim.count("graph", 429) + stack.sim.count("contracts", 429) == throttled
    assert stack.sim.count("graph_batch_step", 429) >= 1
    for collector in graph_collectors:
        assert stack.value("partnercenter_exporter_poll_errors_total", tenant="contoso",
                           collector=collector, reason="throttled") == 0


def test_app_only_graph_auth_uses_its_own_app_and_scope(stack: Stack) -> None:
    """fabrikam reads Graph with client credentials of its Graph app; contoso with its refresh token."""
    grants = {(r.tenant, r.detail) for r in stack.sim.requests if r.target == "token" and r.status == 200}
    assert (FABRIKAM, "client_credentials") in grants
    assert (CONTOSO, "client_credentials") not in grants


def test_a_failing_collector_fails_alone(stack: Stack, tmp_path: Path) -> None:
    """Graph refusing a tenant fails that tenant's GDAP collectors only: its DAP collectors succeed,
    and no customer is reported without GDAP while GDAP data is missing."""
    seed = tmp_path / "seed"
    seed.write_text(stack.sim.issue_refresh_token(FABRIKAM, CLIENT_ID, "admin@fabrikam.test"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "poll_interval": "1m", "request_timeout": "5s", "endpoints": stack.sim.endpoints_config(),
        "tenants": [{"name": "fabrikam", "tenant_id": FABRIKAM, "client_id": CLIENT_ID, "collectors": ALL,
                     "auth": {"token_cache_file": str(tmp_path / "cache.json"),
                              "refresh_token_file": str(seed)}}]}))
    stack.sim.inject(Fault("graph", 403, {"error": {"code": "Authorization_RequestDenied", "message": "x"}},
                           times=1000, tenant=FABRIKAM))
    exporter = ExporterProcess(["--config.file", str(config), "--web.listen-address", "127.0.0.1:0"],
                               tmp_path / "exporter.log")
    try:
        exporter.wait_ready()
        alone = Stack(stack.sim, exporter)
        for collector in ("gdap_relationships", "gdap_access_assignments"):
            assert alone.value("partnercenter_exporter_poll_success", collector=collector) == 0
            assert alone.value("partnercenter_exporter_last_poll_error", collector=collector,
                               reason="auth") == 1
        for collector in ("dap_statistics", "dap_customers"):
            assert alone.value("partnercenter_exporter_poll_success", collector=collector) == 1
        assert alone.value("partnercenter_dap_enabled_customers") == 150
        assert alone.value("partnercenter_dap_customers_without_gdap") is None
        assert "[Authorization_RequestDenied]" in exporter.log
    finally:
        exporter.stop()
        stack.sim.clear_faults("graph")


def test_no_secret_or_token_in_metrics_or_log(stack: Stack) -> None:
    """Neither the Graph app's secret nor any issued token appears on /metrics or in the debug log."""
    stack.scrape()
    for secret in (GRAPH_SECRET, *stack.sim.issued_tokens()):
        assert secret not in stack.body
        assert secret not in stack.exporter.log


def test_status_page_shows_each_collector(stack: Stack) -> None:
    """The landing page has a row per tenant and collector, with the without-GDAP figure."""
    page = http_get(stack.exporter.url + "/")[1].decode()
    for collector in ALL:
        assert page.count(f"<td>{collector}</td>") == 2
    missing = len(stack.sim.tenants[CONTOSO].without_gdap())
    assert f", {missing} of them without GDAP" in page
