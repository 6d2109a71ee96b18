"""The few pieces of Grafana's dashboard JSON model BillingWatch uses, as plain functions returning dicts.

Only what the two dashboards need: time series, stat, table and row panels, Prometheus targets, template
variables and a grid that places panels left to right. Every panel and target points at the `${datasource}`
variable, never at a concrete data source uid, so the dashboards work with any Prometheus a user picks.
"""

from __future__ import annotations

from typing import Any

# Grafana 11.0 writes schemaVersion 39; newer versions migrate it on load without changes to these panels.
SCHEMA_VERSION = 39
GRID_WIDTH = 24
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Units for the currencies Grafana has a unit for (packages/grafana-data/src/valueFormats/categories.ts). Other
# currencies show plain numbers with two decimals; the legend or the column next to them names the currency.
CURRENCY_UNITS = {
    "usd": "currencyUSD",
    "eur": "currencyEUR",
    "gbp": "currencyGBP",
    "jpy": "currencyJPY",
    "chf": "currencyCHF",
    "sek": "currencySEK",
    "nok": "currencyNOK",
    "dkk": "currencyDKK",
    "pln": "currencyPLN",
    "czk": "currencyCZK",
    "brl": "currencyBRL",
    "inr": "currencyINR",
    "zar": "currencyZAR",
    "krw": "currencyKRW",
}

Panel = dict[str, Any]


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> dict[str, Any]:
    """A Prometheus query; refIds are assigned by the panel so they stay unique within it."""
    t: dict[str, Any] = {
        "datasource": dict(DATASOURCE),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if table:
        t["format"] = "table"
    return t


def steps(*pairs: tuple[float | None, str]) -> dict[str, Any]:
    """Absolute threshold steps: the first pair's value must be None (the base colour)."""
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in pairs]}


def threshold_steps(warning: float | None = None, critical: float | None = None) -> dict[str, Any]:
    pairs: list[tuple[float | None, str]] = [(None, "green")]
    if warning is not None:
        pairs.append((warning, "orange"))
    if critical is not None:
        pairs.append((critical, "red"))
    return steps(*pairs)


def currency_overrides() -> list[dict[str, Any]]:
    """Per-series currency units, matched on a display name that starts with the lower-case currency code."""
    return [
        {
            "matcher": {"id": "byRegexp", "options": f"^{code}( .*)?$"},
            "properties": [{"id": "unit", "value": unit}],
        }
        for code, unit in CURRENCY_UNITS.items()
    ]


def _base(kind: str, title: str, description: str, targets: list[dict[str, Any]]) -> Panel:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": targets,
    }


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    thresholds: dict[str, Any] | None = None,
    stack: bool = False,
    bars: bool = False,
    minimum: float | None = 0,
    decimals: int | None = None,
    overrides: list[dict[str, Any]] | None = None,
    legend_calcs: tuple[str, ...] = (),
) -> Panel:
    """A time series panel; with `thresholds` the threshold values are drawn as dashed lines."""
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else (25 if stack else 10),
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": custom,
        "thresholds": thresholds or threshold_steps(),
    }
    if minimum is not None:
        defaults["min"] = minimum
    if decimals is not None:
        defaults["decimals"] = decimals
    panel = _base("timeseries", title, description, targets)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    panel["options"] = {
        "legend": {
            "showLegend": True,
            "displayMode": "table" if legend_calcs else "list",
            "placement": "bottom",
            "calcs": list(legend_calcs),
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    thresholds: dict[str, Any] | None = None,
    color_mode: str = "value",
    graph: bool = False,
    decimals: int | None = None,
    no_value: str | None = None,
    overrides: list[dict[str, Any]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
) -> Panel:
    """A single big number (one per series), coloured by its thresholds."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": thresholds or threshold_steps(),
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if no_value is not None:
        defaults["noValue"] = no_value
    if mappings:
        defaults["mappings"] = mappings
    panel = _base("stat", title, description, targets)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "area" if graph else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
        "wideLayout": True,
        "showPercentChange": False,
    }
    return panel


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    transformations: list[dict[str, Any]],
    overrides: list[dict[str, Any]] | None = None,
    sort_by: str | None = None,
    no_value: str | None = None,
) -> Panel:
    """A table of instant query results, shaped by Grafana transformations (merge, organize)."""
    defaults: dict[str, Any] = {
        "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
        "thresholds": threshold_steps(),
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    panel = _base("table", title, description, targets)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    panel["options"] = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
        "sortBy": [{"displayName": sort_by, "desc": True}] if sort_by else [],
    }
    panel["transformations"] = transformations
    return panel


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


class Grid:
    """Places panels in reading order: left to right, wrapping at 24 columns; a row always starts a new line.

    Panel ids are assigned in placement order, so adding a panel at the end never renumbers the others (alert
    annotations link to panels by id).
    """

    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self._x = 0
        self._y = 0
        self._line_height = 0

    def _newline(self) -> None:
        self._y += self._line_height
        self._x = 0
        self._line_height = 0

    def row(self, title: str) -> None:
        if self._x:
            self._newline()
        panel = row(title)
        panel["gridPos"] = {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self._y}
        self._add(panel)
        self._y += 1

    def add(self, panel: Panel, w: int, h: int) -> Panel:
        if not 0 < w <= GRID_WIDTH:
            raise ValueError(f"panel width {w} is outside 1..{GRID_WIDTH}")
        if self._x + w > GRID_WIDTH:
            self._newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self._x, "y": self._y}
        self._x += w
        self._line_height = max(self._line_height, h)
        return self._add(panel)

    def _add(self, panel: Panel) -> Panel:
        panel["id"] = len(self.panels) + 1
        self.panels.append(panel)
        return panel


def datasource_variable(default_uid: str, default_name: str) -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": default_name, "value": default_uid},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value label_values() variable whose "All" is the regex `.*` (so `=~"$name"` matches anything)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": dict(DATASOURCE),
        "definition": query,
        "query": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "options": [],
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }


def custom_variable(name: str, label: str, options: list[tuple[str, str]]) -> dict[str, Any]:
    """A single-value variable choosing among fixed (text, value) options; the first is the default."""
    text, value = options[0]
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(f"{t} : {v}" for t, v in options),
        "current": {"selected": True, "text": text, "value": value},
        "options": [{"selected": i == 0, "text": t, "value": v} for i, (t, v) in enumerate(options)],
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "skipUrlSync": False,
    }


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    panels: list[Panel],
    variables: list[dict[str, Any]],
    links: list[dict[str, Any]],
    time_from: str,
    refresh: str,
) -> dict[str, Any]:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["billingwatch", "stripe"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": links,
        "templating": {"list": variables},
        "panels": panels,
    }


def dashboard_link(title: str, uid: str) -> dict[str, Any]:
    """A link in the dashboard header that keeps the time range and the variables."""
    return {
        "title": title,
        "type": "link",
        "url": f"/d/{uid}",
        "icon": "dashboard",
        "keepTime": True,
        "includeVars": True,
        "asDropdown": False,
        "targetBlank": False,
        "tags": [],
        "tooltip": "",
    }
