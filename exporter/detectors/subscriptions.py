"""The subscription ledger and the silent_lapse detector.

The ledger holds one record per subscription, built from `customer.subscription.*` snapshots (status, customer,
monthly value, period, trial, collection settings, mode) and from invoice, invoice payment and charge events (last
successful payment, the period paid through, an open renewal invoice). Snapshots only move forward: one whose event
`created` is older than the record's is ignored, so out-of-order deliveries never roll state back. `created` has
one-second resolution, so at equal `created` the snapshots are ordered by what they mean (`snapshot_follows`).
Payments are merged as maxima, so their order does not matter either. The ledger is bounded
(`max_subscriptions`): beyond it, ended subscriptions go first, then those that do not pay (see `_evict`).

silent_lapse (evaluated in tick(), on the exporter's or a backtest's clock) reports an `active` subscription
- `unpaid_renewal`: whose renewal invoice (billing_reason subscription_cycle, amount due > 0) is still open
  `grace_seconds` after it was finalised (charge_automatically) or after its due date (send_invoice);
- `no_payment`: with no successful payment `grace_seconds` (plus `days_until_due` for send_invoice) after the
  latest renewal we can vouch for. That boundary comes from the period Stripe sends: the current period's start
  if it began while we were watching, else the current period's end. A subscription that existed before
  BillingWatch is therefore never accused for a payment made before we started.
It never reports: trials, paused collection, status other than active (past_due and unpaid are already loud in
Stripe and in stripe_subscriptions{status}), subscriptions set to end at the boundary, free or metered-only plans
(no fixed monthly value; their invoices are still checked by unpaid_renewal), nor anything before the endpoint has
delivered at least one invoice.paid/payment_succeeded (an endpoint not subscribed to invoice events would
otherwise make every subscription look unpaid).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import re
import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter import logs
from exporter.detectors.board import AnomalyBoard
from exporter.detectors.config import SUBSCRIPTION_STATUSES, SubscriptionsConfig
from exporter.detectors.discounts import DiscountBook, apply_discounts
from exporter.detectors.ledger_record import NEG_INF, Sub
from exporter.detectors.subscription_shapes import invoice_paid_through, read_subscription
from exporter.labels import LabelCap
from exporter.metrics import DEFAULT_MAX_SERIES
from exporter.money import to_major
from exporter.state import StateStore
from exporter.stripe_shapes import get_int, get_str, invoice_subscription_id

# One row per subscription (its id -> Sub.dump()), written at the tick after it changed. Stored as "zz_ledger"
# before: renamed at start (state.PREFIXED_NAMESPACES). Simpler than the 256-shard journal it replaced, and
# cheaper: bench/state_layout.py, month-start run into a ledger of 250,000, ~14 renewals/s: 0.56 ms per tick and
# flush against 5.0 ms for the journal (which rewrote a ~1,000-record shard every tick), 8 vs 10 ms at 200/s;
# read back at start in 2.3 s against 3.0 s. Only at make-bench scale (3,000 changed records a second, far beyond
# one account) does the writer thread do more than with the journal, ~20 ms a second.
NS = "ledger"
# Row keys of that journal (up to b3f67e2): "j<seq>" (a tick's changes), "s<shard>" (a shard snapshot).
OLD_JOURNAL_ROW = re.compile(r"[js][0-9]+")
META_NS = "subscriptions_meta"
# Payments and period starts within this much of a boundary count as belonging to it (clock skew, invoices
# finalised about an hour after the period starts).
SLACK_SECONDS = 3600
# Invoice events may arrive before the first subscription event; their facts wait here (bounded).
MAX_ORPHANS = 10_000
# Subscriptions evaluated per tick at least (a sweep of 50,000 at once would pause the listener ~100 ms).
SWEEP_SLICE_MIN = 500
ENDED_STATUSES = frozenset(("canceled", "incomplete_expired"))
PAID_TYPES = frozenset(("invoice.paid", "invoice.payment_succeeded"))
SETTLED_TYPES = frozenset(("invoice.voided", "invoice.marked_uncollectible", "invoice.deleted"))
RENEWAL_REASONS = frozenset(("subscription_cycle",))
# Event types of a subscription snapshot, in the order Stripe emits them for one subscription: at equal `created`
# a later kind follows an earlier one (created < updated, paused, resumed, ... < deleted).
SNAP_KINDS = {"customer.subscription.created": 0, "customer.subscription.deleted": 2}
# How far along its life a status is, for ties the event kinds and previous_attributes cannot break. A
# subscription starts incomplete (or trialing), becomes active, may fall past_due and then unpaid, or pause; ended
# statuses are last. Going back (past_due -> active after a retry) is told by previous_attributes instead.
STATUS_PROGRESS = {
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "past_due": 3,
    "paused": 3,
    "unpaid": 4,
    "canceled": 5,
    "incomplete_expired": 5,
}
# Eviction classes (lowest goes first when the ledger is full): what is forgotten costs the least accuracy.
EVICT_CLASS = {"canceled": 0, "incomplete_expired": 0, "incomplete": 1, "unpaid": 2, "paused": 2}
EVICT_OTHER = 3  # trialing, active, past_due and unknown statuses
# An eviction pass frees this fraction of the cap at once, so that the scan it needs runs rarely.
EVICT_HEADROOM = 0.01
MODE_LABELS = {1: "true", 0: "false", -1: ""}


def _previous_status(event: dict[str, Any]) -> Any:
    previous = event["data"].get("previous_attributes")
    return previous.get("status") if isinstance(previous, dict) else None


def snapshot_follows(kind: int, status: str | None, previous_status: Any, rec: Sub) -> bool:
    """At equal event `created`: does the new snapshot come after the one applied to `rec`?"""
    if kind != rec.snap_kind:
        return kind > rec.snap_kind
    if isinstance(previous_status, str):
        # The new event says which status it moved from: it follows ours if it moved from our status.
        if previous_status == rec.status:
            return True
        if status == rec.status:
            return True  # the same state twice: harmless either way
        return STATUS_PROGRESS.get(previous_status, -1) >= STATUS_PROGRESS.get(rec.status or "", -1)
    if status is None or rec.status is None or status == rec.status:
        return True  # nothing to order by: the later-arriving one wins
    return STATUS_PROGRESS.get(status, -1) >= STATUS_PROGRESS.get(rec.status, -1)


def _zero_status_counts() -> dict[tuple[str, str], int]:
    """Every known status in both modes, shown at 0 before the first subscription."""
    return {(status, mode): 0 for status in SUBSCRIPTION_STATUSES for mode in ("true", "false")}


class SubscriptionLedger:
    name = "silent_lapse"

    def __init__(
        self,
        board: AnomalyBoard,
        state: StateStore,
        registry: CollectorRegistry,
        config: SubscriptionsConfig,
        *,
        max_label_values: int = 300,
    ):
        self.board = board
        self.state = state
        self.severity = config.severity
        self.grace = config.grace_seconds
        self.sweep_interval = config.sweep_interval_seconds
        self.mrr_statuses = frozenset(config.mrr_statuses)
        self.ended_retention = config.ended_retention_seconds
        self.max_subscriptions = config.max_subscriptions
        self.subs: dict[str, Sub] = {}
        self._dirty: dict[str, bool] = {}  # sub id -> changed (True) or forgotten (False) since the last tick
        self.discounts = DiscountBook(state)
        # Ended subscriptions in the order they ended: the first forgotten when the ledger is full.
        self._ended: dict[str, None] = {}
        # Saving the table for restarts; a backtest (which never restarts) turns it off.
        self.persist = True
        self._orphans: OrderedDict[str, Sub] = OrderedDict()
        self._open_invoices: dict[str, str] = {}  # open renewal invoice id -> subscription id (pre-basil charges)
        self._next_sweep = float("-inf")
        self._cycle: list[str] | None = None
        self._cycle_pos = 0
        self._cycle_started = 0.0
        self.payments_seen = False
        self.lapsed_count = 0
        self._cap_currency = LabelCap(max_label_values)
        self.evicted = Counter(
            "billingwatch_subscriptions_evicted",
            "Subscriptions forgotten because the ledger reached detectors.subscriptions.max_subscriptions, by the "
            "status they had (ended ones go first).",
            ["status"],
            registry=registry,
        )
        # What the gauges report (LedgerGauges reads them at scrape time), kept exact as records change.
        self._status_counts = _zero_status_counts()
        self._mrr_milli: dict[tuple[str, str], int] = {}
        self._lapsed_counts = {"true": 0, "false": 0}
        LedgerGauges(self, registry)
        board.precreate(self.name)
        self._restore()

    def describe(self) -> dict[str, Any]:
        return {
            "grace_seconds": self.grace,
            "sweep_interval_seconds": self.sweep_interval,
            "mrr_statuses": sorted(self.mrr_statuses),
            "ended_retention_seconds": self.ended_retention,
            "severity": self.severity,
            "reasons": ["unpaid_renewal", "no_payment"],
            "subscriptions": len(self.subs),
            "lapsed": self.lapsed_count,
        }

    # -- events ----------------------------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any], received: float) -> None:
        event_type: str = event["type"]
        if event_type.startswith("customer.subscription."):
            self._subscription(event, event_type)
        elif event_type.startswith("invoice."):
            self._invoice(event, event_type)
        elif event_type.startswith("customer.discount."):
            sub_id = self.discounts.on_discount(event_type, event["data"]["object"])
            if sub_id is not None:
                self._reprice(sub_id, get_int(event, "created") or received)
        elif event_type in ("coupon.created", "coupon.updated"):
            for sub_id in self.discounts.on_coupon(event["data"]["object"]):
                self._reprice(sub_id, get_int(event, "created") or received)
        elif event_type == "invoice_payment.paid":
            self._invoice_payment(event)
        elif event_type == "charge.succeeded" and self._open_invoices:
            # Pre-basil charges name their invoice; basil ones do not (invoice.paid covers them).
            invoice_id = event["data"]["object"].get("invoice")
            if type(invoice_id) is not str:
                return
            sub_id = self._open_invoices.get(invoice_id)
            if sub_id is not None:
                rec = self.record(sub_id)
                if rec is not None:
                    paid_at = get_int(event["data"]["object"], "created") or get_int(event, "created") or 0
                    self._settle(rec, invoice_id, paid_at=paid_at)
                    self._save(sub_id, rec)

    def _subscription(self, event: dict[str, Any], event_type: str) -> None:
        obj = event["data"]["object"]
        sub_id = get_str(obj, "id")
        created = get_int(event, "created")
        if sub_id is None or created is None:
            return
        rec = self.record(sub_id)
        new = rec is None
        if rec is None:
            rec = self._orphans.pop(sub_id, None) or Sub()
            if rec.open_invoice:
                self._open_invoices[rec.open_invoice] = sub_id
            counted = None
        else:
            counted = (rec.status, rec.currency, rec.monthly, rec.livemode)
        if created < rec.first_seen:
            rec.first_seen = created
        kind = SNAP_KINDS.get(event_type, 1)
        view = read_subscription(obj)
        status = view.status or ("canceled" if event_type == "customer.subscription.deleted" else None)
        snap_created = rec.snap_created
        if created > snap_created or (
            created == snap_created and snapshot_follows(kind, status, _previous_status(event), rec)
        ):
            rec.snap_created = created
            rec.snap_kind = kind
            # Interned: a handful of distinct values shared by every record.
            if status:
                rec.status = sys.intern(status)
            if view.customer:
                rec.customer = sys.intern(view.customer)
            if view.currency:
                rec.currency = sys.intern(view.currency)
            rec.apply_snapshot(view)
            self.discounts.set_listed(sub_id, view.discounts)
            self._apply_discounts(sub_id, rec, created)
        mode = event.get("livemode")
        if mode is not True and mode is not False:
            mode = obj.get("livemode")
        if mode is True or mode is False:
            rec.livemode = 1 if mode else 0
        # The gauges move only when what they count changed (most updates change neither).
        if counted != (rec.status, rec.currency, rec.monthly, rec.livemode):
            if counted is not None:
                self._count_values(*counted, sign=-1)
            self._count(rec)
        self._save(sub_id, rec)
        self._track_ended(sub_id, rec)
        if new and len(self.subs) > self.max_subscriptions:
            self._evict()

    def _apply_discounts(self, sub_id: str, rec: Sub, at: float) -> None:
        if sub_id not in self.discounts.listed:
            rec.monthly, rec.discount_end = rec.list_monthly, None  # the common case, on the hot path
            return
        rec.monthly, rec.discount_end = apply_discounts(
            rec.list_monthly, rec.invoices_per_month, rec.currency, self.discounts.resolve(sub_id), at
        )

    def _reprice(self, sub_id: str, at: float) -> None:
        """The discounts of a subscription changed (or their terms became known): its monthly value again."""
        rec = self.record(sub_id)
        if rec is None:
            return
        before = (rec.monthly, rec.discount_end)
        self._uncount(rec)
        self._apply_discounts(sub_id, rec, at)
        self._count(rec)
        if (rec.monthly, rec.discount_end) != before:
            self._save(sub_id, rec)

    def _invoice_payment(self, event: dict[str, Any]) -> None:
        """Basil (2025-03-31+): a payment names its invoice only through an InvoicePayment (charges and payment
        intents lost their `invoice`). An invoice can be paid in several parts: each reduces the open amount, and
        the renewal counts as paid once nothing remains."""
        payment = event["data"]["object"]
        if not self.payments_seen:
            self.payments_seen = True
            self.state.put(META_NS, "payments_seen", True)
        invoice_id = get_str(payment, "invoice")
        sub_id = self._open_invoices.get(invoice_id) if invoice_id else None
        rec = self.record(sub_id) if sub_id else None
        if rec is None or invoice_id is None or sub_id is None:
            return  # not an open renewal we watch (its invoice.paid, if any, settles it anyway)
        paid_at = get_int(payment, "status_transitions", "paid_at") or get_int(event, "created") or 0
        amount = get_int(payment, "amount_paid")
        if amount is not None and 0 < amount < rec.open_amount:
            rec.open_amount -= amount
            if paid_at > rec.last_payment:
                rec.last_payment = paid_at
        else:
            self._settle(rec, invoice_id, paid_at=paid_at)
        self._save(sub_id, rec)

    def _invoice(self, event: dict[str, Any], event_type: str) -> None:
        invoice = event["data"]["object"]
        if not self.payments_seen and event_type in PAID_TYPES:
            # Evidence that this endpoint receives invoice payments at all (see the module docstring).
            self.payments_seen = True
            self.state.put(META_NS, "payments_seen", True)
        sub_id = invoice_subscription_id(invoice)
        invoice_id = get_str(invoice, "id")
        if sub_id is None or invoice_id is None:
            return
        status = invoice.get("status")
        paid = event_type in PAID_TYPES or status == "paid"
        settled = not paid and (event_type in SETTLED_TYPES or status in ("void", "uncollectible"))
        due_amount = get_int(invoice, "amount_remaining") or get_int(invoice, "amount_due") or 0
        renewal_open = (
            not paid
            and not settled
            and status == "open"
            and invoice.get("billing_reason") in RENEWAL_REASONS
            and due_amount > 0
        )
        if not (paid or settled or renewal_open):
            return  # drafts, non-renewal invoices, updates of no consequence
        rec = self.record(sub_id)
        orphan = rec is None
        if rec is None:
            rec = self._orphans.get(sub_id) or Sub()
        if paid:
            paid_at = get_int(invoice, "status_transitions", "paid_at") or get_int(event, "created") or 0
            self._settle(rec, invoice_id, paid_at=paid_at)
            through = invoice_paid_through(invoice)
            if through is not None and through > rec.paid_through:
                rec.paid_through = through
        elif settled:
            self._settle(rec, invoice_id)
        elif rec.open_invoice is None and zlib.crc32(invoice_id.encode()) not in rec.settled:
            rec.open_invoice = invoice_id
            rec.open_amount = due_amount
            due = get_int(invoice, "due_date")
            started = get_int(invoice, "status_transitions", "finalized_at") or get_int(invoice, "created") or 0
            rec.open_since = max(due or 0, started)
            if not orphan:
                self._open_invoices[invoice_id] = sub_id
        else:
            return
        if not orphan:
            self._save(sub_id, rec)
        else:
            self._orphans[sub_id] = rec
            if len(self._orphans) > MAX_ORPHANS:
                self._orphans.popitem(last=False)

    def _settle(self, rec: Sub, invoice_id: str, *, paid_at: int | None = None) -> None:
        if paid_at is not None and paid_at > rec.last_payment:
            rec.last_payment = paid_at
        rec.settle(zlib.crc32(invoice_id.encode()))
        if rec.open_invoice == invoice_id:
            self._open_invoices.pop(invoice_id, None)
            rec.open_invoice = None
            rec.open_amount = 0
            rec.open_since = 0

    def record(self, sub_id: str) -> Sub | None:
        """A subscription's record, changed in place; _save() then marks it to be written."""
        return self.subs.get(sub_id)

    def _save(self, sub_id: str, rec: Sub) -> None:
        self.subs[sub_id] = rec
        self._dirty[sub_id] = True

    # -- gauges ----------------------------------------------------------------------------------------------

    def _count(self, rec: Sub, sign: int = 1) -> None:
        self._count_values(rec.status, rec.currency, rec.monthly, rec.livemode, sign=sign)

    def _count_values(
        self, status: str | None, currency: str | None, monthly: float, livemode: int, *, sign: int = 1
    ) -> None:
        if status is None:
            return
        mode = MODE_LABELS.get(livemode, "")
        key = (status if status in SUBSCRIPTION_STATUSES else "other", mode)
        self._status_counts[key] = self._status_counts.get(key, 0) + sign
        if status in self.mrr_statuses and currency and monthly > 0:
            mkey = (currency, mode)
            value = self._mrr_milli.get(mkey)
            if value is None:
                # Amounts of different currencies are never added up: a currency beyond the label cap (or the
                # series budget) is left out.
                if self._cap_currency(currency) == "other" or len(self._mrr_milli) >= DEFAULT_MAX_SERIES:
                    return
                value = 0
            # Integer thousandths of a minor unit: adding and removing a value is exact, so no drift accumulates.
            self._mrr_milli[mkey] = value + sign * round(monthly * 1000)

    def _uncount(self, rec: Sub) -> None:
        self._count(rec, -1)

    def _recount(self) -> None:
        """Count every record from scratch (at start, after the ledger was read back)."""
        self._status_counts = _zero_status_counts()
        self._mrr_milli = {}
        for rec in self.subs.values():
            self._count(rec)

    # -- silent lapse ----------------------------------------------------------------------------------------

    def lapse_reason(self, rec: Sub, now: float) -> tuple[str, str] | None:
        """(reason, key) when `rec` is silently lapsed at `now`; the key names the renewal it is about."""
        if rec.status != "active" or rec.paused:
            return None
        if rec.trial_end is not None and rec.trial_end > now:
            return None
        if rec.open_invoice is not None and now > rec.open_since + self.grace:
            return "unpaid_renewal", f"unpaid_renewal:{rec.open_invoice}"
        if not self.payments_seen or rec.monthly <= 0:
            return None
        boundary = self.boundary(rec)
        if boundary is None:
            return None
        if rec.cancel_at is not None and rec.cancel_at <= boundary + SLACK_SECONDS:
            return None
        if rec.cancel_at_period_end and rec.period_end is not None and boundary >= rec.period_end - SLACK_SECONDS:
            return None
        allowance = rec.send_invoice_days * 86400 if rec.send_invoice_days >= 0 else 0
        if now <= boundary + allowance + self.grace:
            return None
        if rec.last_payment >= boundary - SLACK_SECONDS or rec.paid_through > boundary + SLACK_SECONDS:
            return None
        return "no_payment", f"no_payment:{boundary}"

    def boundary(self, rec: Sub) -> int | None:
        """The latest renewal a payment must exist for, judged only from what we could have seen."""
        if rec.period_start is not None and rec.period_start >= rec.first_seen - SLACK_SECONDS:
            return rec.period_start
        if rec.period_end is not None:
            return rec.period_end
        if rec.interval_s <= 0:
            return None
        # No period in the payload at all: one billing interval after the last payment (or our first sight).
        base = rec.last_payment if rec.last_payment > NEG_INF else rec.first_seen
        return base + rec.interval_s

    def _sweep_one(self, sub_id: str, now: float) -> None:
        rec = self.record(sub_id)
        if rec is None:
            return
        if rec.status in ENDED_STATUSES and rec.snap_created < now - self.ended_retention:
            self._forget(sub_id, rec)
            return
        if rec.discount_end is not None and rec.discount_end <= now:
            # A repeating coupon ran out: the value without it from now on (Stripe's next snapshot confirms it).
            self._reprice(sub_id, now)
            rec = self.record(sub_id) or rec
        found = self.lapse_reason(rec, now)
        if (found[0] if found else None) != rec.lapsed:
            self._set_lapsed(rec, found[0] if found else None)
            self._save(sub_id, rec)
        if found is not None and rec.alerted != found[1]:
            rec.alerted = found[1]
            self._save(sub_id, rec)
            self._report(sub_id, rec, found[0], now)

    def _forget(self, sub_id: str, rec: Sub) -> None:
        del self.subs[sub_id]
        self._ended.pop(sub_id, None)
        self.discounts.forget(sub_id)
        if rec.open_invoice:
            self._open_invoices.pop(rec.open_invoice, None)
        self._set_lapsed(rec, None)
        self._uncount(rec)
        self._dirty[sub_id] = False

    def _evict(self) -> None:
        """The ledger is over max_subscriptions: forget records down to 1 % below it. Ended ones first, in the
        order they ended (`_ended` keeps it, so this costs nothing per record); only if that is not enough, the
        rest in EVICT_CLASS order (incomplete, then unpaid and paused, then the others), the oldest last snapshot
        first: that needs one scan of every record (~0.1-0.3 s at 250,000), once per 1 % of the cap in new ones,
        and only in a ledger full of subscriptions that have not ended (raise the cap then)."""
        target = int(self.max_subscriptions * (1 - EVICT_HEADROOM))
        excess = len(self.subs) - target
        if excess <= 0:
            return
        victims = list(itertools.islice(self._ended, excess))
        if len(victims) < excess:

            def rank(item: tuple[str, Sub]) -> tuple[int, float]:
                return EVICT_CLASS.get(item[1].status or "", EVICT_OTHER), item[1].snap_created

            chosen = set(victims)
            rest = ((k, v) for k, v in self.subs.items() if k not in chosen)
            victims += [k for k, _ in heapq.nsmallest(excess - len(victims), rest, key=rank)]
        for sub_id in victims:
            rec = self.record(sub_id)
            if rec is None:
                continue
            self._forget(sub_id, rec)
            self.evicted.labels(rec.status if rec.status in SUBSCRIPTION_STATUSES else "other").inc()
        logs.event(
            logging.WARNING,
            "subscription ledger full: forgot the least useful records",
            forgotten=len(victims),
            max_subscriptions=self.max_subscriptions,
        )

    def _track_ended(self, sub_id: str, rec: Sub) -> None:
        if rec.status in ENDED_STATUSES:
            if sub_id not in self._ended:
                self._ended[sub_id] = None
        else:
            self._ended.pop(sub_id, None)

    def _set_lapsed(self, rec: Sub, reason: str | None) -> None:
        if (rec.lapsed is None) != (reason is None):
            self._add_lapsed(rec, 1 if reason is not None else -1)
        rec.lapsed = reason

    def _add_lapsed(self, rec: Sub, delta: int) -> None:
        self.lapsed_count += delta
        mode = MODE_LABELS.get(rec.livemode, "")
        self._lapsed_counts[mode] = self._lapsed_counts.get(mode, 0) + delta

    def _report(self, sub_id: str, rec: Sub, reason: str, now: float) -> None:
        amount = None
        if reason == "unpaid_renewal" and rec.currency:
            amount = to_major(rec.open_amount, rec.currency)
        elif rec.currency:
            amount = to_major(round(rec.monthly), rec.currency)
        what = (
            f"renewal invoice {rec.open_invoice} unpaid since {rec.open_since}"
            if reason == "unpaid_renewal"
            else f"no successful payment for the renewal at {self.boundary(rec)}"
        )
        self.board.raise_anomaly(
            self.name,
            reason,
            at=now,
            severity=self.severity,
            customer=rec.customer,
            subscription=sub_id,
            invoice=rec.open_invoice if reason == "unpaid_renewal" else None,
            currency=rec.currency,
            amount=amount,
            livemode=None if rec.livemode < 0 else rec.livemode == 1,
            summary=f"active subscription {sub_id}: {what}",
            details={
                "subscription": sub_id,
                "invoice": rec.open_invoice,
                "period_start": rec.period_start,
                "period_end": rec.period_end,
                "last_payment": rec.last_payment if rec.last_payment > NEG_INF else None,
                "paid_through": rec.paid_through if rec.paid_through > NEG_INF else None,
                "grace_seconds": self.grace,
                "collection": "send_invoice" if rec.send_invoice_days >= 0 else "charge_automatically",
            },
        )

    def tick(self, now: float) -> None:
        # The sweep is spread over its interval (a slice per tick) so that no tick pauses the webhook listener
        # for long; when the clock moved a whole interval since the cycle began (a backtest's sparse ticks),
        # the rest of the cycle runs at once.
        if self._cycle is None and now >= self._next_sweep:
            self._cycle = list(self.subs)
            self._cycle_pos = 0
            self._cycle_started = now
            self._next_sweep = now + self.sweep_interval
        if self._cycle is not None:
            cycle = self._cycle
            if now - self._cycle_started >= self.sweep_interval:
                end = len(cycle)
            else:
                end = self._cycle_pos + max(SWEEP_SLICE_MIN, math.ceil(len(cycle) / max(1.0, self.sweep_interval)))
            for sub_id in cycle[self._cycle_pos : end]:
                self._sweep_one(sub_id, now)
            self._cycle_pos = end
            if end >= len(cycle):
                self._cycle = None
        if self._dirty:
            if self.persist:
                for sub_id, alive in self._dirty.items():
                    if alive:
                        self.state.put(NS, sub_id, self.subs[sub_id].dump())
                    else:
                        self.state.delete(NS, sub_id)
            self._dirty = {}

    # -- restart ---------------------------------------------------------------------------------------------

    def _restore(self) -> None:
        self.payments_seen = bool(self.state.get(META_NS, "payments_seen"))
        journal = []
        for sub_id, values in self.state.items(NS):
            if OLD_JOURNAL_ROW.fullmatch(sub_id):
                journal.append((sub_id, values))
            elif (rec := Sub.load(values)) is not None:
                self.subs[sub_id] = rec
        if journal:
            self._migrate(journal)
        for sub_id, rec in self.subs.items():
            if rec.open_invoice:
                self._open_invoices[rec.open_invoice] = sub_id
            if rec.lapsed:
                self._add_lapsed(rec, 1)
        self._recount()
        ended = sorted(
            (rec.snap_created, k) for k, rec in self.subs.items() if rec.status in ENDED_STATUSES
        )
        self._ended = dict.fromkeys(k for _, k in ended)
        if len(self.subs) > self.max_subscriptions:
            self._evict()  # the cap was lowered since the state was written

    def _migrate(self, journal: list[tuple[str, Any]]) -> None:
        """The table from the journal rows of an earlier version (replayed in the order of their sequence
        numbers: the last value of each subscription wins), rewritten as one row each in one transaction."""
        changes: list[tuple[int, Any]] = []
        for row_key, value in journal:
            if row_key.startswith("j"):
                changes.append((int(row_key[1:]), value))
            elif isinstance(value, dict) and isinstance(value.get("items"), dict) and type(value.get("seq")) is int:
                changes.append((value["seq"], list(value["items"].items())))
        changes.sort(key=lambda change: change[0])
        for _, entries in changes:
            for entry in entries if isinstance(entries, list) else ():
                if isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str):
                    rec = Sub.load(entry[1]) if entry[1] is not None else None
                    if rec is not None:
                        self.subs[entry[0]] = rec
                    else:
                        self.subs.pop(entry[0], None)
        for sub_id, rec in self.subs.items():
            self.state.put(NS, sub_id, rec.dump())
        for row_key, _ in journal:
            self.state.delete(NS, row_key)
        # Now, in one transaction: the journal goes only with the records written in its place.
        self.state.flush()


