"""`billingwatch evaluate` on the corpus's quick subset: real backtests (promtool, Prometheus) of labelled scenarios.

The assertions hold with the rules shipped today and are the floor the detectors must keep: a total outage of an
hour at 1,500 charges a day and a duplicate charge are caught, within minutes, naming whom they are about; a
clean history of that size raises no in-process anomaly. (The rate rules' false alerts on noisy clean traffic are
what the seasonal, significance-aware rules replace; the lead tightens these assertions once they are merged.)
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.history.corpus import BY_NAME, SCENARIOS, select
from exporter.history.scenario import KINDS
from tests.conftest import REPO, require_binary

IN_PROCESS = {"duplicate_charge", "negative_invoice", "silent_lapse"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@pytest.fixture(scope="module")
def quick() -> tuple[dict[str, dict[str, Any]], str]:
    require_binary("promtool")
    require_binary("prometheus")
    proc = _cli("evaluate", "--quick", "--json")
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {d["scenario"]: d for d in docs}, proc.stderr


def test_quick_subset_is_the_scenarios_marked_quick_and_reports_progress_on_stderr(quick: Any) -> None:
    docs, stderr = quick
    assert sorted(docs) == sorted(s.name for s in SCENARIOS if s.quick)
    assert "[1/2]" in stderr and "alerting rules:" in stderr
    for doc in docs.values():
        assert doc["eval_days"] == pytest.approx(1.5, abs=0.01)
        assert doc["seconds"]["backtest_total"] > 0


def test_a_total_outage_and_a_duplicate_charge_at_mid_volume_are_caught_in_time(quick: Any) -> None:
    docs, _ = quick
    outcomes = {a["kind"]: a for a in docs["quick-mid-outage"]["anomalies"]}
    outage, dup = outcomes["total_outage"], outcomes["duplicate_charge"]
    assert outage["status"] == "caught"
    assert outage["delay"] <= 15 * 60  # the target at 200+ charges a day
    assert dup["status"] == "caught" and dup["delay"] <= 5 * 60
    assert dup["keys"]["customer"].startswith("cus_dupcharge")


def test_a_clean_mid_volume_history_raises_no_in_process_anomaly(quick: Any) -> None:
    docs, _ = quick
    clean = docs["quick-mid-clean"]
    assert clean["anomalies"] == []
    assert not IN_PROCESS & set(clean["false_by_detector"])
    # In the anomalous history too, nothing in-process fires beyond the injected duplicate.
    assert not IN_PROCESS & set(docs["quick-mid-outage"]["false_by_detector"])


def test_scenario_selection_and_unknown_names() -> None:
    assert [s.name for s in select(["mid-revenue", "tiny-clean"])] == ["tiny-clean", "mid-revenue"]
    assert all(not s.quick for s in select(None)) and all(s.quick for s in select(None, quick=True))
    proc = _cli("evaluate", "--scenarios", "tiny-clean,nope")
    assert proc.returncode == 2 and "nope" in proc.stderr
    listing = _cli("evaluate", "--list")
    assert listing.returncode == 0 and all(name in listing.stdout for name in BY_NAME)


def test_simulate_writes_a_scenarios_history_and_labels(tmp_path: Path) -> None:
    history, manifest = tmp_path / "h.jsonl", tmp_path / "labels.json"
    proc = _cli("simulate", "--scenario", "quick-mid-outage", "--output", str(history), "--manifest", str(manifest))
    assert proc.returncode == 0, proc.stderr
    labels = json.loads(manifest.read_text())
    assert [lb["kind"] for lb in labels] == ["total_outage", "duplicate_charge"]
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    scenario = BY_NAME["quick-mid-outage"]
    assert all(scenario.start <= line["received"] < scenario.end for line in lines)
    assert len(lines) > 5000


def test_no_two_anomalies_of_a_scenario_compete_for_one_detectors_alerts() -> None:
    # Overlapping windows of one detector would let one anomaly's alert count as the other's catch.
    for s in SCENARIOS:
        s.generator()  # refuses anomalies that do not fit the history
        windows: dict[str | None, list[tuple[float, float]]] = {}
        for a in s.anomalies:
            detector, delay, _, _ = KINDS[a.kind]
            if a.livemode and a.kind != "silent_lapse":
                windows.setdefault(detector, []).append((a.at, a.at + a.duration + delay))
        for spans in windows.values():
            spans.sort()
            assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans)), s.name
