"""BillingWatch operations: is the pipe from Stripe to Prometheus healthy?

Traffic (events by type, webhook outcomes), delivery (Stripe's delay, the last event's age, missed deliveries) and
the exporter's own health (scrape, processing errors, label caps, state flushes, dropped anomaly series).
"""

from __future__ import annotations

from typing import Any

from dashboards import model as m
from dashboards.queries import SCOPE, increase, per_job, recorded, sel
from dashboards.sources import rules_config, seconds
from dashboards.variables import variables
from exporter import panels

UID = panels.OPERATIONS
TITLE = "BillingWatch operations"


def _delay_quantile(q: float) -> m.Panel:
    return m.target(
        f"histogram_quantile({q}, sum by (le) "
        f"(rate({sel('stripe_event_delivery_delay_seconds_bucket')}[$__rate_interval])))",
        f"p{round(q * 100)}",
    )


def build() -> dict[str, Any]:
    cfg = rules_config()
    rec = recorded()
    silence = cfg.exporter.silence
    g = m.Grid()
    g.row("Traffic")
    webhook = sel("billingwatch_webhook_requests_total")
    g.add(
        m.stat(
            "Events received",
            "Unique Stripe events counted in the selected time range.",
            [m.target(increase(sel("stripe_events_total"), "$__range"), instant=True)],
            unit="none",
            decimals=0,
        ),
        6,
        4,
    )
    health = cfg.exporter
    sig_window = health.signature_failures_window
    for title, outcome, window, thresholds, description in (
        (
            "Duplicate deliveries",
            "duplicate",
            "$__range",
            None,
            "Redeliveries of an event already processed (Stripe delivers at least once; a steady trickle is normal, "
            "a flood means we answer too slowly). In the selected time range.",
        ),
        (
            f"Invalid signatures (last {sig_window})",
            "invalid_signature",
            sig_window,
            m.threshold_steps(warning=1, critical=health.signature_failures_min),
            "Requests whose Stripe-Signature matched no configured secret (a wrong or rotated secret, or someone "
            f"probing the endpoint). BillingWatchSignatureFailures warns from {health.signature_failures_min} in "
            f"{sig_window}.",
        ),
        (
            "Too large",
            "too_large",
            "$__range",
            m.steps((None, "green"), (1, "orange")),
            "Bodies over server.max_body_bytes, refused unread with 413. In the selected time range.",
        ),
    ):
        requests = sel("billingwatch_webhook_requests_total", f'outcome="{outcome}"')
        g.add(
            m.stat(
                title,
                description,
                [m.target(increase(requests, window), instant=True)],
                unit="none",
                decimals=0,
                thresholds=thresholds,
            ),
            6,
            4,
        )
    g.add(
        m.timeseries(
            "Events per second by type",
            "Unique Stripe events per second, by event type (after deduplication).",
            [m.target(f"sum by (type) (rate({sel('stripe_events_total')}[$__rate_interval]))", "{{type}}")],
            unit="cps",
            stack=True,
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Webhook requests by outcome",
            "Every request to the webhook endpoint: accepted, duplicate, ignored (other Stripe mode), "
            "invalid_signature, invalid_payload, too_large.",
            [m.target(f"sum by (outcome) (rate({webhook}[$__rate_interval]))", "{{outcome}}")],
            unit="reqps",
            stack=True,
            overrides=[
                _color(name, color)
                for name, color in (
                    ("accepted", "green"),
                    ("duplicate", "blue"),
                    ("ignored", "purple"),
                    ("invalid_signature", "red"),
                    ("invalid_payload", "orange"),
                    ("too_large", "dark-red"),
                )
            ],
        ),
        12,
        8,
    )

    g.row("Delivery")
    lag = cfg.webhook_lag
    g.add(
        m.timeseries(
            "Delivery delay",
            "Time from an event's creation at Stripe to its first delivery here (p50, p95, p99). Stripe retries "
            "failed deliveries with back-off, so a rising p99 means deliveries failed or the endpoint was down. "
            f"BillingWatchWebhookLag reads the p{lag.quantile * 100:g} over {lag.window} (dashed): warning above "
            f"{lag.warning_seconds} s, critical above {lag.critical_seconds} s (with at least {lag.min_events} "
            "events).",
            [
                _delay_quantile(0.5),
                _delay_quantile(0.95),
                _delay_quantile(0.99),
                m.target(per_job(rec.delivery_delay_quantile), f"p{lag.quantile * 100:g} over {lag.window} (alert)"),
            ],
            unit="s",
            thresholds=m.threshold_steps(warning=lag.warning_seconds, critical=lag.critical_seconds),
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": "/\\(alert\\)$/"},
                    "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
                }
            ],
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Last event age",
            "Seconds since the exporter last received a unique event. BillingWatchNoEvents warns when this passes "
            f"{silence} while the same hours one day and one week earlier had at least "
            f"{cfg.exporter.silence_min_usual_events} events; quiet nights are normal.",
            [
                m.target(
                    f"time() - max by (instance) ({sel('stripe_last_event_timestamp_seconds')} > 0)", "{{instance}}"
                )
            ],
            unit="s",
            thresholds=m.threshold_steps(warning=seconds(silence)),
        ),
        12,
        8,
    )
    delivery = cfg.webhook_delivery
    g.add(
        m.timeseries(
            "Missed deliveries",
            "Events Stripe reports as not yet delivered (delivery_success=false), and events no webhook brought that "
            f"the poller fetched over {delivery.fetched_window}. BillingWatchStripeDeliveryFailing fires at "
            f"{delivery.max_undelivered} undelivered or {delivery.min_fetched} fetched for {delivery.for_duration}. "
            "Empty unless STRIPE_API_KEY is set (the poller is off without it).",
            [
                m.target(f"max by (instance) ({sel('stripe_events_undelivered')})", "undelivered {{instance}}"),
                m.target(
                    increase(sel("billingwatch_events_fetched_total"), delivery.fetched_window, "instance"),
                    "fetched {{instance}}",
                ),
            ],
            unit="none",
            thresholds=m.threshold_steps(warning=delivery.max_undelivered),
        ),
        24,
        8,
    )

    g.row("Exporter health")
    g.add(
        m.stat(
            "Exporter up",
            "Whether Prometheus' last scrape of each exporter succeeded.",
            [m.target(f"up{{{SCOPE}}}", "{{instance}}", instant=True)],
            unit="none",
            thresholds=m.steps((None, "red"), (1, "green")),
            color_mode="background",
            mappings=[{"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}],
        ),
        6,
        4,
    )
    g.add(
        m.stat(
            "Processing errors",
            "Events whose processing raised an error in the selected time range (each is logged with its stage).",
            [m.target(increase(sel("billingwatch_event_processing_errors_total"), "$__range"), instant=True)],
            unit="none",
            decimals=0,
            # The counter's series (one per stage) only exist after a first error.
            no_value="0",
            thresholds=m.steps((None, "green"), (1, "red")),
            color_mode="background",
        ),
        6,
        4,
    )
    g.add(
        m.stat(
            "Label values overflowed",
            "Label values replaced by `other` because a label hit metrics.max_label_values, in the selected range. "
            "Anything above zero means bad input or a cap that is too low.",
            [m.target(increase(sel("billingwatch_label_values_overflowed_total"), "$__range"), instant=True)],
            unit="none",
            decimals=0,
            thresholds=m.steps((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        6,
        4,
    )
    g.add(
        m.stat(
            "Anomaly series dropped",
            "Anomaly series dropped because detectors.max_series was reached, in the selected range.",
            [m.target(increase(sel("billingwatch_anomaly_series_dropped_total"), "$__range"), instant=True)],
            unit="none",
            decimals=0,
            thresholds=m.steps((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        6,
        4,
    )
    g.add(
        m.timeseries(
            "Processing errors by stage",
            "Events whose processing raised an error, by stage.",
            [
                m.target(
                    increase(sel("billingwatch_event_processing_errors_total"), "$__rate_interval", "stage"),
                    "{{stage}}",
                )
            ],
            unit="none",
            bars=True,
            stack=True,
            decimals=0,
        ),
        8,
        8,
    )
    g.add(
        m.timeseries(
            "State flush time",
            "Time to write seen event ids and detector state to disk (p50, p99). Slow flushes mean a slow disk.",
            [
                m.target(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate({sel('billingwatch_state_flush_seconds_bucket')}[$__rate_interval])))",
                    f"p{p}",
                )
                for q, p in ((0.5, 50), (0.99, 99))
            ],
            unit="s",
        ),
        8,
        8,
    )
    g.add(
        m.timeseries(
            "Seen event ids",
            "Event ids held in the dedupe store (kept for state.retention_seconds).",
            [m.target(f"sum by (instance) ({sel('billingwatch_state_seen_ids')})", "{{instance}}")],
            unit="none",
            decimals=0,
        ),
        8,
        8,
    )
    g.add(
        m.table(
            "Exporter versions",
            "Running exporters and their versions.",
            [m.target(sel("billingwatch_build_info"), instant=True, table=True)],
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value": True, "__name__": True},
                        "indexByName": {},
                        "renameByName": {},
                    },
                }
            ],
        ),
        24,
        5,
    )

    from dashboards import overview

    return m.dashboard(
        uid=UID,
        title=TITLE,
        description="Webhook traffic, Stripe delivery delay and the exporter's own health.",
        panels=g.panels,
        variables=variables(currency=False),
        links=[m.dashboard_link("BillingWatch overview", overview.UID)],
        time_from="now-6h",
        refresh="30s",
    )


def _color(name: str, color: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
    }
