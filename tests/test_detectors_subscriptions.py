"""The subscription ledger (stripe_subscriptions, stripe_mrr) and silent_lapse."""

from __future__ import annotations

import copy
import random

import pytest

from exporter import samples
from tests.detectors_support import T0, Harness, anomaly_labels

DAY = 86400
GRACE = 3 * DAY
CUSTOMER = "cus_S3nLp9Qa2Xv1"


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path / "state.sqlite3")


def sub(sub_id="sub_1QaLp9Qa2Xv1", *, status="active", start=T0, end=None, basil=True, **kw):
    kw.setdefault("customer", CUSTOMER)
    return samples.subscription(
        subscription_id=sub_id,
        status=status,
        created=kw.pop("created", T0),
        current_period_start=start,
        current_period_end=start + 30 * DAY if end is None else end,
        basil=basil,
        **kw,
    )


def invoice(
    sub_id="sub_1QaLp9Qa2Xv1",
    *,
    status="paid",
    created,
    reason="subscription_cycle",
    basil=True,
    total=2000,
    period_end=None,
    invoice_id=None,
):
    return samples.invoice(
        total=total,
        customer=CUSTOMER,
        subscription=sub_id,
        status=status,
        billing_reason=reason,
        created=created,
        basil=basil,
        period_start=created,
        period_end=created + 30 * DAY if period_end is None else period_end,
        invoice_id=invoice_id,
    )


def mrr(h, currency, livemode="false"):
    return h.value("stripe_mrr", {"currency": currency, "livemode": livemode})


def subs(h, status, livemode="false"):
    return h.value("stripe_subscriptions", {"status": status, "livemode": livemode})


# -- ledger and gauges -------------------------------------------------------------------------------------------


def test_mrr_counts_active_and_past_due_normalised_to_a_month(h):
    h.send("customer.subscription.created", sub("sub_a", unit_amount=2000, quantity=2))
    h.send("customer.subscription.created", sub("sub_b", unit_amount=12_000, interval="year"))
    h.send("customer.subscription.created", sub("sub_c", status="past_due", unit_amount=1000))
    h.send("customer.subscription.created", sub("sub_d", status="trialing", unit_amount=5000))
    h.send("customer.subscription.created", sub("sub_e", status="canceled", unit_amount=5000))
    h.send("customer.subscription.created", sub("sub_f", unit_amount=1000, interval="week"))
    h.send("customer.subscription.created", sub("sub_g", unit_amount=3000, currency="jpy"))
    h.send("customer.subscription.created", sub("sub_h", unit_amount=6000, interval="month", interval_count=3))
    # 40 + 120/12 + 10 (past_due) + 10*52/12 + 60/3 = 123.33 USD a month; trialing and canceled add nothing.
    assert mrr(h, "usd") == pytest.approx(40 + 10 + 10 + 10 * 52 / 12 + 20, abs=0.01)
    assert mrr(h, "jpy") == 3000
    assert (subs(h, "active"), subs(h, "past_due"), subs(h, "trialing"), subs(h, "canceled")) == (5, 1, 1, 1)
    assert subs(h, "unpaid") == 0


def test_metered_prices_add_nothing_to_mrr(h):
    metered = sub("sub_m", unit_amount=25)
    metered["items"]["data"][0]["price"]["recurring"]["usage_type"] = "metered"
    h.send("customer.subscription.created", metered)
    assert subs(h, "active") == 1
    assert mrr(h, "usd") is None


def test_status_changes_move_counts_and_mrr(h):
    h.send("customer.subscription.created", sub(unit_amount=2000), created=T0)
    assert (subs(h, "active"), mrr(h, "usd")) == (1, 20.0)
    h.send("customer.subscription.updated", sub(status="past_due", unit_amount=2000), created=T0 + 10)
    assert (subs(h, "active"), subs(h, "past_due"), mrr(h, "usd")) == (0, 1, 20.0)
    h.send("customer.subscription.deleted", sub(status="canceled", unit_amount=2000), created=T0 + 20)
    assert (subs(h, "past_due"), subs(h, "canceled"), mrr(h, "usd")) == (0, 1, 0.0)


def test_out_of_order_events_never_roll_state_back(h):
    created = sub(unit_amount=2000, quantity=1)
    upgraded = sub(unit_amount=2000, quantity=3)
    deleted = sub(status="canceled", unit_amount=2000, quantity=3)
    h.send("customer.subscription.deleted", deleted, created=T0 + 200)
    h.send("customer.subscription.updated", upgraded, created=T0 + 100)
    h.send("customer.subscription.created", created, created=T0)
    assert (subs(h, "canceled"), subs(h, "active")) == (1, 0)
    assert not mrr(h, "usd")  # never counted (absent) rather than counted and removed
    record = h.detector("silent_lapse").record("sub_1QaLp9Qa2Xv1")
    assert record.status == "canceled" and record.first_seen == T0


