"""Builds deploy/kubernetes/prometheusrule.yaml from the rule files in prometheus/.

Run `python -m devtools.build_prometheusrule` after changing a rule file; `--check` fails when the
PrometheusRule is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from devtools.generated import sync

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = [ROOT / "prometheus" / "recording_rules.yml", ROOT / "prometheus" / "alert_rules.yml"]
OUT = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
HEADER = """\
# Generated from prometheus/recording_rules.yml and prometheus/alert_rules.yml by
# `python -m devtools.build_prometheusrule`; edit those files, not this one.
# For the Prometheus Operator. Add the labels your Prometheus' ruleSelector wants in an overlay.
"""


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (PromQL, annotations) as `|` blocks, as in the rule files."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrings.add_representer(str, _represent_str)


def rule_groups() -> list[dict[str, Any]]:
    """Every group of every rule file, in file order."""
    return [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]


def render() -> str:
    resource = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "partnercenter-exporter"},
                "spec": {"groups": rule_groups()}}
    return HEADER + yaml.dump(resource, Dumper=_BlockStrings, sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the PrometheusRule is out of date")
    args = parser.parse_args(argv)
    return sync({OUT: render()}, check=args.check, command="devtools.build_prometheusrule")


if __name__ == "__main__":
    sys.exit(main())
