"""negative_invoice (credits vs money out, per-currency thresholds), refunds by id, disputes and early fraud
warnings, through the running exporter's webhook listener."""

from __future__ import annotations

import time

import pytest

from exporter import samples
from tests.ingest_support import make_config, running_exporter
from tests.stripe_http_support import Driver


@pytest.fixture
async def drv(tmp_path):
    async with running_exporter(make_config(tmp_path / "s.sqlite3")) as ex:
        yield Driver(ex)


def refund(charge: dict, refund_id: str, amount: int, status: str = "succeeded") -> dict:
    return {"id": refund_id, "object": "refund", "amount": amount, "charge": charge["id"],
            "currency": charge["currency"], "created": int(time.time()), "livemode": charge["livemode"],
            "payment_intent": charge["payment_intent"], "reason": "requested_by_customer", "status": status}


def dispute(charge_id: str, status: str, *, amount: int = 8000, reason: str = "fraudulent",
            dispute_id: str | None = None, livemode: bool = True) -> dict:
    obj = samples.dispute(charge_id=charge_id, amount=amount, reason=reason, livemode=livemode)
    obj["status"] = status
    if dispute_id:
        obj["id"] = dispute_id
    return obj


# -- negative_invoice --------------------------------------------------------------------------------------------


async def test_proration_credit_is_routine_and_money_out_is_critical(drv):
    # A downgrade: the proration invoice's total is negative and goes to the customer's credit balance.
    credit = samples.invoice(total=-4500, customer="cus_Downgrade", status="paid", billing_reason="subscription_update",
                             livemode=True)
    credit["amount_due"] = credit["amount_paid"] = 0
    credit["ending_balance"] = -4500
    await drv.send("invoice.finalized", credit)
    await drv.send("invoice.paid", credit)
    ch = samples.charge(amount=90_000, customer="cus_Refunded", livemode=True)
    await drv.send("refund.created", refund(ch, "re_Big0001", 60_000))
    await drv.settled()
    by_reason = {a["reason"]: a for a in await drv.anomalies("negative_invoice")}
    assert set(by_reason) == {"negative_total", "large_refund"}
    assert by_reason["negative_total"]["severity"] == "info"
    assert by_reason["negative_total"]["details"]["money_out"] is False
    assert by_reason["large_refund"]["severity"] == "critical"
    assert by_reason["large_refund"]["livemode"] == "true"


async def test_credit_notes_refunded_or_only_credited(drv):
    base = {"object": "credit_note", "currency": "usd", "customer": "cus_Notes", "invoice": "in_Notes",
            "status": "issued", "type": "post_payment", "reason": "order_change", "livemode": True}
    refunded = {**base, "id": "cn_Refunded", "amount": 80_000, "total": 80_000,
                "refunds": [{"refund": "re_FromNote", "amount_refunded": 80_000}], "customer_balance_transaction": None}
    credited = {**base, "id": "cn_Credited", "amount": 80_000, "total": 80_000, "refunds": [],
                "customer_balance_transaction": "cbtxn_1"}
    await drv.send("credit_note.created", refunded)
    await drv.send("credit_note.created", credited)
    # The note's refund also arrives as refund.created and charge.refunded: one reversal, one anomaly.
    ch = samples.charge(amount=80_000, customer="cus_Notes", livemode=True)
    await drv.send("refund.created", refund(ch, "re_FromNote", 80_000))
    await drv.send("charge.refunded", {**ch, "amount_refunded": 80_000})
    await drv.settled()
    found = {a["details"].get("credit_note"): a for a in await drv.anomalies("negative_invoice")}
    assert set(found) == {"cn_Refunded", "cn_Credited"}
    assert (found["cn_Refunded"]["reason"], found["cn_Refunded"]["severity"]) == ("large_credit_note", "critical")
    assert (found["cn_Credited"]["reason"], found["cn_Credited"]["severity"]) == ("large_balance_credit", "info")


@pytest.mark.parametrize(
    ("currency", "small", "large"),
    # Amounts in minor units: JPY and KRW have none, HUF, IDR and INR two (Stripe charges HUF in fillér), KWD three.
    [("jpy", 600, 80_000), ("krw", 100_000, 800_000), ("huf", 2_000_000, 20_000_000), ("idr", 1_000_000, 900_000_000),
     ("inr", 60_000, 5_000_000), ("usd", 10_000, 60_000), ("kwd", 100_000, 200_000)],
)
async def test_reversal_thresholds_are_per_currency_in_major_units(drv, currency, small, large):
    ch = samples.charge(amount=large, currency=currency, livemode=True)
    await drv.send("refund.created", refund(ch, f"re_small_{currency}", small))
    await drv.settled()
    assert await drv.anomalies("negative_invoice") == []
    await drv.send("refund.created", refund(ch, f"re_large_{currency}", large))
    await drv.settled()
    (found,) = await drv.anomalies("negative_invoice")
    assert found["currency"] == currency and found["severity"] == "critical"


