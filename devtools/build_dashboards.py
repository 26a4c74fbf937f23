"""The four dashboards, the one source of truth for them: `python -m devtools.build_monitoring` writes
them into mixin/dashboards/, and renders the mixin into grafana/dashboards/.

Every query selects the exporter with SELECTOR, which the mixin swaps for its `_config.selector`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent.parent / "mixin" / "dashboards"
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
# The mixin's default selector; it must appear in every query, and nowhere else.
SELECTOR = 'job="partnercenter"'
T = f'{SELECTOR},tenant=~"$tenant"'
# Threshold labels at or above 90 days, so a config with 120 or 180 still counts as "over 90".
OVER_90 = 'inactive_over_days=~"9[0-9]|[1-9][0-9]{2,}"'
CACHED = "Values are cached by the exporter from its last successful poll of Partner Center."
GDAP_CACHED = ("Values are cached by the exporter from its last successful polls of Partner Center and "
               "Microsoft Graph; they need the gdap_relationships and dap_customers collectors, and "
               "gdap_access_assignments to count access assignments (without it, an active relationship "
               "counts as access).")
ACCESS_CACHED = ("Values are cached by the exporter from its last successful polls of Microsoft Graph (and "
                 "Partner Center's DAP customer list); access assignments need the gdap_access_assignments "
                 "collector, and every customer of the partner (its contracts) the partner_customers "
                 "collector.")
BY_COLLECTOR = "{{tenant}} {{collector}}"
DAYS_LEFT = f"(partnercenter_gdap_relationship_end_timestamp_seconds{{{T}}} - time()) / 86400"

Json = dict[str, Any]


def target(expr: str, *, ref: str = "A", legend: str = "__auto", instant: bool = False,
           table: bool = False) -> Json:
    result: Json = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend,
                    "range": not instant, "instant": instant, "editorMode": "code"}
    if table:
        result["format"] = "table"
    return result


def thresholds(*steps: tuple[str, float | None]) -> Json:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def panel(kind: str, title: str, description: str, targets: list[Json], grid: tuple[int, int, int, int],
          *, unit: str, defaults: Json | None = None, options: Json | None = None,
          overrides: list[Json] | None = None, transformations: list[Json] | None = None) -> Json:
    x, y, w, h = grid
    result: Json = {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        result["transformations"] = transformations
    return result


def stat(title: str, description: str, expr: str, grid: tuple[int, int, int, int], *, unit: str,
         steps: tuple[tuple[str, float | None], ...] = (("blue", None),), decimals: int | None = None) -> Json:
    defaults: Json = {"color": {"mode": "thresholds"}, "thresholds": thresholds(*steps)}
    if decimals is not None:
        defaults["decimals"] = decimals
    return panel("stat", title, description, [target(expr, instant=True)], grid, unit=unit, defaults=defaults,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "background", "graphMode": "none", "textMode": "value",
                          "justifyMode": "center", "orientation": "auto"})


def timeseries(title: str, description: str, targets: list[Json], grid: tuple[int, int, int, int], *,
               unit: str, draw: str = "line", steps: tuple[tuple[str, float | None], ...] | None = None) -> Json:
    custom: Json = {"drawStyle": draw, "lineWidth": 2, "fillOpacity": 10, "showPoints": "never",
                    "spanNulls": True}
    defaults: Json = {"custom": custom, "color": {"mode": "palette-classic"}}
    if steps:
        defaults["thresholds"] = thresholds(*steps)
        custom["thresholdsStyle"] = {"mode": "line+area"}
    return panel("timeseries", title, description, targets, grid, unit=unit, defaults=defaults,
                 options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"],
                                     "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}})


def per_tenant(title: str, description: str, expr: str, grid: tuple[int, int, int, int], *, unit: str,
               legend: str = "{{tenant}}") -> Json:
    """A time series panel with one line per tenant (or per tenant and collector)."""
    return timeseries(title, description, [target(expr, legend=legend)], grid, unit=unit)


def up_down(title: str, description: str, expr: str, legend: str, grid: tuple[int, int, int, int], *,
            down: str) -> Json:
    """A state timeline of a 0/1 gauge: green "ok" for 1, red `down` for 0."""
    return panel("state-timeline", title, description, [target(expr, legend=legend)], grid, unit="none",
                 defaults={"color": {"mode": "thresholds"}, "thresholds": thresholds(("red", None), ("green", 1)),
                           "mappings": [{"type": "value", "options": {"0": {"text": down, "color": "red"},
                                                                      "1": {"text": "ok", "color": "green"}}}]},
                 options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
                          "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}})


def rate_by(title: str, description: str, counter: str, label: str, grid: tuple[int, int, int, int], *,
            unit: str) -> Json:
    """Bars of a counter's per-second rate, one series per value of `label`, over the selected tenants."""
    expr = f"sum by ({label}) (rate({counter}{{{T}}}[$__rate_interval]))"
    legend = " ".join("{{" + name.strip() + "}}" for name in label.split(","))
    return timeseries(title, description, [target(expr, legend=legend)], grid, unit=unit, draw="bars")


