"""Scenario traffic for the evaluation corpus: Stripe histories shaped like real accounts, with labelled anomalies.

The default traffic of generator.HistoryGenerator is stratified (steady by construction). A scenario is drawn the
way real accounts behave, so that the rules have to survive real noise:

- arrivals are Poisson in five-minute bins around an expected rate = volume x growth x weekly shape x diurnal curve
  (weekends at `weekend_factor` of weekdays; growth or decline compounding weekly);
- declines, disputes (some of them inquiries), early fraud warnings and refunds are random draws at the account's
  own rates; disputes and refunds name older charges, as they do;
- monthly subscriptions renew on calendar months, a share of them on one billing-anchor day; a declined renewal
  goes past_due and is retried off-session days later (paid, or the subscription is cancelled); customers cancel
  at once or at the period end;
- several currencies with their own price lists (zero-decimal JPY/KRW amounts are whole units, KWD thousandths);
- deliveries as Stripe makes them: at least once and in no guaranteed order. A share of first attempts fails
  and is delivered at a later retry, a share is delivered again after Stripe missed our 2xx, with exponential
  back-off for up to three days (test mode: a few retries only); an endpoint outage delays everything to the
  first retry after it;
- live and test-mode traffic (test cards are shared: same fingerprint, same amounts, repeat customers);
- the pre-basil API shape (`invoice.subscription`, `charge.invoice`, top-level `current_period_end`) before an
  endpoint upgrade day, the basil shape (`parent.subscription_details`) after it.

Anomalies (AnomalySpec) alter that traffic in a window or add their own events, and each yields a Label: the
detector expected to alert, the window, the allowed delay and the keys it is about. Seeded: same spec, same history.
"""

from __future__ import annotations

import calendar
import heapq
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter import samples
from exporter.history.generator import DAY, HOUR, HistoryGenerator, Injection

WEEK = 7 * DAY
MINUTE = 60.0
LEGACY_API_VERSION = "2024-06-20"
# Stripe retries failed deliveries "with an exponential back-off" for up to three days without publishing the
# exact schedule; these gaps (roughly doubling from a minute to a day) model it. Jittered +-20 % per attempt.
BACKOFF = (60.0, 300.0, 1800.0, HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR, DAY, DAY)
RETRY_HORIZON = 3 * DAY
TEST_MODE_RETRIES = 3
# Minor-unit prices per currency (zero-decimal JPY/KRW: whole yen/won; three-decimal KWD: fils).
PRICES: dict[str, tuple[int, ...]] = {
    "usd": (990, 1500, 2900, 4900, 9900, 19900),
    "eur": (900, 1900, 2900, 4900, 8900),
    "gbp": (800, 1500, 2500, 4500, 9900),
    "jpy": (980, 1500, 3000, 5000, 12000),
    "krw": (9900, 15000, 29000, 59000),
    "kwd": (1500, 3000, 5000, 15000),
    "brl": (2990, 4990, 9990, 19990),
}
DECLINE_CODES = ("card_declined", "insufficient_funds", "expired_card", "incorrect_cvc", "processing_error")
CARD_TESTING_CODES = ("card_declined", "incorrect_cvc", "incorrect_number", "card_declined", "fraudulent")
FILLER_TYPES = ("customer.created", "customer.updated", "payment_method.attached", "setup_intent.succeeded")


@dataclass(frozen=True)
class TrafficSpec:
    """What a normal account looks like. Volumes are live charge attempts a day, averaged over a week."""

    charges_per_day: float
    weekend_factor: float = 1.0
    diurnal_amplitude: float = 0.59
    peak_hour_utc: float = 15.0
    growth_per_week: float = 0.0
    subscription_share: float = 0.3  # of charges: monthly renewals
    anchor_share: float = 0.0  # of subscriptions: renewing on anchor_day of every month
    anchor_day: int = 1
    currencies: tuple[tuple[str, float], ...] = (("usd", 1.0),)
    guest_share: float = 0.15  # one-off payments without a Stripe customer
    decline_rate: float = 0.07
    renewal_decline_rate: float = 0.06
    dispute_rate: float = 0.003  # disputes per successful charge (0.1-0.5 % is normal)
    inquiry_share: float = 0.1  # of disputes: inquiries (status warning_*)
    efw_rate: float = 0.001
    refund_rate: float = 0.03
    monthly_churn: float = 0.04
    scheduled_cancel_share: float = 0.5  # of cancellations: at the period end
    redelivery_ratio: float = 0.01  # delivered, but Stripe did not see the 2xx: sent again
    retry_ratio: float = 0.003  # first attempt failed: delivered only at a retry (late, out of order)
    test_charges_per_day: float = 0.0
    legacy_days: float = 0.0  # the endpoint renders the pre-basil API version for this many days, then upgrades
    payment_intents: bool = True  # the endpoint also subscribes to payment_intent.* events
    filler_per_charge: float = 0.5  # customer.* / payment_method.* events per charge


