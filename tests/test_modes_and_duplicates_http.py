"""Test vs live mode and duplicate_charge semantics, through the running exporter's webhook listener."""

from __future__ import annotations

import secrets
import time

import pytest

from exporter import samples
from exporter.detectors.board import SERIES_NS
from exporter.state import StateStore
from tests.ingest_support import make_config, running_exporter
from tests.stripe_http_support import Driver

# Stripe's shared test card (4242...): every tester's charges carry the same fingerprint.
TEST_CARD = "Xt5EWLLDS7FJjR1c"


def charge(**kw):
    kw.setdefault("created", int(time.time()))
    # A card of its own unless a test says otherwise (exporter.samples gives every charge the same fingerprint).
    kw.setdefault("fingerprint", secrets.token_hex(8))
    return samples.charge(**kw)


@pytest.fixture
async def drv(tmp_path):
    async with running_exporter(make_config(tmp_path / "s.sqlite3")) as ex:
        yield Driver(ex)


# -- modes -------------------------------------------------------------------------------------------------------


async def test_test_mode_money_never_moves_live_metrics(drv):
    await drv.send("charge.succeeded", charge(amount=999_999, customer="cus_TestA", livemode=False))
    await drv.send("charge.succeeded", charge(amount=4900, customer="cus_LiveA", livemode=True))
    await drv.send("invoice.paid", samples.invoice(total=2000, livemode=False))
    await drv.settled()
    assert drv.value("stripe_charge_amount_total", currency="usd", livemode="true") == 49.0
    assert drv.value("stripe_charge_amount_total", currency="usd", livemode="false") == pytest.approx(9999.99)
    assert drv.value("stripe_charges_total", currency="usd", livemode="true") == 1
    assert drv.value("stripe_invoices_paid_total", currency="usd", livemode="true") is None
    assert drv.value("stripe_invoices_paid_total", currency="usd", livemode="false") == 1
    # No business series without the label: every query can tell the modes apart.
    text = await drv.metrics_text()
    assert 'stripe_charge_amount_total{currency="usd"}' not in text


async def test_guest_charges_on_the_shared_test_card_page_nobody(drv):
    for _ in range(2):
        await drv.send("charge.succeeded", charge(customer=None, fingerprint=TEST_CARD, amount=2500, livemode=False))
    await drv.settled()
    assert await drv.anomalies("duplicate_charge") == []
    assert drv.value("billingwatch_anomalies_total", detector="duplicate_charge") == 0


async def test_stripe_listen_users_still_see_the_detector_work_in_test_mode(drv):
    # Test mode knows a payer by customer id: a test customer charged twice is found, labelled test mode.
    for _ in range(2):
        await drv.send("charge.succeeded", charge(customer="cus_Listen1", amount=2500, livemode=False))
    await drv.settled()
    (found,) = await drv.anomalies("duplicate_charge")
    assert found["livemode"] == "false" and found["customer"] == "cus_Listen1"
    labels = {"detector": "duplicate_charge", "severity": "critical", "reason": "same_amount",
              "customer": "cus_Listen1", "subscription": "", "invoice": "", "currency": "usd", "livemode": "false"}
    assert drv.ex.value("billingwatch_anomaly", labels) == 1


async def test_a_test_charge_never_pairs_with_a_live_one(drv):
    await drv.send("charge.succeeded", charge(customer="cus_Both1", amount=2500, livemode=False))
    await drv.send("charge.succeeded", charge(customer="cus_Both1", amount=2500, livemode=True))
    await drv.settled()
    assert await drv.anomalies("duplicate_charge") == []


async def test_live_duplicate_is_labelled_live(drv):
    for _ in range(2):
        await drv.send("charge.succeeded", charge(customer="cus_Live2", amount=2500, livemode=True))
    await drv.settled()
    (found,) = await drv.anomalies("duplicate_charge")
    assert found["livemode"] == "true"
    assert 'livemode="true"' in (await drv.metrics_text()).split("billingwatch_anomaly{", 1)[1].split("\n")[0]


async def test_anomaly_series_of_an_older_state_file_come_back_with_an_unknown_mode(tmp_path):
    path = tmp_path / "s.sqlite3"
    state = StateStore(path)
    old = ["duplicate_charge", "critical", "same_amount", "cus_Old1", "", "", "usd"]  # 7 labels: no livemode
    state.put(SERIES_NS, "\x1f".join(old), {"labels": old, "expires_at": time.time() + 600, "amount": 25.0})
    state.close()
    async with running_exporter(make_config(path)) as ex:
        labels = dict(zip(("detector", "severity", "reason", "customer", "subscription", "invoice", "currency",
                           "livemode"), [*old, ""], strict=True))
        assert ex.value("billingwatch_anomaly", labels) == 1
        assert ex.value("billingwatch_anomaly_amount", labels) == 25.0


