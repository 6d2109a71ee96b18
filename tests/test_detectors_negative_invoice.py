"""negative_invoice: invoices with a negative total (once each) and large single refunds or credit notes."""

from __future__ import annotations

import copy

import pytest

from exporter import samples
from tests.conftest import stripe_fixture
from tests.detectors_support import T0, Harness, anomaly_labels

CUSTOMER = "cus_R8vYk2Lp0Qe7"


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path / "state.sqlite3")


def negative_invoice(*, basil: bool, total: int = -1500, currency: str = "usd", status: str = "open"):
    inv = samples.invoice(
        total=total,
        currency=currency,
        customer=CUSTOMER,
        subscription="sub_9fKq2LmZ0aRt",
        status=status,
        billing_reason="subscription_update",
        created=T0,
        basil=basil,
    )
    # What Stripe sends when credits exceed charges: nothing is due, the balance owes the customer.
    inv["amount_due"] = 0
    inv["amount_paid"] = 0
    inv["amount_remaining"] = 0
    inv["subtotal"] = total
    return inv


def refund(*, amount: int, currency: str = "usd", charge_id: str = "ch_3Pq8Lk2Vx0Ab", refund_id: str | None = None):
    obj = stripe_fixture("refund")
    obj.update(
        id=refund_id or samples.new_id("re"),
        amount=amount,
        currency=currency,
        charge=charge_id,
        created=T0,
        status="succeeded",
        reason="requested_by_customer",
        payment_intent="pi_3Pq8Lk2Vx0Ab",
    )
    return obj


def credit_note(*, amount: int, currency: str = "usd", note_id: str = "cn_1Q0aZk2Lp0Qe7"):
    obj = stripe_fixture("credit_note")
    obj.update(
        id=note_id,
        amount=amount,
        total=amount,
        subtotal=amount,
        currency=currency,
        customer=CUSTOMER,
        invoice="in_1Q0aYk2Lp0Qe7",
        created=T0,
        effective_at=T0,
        reason="order_change",
        type="pre_payment",
        status="issued",
    )
    return obj


@pytest.mark.parametrize("basil", [True, False], ids=["basil", "pre_basil"])
def test_negative_total_reported_once_per_invoice_on_any_invoice_event(h, basil):
    inv = negative_invoice(basil=basil)
    h.send("invoice.created", {**copy.deepcopy(inv), "status": "draft"}, received=T0)
    h.send("invoice.finalized", copy.deepcopy(inv), received=T0 + 60)
    h.send("invoice.updated", copy.deepcopy(inv), received=T0 + 61)
    h.send("invoice.paid", {**copy.deepcopy(inv), "status": "paid"}, received=T0 + 62)
    assert h.total("negative_invoice") == 1
    labels = anomaly_labels(
        "negative_invoice",
        "info",  # a credit to the customer's balance: routine, never a page
        "negative_total",
        customer=CUSTOMER,
        subscription="sub_9fKq2LmZ0aRt",
        invoice=inv["id"],
        currency="usd",
    )
    assert h.value("billingwatch_anomaly", labels) == 1
    assert h.value("billingwatch_anomaly_amount", labels) == -15.0
    (found,) = h.anomalies()
    assert found["details"]["total_minor"] == -1500


def test_only_the_total_matters_not_amount_paid(h):
    # amount_paid is never negative at Stripe (what the replaced product watched); a zero or positive total is fine.
    for total in (0, 2000):
        h.send("invoice.finalized", negative_invoice(basil=True, total=total), received=T0)
    assert h.total("negative_invoice") == 0


def test_negative_invoice_in_zero_decimal_currency(h):
    h.send("invoice.finalized", negative_invoice(basil=True, total=-3000, currency="jpy"), received=T0)
    (found,) = h.anomalies()
    assert found["amount"] == -3000.0 and found["currency"] == "jpy"


def test_negative_invoice_once_across_a_restart(h):
    inv = negative_invoice(basil=True)
    h.send("invoice.finalized", copy.deepcopy(inv), received=T0)
    h2 = h.restart()
    h2.send("invoice.paid", {**inv, "status": "paid"}, received=T0 + 60)
    assert h2.total("negative_invoice") == 0
    assert len(h2.anomalies()) == 1  # the one from before the restart, still listed


