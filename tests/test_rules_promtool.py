"""The rule files pass `promtool check rules`, their unit tests pass `promtool test rules`, and every alert and
recording rule is covered by those unit tests (a new alert without a firing and a silent case fails here)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.conftest import require_binary
from tests.rules_support import (
    RULES_DIR,
    AlertRule,
    alerts,
    records,
    rule_files,
    rule_test_cases,
    rule_test_files,
)

SEVERITIES = {"critical", "warning", "info"}


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    files = [str(p) for p in rule_files()]
    assert len(files) == 6
    result = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    files = [str(p.relative_to(RULES_DIR)) for p in rule_test_files()]
    assert files, "no promtool test files in rules/tests"
    # One promtool per file, concurrently: the day- and week-long tests dominate and use one core each.
    procs = {
        f: subprocess.Popen(
            [promtool, "test", "rules", f], cwd=RULES_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for f in files
    }
    failures = []
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0 or "SUCCESS" not in out:
            failures.append(f"{name}:\n{out[-6000:]}")
    assert not failures, "\n".join(failures)


def test_promtool_tests_evaluate_split_groups_in_order() -> None:
    """A rule file laid out as several groups (exporter/rulegen/render.py) is tested with its groups evaluated in
    file order: without group_eval_order promtool picks an order at random, and a group could read the previous
    step's records of another."""
    for path in rule_test_files():
        doc = yaml.safe_load(path.read_text())
        names = [g["name"] for f in doc["rule_files"] for g in yaml.safe_load((path.parent / f).read_text())["groups"]]
        if len(names) > 1:
            assert doc.get("group_eval_order") == names, f"{path.name}: group_eval_order must list {names}"


def test_promtool_unit_tests_can_fail(tmp_path) -> None:
    """The harness notices a wrong expectation (guards against tests that pass whatever the rules do)."""
    promtool = require_binary("promtool")
    text = (RULES_DIR / "tests" / "anomalies.yml").read_text()
    text = text.replace("../billingwatch-anomalies.yml", str(RULES_DIR / "billingwatch-anomalies.yml"))
    text = text.replace("customer cus_A has two successful charges of 49.99 USD", "customer cus_A was charged twice")
    broken = tmp_path / "broken.yml"
    broken.write_text(text)
    result = subprocess.run([promtool, "test", "rules", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
    assert "customer cus_A was charged twice" in result.stdout + result.stderr


def _firing_cases(name: str) -> list[dict]:
    out = []
    for case in rule_test_cases():
        for t in case.get("alert_rule_test", []):
            if t["alertname"] == name and t.get("exp_alerts"):
                out.extend(t["exp_alerts"])
    return out


def _silent_cases(name: str) -> int:
    return sum(
        1
        for case in rule_test_cases()
        for t in case.get("alert_rule_test", [])
        if t["alertname"] == name and t.get("exp_alerts") == []
    )


def coverage_problems(alert: AlertRule) -> list[str]:
    """What the promtool tests fail to check about `alert` (empty when it has both kinds of case)."""
    problems = []
    fired = _firing_cases(alert.name)
    if alert.severity is not None:
        fired = [a for a in fired if a.get("exp_labels", {}).get("severity") == alert.severity]
    if not fired:
        problems.append(f"{alert.name} (severity {alert.severity}) has no promtool case where it fires")
    # The Watchdog fires whatever the data (that is its purpose): it has no silent case to test.
    always_fires = alert.rule.get("labels", {}).get("detector") == "watchdog"
    if not always_fires and not _silent_cases(alert.name):
        problems.append(f"{alert.name} has no promtool case where it stays silent")
    for expected in fired:
        labels, annotations = expected.get("exp_labels", {}), expected.get("exp_annotations", {})
        if not labels.get("detector"):
            problems.append(f"{alert.name}: a firing case does not check the detector label")
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{alert.name}: a firing case does not check severity")
        if set(annotations) != set(alert.rule["annotations"]):
            problems.append(
                f"{alert.name}: a firing case must check every annotation exactly "
                f"({', '.join(sorted(alert.rule['annotations']))})"
            )
    return problems


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: f"{a.name}-{a.severity or 'from-series'}")
def test_every_alert_has_a_firing_and_a_silent_case(alert: AlertRule) -> None:
    assert coverage_problems(alert) == []


def test_an_alert_without_cases_is_reported() -> None:
    """Adding an alert (or a second severity of one) without promtool cases fails the suite."""
    new = AlertRule("BillingWatchSomethingNew", "warning", {}, "billingwatch-payments.yml")
    assert len(coverage_problems(new)) == 2
    unchecked_severity = AlertRule("BillingWatchChargeFailureSpike", "info", {}, "billingwatch-payments.yml")
    assert coverage_problems(unchecked_severity) == [
        "BillingWatchChargeFailureSpike (severity info) has no promtool case where it fires"
    ]


@pytest.mark.parametrize("name", records())
def test_every_recording_rule_has_an_expression_test(name: str) -> None:
    pattern = re.compile(rf"(?<![\w:]){re.escape(name)}(?![\w:])")
    exprs = [t["expr"] for case in rule_test_cases() for t in case.get("promql_expr_test", [])]
    assert any(pattern.search(e) for e in exprs), f"recording rule {name} has no promql_expr_test"


def test_every_test_file_loads_existing_rule_files() -> None:
    for path in rule_test_files():
        doc = yaml.safe_load(path.read_text())
        for rel in doc["rule_files"]:
            assert (path.parent / rel).resolve().is_file(), f"{path.name}: {rel} does not exist"