# kind -> (detector expected to alert, allowed delay after the window, other detectors allowed meanwhile, aftermath)
# `aftermath`: how long after the window alerts of the labelled or allowed detectors are consequences, not false.
KINDS: dict[str, tuple[str | None, float, tuple[str, ...], float]] = {
    "total_outage": ("charge_failure_spike", 30 * MINUTE, ("revenue_drop",), 2 * HOUR),
    "partial_outage": ("charge_failure_spike", HOUR, ("revenue_drop",), DAY),
    "card_testing": ("charge_failure_spike", 30 * MINUTE, (), 2 * HOUR),
    "revenue_drop": ("revenue_drop", 6 * HOUR, ("refund_ratio",), 2 * DAY),
    "dispute_wave": ("fraud_spike", DAY, (), 30 * DAY),
    "refund_spike": ("refund_ratio", 6 * HOUR, ("negative_invoice",), DAY),
    "churn_spike": ("churn_spike", DAY, (), 2 * DAY),
    "webhook_lag": ("webhook_lag", 30 * MINUTE, ("exporter",), 2 * HOUR),
    "duplicate_charge": ("duplicate_charge", 10 * MINUTE, (), 2 * HOUR),
    "negative_invoice": ("negative_invoice", 10 * MINUTE, (), 2 * HOUR),
    "silent_lapse": ("silent_lapse", 6 * HOUR, (), 2 * HOUR),
}

# A detector that judges a rolling window keeps seeing an anomaly's lost charges until its longest window has
# passed (revenue_drop's day): where a label allows it, its alerts are consequences that long after the label's
# window and delay, whatever the kind's own aftermath. An hour of total outage at the afternoon peak is a fifth of
# a 6-hour window's charges.
WINDOW_AFTERMATH: dict[str, float] = {"revenue_drop": DAY}


@dataclass(frozen=True)
class AnomalySpec:
    """An anomaly `at` seconds after the start of the evaluated period, lasting `duration`.

    `size` is kind-specific: total_outage/card_testing: attempts at least; partial_outage: failing share;
    revenue_drop: share of the day's revenue lost; dispute_wave/churn_spike: multiple of the own rate;
    refund_spike: refunds as a share of a day's charges. `livemode=False` puts it in test-mode traffic: then no
    live alert may follow.
    """

    kind: str
    at: float
    duration: float = HOUR
    size: float = 0.0
    currency: str | None = None
    livemode: bool = True


@dataclass
class Label:
    """What the corpus says happened: which detector should alert, when, about whom."""

    kind: str
    detector: str | None  # None: nothing live may alert (test-mode anomalies)
    start: float
    end: float
    delay: float
    aftermath: float
    livemode: bool = True
    keys: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "detector": self.detector, "start": self.start, "end": self.end,
            "delay": self.delay, "aftermath": self.aftermath, "livemode": self.livemode, "keys": self.keys,
            "allowed": list(self.allowed), "note": self.note,
        }  # fmt: skip


