"""Synthetic but realistic Stripe traffic, with named anomalies injected on request.

One generator serves two uses: `simulate --output` writes a history file (`{"received", "event"}` lines) for
backtests, and `simulate --url` sends the same kind of traffic live. The traffic has what production has:

- a diurnal volume curve (busiest mid-afternoon, quietest around 04:00 UTC, never below ~35 % of the mean);
- a mix of event types (subscription renewals and sign-ups with their invoice/charge/payment_intent chains,
  one-off payments, ~3 % failed charges, refunds, cancellations, customer/payment-method filler events);
- redeliveries (~1.5 % of events arrive a second time minutes to hours later, with the same id);
- out-of-order subscription events (~20 % of sign-ups deliver `customer.subscription.updated` before `.created`);
- delivery delays of one to a few seconds.

Daily counts are stratified, not Poisson: every hour gets its share of activities and one-off payments cycle through
a fixed price list, so daily revenue is steady and a clean history does not trip revenue_drop by chance.
Everything is seeded: the same arguments give the same history.
"""

from __future__ import annotations

import heapq
import math
import random
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from exporter import samples

ANOMALIES = (
    "duplicate_charge",
    "negative_invoice",
    "silent_lapse",
    "charge_failure_spike",
    "fraud_spike",
    "revenue_drop",
    "webhook_lag",
)

DAY = 86400.0
HOUR = 3600.0
MONTH = 30 * DAY

# One-off payments cycle through this list: (currency, minor units). 16 of 20 in USD, EUR and JPY (zero-decimal).
PRICE_CYCLE: tuple[tuple[str, int], ...] = (
    ("usd", 2900), ("usd", 4900), ("eur", 1900), ("usd", 9900), ("usd", 1500),
    ("usd", 2900), ("usd", 4900), ("usd", 19900), ("eur", 4900), ("usd", 2900),
    ("usd", 990), ("jpy", 3000), ("usd", 4900), ("usd", 2900), ("usd", 9900),
    ("eur", 2900), ("usd", 1500), ("usd", 4900), ("usd", 2900), ("usd", 9900),
)  # fmt: skip
PLANS: tuple[tuple[str, int], ...] = (("usd", 2000), ("usd", 4900), ("usd", 9900), ("eur", 2900), ("jpy", 5000))
FAILURE_EVERY = 25  # one one-off payment attempt in 25 is declined (~3 % of all charge attempts)
FAILURE_CODES = ("card_declined", "insufficient_funds", "expired_card", "incorrect_cvc", "processing_error")
FILLER_TYPES = ("customer.created", "customer.updated", "payment_method.attached", "setup_intent.succeeded")


@dataclass
class Injection:
    """An injected anomaly: when it starts, when its alert is expected at the latest, and whom it names."""

    name: str
    start: float
    expect_by: float
    end: float
    customer: str | None = None
    subscription: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "anomaly": self.name,
            "start": self.start,
            "expect_by": self.expect_by,
            "end": self.end,
            "customer": self.customer,
            "subscription": self.subscription,
            "note": self.note,
        }


@dataclass(order=True)
class _Sub:
    due: float
    sub_id: str = field(compare=False)
    customer: str = field(compare=False)
    currency: str = field(compare=False)
    amount: int = field(compare=False)


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def diurnal_weight(t: float) -> float:
    """Relative volume at unix time t: peak ~15:00 UTC, trough ~03:00 UTC, ratio about 1 : 3.9."""
    hour = (t % DAY) / HOUR
    return 1.0 + 0.59 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)


