"""Every metric the ingest core exposes, on the exporter's own registry (never the global one).

Names and labels here are a contract: rules/, dashboards/ and users' own queries depend on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from exporter.bounds import FIELDS as BOUNDED_FIELDS
from exporter.fast_metrics import DEFAULT_MAX_SERIES, FastCounter, FastGauge, FastHistogram
from exporter.labels import LabelCap

# `*_created` series double the scrape for nothing Prometheus needs (it detects counter resets by itself).
disable_created_metrics()

OUTCOMES = (
    "accepted",
    "duplicate",
    "ignored",
    "missing_signature",
    "stale_signature",
    "invalid_signature",
    "invalid_payload",
    "too_large",
    "unavailable",
)

# Delivery delay buckets from 1 s to 6 h: Stripe delivers in seconds when healthy and retries with back-off
# for up to three days when not; the 10-minute lag threshold sits between two buckets (300 and 600 / 900).
DELAY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


class Children:
    """`metric.labels(*values)`, memoised. prometheus_client validates, converts and takes a lock on every
    labels() call, a noticeable share of the per-event cost. Holds one entry per series, so it stays as bounded
    as the series are (exporter.fast_metrics families only, whose series are never removed)."""

    __slots__ = ("_cache", "_lookup")

    def __init__(self, metric: Any):
        self._lookup = metric.lookup
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is None:
            child, overflowed = self._lookup(values)
            # A label set over the metric's series budget is not remembered: the memo stays as bounded as the
            # series are, and every such update is counted.
            if not overflowed:
                self._cache[values] = child
        return child


class CallbackCounter(Collector):
    """A counter whose value is read at scrape time from a plain attribute of another object: the hot path
    increments an int (a fraction of a prometheus_client Counter's inc()), the scrape reports it."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float], registry: CollectorRegistry):
        self._name = name
        self._documentation = documentation
        self._read = read
        registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())


