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
