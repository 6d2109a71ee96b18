"""`billingwatch evaluate`: backtest every corpus scenario with the shipped rules and score the alerts.

Each scenario (exporter/history/corpus.py) is generated, written to a temporary history file and backtested by
run_backtest exactly as `billingwatch backtest` does (the exporter's own code on a virtual clock, promtool, a
private Prometheus); its alerts are then matched to the scenario's labels (exporter/history/scoring.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from exporter.config import Config
from exporter.history.corpus import SCENARIOS, Scenario, select
from exporter.history.scoring import Score, score

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def run_scenario(
    scenario: Scenario,
    *,
    config: Config,
    rules_dir: Path,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> tuple[Score, dict[str, float]]:
    """Generate, backtest and score one scenario; also returns the time each step took."""
    from exporter.history.backtest import run_backtest
    from exporter.history.generator import history_lines

    t0 = time.monotonic()
    pairs, labels = scenario.generate()
    timings = {"generate": time.monotonic() - t0}
    with tempfile.TemporaryDirectory(prefix="billingwatch-evaluate-", dir=workdir) as tmp:
        path = Path(tmp) / f"{scenario.name}.jsonl"
        with path.open("wb") as out:
            for line in history_lines(pairs):
                out.write(orjson.dumps(line) + b"\n")
        log(f"{scenario.name}: {len(pairs)} deliveries over {scenario.warmup_days + scenario.eval_days:g} days")
        result = run_backtest(
            path, config=config, rules_dir=rules_dir, interval=scenario.scrape_interval, workdir=workdir, log=log
        )
    timings.update({f"backtest_{k}": v for k, v in result.timings.items()})
    end = min(scenario.end, result.stats.end)
    return score(scenario.name, result.alerts, labels, eval_start=scenario.start + scenario.warmup_days * 86400,
                 eval_end=end), timings  # fmt: skip


def _fmt_delay(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def anomaly_rows(scores: list[Score]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("SCENARIO", "ANOMALY", "DETECTOR", "RESULT", "DELAY", "ALERTS")]
    for s in scores:
        for o in s.outcomes:
            lb = o.label
            kind = lb.kind if lb.livemode else f"{lb.kind} (test mode)"
            detector = lb.detector or "(no live alert)"
            rows.append((s.scenario, kind, detector, o.status, _fmt_delay(o.delay), str(o.alerts)))
    return rows


def false_rows(scores: list[Score]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("SCENARIO", "EVAL DAYS", "DETECTOR", "FALSE ALERTS", "FALSE ALERT-HOURS")]
    for s in scores:
        days = f"{(s.eval_end - s.eval_start) / 86400:.1f}"
        by = s.false_by_detector()
        if not by:
            rows.append((s.scenario, days, "-", "0", "0"))
        for detector, (n, hours) in sorted(by.items()):
            rows.append((s.scenario, days, detector or "(none)", str(n), f"{hours:.1f}"))
    return rows


def detector_rows(scores: list[Score]) -> list[tuple[str, ...]]:
    """Per detector over the whole corpus: catches, worst delay, false alerts per 30 evaluated days."""
    days = sum(s.eval_end - s.eval_start for s in scores) / 86400 or 1.0
    stats: dict[str, list[Any]] = {}
    for s in scores:
        for o in s.outcomes:
            if o.label.detector is None:
                continue
            st = stats.setdefault(o.label.detector, [0, 0, None, 0, 0.0])
            st[1] += 1
            if o.status == "caught":
                st[0] += 1
                st[2] = o.delay if st[2] is None else max(st[2], o.delay or 0.0)
        for detector, (n, hours) in s.false_by_detector().items():
            st = stats.setdefault(detector, [0, 0, None, 0, 0.0])
            st[3] += n
            st[4] += hours
    header = ("DETECTOR", "CAUGHT", "WORST DELAY", "FALSE ALERTS", "FALSE ALERT-HOURS", "FALSE / 30 DAYS")
    rows: list[tuple[str, ...]] = [header]
    for detector, (caught, labelled, worst, n, hours) in sorted(stats.items()):
        rows.append((detector or "(none)", f"{caught}/{labelled}", _fmt_delay(worst), str(n), f"{hours:.1f}",
                     f"{n * 30 / days:.1f}"))  # fmt: skip
    return rows


def print_rows(rows: list[tuple[str, ...]], out: IO[str]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def print_report(scores: list[Score], out: IO[str] = sys.stdout) -> None:
    print("Injected anomalies", file=out)
    print_rows(anomaly_rows(scores), out)
    print("\nFalse alerts (evaluated period only; warm-up not scored)", file=out)
    print_rows(false_rows(scores), out)
    print("\nPer detector", file=out)
    print_rows(detector_rows(scores), out)


# -- command ---------------------------------------------------------------------------------------------------


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenarios",
        help="comma-separated scenario names (default: the whole corpus except the quick test-suite subset)",
    )
    p.add_argument("--quick", action="store_true", help="only the quick subset the test suite runs")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--json", action="store_true", help="one JSON object per scenario and line instead of tables")
    p.add_argument("--config", "-c", help="billingwatch.yml for the detectors' settings (default: shipped defaults)")
    p.add_argument("--rules", help="directory of Prometheus rule files (default: the shipped rules/)")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _evaluate(args: argparse.Namespace) -> int:
    from exporter.history.backtest import DEFAULT_RULES_DIR
    from exporter.history.command import load_config_or_report
    from exporter.history.prom import PrometheusError

    if args.list:
        for s in SCENARIOS:
            span = f"{s.warmup_days:g}+{s.eval_days:g} d"
            print(f"{s.name:22} {span:9} {'quick ' if s.quick else ''}{s.description}")
        return 0
    try:
        scenarios = select(args.scenarios.split(",") if args.scenarios else None, quick=args.quick)
    except ValueError as exc:
        _err(f"billingwatch evaluate: {exc}")
        return 2
    config = load_config_or_report(args.config, "evaluate")
    if config is None:
        return 1
    logging.getLogger("billingwatch").setLevel(logging.ERROR)
    rules_dir = Path(args.rules) if args.rules else DEFAULT_RULES_DIR
    scores: list[Score] = []
    t0 = time.monotonic()
    for i, scenario in enumerate(scenarios, 1):
        _err(f"[{i}/{len(scenarios)}] {scenario.name}: {scenario.description}")
        try:
            result, timings = run_scenario(scenario, config=config, rules_dir=rules_dir, log=lambda m: _err("  " + m))
        except (PrometheusError, FileNotFoundError, ValueError) as exc:
            _err(f"billingwatch evaluate: {scenario.name}: {exc}")
            return 1
        _err(f"  {scenario.name}: {sum(timings[k] for k in ('generate', 'backtest_total')):.0f} s")
        scores.append(result)
        if args.json:
            doc = {**result.as_dict(), "seconds": {k: round(v, 2) for k, v in timings.items()}}
            sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
            sys.stdout.buffer.flush()
    _err(f"evaluate: {len(scenarios)} scenarios in {time.monotonic() - t0:.0f} s")
    if not args.json:
        print_report(scores)
    return 0


COMMANDS: list[Command] = [
    (
        "evaluate",
        "backtest the labelled evaluation corpus with the rules and print caught/missed, delays and false alerts",
        _args,
        _evaluate,
    ),
]