def test_equal_created_times_keep_the_later_arriving_snapshot(h):
    h.send("customer.subscription.updated", sub(unit_amount=2000, quantity=2), created=T0)
    h.send("customer.subscription.updated", sub(unit_amount=2000, quantity=5), created=T0)
    assert mrr(h, "usd") == 100.0


@pytest.mark.parametrize("basil", [True, False], ids=["basil", "pre_basil"])
def test_period_read_from_both_api_shapes(h, basil):
    h.send("customer.subscription.created", sub(basil=basil, start=T0, end=T0 + 31 * DAY))
    record = h.detector("silent_lapse").record("sub_1QaLp9Qa2Xv1")
    assert (record.period_start, record.period_end) == (T0, T0 + 31 * DAY)


# -- silent lapse: positives -------------------------------------------------------------------------------------


def _new_subscription_paid_then_renewed(h, *, basil=True, renewal_paid=False):
    h.send("customer.subscription.created", sub(basil=basil), created=T0, received=T0 + 1)
    h.send("invoice.paid", invoice(created=T0, reason="subscription_create", basil=basil), received=T0 + 2)
    renewal = T0 + 30 * DAY
    h.send("customer.subscription.updated", sub(basil=basil, start=renewal), created=renewal, received=renewal)
    if renewal_paid:
        h.send("invoice.paid", invoice(created=renewal + 3600, basil=basil), received=renewal + 3601)
    return renewal


@pytest.mark.parametrize("basil", [True, False], ids=["basil", "pre_basil"])
def test_no_payment_after_renewal_plus_grace_is_a_silent_lapse(h, basil):
    renewal = _new_subscription_paid_then_renewed(h, basil=basil)
    h.tick(renewal + GRACE - 60)
    assert h.total("silent_lapse") == 0 and h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 0
    h.tick(renewal + GRACE + 60)
    assert h.total("silent_lapse") == 1
    assert h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 1
    labels = anomaly_labels(
        "silent_lapse", "warning", "no_payment", customer=CUSTOMER, subscription="sub_1QaLp9Qa2Xv1", currency="usd",
        livemode="false",
    )
    assert h.value("billingwatch_anomaly", labels) == 1
    assert h.value("billingwatch_anomaly_amount", labels) == 20.0
    # Reported once, not at every sweep.
    h.tick(renewal + GRACE + 600)
    assert h.total("silent_lapse") == 1
    # The payment arrives late: no longer lapsed.
    h.send("invoice.paid", invoice(created=renewal + GRACE + 700, basil=basil), received=renewal + GRACE + 700)
    h.tick(renewal + GRACE + 800)
    assert h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 0


def test_renewal_paid_in_time_is_not_a_lapse(h):
    renewal = _new_subscription_paid_then_renewed(h, renewal_paid=True)
    h.tick(renewal + GRACE + 60)
    h.tick(renewal + 20 * DAY)
    assert h.total("silent_lapse") == 0


def test_unpaid_renewal_invoice_past_grace_is_a_silent_lapse(h):
    h.send("customer.subscription.created", sub(), created=T0)
    h.send("invoice.paid", invoice(created=T0, reason="subscription_create"), received=T0)
    renewal = T0 + 30 * DAY
    open_inv = invoice(status="open", created=renewal, invoice_id="in_1QbRenewal0001")
    # Stripe sends the invoice before the subscription update here (out of order): it is kept either way.
    h.send("invoice.finalized", open_inv, created=renewal + 3600, received=renewal + 3600)
    h.send("invoice.payment_failed", copy.deepcopy(open_inv), created=renewal + 3700, received=renewal + 3700)
    h.send("customer.subscription.updated", sub(start=renewal), created=renewal, received=renewal + 3800)
    h.tick(renewal + GRACE)
    assert h.total("silent_lapse") == 0
    h.tick(renewal + GRACE + 2 * 3600)
    (found,) = h.anomalies("silent_lapse")
    assert found["reason"] == "unpaid_renewal" and found["invoice"] == "in_1QbRenewal0001"
    assert found["amount"] == 20.0
    paid = {**copy.deepcopy(open_inv), "status": "paid"}
    h.send("invoice.paid", paid, created=renewal + GRACE + 3 * 3600, received=renewal + GRACE + 3 * 3600)
    h.tick(renewal + GRACE + 4 * 3600)
    assert h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 0
    # A late copy of the open invoice does not reopen it.
    h.send("invoice.finalized", copy.deepcopy(open_inv), received=renewal + GRACE + 5 * 3600)
    h.tick(renewal + GRACE + 6 * 3600)
    assert h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 0


