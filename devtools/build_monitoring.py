"""Renders the monitoring mixin (mixin/) into every monitoring file the project ships.

    python -m devtools.build_monitoring          write them
    python -m devtools.build_monitoring --check  exit 1 if any is out of date (a test runs this)

The sources: mixin/*.libsonnet for the rules (jsonnet, with `_config`), devtools/build_dashboards.py
for the dashboards, which it writes into mixin/dashboards/ first. Everything else is generated:
prometheus/recording_rules.yml, prometheus/alert_rules.yml, deploy/kubernetes/prometheusrule.yaml
and grafana/dashboards/*.json, all rendered with the default `_config`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import _jsonnet
import yaml

from devtools import build_dashboards
from devtools.generated import sync

ROOT = Path(__file__).resolve().parent.parent
MIXIN = ROOT / "mixin"
RECORDING_RULES = ROOT / "prometheus" / "recording_rules.yml"
ALERT_RULES = ROOT / "prometheus" / "alert_rules.yml"
RULE_FILES = [RECORDING_RULES, ALERT_RULES]
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
GRAFANA = ROOT / "grafana" / "dashboards"
COMMAND = "devtools.build_monitoring"

_GENERATED = """\
# Generated from the monitoring mixin (mixin/) by `python -m devtools.build_monitoring`; do not edit.
# Thresholds, the job selector and the runbook URLs are the mixin's _config (mixin/config.libsonnet).
"""
_HEADERS = {
    RECORDING_RULES: "# Recording rules for partnercenter-exporter; the alert rules use them.\n",
    ALERT_RULES: "# Alert rules for partnercenter-exporter. Load together with recording_rules.yml.\n",
    PROMETHEUS_RULE: "# For the Prometheus Operator. Add the labels your Prometheus' ruleSelector wants in "
                     "an overlay.\n",
}
# Key order in the rule files, as people write them (jsonnet sorts keys).
_ORDER = ["name", "interval", "rules", "record", "alert", "expr", "for", "labels", "annotations",
          "summary", "description", "runbook_url"]

_RENDER = """
local mixin = (import 'mixin.libsonnet') + { _config+:: std.parseJson(std.extVar('config')) };
{
  alerts: mixin.prometheusAlerts,
  rules: mixin.prometheusRules,
  dashboards: mixin.grafanaDashboards,
}
"""


def render_mixin(config: Mapping[str, Any] | None = None, *, mixin: Path = MIXIN) -> dict[str, Any]:
    """The mixin's prometheusAlerts, prometheusRules and grafanaDashboards with `config` merged over
    its _config, as a real jsonnet evaluates them."""
    text = _jsonnet.evaluate_snippet(str(mixin / "render.jsonnet"), _RENDER, jpathdir=[str(mixin)],
                                     ext_vars={"config": json.dumps(dict(config or {}))})
    result: dict[str, Any] = json.loads(text)
    return result


class _Folded(str):
    """Prose: written folded (`>-`), as one line to Alertmanager."""


def _ordered(node: Any) -> Any:
    if isinstance(node, dict):
        keys = sorted(node, key=lambda k: (_ORDER.index(k) if k in _ORDER else len(_ORDER), k))
        return {key: _Folded(node[key]) if key == "description" else _ordered(node[key]) for key in keys}
    if isinstance(node, list):
        return [_ordered(item) for item in node]
    return node


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as `|` blocks, descriptions folded, lists indented under their
    key: as people write rule files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


def _represent_folded(dumper: yaml.SafeDumper, value: _Folded) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style=">")


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_Folded, _represent_folded)


def dump_yaml(document: Any) -> str:
    return yaml.dump(_ordered(document), Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


def outputs(rendered: Mapping[str, Any]) -> dict[Path, str]:
    """Each generated file and its text."""
    rules, alerts = rendered["rules"], rendered["alerts"]
    prometheus_rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                       "metadata": {"name": "partnercenter-exporter"},
                       "spec": {"groups": rules["groups"] + alerts["groups"]}}
    files = {RECORDING_RULES: rules, ALERT_RULES: alerts, PROMETHEUS_RULE: prometheus_rule}
    result = {path: _HEADERS[path] + _GENERATED + dump_yaml(document) for path, document in files.items()}
    for name, dashboard in rendered["dashboards"].items():
        result[GRAFANA / name] = json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    dashboards = {build_dashboards.OUT_DIR / name: text
                  for name, text in build_dashboards.render_all().items()}
    # The mixin reads the dashboards from disk: with them stale, its rendering would be too.
    if sync(dashboards, check=args.check, command=COMMAND):
        return 1
    return sync(outputs(render_mixin()), check=args.check, command=COMMAND)


if __name__ == "__main__":
    sys.exit(main())
