"""Runs the shipped dashboards' queries against a Prometheus the way Grafana would.

Walks the dashboard JSON (so a new panel is covered without a list to keep), substitutes the
template variables with Grafana's rules, and queries the Prometheus HTTP API.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.config.yamlio import parse_duration

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
_REGEX_SPECIAL = re.compile(r"[$^*+?.()|\\{}\[\]]")
# Grafana's default when a panel sets no maxDataPoints: roughly the panel's width in pixels.
MAX_DATA_POINTS = 1000


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_range(dashboard: Mapping[str, Any]) -> float:
    """Seconds covered by the dashboard's default time range (`now-30d` to `now`)."""
    start = dashboard["time"]["from"]
    if dashboard["time"]["to"] != "now" or not start.startswith("now-"):
        raise ValueError(f"unsupported time range {dashboard['time']}")
    return parse_duration(start.removeprefix("now-"))


def prometheus_regex_escape(value: str) -> str:
    """Grafana's escaping of one variable value inside a PromQL regex string."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value)


def format_duration(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


@dataclass(frozen=True)
class QueryContext:
    """What Grafana knows when it sends a panel's queries."""

    variables: Mapping[str, Sequence[str]]
    range_seconds: float
    scrape_interval: float  # the data source's "Scrape interval" setting

    @property
    def interval(self) -> float:
        return max(self.range_seconds / MAX_DATA_POINTS, self.scrape_interval)

    @property
    def rate_interval(self) -> float:
        return max(self.interval + self.scrape_interval, 4 * self.scrape_interval)

    def interpolate(self, expr: str) -> str:
        builtins = {
            "__rate_interval": format_duration(self.rate_interval),
            "__interval": format_duration(self.interval),
            "__interval_ms": str(math.ceil(self.interval * 1000)),
            "__range": format_duration(self.range_seconds),
            "__range_s": str(math.ceil(self.range_seconds)),
            "__range_ms": str(math.ceil(self.range_seconds * 1000)),
        }

        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2) or match.group(3)
            if name in builtins:
                return builtins[name]
            if name not in self.variables:
                raise KeyError(f"query uses undefined variable ${name}: {expr}")
            values = [prometheus_regex_escape(v) for v in self.variables[name]]
            return "(" + "|".join(values) + ")" if len(values) != 1 else values[0]

        return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    panel_type: str
    ref: str
    expr: str
    instant: bool


def target_query(dashboard: str, panel: Mapping[str, Any], target: Mapping[str, Any]) -> PanelQuery:
    instant = bool(target.get("instant")) and not target.get("range")
    return PanelQuery(dashboard, panel["title"], panel["type"], target["refId"], target["expr"], instant)


def panel_queries(dashboards: Mapping[str, Mapping[str, Any]]) -> list[PanelQuery]:
    return [target_query(name, panel, target) for name, dashboard in dashboards.items()
            for panel in iter_panels(dashboard) for target in panel.get("targets", [])]


class PrometheusAPI:
    """The few Prometheus HTTP API calls the dashboards and tests need."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=self.timeout) as response:
            payload = json.load(response)
        if payload.get("status") != "success":
            raise RuntimeError(f"{path}: {payload.get('error', payload)}")
        return payload["data"]

    def instant(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", [("query", expr), ("time", str(at or time.time()))])
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query_range", [("query", expr), ("start", str(start)), ("end", str(end)),
                                                 ("step", str(step))])
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self._get(f"/api/v1/label/{label}/values", [("match[]", match)]))

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])


def variable_values(api: PrometheusAPI, dashboard: Mapping[str, Any]) -> dict[str, list[str]]:
    """Resolve every query variable as Grafana does with `All` selected."""
    values: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        if not match:
            raise ValueError(f"unsupported variable query {variable['definition']}")
        values[variable["name"]] = sorted(api.label_values(match.group(2), match.group(1)))
    return values


def run_query(api: PrometheusAPI, query: PanelQuery, context: QueryContext,
              end: float | None = None) -> list[dict[str, Any]]:
    """The panel query's result as Grafana would fetch it over the dashboard's default range."""
    end = end or time.time()
    expr = context.interpolate(query.expr)
    if query.instant:
        return api.instant(expr, end)
    return api.range(expr, end - context.range_seconds, end, context.interval)