async def test_a_currency_threshold_can_be_overridden_and_the_others_stay(tmp_path):
    config = make_config(tmp_path / "s.sqlite3",
                         detectors={"negative_invoice": {"reversal_threshold_by_currency": {"jpy": 500}}})
    async with running_exporter(config) as ex:
        drv = Driver(ex)
        jpy = samples.charge(amount=5000, currency="jpy", livemode=True)
        await drv.send("refund.created", refund(jpy, "re_jpy600", 600))
        huf = samples.charge(amount=50_000, currency="huf", livemode=True)  # 500 HUF: far below the HUF default
        await drv.send("refund.created", refund(huf, "re_huf500", 50_000))
        await drv.settled()
        (found,) = await drv.anomalies("negative_invoice")
        assert found["currency"] == "jpy"


async def test_second_partial_refund_of_the_same_amount_is_a_second_refund(drv):
    ch = samples.charge(amount=200_000, customer="cus_TwoPartials", livemode=True, charge_id="ch_TwoPartials")
    for i, refund_id in enumerate(("re_Part0001", "re_Part0002"), start=1):
        await drv.send("refund.created", refund(ch, refund_id, 70_000))
        # The same refund seen again through charge.refunded (no refund list since 2022-11-15): not a third.
        await drv.send("charge.refunded", {**ch, "amount_refunded": 70_000 * i},
                       previous_attributes={"amount_refunded": 70_000 * (i - 1)})
    await drv.settled()
    found = await drv.anomalies("negative_invoice")
    assert sorted(a["details"]["refund"] or "" for a in found) == ["re_Part0001", "re_Part0002"]
    assert drv.value("stripe_refunds_total", currency="usd", livemode="true") == 2
    assert drv.value("stripe_refund_amount_total", currency="usd", livemode="true") == 1400.0


# -- refunds -----------------------------------------------------------------------------------------------------


async def test_failed_refund_then_retry_counts_as_what_happened(drv):
    ch = samples.charge(amount=10_000, livemode=True, charge_id="ch_RetryRefund")
    first = refund(ch, "re_WillFail", 5000, status="pending")
    await drv.send("refund.created", first)
    await drv.send("charge.refunded", {**ch, "amount_refunded": 5000})
    await drv.send("refund.failed", {**first, "status": "failed"})
    failed = await drv.send("refund.updated", {**first, "status": "failed"})
    await drv.send("charge.updated", {**ch, "amount_refunded": 0}, previous_attributes={"amount_refunded": 5000})
    await drv.send("refund.created", refund(ch, "re_Retry", 5000))
    await drv.send("charge.refunded", {**ch, "amount_refunded": 5000})
    await drv.resend(failed)
    await drv.settled()
    assert drv.value("stripe_refunds_total", currency="usd", livemode="true") == 2
    assert drv.value("stripe_refund_amount_total", currency="usd", livemode="true") == 100.0
    assert drv.value("stripe_refund_failures_total", currency="usd", livemode="true") == 1
    assert drv.value("stripe_refund_failure_amount_total", currency="usd", livemode="true") == 50.0


async def test_amount_refunded_falling_and_rising_again_without_refund_events(drv):
    ch = samples.charge(amount=10_000, livemode=True, charge_id="ch_TotalsOnly")
    await drv.send("charge.refunded", {**ch, "amount_refunded": 3000}, previous_attributes={"amount_refunded": 0})
    await drv.send("charge.updated", {**ch, "amount_refunded": 0}, previous_attributes={"amount_refunded": 3000})
    await drv.send("charge.refunded", {**ch, "amount_refunded": 3000}, previous_attributes={"amount_refunded": 0})
    # An old snapshot delivered late is no failure.
    await drv.send("charge.refunded", {**ch, "amount_refunded": 1000})
    await drv.settled()
    assert drv.value("stripe_refund_amount_total", currency="usd", livemode="true") == 60.0
    assert drv.value("stripe_refund_failure_amount_total", currency="usd", livemode="true") == 30.0


async def test_refund_that_fails_before_it_was_counted_is_no_money_out(drv):
    ch = samples.charge(amount=10_000, livemode=True)
    await drv.send("refund.failed", refund(ch, "re_NeverOut", 4000, status="failed"))
    await drv.settled()
    assert drv.value("stripe_refund_amount_total", currency="usd", livemode="true") is None
    assert drv.value("stripe_refund_failure_amount_total", currency="usd", livemode="true") is None


