"""End to end with real Prometheus and Alertmanager: shipped dashboards, rules and routing against live data.

One stack for the module: simulator (two partner tenants), exporter, Prometheus (1s scrape and
evaluation, our rule files) and Alertmanager (the example config, receivers pointed at a webhook
the test runs). fabrikam's grant is revoked right after the first poll, so its next poll, a poll
interval later, fails with reason auth. At the same moment one of contoso's customers (GDAP
only, one relationship) passes its relationship's end date: Graph calls it `expiring` from then
on, so the next poll finds that nobody has access to it any more. fabrikam's admin is also
outside the Admin Agents group, so Graph shows it no GDAP relationship (an empty list, as Graph
does) and PartnerCenterGDAPNoneVisible fires for it. Also right after the first poll, contoso's
delegatedAdminStatistics is retired: from its next poll on it answers 410.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.grafana import (
    PrometheusAPI,
    QueryContext,
    dashboard_range,
    load_dashboards,
    panel_queries,
    run_query,
    variable_values,
)
from devtools.render import render_dashboard
from exporter.simulator import Simulator
from exporter.simulator.app import SimTenant
from exporter.simulator.data import GLOBAL_ADMIN_ROLE, Customer, Relationship
from tests.conftest import CLIENT_ID, TENANT_ID, free_port, require_binary
from tests.helpers.e2e import (
    ALL_COLLECTORS,
    ROOT,
    ExporterProcess,
    alert_rules_with_short_for,
    exporter_on,
    http_get,
    inactive_over_90,
    queries_without_data,
    seeded_tenant,
    start_service,
    wait_for,
    write_config,
)
from tests.helpers.samples import rules

pytestmark = pytest.mark.e2e

FABRIKAM_ID = "00000000-0000-0000-0000-0000000000bb"
TENANTS = {"contoso": TENANT_ID, "fabrikam": FABRIKAM_ID}
SHORTENED_ALERTS = ("PartnerCenterDAPInactiveOver90Days", "PartnerCenterExporterAuthFailing",
                    "PartnerCenterDAPCustomerWithoutGDAP", "PartnerCenterGDAPGlobalAdminRole",
                    "PartnerCenterDAPCustomerLosingAccess", "PartnerCenterGDAPNoneVisible",
                    "PartnerCenterGDAPRelationshipWithoutAccess", "PartnerCenterGDAPAccessAssignmentFailing",
                    "PartnerCenterGDAPCustomerAccessEndingSoon", "PartnerCenterGDAPCustomerLostAccess",
                    "PartnerCenterGDAPInvitePending", "PartnerCenterCustomerWithoutGDAPAccess",
                    "PartnerCenterAPIRetired")
SCRAPE_INTERVAL = 1.0
LOSING_ACCESS_DAYS = 80


def without_gdap(tenant: SimTenant) -> set[str]:
    """The DAP customers the exporter must call uncovered: all of them when Graph shows the signed-in
    user no relationship (outside Admin Agents), else the simulator's oracle."""
    customers = tenant.customers if not tenant.users_in_admin_agents else tenant.without_gdap()
    return {c.id for c in customers}


def suggested_action(tenant: SimTenant, customer_id: str, now: float) -> int:
    """The migration table's action code for a customer: 1 GDAP in place, 2 set up GDAP, 3 inactive."""
    if customer_id not in without_gdap(tenant):
        return 1
    customer = next(c for c in tenant.customers if c.id == customer_id)
    return 3 if now - last_activity(customer) > 90 * 86400 else 2


def access_ends(tenant: SimTenant) -> dict[str, tuple[str, float, bool]]:
    """Per customer id with access: its name, the latest end among the relationships that give
    access, and whether one of them really auto-extends (never with Global Administrator)."""
    ends: dict[str, tuple[str, float, bool]] = {}
    for r in tenant.relationships:
        if r.gives_access and r.end is not None:
            _, end, extends = ends.get(r.customer_id, ("", 0.0, False))
            ends[r.customer_id] = (r.customer_name, max(end, r.end.timestamp()),
                                   extends or r.really_auto_extends)
    return ends


