"""The seven detectors BillingWatch ships, where each runs and the alerts it raises.

ALERT_NAMES is the detector side's one list of alert names (the main alert of each detector); the API also
reads the rules exporter/rulegen renders, so what it shows is what Prometheus will evaluate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
    "revenue_drop": "Captured revenue far below the same hours of previous weeks, on too few charges (PromQL rule).",
    "webhook_lag": "Events arrive late or not at all (delivery delay, time since the last event) (PromQL rule).",
    "duplicate_charge": "Two distinct successful charges of one payer, same amount and currency, close in time.",
    "negative_invoice": "An invoice with a negative total, or a single refund or credit note above a threshold.",
    "silent_lapse": "An active subscription whose renewal stays unpaid, or with no payment, past a grace period.",
}

# How to find a rule detector's settings in the `rules:` section without depending on its exact field names:
# a nested section named after the detector, else the top-level keys mentioning one of these words.
RULE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "charge_failure_spike": ("charge_failure", "failure"),
    "fraud_spike": ("fraud", "dispute"),
    "revenue_drop": ("revenue",),
    "webhook_lag": ("webhook", "lag", "delivery", "silence"),
}


def rule_settings(rules_config: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """({rule detector: its settings}, settings shared by all rules) read generically from the rules config."""
    doc: dict[str, Any] = {}
    if dataclasses.is_dataclass(rules_config) and not isinstance(rules_config, type):
        doc = dataclasses.asdict(rules_config)
    elif isinstance(rules_config, dict):
        doc = dict(rules_config)
    per: dict[str, dict[str, Any]] = {name: {} for name in RULE_KEYWORDS}
    claimed: set[str] = set()
    for name, words in RULE_KEYWORDS.items():
        section = doc.get(name)
        if isinstance(section, dict):
            per[name] = section
            claimed.add(name)
            continue
        for key, value in doc.items():
            if key not in per and any(w in key for w in words):
                per[name][key] = value
                claimed.add(key)
    shared = {k: v for k, v in doc.items() if k not in claimed}
    return per, shared


def rule_alerts(rules_config: Any) -> dict[str, list[dict[str, Any]]]:
    """{detector label: [{alert, severity, for}]} from the rules rendered for this config; {} when rulegen is
    unavailable. Alerts without a detector label (the custom-detector alert) are listed under "custom"."""
    try:
        from exporter.rulegen.render import GROUPS

        groups = [build(rules_config) for build in GROUPS.values()]
    except Exception:
        return {}
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
