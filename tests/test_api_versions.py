"""Payloads of every API version BillingWatch supports, old and new shape side by side, through the running
exporter's webhook listener: how a payment reaches its invoice (charge.invoice before basil, invoice payments and
`invoice_payment.paid` since), where an invoice names its subscription, and subscription discounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter import samples
from tests.detectors_support import T0, Clock
from tests.ingest_support import Exporter, make_config, running_exporter

DAY = 86400
GRACE = 3 * DAY
SUB = "sub_1QApiVersions1"
CUSTOMER = "cus_ApiVersions01"
RENEWAL = T0 + 30 * DAY
OPEN_INVOICE = "in_1QApiRenewal001"


def ev(event_type: str, obj: dict[str, Any], created: int, api_version: str, **kw: Any) -> dict[str, Any]:
    return samples.event(event_type, obj, created=created, api_version=api_version, **kw)


def version(shape: str) -> str:
    return {"pre_basil": "2024-06-20", "basil": "2025-03-31.basil", "clover": "2025-11-17.clover"}[shape]


def invoice_payment(amount: int, paid_at: int, n: int = 1) -> dict[str, Any]:
    """An InvoicePayment (basil+): the link between a payment and its invoice."""
    return {
        "id": f"inpay_1QApi{n:04d}",
        "object": "invoice_payment",
        "amount_paid": amount,
        "amount_requested": amount,
        "created": paid_at,
        "currency": "usd",
        "invoice": OPEN_INVOICE,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": f"pi_1QApi{n:04d}"},
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": paid_at},
    }


async def renewal_left_open(exp: Exporter, shape: str) -> None:
    basil = shape != "pre_basil"
    api = version(shape)
    sub = samples.subscription(subscription_id=SUB, customer=CUSTOMER, created=T0, current_period_start=T0,
                               basil=basil)  # fmt: skip
    first = samples.invoice(customer=CUSTOMER, subscription=SUB, billing_reason="subscription_create", created=T0,
                            basil=basil)  # fmt: skip
    renewed = samples.subscription(subscription_id=SUB, customer=CUSTOMER, created=T0, current_period_start=RENEWAL,
                                   basil=basil)  # fmt: skip
    open_inv = samples.invoice(customer=CUSTOMER, subscription=SUB, status="open", created=RENEWAL,
                               invoice_id=OPEN_INVOICE, basil=basil)  # fmt: skip
    for event in (
        ev("customer.subscription.created", sub, T0, api),
        ev("invoice.paid", first, T0 + 5, api),
        ev("customer.subscription.updated", renewed, RENEWAL, api),
        ev("invoice.finalized", open_inv, RENEWAL + 60, api),
    ):
        assert await exp.post_event(event) == 200


def lapsed(exp: Exporter, now: float) -> float | None:
    exp.service.ingestor.tick(now)
    return exp.value("stripe_subscriptions_lapsed", {"livemode": "false"})


@pytest.fixture
def config(tmp_path: Path) -> Any:
    return make_config(tmp_path / "state.sqlite3")


@pytest.mark.parametrize("shape", ["pre_basil", "basil"])
async def test_a_renewal_paid_only_through_its_payment_is_not_a_lapse(config: Any, shape: str) -> None:
    clock = Clock(RENEWAL + 120)
    async with running_exporter(config, clock=clock) as exp:
        await renewal_left_open(exp, shape)
        if shape == "pre_basil":
            # Before basil a charge named its invoice.
            charge = samples.charge(amount=2000, customer=CUSTOMER, created=RENEWAL + 3600)
            charge["invoice"] = OPEN_INVOICE
            payment = ev("charge.succeeded", charge, RENEWAL + 3600, version(shape))
        else:
            # Since basil charges and payment intents have no `invoice`: the invoice payment links them.
            payment = ev("invoice_payment.paid", invoice_payment(2000, RENEWAL + 3600), RENEWAL + 3600, version(shape))
        assert await exp.post_event(payment) == 200
        assert lapsed(exp, RENEWAL + GRACE + 7200) == 0
        assert exp.value("billingwatch_anomalies_total", {"detector": "silent_lapse"}) == 0


@pytest.mark.parametrize("shape", ["pre_basil", "basil"])
async def test_an_unpaid_renewal_is_a_lapse_in_every_shape(config: Any, shape: str) -> None:
    async with running_exporter(config, clock=Clock(RENEWAL + 120)) as exp:
        await renewal_left_open(exp, shape)
        assert lapsed(exp, RENEWAL + GRACE + 7200) == 1
        (found,) = exp.service.detector_set.board.recent(None, "silent_lapse")
        assert (found["reason"], found["invoice"], found["subscription"]) == ("unpaid_renewal", OPEN_INVOICE, SUB)


async def test_partial_invoice_payments_settle_the_renewal_once_nothing_remains(config: Any) -> None:
    async with running_exporter(config, clock=Clock(RENEWAL + 120)) as exp:
        await renewal_left_open(exp, "basil")
        half = ev("invoice_payment.paid", invoice_payment(1000, RENEWAL + 3600, 1), RENEWAL + 3600, version("basil"))
        assert await exp.post_event(half) == 200
        assert lapsed(exp, RENEWAL + GRACE + 7200) == 1  # half of it is still open
        rest = ev("invoice_payment.paid", invoice_payment(1000, RENEWAL + GRACE + 8000, 2), RENEWAL + GRACE + 8000,
                  version("basil"))  # fmt: skip
        assert await exp.post_event(rest) == 200
        assert lapsed(exp, RENEWAL + GRACE + 9000) == 0


@pytest.mark.parametrize("shape", ["pre_basil", "basil", "clover"])
async def test_invoice_names_its_subscription_in_every_shape(config: Any, shape: str) -> None:
    async with running_exporter(config, clock=Clock(RENEWAL + 120)) as exp:
        await renewal_left_open(exp, shape if shape != "clover" else "basil")
        paid = samples.invoice(customer=CUSTOMER, subscription=SUB, status="paid", created=RENEWAL + 3600,
                               invoice_id=OPEN_INVOICE, basil=shape != "pre_basil")  # fmt: skip
        assert await exp.post_event(ev("invoice.paid", paid, RENEWAL + 3600, version(shape))) == 200
        rec = exp.service.detector_set.by_name["silent_lapse"].record(SUB)
        assert rec.open_invoice is None and rec.last_payment == RENEWAL + 3600