def test_large_refund_reported_once_whichever_way_it_arrives(h):
    big = refund(amount=75_000, refund_id="re_3Pq8Ll2Vx0Ab")
    h.send("refund.created", big, received=T0)
    h.send("refund.updated", copy.deepcopy(big), received=T0 + 1)
    # The same refund as charge.refunded (current API: no refund list, a running amount_refunded).
    ch = samples.charge(
        customer=CUSTOMER, amount=90_000, amount_refunded=75_000, charge_id="ch_3Pq8Lk2Vx0Ab", created=T0 - 86400
    )
    h.send("charge.refunded", ch, received=T0 + 2, previous_attributes={"amount_refunded": 0, "refunded": False})
    assert h.total("negative_invoice") == 1
    (found,) = h.anomalies()
    assert found["reason"] == "large_refund" and found["amount"] == 750.0
    assert found["details"]["refund"] == "re_3Pq8Ll2Vx0Ab"


def test_refund_seen_first_as_charge_refunded_then_refund_created(h):
    ch = samples.charge(customer=CUSTOMER, amount=90_000, amount_refunded=60_000, charge_id="ch_7Kx", created=T0)
    h.send("charge.refunded", ch, received=T0)
    h.send("refund.created", refund(amount=60_000, charge_id="ch_7Kx"), received=T0 + 1)
    assert h.total("negative_invoice") == 1
    labels = anomaly_labels("negative_invoice", "critical", "large_refund", customer=CUSTOMER, currency="usd")
    assert h.value("billingwatch_anomaly_amount", labels) == 600.0


def test_partial_refunds_are_judged_one_by_one(h):
    ch = samples.charge(customer=CUSTOMER, amount=150_000, charge_id="ch_parts", created=T0)
    totals = [30_000, 60_000, 120_000]  # refunds of 300, 300 and 600: only the last is large
    for i, total in enumerate(totals):
        h.send("charge.refunded", {**copy.deepcopy(ch), "amount_refunded": total}, received=T0 + i)
    (found,) = h.anomalies()
    assert found["amount"] == 600.0
    # A late, older snapshot shows no new refund.
    h.send("charge.refunded", {**copy.deepcopy(ch), "amount_refunded": 60_000}, received=T0 + 10)
    assert h.total("negative_invoice") == 1


def test_refund_list_of_older_api_versions(h):
    ch = samples.charge(customer=CUSTOMER, amount=150_000, amount_refunded=80_000, charge_id="ch_old", created=T0)
    ch["refunds"] = {
        "object": "list",
        "data": [refund(amount=20_000, charge_id="ch_old"), refund(amount=60_000, charge_id="ch_old")],
        "has_more": False,
    }
    h.send("charge.refunded", ch, received=T0, api_version="2020-08-27")
    (found,) = h.anomalies()
    assert found["amount"] == 600.0 and found["details"]["refund"] == ch["refunds"]["data"][1]["id"]


def test_small_and_failed_refunds_are_not_reported(h):
    h.send("refund.created", refund(amount=49_999), received=T0)
    h.send("refund.created", {**refund(amount=90_000), "status": "failed"}, received=T0)
    assert h.total("negative_invoice") == 0


def test_threshold_is_in_major_units_of_each_currency_with_overrides(tmp_path):
    h = Harness(
        tmp_path / "s.sqlite3", detectors={"negative_invoice": {"reversal_threshold_by_currency": {"jpy": 75000}}}
    )
    h.send("refund.created", refund(amount=5_000, currency="jpy"), received=T0)  # 5,000 yen: small
    h.send("refund.created", refund(amount=80_000, currency="jpy"), received=T0)
    h.send("refund.created", refund(amount=600_000, currency="kwd"), received=T0)  # 600.000 KWD
    h.send("refund.created", refund(amount=100_000, currency="kwd"), received=T0)  # 100.000 KWD: below its 150 default
    amounts = sorted((a["currency"], a["amount"]) for a in h.anomalies())
    assert amounts == [("jpy", 80000.0), ("kwd", 600.0)]


def test_large_credit_note_reported_once(h):
    note = credit_note(amount=70_000)
    h.send("credit_note.created", note, received=T0)
    h.send("credit_note.created", copy.deepcopy(note), received=T0 + 1)  # same note, another event id
    h.send("credit_note.created", credit_note(amount=10_000, note_id="cn_small"), received=T0 + 2)
    assert h.total("negative_invoice") == 1
    labels = anomaly_labels(
        "negative_invoice",
        "critical",
        "large_credit_note",
        customer=CUSTOMER,
        invoice="in_1Q0aYk2Lp0Qe7",
        currency="usd",
    )
    assert h.value("billingwatch_anomaly_amount", labels) == 700.0