def lapse_one_customer(tenant: SimTenant) -> str:
    """Turn the only relationship of a GDAP-only customer (not ending within 30 days, no Global
    Administrator) into `expiring`, as Graph shows it once its end date passed; return its name."""
    gdap_only = {c.id for c in tenant.other_customers}
    per_customer: dict[str, list[Relationship]] = {}
    for r in tenant.relationships:
        per_customer.setdefault(r.customer_id, []).append(r)
    soon = time.time() + 40 * 86400
    for customer_id, relationships in per_customer.items():
        [r, *others] = relationships
        if (customer_id in gdap_only and not others and r.gives_access and r.end is not None
                and r.end.timestamp() > soon and not r.auto_extend and GLOBAL_ADMIN_ROLE not in r.roles):
            r.status = "expiring"
            r.end = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
            return r.customer_name
    raise AssertionError("the seeded data has no GDAP-only customer to lapse")


def last_activity(customer: Customer) -> float:
    """The last partner sign-in, or for "never" the DAP start: what the inactivity rules age."""
    return (customer.last_signin_at or customer.dap_start_at).timestamp()


@dataclass
class Webhook:
    """An Alertmanager webhook receiver that keeps every notification."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) for each firing alert of that name received so far."""
        with self.lock:
            return [(n["receiver"], a) for n in self.notifications for a in n["alerts"]
                    if a["labels"].get("alertname") == alertname and a["status"] == "firing"]

    def serve(self) -> http.server.ThreadingHTTPServer:
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with webhook.lock:
                    webhook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def prometheus_config(path: Path, exporter_address: str, alertmanager_port: int, alert_rules: Path) -> Path:
    """The shipped example prometheus.yml, pointed at the test's exporter and Alertmanager, 1s intervals."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ROOT / "prometheus" / "recording_rules.yml"), str(alert_rules)]
    [alerting] = config["alerting"]["alertmanagers"]
    alerting["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    [job] = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [exporter_address]}]
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(path: Path, webhook_url: str) -> Path:
    """The example Alertmanager config: its routes and inhibitions, every receiver to the webhook."""
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.example.yml").read_text())
    for receiver in config["receivers"]:
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": False}]

    def hurry(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            hurry(child)

    hurry(config["route"])
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Stack:
    sim: Simulator
    exporter: ExporterProcess
    api: PrometheusAPI
    alertmanager_url: str
    webhook: Webhook
    revoked_at: float
    lapsed: str  # the customer whose only relationship lapsed at revoked_at


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_binary("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or require_binary("alertmanager")
    tmp = tmp_path_factory.mktemp("monitoring")
    processes: list[subprocess.Popen[bytes]] = []
    with Simulator() as sim:
        sim.add_client(CLIENT_ID)
        sim.add_tenant(TENANT_ID, customers=250)
        config = write_config(sim, tmp, collectors=ALL_COLLECTORS, extra_tenants=[
            seeded_tenant(sim, tmp, "fabrikam", FABRIKAM_ID, collectors=ALL_COLLECTORS)])
        sim.tenants[FABRIKAM_ID].users_in_admin_agents = False
        exporter = exporter_on(config, tmp)
        webhook = Webhook()
        webhook_server = webhook.serve()
        try:
            exporter.wait_ready()
            sim.revoke_refresh_tokens(FABRIKAM_ID)
            sim.invalidate_access_tokens(FABRIKAM_ID)
            lapsed = lapse_one_customer(sim.tenants[TENANT_ID])
            sim.retire("api", 410, tenant=TENANT_ID)
            revoked_at = time.monotonic()

            am_port, prom_port = free_port(), free_port()
            am_url = f"http://127.0.0.1:{am_port}"
            hook_url = f"http://127.0.0.1:{webhook_server.server_address[1]}/"
            processes.append(start_service(
                [alertmanager, f"--config.file={alertmanager_config(tmp / 'am.yml', hook_url)}",
                 f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                 "--cluster.listen-address=", "--log.level=warn"],
                tmp / "alertmanager.log", am_url + "/-/ready", "alertmanager"))
            alert_rules = alert_rules_with_short_for(tmp / "alert_rules.yml", SHORTENED_ALERTS)
            prom_config = prometheus_config(tmp / "prometheus.yml", exporter.url.removeprefix("http://"),
                                            am_port, alert_rules)
            prom_url = f"http://127.0.0.1:{prom_port}"
            processes.append(start_service(
                [prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp / 'prom-data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                tmp / "prometheus.log", prom_url + "/-/ready", "prometheus"))
            yield Stack(sim, exporter, PrometheusAPI(prom_url), am_url, webhook, revoked_at, lapsed)
        finally:
            for proc in processes:
                proc.terminate()
            for proc in processes:
                proc.wait(timeout=10)
            exporter.kill()
            webhook_server.shutdown()
            webhook_server.server_close()


def test_exporter_target_is_up(stack: Stack) -> None:
    """Prometheus scrapes the exporter (job partnercenter from the example config) and finds it up."""
    def up() -> list[dict[str, Any]]:
        return [t for t in stack.api.targets()
                if t["labels"]["job"] == "partnercenter" and t["health"] == "up"]

    wait_for(up, 20, "the partnercenter target to be up")
    # Prometheus marks the target healthy before it commits the scrape's `up` sample: wait for the sample.
    [sample] = wait_for(lambda: stack.api.instant('up{job="partnercenter"}'), 20,
                        "the up sample of partnercenter")
    assert sample["value"][1] == "1"


def test_tenant_variable_lists_every_tenant(stack: Stack) -> None:
    """Every dashboard's tenant variable (label_values) resolves to the configured tenants."""
    dashboards = load_dashboards()
    assert len(dashboards) == 4
    for dashboard in dashboards.values():
        def listed(d: dict[str, Any] = dashboard) -> bool:
            return bool(variable_values(stack.api, d) == {"tenant": sorted(TENANTS)})
        wait_for(listed, 20, f"the tenant variable of {dashboard['title']}")


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    """Each panel query of every dashboard (the migration one included), with variables substituted
    as Grafana would, returns data."""
    dashboards = load_dashboards()
    queries = panel_queries(dashboards)
    assert len(queries) >= 15, "the dashboard walk found too few queries"
    empty = queries_without_data(stack.api, dashboards, [sorted(TENANTS)], SCRAPE_INTERVAL)
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_headline_stats_match_the_simulator(stack: Stack) -> None:
    """The DAP customers and inactive-over-90 stats add up the simulator's customers across both tenants."""
    dashboard = load_dashboards()["partnercenter-dap-overview.json"]
    context = QueryContext({"tenant": sorted(TENANTS)}, dashboard_range(dashboard), SCRAPE_INTERVAL)
    stats = {q.panel: q for q in panel_queries({"d": dashboard}) if q.panel_type == "stat"}

    def value(title: str) -> float:
        [sample] = run_query(stack.api, stats[title], context)
        return float(sample["value"][1])

    customers = sum(len(stack.sim.tenants[t].customers) for t in TENANTS.values())
    inactive = sum(inactive_over_90(stack.sim, t) for t in TENANTS.values())
    assert inactive > 0
    wait_for(lambda: value("DAP customers") == customers, 20, "the DAP customers stat")
    assert value("Inactive over 90 days") == inactive
    assert value("Share inactive over 90 days") == pytest.approx(inactive / customers)


def test_every_recording_rule_produces_data(stack: Stack) -> None:
    """Each recording rule in prometheus/ evaluates without error and yields series for both tenants."""
    records = [rule["record"] for rule in rules("record")]
    assert records
    for record in records:
        def recorded(r: str = record) -> bool:
            return {s["metric"]["tenant"] for s in stack.api.instant(r)} == set(TENANTS)
        wait_for(recorded, 20, f"{record} for both tenants")
    health = {rule["name"]: rule["health"] for rule in stack.api.rules()}
    assert all(h == "ok" for h in health.values()), health


def test_inactive_over_90_days_alert_reaches_the_webhook_per_tenant(stack: Stack) -> None:
    """PartnerCenterDAPInactiveOver90Days takes the warning route, in one notification group per tenant."""
    def tenants() -> set[str]:
        return {a["labels"]["tenant"] for _, a in stack.webhook.alerts("PartnerCenterDAPInactiveOver90Days")}

    wait_for(lambda: tenants() == set(TENANTS), 40, "the inactive alert for both tenants")
    with stack.webhook.lock:
        # A tenant's group also holds its other alerts (GDAP ones), and is sent again as they join.
        groups = {tuple(sorted(n["groupLabels"].items())) for n in stack.webhook.notifications
                  if any(a["labels"]["alertname"] == "PartnerCenterDAPInactiveOver90Days"
                         for a in n["alerts"])}
    assert groups == {(("tenant", t),) for t in TENANTS}, "one notification group per tenant, by tenant only"
    for receiver, alert in stack.webhook.alerts("PartnerCenterDAPInactiveOver90Days"):
        assert receiver == "partnercenter-team"
        assert alert["labels"]["severity"] == "warning"
        tenant = alert["labels"]["tenant"]
        assert alert["annotations"]["summary"].startswith(
            f"Partner tenant {tenant}: {inactive_over_90(stack.sim, TENANTS[tenant])} DAP customers inactive")
        assert alert["annotations"]["runbook_url"].endswith("#partnercenterdapinactiveover90days")


