"""The shipped monitoring files: rules and their promtool unit tests, Alertmanager routing, dashboards."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import build_monitoring
from devtools.grafana import iter_panels, load_dashboards
from devtools.render import main as render_main
from exporter.exposition import render
from exporter.selfmetrics import ProcessMetrics
from tests.conftest import free_port, require_binary
from tests.helpers.samples import TODAY, github_anchor, rules, sample_snapshot

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "prometheus"
RULE_FILES = build_monitoring.RULE_FILES
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
ALERTMANAGER = ROOT / "alertmanager" / "alertmanager.example.yml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


@pytest.mark.e2e
def test_rule_files_pass_promtool_check_rules() -> None:
    """promtool check rules accepts both rule files."""
    result = run(require_binary("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_scaleout_prometheus_configs_pass_promtool_check_config() -> None:
    """deploy/prometheus/remote-write.yml and federation.yml, with the rule files they name, pass promtool."""
    snippets = sorted((ROOT / "deploy" / "prometheus").glob("*.yml"))
    assert [p.name for p in snippets] == ["federation.yml", "remote-write.yml"]
    result = run(require_binary("promtool"), "check", "config", *map(str, snippets))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_promtool_unit_tests_pass() -> None:
    """promtool test rules passes every unit test file under prometheus/tests/."""
    assert UNIT_TESTS
    result = run(require_binary("promtool"), "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """Each alert has a promtool case firing with labels and annotations, and one where it stays quiet."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if not expected:
                    quiet.add(check["alertname"])
                elif all(a.get("exp_labels") and a.get("exp_annotations") for a in expected):
                    firing.add(check["alertname"])
    alerts = {rule["alert"] for rule in rules("alert")}
    assert len(alerts) == 22
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a quiet case"


def test_every_recording_rule_has_a_unit_test() -> None:
    """Each recording rule is checked by a promql_expr_test."""
    tested = {check["expr"] for path in UNIT_TESTS for case in yaml.safe_load(path.read_text())["tests"]
              for check in case.get("promql_expr_test", [])}
    assert {rule["record"] for rule in rules("record")} <= tested


def test_every_alert_has_severity_tenant_texts_and_a_runbook_section() -> None:
    """Alerts have a known severity, name the tenant in summary and description, link a runbook heading."""
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.MULTILINE)}
    for rule in rules("alert"):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        # These alerts are about the exporter itself, whose series have no tenant label.
        about_exporter = ("PartnerCenterExporterDown", "PartnerCenterExporterInternalError",
                          "PartnerCenterExporterConfigReloadFailed")
        subject = "$labels.instance" if name in about_exporter else "$labels.tenant"
        assert subject in annotations["summary"], name
        assert subject in annotations["description"], name
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.endswith("/docs/runbook.md"), name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: no heading {anchor} in docs/runbook.md"


