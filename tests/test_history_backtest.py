"""End-to-end backtests of generated histories with the real promtool and prometheus.

Histories come from `billingwatch simulate --output` (what a user would run), backtests from `billingwatch backtest
--json` in a subprocess, evaluating the shipped rules/ and the in-tree detectors. One anomalous history carries one
injected anomaly per detector at known times; a clean history (with redeliveries and out-of-order subscription
events) must fire nothing at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_binary

START = 1767225600  # 2026-01-01 00:00 UTC
DAYS = 16  # revenue_drop needs two weeks of history before the drop (its cold start)
EVENTS_PER_DAY = 1500
SCRAPE = "60"
ALL_ANOMALIES = (
    "duplicate_charge",
    "negative_invoice",
    "silent_lapse",
    "charge_failure_spike",
    "fraud_spike",
    "revenue_drop",
    "webhook_lag",
)
IN_PROCESS = {"duplicate_charge", "negative_invoice", "silent_lapse"}
# Alerts that an anomaly legitimately causes besides its own: a revenue drop raises the refund-to-revenue ratio.
KNOCK_ON = {"refund_ratio": "revenue_drop"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def _simulate(tmp: Path, name: str, anomalies: tuple[str, ...]) -> tuple[Path, list[dict[str, Any]]]:
    history = tmp / f"{name}.jsonl"
    manifest = tmp / f"{name}.manifest.json"
    args = ["simulate", "--output", str(history), "--manifest", str(manifest), "--days", str(DAYS)]
    args += ["--events-per-day", str(EVENTS_PER_DAY), "--start", str(START), "--seed", "7"]
    for a in anomalies:
        args += ["--anomaly", a]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    return history, json.loads(manifest.read_text())


def _backtest(history: Path) -> list[dict[str, Any]]:
    proc = _cli("backtest", str(history), "--json", "--scrape-interval", SCRAPE)
    assert proc.returncode == 0, proc.stderr
    assert "alerting rules:" in proc.stderr  # progress goes to stderr, never into the JSON
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def anomalous(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    require_binary("promtool")
    require_binary("prometheus")
    history, manifest = _simulate(tmp_path_factory.mktemp("anomalous"), "anomalous", ALL_ANOMALIES)
    return _backtest(history), manifest


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    require_binary("promtool")
    require_binary("prometheus")
    history, _ = _simulate(tmp_path_factory.mktemp("clean"), "clean", ())
    return _backtest(history), history


@pytest.mark.parametrize("anomaly", ALL_ANOMALIES)
def test_each_injected_anomaly_fires_its_detectors_alert_in_its_window(anomalous: Any, anomaly: str) -> None:
    alerts, manifest = anomalous
    (inj,) = [m for m in manifest if m["anomaly"] == anomaly]
    mine = [a for a in alerts if a["detector"] == anomaly]
    in_window = [a for a in mine if inj["start"] <= a["starts_at"] <= inj["expect_by"]]
    assert in_window, f"{anomaly} injected at {inj['start']}: no alert by {inj['expect_by']}; got {mine}"
    for a in in_window:
        assert a["alertname"].startswith("BillingWatch")
        assert a["severity"] in ("critical", "warning", "info")
        assert a["labels"]["alertname"] == a["alertname"]
        assert a["ends_at"] is None or a["ends_at"] > a["starts_at"]
    if anomaly in IN_PROCESS:
        # The in-process detectors name whom the anomaly is about.
        assert {a["labels"].get("customer") for a in in_window} == {inj["customer"]}
        # The anomaly series lives for the detectors' TTL (1 h), then vanishes; the alert keeps firing for the
        # rule's keep_firing_for (1 m) and resolves at the next evaluation on the scrape grid.
        for a in in_window:
            assert a["ends_at"] is not None
            assert 3600 <= a["ends_at"] - a["starts_at"] <= 3600 + 60 + 2 * int(SCRAPE)
    if anomaly == "silent_lapse":
        assert {a["labels"].get("subscription") for a in in_window} == {inj["subscription"]}
    if anomaly == "revenue_drop":
        assert "usd" in {a["labels"].get("currency") for a in in_window}


def test_anomalous_history_fires_nothing_outside_the_injected_windows(anomalous: Any) -> None:
    alerts, manifest = anomalous
    windows = {m["anomaly"]: (m["start"], m["end"]) for m in manifest}
    strays = []
    for a in alerts:
        cause = KNOCK_ON.get(a["detector"], a["detector"])
        start, end = windows.get(cause, (0, -1))
        if not start <= a["starts_at"] <= end + 3600:
            strays.append(a)
    assert strays == []


def test_clean_history_with_redeliveries_and_out_of_order_events_fires_nothing(clean: Any) -> None:
    alerts, history = clean
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    ids = Counter(line["event"]["id"] for line in lines)
    assert sum(1 for n in ids.values() if n > 1) > 50  # the history does redeliver
    first_seen: dict[tuple[str, str], float] = {}
    for line in lines:
        ev = line["event"]
        if ev["type"].startswith("customer.subscription."):
            first_seen.setdefault((ev["data"]["object"]["id"], ev["type"]), line["received"])
    out_of_order = [
        sub
        for (sub, kind), received in first_seen.items()
        if kind == "customer.subscription.created"
        and received > first_seen.get((sub, "customer.subscription.updated"), received)
    ]
    assert len(out_of_order) > 5  # and delivers some updates before their creation
    assert alerts == []


def test_backtest_uses_thresholds_rendered_from_the_users_config(tmp_path: Path) -> None:
    require_binary("promtool")
    require_binary("prometheus")
    history = tmp_path / "short.jsonl"
    proc = _cli("simulate", "--output", str(history), "--days", "2", "--events-per-day", "2000", "--start", str(START))
    assert proc.returncode == 0, proc.stderr
    # ~3 % of charges fail in generated traffic: silent with the shipped thresholds (at least 20 %, z = 3.5), loud
    # with a 2 % threshold, a small z and no minimum counts.
    config = tmp_path / "billingwatch.yml"
    spike = {"min_threshold_ratio": 0.01, "max_threshold_ratio": 0.02, "z": 0.5, "min_failures": 1}
    config.write_text(yaml.safe_dump({"rules": {"charge_failure_spike": {**spike, "min_failing_payers": 1}}}))
    proc = _cli("backtest", str(history), "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert alerts and {a["detector"] for a in alerts} == {"charge_failure_spike"}
    assert all(START <= a["starts_at"] <= START + 2 * 86400 for a in alerts)
    # An explicit --rules wins over the config's rendering: the shipped rules stay silent.
    proc = _cli("backtest", str(history), "--json", "--config", str(config), "--rules", str(REPO / "rules"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