def rename(field: str, name: str, color: str | None = None) -> Json:
    properties: list[Json] = [{"id": "displayName", "value": name}]
    if color:
        properties.append({"id": "color", "value": {"mode": "fixed", "fixedColor": color}})
    return {"matcher": {"id": "byName", "options": field}, "properties": properties}


def barchart(title: str, description: str, targets: list[Json], grid: tuple[int, int, int, int], *,
             x_field: str, overrides: list[Json], transformations: list[Json]) -> Json:
    return panel("barchart", title, description, targets, grid, unit="short",
                 defaults={"color": {"mode": "palette-classic"}, "custom": {"fillOpacity": 90, "lineWidth": 0}},
                 options={"xField": x_field, "stacking": "normal", "orientation": "vertical",
                          "showValue": "never", "barWidth": 0.95, "groupWidth": 0.8,
                          "xTickLabelRotation": -45, "xTickLabelSpacing": 80,
                          "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi"}},
                 overrides=overrides, transformations=transformations)


def links() -> list[Json]:
    return [{"type": "dashboards", "title": "Partner Center", "tags": ["partnercenter"], "asDropdown": False,
             "includeVars": True, "keepTime": True, "targetBlank": False, "icon": "external link"}]


def templating(tenant_metric: str) -> Json:
    definition = f"label_values({tenant_metric}{{{SELECTOR}}}, tenant)"
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        {"name": "tenant", "label": "Partner tenant", "type": "query", "datasource": DS,
         "definition": definition, "query": definition,
         "multi": True, "includeAll": True, "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
         "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": []},
    ]}


def dashboard(uid: str, title: str, description: str, tenant_metric: str, time_from: str,
              panels: list[Json]) -> Json:
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": uid, "title": title, "description": description, "tags": ["partnercenter"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "timezone": "utc", "refresh": "5m", "time": {"from": time_from, "to": "now"},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": templating(tenant_metric), "links": links(), "panels": panels,
    }


