"""Static checks of a dashboard against the parts of Grafana's dashboard model BillingWatch relies on, and a small
PromQL scanner that lists the series names a query reads. Used by tests/test_dashboards*.py.

Grafana itself is not available to the tests, so these checks encode what Grafana needs to load and render the
JSON: required fields, unique panel ids, a grid without overlaps, every query bound to the `${datasource}`
variable, known units and transformations, and variables that exist.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

MIN_SCHEMA_VERSION = 39
GRID_WIDTH = 24
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "gauge", "text", "piechart"}
TRANSFORMATIONS = {"merge", "organize", "joinByField", "filterFieldsByName", "sortBy", "reduce", "calculateField"}
# Unit ids from Grafana's packages/grafana-data/src/valueFormats/categories.ts that make sense for this project.
UNITS = {
    "none",
    "short",
    "percent",
    "percentunit",
    "locale",
    "s",
    "ms",
    "m",
    "h",
    "d",
    "dtdurations",
    "dateTimeAsIso",
    "dateTimeAsIsoNoDateIfToday",
    "dateTimeFromNow",
    "cps",
    "ops",
    "reqps",
    "cpm",
    "opm",
    "currencyUSD",
    "currencyGBP",
    "currencyEUR",
    "currencyJPY",
    "currencyRUB",
    "currencyUAH",
    "currencyBRL",
    "currencyDKK",
    "currencyISK",
    "currencyNOK",
    "currencySEK",
    "currencyCZK",
    "currencyCHF",
    "currencyPLN",
    "currencyZAR",
    "currencyINR",
    "currencyKRW",
}
GRAFANA_BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
DASHBOARD_FIELDS = (
    "uid",
    "title",
    "schemaVersion",
    "panels",
    "templating",
    "time",
    "tags",
    "editable",
    "version",
    "annotations",
    "refresh",
)
UID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
VARIABLE_REF = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []) if panel.get("type") == "row" else [])
    return out


def queries_of(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels_of(dashboard) for t in p.get("targets", [])]


def _units(panel: dict[str, Any]) -> list[str]:
    fc = panel.get("fieldConfig", {})
    units = [fc.get("defaults", {}).get("unit")]
    for override in fc.get("overrides", []):
        units += [p["value"] for p in override.get("properties", []) if p.get("id") == "unit"]
    return [u for u in units if u is not None]


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    )


def _threshold_errors(where: str, thresholds: dict[str, Any] | None) -> list[str]:
    if thresholds is None:
        return []
    steps = thresholds.get("steps") or []
    if thresholds.get("mode") not in ("absolute", "percentage"):
        return [f"{where}: thresholds mode {thresholds.get('mode')!r}"]
    if not steps or steps[0].get("value") is not None:
        return [f"{where}: the first threshold step must have value null (the base colour)"]
    values = [s["value"] for s in steps[1:]]
    if any(not isinstance(v, int | float) for v in values) or values != sorted(values):
        return [f"{where}: threshold values must be ascending numbers, got {values}"]
    return []


def model_errors(dashboard: dict[str, Any], known_uids: set[str] | None = None) -> list[str]:
    """Everything wrong with `dashboard` for Grafana to provision and render it; an empty list when it is fine."""
    errors: list[str] = []
    for key in DASHBOARD_FIELDS:
        if key not in dashboard:
            errors.append(f"missing dashboard field {key!r}")
    if errors:
        return errors
    if not UID_PATTERN.match(str(dashboard["uid"])):
        errors.append(f"uid {dashboard['uid']!r} is not 1-40 letters, digits, - or _")
    if not isinstance(dashboard["schemaVersion"], int) or dashboard["schemaVersion"] < MIN_SCHEMA_VERSION:
        errors.append(f"schemaVersion {dashboard['schemaVersion']!r} < {MIN_SCHEMA_VERSION}")

    variables = dashboard["templating"].get("list", [])
    names = [v.get("name") for v in variables]
    if len(set(names)) != len(names):
        errors.append(f"duplicate variable names {names}")
    ds_vars = [v for v in variables if v.get("type") == "datasource"]
    if [v.get("name") for v in ds_vars] != ["datasource"] or ds_vars[0].get("query") != "prometheus":
        errors.append("there must be exactly one data source variable, named datasource, of type prometheus")
    for v in variables:
        if v.get("type") == "query" and v.get("datasource") != DATASOURCE_REF:
            errors.append(f"variable {v.get('name')}: datasource must be {DATASOURCE_REF}")
    defined = set(names) | GRAFANA_BUILTIN_VARIABLES

    panels = panels_of(dashboard)
    ids = [p.get("id") for p in panels]
    if any(not isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
        errors.append(f"panel ids must be unique integers: {ids}")
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("type") not in PANEL_TYPES:
            errors.append(f"{where}: unknown panel type {p.get('type')!r}")
        if not p.get("title"):
            errors.append(f"{where}: no title")
        pos = p.get("gridPos") or {}
        if set(pos) != {"x", "y", "w", "h"} or not all(isinstance(v, int) for v in pos.values()):
            errors.append(f"{where}: gridPos must have integer x, y, w, h: {pos}")
            continue
        if pos["x"] < 0 or pos["y"] < 0 or pos["w"] < 1 or pos["h"] < 1 or pos["x"] + pos["w"] > GRID_WIDTH:
            errors.append(f"{where}: gridPos {pos} is outside the {GRID_WIDTH}-column grid")
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DATASOURCE_REF:
            errors.append(f"{where}: datasource must be {DATASOURCE_REF}, got {p.get('datasource')}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            errors.append(f"{where}: refIds must be set and unique: {refs}")
        for t in targets:
            if t.get("datasource") != DATASOURCE_REF:
                errors.append(f"{where} {t.get('refId')}: datasource must be {DATASOURCE_REF}")
            if not str(t.get("expr", "")).strip():
                errors.append(f"{where} {t.get('refId')}: empty expr")
            for m in VARIABLE_REF.finditer(t.get("expr", "")):
                name = m.group(1) or m.group(2)
                if name not in defined:
                    errors.append(f"{where} {t.get('refId')}: undefined variable ${name}")
        for unit in _units(p):
            if unit not in UNITS:
                errors.append(f"{where}: unknown unit {unit!r}")
        errors += _threshold_errors(where, p.get("fieldConfig", {}).get("defaults", {}).get("thresholds"))
        for tr in p.get("transformations", []):
            if tr.get("id") not in TRANSFORMATIONS:
                errors.append(f"{where}: unknown transformation {tr.get('id')!r}")
    placed = [p for p in panels if p in dashboard["panels"]]  # panels inside collapsed rows have their own grid
    for a, b in combinations(placed, 2):
        if "gridPos" in a and "gridPos" in b and _overlap(a["gridPos"], b["gridPos"]):
            errors.append(f"panels {a.get('id')} and {b.get('id')} overlap: {a['gridPos']} {b['gridPos']}")
    for link in dashboard.get("links", []):
        url = link.get("url", "")
        if known_uids is not None and url.startswith("/d/") and url[3:].split("?")[0] not in known_uids:
            errors.append(f"link {link.get('title')!r} points at unknown dashboard {url}")
    return errors


# ------------------------------------------------------------------------------------------------- PromQL names
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_CLAUSES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "start",
    "end",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (function names, keywords, labels and durations left out)."""
    text = _STRINGS.sub('""', expr)
    names = set(re.findall(r'__name__\s*=\s*"([^"]*)"', expr))
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _CLAUSES.sub(" ", text)
    for m in _NAME.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables ($name and ${name}) with fixed values, as Grafana would before querying."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no test value for ${name} in {expr!r}")
        return values[name]

    return VARIABLE_REF.sub(repl, expr)


