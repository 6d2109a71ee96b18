"""`billingwatch rules`: the committed rule files are exactly the render of the defaults, a user's config changes
them, and the rendered rules follow the conventions (labels, annotations, names, runbook anchors)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, build_config
from exporter.rulegen.durations import format_duration, parse_duration
from exporter.rulegen.render import GROUPS, HEADER, MAX_RULES_PER_GROUP, differences, layout, render
from tests.conftest import require_binary
from tests.rules_support import RULES_DIR, RUNBOOK, alerts, all_rules, records

SHORT_WINDOWS = {
    "rules": {
        "intervals": {"payments": "5s", "revenue": "5s", "webhooks": "5s", "exporter": "5s"},
        "charge_failure_spike": {"short_window": "30s", "window": "1m", "long_window": "2m", "for_duration": "0s"},
        "card_testing": {"window": "1m"},
        "fraud_spike": {"window": "2m"},
        "dispute_monthly": {"window": "10m"},
        "refunds": {"window": "2m"},
        "revenue_drop": {"window": "2h", "short_window": "1h", "baseline_weeks": 2, "min_baseline_weeks": 1},
        "webhook_lag": {"window": "1m"},
        "exporter": {"signature_failures_window": "1m", "down_for": "10s", "errors_window": "1m"},
    }
}


def test_committed_rule_files_are_the_render_of_the_defaults() -> None:
    assert differences(build_config().rules, RULES_DIR) == [], "run `billingwatch rules` and commit rules/"
    assert sorted(p.name for p in RULES_DIR.glob("*.yml")) == sorted(GROUPS), "rules/ holds a file not rendered"


def test_render_is_deterministic_valid_yaml_with_a_generated_header() -> None:
    cfg = build_config().rules
    first, second = render(cfg), render(cfg)
    assert first == second
    for name, text in first.items():
        assert text.startswith(HEADER), name
        doc = yaml.safe_load(text)
        stem = name.removesuffix(".yml")
        names = [g["name"] for g in doc["groups"]]
        assert names == [stem] + [f"{stem}-{n}" for n in range(2, len(names) + 1)], name
        assert all(len(g["rules"]) <= MAX_RULES_PER_GROUP for g in doc["groups"]), name


def _record(name: str, expr: str) -> dict:
    return {"record": name, "expr": expr}


def test_layout_cuts_a_long_group_along_its_chains_and_keeps_rule_order() -> None:
    """Independent chains are cut apart, a long chain into consecutive runs; no rule is read before it is written."""
    chain = [_record("a:x:n0", "sum(x)")] + [_record(f"a:x:n{i}", f"a:x:n{i - 1} + 1") for i in range(1, 20)]
    other = [_record("b:y:n0", "sum(y)"), {"alert": "Y", "expr": "b:y:n0 > 1"}]
    rules = chain[:10] + other + chain[10:]
    groups = layout({"name": "g", "interval": "1m", "rules": rules})
    assert [g["name"] for g in groups] == ["g", "g-2"]
    assert all(g["interval"] == "1m" for g in groups)
    assert [r["expr"] for g in groups for r in g["rules"]] == [r["expr"] for r in chain + other]
    assert [len(g["rules"]) for g in groups] == [10, 12]  # two runs of 10, the second packed with the other chain
    small = {"name": "s", "interval": "5s", "rules": other}
    assert layout(small) == [small]


def test_a_lead_is_a_group_of_its_own_ahead_of_the_rest() -> None:
    """A latency-critical path (payments.group's outage path) is evaluated whole, first; the rest is laid out as
    before behind it."""
    chain = [_record("a:x:n0", "sum(x)")] + [_record(f"a:x:n{i}", f"a:x:n{i - 1} + 1") for i in range(1, 20)]
    lead = [_record("f:z:n0", "sum(z)"), _record("f:z:n1", "f:z:n0 * 2")]
    groups = layout({"name": "g", "interval": "1m", "lead": lead, "rules": chain})
    assert [g["name"] for g in groups] == ["g", "g-2", "g-3"]
    assert [g["rules"] for g in groups] == [lead, chain[:10], chain[10:]]
    assert all("lead" not in g for g in groups)


def test_the_outage_path_reaches_its_alerts_across_one_group_boundary() -> None:
    """From the raw counters to the on-session failure alerts over 15 minutes: the lead group, then the alerts'
    own (a live Prometheus adds up to one interval per boundary; it was three)."""
    doc = yaml.safe_load(render(build_config().rules)["billingwatch-payments.yml"])
    lead = {r["record"] for r in doc["groups"][0]["rules"]}
    assert "job:stripe_charges_on_session_failed:wilson_lower15m" in lead
    assert "job:stripe_charge_processing_failed_payers:increase15m" in lead
    on_alerts = [
        (n, r) for n, g in enumerate(doc["groups"]) for r in g["rules"] if r.get("labels", {}).get("session") == "on"
    ]
    assert {r["labels"]["severity"] for _, r in on_alerts} == {"warning", "critical"}
    for _, rule in on_alerts:
        assert "job:stripe_charges_on_session_failed:wilson_lower15m" in rule["expr"]
        assert "job:stripe_charge_processing_failed_payers:increase15m" in rule["expr"]
        assert ":spike" not in rule["expr"]


def test_rules_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--check", "--output", str(RULES_DIR)]) == 0
    out = tmp_path / "rules"
    assert main(["rules", "--check", "--output", str(out)]) == 1
    assert main(["rules", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(GROUPS)
    assert main(["rules", "--check", "--output", str(out)]) == 0
    (out / "billingwatch-revenue.yml").write_text("groups: []\n")
    assert main(["rules", "--check", "--output", str(out)]) == 1
    assert "billingwatch-revenue.yml: differs" in capsys.readouterr().err


def test_user_config_with_short_windows_renders_valid_rules(tmp_path: Path) -> None:
    """The end-to-end tests render the shipped rules with test-only short windows this way."""
    config = tmp_path / "short.yml"
    config.write_text(yaml.safe_dump(SHORT_WINDOWS))
    out = tmp_path / "rules"
    assert main(["rules", "--config", str(config), "--output", str(out)]) == 0
    payments = (out / "billingwatch-payments.yml").read_text()
    assert "currency:stripe_charges_failed:ratio_rate1m" in payments
    assert 'increase(stripe_charges_total{job="billingwatch"}[1m])' in payments
    assert "ratio_rate1h" not in payments
    revenue = (out / "billingwatch-revenue.yml").read_text()
    assert "[2h]) * 2" in revenue and "offset 2w" in revenue and "offset 3w" not in revenue
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", *map(str, sorted(out.glob("*.yml")))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_thresholds_come_from_the_config() -> None:
    spike = {"z": 3, "min_threshold_ratio": 0.25, "min_failures": 6, "baseline_factor": 3}
    cfg = build_config({"rules": {"charge_failure_spike": spike}}).rules
    text = render(cfg)["billingwatch-payments.yml"]
    assert "- 3 * sqrt(clamp_min(job:stripe_charges_on_session_failed:distinct_increase15m" in text
    assert "3 * job:stripe_charges_on_session_failed:ratio_baseline7d," in text and "0.25, 0.6" in text
    assert "and on (job, livemode) job:stripe_charges_on_session_failed:distinct_increase1h >= 6" in text
    assert "3 x the usual ratio of the last 7 days" in text
    custom = build_config({"rules": {"runbook_base_url": "https://wiki.example.com/billing", "job": "bw"}}).rules
    text = render(custom)["billingwatch-anomalies.yml"]
    assert "https://wiki.example.com/billing#billingwatchduplicatecharge" in text
    assert 'billingwatch_anomaly{job="bw",detector="duplicate_charge"}' in text


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"charge_failure_spike": {"window": "an hour"}}, "rules.charge_failure_spike.window: not a Prometheus"),
        ({"dispute_monthly": {"warning_ratio": 1.5}}, "rules.dispute_monthly.warning_ratio: must be a fraction"),
        ({"fraud_spike": {"z": 0}}, "rules.fraud_spike.z: must be a z-score"),
        ({"fraud_spike": {"false_alerts_per_30_days": 0}}, "rules.fraud_spike.false_alerts_per_30_days: must be above"),
        ({"charge_failure_spike": {"short_window": "2h"}}, "short_window < window < long_window"),
        ({"revenue_drop": {"warning_drop_ratio": 0.5}}, "warning_drop_ratio must be below critical_drop_ratio"),
        ({"webhook_lag": {"min_events": -1}}, "rules.webhook_lag.min_events: must not be negative"),
        ({"intervals": {"anomalies": "0s"}}, "rules.intervals.anomalies: must be longer than 0s"),
        ({"job": 'a"b'}, "rules.job: must be a non-empty job name"),
        ({"dispute_monthly": {"window": "1h"}}, "must not be shorter than rules.fraud_spike.window"),
        ({"revenue_drop": {"typo": 1}}, "rules.revenue_drop.typo: unknown key"),
    ],
)
def test_invalid_rules_config_names_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"rules": section})
    assert any(message in e for e in info.value.errors), info.value.errors


def test_durations_round_trip() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1w") == 7 * 86400
    assert format_duration(8 * 86400) == "8d"
    assert format_duration(7 * 86400 + 23 * 3600) == "7d23h"
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_every_alert_follows_the_conventions() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    anchors = {m.group(1).lower() for m in re.finditer(r"^## (BillingWatch\w+)\s*$", runbook, re.M)}
    names = set()
    for alert in alerts():
        rule = alert.rule
        names.add(alert.name)
        assert re.fullmatch(r"BillingWatch[A-Z][A-Za-z0-9]+", alert.name)
        annotations = rule["annotations"]
        assert set(annotations) - {"dashboard_url"} == {"summary", "description", "runbook_url"}, alert.name
        # The defaults know no Grafana, so no dashboard links (tests/test_runbook.py renders with one).
        assert "dashboard_url" not in annotations, alert.name
        assert "{{" not in annotations["summary"], f"{alert.name}: summary must be a static sentence"
        anchor = annotations["runbook_url"].rsplit("#", 1)[1]
        assert anchor == alert.name.lower() and anchor in anchors, f"docs/runbook.md has no entry for {alert.name}"
        if alert.name == "BillingWatchCustomAnomaly":
            # detector and severity come from the custom detector's gauge; a static label would overwrite them.
            assert "labels" not in rule
            continue
        assert rule["labels"]["detector"], alert.name
        # info is for the record only: the always-firing Watchdog (detector="watchdog") is the one rule alert using it.
        is_watchdog = rule["labels"]["detector"] == "watchdog" and alert.severity == "info"
        assert alert.severity in {"critical", "warning"} or is_watchdog or "billingwatch_anomaly{" in rule["expr"], (
            alert.name
        )
    assert len(names) == 22
    assert anchors == {n.lower() for n in names}, "docs/runbook.md has an entry for an alert that does not exist"


def test_recording_rule_names_are_level_metric_operations() -> None:
    names = records()
    assert len(names) == len(set(names)), "a recording rule is defined twice"
    for name in names:
        # Levels name the labels kept; revenue_drop keeps livemode too (docs/CONTRACTS.md, contract 1).
        assert re.fullmatch(r"(job|currency|livemode|currency_livemode):[a-z_]+:[a-z0-9_]+", name), name
    # Ratios divide recorded (aggregated) counts, never average per-series ratios.
    for _, rule in all_rules():
        if rule.get("record", "").split(":")[-1].startswith("ratio_"):
            assert "avg(" not in rule["expr"] and "/" in rule["expr"], rule["record"]


def test_in_process_anomaly_alerts_are_fast() -> None:
    """docs/CONTRACTS.md: the anomaly group is evaluated every 5 s and its alerts fire without waiting."""
    doc = yaml.safe_load((RULES_DIR / "billingwatch-anomalies.yml").read_text())
    (group,) = doc["groups"]
    assert parse_duration(group["interval"]) <= 5
    assert all("for" not in rule for rule in group["rules"])


def test_detector_catalog_names_alerts_that_exist() -> None:
    """GET /api/v1/detectors names each detector's alert from exporter/detectors/catalog.py: those must exist."""
    from exporter.detectors import catalog

    names = {a.name for a in alerts()}
    for detector, alert_name in catalog.ALERT_NAMES.items():
        assert alert_name in names, f"{detector}: catalog names {alert_name}, which no rule defines"
        assert any(a.name == alert_name and a.rule.get("labels", {}).get("detector") == detector for a in alerts())
    assert catalog.CUSTOM_ALERT_NAME in names