def test_migration_stats_match_the_simulator(stack: Stack) -> None:
    """The migration dashboard's DAP, with-GDAP and without-GDAP stats add up the simulator's customers,
    and its table lists exactly the customers the simulator left without GDAP."""
    dashboard = load_dashboards()["partnercenter-gdap-migration.json"]
    context = QueryContext({"tenant": sorted(TENANTS)}, dashboard_range(dashboard), SCRAPE_INTERVAL)
    queries = {q.panel: q for q in panel_queries({"d": dashboard})}

    def value(title: str) -> float:
        [sample] = run_query(stack.api, queries[title], context)
        return float(sample["value"][1])

    tenants = [stack.sim.tenants[t] for t in TENANTS.values()]
    missing = sum(len(without_gdap(t)) for t in tenants)
    dap = sum(len(t.customers) for t in tenants)
    wait_for(lambda: value("DAP customers") == dap, 20, "the DAP customers stat")
    assert (value("Without GDAP"), value("With GDAP")) == (missing, dap - missing)
    assert value("Migration progress") == pytest.approx((dap - missing) / dap)
    rows = run_query(stack.api, queries["DAP customers without GDAP"], context)
    assert {(r["metric"]["tenant"], r["metric"]["customer_tenant_id"]) for r in rows} == {
        (name, c) for name, tenant_id in TENANTS.items() for c in without_gdap(stack.sim.tenants[tenant_id])}


def test_customer_table_suggests_the_simulators_next_step_per_customer(stack: Stack) -> None:
    """The per-customer table's last sign-in is "never" (-1) exactly for customers without one, and
    its suggested action (GDAP in place / set up GDAP / inactive) follows each simulated customer."""
    dashboard = load_dashboards()["partnercenter-gdap-migration.json"]
    context = QueryContext({"tenant": sorted(TENANTS)}, dashboard_range(dashboard), SCRAPE_INTERVAL)
    [query_a, _, _, query_d] = [q for q in panel_queries({"d": dashboard})
                                if q.panel == "DAP customers: last partner sign-in and next step"]
    tenant = stack.sim.tenants[TENANT_ID]
    never = {(r["metric"]["customer_tenant_id"]) for r in run_query(stack.api, query_a, context)
             if r["metric"]["tenant"] == "contoso" and float(r["value"][1]) == -1}
    assert never == {c.id for c in tenant.customers if c.last_signin is None}
    actions = {r["metric"]["customer_tenant_id"]: int(float(r["value"][1]))
               for r in run_query(stack.api, query_d, context) if r["metric"]["tenant"] == "contoso"}
    now = time.time()
    assert actions == {c.id: suggested_action(tenant, c.id, now) for c in tenant.customers}
    assert set(actions.values()) == {1, 2, 3}