@dataclass
class _Sub:
    sub_id: str
    customer: str
    currency: str
    amount: int
    due: float
    period_start: float = 0.0  # the current period's start: every snapshot of the subscription carries it
    cancel_at_end: bool = False
    alive: bool = True
    past_due: bool = False  # a renewal failed and waits for its retry


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth below 30, a rounded normal above: close enough for counts per bin)."""
    if lam <= 0:
        return 0
    if lam >= 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def add_month(t: float) -> float:
    """The same day and time one calendar month later (clamped to the month's last day), as Stripe bills."""
    d = datetime.fromtimestamp(t, UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return d.replace(year=year, month=month, day=min(d.day, calendar.monthrange(year, month)[1])).timestamp()


class ScenarioGenerator(HistoryGenerator):
    """A history of `days` from `start`; anomalies are placed relative to `eval_start`."""

    def __init__(
        self,
        spec: TrafficSpec,
        *,
        start: float,
        days: float,
        eval_start: float,
        anomalies: tuple[AnomalySpec, ...] = (),
        seed: int = 1,
    ):
        super().__init__(start=start, days=days, events_per_day=1, seed=seed, redelivery_ratio=spec.redelivery_ratio)
        for a in anomalies:
            if a.kind not in KINDS:
                raise ValueError(f"unknown anomaly kind {a.kind!r}; choose from {', '.join(KINDS)}")
            if not eval_start + a.at + a.duration <= self.end:
                raise ValueError(f"{a.kind} at +{a.at / DAY:g} d does not fit in the history")
        self.spec = spec
        self.seed = seed
        self.eval_start = eval_start
        self.anomaly_specs = anomalies
        self.labels: list[Label] = []
        self._currencies = [c for c, _ in spec.currencies]
        self._currency_weights = [w for _, w in spec.currencies]
        self._actions: list[tuple[float, int, str, _Sub]] = []
        self._seq = 0
        self._subs: list[_Sub] = []
        self._outage_attempts: dict[int, int] = {}  # anomaly index -> charge attempts seen in its window
        self._retries: dict[str, float] = {}  # invoice id -> its period start, while a dunning retry is due
        self._test_customers = [f"cus_test{i:02d}" for i in range(6)]

    # -- shape -------------------------------------------------------------------------------------------------

    def rate_factor(self, t: float) -> float:
        """Expected volume at t relative to charges_per_day/DAY: growth x weekly shape x diurnal curve."""
        return (1 + self.spec.growth_per_week) ** ((t - self.start) / WEEK) * self.shape(t)

    def shape(self, t: float) -> float:
        """The weekly shape x diurnal curve at t, without growth (for rates that already grow with the base)."""
        s = self.spec
        weekday = datetime.fromtimestamp(t, UTC).weekday()
        weekday_level = 7 / (5 + 2 * s.weekend_factor)
        weekly = weekday_level * (s.weekend_factor if weekday >= 5 else 1.0)
        hour = (t % DAY) / HOUR
        diurnal = 1 + s.diurnal_amplitude * math.sin(2 * math.pi * (hour - s.peak_hour_utc + 6) / 24)
        return weekly * diurnal

    def _window(self, kind: str, t: float, *, livemode: bool = True) -> tuple[int, AnomalySpec] | None:
        for i, a in enumerate(self.anomaly_specs):
            if a.kind == kind and a.livemode == livemode:
                a0 = self.eval_start + a.at
                if a0 <= t < a0 + a.duration:
                    return i, a
        return None

    # -- deliveries --------------------------------------------------------------------------------------------

    def _retry_at(self, first: float, attempts: int) -> float:
        """When Stripe's `attempts`-th retry after a first attempt at `first` goes out."""
        t = first
        for gap in BACKOFF[:attempts]:
            t += gap * self.rng.uniform(0.8, 1.2)
        return min(t, first + RETRY_HORIZON)

    def _emit(self, event_type: str, obj: dict[str, Any], created: float, *, delay: float | None = None) -> None:
        version = LEGACY_API_VERSION if self._legacy(created) else samples.API_VERSION
        ev = samples.event(event_type, obj, created=int(created), event_id=self._id("evt"), api_version=version)
        ev["livemode"] = self.livemode
        first = created + (min(60.0, self.rng.lognormvariate(0.3, 0.6)) if delay is None else delay)
        max_retries = len(BACKOFF) if self.livemode else TEST_MODE_RETRIES
        received = first
        lag = self._window("webhook_lag", created) if self.livemode else None
        if lag is not None:
            # The endpoint is down: every attempt fails until the first retry after the outage.
            down_until = self.eval_start + lag[1].at + lag[1].duration
            k = 1
            while received < down_until and k <= max_retries:
                received = self._retry_at(first, k)
                k += 1
        elif self.rng.random() < self.spec.retry_ratio:
            k = 1
            while k < max_retries and self.rng.random() < 0.3:
                k += 1
            received = self._retry_at(first, k)
        self.out.append((received, ev))
        if self.rng.random() < self.spec.redelivery_ratio:
            self.out.append((self._retry_at(received, 1), ev))

    def _legacy(self, t: float) -> bool:
        return t < self.start + self.spec.legacy_days * DAY

    # -- objects -----------------------------------------------------------------------------------------------

    def _price(self, currency: str) -> int:
        return self.rng.choice(PRICES.get(currency, PRICES["usd"]))

    def _currency(self) -> str:
        return self.rng.choices(self._currencies, self._currency_weights)[0]

    def _charge(
        self, t: float, customer: str | None, currency: str, amount: int, *, failed: str | None = None,
        fingerprint: str | None = None, invoice: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        ch = self._obj(
            samples.charge(
                amount=amount, currency=currency, customer=customer, created=int(t), charge_id=self._id("ch"),
                fingerprint=fingerprint or self._fingerprint(customer), status="failed" if failed else "succeeded",
                failure_code=failed,
            )
        )  # fmt: skip
        if failed == "fraudulent":
            ch["outcome"]["type"] = "blocked"
            ch["outcome"]["risk_level"] = "highest"
        if self._legacy(t):
            ch["invoice"] = invoice
        self._emit("charge.failed" if failed else "charge.succeeded", ch, t)
        if self.spec.payment_intents:
            pi_type = "payment_intent.payment_failed" if failed else "payment_intent.succeeded"
            status = "requires_payment_method" if failed else "succeeded"
            self._emit(pi_type, self._payment_intent(ch, status), t + 1)
        return ch

    def _invoice(
        self, sub: _Sub, t: float, status: str, reason: str, inv_id: str, period_end: float, *, sent: float
    ) -> Any:
        """Invoice `inv_id` created at t, rendered in the API version of its event's time `sent`."""
        return self._obj(
            samples.invoice(
                total=sub.amount, currency=sub.currency, customer=sub.customer, subscription=sub.sub_id,
                status=status, billing_reason=reason, created=int(t), invoice_id=inv_id, basil=not self._legacy(sent),
                period_start=int(t), period_end=int(period_end),
            )
        )  # fmt: skip

    def _sub_obj(self, sub: _Sub, t: float, status: str, period_start: float) -> Any:
        obj = self._obj(
            samples.subscription(
                customer=sub.customer, subscription_id=sub.sub_id, status=status, unit_amount=sub.amount,
                currency=sub.currency, created=int(period_start), current_period_start=int(period_start),
                current_period_end=int(sub.due), basil=not self._legacy(t),
            )
        )  # fmt: skip
        obj["cancel_at_period_end"] = sub.cancel_at_end
        return obj

    # -- activities --------------------------------------------------------------------------------------------

    def _decline_code(self, t: float, currency: str, *, renewal: bool) -> str | None:
        outage = self._window("total_outage", t)
        if outage is not None:
            self._outage_attempts[outage[0]] = self._outage_attempts.get(outage[0], 0) + 1
            return "processing_error"
        partial = self._window("partial_outage", t)
        if partial is not None and partial[1].currency in (None, currency):
            if self.rng.random() < (partial[1].size or 0.7):
                return "processing_error"
        rate = self.spec.renewal_decline_rate if renewal else self.spec.decline_rate
        return self.rng.choice(DECLINE_CODES) if self.rng.random() < rate else None

    def _one_off(self, t: float) -> None:
        currency = self._currency()
        drop = self._window("revenue_drop", t)
        if drop is not None and drop[1].currency in (None, currency):
            # Checkout is broken for part of the traffic: those payers never get to pay at all.
            lost = min(1.0, (drop[1].size or 0.5) / max(0.05, 1 - self.spec.subscription_share))
            if self.rng.random() < lost:
                return
        customer = None if self.rng.random() < self.spec.guest_share else self._id("cus")
        code = self._decline_code(t, currency, renewal=False)
        self._charge(t, customer, currency, self._price(currency), failed=code)
        if code == "processing_error" and self.rng.random() < 0.5:
            # The payer tries again a minute or two later (and again fails if the gateway is still down).
            t2 = t + self.rng.uniform(30, 180)
            self._charge(
                t2, customer, currency, self._price(currency), failed=self._decline_code(t2, currency, renewal=False)
            )

    def _schedule(self, t: float, action: str, sub: _Sub) -> None:
        self._seq += 1
        heapq.heappush(self._actions, (t, self._seq, action, sub))

    def _new_sub(self, due: float) -> _Sub:
        currency = self._currency()
        # Until it renews, a subscription of the initial base is in a period that began about a month before `due`.
        sub = _Sub(self._id("sub"), self._id("cus"), currency, self._price(currency), due, 2 * due - add_month(due))
        self._subs.append(sub)
        self._schedule(due, "renew", sub)
        return sub

    def _sign_up(self, t: float) -> None:
        sub = self._new_sub(add_month(t))
        sub.period_start = t
        inv_id = self._id("in")
        self._emit("customer.subscription.created", self._sub_obj(sub, t, "incomplete", t), t)
        self._emit("invoice.created", self._invoice(sub, t, "draft", "subscription_create", inv_id, sub.due, sent=t), t)
        self._emit(
            "invoice.finalized", self._invoice(sub, t, "open", "subscription_create", inv_id, sub.due, sent=t), t + 2
        )
        code = self._decline_code(t, sub.currency, renewal=False)
        self._charge(t + 3, sub.customer, sub.currency, sub.amount, failed=code, invoice=inv_id)
        if code:
            self._emit(
                "invoice.payment_failed",
                self._invoice(sub, t, "open", "subscription_create", inv_id, sub.due, sent=t),
                t + 4,
            )
            sub.alive = False
            self._emit("customer.subscription.deleted", self._sub_obj(sub, t + DAY, "incomplete_expired", t), t + DAY)
            return
        paid = self._invoice(sub, t, "paid", "subscription_create", inv_id, sub.due, sent=t)
        self._emit("invoice.paid", paid, t + 4)
        self._emit("invoice.payment_succeeded", paid, t + 4)
        self._emit("customer.subscription.updated", self._sub_obj(sub, t + 5, "active", t), t + 5)

    def _renew(self, sub: _Sub, t: float) -> None:
        if not sub.alive:
            return
        if sub.cancel_at_end:
            sub.alive = False
            self._emit("customer.subscription.deleted", self._sub_obj(sub, t, "canceled", t), t)
            return
        period_start, sub.due = t, add_month(t)
        sub.period_start = t
        inv_id = self._id("in")
        self._emit("invoice.created", self._invoice(sub, t, "draft", "subscription_cycle", inv_id, sub.due, sent=t), t)
        # Stripe finalizes and charges a renewal about an hour after creating it.
        self._emit(
            "invoice.finalized",
            self._invoice(sub, t, "open", "subscription_cycle", inv_id, sub.due, sent=t + HOUR),
            t + HOUR,
        )
        self._pay_renewal(sub, t + HOUR, inv_id, period_start, retry=False)

    def _pay_renewal(self, sub: _Sub, t: float, inv_id: str, period_start: float, *, retry: bool) -> None:
        code = self._decline_code(t, sub.currency, renewal=True)
        if retry and code is None and self.rng.random() < 0.3:
            code = "card_declined"  # retries of a declined card fail more often than first attempts
        self._charge(t, sub.customer, sub.currency, sub.amount, failed=code, invoice=inv_id)
        created = period_start
        if code is None:
            paid = self._invoice(sub, created, "paid", "subscription_cycle", inv_id, sub.due, sent=t)
            self._emit("invoice.paid", paid, t + 2)
            self._emit("invoice.payment_succeeded", paid, t + 2)
            sub.past_due = False
            self._emit("customer.subscription.updated", self._sub_obj(sub, t + 3, "active", period_start), t + 3)
            self._schedule(sub.due, "renew", sub)
            return
        self._emit(
            "invoice.payment_failed",
            self._invoice(sub, created, "open", "subscription_cycle", inv_id, sub.due, sent=t),
            t + 2,
        )
        if retry:
            # Smart Retries gave up: the subscription is cancelled (involuntary churn, as Stripe marks it).
            sub.alive = False
            obj = self._sub_obj(sub, t + 3, "canceled", period_start)
            obj["cancellation_details"] = {"comment": None, "feedback": None, "reason": "payment_failed"}
            self._emit("customer.subscription.deleted", obj, t + 3)
            return
        sub.past_due = True
        self._emit("customer.subscription.updated", self._sub_obj(sub, t + 3, "past_due", period_start), t + 3)
        # Smart Retries: an off-session retry of the same invoice days later.
        self._retries[inv_id] = period_start
        self._schedule(t + self.rng.uniform(2, 4) * DAY, "retry:" + inv_id, sub)

    def _cancel_one(self, t: float) -> None:
        live = [s for s in self._subs[-2000:] if s.alive and not s.cancel_at_end]
        if not live:
            return
        sub = self.rng.choice(live)
        if self.rng.random() < self.spec.scheduled_cancel_share:
            sub.cancel_at_end = True
            status = "past_due" if sub.past_due else "active"
            self._emit("customer.subscription.updated", self._sub_obj(sub, t, status, sub.period_start), t)
        else:
            sub.alive = False
            obj = self._sub_obj(sub, t, "canceled", sub.period_start)
            obj["canceled_at"] = obj["ended_at"] = int(t)
            self._emit("customer.subscription.deleted", obj, t)

    def _dispute(self, t: float, *, currency: str | None = None) -> None:
        currency = currency or self._currency()
        amount = self._price(currency)
        charge_id = self._id("ch")
        obj = self._obj(samples.dispute(charge_id=charge_id, amount=amount, currency=currency, created=int(t)))
        if self.rng.random() < self.spec.inquiry_share:
            obj["status"] = "warning_needs_response"
        obj["reason"] = self.rng.choice(("fraudulent", "fraudulent", "product_not_received", "duplicate", "general"))
        self._emit("charge.dispute.created", obj, t)

    def _efw(self, t: float) -> None:
        self._emit("radar.early_fraud_warning.created", self._obj(samples.early_fraud_warning(
            charge_id=self._id("ch"), created=int(t))), t)  # fmt: skip

    def _refund(self, t: float, *, currency: str | None = None) -> None:
        currency = currency or self._currency()
        amount = self._price(currency)
        refunded = amount if self.rng.random() < 0.8 else amount // 2  # most refunds are full, some partial
        self._emit_refund(t, currency, amount, refunded, created=int(t - self.rng.uniform(0.5, 20) * DAY))

    def _test_charge(self, t: float, *, failed: str | None = None, amount: int = 2000) -> None:
        # Test cards are shared: the same 4242 fingerprint, round amounts, a handful of test customers.
        self.livemode = False
        try:
            code = failed
            if code is None and (self._window("total_outage", t, livemode=False) is not None
                                 or self.rng.random() < 0.2):  # fmt: skip
                code = "card_declined"  # 4000 0000 0000 0002 and friends
            self._charge(t, self.rng.choice(self._test_customers), "usd", amount, failed=code,
                         fingerprint="fpTEST4242")  # fmt: skip
        finally:
            self.livemode = True

    # -- the whole history -------------------------------------------------------------------------------------

    def generate(self) -> list[tuple[float, dict[str, Any]]]:
        with samples.seeded_ids(random.Random(f"ids-{self.seed}")):
            return self._generate()

    def _generate(self) -> list[tuple[float, dict[str, Any]]]:
        s = self.spec
        self._seed_subscriptions()
        oneoff = s.charges_per_day * (1 - s.subscription_share) / DAY
        base_subs = s.charges_per_day * s.subscription_share * 30.4
        weekly_growth = math.log1p(s.growth_per_week) / 7 if s.growth_per_week > -1 else 0.0
        step = 300.0
        t = self.start
        while t < self.end:
            while self._actions and self._actions[0][0] < t + step:
                at, _, action, sub = heapq.heappop(self._actions)
                if at < self.start:
                    continue
                if action == "renew":
                    self._renew(sub, at)
                elif action.startswith("retry:") and sub.alive:
                    inv_id = action[6:]
                    self._pay_renewal(sub, at, inv_id, self._retries.pop(inv_id), retry=True)
            f = self.rate_factor(t + step / 2)
            lam = oneoff * step * f
            for _ in range(poisson(self.rng, lam)):
                self._one_off(t + self.rng.random() * step)
            succeeded = s.charges_per_day * step / DAY * f * (1 - s.decline_rate)
            subs_now = base_subs * (1 + s.growth_per_week) ** ((t - self.start) / WEEK)
            # Cancellations and sign-ups follow the subscriber base, which already grows: only the shape applies.
            shape = self.shape(t + step / 2)
            churn = subs_now * s.monthly_churn / (30.4 * DAY) * step * shape
            spike = self._window("churn_spike", t)
            if spike is not None:
                # Drawn in the loop, like normal churn, so that each cancellation sees the subscription as it is then.
                churn *= spike[1].size or 5.0
            signups = subs_now * (s.monthly_churn / 30.4 + max(0.0, weekly_growth)) / DAY * step * shape
            for rate, make in (
                (succeeded * s.dispute_rate, self._dispute), (succeeded * s.efw_rate, self._efw),
                (succeeded * s.refund_rate, self._refund), (churn, self._cancel_one), (signups, self._sign_up),
                (lam * s.filler_per_charge, self._filler),
            ):  # fmt: skip
                for _ in range(poisson(self.rng, rate)):
                    make(t + self.rng.random() * step)
            if s.test_charges_per_day:
                weekday = datetime.fromtimestamp(t, UTC).weekday() < 5
                test_lam = s.test_charges_per_day * step / DAY * (1.4 if weekday else 0.2)
                for _ in range(poisson(self.rng, test_lam)):
                    self._test_charge(t + self.rng.random() * step)
            t += step
        self._inject_all()
        self.out = [(r, e) for r, e in self.out if r < self.end]
        self.out.sort(key=lambda pair: pair[0])
        return self.out

    def _seed_subscriptions(self) -> None:
        """The renewing base on day one: due dates spread over the month, `anchor_share` on the anchor day."""
        s = self.spec
        n = round(s.charges_per_day * s.subscription_share * 30.4)
        first = datetime.fromtimestamp(self.start, UTC)
        anchor = first.replace(day=min(s.anchor_day, 28), hour=0, minute=0, second=0, microsecond=0).timestamp()
        if anchor < self.start:
            anchor = add_month(anchor)
        # Exactly one calendar month of due dates: their renewals a month later then cover every day once (30.4 days
        # from a 31-day month's start left most of a day without renewals a month on: a false revenue dip).
        month = add_month(self.start) - self.start
        for _ in range(n):
            if self.rng.random() < s.anchor_share:
                due = anchor + self.rng.uniform(0, 2 * HOUR)
            else:
                due = self.start + self.rng.uniform(0, month)
            self._new_sub(due)

    # -- anomalies ---------------------------------------------------------------------------------------------

    def _inject_all(self) -> None:
        for i, a in enumerate(self.anomaly_specs):
            detector, delay, allowed, aftermath = KINDS[a.kind]
            start = self.eval_start + a.at
            label = Label(
                a.kind, detector if a.livemode else None, start, start + a.duration, delay, aftermath,
                livemode=a.livemode, allowed=allowed,
            )  # fmt: skip
            if a.currency:
                label.keys["currency"] = a.currency
            getattr(self, f"_add_{a.kind}")(i, a, label)
            self.labels.append(label)

    def _spread(self, label: Label, n: int) -> list[float]:
        return sorted(label.start + self.rng.random() * (label.end - label.start) for _ in range(n))

    def _add_total_outage(self, i: int, a: AnomalySpec, label: Label) -> None:
        # Traffic in the window already fails (see _decline_code); payers who retry top it up to `size` attempts.
        need = max(0, int(a.size or 5) - self._outage_attempts.get(i, 0))
        for t in self._spread(label, need):
            if a.livemode:
                currency = self._currency()
                self._charge(t, self._id("cus"), currency, self._price(currency), failed="processing_error")
            else:
                self._test_charge(t, failed="processing_error")
        label.note = (
            f"every charge attempt fails for {a.duration / 60:.0f} min ({self._outage_attempts.get(i, 0) + need}"
            " attempts at least)"
            if a.livemode
            else f"test mode: {need}+ failing test charges"
        )

    def _add_partial_outage(self, i: int, a: AnomalySpec, label: Label) -> None:
        label.note = f"{(a.size or 0.7):.0%} of {a.currency or 'all'} charges fail for {a.duration / HOUR:g} h"

    def _add_card_testing(self, i: int, a: AnomalySpec, label: Label) -> None:
        n = int(a.size or 120)
        for t in self._spread(label, n):
            code = self.rng.choice(CARD_TESTING_CODES)
            amount = self.rng.choice((100, 100, 150, 200, 300))
            if a.livemode:
                self._charge(t, None, "usd", amount, failed=code, fingerprint=self._id("fp"))
            else:
                self._test_charge(t, failed=code, amount=amount)
        label.note = f"{n} failed small guest charges in {a.duration / 60:.0f} min" + (
            "" if a.livemode else " (test mode)"
        )

    def _add_revenue_drop(self, i: int, a: AnomalySpec, label: Label) -> None:
        label.note = f"{(a.size or 0.5):.0%} of {a.currency or 'all'} revenue lost for {a.duration / HOUR:g} h"

    def _expected_successes(self, label: Label) -> float:
        n, t = 0.0, label.start
        while t < label.end:
            n += self.spec.charges_per_day * 300 / DAY * self.rate_factor(t) * (1 - self.spec.decline_rate)
            t += 300
        return n

    def _add_dispute_wave(self, i: int, a: AnomalySpec, label: Label) -> None:
        factor = a.size or 3.0
        extra = max(3, round((factor - 1) * self.spec.dispute_rate * self._expected_successes(label)))
        for t in self._spread(label, extra):
            self._dispute(t, currency=a.currency)
        label.note = f"disputes at {factor:g}x the own rate for {a.duration / DAY:g} d ({extra} extra)"

    def _add_refund_spike(self, i: int, a: AnomalySpec, label: Label) -> None:
        share = a.size or 0.3
        n = max(5, round(share * self._expected_successes(Label("", None, label.start, label.start + DAY, 0, 0))))
        for t in self._spread(label, n):
            self._refund(t, currency=a.currency or self._currencies[0])
        label.keys.setdefault("currency", a.currency or self._currencies[0])
        label.note = f"{n} refunds (~{share:.0%} of a day's charges) in {a.duration / HOUR:g} h"

    def _add_churn_spike(self, i: int, a: AnomalySpec, label: Label) -> None:
        factor = a.size or 5.0
        base = self.spec.charges_per_day * self.spec.subscription_share * self.spec.monthly_churn
        extra = round((factor - 1) * base * a.duration / DAY)
        label.note = f"cancellations at {factor:g}x the own rate for {a.duration / HOUR:g} h (~{extra} extra)"

    def _add_webhook_lag(self, i: int, a: AnomalySpec, label: Label) -> None:
        label.note = f"endpoint unreachable for {a.duration / 60:.0f} min: deliveries wait for Stripe's retries"

    def _legacy_injection(self, a: AnomalySpec, label: Label) -> Injection:
        inj = Injection(a.kind, label.start, label.end, label.end)
        self.livemode = a.livemode
        try:
            getattr(self, f"_inject_{a.kind}")(inj)
        finally:
            self.livemode = True
        for key in ("customer", "subscription"):
            if getattr(inj, key):
                label.keys[key] = getattr(inj, key)
        label.note = inj.note
        return inj

    def _add_duplicate_charge(self, i: int, a: AnomalySpec, label: Label) -> None:
        self._legacy_injection(a, label)

    def _add_negative_invoice(self, i: int, a: AnomalySpec, label: Label) -> None:
        self._legacy_injection(a, label)

    def _add_silent_lapse(self, i: int, a: AnomalySpec, label: Label) -> None:
        # Paid on day 0 and 1, the day-2 renewal is never paid: it is reported once the 3-day grace has passed.
        if label.start + 5 * DAY + label.delay > self.end:
            raise ValueError("silent_lapse needs 5 days and its allowed delay after it inside the history")
        self._legacy_injection(a, label)
        label.start += 2 * DAY + 3 * DAY
        label.end = max(label.end, label.start)