def test_subscription_from_before_we_started_is_judged_at_its_next_renewal(h):
    # Another subscription proves the endpoint receives invoice.paid.
    h.send("invoice.paid", invoice("sub_other", created=T0), received=T0)
    # First sight of this one: an update 20 days into its period; its payment happened before we existed.
    h.send("customer.subscription.updated", sub(start=T0 - 20 * DAY, end=T0 + 10 * DAY), created=T0, received=T0)
    h.tick(T0 + 10 * DAY + GRACE - 60)
    assert h.total("silent_lapse") == 0
    # No renewal and no payment seen by the end of its period plus grace: reported.
    h.tick(T0 + 10 * DAY + GRACE + 60)
    assert [a["reason"] for a in h.anomalies()] == ["no_payment"]


def test_subscription_from_before_we_started_renewing_normally_is_fine(h):
    h.send("customer.subscription.updated", sub(start=T0 - 20 * DAY, end=T0 + 10 * DAY), created=T0, received=T0)
    renewal = T0 + 10 * DAY
    h.send("invoice.paid", invoice(created=renewal + 3600), received=renewal + 3600)
    h.send("customer.subscription.updated", sub(start=renewal), created=renewal, received=renewal + 3601)
    for day in (5, 15, 29):
        h.tick(renewal + day * DAY)
    assert h.total("silent_lapse") == 0


# -- silent lapse: what must not fire ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"status": "trialing"},
        {"status": "past_due"},
        {"status": "canceled"},
        {"status": "paused"},
        {"unit_amount": 0},
        {"pause_collection": {"behavior": "void", "resumes_at": None}},
        {"cancel_at_period_end": True},
    ],
    ids=["trialing", "past_due", "canceled", "paused", "free_plan", "collection_paused", "cancel_at_period_end"],
)
def test_no_false_positive(h, overrides):
    h.send("invoice.paid", invoice("sub_other", created=T0), received=T0)
    extra = {k: v for k, v in overrides.items() if k not in ("status", "unit_amount")}
    obj = sub(
        status=overrides.get("status", "active"),
        unit_amount=overrides.get("unit_amount", 2000),
        start=T0 - 20 * DAY,
        end=T0 + 10 * DAY,
    )
    obj.update(extra)
    h.send("customer.subscription.updated", obj, created=T0, received=T0)
    h.tick(T0 + 10 * DAY + GRACE + 60)
    h.tick(T0 + 45 * DAY)
    assert h.total("silent_lapse") == 0
    assert h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 0


def test_trial_ending_into_a_paid_period_is_judged_from_the_trial_end(h):
    h.send("invoice.paid", invoice("sub_other", created=T0), received=T0)
    trial_end = T0 + 14 * DAY
    trial = sub(status="trialing", start=T0, end=trial_end)
    trial.update(trial_start=T0, trial_end=trial_end)
    h.send("customer.subscription.created", trial, created=T0, received=T0)
    h.tick(trial_end - 60)
    converted = sub(start=trial_end)
    converted.update(trial_start=T0, trial_end=trial_end)
    h.send("customer.subscription.updated", converted, created=trial_end, received=trial_end)
    h.tick(trial_end + GRACE - 60)
    assert h.total("silent_lapse") == 0
    h.tick(trial_end + GRACE + 60)
    assert h.total("silent_lapse") == 1


def test_send_invoice_collection_waits_for_days_until_due(h):
    renewal = T0 + 30 * DAY
    terms = {"collection_method": "send_invoice", "days_until_due": 30}
    h.send("customer.subscription.created", {**sub(), **terms}, created=T0, received=T0)
    h.send("invoice.paid", invoice(created=T0, reason="subscription_create"), received=T0)
    h.send("customer.subscription.updated", {**sub(start=renewal), **terms}, created=renewal, received=renewal)
    h.tick(renewal + GRACE + 60)
    assert h.total("silent_lapse") == 0
    h.tick(renewal + 30 * DAY + GRACE + 60)
    assert h.total("silent_lapse") == 1


def test_unpaid_send_invoice_renewal_counts_from_its_due_date(h):
    renewal = T0 + 30 * DAY
    h.send(
        "customer.subscription.created",
        {**sub(start=renewal), "collection_method": "send_invoice", "days_until_due": 14},
        created=renewal,
        received=renewal,
    )
    open_inv = invoice(status="open", created=renewal)
    open_inv.update(collection_method="send_invoice", due_date=renewal + 14 * DAY)
    h.send("invoice.finalized", open_inv, created=renewal, received=renewal)
    h.tick(renewal + 14 * DAY + GRACE - 60)
    assert h.total("silent_lapse") == 0
    h.tick(renewal + 14 * DAY + GRACE + 60)
    assert [a["reason"] for a in h.anomalies()] == ["unpaid_renewal"]


