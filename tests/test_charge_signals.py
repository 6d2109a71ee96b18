"""exporter/charge_signals.py: the all-currency attempts by payer, failing payers (retries folded), and invoice
payment attempts split by session and retry, both API shapes, read through the exporter's own registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import samples
from exporter.accounting import Accounting
from exporter.metrics import Metrics
from exporter.state import StateStore

T0 = 1_780_000_000


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Accounting, Metrics]:
    metrics = Metrics()
    return Accounting(metrics, StateStore(tmp_path / "state.sqlite3")), metrics


def apply(acc: Accounting, event_type: str, obj: dict) -> None:
    """As ingest does: the object with its event (whose livemode the accounting's own counters read)."""
    acc.apply(event_type, obj, samples.event(event_type, obj))


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def failed(customer: str | None, at: int, *, fingerprint: str = "fpA", livemode: bool = True) -> dict:
    return samples.charge(
        customer=customer, status="failed", failure_code="card_declined", created=at, fingerprint=fingerprint,
        livemode=livemode,
    )  # fmt: skip


def test_attempts_by_payer_outcome_and_livemode(setup) -> None:
    acc, m = setup
    apply(acc, "charge.succeeded", samples.charge(customer="cus_A", livemode=True))
    apply(acc, "charge.succeeded", samples.charge(customer=None, livemode=True))
    apply(acc, "charge.failed", failed(None, T0))
    apply(acc, "charge.succeeded", samples.charge(customer="cus_T", livemode=False))
    name = "stripe_charge_attempts_total"
    assert value(m, name, livemode="true", payer="customer", outcome="succeeded") == 1
    assert value(m, name, livemode="true", payer="guest", outcome="succeeded") == 1
    assert value(m, name, livemode="true", payer="guest", outcome="failed") == 1
    assert value(m, name, livemode="false", payer="customer", outcome="succeeded") == 1


def test_a_payer_retrying_within_an_hour_is_one_failing_payer(setup) -> None:
    acc, m = setup
    for i in range(5):  # one customer retrying a declined card
        apply(acc, "charge.failed", failed("cus_A", T0 + 30 * i))
    apply(acc, "charge.failed", failed("cus_B", T0 + 60))
    apply(acc, "charge.failed", failed(None, T0 + 70, fingerprint="fpG"))  # a guest, known by its card
    apply(acc, "charge.failed", failed(None, T0 + 80, fingerprint="fpG"))
    apply(acc, "charge.failed", failed("cus_A", T0 + 7200))  # the next episode, two hours later
    assert value(m, "stripe_charge_failed_payers_total", currency="usd", livemode="true") == 4
    assert value(m, "stripe_charges_failed_total", currency="usd", failure_code="card_declined", livemode="true") == 9


def test_processing_failures_count_their_payers_apart_from_card_declines(setup) -> None:
    acc, m = setup
    name = "stripe_charge_processing_failed_payers_total"
    apply(acc, "charge.failed", failed("cus_A", T0))  # a card decline: not a processing failure
    down = samples.charge(customer="cus_A", status="failed", failure_code="processing_error", created=T0 + 60,
                          livemode=True)  # fmt: skip
    apply(acc, "charge.failed", down)  # the same payer, now failing for the processor: counted once here
    apply(acc, "charge.failed", {**down, "id": "ch_retry", "created": T0 + 120})  # its retry: not again
    issuer = samples.charge(customer="cus_B", status="failed", failure_code="card_declined", created=T0 + 90,
                            livemode=True)  # fmt: skip
    issuer["outcome"]["reason"] = "issuer_not_available"  # a decline code saying the issuer could not be reached
    apply(acc, "charge.failed", issuer)
    test = samples.charge(customer="cus_T", status="failed", failure_code="processing_error", created=T0,
                          livemode=False)  # fmt: skip
    apply(acc, "charge.failed", test)
    assert value(m, name, livemode="true") == 2
    assert value(m, name, livemode="false") == 1
    assert value(m, "stripe_charge_failed_payers_total", currency="usd", livemode="true") == 2  # unchanged


def test_invoice_attempts_by_session_and_retry_in_both_api_shapes(setup) -> None:
    acc, m = setup
    renewal = samples.invoice(billing_reason="subscription_cycle", status="open", basil=True, livemode=True)
    apply(acc, "invoice.payment_failed", renewal)
    retry = {**renewal, "attempt_count": 3}
    apply(acc, "invoice.payment_failed", retry)
    pre_basil = samples.invoice(billing_reason="subscription_cycle", basil=False, livemode=True)
    paid_retry = {**pre_basil, "attempt_count": 2}
    apply(acc, "invoice.payment_succeeded", paid_retry)
    signup = samples.invoice(billing_reason="subscription_create", livemode=True)
    apply(acc, "invoice.payment_succeeded", signup)
    manual = samples.invoice(billing_reason="manual", status="open", livemode=True)
    hosted = {**manual, "collection_method": "send_invoice"}
    apply(acc, "invoice.payment_failed", hosted)
    trial = samples.invoice(total=0, billing_reason="subscription_create", livemode=True)  # nothing charged
    apply(acc, "invoice.payment_succeeded", trial)
    name = "stripe_invoice_payment_attempts_total"
    assert value(m, name, livemode="true", session="off", retry="false", outcome="failed") == 1
    assert value(m, name, livemode="true", session="off", retry="true", outcome="failed") == 1
    assert value(m, name, livemode="true", session="off", retry="true", outcome="succeeded") == 1
    assert value(m, name, livemode="true", session="on", retry="false", outcome="succeeded") == 1
    assert value(m, name, livemode="true", session="on", retry="false", outcome="failed") == 1


@pytest.mark.parametrize(
    "obj",
    [
        {"customer": 5, "created": "soon", "livemode": "yes", "currency": ["usd"]},
        {},
        {"attempt_count": "two", "billing_reason": {"x": 1}, "collection_method": None, "amount_paid": "10"},
    ],
)
def test_odd_field_types_are_counted_without_raising(setup, obj: dict) -> None:
    acc, m = setup
    for event_type in ("charge.failed", "charge.succeeded", "invoice.payment_failed", "invoice.payment_succeeded"):
        apply(acc, event_type, obj)
    assert value(m, "stripe_charge_attempts_total", livemode="", payer="guest", outcome="failed") == 1
    assert value(m, "stripe_invoice_payment_attempts_total", livemode="", session="off", retry="false",
                 outcome="failed") == 1  # fmt: skip