# Series Prometheus makes itself: scrape health and the state of alerting rules.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def exporter_series_names(exposition: str = "") -> set[str]:
    """Series names the exporter can expose: the registry `serve` builds (exporter/wiring.py), the detector gauges
    docs/CONTRACTS.md promises (they appear only once a detector has something to report) and, if given, the
    names in a scrape of /metrics."""
    from exporter.config import build_config
    from exporter.wiring import wire

    # With STRIPE_API_KEY (never used here) the wiring includes the missed-delivery poller and its metrics.
    wiring = wire(build_config(), env={"STRIPE_API_KEY": "rk_unused"}, persist=False)
    names = {line.split()[0].split("{")[0] for line in exposition.splitlines() if line and not line.startswith("#")}
    for family in wiring.metrics.registry.collect():
        names |= {sample.name for sample in family.samples}
        if family.type == "gauge":
            names.add(family.name)  # labelled gauges have no sample until a child is set (build_info)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    wiring.state.close()
    contracts = (REPO / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")
    section = contracts.split("## In-process detector gauges", 1)[1].split("\n## ", 1)[0]
    names |= set(re.findall(r"`((?:stripe|billingwatch)_\w+)", section))
    return names


def unknown_names(expr: str, known: set[str]) -> set[str]:
    """Series names `expr` reads that are neither in `known` nor made by Prometheus itself."""
    return {n for n in metric_names(expr) if n not in known | PROMETHEUS_SERIES}