def test_without_any_invoice_payment_events_no_payment_is_never_assumed(h):
    # An endpoint not subscribed to invoice.paid would make every subscription look unpaid.
    h.send("customer.subscription.created", sub(), created=T0, received=T0)
    h.send("customer.subscription.updated", sub(start=T0 + 30 * DAY), created=T0 + 30 * DAY)
    h.tick(T0 + 30 * DAY + GRACE + 60)
    assert h.total("silent_lapse") == 0


def test_payment_arriving_before_the_subscription_is_known_is_kept(h):
    renewal = T0 + 30 * DAY
    h.send("invoice.paid", invoice(created=renewal + 60), received=renewal + 60)
    h.send("customer.subscription.updated", sub(start=renewal), created=renewal, received=renewal + 61)
    h.send("customer.subscription.created", sub(), created=T0, received=renewal + 62)  # very late, and older
    h.tick(renewal + GRACE + 60)
    assert h.total("silent_lapse") == 0
    assert h.detector("silent_lapse").record("sub_1QaLp9Qa2Xv1").period_start == renewal


# -- persistence -------------------------------------------------------------------------------------------------


def test_ledger_and_lapse_survive_a_restart(h):
    renewal = _new_subscription_paid_then_renewed(h)
    h.send("customer.subscription.created", sub("sub_other", status="past_due", unit_amount=1500, currency="eur"))
    h.tick(renewal + GRACE + 60)
    assert h.total("silent_lapse") == 1
    h2 = h.restart()
    assert mrr(h2, "usd") == 20.0 and mrr(h2, "eur") == 15.0
    assert (subs(h2, "active"), subs(h2, "past_due")) == (1, 1)
    assert h2.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 1
    h2.tick(renewal + GRACE + 200)
    assert h2.total("silent_lapse") == 0  # not reported again after the restart
    assert h2.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 1


@pytest.mark.parametrize("seed", range(3))
def test_ledger_read_back_after_random_changes_forgetting_and_restarts_is_the_same_table(tmp_path, seed):
    rng = random.Random(seed)
    h = Harness(tmp_path / "state.sqlite3")
    now = T0
    for _ in range(300):
        now += rng.choice((1, 60, 5 * DAY))  # long jumps let ended subscriptions age out
        event_type = rng.choice(("customer.subscription.created", "customer.subscription.updated",
                                 "customer.subscription.deleted"))
        status = "canceled" if event_type.endswith("deleted") else rng.choice(("active", "past_due", "trialing"))
        h.send(event_type, sub(f"sub_{rng.randrange(15)}", status=status, unit_amount=rng.randrange(100, 5000)),
               created=now, received=now)
        if rng.random() < 0.3:
            h.tick(now)
        if rng.random() < 0.05:
            h.tick(now)  # what restart() does first: the sweep may forget ended subscriptions
            before = {k: rec.dump() for k, rec in h.service.detector_set.by_name["silent_lapse"].subs.items()}
            h = h.restart()
            assert {k: rec.dump() for k, rec in h.service.detector_set.by_name["silent_lapse"].subs.items()} == before


def test_ended_subscriptions_are_forgotten_after_retention(h):
    h.send("customer.subscription.deleted", sub(status="canceled"), created=T0, received=T0)
    h.tick(T0 + 29 * DAY)
    assert subs(h, "canceled") == 1
    h.tick(T0 + 31 * DAY)
    assert subs(h, "canceled") == 0
    assert h.detector("silent_lapse").subs == {}


def test_a_one_off_invoice_payment_also_proves_invoice_events_arrive(h):
    h.send("invoice.paid", invoice(None, created=T0, reason="manual"), received=T0)
    renewal = T0 + 30 * DAY
    h.send("customer.subscription.created", sub(), created=T0, received=T0)
    h.send("customer.subscription.updated", sub(start=renewal), created=renewal, received=renewal)
    h.tick(renewal + GRACE + 60)
    assert [a["reason"] for a in h.anomalies()] == ["no_payment"]


def test_sweep_is_spread_over_ticks_without_missing_anyone(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"subscriptions": {"sweep_interval_seconds": 10.0}})
    h.send("invoice.paid", invoice("sub_other", created=T0), received=T0)
    renewal = T0 + 30 * DAY
    for i in range(1200):
        h.send(
            "customer.subscription.updated", sub(f"sub_many{i:05d}", start=renewal), created=renewal, received=renewal
        )
    start = renewal + GRACE + 60
    h.tick(start)
    assert 0 < h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) < 1200  # one slice, not the whole ledger
    for second in range(1, 4):
        h.tick(start + second)
    assert h.value("stripe_subscriptions_lapsed", {"livemode": "false"}) == 1200
    assert h.total("silent_lapse") == 1200
