"""The Grafana panel that explains each alert of the shipped rules: one table, read by the rule renderer (each
alert's `dashboard_url`, exporter/rulegen/promql.py) and by the dashboards (the "Firing alerts" table's links,
dashboards/alert_links.py), so neither generator reads the other's output.

Panel ids are the dashboards' placement order (dashboards/model.py); `python -m dashboards.generate` fails when a
panel named here is not at its id (move the id here with the panel, and regenerate both the dashboards and rules).
"""

from __future__ import annotations

OVERVIEW = "billingwatch-overview"
OPERATIONS = "billingwatch-operations"

# alert name -> (dashboard uid, panel id, panel title or title prefix)
ALERT_PANELS: dict[str, tuple[str, int, str]] = {
    "BillingWatchDuplicateCharge": (OVERVIEW, 8, "Active anomalies"),
    "BillingWatchNegativeInvoice": (OVERVIEW, 8, "Active anomalies"),
    "BillingWatchSilentLapse": (OVERVIEW, 8, "Active anomalies"),
    "BillingWatchCustomAnomaly": (OVERVIEW, 8, "Active anomalies"),
    "BillingWatchRevenueDrop": (OVERVIEW, 11, "Revenue vs baseline"),
    "BillingWatchRefundRatioHigh": (OVERVIEW, 16, "Refund ratio"),
    "BillingWatchChurnSpike": (OVERVIEW, 13, "Subscriptions by status"),
    "BillingWatchChargeFailureSpike": (OVERVIEW, 18, "Charge failure ratio"),
    "BillingWatchCardTesting": (OVERVIEW, 19, "Failed charges by code"),
    "BillingWatchDisputeSpike": (OVERVIEW, 21, "Dispute ratio vs network thresholds"),
    "BillingWatchMonthlyDisputeRatioHigh": (OVERVIEW, 21, "Dispute ratio vs network thresholds"),
    "BillingWatchEarlyFraudWarningSpike": (OVERVIEW, 22, "Early fraud warning ratio"),
    "BillingWatchWebhookLag": (OPERATIONS, 9, "Delivery delay"),
    "BillingWatchStripeDeliveryFailing": (OPERATIONS, 11, "Missed deliveries"),
    "BillingWatchNoEvents": (OPERATIONS, 10, "Last event age"),
    "BillingWatchSignatureFailures": (OPERATIONS, 4, "Invalid signatures"),
    "BillingWatchSignatureStale": (OPERATIONS, 7, "Webhook requests by outcome"),
    "BillingWatchWatchdog": (OVERVIEW, 2, "Alerts firing"),
    "BillingWatchExporterDown": (OPERATIONS, 13, "Exporter up"),
    "BillingWatchEventProcessingErrors": (OPERATIONS, 17, "Processing errors by stage"),
    "BillingWatchAnomalySeriesDropped": (OPERATIONS, 16, "Anomaly series dropped"),
    "BillingWatchStateNotWritable": (OPERATIONS, 7, "Webhook requests by outcome"),
}


def panel_path(alert: str) -> str | None:
    """`/d/<uid>?viewPanel=<id>` of the panel explaining `alert`, None for an alert no panel explains."""
    entry = ALERT_PANELS.get(alert)
    return f"/d/{entry[0]}?viewPanel={entry[1]}" if entry else None
