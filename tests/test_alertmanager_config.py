"""alertmanager.yml: amtool accepts it, routes each severity to the documented receivers, and its structure keeps the
promises of docs/alerting.md (send_resolved, grouping, inhibition, fast anomaly routes, no deprecated matchers)."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_binary
from tests.rules_support import RULES_DIR, load

CONFIG = REPO / "alertmanager.yml"
ANOMALY_ALERTS = [r["alert"] for r in load(RULES_DIR / "billingwatch-anomalies.yml")["groups"][0]["rules"]]


def _doc() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def test_amtool_check_config() -> None:
    amtool = require_binary("amtool")
    result = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            {"severity": "critical", "alertname": "BillingWatchRevenueDrop", "detector": "revenue_drop"},
            "email-and-webhook",
        ),
        (
            {"severity": "critical", "alertname": "BillingWatchDuplicateCharge", "detector": "duplicate_charge"},
            "email-and-webhook",
        ),
        (
            {"severity": "critical", "alertname": "BillingWatchExporterDown", "detector": "exporter"},
            "email-and-webhook",
        ),
        (
            {"severity": "warning", "alertname": "BillingWatchChargeFailureSpike", "detector": "charge_failure_spike"},
            "email",
        ),
        ({"severity": "warning", "alertname": "BillingWatchSilentLapse", "detector": "silent_lapse"}, "email"),
        ({"severity": "info", "alertname": "BillingWatchCustomAnomaly", "detector": "vip_refund"}, "webhook"),
        ({"severity": "info", "alertname": "SomeOtherAlert"}, "webhook"),
        # The Watchdog: its own receiver (a dead man's switch), never email or the info webhook.
        (
            {"severity": "info", "alertname": "BillingWatchWatchdog", "detector": "watchdog", "job": "billingwatch"},
            "watchdog",
        ),
        # Stripe test mode never takes the critical (paging) receiver; its info alerts stay webhook-only.
        (
            {"severity": "critical", "alertname": "BillingWatchDuplicateCharge", "livemode": "false"},
            "test-mode",
        ),
        ({"severity": "warning", "alertname": "BillingWatchRefundRatioHigh", "livemode": "false"}, "test-mode"),
        ({"severity": "info", "alertname": "BillingWatchCustomAnomaly", "livemode": "false"}, "webhook"),
        (
            {"severity": "critical", "alertname": "BillingWatchDuplicateCharge", "livemode": "true"},
            "email-and-webhook",
        ),
        # No or an unknown severity still reaches a person.
        ({"alertname": "SomethingWithoutSeverity"}, "email"),
        ({"severity": "page", "alertname": "BillingWatchWebhookLag"}, "email"),
    ],
)
def test_amtool_routes(labels: dict[str, str], receiver: str) -> None:
    amtool = require_binary("amtool")
    argv = [amtool, "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}"]
    result = subprocess.run(argv + [f"{k}={v}" for k, v in labels.items()], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_receivers_deliver_what_the_routes_promise() -> None:
    receivers = {r["name"]: r for r in _doc()["receivers"]}
    assert set(receivers) == {"email", "webhook", "email-and-webhook", "test-mode", "watchdog"}
    for name in ("email-and-webhook", "test-mode"):
        assert set(receivers[name]) == {"name", "email_configs", "webhook_configs"}, name  # no pager in test mode
    assert "webhook_configs" not in receivers["email"] and "email_configs" not in receivers["webhook"]
    # The Watchdog's receiver ships without an integration: only an external dead man's switch belongs there.
    assert set(receivers["watchdog"]) == {"name"}
    for receiver in receivers.values():
        for mail in receiver.get("email_configs", []):
            assert mail["headers"]["Subject"] == '{{ template "billingwatch.email.subject" . }}'
            assert mail["html"] == '{{ template "billingwatch.email.html" . }}'
            assert mail["text"] == '{{ template "billingwatch.email.text" . }}'
    for receiver in receivers.values():
        for kind in ("email_configs", "webhook_configs"):
            for integration in receiver.get(kind, []):
                # Email's default is false: without it nobody learns that a problem went away.
                assert integration["send_resolved"] is True, receiver["name"]
    # The local-run defaults other tooling rewrites (plain host:port strings).
    doc = _doc()
    assert doc["global"]["smtp_smarthost"] == "127.0.0.1:1025"
    assert doc["global"]["smtp_require_tls"] is False
    urls = {c["url"] for r in receivers.values() for c in r.get("webhook_configs", [])}
    assert urls == {"http://127.0.0.1:5001/alerts"}


def test_grouping_inhibition_and_fast_anomaly_routes() -> None:
    doc = _doc()
    route = doc["route"]
    assert route["group_by"][:2] == ["alertname", "detector"]
    assert "customer" in route["group_by"], "two customers' anomalies must not share one notification"
    inhibit, *per_currency = doc["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert "detector" in inhibit["equal"]
    # Live and test mode never share a notification, nor does one mode's critical mute the other's warning.
    assert "livemode" in route["group_by"] and "livemode" in inhibit["equal"]
    # The all-currency view mutes the same alert per currency (same mode); behaviour in test_alertmanager_routing.
    assert [r["equal"] for r in per_currency] == [["alertname", "livemode"]] * 2
    # Every severity and mode route sends the in-process anomaly alerts with a 5 s group_wait (docs/CONTRACTS.md).
    watchdog, *others = route["routes"]
    assert watchdog["matchers"] == ['alertname="BillingWatchWatchdog"'] and "routes" not in watchdog
    # Pinged at once and every minute: a dead man's switch with a period of a few minutes notices a silence fast.
    assert watchdog["group_wait"] == "0s" and watchdog["repeat_interval"] == watchdog["group_interval"] == "1m"
    for child in others:
        fast = [r for r in child["routes"] if any(m.startswith("alertname=~") for m in r["matchers"])]
        assert fast, child
        for sub in fast:
            assert sub["group_wait"] == "5s"
            (matcher,) = [m for m in sub["matchers"] if m.startswith("alertname=~")]
            pattern = re.fullmatch(r'alertname=~"(.*)"', matcher).group(1)
            for name in ANOMALY_ALERTS:
                assert re.fullmatch(pattern, name), f"{name} is not routed with the 5 s group_wait"
            assert not re.fullmatch(pattern, "BillingWatchRevenueDrop")


def test_no_deprecated_match_syntax() -> None:
    text = CONFIG.read_text()
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for old in ("match:", "match_re:", "source_match:", "target_match:", "source_match_re:", "target_match_re:"):
        assert old not in active


def test_commented_examples_for_chat_and_paging() -> None:
    text = CONFIG.read_text()
    for example in ("# slack_configs:", "# discord_configs:", "# pagerduty_configs:"):
        assert example in text