# -- disputes ----------------------------------------------------------------------------------------------------


async def test_inquiries_are_counted_apart_and_an_escalation_counts_once(drv):
    inquiry = dispute("ch_Inq1", "warning_needs_response", reason="product_not_received", dispute_id="dp_Inq1")
    await drv.send("charge.dispute.created", inquiry)
    await drv.send("charge.dispute.updated", {**inquiry, "status": "warning_under_review"},
                   previous_attributes={"status": "warning_needs_response"})
    await drv.settled()
    assert drv.value("stripe_dispute_inquiries_total", reason="product_not_received", livemode="true") == 1
    assert drv.value("stripe_disputes_total", reason="product_not_received", livemode="true") is None
    # The bank escalates it: the same dispute becomes a chargeback.
    escalated = {**inquiry, "status": "needs_response"}
    await drv.send("charge.dispute.updated", escalated, previous_attributes={"status": "warning_under_review"})
    await drv.send("charge.dispute.updated", {**escalated, "status": "under_review"},
                   previous_attributes={"status": "needs_response"})
    await drv.settled()
    assert drv.value("stripe_disputes_total", reason="product_not_received", livemode="true") == 1
    assert drv.value("stripe_dispute_amount_total", currency="usd", livemode="true") == 80.0
    assert drv.value("stripe_dispute_inquiries_total", reason="product_not_received", livemode="true") == 1


async def test_money_lost_to_disputes(drv):
    lost = dispute("ch_Lost1", "needs_response", amount=8000, dispute_id="dp_Lost1")
    won = dispute("ch_Won1", "needs_response", amount=3000, dispute_id="dp_Won1")
    for d in (lost, won):
        await drv.send("charge.dispute.created", d)
        await drv.send("charge.dispute.funds_withdrawn", d)
    await drv.send("charge.dispute.closed", {**lost, "status": "lost"})
    await drv.send("charge.dispute.closed", {**won, "status": "won"})
    await drv.send("charge.dispute.funds_reinstated", {**won, "status": "won"})
    # Stripe's "resend" of the same outcome under a new event id counts nothing again.
    await drv.send("charge.dispute.closed", {**lost, "status": "lost"})
    # A closed inquiry is no chargeback outcome.
    await drv.send("charge.dispute.closed", dispute("ch_Inq2", "warning_closed", dispute_id="dp_Inq2"))
    await drv.settled()
    assert drv.value("stripe_disputes_total", reason="fraudulent", livemode="true") == 2
    assert drv.value("stripe_disputes_closed_total", status="lost", livemode="true") == 1
    assert drv.value("stripe_disputes_closed_total", status="won", livemode="true") == 1
    assert drv.value("stripe_dispute_lost_amount_total", currency="usd", livemode="true") == 80.0
    assert drv.value("stripe_dispute_funds_withdrawn_amount_total", currency="usd", livemode="true") == 110.0
    assert drv.value("stripe_dispute_funds_reinstated_amount_total", currency="usd", livemode="true") == 30.0


async def test_early_fraud_warning_names_its_charge_and_customer(drv):
    ch = samples.charge(amount=12_900, customer="cus_Stolen1", livemode=True)
    await drv.send("charge.succeeded", ch)
    await drv.send("radar.early_fraud_warning.created",
                   samples.early_fraud_warning(charge_id=ch["id"], fraud_type="made_with_stolen_card", livemode=True))
    await drv.send("radar.early_fraud_warning.created",
                   samples.early_fraud_warning(charge_id="ch_NeverSeen", livemode=True))
    await drv.settled()
    newest, oldest = await drv.anomalies("early_fraud_warning")
    assert oldest["details"]["charge"] == ch["id"] and oldest["customer"] == "cus_Stolen1"
    assert oldest["amount"] == 129.0 and oldest["currency"] == "usd"
    assert (oldest["severity"], oldest["reason"], oldest["livemode"]) == ("info", "made_with_stolen_card", "true")
    assert newest["details"]["charge"] == "ch_NeverSeen" and newest["customer"] == ""
    # A record, not an alert: no anomaly series (the warning rate is what the rules alert on).
    assert 'detector="early_fraud_warning"' not in "".join(
        line for line in (await drv.metrics_text()).splitlines() if line.startswith("billingwatch_anomaly{"))
    assert drv.value("stripe_early_fraud_warnings_total", fraud_type="made_with_stolen_card", livemode="true") == 2
