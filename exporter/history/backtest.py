"""`billingwatch backtest`: which alerts would have fired over a history of Stripe events, and when.

1. The exporter's own ingest and detector code runs over the history on a virtual clock (sampler.py) and the
   registry is sampled every scrape interval into OpenMetrics text with timestamps.
2. promtool backfills that into a temporary TSDB; a private Prometheus serves it.
3. The rule files are evaluated over the whole history by that Prometheus (rules_eval.py).
See docs/backtest.md for the choices and their limits.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import yaml

from exporter.config import Config
from exporter.history.events_file import index_history, iter_history
from exporter.history.prom import PrometheusProcess, backfill_openmetrics
from exporter.history.rules_eval import (
    AlertSpan,
    Evaluation,
    duration_or,
    evaluate,
    load_rules,
    load_yaml,
    metric_names,
    rule_files,
)
from exporter.history.sampler import SampleStats, run_virtual

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_RULES_DIR = REPO_ROOT / "rules"
# Candidate scrape intervals; the smallest one that keeps the number of scrapes under MAX_SCRAPES is used.
AUTO_INTERVALS = (15.0, 30.0, 60.0, 120.0, 300.0)
# 25,000 keeps a month of history at 2-minute scrapes: the cost of every later step (samples to write and backfill,
# points for range queries such as the revenue rules' [7d] windows) grows with it.
MAX_SCRAPES = 25_000


@dataclass
class BacktestResult:
    alerts: list[AlertSpan]
    stats: SampleStats
    evaluation: Evaluation
    interval: float
    timings: dict[str, float]


def auto_interval(span_seconds: float) -> float:
    for interval in AUTO_INTERVALS:
        if span_seconds / interval <= MAX_SCRAPES:
            return interval
    return AUTO_INTERVALS[-1]


def scrape_settings(prometheus_yml: Path | None = None) -> tuple[str, float]:
    """(job name of the exporter's scrape job, global evaluation interval) from the shipped prometheus.yml."""
    path = prometheus_yml or (REPO_ROOT / "prometheus.yml")
    job, evaluation = "billingwatch", 60.0
    try:
        doc = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return job, evaluation
    evaluation = duration_or((doc.get("global") or {}).get("evaluation_interval"), evaluation)
    for sc in doc.get("scrape_configs") or []:
        name = str(sc.get("job_name", ""))
        if name and name != "prometheus":
            job = name
            break
    return job, evaluation


def run_backtest(
    history: str | Path,
    *,
    config: Config,
    rules_dir: Path,
    interval: float | None = None,
    tail_seconds: float = 0.0,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> BacktestResult:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    files = rule_files(rules_dir)
    if not files:
        raise FileNotFoundError(f"{rules_dir}: no Prometheus rule files found")
    _, default_eval = scrape_settings()
    # The rules select the exporter's job by the config's rules.job: the virtual scrape must carry that name.
    job = config.rules.job
    rules = load_rules(files, default_eval)
    index = index_history(history)
    timings["index"] = time.monotonic() - t0
    span = index.last - index.first + tail_seconds
    step = interval or auto_interval(span)
    start = math.floor(index.first / step) * step
    end = math.ceil((index.last + tail_seconds) / step) * step
    if index.skipped:
        log(f"backtest: skipped {index.skipped} lines that are neither a Stripe event nor a {{received, event}} object")
    log(
        f"backtest: {len(index)} events from {_iso(index.first)} to {_iso(index.last)}; scraping every {step:g} s "
        f"({int((end - start) / step) + 1} scrapes); {len(rules)} rules from {len(files)} files"
    )
    with tempfile.TemporaryDirectory(prefix="billingwatch-backtest-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        om_path = tmpdir / "exporter.om"
        t1 = time.monotonic()

        def progress(vtime: float, stats: SampleStats) -> None:
            done = (vtime - index.first) / max(1.0, index.last - index.first)
            log(f"  ingest {stats.events}/{len(index)} events ({done:.0%} of history, {_iso(vtime)})")

        with om_path.open("w", encoding="utf-8", buffering=1 << 20) as out:
            stats = run_virtual(
                iter_history(index),
                config=config,
                interval=step,
                start=start,
                end=end,
                out=out,
                target_labels={"job": job, "instance": "backtest"},
                names=metric_names(rules),
                progress=progress,
            )
        timings["ingest_and_sample"] = time.monotonic() - t1
        log(
            f"  ingested {stats.events} events ({stats.duplicates} redeliveries, {stats.invalid} invalid), "
            f"{stats.samples} samples in {timings['ingest_and_sample']:.1f} s"
        )
        t2 = time.monotonic()
        data_dir = tmpdir / "tsdb"
        # promtool says nothing while it works (about 3 s per 100 MB here): say what it is doing before it starts.
        log(f"  promtool backfill of {om_path.stat().st_size / 1e6:.0f} MB of samples into a TSDB ...")
        backfill_openmetrics(om_path, data_dir, end - start + step)
        om_path.unlink()
        timings["backfill"] = time.monotonic() - t2
        log(f"  promtool backfill: {timings['backfill']:.1f} s")
        prom = PrometheusProcess(data_dir, tmpdir, lookback_seconds=step - 0.001)
        t3 = time.monotonic()
        try:
            prom.start()
            counter = [0]

            def backfill_lines(lines: list[str]) -> None:
                counter[0] += 1
                path = tmpdir / f"recorded-{counter[0]}.om"
                path.write_text("".join(lines) + "# EOF\n", encoding="utf-8")
                backfill_openmetrics(path, data_dir, end - start + step)
                path.unlink()

            evaluation = evaluate(
                prom,
                rules,
                start=start,
                end=end,
                min_step=step,
                backfill=backfill_lines,
                progress=lambda msg: log(f"  {msg}"),
            )
        finally:
            prom.stop()
        timings["rules"] = time.monotonic() - t3
    timings["total"] = time.monotonic() - t0
    # The Watchdog fires all along by design (detector="watchdog"): it proves the alerting path, it is no finding.
    alerts = [a for a in evaluation.alerts if a.detector != "watchdog"]
    log(f"backtest: {len(alerts)} alerts; {timings['total']:.1f} s in total")
    return BacktestResult(alerts, stats, evaluation, step, timings)


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s"


HIDDEN_LABELS = {"alertname", "severity", "detector", "job", "instance"}


def print_table(alerts: list[AlertSpan], out: IO[str] = sys.stdout) -> None:
    if not alerts:
        print("No alerts would have fired.", file=out)
        return
    rows = [("STARTS (UTC)", "ENDS (UTC)", "FOR", "ALERT", "SEVERITY", "DETECTOR", "LABELS")]
    for a in alerts:
        extra = ",".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k not in HIDDEN_LABELS and v)
        ends = _iso(a.ends_at) if a.ends_at is not None else "(still firing)"
        length = _duration((a.ends_at or a.starts_at) - a.starts_at) if a.ends_at is not None else "-"
        rows.append((_iso(a.starts_at), ends, length, a.alertname, a.severity, a.detector, extra))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1], file=out)