@pytest.mark.parametrize(("alertname", "expected"), [
    ("PartnerCenterDAPCustomerWithoutGDAP", lambda sim, tenant_id: {
        c.name for c in sim.tenants[tenant_id].without_gdap()}),
    ("PartnerCenterGDAPRelationshipWithoutAccess", lambda sim, tenant_id: {
        r.customer_name for r in sim.tenants[tenant_id].relationships
        if r.grants_access and not r.gives_access}),
    ("PartnerCenterGDAPAccessAssignmentFailing", lambda sim, tenant_id: {
        r.customer_name for r in sim.tenants[tenant_id].relationships
        if r.status == "active" and any(a.status in ("error", "pending") for a in r.assignments)}),
    ("PartnerCenterGDAPCustomerAccessEndingSoon", lambda sim, tenant_id: {
        name for name, end, extends in access_ends(sim.tenants[tenant_id]).values()
        if not extends and end - time.time() < 30 * 86400}),
    ("PartnerCenterGDAPGlobalAdminRole", lambda sim, tenant_id: {
        r.customer_name for r in sim.tenants[tenant_id].relationships
        if r.grants_access and "62e90394-69f5-4237-9190-012177145e10" in r.roles}),
    ("PartnerCenterDAPCustomerLosingAccess", lambda sim, tenant_id: {
        c.name for c in sim.tenants[tenant_id].without_gdap()
        if time.time() - last_activity(c) > LOSING_ACCESS_DAYS * 86400}),
])
def test_gdap_alerts_reach_the_webhook_for_the_simulators_cases(
        stack: Stack, alertname: str, expected: Any) -> None:
    """Each GDAP alert fires, on the warning route, for exactly the customers the simulator's data
    calls for (contoso's; fabrikam's grant is revoked but its last good data stays)."""
    want = expected(stack.sim, TENANT_ID)
    assert want, f"the seeded data should give {alertname} something to fire for"

    def customers() -> set[str]:
        return {a["labels"]["customer_name"] for _, a in stack.webhook.alerts(alertname)
                if a["labels"]["tenant"] == "contoso"}

    wait_for(lambda: customers() == want, 40, f"{alertname} for contoso's customers")
    for receiver, alert in stack.webhook.alerts(alertname):
        assert receiver == "partnercenter-team"
        assert alert["annotations"]["runbook_url"].endswith("#" + alertname.lower())


def test_invite_pending_alert_reaches_the_webhook_for_requests_older_than_60_days(stack: Stack) -> None:
    """PartnerCenterGDAPInvitePending fires for exactly contoso's requests in approvalPending for
    over 60 days, by relationship name, on the info (digest) route."""
    now = time.time()
    want = {r.display_name for r in stack.sim.tenants[TENANT_ID].relationships
            if r.status == "approvalPending" and now - r.created.timestamp() > 60 * 86400}
    assert want, "the seeded data should have a request older than 60 days"

    def names() -> set[str]:
        return {a["labels"]["relationship_name"] for _, a in alerts() if a["labels"]["tenant"] == "contoso"}

    def alerts() -> list[tuple[str, dict[str, Any]]]:
        return stack.webhook.alerts("PartnerCenterGDAPInvitePending")

    wait_for(lambda: names() == want, 40, "PartnerCenterGDAPInvitePending for contoso's old requests")
    assert {receiver for receiver, _ in alerts()} == {"partnercenter-digest"}


def test_lost_access_alert_fires_on_the_poll_after_the_last_relationship_turns_expiring(stack: Stack) -> None:
    """The lapsed customer had access at the first poll; on the next poll (a poll interval after the
    lapse) its access is 0 and PartnerCenterGDAPCustomerLostAccess reaches the critical route for it
    alone, while the series stays (at 0) rather than vanishing."""
    remaining = 62 + 30 - (time.monotonic() - stack.revoked_at)

    def lost() -> set[str]:
        alerts = stack.webhook.alerts("PartnerCenterGDAPCustomerLostAccess")
        return {a["labels"]["customer_name"] for _, a in alerts}

    wait_for(lambda: stack.lapsed in lost(), remaining, "PartnerCenterGDAPCustomerLostAccess")
    assert lost() == {stack.lapsed}
    receiver, _ = stack.webhook.alerts("PartnerCenterGDAPCustomerLostAccess")[0]
    assert receiver == "partnercenter-oncall"
    [sample] = stack.api.instant(f'partnercenter_gdap_customer_access{{tenant="contoso",'
                                 f'customer_name="{stack.lapsed}"}}')
    assert sample["value"][1] == "0"


def am_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url + "/api/v2/alerts", timeout=5) as response:
        return list(json.load(response))