def dap_overview() -> Json:
    customers = f"sum(partnercenter_dap_customers{{{T}}})"
    over_90 = f'sum(partnercenter_dap_inactive_customers_over_threshold{{{T},threshold_days="90"}})'
    by_date_join = [
        {"id": "joinByField", "options": {"byField": "last_signin_date", "mode": "outer"}},
        {"id": "organize", "options": {"excludeByName": {"Time": True, "Time 1": True, "Time 2": True}}},
        {"id": "sortBy", "options": {"sort": [{"field": "last_signin_date", "desc": False}]}},
    ]
    tenant_join = [
        {"id": "joinByField", "options": {"byField": "tenant", "mode": "outer"}},
        {"id": "organize", "options": {
            "excludeByName": {"Time": True, "Time 1": True, "Time 2": True, "Time 3": True},
            "renameByName": {"tenant": "Partner tenant", "Value #A": "DAP customers",
                             "Value #B": "Inactive over 90 days", "Value #C": "Last successful poll age"}}},
    ]
    return dashboard(
        "partnercenter-dap-overview", "Partner Center DAP overview",
        "DAP (delegated admin privilege) customers per partner tenant, and the ones inactive for more than "
        "90 days that must lose DAP and move to GDAP.",
        "partnercenter_dap_customers", "now-30d",
        [
            stat("DAP customers", f"Customers that still have a DAP relationship (totalDapCustomerCount). {CACHED}",
                 customers, (0, 0, 6, 4), unit="none"),
            stat("Inactive over 90 days",
                 "Customers whose last partner sign-in through DAP is more than 90 days old, or who have no "
                 f"sign-in date at all: remove their DAP relationship and move them to GDAP. {CACHED}",
                 over_90, (6, 0, 6, 4), unit="none", steps=(("green", None), ("red", 1))),
            stat("Share inactive over 90 days",
                 f"Inactive-over-90-days customers as a share of all DAP customers. {CACHED}",
                 f"{over_90} / clamp_min({customers}, 1)", (12, 0, 6, 4), unit="percentunit",
                 steps=(("green", None), ("red", 0.000001)), decimals=1),
            stat("Oldest data", "Age of the oldest last successful poll among the selected tenants. Grows "
                 "when polls fail; the exporter keeps serving the last good values meanwhile.",
                 f"max(time() - partnercenter_exporter_last_success_timestamp_seconds{{{T}}})",
                 (18, 0, 6, 4), unit="s", steps=(("green", None), ("orange", 3600), ("red", 86400))),
            barchart(
                "Inactive customers by last sign-in date",
                "Customers by the date of their last partner sign-in through DAP, summed over the selected "
                "tenants. Red bars are more than 90 days ago (the 90-day marker): those relationships must be "
                "removed. The exporter's UTC date decides which side a date falls on. The grey bar is the "
                "customers with no sign-in date: no partner signed in since monitoring began, so they count "
                f"past every threshold. {CACHED}",
                [target(f"sum by (last_signin_date) (partnercenter_dap_inactive_customers{{{T},{OVER_90}}})",
                        ref="A", instant=True, table=True),
                 target("sum by (last_signin_date) "
                        f"(partnercenter_dap_inactive_customers{{{T},{OVER_90.replace('=~', '!~')}}})",
                        ref="B", instant=True, table=True),
                 target("label_replace(sum(partnercenter_dap_customers_without_signin_date"
                        f'{{{T}}}), "last_signin_date", "no sign-in date", "", "")',
                        ref="C", instant=True, table=True)],
                (0, 4, 12, 9), x_field="last_signin_date",
                overrides=[rename("Value #A", "over 90 days ago", "red"),
                           rename("Value #B", "90 days ago or less", "blue"),
                           rename("Value #C", "no sign-in date", "gray")],
                transformations=by_date_join),
            barchart(
                "Established relationships by date",
                f"DAP relationships by the date they were established, summed over the selected tenants. {CACHED}",
                [target(f"sum by (date) (partnercenter_dap_established_relationships{{{T}}})",
                        instant=True, table=True)],
                (12, 4, 12, 9), x_field="date",
                overrides=[rename("Value", "relationships", "purple")],
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}},
                                 {"id": "sortBy", "options": {"sort": [{"field": "date", "desc": False}]}}]),
            timeseries(
                "DAP customers and inactive customers over time",
                "DAP customers, and the customers whose last sign-in is more than 30, 60 and 90 days old, "
                f"summed over the selected tenants. Falling lines are the GDAP migration progressing. {CACHED}",
                [target(customers, ref="A", legend="DAP customers"),
                 target("sum by (threshold_days) (partnercenter_dap_inactive_customers_over_threshold"
                        f'{{{T},threshold_days=~"30|60|90"}})', ref="B", legend="inactive over {{threshold_days}} days")],
                (0, 13, 24, 8), unit="none"),
            panel("table", "Partner tenants",
                  "Per partner tenant: DAP customers, customers inactive over 90 days, and the age of the last "
                  f"successful poll. {CACHED}",
                  [target(f"sum by (tenant) (partnercenter_dap_customers{{{T}}})", ref="A", instant=True, table=True),
                   target("sum by (tenant) (partnercenter_dap_inactive_customers_over_threshold"
                          f'{{{T},threshold_days="90"}})', ref="B", instant=True, table=True),
                   target(f"max by (tenant) (time() - partnercenter_exporter_last_success_timestamp_seconds{{{T}}})",
                          ref="C", instant=True, table=True)],
                  (0, 21, 24, 8), unit="none",
                  defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                  options={"showHeader": True, "cellHeight": "sm",
                           "sortBy": [{"displayName": "Inactive over 90 days", "desc": True}]},
                  overrides=[
                      {"matcher": {"id": "byName", "options": "Last successful poll age"},
                       "properties": [{"id": "unit", "value": "s"}]},
                      {"matcher": {"id": "byName", "options": "Inactive over 90 days"},
                       "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                      {"id": "thresholds", "value": thresholds(("green", None), ("red", 1))}]},
                  ],
                  transformations=tenant_join),
        ])


