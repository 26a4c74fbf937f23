"""The monitoring mixin, rendered by a real jsonnet (PyPI jsonnet): _config reaches every rule and
dashboard, and what it renders passes promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import _jsonnet
import pytest
import yaml

from devtools import build_monitoring
from devtools.grafana import iter_panels
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = 'job="partnercenter"'
OTHER = 'job="pcx-other",env="prod"'


def all_rules(rendered: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for kind in ("rules", "alerts") for group in rendered[kind]["groups"]
            for rule in group["rules"]]


def dashboard_queries(rendered: dict[str, Any]) -> list[str]:
    queries = [target["expr"] for dashboard in rendered["dashboards"].values()
               for panel in iter_panels(dashboard) for target in panel["targets"]]
    queries += [variable["query"] for dashboard in rendered["dashboards"].values()
                for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    return queries


@pytest.mark.e2e
@pytest.mark.parametrize("field", ["prometheusAlerts", "prometheusRules", "grafanaDashboards"])
def test_debians_jsonnet_renders_what_the_pypi_one_does(field: str) -> None:
    """The jsonnet binary on the machine (Debian 12's is 0.18, which refuses negative slice
    indexes) renders each part of the mixin exactly as the PyPI jsonnet (0.22) the tests use."""
    snippet = f"(import 'mixin.libsonnet').{field}"
    result = subprocess.run([require_binary("jsonnet"), "-J", str(ROOT / "mixin"), "-e", snippet],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    expected = _jsonnet.evaluate_snippet("snippet", snippet, jpathdir=str(ROOT / "mixin"))
    assert json.loads(result.stdout) == json.loads(expected)


def test_the_mixin_exposes_alerts_rules_and_dashboards() -> None:
    """prometheusAlerts, prometheusRules and grafanaDashboards are there, with the shipped counts."""
    rendered = build_monitoring.render_mixin()
    assert len([r for r in all_rules(rendered) if "alert" in r]) == 22
    assert len([r for r in all_rules(rendered) if "record" in r]) == 5
    assert sorted(rendered["dashboards"]) == ["partnercenter-dap-overview.json",
                                              "partnercenter-exporter-health.json",
                                              "partnercenter-gdap-access.json",
                                              "partnercenter-gdap-migration.json"]


def test_another_selector_reaches_every_rule_and_every_dashboard_query() -> None:
    """With _config.selector changed, each rule's expression and each dashboard query carries the new
    selector and none keeps the default."""
    default, other = build_monitoring.render_mixin(), build_monitoring.render_mixin({"selector": OTHER})
    for before, after in zip(all_rules(default), all_rules(other), strict=True):
        assert DEFAULT in before["expr"]
        assert OTHER in after["expr"]
        assert DEFAULT not in after["expr"]
    queries = dashboard_queries(other)
    assert len(queries) > 30
    for query in queries:
        assert OTHER in query, query
        assert DEFAULT not in query, query


def test_runbook_pattern_and_thresholds_come_from_config() -> None:
    """runbookURLPattern builds every runbook_url; the day thresholds land in the expressions."""
    rendered = build_monitoring.render_mixin({"runbookURLPattern": "https://wiki.example/pcx/%s",
                                             "dapInactiveDays": 60, "gdapAccessEndingDays": 7,
                                             "dapLosingAccessDays": 75, "pollFailingFor": "1h"})
    alerts = {rule["alert"]: rule for rule in all_rules(rendered) if "alert" in rule}
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == f"https://wiki.example/pcx/{name.lower()}"
    assert 'threshold_days="60"' in alerts["PartnerCenterDAPInactiveOver90Days"]["expr"]
    assert "over 60 days" in alerts["PartnerCenterDAPInactiveOver90Days"]["annotations"]["summary"]
    assert "< 7 * 86400" in alerts["PartnerCenterGDAPCustomerAccessEndingSoon"]["expr"]
    assert alerts["PartnerCenterDAPCustomerLosingAccess"]["expr"].count("> 75 * 86400") == 2
    polls = alerts["PartnerCenterExporterPollFailing"]
    assert polls["for"] == "1h"
    assert "have failed for 1 hour," in polls["annotations"]["description"]


def test_readme_kube_prometheus_example_renders_with_its_selector() -> None:
    """The README's kube-prometheus example, evaluated with the real mixin (kube-prometheus itself
    stubbed: it is not vendored here), yields a PrometheusRule whose rules carry its selector, and
    the three dashboards for Grafana."""
    block = re.search(r"```jsonnet\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block
    vendored = "github.com/partnercenter-exporter/partnercenter-exporter/mixin/"
    stub = (b"{ values+:: { common+: { namespace: 'monitoring' }, grafana+: { dashboards+:: {} } },"
            b"  grafana: { dashboards: $.values.grafana.dashboards } }")

    def resolve(base: str, rel: str) -> tuple[str, bytes]:
        if rel == "kube-prometheus/main.libsonnet":
            return rel, stub
        path = ROOT / "mixin" / rel.removeprefix(vendored) if rel.startswith(vendored) else Path(base) / rel
        return str(path), path.read_bytes()

    output = json.loads(_jsonnet.evaluate_snippet("example.jsonnet", block.group(1), import_callback=resolve))
    rule = output["partnercenter-prometheusRule"]
    assert rule["kind"] == "PrometheusRule"
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(exprs) == 27
    assert all('job="partnercenter-exporter",namespace="partnercenter-exporter"' in e for e in exprs)
    assert sorted(output["grafana-dashboards"]) == sorted(build_monitoring.render_mixin()["dashboards"])


@pytest.mark.e2e
def test_rules_under_another_selector_pass_promtool_and_the_unit_tests(tmp_path: Path) -> None:
    """Rendered with another selector, the rules pass `promtool check rules`, and the shipped promtool
    unit tests pass once their series carry that job instead of job="partnercenter"."""
    promtool = require_binary("promtool")
    # One label: with a second, alerts that aggregate by (job, instance, tenant) would drop it.
    rendered = build_monitoring.render_mixin({"selector": 'job="pcx-other"'})
    (tmp_path / "recording_rules.yml").write_text(yaml.safe_dump(rendered["rules"]))
    (tmp_path / "alert_rules.yml").write_text(yaml.safe_dump(rendered["alerts"]))
    tests = tmp_path / "tests"
    tests.mkdir()
    for path in sorted((ROOT / "prometheus" / "tests").glob("*.test.yml")):
        text = path.read_text().replace(DEFAULT, 'job="pcx-other"').replace("job: partnercenter",
                                                                            "job: pcx-other")
        (tests / path.name).write_text(text)
    checked = subprocess.run([promtool, "check", "rules", str(tmp_path / "recording_rules.yml"),
                              str(tmp_path / "alert_rules.yml")], capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = subprocess.run([promtool, "test", "rules", *map(str, sorted(tests.glob("*.yml")))],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