# -- duplicate_charge --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["pre_basil", "basil"])
async def test_two_invoices_of_one_price_are_two_purchases(drv, shape):
    # Two subscriptions of one customer renew together: same price, two invoices, two charges.
    for i in range(2):
        ch = charge(customer="cus_TwoSubs", amount=2900, livemode=True)
        invoice_id = f"in_renewal_{shape}_{i}"
        if shape == "pre_basil":
            ch["invoice"] = invoice_id
        else:
            # Basil charges name no invoice; Stripe links the payment to its invoice with invoice_payment.paid.
            await drv.send("invoice_payment.paid", {
                "id": f"inpay_{shape}_{i}", "object": "invoice_payment", "invoice": invoice_id, "is_default": True,
                "amount_paid": 2900, "currency": "usd", "status": "paid", "livemode": True,
                "payment": {"type": "payment_intent", "payment_intent": ch["payment_intent"]}}, livemode=True)
        await drv.send("charge.succeeded", ch)
    await drv.settled()
    assert await drv.anomalies("duplicate_charge") == []


async def test_one_invoice_paid_twice_is_a_duplicate(drv):
    for _ in range(2):
        ch = charge(customer="cus_OneInvoice", amount=2900, livemode=True)
        ch["invoice"] = "in_paid_twice"
        await drv.send("charge.succeeded", ch)
    await drv.settled()
    assert len(await drv.anomalies("duplicate_charge")) == 1


async def test_uncaptured_authorisations_are_no_duplicate_until_captured(drv):
    now = int(time.time())
    auths = []
    for _ in range(2):
        auth = charge(customer="cus_Auth1", amount=15000, livemode=True, created=now - 3600)
        auth["captured"] = False
        auth["amount_captured"] = 0
        auths.append(auth)
        await drv.send("charge.succeeded", auth)
    await drv.settled()
    assert await drv.anomalies("duplicate_charge") == []
    # Both captured within a minute: now the same money was taken twice.
    for auth in auths:
        await drv.send("charge.captured", {**auth, "captured": True, "amount_captured": 15000}, created=now)
    await drv.settled()
    (found,) = await drv.anomalies("duplicate_charge")
    assert sorted(found["details"]["charge_ids"]) == sorted(a["id"] for a in auths)


async def test_one_card_under_two_new_customers_is_one_payer(drv):
    # Two Checkout sessions, each creating a customer, paid with one card within a minute.
    card = "Lv9RealCard00001"
    first = charge(customer="cus_Checkout1", fingerprint=card, amount=7900, livemode=True)
    second = charge(customer="cus_Checkout2", fingerprint=card, amount=7900, livemode=True,
                    created=first["created"] + 40)
    await drv.send("charge.succeeded", first)
    await drv.send("charge.succeeded", second)
    await drv.settled()
    (found,) = await drv.anomalies("duplicate_charge")
    assert found["details"]["matched_on"] == "card"
    assert found["customer"] == "cus_Checkout2" and found["severity"] == "critical"
    assert card not in repr(found)
    # Two customers of their own, each with their own card, are not one payer.
    await drv.send("charge.succeeded", charge(customer="cus_Own1", fingerprint="Own1Card", amount=7900,
                                              livemode=True))
    await drv.send("charge.succeeded", charge(customer="cus_Own2", fingerprint="Own2Card", amount=7900,
                                              livemode=True))
    await drv.settled()
    assert len(await drv.anomalies("duplicate_charge")) == 1


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_automatic_renewals_wait_for_their_invoices_before_a_page(tmp_path):
    # Basil: two subscriptions renew together; each charge names no invoice and Stripe links it to its invoice in
    # invoice_payment.paid, which may come after the other renewal's charge.
    clock = Clock()
    config = make_config(tmp_path / "s.sqlite3", state={"flush_interval_seconds": 0.05})
    async with running_exporter(config, clock=clock) as ex:
        drv = Driver(ex)

        def ticks() -> float:
            return drv.value("billingwatch_state_flush_seconds_count") or 0

        async def advance(seconds: float) -> None:
            clock.now += seconds
            seen = ticks()
            await drv.until(lambda: ticks() >= seen + 2)  # a whole tick ran on the new time

        renewals = [charge(customer="cus_Renew2", amount=2900, livemode=True) for _ in range(2)]
        for ch in renewals:
            await drv.send("charge.succeeded", ch, automatic=True)
        await drv.settled()
        assert await drv.anomalies("duplicate_charge") == []  # held: the invoices may still come
        for i, ch in enumerate(renewals):
            await drv.send("invoice_payment.paid", {
                "id": f"inpay_Renew{i}", "object": "invoice_payment", "invoice": f"in_Renew{i}", "status": "paid",
                "livemode": True, "payment": {"type": "payment_intent", "payment_intent": ch["payment_intent"]}},
                automatic=True)
        await drv.settled()
        await advance(31)
        assert await drv.anomalies("duplicate_charge") == []

        # Automatic charges whose invoices never show up are reported once the wait is over.
        unknown = [charge(customer="cus_Renew3", amount=2900, livemode=True) for _ in range(2)]
        for ch in unknown:
            await drv.send("charge.succeeded", ch, automatic=True)
        await drv.settled()
        assert await drv.anomalies("duplicate_charge") == []
        await advance(31)
        (found,) = await drv.anomalies("duplicate_charge")
        assert found["customer"] == "cus_Renew3"