def test_readme_alert_table_matches_the_rules() -> None:
    """The README's alert table gives each alert's severity and `for` exactly as the rule file has them."""
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `(PartnerCenter\w+)` \| (\w+) \| `([^`]+)` \|", readme, re.MULTILINE)}
    assert rows == {rule["alert"]: (rule["labels"]["severity"], rule["for"]) for rule in rules("alert")}


@pytest.mark.e2e
def test_example_prometheus_config_passes_promtool_and_loads_both_rule_files() -> None:
    """promtool check config accepts prometheus/prometheus.yml, which loads both rule files."""
    result = run(require_binary("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert sorted(config["rule_files"]) == sorted(path.name for path in RULE_FILES)


@pytest.mark.e2e
def test_alertmanager_example_passes_amtool_check_config() -> None:
    """amtool check-config accepts the example Alertmanager config."""
    result = run(require_binary("amtool"), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=PartnerCenterExporterDown", "severity=critical"], "partnercenter-oncall"),
    (["alertname=PartnerCenterExporterAuthFailing", "severity=critical", "tenant=contoso"],
     "partnercenter-oncall"),
    (["alertname=PartnerCenterDAPInactiveOver90Days", "severity=warning", "tenant=contoso"],
     "partnercenter-team"),
    (["alertname=PartnerCenterDAPRelationshipsRemaining", "severity=info", "tenant=contoso"],
     "partnercenter-digest"),
    (["alertname=SomethingElse"], "partnercenter-team"),
])
@pytest.mark.e2e
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    """amtool config routes test sends each severity to its receiver."""
    result = run(require_binary("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receiver}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_monitoring_files_are_up_to_date_with_the_mixin() -> None:
    """The rule files, the PrometheusRule and every dashboard (in mixin/ and grafana/) are what
    devtools.build_monitoring renders now."""
    assert build_monitoring.main(["--check"]) == 0


def test_check_fails_when_the_mixin_renders_something_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """--check reports drift: a _config change not yet rendered makes it fail."""
    original = build_monitoring.render_mixin
    monkeypatch.setattr(build_monitoring, "render_mixin", lambda: original({"gdapAccessEndingDays": 15}))
    assert build_monitoring.main(["--check"]) == 1


def datasource_refs(node: Any) -> list[Any]:
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        return found + [ref for value in node.values() for ref in datasource_refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in datasource_refs(item)]
    return []


@pytest.mark.parametrize("name", sorted(load_dashboards()))
def test_dashboard_uses_the_datasource_variable_and_a_multi_tenant_variable(name: str) -> None:
    """Every data source reference is ${datasource}; tenant is multi-select from label_values."""
    dashboard = load_dashboards()[name]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    tenant = variables["tenant"]
    assert (tenant["multi"], tenant["includeAll"]) == (True, True)
    assert tenant["definition"].startswith("label_values(")
    refs = [r for r in datasource_refs(dashboard) if r.get("type") != "grafana"]
    assert refs
    assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs)


@pytest.mark.parametrize("name", sorted(load_dashboards()))
def test_every_panel_has_a_description_a_unit_and_queries(name: str) -> None:
    """Panels explain themselves: a description, a unit, and at least one query."""
    for panel in iter_panels(load_dashboards()[name]):
        assert len(panel.get("description", "")) > 20, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["targets"], panel["title"]


def test_dashboards_link_to_each_other() -> None:
    """Each dashboard links to dashboards tagged partnercenter, and all four carry that tag."""
    dashboards = load_dashboards().values()
    for dashboard in dashboards:
        assert "partnercenter" in dashboard["tags"]
        assert any(link["type"] == "dashboards" and link["tags"] == ["partnercenter"] and link["includeVars"]
                   for link in dashboard["links"])
    assert len({d["uid"] for d in dashboards}) == 4


def test_every_metric_in_dashboards_and_rules_is_exported_or_recorded() -> None:
    """Each metric name used in a panel or rule is one the exporter renders, a recording rule, or up."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900,
                  reloads=(("config", True, 1.0),)).decode()
    known = {name for name in re.findall(r"^(\w+)[{ ]", body, re.MULTILINE)}
    known |= {rule["record"] for rule in rules("record")} | {"up"}
    known |= set(re.findall(r"^(\w+)[{ ]", ProcessMetrics().text().decode(), re.MULTILINE))
    exprs = [t["expr"] for d in load_dashboards().values() for p in iter_panels(d) for t in p["targets"]]
    exprs += [rule["expr"] for rule in rules("expr")]
    # Metric names, once string literals (label values) are gone: ours, recorded (with colons), or up.
    names = re.compile(r"(?<![\w:])(partnercenter_\w+|process_\w+|\w+:[\w:]+|up)(?![\w:(])")
    used = {name for expr in exprs for name in names.findall(re.sub(r'"[^"]*"', "", expr))}
    assert used
    assert used - known == set()


def test_render_script_explains_a_bad_range_and_an_unreachable_prometheus(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """devtools.render answers a bad --range and a closed Prometheus port with one line each."""
    with pytest.raises(SystemExit) as exit_info:
        render_main(["--range", "5x"])
    assert exit_info.value.code == 2
    assert "argument --range: invalid duration '5x'" in capsys.readouterr().err
    assert render_main([f"--prometheus=http://127.0.0.1:{free_port()}", f"--out={tmp_path}"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("--prometheus: cannot query http://127.0.0.1:")
    assert line.endswith("is Prometheus running there?")
