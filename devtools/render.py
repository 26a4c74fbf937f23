"""Renders the shipped dashboards from a running Prometheus into PNG files, roughly as Grafana lays them out.

    python -m devtools.render --prometheus http://127.0.0.1:9090 --out docs/ [--range 1h]

No Grafana is needed: each panel's queries run through devtools.grafana (variables substituted as
Grafana does, every tenant selected) and matplotlib draws stats, time series, bar charts, tables,
state timelines and bar gauges. Good enough to see that each panel shows what its title says.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.grafana import (
    PrometheusAPI,
    QueryContext,
    dashboard_range,
    iter_panels,
    load_dashboards,
    run_query,
    target_query,
    variable_values,
)
from exporter.config.yamlio import parse_duration

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROW_HEIGHT = 0.42  # inches per Grafana grid row
COLUMN_WIDTH = 0.85  # inches per Grafana grid column (24 columns)
COLORS = {"red": "#e02f44", "green": "#56a64b", "blue": "#3274d9", "orange": "#ff9830", "purple": "#a352cc",
          "yellow": "#fade2a"}
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]


def days(timestamp: float) -> float:
    """Unix seconds to matplotlib's date numbers (days since its 1970 epoch)."""
    return timestamp / 86400


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "s":
        for size, suffix in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.1f} s" if abs(value) >= 1 or value == 0 else f"{value * 1000:.0f} ms"
    suffix = {"ops": " ops/s", "reqps": " req/s"}.get(unit, "")
    if decimals is None:
        decimals = 0 if float(value).is_integer() else 2
    return f"{value:,.{decimals}f}{suffix}"


