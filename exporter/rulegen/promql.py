"""Small PromQL builders shared by the rule groups: selectors, counter increases, rule dictionaries."""

from __future__ import annotations

import re
from typing import Any

from exporter import panels
from exporter.money import THREE_DECIMAL, ZERO_DECIMAL
from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import format_duration, parse_duration

# How far before a window counter_increase() looks for the job's earlier scrapes (a new install has none).
MAX_BIRTH_LOOKBACK_SECONDS = 86400


def sel(cfg: RulesConfig, metric: str, *matchers: str) -> str:
    """`metric{job="...",matchers...}`: every selector is limited to the exporter's scrape job."""
    inner = ",".join((f'job="{cfg.job}"', *matchers))
    return f"{metric}{{{inner}}}"


def reads(expr: str, name: str) -> bool:
    """Whether a PromQL expression names the metric or record `name` (not as part of a longer name)."""
    return re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr) is not None


def points(window: str) -> str:
    """The range of a subquery that holds exactly window / step of its aligned points, `[points(w):step]`.

    Subquery points sit on multiples of the step (whole hours, UTC midnights). Prometheus 2 closes a range at both
    ends, so `[24h:1h]` evaluated on an hour mark holds 25 of them (the first hour twice); a minute less holds 24 at
    any evaluation time, in Prometheus 3 (ranges open at the start) too.
    """
    return format_duration(parse_duration(window) - 60)


def counter_increase(selector: str, window: str, by: str, offset: str = "") -> str:
    """Increase of a counter over `window` (ending `offset` ago), summed by `by`, that also counts series born
    inside the window, and never counts an old series' whole history after a monitoring gap.

    The exporter creates a labelled series (a dispute reason, a failure code, a new currency) at its first
    increment, so the series' first sample is already 1 and plain increase() never sees that first event. A series
    absent at the window's start was born inside it and counts with its whole value, but only if the scrape at the
    window's start succeeded (`up`, the job's up series, was 1 then), or if Prometheus had not scraped the job at
    any hour mark of the day before (a new install). After a Prometheus outage or failed scrapes longer than the
    window every old series would look new, and a window's count would jump by everything since the exporter
    started (a card-testing or churn page after every long Prometheus upgrade): those series take increase()
    instead, which sees what happened in the window after the gap, as every other series does (counter resets
    included). An instant look at the window's start, not a stretch, so that a series recreated after an exporter
    restart counts its first event too, and so that no rule reads a window of raw samples before its own.
    """
    at = f" offset {offset}" if offset else ""
    start = "offset " + format_duration(parse_duration(window) + (parse_duration(offset) if offset else 0))
    up = job_up(selector)
    before = format_duration(MAX_BIRTH_LOOKBACK_SECONDS)
    # The day before read at its hour marks (24 points, not a day of raw `up` samples: 17,280 at a 5 s scrape).
    scraped = f"({up} {start} == 1 or {up}{at} unless present_over_time({up}[{before}:1h] {start}))"
    born = f"(({selector}{at} unless {selector} {start}) and on (job, instance) {scraped})"
    return f"sum by ({by}) (\n    (increase({selector}[{window}]{at}) unless {born})\n  or\n    {born}\n)"


def job_up(selector: str) -> str:
    """The scrape job's `up` series for a selector made by sel() (every selector names the job)."""
    job = re.search(r'job="[^"]*"', selector)
    if job is None:
        raise ValueError(f"selector without a job matcher: {selector}")
    return f"up{{{job.group(0)}}}"


def record(name: str, expr: str) -> dict[str, Any]:
    return {"record": name, "expr": expr}


def alert(
    cfg: RulesConfig,
    name: str,
    expr: str,
    *,
    for_duration: str,
    labels: dict[str, str],
    summary: str,
    description: str,
    keep_firing_for: str = "0s",
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if parse_duration(for_duration) > 0:
        rule["for"] = for_duration
    if parse_duration(keep_firing_for) > 0:
        rule["keep_firing_for"] = keep_firing_for
    rule["labels"] = labels
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{cfg.runbook_base_url}#{name.lower()}",
    }
    panel = panels.panel_path(name)
    if cfg.grafana_url and panel:
        rule["annotations"]["dashboard_url"] = cfg.grafana_url.rstrip("/") + panel
    return rule


def dashboard_panels() -> dict[str, str]:
    """alert name -> `/d/<uid>?viewPanel=<id>` of the panel explaining it (exporter/panels.py)."""
    return {alert: f"/d/{uid}?viewPanel={pid}" for alert, (uid, pid, _) in panels.ALERT_PANELS.items()}


def percent(ratio: float) -> str:
    """0.15 -> '15%', 0.0075 -> '0.75%' (for annotations, which state each threshold)."""
    text = f"{ratio * 100:.4f}".rstrip("0").rstrip(".")
    return f"{text}%"


def query_value(
    expr_format: str, args: str, number_format: str = "%.0f", *, money: bool = False, missing: str = "?"
) -> str:
    """A Go-template fragment printing the first value of a query built with printf, or "?" when it is empty.

    `expr_format` is a printf format (use %q for label values: Go quoting is a valid PromQL string), `args` the
    template arguments, `number_format` a printf verb for the value; `money=True` formats it in the minor units
    of $labels.currency instead; `missing` is printed when the query returns nothing.
    """
    shown = money_format(". | first | value") if money else f'{{{{ . | first | value | printf "{number_format}" }}}}'
    return f"{{{{ with printf `{expr_format}` {args} | query }}}}{shown}{{{{ else }}}}{missing}{{{{ end }}}}"


def money_format(pipeline: str) -> str:
    """A Go-template fragment printing an amount with as many decimals as $labels.currency has minor units."""
    zero = " ".join(f'"{c}"' for c in sorted(ZERO_DECIMAL))
    three = " ".join(f'"{c}"' for c in sorted(THREE_DECIMAL))
    return (
        f'{{{{ if eq $labels.currency {zero} }}}}{{{{ {pipeline} | printf "%.0f" }}}}'
        f'{{{{ else if eq $labels.currency {three} }}}}{{{{ {pipeline} | printf "%.3f" }}}}'
        f'{{{{ else }}}}{{{{ {pipeline} | printf "%.2f" }}}}{{{{ end }}}}'
    )