class HistoryGenerator:
    """Builds a list of (received, event) for [start, start + days) with the requested anomalies."""

    def __init__(
        self,
        *,
        start: float,
        days: float,
        events_per_day: int,
        anomalies: Iterable[str] = (),
        seed: int = 1,
        redelivery_ratio: float = 0.015,
        livemode: bool = True,
    ):
        self.start = float(start)
        self.days = days
        self.end = self.start + days * DAY
        self.events_per_day = events_per_day
        self.rng = random.Random(seed)
        self.redelivery_ratio = redelivery_ratio
        self.livemode = livemode
        self.anomalies = list(dict.fromkeys(anomalies))
        for name in self.anomalies:
            if name not in ANOMALIES:
                raise ValueError(f"unknown anomaly {name!r}; choose from {', '.join(ANOMALIES)}")
        self.out: list[tuple[float, dict[str, Any]]] = []
        self.injections: list[Injection] = []
        self._ids = 0
        self._price_pos = 0
        self._attempts = 0
        self._plan_pos = 0
        self._refund_pos = 0
        self._mix: list[str] = []
        self._mix_pos = 0
        self._signups: list[_Sub] = []
        # Windows in which normal traffic is altered by an anomaly: (start, end, kind).
        self._windows: list[tuple[float, float, str]] = []
        # How long the spike anomalies last, and how late lagged deliveries arrive. Live simulations shrink these
        # to fit their duration (see simulate.py).
        self.spike_seconds = 2400.0
        self.lag_range = (900.0, 2400.0)
        self.redelivery_delay = (60.0, 2 * HOUR)
        self.duplicate_gap = 95.0
        self.chain_scale = 1.0
        self.live = False

    # -- ids and envelopes ------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_sim{self._ids:010d}{self.rng.randrange(36**4):04x}"

    def _emit(self, event_type: str, obj: dict[str, Any], created: float, *, delay: float | None = None) -> None:
        created_i = int(created)
        ev = samples.event(event_type, obj, created=created_i, event_id=self._id("evt"))
        ev["livemode"] = self.livemode
        received = created + (self._delay(created) if delay is None else delay)
        self.out.append((received, ev))
        if self.rng.random() < self.redelivery_ratio:
            # Stripe redelivers when it did not see our 2xx in time: same id, same payload, later.
            self.out.append((received + self.rng.uniform(*self.redelivery_delay), ev))

    def _delay(self, created: float) -> float:
        for start, end, kind in self._windows:
            if kind == "webhook_lag" and start <= created < end:
                return self.rng.uniform(*self.lag_range)
        return min(60.0, self.rng.lognormvariate(0.3, 0.6))

    def _dropped(self, t: float) -> bool:
        """Revenue drop: most successful payments in the window never happen."""
        for start, end, kind in self._windows:
            if kind == "revenue_drop" and start <= t < end:
                return self.rng.random() < 0.7
        return False

    def _gap(self, seconds: float) -> float:
        """A gap between the events of one chain (invoice -> charge -> paid), shortened for short live runs."""
        return seconds * self.chain_scale

    def _obj(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["livemode"] = self.livemode
        return obj

    # -- activities ---------------------------------------------------------------------------------------------

    def _charge_chain(self, t: float, customer: str | None, currency: str, amount: int) -> dict[str, Any]:
        ch = self._obj(
            samples.charge(
                amount=amount,
                currency=currency,
                customer=customer,
                created=int(t),
                charge_id=self._id("ch"),
                fingerprint=self._fingerprint(customer),
            )
        )
        self._emit("charge.succeeded", ch, t)
        self._emit("payment_intent.succeeded", self._payment_intent(ch, "succeeded"), t + 1)
        return ch

    def _fingerprint(self, customer: str | None) -> str:
        return "fp" + str(zlib.crc32((customer or self._id("guest")).encode()))

    def _payment_intent(self, ch: dict[str, Any], status: str) -> dict[str, Any]:
        return {
            "id": ch["payment_intent"],
            "object": "payment_intent",
            "amount": ch["amount"],
            "amount_received": ch["amount_captured"],
            "currency": ch["currency"],
            "customer": ch["customer"],
            "status": status,
            "latest_charge": ch["id"],
            "livemode": self.livemode,
            "created": ch["created"],
        }

    def _one_off(self, t: float) -> None:
        self._attempts += 1
        if self._attempts % FAILURE_EVERY == 0:
            # Declines are spread evenly rather than drawn at random: a low-volume clean history must not reach
            # the failure-ratio threshold by chance (real traffic does, at low volume; that is not what we test).
            self._failed(t)
            return
        currency, amount = PRICE_CYCLE[self._price_pos % len(PRICE_CYCLE)]
        self._price_pos += 1
        if self._dropped(t):
            return
        customer = None if self._price_pos % 9 == 0 else self._id("cus")  # some guest checkouts
        self._charge_chain(t, customer, currency, amount)

    def _failed(self, t: float, *, code: str | None = None) -> None:
        # Currencies rotate like the successful payments', so that a small currency's failure ratio stays steady.
        currency, amount = PRICE_CYCLE[self._price_pos % len(PRICE_CYCLE)]
        self._price_pos += 1
        ch = self._obj(
            samples.charge(
                amount=amount,
                currency=currency,
                customer=self._id("cus"),
                status="failed",
                failure_code=code or self.rng.choice(FAILURE_CODES),
                created=int(t),
                charge_id=self._id("ch"),
            )
        )
        self._emit("charge.failed", ch, t)
        self._emit("payment_intent.payment_failed", self._payment_intent(ch, "requires_payment_method"), t + 1)

    def _refund(self, t: float) -> None:
        # A full refund of an earlier payment (days to weeks old, possibly from before the history starts). Amounts
        # rotate through the price list like payments do, so the refund-to-revenue ratio stays steady (~2 %).
        # Zero-decimal currencies are left out: the large-refund threshold (500.00 "in its currency") is ~3 USD in
        # JPY unless configured per currency, so every JPY refund would be reported as large.
        refundable = [p for p in PRICE_CYCLE if p[0] in ("usd", "eur")]
        currency, amount = refundable[self._refund_pos % len(refundable)]
        self._refund_pos += 1
        self._emit_refund(t, currency, amount, amount, created=int(t - self.rng.uniform(1, 20) * DAY))

    def _emit_refund(self, t: float, currency: str, amount: int, refunded: int, *, created: int) -> None:
        """charge.refunded at t for a charge of `amount` created at `created`, `refunded` of it given back."""
        ch = self._obj(
            samples.charge(
                amount=amount, currency=currency, customer=self._id("cus"), created=created,
                charge_id=self._id("ch"), amount_refunded=refunded,
            )
        )  # fmt: skip
        self._emit("charge.refunded", ch, t)

    def _filler(self, t: float) -> None:
        kind = self.rng.choice(FILLER_TYPES)
        obj = {"id": self._id(kind.split(".")[0][:4]), "object": kind.split(".")[0], "livemode": self.livemode}
        self._emit(kind, obj, t)

    def _subscription_obj(self, sub: _Sub, t: float, *, status: str = "active", interval: str = "month") -> Any:
        period = DAY if interval == "day" else MONTH
        return self._obj(
            samples.subscription(
                customer=sub.customer,
                subscription_id=sub.sub_id,
                status=status,
                unit_amount=sub.amount,
                currency=sub.currency,
                interval=interval,
                created=int(t),
                current_period_start=int(t),
                current_period_end=int(t + period),
            )
        )

    def _invoice_paid_chain(
        self, sub: _Sub, t: float, reason: str, *, interval: str = "month", pay: bool = True
    ) -> None:
        period = DAY if interval == "day" else MONTH
        inv_id = self._id("in")
        common: dict[str, Any] = dict(
            total=sub.amount,
            currency=sub.currency,
            customer=sub.customer,
            subscription=sub.sub_id,
            billing_reason=reason,
            invoice_id=inv_id,
            period_start=int(t),
            period_end=int(t + period),
        )
        self._emit("invoice.created", self._obj(samples.invoice(status="draft", created=int(t), **common)), t)
        self._emit(
            "invoice.finalized", self._obj(samples.invoice(status="open", created=int(t), **common)), t + self._gap(60)
        )
        if not pay:
            return
        self._charge_chain(t + self._gap(120), sub.customer, sub.currency, sub.amount)
        paid = self._obj(samples.invoice(status="paid", created=int(t), **common))
        self._emit("invoice.paid", paid, t + self._gap(122))
        self._emit("invoice.payment_succeeded", paid, t + self._gap(122))

    def _renewal(self, sub: _Sub) -> None:
        t = sub.due
        if self._dropped(t):
            sub.due = t + MONTH  # a missed renewal in a revenue drop; the next month is billed as usual
            return
        self._invoice_paid_chain(sub, t, "subscription_cycle")
        self._emit("customer.subscription.updated", self._subscription_obj(sub, t + self._gap(125)), t + self._gap(125))
        sub.due = t + MONTH

    def _signup(self, t: float, pool: list[_Sub]) -> None:
        currency, amount = PLANS[self._plan_pos % len(PLANS)]
        self._plan_pos += 1
        sub = _Sub(t + MONTH, self._id("sub"), self._id("cus"), currency, amount)
        created = self._subscription_obj(sub, t, status="incomplete")
        active = self._subscription_obj(sub, t + self._gap(125))
        if self.rng.random() < 0.2:
            # Out of order: the update (now active) arrives before the creation event.
            self._emit("customer.subscription.updated", active, t + self._gap(125), delay=1.0)
            self._emit("customer.subscription.created", created, t, delay=self._gap(140.0))
        else:
            self._emit("customer.subscription.created", created, t)
            self._emit("customer.subscription.updated", active, t + self._gap(125))
        self._invoice_paid_chain(sub, t, "subscription_create")
        heapq.heappush(pool, sub)
        self._signups.append(sub)

    def _cancel(self, t: float, pool: list[_Sub]) -> None:
        # Churn comes from recent sign-ups (early churn is the common case); the renewing base stays intact,
        # which keeps daily renewal revenue steady.
        if not self._signups:
            return
        sub = self._signups.pop(self.rng.randrange(len(self._signups)))
        if sub not in pool:
            return
        pool.remove(sub)
        heapq.heapify(pool)
        obj = self._subscription_obj(sub, t, status="canceled")
        obj["canceled_at"] = obj["ended_at"] = int(t)
        self._emit("customer.subscription.deleted", obj, t)

    # -- the whole history --------------------------------------------------------------------------------------

    def generate(self) -> list[tuple[float, dict[str, Any]]]:
        if not self.live:
            self._plan_injections()
        # Renewals are ~35 % of events at 7 events each; the pool is sized so that renewals keep that share.
        # Redeliveries come on top of the requested volume.
        renewals_per_day = max(1, round(self.events_per_day * 0.35 / 7))
        pool_size = renewals_per_day * 30
        pool: list[_Sub] = []
        for i in range(pool_size):
            currency, amount = PLANS[i % len(PLANS)]
            due = self.start + (i + self.rng.random() * 0.5) * MONTH / pool_size
            if due > self.end + DAY and len(pool) >= 50:
                break  # a short run never renews the rest; no need to create them
            pool.append(_Sub(due, self._id("sub"), self._id("cus"), currency, amount))
        heapq.heapify(pool)
        # Everything else is spread by the diurnal curve; one activity averages ~1.72 events.
        other_per_day = max(0.0, self.events_per_day - renewals_per_day * 7)
        activities_per_day = other_per_day / 1.72
        credit = 0.0
        step = 300.0  # five-minute bins keep counts steady and the curve smooth
        t = self.start
        while t < self.end:
            while pool and pool[0].due < t + step:
                sub = heapq.heappop(pool)
                if sub.due >= self.start:
                    self._renewal(sub)
                else:
                    sub.due += MONTH
                heapq.heappush(pool, sub)
            credit += activities_per_day * step / DAY * diurnal_weight(t + step / 2)
            n = int(credit)
            credit -= n
            for _ in range(n):
                self._activity(t + self.rng.random() * step, pool)
            t += step
        self._inject()
        if self.live:
            # A live run sends what happened before its end, including deliveries due after it (lag, redeliveries).
            self.out = [(r, e) for r, e in self.out if e["created"] < self.end]
        else:
            self.out = [(r, e) for r, e in self.out if r < self.end]
        self.out.sort(key=lambda pair: pair[0])
        return self.out

    def _activity(self, t: float, pool: list[_Sub]) -> None:
        # Activities follow a shuffled but fixed mix (out of 200: 102 one-off payments, 6 sign-ups, 3
        # cancellations, 2 refunds, 87 filler events), cycled, so that every day has the same mix.
        if not self._mix:
            self._mix = ["one_off"] * 102 + ["signup"] * 6 + ["cancel"] * 3 + ["refund"] * 2 + ["filler"] * 87
            self.rng.shuffle(self._mix)
        kind = self._mix[self._mix_pos % len(self._mix)]
        self._mix_pos += 1
        if kind == "one_off":
            self._one_off(t)
        elif kind == "signup":
            self._signup(t, pool)
        elif kind == "cancel":
            self._cancel(t, pool)
        elif kind == "refund":
            self._refund(t)
        else:
            self._filler(t)

    # -- anomalies ------------------------------------------------------------------------------------------------

    def _plan_injections(self) -> None:
        """Spread the requested anomalies over the history so that their alerts do not overlap."""
        span = self.end - self.start
        for i, name in enumerate(self.anomalies):
            if name == "revenue_drop":
                # Needs a full seven-day baseline before it; the rule ignores younger installs.
                at = self.start + max(8.25 * DAY, span - 1.6 * DAY)
                if at + 12 * HOUR > self.end:
                    raise ValueError("revenue_drop needs a history of at least 9 days (a 7-day baseline)")
                self._windows.append((at, at + 2 * DAY, "revenue_drop"))
                self.injections.append(Injection(name, at, at + 12 * HOUR, at + 2 * DAY))
            elif name == "silent_lapse":
                at = self.start + 3 * HOUR
                if span < 7 * DAY:
                    raise ValueError("silent_lapse needs a history of at least 7 days")
                self.injections.append(Injection(name, at, at + 6 * DAY, self.end))
            else:
                # Other anomalies: evenly spaced over the first 80 % of the history, at least 1 day in.
                slots = max(1, len(self.anomalies))
                at = self.start + DAY + (i + 0.5) * (span * 0.8 - DAY) / slots
                at = math.floor(at / HOUR) * HOUR + 17 * 60
                self.injections.append(Injection(name, at, at + 2 * HOUR, at + 3 * HOUR))
                if name == "webhook_lag":
                    self._windows.append((at, at + self.spike_seconds * 1.5, "webhook_lag"))

    def plan_live(self, names: Iterable[str]) -> None:
        """Place anomalies for a live run: evenly over its first 70 %, spikes shortened to fit."""
        self.live = True
        span = self.end - self.start
        self.spike_seconds = min(2400.0, span * 0.25)
        # Above the shipped 10-minute webhook_lag threshold; a live run goes on until these late deliveries are out.
        self.lag_range = (660.0, 900.0)
        self.redelivery_delay = (2.0, max(5.0, min(2 * HOUR, span * 0.3)))
        self.duplicate_gap = min(95.0, max(2.0, span * 0.05))
        self.chain_scale = min(1.0, span / 3600)
        names = list(dict.fromkeys(names))
        for i, name in enumerate(names):
            at = self.start + span * 0.7 * (i + 0.5) / len(names)
            inj = Injection(name, at, at + self.spike_seconds + 900, at + self.spike_seconds * 1.5 + 900)
            if name == "revenue_drop":
                # The rule compares with a 7-day baseline that a live run cannot build; the drop is sent anyway.
                inj.note = "70% of payments lost from here on (alerts only with 8 days of data in Prometheus)"
                inj.expect_by = inj.end = self.end
                self._windows.append((at, self.end, "revenue_drop"))
            elif name == "webhook_lag":
                self._windows.append((at, at + self.spike_seconds * 1.5, "webhook_lag"))
            self.injections.append(inj)

    def _inject(self) -> None:
        for inj in self.injections:
            getattr(self, f"_inject_{inj.name}")(inj)

    def _inject_duplicate_charge(self, inj: Injection) -> None:
        inj.customer = "cus_dupcharge" + self._id("x")[-6:]
        for offset in (0.0, self.duplicate_gap):  # two distinct charges: same payer, amount and currency
            self._charge_chain(inj.start + offset, inj.customer, "usd", 4900)
        inj.note = f"two 49.00 USD charges {self.duplicate_gap:.0f} s apart"

    def _inject_negative_invoice(self, inj: Injection) -> None:
        inj.customer = "cus_negative" + self._id("x")[-6:]
        inj.subscription = self._id("sub")
        common: dict[str, Any] = dict(
            total=-7500, currency="usd", customer=inj.customer, subscription=inj.subscription,
            billing_reason="subscription_update", invoice_id=self._id("in"),
        )  # fmt: skip
        self._emit("invoice.created", self._obj(samples.invoice(status="draft", created=int(inj.start), **common)),
                   inj.start)  # fmt: skip
        self._emit("invoice.finalized", self._obj(samples.invoice(status="open", created=int(inj.start), **common)),
                   inj.start + self._gap(30))  # fmt: skip
        inj.note = "invoice total -75.00 USD"

    def _inject_silent_lapse(self, inj: Injection) -> None:
        if self.live:
            self._inject_silent_lapse_live(inj)
            return
        # A daily subscription is paid twice, then its third renewal invoice is finalized and never paid while the
        # subscription stays `active`: nothing tells the merchant, which is what the ledger is for.
        inj.customer = "cus_lapse" + self._id("x")[-6:]
        sub = _Sub(0.0, "sub_lapse" + self._id("x")[-8:], inj.customer, "usd", 1500)
        inj.subscription = sub.sub_id
        t = inj.start
        self._emit("customer.subscription.created", self._subscription_obj(sub, t, interval="day"), t)
        self._invoice_paid_chain(sub, t, "subscription_create", interval="day")
        t += DAY
        self._invoice_paid_chain(sub, t, "subscription_cycle", interval="day")
        self._emit("customer.subscription.updated", self._subscription_obj(sub, t + 125, interval="day"), t + 125)
        t += DAY
        self._invoice_paid_chain(sub, t, "subscription_cycle", interval="day", pay=False)
        self._emit("customer.subscription.updated", self._subscription_obj(sub, t + 125, interval="day"), t + 125)
        inj.note = "daily 15.00 USD subscription, paid twice, third renewal never paid"

    def _inject_silent_lapse_live(self, inj: Injection) -> None:
        # Live, nobody can wait days for a lapse: this sends, with current event times, an active monthly
        # subscription and its renewal invoice that was finalized four days ago (past the 3-day grace) and is still
        # open. The ledger judges the invoice by its own finalized_at, so it reports an unpaid renewal at its next
        # sweep (within a minute) without the events themselves looking late.
        inj.customer = "cus_lapse" + self._id("x")[-6:]
        sub = _Sub(0.0, "sub_lapse" + self._id("x")[-8:], inj.customer, "usd", 2900)
        inj.subscription = sub.sub_id
        t = inj.start
        backdated = t - 4 * DAY
        obj = self._subscription_obj(sub, backdated)
        obj["created"] = int(t - 40 * DAY)
        self._emit("customer.subscription.created", obj, t, delay=1.0)
        inv = self._obj(
            samples.invoice(
                total=sub.amount, currency="usd", customer=sub.customer, subscription=sub.sub_id,
                status="open", billing_reason="subscription_cycle", created=int(backdated), invoice_id=self._id("in"),
                period_start=int(backdated), period_end=int(backdated + MONTH),
            )
        )  # fmt: skip
        self._emit("invoice.finalized", inv, t + 2, delay=1.0)
        inj.expect_by = t + 180
        inj.note = "monthly 29.00 USD subscription whose renewal invoice has been open for 4 days"

    def _inject_charge_failure_spike(self, inj: Injection) -> None:
        for i in range(80):  # 80 declines in 40 minutes (by default) on top of normal traffic
            self._failed(inj.start + i * self.spike_seconds / 80, code="card_declined")
        inj.note = f"80 extra declined charges in {_span(self.spike_seconds)}"

    def _inject_fraud_spike(self, inj: Injection) -> None:
        for i in range(8):
            t = inj.start + i * self.spike_seconds / 8
            ch = self._charge_chain(t - 3 * DAY if t - 3 * DAY > self.start else t, self._id("cus"), "usd", 9900)
            obj = self._obj(samples.dispute(charge_id=ch["id"], amount=9900, currency="usd", created=int(t)))
            self._emit("charge.dispute.created", obj, t)
            warning = self._obj(samples.early_fraud_warning(charge_id=ch["id"], created=int(t + 60)))
            self._emit("radar.early_fraud_warning.created", warning, t + 60)
        inj.note = f"8 fraudulent disputes and 8 early fraud warnings in {_span(self.spike_seconds)}"

    def _inject_revenue_drop(self, inj: Injection) -> None:
        if not inj.note:
            inj.note = "70% of payments lost"  # applied while generating: see _dropped

    def _inject_webhook_lag(self, inj: Injection) -> None:
        length = self.spike_seconds * 1.5
        for i in range(60):  # enough delayed deliveries for a quantile even at low volume
            self._filler(inj.start + i * length / 60)
        lo, hi = self.lag_range
        inj.note = f"deliveries {lo / 60:.0f}-{hi / 60:.0f} min late for {_span(length)}"


def generate(
    *,
    start: float,
    days: float,
    events_per_day: int,
    anomalies: Iterable[str] = (),
    seed: int = 1,
) -> tuple[list[tuple[float, dict[str, Any]]], list[Injection]]:
    gen = HistoryGenerator(start=start, days=days, events_per_day=events_per_day, anomalies=anomalies, seed=seed)
    return gen.generate(), gen.injections


def history_lines(pairs: Iterable[tuple[float, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    for received, ev in pairs:
        yield {"received": round(received, 3), "event": ev}