def exporter_health() -> Json:
    return dashboard(
        "partnercenter-exporter-health", "Partner Center exporter health",
        "Is partnercenter-exporter polling Partner Center successfully, and if not, why.",
        "partnercenter_exporter_poll_success", "now-24h",
        [
            up_down("Poll success",
                    "Whether the last poll of each partner tenant's collector succeeded. Red means that "
                    "collector's figures are the last good ones, not current.",
                    f"partnercenter_exporter_poll_success{{{T}}}", BY_COLLECTOR, (0, 0, 12, 7), down="failing"),
            per_tenant("Age of the last successful poll",
                       "Seconds since each tenant's last successful poll. It should stay below the poll interval; "
                       "the DataStale alert fires past 3 poll intervals.",
                       f"time() - partnercenter_exporter_last_success_timestamp_seconds{{{T}}}",
                       (12, 0, 12, 7), unit="s", legend=BY_COLLECTOR),
            rate_by("Poll errors by reason",
                    "Failed poll attempts per second by reason, over the selected tenants (retries "
                    "included). auth needs a new login; the others usually recover by themselves.",
                    "partnercenter_exporter_poll_errors_total", "reason", (0, 7, 12, 7), unit="ops"),
            per_tenant("Poll duration",
                       "How long the last poll of each tenant took, retries and Retry-After waits included.",
                       f"partnercenter_exporter_poll_duration_seconds{{{T}}}", (12, 7, 12, 7), unit="s",
                       legend=BY_COLLECTOR),
            per_tenant("Access token expires in",
                       "Seconds until the access token in use expires. Tokens live about an hour and are renewed "
                       "before use from the refresh token; a value far below zero means renewal keeps failing.",
                       f"partnercenter_exporter_token_expiry_timestamp_seconds{{{T}}} - time()",
                       (0, 14, 12, 7), unit="s", legend=BY_COLLECTOR),
            rate_by("API requests by collector and status code",
                    "Requests per second to Partner Center and Microsoft Graph by collector and HTTP status "
                    "code. 401 and 403 point to auth, 429 to throttling, 404 or 410 to a retired API.",
                    "partnercenter_exporter_api_requests_total", "collector, code", (12, 14, 12, 7),
                    unit="reqps"),
            panel("bargauge", "Poll errors in the time range",
                  "Failed poll attempts per reason over the dashboard's time range, summed over the selected tenants.",
                  [target(f"sum by (reason) (increase(partnercenter_exporter_poll_errors_total{{{T}}}[$__range]))",
                          legend="{{reason}}", instant=True)],
                  (0, 21, 12, 7), unit="none",
                  defaults={"color": {"mode": "thresholds"}, "decimals": 0,
                            "thresholds": thresholds(("green", None), ("orange", 1))},
                  options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                           "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
            panel("table", "Build info",
                  "Exporter instances: the version, git commit and Python each runs.",
                  [target("max by (job, instance, version, revision, python_version) "
                          f"(partnercenter_exporter_build_info{{{SELECTOR}}})", instant=True, table=True)],
                  (12, 21, 12, 7), unit="none",
                  options={"showHeader": True, "cellHeight": "sm"},
                  transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]),
            per_tenant("Memory (RSS)",
                       "Resident memory of each exporter process (process_resident_memory_bytes). "
                       "docs/performance.md has the expected size per tenant; a drop to a low value is a restart.",
                       f"process_resident_memory_bytes{{{SELECTOR}}}", (0, 28, 12, 7), unit="bytes",
                       legend="{{instance}}"),
            per_tenant("CPU",
                       "CPU time each exporter process uses per second (1 = one core). Polls and renders show as "
                       "short peaks; scrapes cost next to nothing.",
                       f"rate(process_cpu_seconds_total{{{SELECTOR}}}[$__rate_interval])", (12, 28, 12, 7),
                       unit="percentunit", legend="{{instance}}"),
            up_down("Config reloads",
                    "Whether the last load of each config file worked: config is --config.file (SIGHUP), web is "
                    "--web.config.file. Failed means the previous config is still running.",
                    f"partnercenter_exporter_config_last_reload_successful{{{SELECTOR}}}",
                    "{{instance}} {{config}}", (0, 35, 12, 5), down="failed"),
            up_down("DAP APIs",
                    "Whether each tenant's DAP API (dap_statistics, dap_customers) still answers. Retired means "
                    "its last answer was 404 or 410: Microsoft retired it after the DAP deprecation, the "
                    "figures are the last good ones, and the collector can be dropped.",
                    f"1 - partnercenter_api_retired{{{T}}}", BY_COLLECTOR, (12, 35, 12, 5), down="retired"),
        ])


