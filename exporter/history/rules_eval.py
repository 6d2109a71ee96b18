"""Evaluating Prometheus rule files over a backfilled history.

PromQL is only ever evaluated by Prometheus (query_range on the backtest's private server). This module does the
bookkeeping around it that the rule manager does in a live Prometheus:

- recording rules are evaluated in dependency order (a rule reading another rule's output waits for it), their
  results are backfilled as series named by `record` with the rule's labels, and Prometheus is restarted to see them;
- alerting rules become alert intervals: a series present at consecutive evaluations is pending from the first one,
  firing once it has been present for `for:` and resolved at the first evaluation where it is absent (or, with
  `keep_firing_for:`, once it has been absent that long). Like Prometheus, `starts_at` is the time the alert started
  firing and `ends_at` the evaluation that resolved it.
"""

from __future__ import annotations

import contextlib
import gc
import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.history.prom import PrometheusProcess
from exporter.rulegen.durations import parse_seconds
from exporter.rulegen.promql import reads

DEFAULT_LOOKBACK = 300.0
_NOT_FINITE = frozenset(("NaN", "+Inf", "-Inf"))
QUERY_THREADS = 3
_TEMPLATE_LABEL = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# A `{` not right after a metric name opens a selector that matches by labels only (`{job="x"}`), or is in a string.
_NAMELESS_SELECTOR = re.compile(r"(?:^|[^A-Za-z0-9_:\s])\s*\{")


def duration_or(value: Any, default: float = 0.0) -> float:
    """Seconds of an optional duration of a rule file or prometheus.yml (`interval`, `for`, ...): absent is
    `default`, anything else must be a Prometheus duration."""
    if value is None or value == "":
        return default
    return parse_seconds(str(value))


@dataclass
class Rule:
    group: str
    interval: float
    expr: str
    record: str | None = None
    alert: str | None = None
    for_seconds: float = 0.0
    keep_firing_for: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class AlertSpan:
    alertname: str
    labels: dict[str, str]
    starts_at: float
    ends_at: float | None

    @property
    def detector(self) -> str:
        return self.labels.get("detector", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "alertname": self.alertname,
            "detector": self.detector,
            "severity": self.severity,
            "labels": self.labels,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        }


# libyaml's loader where PyYAML has it (the manylinux wheels do): the same documents, and a backtest parses every
# rule and promtool test file (17 files, 0.85 s with the pure-Python loader, 0.06 s with this one, three times
# per backtest: 2.7 s of a 6-day backtest's cProfile).
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, libyaml or pure Python


def rule_files(rules_dir: Path) -> list[Path]:
    """Rule files of a directory: *.yml/*.yaml with a `groups:` key (unit-test files are skipped)."""
    found = []
    for path in sorted(list(rules_dir.rglob("*.yml")) + list(rules_dir.rglob("*.yaml"))):
        try:
            doc = load_yaml(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("groups"), list):
            found.append(path)
    return found


def load_rules(files: list[Path], default_interval: float) -> list[Rule]:
    rules = []
    for path in files:
        doc = load_yaml(path.read_text(encoding="utf-8"))
        for group in doc.get("groups") or []:
            interval = duration_or(group.get("interval"), default_interval)
            for r in group.get("rules") or []:
                rules.append(
                    Rule(
                        group=str(group.get("name", "")),
                        interval=interval,
                        expr=str(r["expr"]),
                        record=r.get("record"),
                        alert=r.get("alert"),
                        for_seconds=duration_or(r.get("for")),
                        keep_firing_for=duration_or(r.get("keep_firing_for")),
                        labels={str(k): str(v) for k, v in (r.get("labels") or {}).items()},
                    )
                )
    return rules


def metric_names(rules: list[Rule]) -> set[str] | None:
    """Every name that the rules' expressions could select a series by, or None when some selector may match
    series of any name (`{job="x"}`, `{__name__=~"..."}`).

    Over-inclusive by design: every word of an expression counts (function names, labels, words in strings), as
    only a name that is missing here could change a result.
    """
    names: set[str] = set()
    for rule in rules:
        if "__name__" in rule.expr or _NAMELESS_SELECTOR.search(rule.expr):
            return None
        names.update(_NAME.findall(rule.expr))
    return names


def recording_levels(rules: list[Rule]) -> list[list[Rule]]:
    """Recording rules grouped so that each level only reads raw series and rules of earlier levels."""
    recording = [r for r in rules if r.record]
    names = {r.record for r in recording if r.record}
    deps: dict[int, set[str]] = {}
    for i, r in enumerate(recording):
        deps[i] = {n for n in _read_names(r.expr, names) if n != r.record}
    done: set[str] = set()
    levels: list[list[Rule]] = []
    remaining = dict(enumerate(recording))
    while remaining:
        level = [i for i, r in remaining.items() if deps[i] <= done]
        if not level:  # a cycle: evaluate the rest together rather than loop forever
            level = list(remaining)
        levels.append([remaining.pop(i) for i in level])
        done |= {r.record for r in levels[-1] if r.record}
    return levels


