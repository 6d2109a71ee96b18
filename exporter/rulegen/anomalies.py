"""Alerts on the in-process detectors' gauges (billingwatch_anomaly): one alert per built-in detector, one for
custom detectors. The alert keeps every label of the gauge (detector, severity, reason, customer, subscription,
invoice, currency, livemode), so the notification names the customer, severity is the detector's own and test-mode
anomalies (livemode="false") take Alertmanager's non-paging route.
"""

from __future__ import annotations

from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.promql import alert, query_value, sel

BUILT_IN = ("duplicate_charge", "negative_invoice", "silent_lapse")

PAYER = "{{ if $labels.customer }}customer {{ $labels.customer }}{{ else }}a guest payer (no Stripe customer){{ end }}"

# The amount of the same anomaly, from billingwatch_anomaly_amount with identical labels (a label the gauge leaves
# empty matches ="" in PromQL), with the currency's own number of decimals.
AMOUNT = query_value(
    "billingwatch_anomaly_amount{job=%q,instance=%q,detector=%q,reason=%q,customer=%q,subscription=%q,"
    "invoice=%q,currency=%q,livemode=%q}",
    "$labels.job $labels.instance $labels.detector $labels.reason $labels.customer $labels.subscription "
    "$labels.invoice $labels.currency $labels.livemode",
    money=True,
).replace("{{ else }}?{{ end }}", " {{ $labels.currency | toUpper }}{{ else }}no amount{{ end }}")


def group(cfg: RulesConfig) -> dict[str, Any]:
    active = cfg.anomalies.for_duration
    keep = cfg.anomalies.keep_firing_for

    def anomaly(name: str, detector: str, summary: str, description: str) -> dict[str, Any]:
        matcher = 'detector="' + detector + '"'
        return alert(
            cfg,
            name,
            f"{sel(cfg, 'billingwatch_anomaly', matcher)} > 0",
            for_duration=active,
            keep_firing_for=keep,
            labels={"detector": detector},
            summary=summary,
            description=description,
        )

    custom_matcher = 'detector!~"' + "|".join(BUILT_IN) + '"'
    rules = [
        anomaly(
            "BillingWatchDuplicateCharge",
            "duplicate_charge",
            "A payer was charged the same amount twice within minutes.",
            f"{PAYER} has two successful charges of {AMOUNT} within the duplicate-charge window "
            "(reason {{ $labels.reason }}). /api/v1/anomalies on the exporter lists both charge ids.",
        ),
        anomaly(
            "BillingWatchNegativeInvoice",
            "negative_invoice",
            "An invoice total went negative, or a large refund or credit note was issued.",
            "{{ if $labels.invoice }}Invoice {{ $labels.invoice }}{{ else }}A refund or credit note{{ end }} of "
            f"{PAYER}: {{{{ $labels.reason }}}}, amount {AMOUNT}.",
        ),
        anomaly(
            "BillingWatchSilentLapse",
            "silent_lapse",
            "An active subscription has gone unpaid past its billing interval and grace period.",
            "Subscription {{ $labels.subscription }} of "
            f"{PAYER} is active but unpaid ({{{{ $labels.reason }}}}); amount involved: {AMOUNT}.",
        ),
        alert(
            cfg,
            "BillingWatchCustomAnomaly",
            f"{sel(cfg, 'billingwatch_anomaly', custom_matcher)} > 0",
            for_duration=active,
            keep_firing_for=keep,
            labels={},
            summary="A custom in-process detector reported an anomaly.",
            description="Detector {{ $labels.detector }} reported {{ $labels.reason }} for "
            f"{PAYER}; amount involved: {AMOUNT}.",
        ),
    ]
    # The custom alert's detector and severity come from the gauge; a static label would overwrite them.
    del rules[-1]["labels"]
    return {"name": "billingwatch-anomalies", "interval": cfg.intervals.anomalies, "rules": rules}
