"""Every metric the ingest core exposes, on the exporter's own registry (never the global one).

Names and labels here are a contract: rules/, dashboards/ and users' own queries depend on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from exporter.bounds import DELAY_BUCKETS
from exporter.bounds import FIELDS as BOUNDED_FIELDS
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



# Series one metric may have. Labels are capped one by one (exporter/labels.py), but two capped labels still
# multiply: 310 currencies x 310 failure codes were 90,601 series of one metric, a 6.6 MB scrape. Stripe's real
# combinations stay far below this (a few currencies x ~60 failure codes x 2 modes).
DEFAULT_MAX_SERIES = 1000
OVERFLOW_VALUE = "other"
# Labels whose values are a closed set decided by our code, not by input: they keep their value in the overflow
# series, so that live and test traffic (contract 1) are still told apart there.
KEEP_ON_OVERFLOW = frozenset({"livemode"})


class _Discard:
    """Where an update beyond an amount family's budget goes: nowhere."""

    def inc(self, amount: float = 1.0) -> None:
        pass


class Budgeted:
    """A labelled prometheus_client metric behind a series budget, its children memoised.

    Stock labels() validates, converts and takes a lock on every call, a noticeable share of the per-event cost;
    `labels()` here answers from a dict of the children it handed out. Series are never removed, so that dict is
    also the metric's series count: beyond `max_series`, a new label set is counted in the overflow series (every
    label "other" but KEEP_ON_OVERFLOW) or, with drop_on_overflow (amounts: adding up different currencies would
    be meaningless), nowhere, and on_overflow(name) is called for each such update. Event-loop thread only (the
    scrape reads the stock metric, which takes its own locks)."""

    __slots__ = ("_children", "_keep", "drop_on_overflow", "max_series", "metric", "name", "on_overflow")

    def __init__(self, metric: Counter | Gauge | Histogram, labelnames: Sequence[str]):
        self.metric = metric
        self.name = next(iter(metric.describe())).name  # a counter's without _total
        self.max_series = DEFAULT_MAX_SERIES
        self.drop_on_overflow = False
        self.on_overflow: Callable[[str], None] | None = None
        self._keep = tuple(n in KEEP_ON_OVERFLOW for n in labelnames)
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is not None:
            return child
        if len(self._children) < self.max_series:
            child = self._children[values] = self.metric.labels(*values)
            return child
        if self.on_overflow is not None:
            self.on_overflow(self.name)
        if self.drop_on_overflow:
            return _DISCARD
        # Not memoised under `values`: the memo stays as bounded as the series are, and every such update is
        # counted. At most one overflow series per kept value: the budget is exceeded by that little only.
        other = tuple(v if keep else OVERFLOW_VALUE for v, keep in zip(values, self._keep, strict=True))
        child = self._children.get(other)
        if child is None:
            child = self._children[other] = self.metric.labels(*other)
        return child


_DISCARD = _Discard()