class LedgerGauges(Collector):
    """The ledger's gauges, derived at scrape time from its running counts.

    A scrape runs in a worker thread (exporter/scrape.py): each dict is copied with one dict.copy(), a single C
    call the event loop cannot interleave with (it holds the GIL throughout), never iterated while it changes."""

    def __init__(self, ledger: SubscriptionLedger, registry: CollectorRegistry):
        self.ledger = ledger
        registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        led = self.ledger
        subs = GaugeMetricFamily(
            "stripe_subscriptions",
            "Subscriptions in the ledger, by Stripe status and mode.",
            labels=("status", "livemode"),
        )
        for labels, n in led._status_counts.copy().items():
            subs.add_metric(labels, n)
        mrr = GaugeMetricFamily(
            "stripe_mrr",
            "Monthly recurring revenue (prices for their quantities and tiers, minus recurring discounts, normalised "
            "to a month) of subscriptions whose status is in detectors.subscriptions.mrr_statuses, in major units.",
            labels=("currency", "livemode"),
        )
        for (currency, mode), milli in led._mrr_milli.copy().items():
            mrr.add_metric((currency, mode), to_major(round(milli / 1000), currency))
        lapsed = GaugeMetricFamily(
            "stripe_subscriptions_lapsed",
            "Active subscriptions currently silently lapsed (unpaid renewal or no payment past the grace period).",
            labels=("livemode",),
        )
        for mode, n in led._lapsed_counts.copy().items():
            lapsed.add_metric((mode,), n)
        yield from (subs, mrr, lapsed)