def legend(template: str, labels: Mapping[str, str]) -> str:
    if template in ("", "__auto"):
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def threshold_color(value: float, defaults: Mapping[str, Any]) -> str:
    color = "blue"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def field_names(panel: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Display name and fixed color per field, from byName overrides and organize renames."""
    names: dict[str, tuple[str, str | None]] = {}
    for override in panel["fieldConfig"].get("overrides", []):
        field = override["matcher"]["options"]
        name, color = field, None
        for prop in override["properties"]:
            if prop["id"] == "displayName":
                name = prop["value"]
            elif prop["id"] == "color":
                color = COLORS.get(prop["value"]["fixedColor"], prop["value"]["fixedColor"])
        names[field] = (name, color)
    for transformation in panel.get("transformations", []):
        for field, name in transformation["options"].get("renameByName", {}).items():
            names.setdefault(field, (name, None))
    return names


def value_column(ref: str, target_count: int) -> str:
    return f"Value #{ref}" if target_count > 1 else "Value"


class PanelRenderer:
    def __init__(self, api: PrometheusAPI, context: QueryContext, end: float, dashboard_name: str) -> None:
        self.api = api
        self.context = context
        self.end = end
        self.dashboard_name = dashboard_name

    def results(self, panel: Mapping[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        out = []
        for target in panel["targets"]:
            query = target_query(self.dashboard_name, panel, target)
            out.append((target, run_query(self.api, query, self.context, self.end)))
        return out

    def draw(self, ax: Axes, panel: Mapping[str, Any]) -> None:
        ax.set_title(panel["title"], loc="left", fontsize=10, fontweight="bold")
        kind = panel["type"]
        drawer = getattr(self, "draw_" + kind.replace("-", "_"), None)
        if drawer is None:
            raise ValueError(f"no renderer for panel type {kind}")
        drawer(ax, panel)

    def draw_stat(self, ax: Axes, panel: Mapping[str, Any]) -> None:
        defaults = panel["fieldConfig"]["defaults"]
        [(_, result)] = self.results(panel)
        value = float(result[0]["value"][1]) if result else math.nan
        ax.set_facecolor(threshold_color(value, defaults) if result else "#444444")
        text = format_value(value, defaults["unit"], defaults.get("decimals")) if result else "No data"
        ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=26, color="white", fontweight="bold",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])

    def draw_timeseries(self, ax: Axes, panel: Mapping[str, Any]) -> None:
        unit = panel["fieldConfig"]["defaults"]["unit"]
        bars = panel["fieldConfig"]["defaults"].get("custom", {}).get("drawStyle") == "bars"
        index = 0
        for target, result in self.results(panel):
            for series in result:
                times = [days(float(t)) for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                color = PALETTE[index % len(PALETTE)]
                label = legend(target.get("legendFormat", ""), series["metric"])
                if bars:
                    ax.step(times, values, where="post", color=color, label=label)
                else:
                    ax.plot(times, values, color=color, linewidth=1.8, label=label)
                index += 1
        ax.xaxis_date()
        ax.yaxis.set_major_formatter(lambda v, _: format_value(v, unit))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if index:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)

    def draw_barchart(self, ax: Axes, panel: Mapping[str, Any]) -> None:
        x_field = panel["options"]["xField"]
        names = field_names(panel)
        targets = self.results(panel)
        columns: dict[str, dict[str, float]] = {}
        for target, result in targets:
            column = value_column(target["refId"], len(targets))
            columns[column] = {series["metric"][x_field]: float(series["value"][1]) for series in result}
        categories = sorted({x for values in columns.values() for x in values})
        positions = range(len(categories))
        bottom = [0.0] * len(categories)
        for index, (column, values) in enumerate(columns.items()):
            name, color = names.get(column, (column, None))
            heights = [values.get(x, 0.0) for x in categories]
            ax.bar(positions, heights, bottom=bottom, width=0.95, label=name,
                   color=color or PALETTE[index % len(PALETTE)])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        step = max(1, len(categories) // 12)
        ax.set_xticks(list(positions)[::step], categories[::step], rotation=45, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", frameon=False)

    def draw_table(self, ax: Axes, panel: Mapping[str, Any]) -> None:
        names = field_names(panel)
        targets = self.results(panel)
        units = {o["matcher"]["options"]: p["value"] for o in panel["fieldConfig"].get("overrides", [])
                 for p in o["properties"] if p["id"] == "unit"}
        rows: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
        # Prometheus drops empty labels, so rows may differ in their labels: a missing one is blank.
        key_labels: set[str] = set()
        for target, result in targets:
            column = value_column(target["refId"], len(targets))
            for series in result:
                labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
                key_labels |= labels.keys()
                rows.setdefault(tuple(sorted(labels.items())), {})[column] = float(series["value"][1])
        excluded = {key for t in panel.get("transformations", [])
                    for key in t["options"].get("excludeByName", {})}
        value_columns = [value_column(t["refId"], len(targets)) for t, _ in targets]
        shown_values = [c for c in value_columns if c not in excluded]
        columns = sorted(key_labels - excluded)
        header = [names.get(k, (k, None))[0] for k in [*columns, *shown_values]]
        default_unit = panel["fieldConfig"]["defaults"]["unit"]
        cells = []
        for key, values in sorted(rows.items()):
            labels = dict(key)
            row = [labels.get(k, "") for k in columns]
            for column in shown_values:
                unit = units.get(names.get(column, (column, None))[0], default_unit)
                row.append(format_value(values[column], unit) if column in values else "")
            cells.append(row)
        # As in Grafana, a table shows what fits its height; the rest would scroll.
        fits = panel["gridPos"]["h"] + 2
        if len(cells) > fits:
            more = len(cells) - fits + 1
            cells = [*cells[:fits - 1], [f"... {more} more rows", *[""] * (len(header) - 1)]]
        ax.axis("off")
        if cells:
            table = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="left")
            table.auto_set_font_size(False)
            table.set_fontsize(8)
            table.scale(1, 1.3)

    def draw_state_timeline(self, ax: Axes, panel: Mapping[str, Any]) -> None:
        defaults = panel["fieldConfig"]["defaults"]
        [(target, result)] = self.results(panel)
        labels = []
        ordered = sorted(result, key=lambda s: legend(target["legendFormat"], s["metric"]))
        for row, series in enumerate(ordered):
            times = [float(t) for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            for i, (start, value) in enumerate(zip(times, values, strict=True)):
                stop = times[i + 1] if i + 1 < len(times) else start + self.context.interval
                ax.barh(row, (stop - start) / 86400, left=days(start),
                        color=threshold_color(value, defaults), height=0.8)
            labels.append(legend(target["legendFormat"], series["metric"]))
        ax.xaxis_date()
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)

    def draw_bargauge(self, ax: Axes, panel: Mapping[str, Any]) -> None:
        defaults = panel["fieldConfig"]["defaults"]
        [(target, result)] = self.results(panel)
        series = sorted(result, key=lambda s: legend(target["legendFormat"], s["metric"]))
        values = [float(s["value"][1]) for s in series]
        ax.barh(range(len(series)), values, color=[threshold_color(v, defaults) for v in values])
        ax.set_yticks(range(len(series)), [legend(target["legendFormat"], s["metric"]) for s in series],
                      fontsize=8)
        for row, value in enumerate(values):
            ax.text(value, row, " " + format_value(value, defaults["unit"], defaults.get("decimals")),
                    va="center", fontsize=8)
        ax.set_xlim(0, max([1.0, *values]) * 1.15)
        ax.tick_params(axis="x", labelsize=7)


def render_dashboard(api: PrometheusAPI, dashboard: Mapping[str, Any], name: str, out: Path,
                     range_seconds: float | None = None, scrape_interval: float = 60,
                     end: float | None = None) -> list[str]:
    """Draw every panel of one dashboard into `out` (PNG); returns the titles drawn, in order."""
    context = QueryContext(variable_values(api, dashboard), range_seconds or dashboard_range(dashboard),
                           scrape_interval)
    renderer = PanelRenderer(api, context, end or time.time(), name)
    panels = list(iter_panels(dashboard))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    # Imported here: matplotlib builds a font cache on first import (running fc-list), which the
    # tests that only check this module's queries and arguments must not pay for.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(24 * COLUMN_WIDTH, rows * ROW_HEIGHT + 0.8))
    figure.suptitle(f"{dashboard['title']}  (last {context.range_seconds / 3600:g} h, all tenants)",
                    x=0.01, ha="left", fontsize=13, fontweight="bold")
    drawn = []
    for panel in panels:
        grid = panel["gridPos"]
        left = grid["x"] / 24 + 0.012
        width = grid["w"] / 24 - 0.024
        legend_room = 0.09 if panel["type"] == "timeseries" else 0.0
        height = grid["h"] / (rows + 2) - 0.045
        bottom = 1 - (grid["y"] + grid["h"]) / (rows + 2) - 0.02
        if panel["type"] in ("barchart", "timeseries", "state-timeline"):
            bottom += 0.035
            height -= 0.035
        label_room = {"state-timeline": 0.05, "bargauge": 0.05, "timeseries": 0.03}.get(panel["type"], 0.0)
        ax = figure.add_axes((left + label_room, bottom, width - legend_room - label_room, height))
        renderer.draw(ax, panel)
        drawn.append(panel["title"])
    figure.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return drawn


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG files")
    parser.add_argument("--range", dest="range_seconds", type=duration,
                        help="time range such as 1h instead of the dashboard's")
    parser.add_argument("--scrape-interval", type=duration, default="60s",
                        help="the data source's scrape interval")
    args = parser.parse_args(argv)
    api = PrometheusAPI(args.prometheus)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, dashboard in load_dashboards().items():
        path = args.out / name.replace(".json", ".png")
        try:
            render_dashboard(api, dashboard, name, path, args.range_seconds, args.scrape_interval)
        except OSError as err:
            print(f"--prometheus: cannot query {args.prometheus}: {err}; is Prometheus running there?",
                  file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