def _read_names(expr: str, names: set[str]) -> set[str]:
    """Which of `names` an expression reads."""
    return {n for n in names if reads(expr, n)}


def alerting_rounds(rules: list[Rule], levels: list[list[Rule]]) -> list[list[Rule]]:
    """Alerting rules by how many recording levels they need: round n reads only raw series and levels 1..n.

    Round n is evaluated with the queries of level n + 1 (the last round after every level), on the same data as
    after the last level: what a rule reads is all there. An expression that may select series by labels alone
    waits for every level.
    """
    level_of = {r.record: n for n, level in enumerate(levels, 1) for r in level if r.record}
    rounds: list[list[Rule]] = [[] for _ in range(len(levels) + 1)]
    for rule in rules:
        if not rule.alert:
            continue
        if metric_names([rule]) is None:
            rounds[-1].append(rule)
            continue
        rounds[max((level_of[n] for n in _read_names(rule.expr, set(level_of))), default=0)].append(rule)
    return rounds


def grid_start(start: float, step: float) -> float:
    """Prometheus aligns rule evaluation to multiples of the interval; so do we."""
    return math.ceil(start / step) * step


def recorded_series_lines(
    rule: Rule, result: list[dict[str, Any]], *, step: float, fill_step: float, end: float
) -> list[str]:
    """OpenMetrics lines for a recording rule's results, each series in time order.

    A rule evaluated every `step` seconds is written on the finer scrape grid (`fill_step`) too, repeating each
    value until the next evaluation (at most Prometheus's default 5 min lookback): a live Prometheus lets any
    query between two evaluations see the last recorded value, while the backtest's short lookback would not.
    """
    repeats = max(1, round(min(step, DEFAULT_LOOKBACK) / fill_step))
    lines = []
    for series in result:
        labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
        labels.update(rule.labels)
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        key = f"{rule.record}{{{inner}}} "
        values = series["values"]
        if repeats == 1:  # most rules: the scrape grid is their grid; ~3 million samples a month, kept lean
            lines.extend([f"{key}{value} {ts}\n" for ts, value in values if value not in _NOT_FINITE])
            continue
        for i, (ts, value) in enumerate(values):
            if value in _NOT_FINITE:
                continue  # not representable as a plain sample that queries would treat like Prometheus does
            next_ts = float(values[i + 1][0]) if i + 1 < len(values) else end + fill_step
            t = float(ts)
            for k in range(repeats):
                at = t + k * fill_step
                if at >= next_ts or at > end:
                    break
                lines.append(f"{key}{value} {at:.3f}\n")
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def alert_spans(rule: Rule, result: list[dict[str, Any]], *, step: float, first: float, last: float) -> list[AlertSpan]:
    """Firing intervals of an alerting rule from its expression's values on the evaluation grid."""
    spans: list[AlertSpan] = []
    for series in result:
        labels = _alert_labels(rule, series["metric"])
        labels["alertname"] = rule.alert or ""
        times = [float(ts) for ts, _ in series["values"]]
        spans.extend(_spans_of(rule, labels, times, step=step, last=last))
    spans.sort(key=lambda s: (s.starts_at, s.alertname))
    return spans


def _alert_labels(rule: Rule, metric: dict[str, str]) -> dict[str, str]:
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    series_labels = dict(labels)
    for key, value in rule.labels.items():
        labels[key] = _TEMPLATE_LABEL.sub(lambda m: series_labels.get(m.group(1), ""), value)
    return labels


def _spans_of(rule: Rule, labels: dict[str, str], times: list[float], *, step: float, last: float) -> list[AlertSpan]:
    # Runs of consecutive evaluations where the expression returned this series.
    runs: list[tuple[float, float]] = []
    for t in times:
        if runs and t - runs[-1][1] <= step * 1.001:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    out: list[AlertSpan] = []
    current: AlertSpan | None = None
    current_last_seen = 0.0
    for active_at, seen_until in runs:
        if current is not None:
            # Firing and absent since current_last_seen + step; keep_firing_for may bridge the gap.
            absent_since = current_last_seen + step
            if rule.keep_firing_for > 0 and active_at - absent_since < rule.keep_firing_for:
                current_last_seen = seen_until
                continue
            current.ends_at = _resolved_at(absent_since, rule, step)
            out.append(current)
            current = None
        fire_at = active_at + math.ceil(rule.for_seconds / step - 1e-9) * step
        if fire_at > seen_until:
            continue  # pending only: it disappeared before `for:` was reached
        current = AlertSpan(labels["alertname"], dict(labels), fire_at, None)
        current_last_seen = seen_until
    if current is not None:
        absent_since = current_last_seen + step
        resolved = _resolved_at(absent_since, rule, step)
        current.ends_at = resolved if resolved <= last else None
        out.append(current)
    return out