def test_no_gdap_visible_alert_fires_and_holds_back_that_tenants_without_gdap_alerts(stack: Stack) -> None:
    """fabrikam has DAP customers and Graph shows its user nothing: PartnerCenterGDAPNoneVisible
    reaches the warning route for fabrikam only, and Alertmanager inhibits fabrikam's per-customer
    PartnerCenterDAPCustomerWithoutGDAP and PartnerCenterCustomerWithoutGDAPAccess alerts while
    contoso's stay active."""
    def none_visible() -> set[str]:
        return {a["labels"]["tenant"] for _, a in stack.webhook.alerts("PartnerCenterGDAPNoneVisible")}

    wait_for(lambda: none_visible() == {"fabrikam"}, 40, "PartnerCenterGDAPNoneVisible for fabrikam")
    for receiver, alert in stack.webhook.alerts("PartnerCenterGDAPNoneVisible"):
        assert receiver == "partnercenter-team"
        assert "Admin Agents" in alert["annotations"]["description"]

    def inhibited(alertname: str) -> dict[str, set[bool]]:
        states: dict[str, set[bool]] = {}
        for alert in am_alerts(stack.alertmanager_url):
            if alert["labels"]["alertname"] == alertname:
                states.setdefault(alert["labels"]["tenant"], set()).add(bool(alert["status"]["inhibitedBy"]))
        return states

    def fabrikams_held_back(alertname: str) -> bool:
        return inhibited(alertname) == {"fabrikam": {True}, "contoso": {False}}

    for alertname in ("PartnerCenterDAPCustomerWithoutGDAP", "PartnerCenterCustomerWithoutGDAPAccess"):
        wait_for(functools.partial(fabrikams_held_back, alertname), 40,
                 f"fabrikam's {alertname} alerts inhibited, contoso's not")


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels} for labels in alerts]).encode()
    request = urllib.request.Request(url + "/api/v2/alerts", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_alertmanager_inhibits_stale_and_failing_alerts_of_a_down_exporter(stack: Stack) -> None:
    """Down inhibits DataStale and PollFailing of the same instance only; AuthFailing inhibits PollFailing."""
    job = {"job": "partnercenter"}
    post_alerts(stack.alertmanager_url, [
        {**job, "alertname": "PartnerCenterExporterDown", "instance": "down:9867", "severity": "critical"},
        {**job, "alertname": "PartnerCenterExporterDataStale", "instance": "down:9867", "tenant": "t1"},
        {**job, "alertname": "PartnerCenterExporterPollFailing", "instance": "down:9867", "tenant": "t1"},
        {**job, "alertname": "PartnerCenterExporterDataStale", "instance": "other:9867", "tenant": "t1"},
        {**job, "alertname": "PartnerCenterExporterAuthFailing", "instance": "other:9867", "tenant": "t2"},
        {**job, "alertname": "PartnerCenterExporterPollFailing", "instance": "other:9867", "tenant": "t2"},
        {**job, "alertname": "PartnerCenterExporterPollFailing", "instance": "other:9867", "tenant": "t3"},
    ])

    def states() -> dict[tuple[str, str, str], bool]:
        with urllib.request.urlopen(stack.alertmanager_url + "/api/v2/alerts", timeout=5) as response:
            alerts = json.load(response)
        return {(a["labels"]["alertname"], a["labels"]["instance"], a["labels"].get("tenant", "")):
                bool(a["status"]["inhibitedBy"]) for a in alerts if a["labels"].get("instance") != ""
                and a["labels"]["instance"] in ("down:9867", "other:9867")}

    expected = {
        ("PartnerCenterExporterDown", "down:9867", ""): False,
        ("PartnerCenterExporterDataStale", "down:9867", "t1"): True,
        ("PartnerCenterExporterPollFailing", "down:9867", "t1"): True,
        ("PartnerCenterExporterDataStale", "other:9867", "t1"): False,
        ("PartnerCenterExporterAuthFailing", "other:9867", "t2"): False,
        ("PartnerCenterExporterPollFailing", "other:9867", "t2"): True,
        ("PartnerCenterExporterPollFailing", "other:9867", "t3"): False,
    }
    wait_for(lambda: states() == expected, 10, f"inhibition as expected; last seen {states()}")


def test_render_script_draws_every_panel(stack: Stack, tmp_path: Path) -> None:
    """devtools.render draws each dashboard's panels from the live Prometheus into a PNG."""
    for name, dashboard in load_dashboards().items():
        out = tmp_path / name.replace(".json", ".png")
        drawn = render_dashboard(stack.api, dashboard, name, out, range_seconds=300, scrape_interval=1)
        assert drawn == [p["title"] for p in dashboard["panels"]]
        assert out.read_bytes().startswith(b"\x89PNG")
        assert out.stat().st_size > 20_000


def test_auth_failing_alert_reaches_the_webhook_after_the_grant_is_revoked(stack: Stack) -> None:
    """After fabrikam's grant is revoked, its next poll fails and AuthFailing reaches the critical route."""
    # The next poll comes one poll interval (1m, +-3% jitter) after the first.
    remaining = 62 + 30 - (time.monotonic() - stack.revoked_at)
    def alerts() -> list[tuple[str, dict[str, Any]]]:
        # Only the exporter's own alerts; the inhibition test posts made-up ones.
        return [(r, a) for r, a in stack.webhook.alerts("PartnerCenterExporterAuthFailing")
                if a["labels"]["instance"] == stack.exporter.url.removeprefix("http://")]

    wait_for(alerts, remaining, "the auth alert")
    assert {a["labels"]["tenant"] for _, a in alerts()} == {"fabrikam"}
    receiver, alert = alerts()[0]
    assert receiver == "partnercenter-oncall"
    assert alert["labels"]["reason"] == "auth"
    assert "partnercenter-exporter login" in alert["annotations"]["description"]
    assert 'reason="auth"' in http_get(stack.exporter.url + "/metrics")[1].decode()


def test_customer_without_access_alert_reaches_the_webhook_for_every_customer_nobody_can_administer(
        stack: Stack) -> None:
    """PartnerCenterCustomerWithoutGDAPAccess reaches the warning route for exactly contoso's
    customers (from its contracts, the DAP list and the relationships) that nobody can administer,
    those with neither DAP nor a relationship included, and, a poll after its lapse, the lapsed one."""
    tenant = stack.sim.tenants[TENANT_ID]
    want = {c.id for c in tenant.without_access()}
    assert {c.id for c in tenant.unmanaged_customers} <= want
    remaining = 62 + 40 - (time.monotonic() - stack.revoked_at)

    def customers() -> set[str]:
        return {a["labels"]["customer_tenant_id"] for _, a in alerts() if a["labels"]["tenant"] == "contoso"}

    def alerts() -> list[tuple[str, dict[str, Any]]]:
        return stack.webhook.alerts("PartnerCenterCustomerWithoutGDAPAccess")

    wait_for(lambda: customers() == want, max(remaining, 40), "PartnerCenterCustomerWithoutGDAPAccess")
    assert {receiver for receiver, _ in alerts()} == {"partnercenter-team"}


def test_a_retired_api_fires_api_retired_on_the_digest_route_and_no_failing_poll_alert(stack: Stack) -> None:
    """contoso's delegatedAdminStatistics answers 410 from its second poll on: PartnerCenterAPIRetired
    reaches the info (digest) route for contoso's dap_statistics alone, PartnerCenterExporterPollFailing
    is not even pending for it (while it is for fabrikam, whose sign-in fails), and the last good
    DAP figures stay."""
    remaining = 62 + 30 - (time.monotonic() - stack.revoked_at)

    def retired() -> list[tuple[str, dict[str, Any]]]:
        return [(r, a) for r, a in stack.webhook.alerts("PartnerCenterAPIRetired")
                if a["labels"]["instance"] == stack.exporter.url.removeprefix("http://")]

    wait_for(retired, remaining, "PartnerCenterAPIRetired")
    assert {(a["labels"]["tenant"], a["labels"]["collector"]) for _, a in retired()} == {
        ("contoso", "dap_statistics")}
    assert {receiver for receiver, _ in retired()} == {"partnercenter-digest"}
    failing = {(s["metric"]["tenant"], s["metric"]["collector"]) for s in stack.api.instant(
        'ALERTS{alertname="PartnerCenterExporterPollFailing"}')}
    assert ("contoso", "dap_statistics") not in failing
    assert ("fabrikam", "dap_statistics") in failing
    [customers] = stack.api.instant('partnercenter_dap_customers{tenant="contoso"}')
    assert float(customers["value"][1]) == len(stack.sim.tenants[TENANT_ID].customers)