class Metrics:
    """The ingest core's metrics plus the label caps that keep their series bounded.

    Those written for every event are exporter.fast_metrics classes (plain additions, event-loop thread only);
    the rest are prometheus_client's own."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_label_values: int = 300,
        max_series_per_metric: int = DEFAULT_MAX_SERIES,
    ):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.label_overflow = Counter(
            "billingwatch_label_values_overflowed",
            "Label values replaced by 'other' because a label reached its distinct-value cap.",
            registry=r,
        )
        self.values_rejected = Counter(
            "billingwatch_values_rejected",
            "Values of validly signed events left out of the metrics because no real Stripe object has them "
            "(exporter/bounds.py): amount above 99,999,999 minor units, created before 2010 or over a day ahead, "
            "delivery delay over 31 days. The event itself is still counted.",
            ["field"],
            registry=r,
        )
        for field in BOUNDED_FIELDS:
            self.values_rejected.labels(field)
        self.series_overflowed = Counter(
            "billingwatch_series_overflowed",
            "Updates of a label set beyond its metric's series budget (metrics.max_series_per_metric): counted in "
            "the metric's overflow series (labels \"other\", livemode kept) or, for amounts, left out.",
            ["metric"],
            registry=r,
        )
        cap = max_label_values
        self.cap_type = LabelCap(cap, self.label_overflow.inc)
        self.cap_currency = LabelCap(cap, self.label_overflow.inc)
        self.cap_failure_code = LabelCap(cap, self.label_overflow.inc)
        self.cap_reason = LabelCap(cap, self.label_overflow.inc)
        self.cap_fraud_type = LabelCap(cap, self.label_overflow.inc)

        self.webhook_requests = FastCounter(
            "billingwatch_webhook_requests",
            "Webhook requests by outcome (accepted, duplicate, ignored, missing_signature: no readable "
            "Stripe-Signature header, stale_signature: matches a secret but older than the tolerance (clock skew "
            "or replay), invalid_signature: matches no secret, invalid_payload, too_large, unavailable: answered "
            "503 because the state could not be saved or read).",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.webhook_requests.labels(outcome)
        self.events_by_mode = FastCounter(
            "stripe_events_by_mode",
            "Unique verified events by Stripe mode (livemode true or false), counted or ignored.",
            ["livemode"],
            registry=r,
        )
        self.processing_errors = Counter(
            "billingwatch_event_processing_errors",
            "Events whose processing raised an error (the event is still acknowledged and deduplicated).",
            ["stage"],
            registry=r,
        )
        self.events = FastCounter("stripe_events", "Unique Stripe events by type.", ["type"], registry=r)
        self.delivery_delay = FastHistogram(
            "stripe_event_delivery_delay_seconds",
            "Time from an event's creation at Stripe to its first delivery here.",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.last_event = FastGauge(
            "stripe_last_event_timestamp_seconds",
            "Unix time at which the last unique event was received.",
            registry=r,
        )
        self.last_event_created = FastGauge(
            "stripe_last_event_created_timestamp_seconds",
            "Stripe `created` time of the newest unique event received.",
            registry=r,
        )
        # Every business metric carries `livemode` ("true" | "false", from the event): live and test traffic are
        # counted apart, so a test payment never moves a live figure and rules judge each mode on its own.
        self.charges = FastCounter(
            "stripe_charges",
            "Charge attempts (succeeded and failed) by currency.",
            ["currency", "livemode"],
            registry=r,
        )
        self.charges_failed = FastCounter(
            "stripe_charges_failed",
            "Failed charge attempts by currency and Stripe failure code.",
            ["currency", "failure_code", "livemode"],
            registry=r,
        )
        self.charge_amount = FastCounter(
            "stripe_charge_amount",
            "Captured amount of successful charges, in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.refund_amount = FastCounter(
            "stripe_refund_amount",
            "Refunded amount, in major currency units (each refund once, when it is created; failures are "
            "counted apart in stripe_refund_failure_amount_total).",
            ["currency", "livemode"],
            registry=r,
        )
        self.refunds = FastCounter(
            "stripe_refunds",
            "Refunds by currency (each refund once, when it is created).",
            ["currency", "livemode"],
            registry=r,
        )
        self.refund_failures = FastCounter(
            "stripe_refund_failures",
            "Refunds counted in stripe_refunds_total that later failed (the money went back to the balance).",
            ["currency", "livemode"],
            registry=r,
        )
        self.refund_failure_amount = FastCounter(
            "stripe_refund_failure_amount",
            "Amount of failed refunds returned to the balance, in major currency units. Money out through refunds "
            "= stripe_refund_amount_total - stripe_refund_failure_amount_total.",
            ["currency", "livemode"],
            registry=r,
        )
        self.disputes = FastCounter(
            "stripe_disputes",
            "Chargebacks opened, by reason (inquiries, status warning_*, are in stripe_dispute_inquiries_total).",
            ["reason", "livemode"],
            registry=r,
        )
        self.dispute_amount = FastCounter(
            "stripe_dispute_amount",
            "Amount of chargebacks opened, in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.dispute_inquiries = FastCounter(
            "stripe_dispute_inquiries",
            "Dispute inquiries opened (status warning_*): no funds move and card networks do not count them.",
            ["reason", "livemode"],
            registry=r,
        )
        self.disputes_closed = FastCounter(
            "stripe_disputes_closed",
            "Chargebacks closed (charge.dispute.closed), by outcome: won or lost.",
            ["status", "livemode"],
            registry=r,
        )
        self.dispute_lost_amount = FastCounter(
            "stripe_dispute_lost_amount",
            "Amount of chargebacks closed as lost: money lost to disputes for good, in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.dispute_funds_withdrawn_amount = FastCounter(
            "stripe_dispute_funds_withdrawn_amount",
            "Disputed amounts taken from the balance (charge.dispute.funds_withdrawn), in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.dispute_funds_reinstated_amount = FastCounter(
            "stripe_dispute_funds_reinstated_amount",
            "Disputed amounts returned to the balance (charge.dispute.funds_reinstated), in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.early_fraud_warnings = FastCounter(
            "stripe_early_fraud_warnings",
            "Radar early fraud warnings, by fraud type.",
            ["fraud_type", "livemode"],
            registry=r,
        )
        self.invoices_paid = FastCounter(
            "stripe_invoices_paid",
            "Invoices paid (invoice.paid), by currency.",
            ["currency", "livemode"],
            registry=r,
        )
        self.invoice_amount_paid = FastCounter(
            "stripe_invoice_amount_paid",
            "Amount paid on invoices (invoice.paid), in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.invoice_payment_failures = FastCounter(
            "stripe_invoice_payment_failures",
            "Failed invoice payment attempts (invoice.payment_failed), by currency.",
            ["currency", "livemode"],
            registry=r,
        )
        self.state_flush_seconds = Histogram(
            "billingwatch_state_flush_seconds",
            "Time spent writing seen event ids and detector state to disk.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.state_seen_ids = Gauge(
            "billingwatch_state_seen_ids",
            "Event ids held in the dedupe store (retention window).",
            registry=r,
        )
        self.state_writable = Gauge(
            "billingwatch_state_writable",
            "1 while the state can be saved; 0 from a failed write until writes succeed again (webhooks are then "
            "answered 503 and /readyz is not ready).",
            registry=r,
        )
        self.state_writable.set(1)  # the service reads its store's flag instead (set_function)
        self.build_info = Gauge(
            "billingwatch_build_info", "Always 1; labels carry the version.", ["version"], registry=r
        )
        self._limit_series(max_series_per_metric)

    def _limit_series(self, max_series: int) -> None:
        def overflowed(name: str) -> None:
            self.series_overflowed.labels(name).inc()

        for family in list(vars(self).values()):
            if isinstance(family, FastCounter | FastGauge | FastHistogram):
                family.max_series = max_series
                family.on_overflow = overflowed
                # Amounts of different currencies must never be added up in one "other" series.
                family.drop_on_overflow = family.name.endswith("_amount")