def _resolved_at(absent_since: float, rule: Rule, step: float) -> float:
    if rule.keep_firing_for <= 0:
        return absent_since
    return absent_since + math.ceil(rule.keep_firing_for / step - 1e-9) * step


@dataclass
class Evaluation:
    alerts: list[AlertSpan]
    recorded_series: int
    alert_rules: int
    recording_rules: int


@contextlib.contextmanager
def _without_garbage_collection() -> Iterator[None]:
    """Each level's results are millions of [time, value] lists; while they pile up, Python ran ~20 full
    collections over them in a month's backtest, 2.3 of the phase's 6.2 s of CPU, and found nothing: the results
    hold no reference cycles. Collection is back on when the rules are done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@_without_garbage_collection()
def evaluate(
    prom: PrometheusProcess,
    rules: list[Rule],
    *,
    start: float,
    end: float,
    min_step: float,
    backfill: Callable[[list[str]], None],
    progress: Callable[[str], None] = lambda _msg: None,
) -> Evaluation:
    """Recording rules level by level (backfilled, then Prometheus restarted); each alerting rule with the queries
    of the first level after the recorded series it reads (alerting_rounds), to keep both cores busy."""
    recorded = 0
    levels = recording_levels(rules)
    rounds = alerting_rounds(rules, levels)
    alerts: list[AlertSpan] = []

    def query(batch: list[Rule]) -> list[str]:
        nonlocal recorded
        lines: list[str] = []
        for rule, result in _query_all(prom, batch, start=start, end=end, min_step=min_step):
            step = _step(rule, min_step)
            if rule.record:
                lines.extend(recorded_series_lines(rule, result, step=step, fill_step=min_step, end=end))
                recorded += len(result)
            else:
                first = grid_start(start, step)
                last = first + math.floor((end - first) / step) * step
                alerts.extend(alert_spans(rule, result, step=step, first=first, last=last))
        return lines

    for n, level in enumerate(levels, 1):
        t0 = time.monotonic()
        lines = query(level + rounds[n - 1])
        t1 = time.monotonic()
        if lines:
            backfill(lines)
            prom.restart()
        with_alerts = f" and {len(rounds[n - 1])} alerting rules" if rounds[n - 1] else ""
        progress(
            f"recording rules level {n}/{len(levels)}: {len(level)} rules{with_alerts}, {len(lines)} samples "
            f"(queries {t1 - t0:.1f} s, backfill and restart {time.monotonic() - t1:.1f} s)"
        )
    t0 = time.monotonic()
    query(rounds[-1])
    alerting = sum(len(r) for r in rounds)
    progress(f"alerting rules: {alerting} evaluated, {len(alerts)} alerts ({time.monotonic() - t0:.1f} s)")
    alerts.sort(key=lambda s: (s.starts_at, s.alertname))
    return Evaluation(alerts, recorded, alerting, sum(len(level) for level in levels))


def _query_all(
    prom: PrometheusProcess, rules: list[Rule], *, start: float, end: float, min_step: float
) -> list[tuple[Rule, list[dict[str, Any]]]]:
    """Each rule's expression over the whole range, on its own grid; QUERY_THREADS queries at a time (Prometheus
    evaluates each query on one core, and nothing else runs meanwhile)."""

    def one(rule: Rule) -> tuple[Rule, list[dict[str, Any]]]:
        step = _step(rule, min_step)
        first = grid_start(start, step)
        last = first + math.floor((end - first) / step) * step
        return rule, series_by_labels(prom.query_range(rule.expr, first, last, step))

    with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
        return list(pool.map(one, rules))


def series_by_labels(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A rule's result as the rule manager sees it: series told apart by their labels without `__name__`.

    A range query keeps the metric name, so `a > 1 or b` returns series `a` at some evaluations and `b` at others
    with the same labels. A recording rule writes both into the one series named by `record`, and an alerting
    rule keeps one alert for both: their samples are merged here, in time order. (`or` and the other set
    operators ignore `__name__` too, so two such series never share an evaluation.)
    """
    groups: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for series in result:
        key = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
        groups.setdefault(key, []).append(series)
    out = []
    for key, group in groups.items():
        if len(group) == 1:  # the usual case: already in time order (query_range), nothing to merge
            out.append({"metric": dict(key), "values": group[0]["values"]})
            continue
        points: dict[int, list[Any]] = {}
        for series in group:
            for point in series["values"]:
                points.setdefault(round(float(point[0]) * 1000), point)
        out.append({"metric": dict(key), "values": [points[t] for t in sorted(points)]})
    return out


def _step(rule: Rule, min_step: float) -> float:
    """Rules evaluate at their group's interval, but never finer than the scrape grid (nothing changes between)."""
    if rule.interval <= min_step:
        return min_step
    return math.ceil(rule.interval / min_step) * min_step