def customer_table(title: str, description: str, expr: str, grid: tuple[int, int, int, int], *,
                   value: str | None = None, columns: dict[str, str] | None = None,
                   hidden: tuple[str, ...] = (), steps: tuple[tuple[str, float | None], ...] = ()) -> Json:
    """One row per series of an instant query: its labels as columns (but `hidden`) and, if `value`
    names it, its value coloured by `steps`."""
    names = {"tenant": "Partner tenant", "customer_name": "Customer", "customer_tenant_id": "Customer tenant id",
             **(columns or {})}
    order = ["tenant", "customer_name", *[c for c in names if c not in ("tenant", "customer_name")], "Value"]
    overrides: list[Json] = []
    if value and steps:
        overrides.append({"matcher": {"id": "byName", "options": value},
                          "properties": [{"id": "decimals", "value": 1},
                                         {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                         {"id": "thresholds", "value": thresholds(*steps)}]})
    return panel("table", title, description, [target(expr, instant=True, table=True)], grid, unit="none",
                 defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                 options={"showHeader": True, "cellHeight": "sm",
                          "sortBy": [{"displayName": value or "Customer", "desc": False}]},
                 overrides=overrides,
                 transformations=[{"id": "organize", "options": {
                     "excludeByName": {"Time": True, "job": True, "instance": True, "__name__": True,
                                       **dict.fromkeys(hidden, True), **({} if value else {"Value": True})},
                     "indexByName": {name: i for i, name in enumerate(order)},
                     "renameByName": {**names, **({"Value": value} if value else {})}}}])


def relationship_table(title: str, description: str, expr: str, grid: tuple[int, int, int, int]) -> Json:
    """One row per GDAP relationship, with the days it has left."""
    return customer_table(title, description, expr, grid, value="Days left",
                          columns={"relationship_name": "Relationship", "auto_extend": "Auto-extend",
                                   "global_admin": "Global Admin"},
                          hidden=("relationship_id",), steps=(("red", None), ("orange", 14), ("green", 30)))


def gdap_migration() -> Json:
    dap = f"sum(partnercenter_dap_enabled_customers{{{T}}})"
    without = f"sum(partnercenter_dap_customers_without_gdap{{{T}}})"
    with_gdap = f"{dap} - {without}"
    return dashboard(
        "partnercenter-gdap-migration", "DAP to GDAP migration",
        "Which DAP customers nobody at the partner can administer through GDAP yet (no active relationship "
        "with an active access assignment), and which GDAP relationships expire soon or carry Global "
        "Administrator.",
        "partnercenter_dap_enabled_customers", "now-30d",
        [
            stat("DAP customers", f"Customers with DAP (delegatedAdminCustomers, dapEnabled). {GDAP_CACHED}",
                 dap, (0, 0, 4, 4), unit="none"),
            stat("With GDAP", "DAP customers the partner can also administer through GDAP (an active "
                 f"relationship with an active access assignment): ready for DAP removal. {GDAP_CACHED}",
                 with_gdap, (4, 0, 4, 4), unit="none", steps=(("green", None),)),
            stat("Without GDAP", "DAP customers without GDAP access: removing DAP cuts the partner off "
                 f"from them. {GDAP_CACHED}", without, (8, 0, 4, 4), unit="none",
                 steps=(("green", None), ("red", 1))),
            stat("Migration progress", f"Share of DAP customers with GDAP access. {GDAP_CACHED}",
                 f"({with_gdap}) / clamp_min({dap}, 1)", (12, 0, 4, 4), unit="percentunit",
                 steps=(("red", None), ("orange", 0.5), ("green", 0.999)), decimals=1),
            stat("Expiring within 30 days", "Active GDAP relationships that end within 30 days and do "
                 f"not auto-extend. {GDAP_CACHED}",
                 f'sum(partnercenter_gdap_relationships_expiring_without_auto_extend{{{T},within_days="30"}})',
                 (16, 0, 4, 4), unit="none", steps=(("green", None), ("orange", 1))),
            stat("With Global Administrator", "Active GDAP relationships that include the Global "
                 f"Administrator role. {GDAP_CACHED}",
                 f"sum(partnercenter_gdap_relationships_with_global_admin{{{T}}})", (20, 0, 4, 4), unit="none",
                 steps=(("green", None), ("orange", 1))),
            timeseries(
                "Migration progress over time",
                "DAP customers with and without GDAP access, summed over the "
                f"selected tenants. {GDAP_CACHED}",
                [target(with_gdap, ref="A", legend="with GDAP"), target(without, ref="B", legend="without GDAP")],
                (0, 4, 12, 8), unit="none"),
            timeseries(
                "GDAP relationships by status",
                "GDAP relationships of the selected tenants by status, direct and reseller. approvalPending "
                "and created wait for the customer, approved and activating are being set up; only active "
                "can grant access, through an active access assignment (expiring has passed its end date). "
                f"{GDAP_CACHED}",
                [target(f"sum by (status) (partnercenter_gdap_relationships{{{T}}}) > 0", legend="{{status}}")],
                (12, 4, 12, 8), unit="none"),
            customer_table(
                "DAP customers without GDAP",
                "Every customer with DAP and no GDAP access. Request a GDAP relationship for each, and "
                f"assign your security groups to it, before removing DAP. {GDAP_CACHED}",
                f"max by (tenant, customer_name, customer_tenant_id) "
                f"(partnercenter_dap_customer_without_gdap_info{{{T}}})", (0, 12, 12, 10)),
            relationship_table(
                "Relationships ending within 30 days",
                "Active GDAP relationships that end within 30 days, with the days left; those "
                f"without auto-extend need action. {GDAP_CACHED}",
                f"{DAYS_LEFT} < 30", (12, 12, 12, 10)),
            relationship_table(
                "Relationships with Global Administrator",
                "Active GDAP relationships that include Global Administrator, with the days left. "
                f"Replace them with least-privilege roles. {GDAP_CACHED}",
                DAYS_LEFT.replace(T, T + ',global_admin="true"'), (0, 22, 24, 8)),
            per_tenant("Customers with GDAP access",
                       "Distinct customers the partner can administer through GDAP: an active relationship "
                       f"with an active access assignment. {GDAP_CACHED}",
                       f"partnercenter_gdap_customers{{{T}}}", (0, 30, 12, 7), unit="none"),
            timeseries(
                "Relationships expiring without auto-extend",
                "Active GDAP relationships that do not auto-extend and end within 7 or 30 days of "
                f"the last poll, summed over the selected tenants. {GDAP_CACHED}",
                [target("sum by (within_days) (partnercenter_gdap_relationships_expiring_without_auto_extend"
                        f"{{{T}}})", legend="within {{within_days}} days")],
                (12, 30, 12, 7), unit="none"),
            customer_activity_table((0, 37, 24, 12)),
        ])


# Per DAP customer: the last partner sign-in, the DAP start, and whether the partner has GDAP access.
LAST = f"partnercenter_dap_customer_last_signin_timestamp_seconds{{{T}}}"
START = f"partnercenter_dap_customer_start_timestamp_seconds{{{T}}}"
WITHOUT = f"partnercenter_dap_customer_without_gdap_info{{{T}}}"
CUSTOMER = "on (job, instance, tenant, customer_tenant_id)"
# GDAP data exists for the tenant: without it, no customer is called covered.
HAS_GDAP = f"and on (job, instance, tenant) partnercenter_gdap_customers{{{T}}}"
INACTIVE_90 = (f"(time() - {LAST} > 90 * 86400 and {LAST} > 0) or "
               f"((time() - {START} > 90 * 86400) and {CUSTOMER} {LAST} == 0)")
ACTIONS: dict[int, tuple[str, str | None]] = {1: ("Remove DAP: GDAP in place", "green"),
           2: ("Set up GDAP before DAP is removed", "red"),
           3: ("Inactive: remove DAP (or set up GDAP if still needed)", "orange")}


def mapping(values: dict[int, tuple[str, str | None]]) -> Json:
    return {"id": "mappings", "value": [{"type": "value", "options": {
        str(value): {"text": text, **({"color": color} if color else {}), "index": i}
        for i, (value, (text, color)) in enumerate(values.items())}}]}


def customer_activity_table(grid: tuple[int, int, int, int]) -> Json:
    """One row per DAP customer: last partner sign-in, GDAP, Global Admin sign-ins, the next step."""
    covered = f"(({LAST} * 0 + 1) unless {CUSTOMER} {WITHOUT}) {HAS_GDAP}"
    targets = [
        target(f"((time() - {LAST}) / 86400 and {LAST} > 0) or ({LAST} == 0) - 1",
               ref="A", instant=True, table=True),
        target(f"({WITHOUT} * 0) or (({LAST} * 0 + 1) {HAS_GDAP})", ref="B", instant=True, table=True),
        target(f"partnercenter_dap_customer_global_admin_signins{{{T}}}", ref="C", instant=True,
               table=True),
        target(f"{covered} or (({WITHOUT} * 0 + 2) unless {CUSTOMER} ({INACTIVE_90})) "
               f"or (({WITHOUT} * 0 + 3) and {CUSTOMER} ({INACTIVE_90}))", ref="D", instant=True,
               table=True),
    ]
    names = {"Value #A": "Last partner sign-in (days ago)", "Value #B": "GDAP",
             "Value #C": "Global Admin sign-ins (last day)", "Value #D": "Suggested action"}
    overrides = [
        {"matcher": {"id": "byName", "options": names["Value #A"]},
         "properties": [{"id": "decimals", "value": 0}, mapping({-1: ("never", "red")}),
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "thresholds", "value": thresholds(("green", None), ("orange", 60),
                                                                 ("red", 80))}]},
        {"matcher": {"id": "byName", "options": names["Value #B"]},
         "properties": [mapping({0: ("no", "red"), 1: ("yes", "green")}),
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
        {"matcher": {"id": "byName", "options": names["Value #C"]},
         "properties": [{"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "thresholds", "value": thresholds(("green", None), ("orange", 1))}]},
        {"matcher": {"id": "byName", "options": names["Value #D"]},
         "properties": [mapping(ACTIONS),
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
    ]
    return panel(
        "table", "DAP customers: last partner sign-in and next step",
        "Every customer with DAP: days since the last partner sign-in (lastSignInDateTime; never when no "
        "partner ever signed in), whether the partner has GDAP access to it (an active relationship with "
        "an active access assignment), partner sign-ins with "
        "Global Administrator in the last day, and the suggested action. Microsoft removes the remaining "
        "DAP relationships and asks partners to remove those inactive for over 90 days. "
        f"{GDAP_CACHED}",
        targets, grid, unit="none", defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
        options={"showHeader": True, "cellHeight": "sm",
                 "sortBy": [{"displayName": names["Value #D"], "desc": False}]},
        overrides=overrides,
        transformations=[{"id": "merge", "options": {}}, {"id": "organize", "options": {
            "excludeByName": {"Time": True, "job": True, "instance": True},
            "indexByName": {"tenant": 0, "customer_name": 1, "customer_tenant_id": 2, "Value #A": 3,
                            "Value #B": 4, "Value #C": 5, "Value #D": 6},
            "renameByName": {"tenant": "Partner tenant", "customer_name": "Customer",
                             "customer_tenant_id": "Customer tenant id", **names}}}])


ACCESS = f"partnercenter_gdap_customer_access{{{T}}}"
ACCESS_END = f"partnercenter_gdap_customer_access_end_timestamp_seconds{{{T}}}"
AUTO_EXTENDS = f"partnercenter_gdap_customer_access_auto_extends{{{T}}}"
RELATIONSHIP_ASSIGNMENTS = f"partnercenter_gdap_relationship_active_access_assignments{{{T}}}"
NOT_ACTIVE = f"partnercenter_gdap_access_assignment_last_modified_timestamp_seconds{{{T}}}"


def gdap_access() -> Json:
    """Which customers the partner's people can administer through GDAP, and for how long."""
    customers = f"count({ACCESS})"
    without = f"count({ACCESS} == 0)"
    ending = f"(({ACCESS_END} - time()) / 86400 < 30) and {CUSTOMER} ({AUTO_EXTENDS} == 0)"
    return dashboard(
        "partnercenter-gdap-access", "GDAP access",
        "Which customers someone at the partner can administer through GDAP: an active relationship with "
        "an active access assignment. Relationships that give nobody access, access assignments that are "
        "pending or failed, access that ends soon, and requests that wait for approval.",
        "partnercenter_gdap_customer_access", "now-7d",
        [
            stat("Customers", "Every customer of the partner (its contracts, with partner_customers), and any "
                 f"other known from a GDAP relationship or the DAP customer list. {ACCESS_CACHED}",
                 f"{customers} or vector(0)", (0, 0, 4, 4), unit="none"),
            stat("With access", "Customers someone at the partner can administer through GDAP. "
                 f"{ACCESS_CACHED}", f"sum({ACCESS}) or vector(0)", (4, 0, 4, 4), unit="none",
                 steps=(("green", None),)),
            stat("Without access", "Customers nobody at the partner can administer through GDAP. "
                 f"{ACCESS_CACHED}", f"{without} or vector(0)", (8, 0, 4, 4), unit="none",
                 steps=(("green", None), ("red", 1))),
            stat("Relationships without access", "Active relationships without an active access "
                 f"assignment: they give nobody access. {ACCESS_CACHED}",
                 f"count({RELATIONSHIP_ASSIGNMENTS} == 0) or vector(0)", (12, 0, 4, 4), unit="none",
                 steps=(("green", None), ("orange", 1))),
            stat("Access ending within 30 days", "Customers whose access ends within 30 days with nothing "
                 f"that auto-extends it. {ACCESS_CACHED}", f"count({ending}) or vector(0)", (16, 0, 4, 4),
                 unit="none", steps=(("green", None), ("orange", 1))),
            stat("Counted by access assignment", "Share of the selected tenants whose access counts access "
                 "assignments (gdap_access_assignments runs); the others count active relationships only, "
                 f"which overstates access. {ACCESS_CACHED}",
                 f"avg(partnercenter_gdap_customer_access_checks_assignments{{{T}}})", (20, 0, 4, 4),
                 unit="percentunit", steps=(("orange", None), ("green", 1))),
            customer_table(
                "Customers without access",
                "Every customer nobody at the partner can administer through GDAP: no active relationship, or "
                "none with an active access assignment. Request a relationship, or assign a security group "
                "to the one there is. PartnerCenterCustomerWithoutGDAPAccess names each one that stays here "
                f"a day. {ACCESS_CACHED}", f"{ACCESS} == 0", (0, 4, 12, 10)),
            timeseries(
                "Access assignments by status",
                "Access assignments of the active relationships by status. Only active gives access; pending "
                f"and error need a look; deleted is history. {ACCESS_CACHED}",
                [target(f"sum by (status) (partnercenter_gdap_access_assignments{{{T}}}) > 0",
                        legend="{{status}}")], (12, 4, 12, 10), unit="none"),
            customer_table(
                "Relationships without access",
                "Active relationships without an active access assignment: nobody can use their roles until "
                f"a security group is assigned. {ACCESS_CACHED}", f"{RELATIONSHIP_ASSIGNMENTS} == 0",
                (0, 14, 12, 9), columns={"relationship_id": "Relationship id"}),
            customer_table(
                "Access assignments not active",
                "Access assignments that are pending, failed (error) or being deleted, with the security "
                f"group and the days since they last changed. {ACCESS_CACHED}",
                f"(time() - {NOT_ACTIVE}) / 86400", (12, 14, 12, 9), value="Days since last change",
                columns={"status": "Status", "access_container_id": "Security group",
                         "relationship_id": "Relationship id", "assignment_id": "Assignment id"},
                steps=(("green", None), ("orange", 0.042), ("red", 1))),
            panel("bargauge", "Access ending soonest",
                  "The 25 customers whose access ends first, in days from now: the latest end among the "
                  f"relationships that give access. {ACCESS_CACHED}",
                  [target(f"sort(bottomk(25, ({ACCESS_END} - time()) / 86400))", legend="{{customer_name}}",
                          instant=True)],
                  (0, 23, 12, 12), unit="d",
                  defaults={"color": {"mode": "thresholds"}, "decimals": 0,
                            "thresholds": thresholds(("red", None), ("orange", 14), ("green", 30))},
                  options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                           "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
            customer_table(
                "Access ending within 30 days",
                "Customers whose access ends within 30 days and that nothing auto-extends (a relationship "
                f"with Global Administrator never does), with the days left. {ACCESS_CACHED}", ending,
                (12, 23, 12, 12), value="Days left", steps=(("red", None), ("orange", 7), ("green", 30))),
            customer_table(
                "Requests waiting for approval",
                "Relationship requests in approvalPending, with their age in days; Microsoft removes them "
                f"after 90 days. {ACCESS_CACHED}",
                f'(time() - partnercenter_gdap_relationship_created_timestamp_seconds{{{T},status="approvalPending"}})'
                " / 86400", (0, 35, 24, 9), value="Days waiting",
                columns={"relationship_name": "Relationship", "relationship_id": "Relationship id",
                         "status": "Status"},
                steps=(("green", None), ("orange", 60), ("red", 80))),
        ])


DASHBOARDS = {"partnercenter-dap-overview.json": dap_overview, "partnercenter-exporter-health.json": exporter_health,
              "partnercenter-gdap-migration.json": gdap_migration, "partnercenter-gdap-access.json": gdap_access}


def render_all() -> dict[str, str]:
    """Each dashboard's file name and JSON text."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}