def budgeted(
    kind: type[Counter | Gauge | Histogram],
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    *,
    registry: CollectorRegistry,
    **kwargs: Any,
) -> Budgeted:
    """A stock metric of `kind` on `registry`, behind a series budget."""
    return Budgeted(kind(name, documentation, labelnames, registry=registry, **kwargs), labelnames)


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

    All are prometheus_client's own; the labelled ones written per event are Budgeted (memoised labels(), a series
    budget)."""

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

        self.webhook_requests = budgeted(
            Counter,
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
        self.events_by_mode = budgeted(
            Counter,
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
        self.events = budgeted(Counter, "stripe_events", "Unique Stripe events by type.", ["type"], registry=r)
        self.delivery_delay = Histogram(
            "stripe_event_delivery_delay_seconds",
            "Time from an event's creation at Stripe to its first delivery here.",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.last_event = Gauge(
            "stripe_last_event_timestamp_seconds",
            "Unix time at which the last unique event was received.",
            registry=r,
        )
        self.last_event_created = Gauge(
            "stripe_last_event_created_timestamp_seconds",
            "Stripe `created` time of the newest unique event received.",
            registry=r,
        )
        # Every business metric carries `livemode` ("true" | "false", from the event): live and test traffic are
        # counted apart, so a test payment never moves a live figure and rules judge each mode on its own.
        self.charges = budgeted(
            Counter,
            "stripe_charges",
            "Charge attempts (succeeded and failed) by currency.",
            ["currency", "livemode"],
            registry=r,
        )
        self.charges_failed = budgeted(
            Counter,
            "stripe_charges_failed",
            "Failed charge attempts by currency and Stripe failure code.",
            ["currency", "failure_code", "livemode"],
            registry=r,
        )
        self.charge_amount = budgeted(
            Counter,
            "stripe_charge_amount",
            "Captured amount of successful charges, in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.refund_amount = budgeted(
            Counter,
            "stripe_refund_amount",
            "Refunded amount, in major currency units (each refund once, when it is created; failures are "
            "counted apart in stripe_refund_failure_amount_total).",
            ["currency", "livemode"],
            registry=r,
        )
        self.refunds = budgeted(
            Counter,
            "stripe_refunds",
            "Refunds by currency (each refund once, when it is created).",
            ["currency", "livemode"],
            registry=r,
        )
        self.refund_failures = budgeted(
            Counter,
            "stripe_refund_failures",
            "Refunds counted in stripe_refunds_total that later failed (the money went back to the balance).",
            ["currency", "livemode"],
            registry=r,
        )
        self.refund_failure_amount = budgeted(
            Counter,
            "stripe_refund_failure_amount",
            "Amount of failed refunds returned to the balance, in major currency units. Money out through refunds "
            "= stripe_refund_amount_total - stripe_refund_failure_amount_total.",
            ["currency", "livemode"],
            registry=r,
        )
        self.disputes = budgeted(
            Counter,
            "stripe_disputes",
            "Chargebacks opened, by reason (inquiries, status warning_*, are in stripe_dispute_inquiries_total).",
            ["reason", "livemode"],
            registry=r,
        )
        self.dispute_amount = budgeted(
            Counter,
            "stripe_dispute_amount",
            "Amount of chargebacks opened, in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.dispute_inquiries = budgeted(
            Counter,
            "stripe_dispute_inquiries",
            "Dispute inquiries opened (status warning_*): no funds move and card networks do not count them.",
            ["reason", "livemode"],
            registry=r,
        )
        self.disputes_closed = budgeted(
            Counter,
            "stripe_disputes_closed",
            "Chargebacks closed (charge.dispute.closed), by outcome: won or lost.",
            ["status", "livemode"],
            registry=r,
        )
        self.dispute_lost_amount = budgeted(
            Counter,
            "stripe_dispute_lost_amount",
            "Amount of chargebacks closed as lost: money lost to disputes for good, in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.dispute_funds_withdrawn_amount = budgeted(
            Counter,
            "stripe_dispute_funds_withdrawn_amount",
            "Disputed amounts taken from the balance (charge.dispute.funds_withdrawn), in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.dispute_funds_reinstated_amount = budgeted(
            Counter,
            "stripe_dispute_funds_reinstated_amount",
            "Disputed amounts returned to the balance (charge.dispute.funds_reinstated), in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.early_fraud_warnings = budgeted(
            Counter,
            "stripe_early_fraud_warnings",
            "Radar early fraud warnings, by fraud type.",
            ["fraud_type", "livemode"],
            registry=r,
        )
        self.invoices_paid = budgeted(
            Counter,
            "stripe_invoices_paid",
            "Invoices paid (invoice.paid), by currency.",
            ["currency", "livemode"],
            registry=r,
        )
        self.invoice_amount_paid = budgeted(
            Counter,
            "stripe_invoice_amount_paid",
            "Amount paid on invoices (invoice.paid), in major currency units.",
            ["currency", "livemode"],
            registry=r,
        )
        self.invoice_payment_failures = budgeted(
            Counter,
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
            if isinstance(family, Budgeted):
                family.max_series = max_series
                family.on_overflow = overflowed
                # Amounts of different currencies must never be added up in one "other" series.
                family.drop_on_overflow = family.name.endswith("_amount")
