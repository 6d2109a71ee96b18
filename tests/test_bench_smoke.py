"""The benchmark itself runs end to end (a smoke run: no timing is asserted, timing is not tested)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from tests.conftest import REPO


def test_quick_benchmark_completes_and_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--quick", "--events", "400", "--duration", "0.3", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout
    report = orjson.loads(out.read_bytes())
    exp, minimal = report["exporter"], report["minimal"]
    # Every event the load generator sent was accepted by the exporter exactly once (distinct, correctly signed).
    assert report["valid"] is True
    assert exp["accepted_counted"] == exp["events_total"] >= 400
    assert exp["exit_code"] == 0
    for side in (exp, minimal):
        assert side["saturation_rounds"] and side["saturation"] in side["saturation_rounds"]
        assert side["saturation"]["rate"] > 0 and side["server_cpu_us_per_event_median"] > 0
        assert side["saturation"]["errors"] == 0
        assert side["paced"]["measured"] > 0
        assert 0 < side["paced"]["p50_ms"] <= side["paced"]["p99_ms"]
    assert report["ratio"] > 0
    assert exp["rss_mb"] > 0
    assert exp["scrape"]["count"] > 0 and exp["scrape"]["series"] > 0
    assert 1500 < exp["saturation"]["mean_body_bytes"] < 4500  # realistic payload sizes


def test_backtest_speed_bench_runs_a_generated_history_and_reports_its_phases(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.backtest_speed", "--days", "1", "--events-per-day", "300", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backtest wall clock" in proc.stdout and ("PASS" in proc.stdout or "FAIL" in proc.stdout)
    report = orjson.loads(out.read_bytes())
    assert report["days"] == 1 and report["events_per_day"] == 300
    assert 200 < report["events"] < 600  # the generator's day of ~300 events, redeliveries included
    assert report["wall_seconds"] > 0 and report["cpu_user_seconds"] > 0
    assert report["reference_seconds"] > 0
    ratio, wall, ref = report["wall_per_reference"], report["wall_seconds"], report["reference_seconds"]
    assert abs(ratio * ref - wall) <= 0.05 * wall + 0.1  # the wall clock in units of the machine's reference
    # The backtest's own progress lines were read: each phase is there and within the run's wall clock.
    for key in ("ingest_and_sampling_seconds", "raw_backfill_seconds", "rule_query_seconds"):
        assert 0 <= report[key] <= report["wall_seconds"], key
    assert report["rule_levels"] >= 1 and report["reported_seconds"] <= report["wall_seconds"]


def test_backtest_speed_bench_refuses_a_missing_history(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.backtest_speed", "--history", str(tmp_path / "nope.jsonl")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr
