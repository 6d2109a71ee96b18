"""Backtest speed: how long `billingwatch backtest` takes over a generated history (issue 11's target: 30 days of
10,000 events a day within 60 s of wall clock).

`python -m bench.backtest_speed` generates the history with `billingwatch simulate --days --events-per-day`
(seeded, so every run backtests the same traffic), then runs `billingwatch backtest` on it as a user would and
prints the wall clock, the CPU of the backtest and of the Prometheus and promtool processes it starts, and the
phases the backtest reports. `--history FILE` times an existing history instead. See docs/backtest.md.

    .venv/bin/python -m bench.backtest_speed [--days 30] [--events-per-day 10000] [--rules DIR] [--json F] [--strict]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 60.0

# What the backtest prints on stderr as it goes (exporter/history/backtest.py).
_INGESTED = re.compile(r"ingested (\d+) events .*? in ([\d.]+) s")
_BACKFILL = re.compile(r"promtool backfill: ([\d.]+) s")
_LEVEL = re.compile(r"\(queries ([\d.]+) s, backfill and restart ([\d.]+) s\)")
_TOTAL = re.compile(r"backtest: (\d+) alerts; ([\d.]+) s in total")


def reference_seconds() -> float:
    """A fixed pure-Python workload (JSON, dicts, hashing), the best of three: the same backtest took 105 s and 135 s
    on this machine an hour apart, so a run's wall clock means something only next to how fast the machine was."""
    doc = {"id": "evt_" + "x" * 24, "data": {"object": {"amount": 1234, "currency": "usd", "metadata": {}}}}
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(60_000):
            doc["data"]["object"]["amount"] = i
            hashlib.sha256(orjson.dumps(doc)).hexdigest()
            orjson.loads(orjson.dumps(doc))
        best = min(best, time.perf_counter() - t0)
    return best


def phases(stderr: str) -> dict[str, Any]:
    """The backtest's own timings, read from its progress lines (absent ones are left out)."""
    found: dict[str, Any] = {}
    if m := _INGESTED.search(stderr):
        found["events"] = int(m.group(1))
        found["ingest_and_sampling_seconds"] = float(m.group(2))
    if m := _BACKFILL.search(stderr):
        found["raw_backfill_seconds"] = float(m.group(1))
    levels = [(float(q), float(b)) for q, b in _LEVEL.findall(stderr)]
    if levels:
        found["rule_levels"] = len(levels)
        found["rule_query_seconds"] = round(sum(q for q, _ in levels), 1)
        found["rule_backfill_and_restart_seconds"] = round(sum(b for _, b in levels), 1)
    if m := _TOTAL.search(stderr):
        found["alerts"] = int(m.group(1))
        found["reported_seconds"] = float(m.group(2))
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backtest_speed", description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=30, help="days of generated history (30)")
    p.add_argument("--events-per-day", type=int, default=10_000, help="events a day (10,000)")
    p.add_argument("--seed", type=int, default=1, help="the generator's seed (1)")
    p.add_argument("--history", help="time this history file instead of generating one")
    p.add_argument("--rules", help="rules directory for the backtest (default: the shipped rules/)")
    p.add_argument("--json", help="also write every figure as JSON to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    a = p.parse_args(argv)
    if a.days <= 0 or a.events_per_day <= 0:
        p.error("--days and --events-per-day must be positive")
    cli = [sys.executable, "-m", "exporter"]
    with tempfile.TemporaryDirectory(prefix="bw-backtest-speed-") as tmp:
        history = a.history or os.path.join(tmp, "history.jsonl")
        if not a.history:
            print(f"generating {a.days} days x {a.events_per_day:,} events a day ...", file=sys.stderr, flush=True)
            gen = subprocess.run(
                [*cli, "simulate", "--days", str(a.days), "--events-per-day", str(a.events_per_day),
                 "--seed", str(a.seed), "--output", history],
                cwd=REPO, capture_output=True, text=True,
            )  # fmt: skip
            if gen.returncode != 0:
                print(f"simulate failed ({gen.returncode}):\n{gen.stderr[-2000:]}", file=sys.stderr)
                return 1
        elif not Path(history).is_file():
            p.error(f"--history {history}: no such file")
        cmd = [*cli, "backtest", history] + (["--rules", a.rules] if a.rules else [])
        reference = reference_seconds()
        print("backtesting ...", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        reference_after = reference_seconds()  # before and after: a drift of the machine during the run shows
    if run.returncode != 0:
        print(f"backtest failed ({run.returncode}):\n{run.stderr[-2000:]}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "days": None if a.history else a.days,
        "events_per_day": None if a.history else a.events_per_day,
        "wall_seconds": round(wall, 1),
        # The backtest and every process it waited for: its Prometheus and promtool runs.
        "cpu_user_seconds": round(after.ru_utime - before.ru_utime, 1),
        "cpu_system_seconds": round(after.ru_stime - before.ru_stime, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "target_seconds": TARGET_SECONDS,
        "reference_seconds": round(reference, 3),
        "reference_after_seconds": round(reference_after, 3),
        "wall_per_reference": round(wall / reference, 1),
        **phases(run.stderr),
    }
    met = wall <= TARGET_SECONDS
    rows = [
        ("backtest wall clock", f"{wall:.1f} s", f"<= {TARGET_SECONDS:g} s", "PASS" if met else "FAIL"),
        ("CPU, user + system (with children)",
         f"{report['cpu_user_seconds']:.1f} + {report['cpu_system_seconds']:.1f} s", "", ""),
        ("wall clock / machine reference", f"{report['wall_per_reference']:.1f}", "",
         f"(reference {reference:.3f} s, after {reference_after:.3f})"),
    ]  # fmt: skip
    for key, label in (
        ("ingest_and_sampling_seconds", "ingest and sampling"),
        ("raw_backfill_seconds", "promtool backfill of the raw samples"),
        ("rule_query_seconds", "rule levels: queries"),
        ("rule_backfill_and_restart_seconds", "rule levels: backfill and restart"),
    ):
        if key in report:
            rows.append((label, f"{report[key]:.1f} s", "", ""))
    print(f"{'measure':<40}  {'value':<16}  {'target':<10}  result")
    print(f"{'-' * 40}  {'-' * 16}  {'-' * 10}  ------")
    for name, value, target, result in rows:
        print(f"{name:<40}  {value:<16}  {target:<10}  {result}".rstrip())
    what = f"{a.days} days x {a.events_per_day:,} events a day" if not a.history else a.history
    print(
        f"\n{what}, {report.get('events', '?')} events, {report.get('alerts', '?')} alerts; load average before "
        f"{report['load_before']}, after {report['load_after']}."
    )
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 1 if a.strict and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
