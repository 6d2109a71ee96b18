"""The seven detectors BillingWatch ships, where each runs and the alerts it raises.

ALERT_NAMES is the detector side's one list of alert names (the main alert of each detector); the API also
reads the rules exporter/rulegen renders, so what it shows is what Prometheus will evaluate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.render import GROUPS

ALERT_NAMES: dict[str, str] = {
    "charge_failure_spike": "BillingWatchChargeFailureSpike",
    "fraud_spike": "BillingWatchDisputeSpike",  # also BillingWatchEarlyFraudWarningSpike, ...MonthlyDisputeRatioHigh
    "revenue_drop": "BillingWatchRevenueDrop",
    "webhook_lag": "BillingWatchWebhookLag",
    "duplicate_charge": "BillingWatchDuplicateCharge",
    "negative_invoice": "BillingWatchNegativeInvoice",
    "silent_lapse": "BillingWatchSilentLapse",
}
# Alert for anomalies of custom in-process detectors (billingwatch_anomaly with any other `detector` label).
CUSTOM_ALERT_NAME = "BillingWatchCustomAnomaly"

IN_PROCESS = "in-process"
RULE = "prometheus-rule"

DESCRIPTIONS: dict[str, str] = {
    "charge_failure_spike": "Charge failures significantly above the account's usual ratio, and card-testing bursts "
    "(PromQL rule).",
    "fraud_spike": "Disputes and early fraud warnings far above the account's own rate; the networks' monthly "
    "dispute programmes (PromQL rule).",
    "revenue_drop": "Collected revenue per currency far below the median of the same hours in previous weeks, with "
    "significantly fewer successful charges (PromQL rule).",
    "webhook_lag": "Events arrive late or not at all (delivery delay, time since the last event) (PromQL rule).",
    "duplicate_charge": "Two distinct successful charges of one payer, same amount and currency, close in time.",
    "negative_invoice": "An invoice with a negative total, or a single refund or credit note above a threshold.",
    "silent_lapse": "An active subscription whose renewal stays unpaid, or with no payment, past a grace period.",
}


def rule_settings(rules: RulesConfig) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """({rule detector: its `rules:` section}, the rest of `rules:`, which its alerts may share)."""
    per = {
        "charge_failure_spike": dataclasses.asdict(rules.charge_failure_spike),
        "fraud_spike": dataclasses.asdict(rules.fraud_spike),
        "revenue_drop": dataclasses.asdict(rules.revenue_drop),
        "webhook_lag": dataclasses.asdict(rules.webhook_lag),
    }
    return per, {k: v for k, v in dataclasses.asdict(rules).items() if k not in per}


def rule_alerts(rules: RulesConfig) -> dict[str, list[dict[str, Any]]]:
    """{detector label: [{alert, severity, for}]} from the rules rendered for this config. Alerts without a
    detector label (the custom-detector alert) are listed under "custom"."""
    groups = [build(rules) for build in GROUPS.values()]
    out: dict[str, list[dict[str, Any]]] = {}
    for group in groups:
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if not name:
                continue
            labels = rule.get("labels") or {}
            out.setdefault(labels.get("detector", "custom"), []).append(
                {
                    "alert": name,
                    "severity": labels.get("severity", "from the anomaly"),
                    "for": rule.get("for", "0s"),
                    "group": group.get("name"),
                }
            )
    return out
