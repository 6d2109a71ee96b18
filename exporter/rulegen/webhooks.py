"""webhook_lag: a high quantile of Stripe's delivery delay as PromQL.

stripe_event_delivery_delay_seconds observes first deliveries only (the exporter drops redeliveries before
observing), so Stripe's retries of an event we already have never drive this alert.
"""

from __future__ import annotations

from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.promql import alert, query_value, record, sel


def quantile_name(q: float) -> str:
    """0.95 -> 'p95', 0.995 -> 'p99_5'."""
    text = f"{q * 100:.4f}".rstrip("0").rstrip(".")
    return "p" + text.replace(".", "_")


def delivery_alert(cfg: RulesConfig) -> dict[str, Any]:
    """Stripe failing to deliver: what the missed-delivery poller (exporter/poller.py) sees."""
    d = cfg.webhook_delivery
    return alert(
        cfg,
        "BillingWatchStripeDeliveryFailing",
        f"max by (job) ({sel(cfg, 'stripe_events_undelivered')}) >= {d.max_undelivered}\n"
        f"or\n"
        f"sum by (job) (increase({sel(cfg, 'billingwatch_events_fetched_total')}[{d.fetched_window}]))"
        f" >= {d.min_fetched}",
        for_duration=d.for_duration,
        labels={"detector": "webhook_lag", "severity": "warning"},
        summary="Stripe is failing to deliver webhook events.",
        description=(
            "Stripe reports "
            + query_value("max by (job) (stripe_events_undelivered{job=%q})", "$labels.job", "%.0f")
            + " events not yet delivered to every endpoint, and the exporter had to fetch "
            + query_value(
                f"sum by (job) (increase(billingwatch_events_fetched_total{{job=%q}}[{d.fetched_window}]))",
                "$labels.job",
                "%.0f",
            )
            + f" events no webhook brought in the last {d.fetched_window} (thresholds {d.max_undelivered} and "
            f"{d.min_fetched})."
        ),
    )


def group(cfg: RulesConfig) -> dict[str, Any]:
    lag = cfg.webhook_lag
    w = lag.window
    p = quantile_name(lag.quantile)
    quantile = f"job:stripe_event_delivery_delay_seconds:{p}_rate{w}"
    events = f"job:stripe_event_delivery_delay_seconds_count:increase{w}"
    bucket = sel(cfg, "stripe_event_delivery_delay_seconds_bucket")

    def late(seconds: int) -> str:
        return f"job:stripe_event_delivery_delay_seconds_late:over{seconds}s_increase{w}"

    def late_record(seconds: int) -> dict[str, Any]:
        # First deliveries later than the threshold: all events minus those in the threshold's bucket (the
        # thresholds are bucket bounds, checked by the config; the Python client writes le="600.0", others "600").
        return record(
            late(seconds),
            f'{events}\n- on (job)\nsum by (job) (increase({bucket[:-1]},le=~"{seconds}(\\\\.0)?"}}[{w}]))',
        )

    def lag_alert(severity: str, seconds: int) -> dict[str, Any]:
        # A few late events are Stripe retrying what a short outage of our endpoint refused: the quantile alone
        # moves with two or three of them at low volume, so a minimum number of late events is required as well.
        return alert(
            cfg,
            "BillingWatchWebhookLag",
            f"{quantile} > {seconds}\nand on (job)\n{events} >= {lag.min_events}\n"
            f"and on (job)\n{late(seconds)} >= {lag.min_late_events}",
            for_duration=lag.for_duration,
            labels={"detector": "webhook_lag", "severity": severity},
            summary="Stripe is delivering webhook events late.",
            description=(
                f"{p} of the delay between an event's creation at Stripe and its first delivery here was "
                f"{{{{ $value | humanizeDuration }}}} over the last {w} ("
                + query_value(f"{late(seconds)}{{job=%q}}", "$labels.job", "%.0f")
                + " of "
                + query_value(f"{events}{{job=%q}}", "$labels.job", "%.0f")
                + f" events later than {seconds}s; {severity} above {seconds}s with at least {lag.min_late_events} "
                "late events)."
            ),
        )

    return {
        "name": "billingwatch-webhooks",
        "interval": cfg.intervals.webhooks,
        "rules": [
            record(
                quantile,
                f"histogram_quantile(\n  {lag.quantile},\n  sum by (job, le) "
                f"(rate({sel(cfg, 'stripe_event_delivery_delay_seconds_bucket')}[{w}]))\n)",
            ),
            # The histogram is unlabelled and exists from the start, so plain increase() sees every event.
            record(events, f"sum by (job) (increase({sel(cfg, 'stripe_event_delivery_delay_seconds_count')}[{w}]))"),
            late_record(lag.warning_seconds),
            late_record(lag.critical_seconds),
            lag_alert("warning", lag.warning_seconds),
            lag_alert("critical", lag.critical_seconds),
            delivery_alert(cfg),
        ],
    }
