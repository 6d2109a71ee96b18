"""Which panel explains each alert of the shipped rules, and the PromQL that attaches that panel's address to the
alert's row in the overview's "Firing alerts" table (clicking the alert name opens the panel).

Prometheus alerts cannot carry a Grafana panel id by themselves, and a table cannot look values up, so the query
adds a `panel_url` label with one label_replace() per entry below. tests/test_dashboards.py checks that every
alert of rules/*.yml has an entry and that every entry names an existing alert and panel.
"""

from __future__ import annotations

from typing import Any

# alert name -> (dashboard key, panel title or title prefix). Keys: "overview", "operations".
ALERT_PANELS: dict[str, tuple[str, str]] = {
    "BillingWatchDuplicateCharge": ("overview", "Active anomalies"),
    "BillingWatchNegativeInvoice": ("overview", "Active anomalies"),
    "BillingWatchSilentLapse": ("overview", "Active anomalies"),
    "BillingWatchCustomAnomaly": ("overview", "Active anomalies"),
    "BillingWatchRevenueDrop": ("overview", "Revenue vs baseline"),
    "BillingWatchRefundRatioHigh": ("overview", "Refund ratio"),
    "BillingWatchChurnSpike": ("overview", "Subscriptions by status"),
    "BillingWatchChargeFailureSpike": ("overview", "Charge failure ratio"),
    "BillingWatchCardTesting": ("overview", "Failed charges by code"),
    "BillingWatchDisputeSpike": ("overview", "Dispute ratio vs network thresholds"),
    "BillingWatchMonthlyDisputeRatioHigh": ("overview", "Dispute ratio vs network thresholds"),
    "BillingWatchEarlyFraudWarningSpike": ("overview", "Early fraud warning ratio"),
    "BillingWatchWebhookLag": ("operations", "Delivery delay"),
    "BillingWatchStripeDeliveryFailing": ("operations", "Missed deliveries"),
    "BillingWatchNoEvents": ("operations", "Last event age"),
    "BillingWatchSignatureFailures": ("operations", "Invalid signatures"),
    "BillingWatchSignatureStale": ("operations", "Webhook requests by outcome"),
    "BillingWatchWatchdog": ("overview", "Alerts firing"),
    "BillingWatchExporterDown": ("operations", "Exporter up"),
    "BillingWatchEventProcessingErrors": ("operations", "Processing errors by stage"),
    "BillingWatchAnomalySeriesDropped": ("operations", "Anomaly series dropped"),
    "BillingWatchStateNotWritable": ("operations", "Webhook requests by outcome"),
}
LABEL = "panel_url"


def find_panel(panels: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """The one panel titled `title`, or else the one whose title starts with it (titles that name a window)."""
    found = [p for p in panels if p["title"] == title] or [p for p in panels if p["title"].startswith(title)]
    if len(found) != 1:
        raise LookupError(f"{len(found)} panels titled {title!r}")
    return found[0]


def panel_urls(dashboards: dict[str, tuple[str, list[dict[str, Any]]]]) -> dict[str, str]:
    """alert name -> `/d/<uid>?viewPanel=<id>`, from {key: (uid, panels)}."""
    out = {}
    for alert, (key, title) in ALERT_PANELS.items():
        uid, panels = dashboards[key]
        out[alert] = f"/d/{uid}?viewPanel={find_panel(panels, title)['id']}"
    return out


def with_panel_urls(expr: str, urls: dict[str, str]) -> str:
    """`expr` with a panel_url label on every series whose alertname has a panel (others are left as they are)."""
    by_url: dict[str, list[str]] = {}
    for alert, url in urls.items():
        by_url.setdefault(url, []).append(alert)
    for url, alerts in sorted(by_url.items()):
        expr = f'label_replace({expr}, "{LABEL}", "{url}", "alertname", "{"|".join(sorted(alerts))}")'
    return expr
