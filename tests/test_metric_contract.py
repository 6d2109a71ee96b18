"""The metric contract: every name and label from the issue, values in major units, both API shapes, modes."""

from __future__ import annotations

import time

import pytest

from exporter import samples
from exporter.ingest import Ingestor
from exporter.metrics import Metrics
from exporter.money import to_major
from exporter.state import StateStore
from tests.conftest import make_event, stripe_fixture
from tests.ingest_support import make_config, running_exporter, sample_value


@pytest.fixture
def ingest():
    metrics = Metrics()
    state = StateStore(":memory:")
    ingestor = Ingestor(metrics, state)
    yield ingestor
    state.close()


def value(ingestor: Ingestor, name: str, **labels: str) -> float | None:
    return sample_value(ingestor.metrics.registry, name, labels)


@pytest.mark.parametrize(
    ("currency", "amount", "major"),
    [("usd", 1999, 19.99), ("eur", 5, 0.05), ("jpy", 1999, 1999.0), ("krw", 50000, 50000.0),
     ("kwd", 1999, 1.999), ("bhd", 10, 0.01), ("USD", 250, 2.5)],
)
def test_charge_amounts_in_major_units_for_every_currency_class(ingest, currency, amount, major):
    ingest.ingest(make_event("charge.succeeded", samples.charge(amount=amount, currency=currency)), time.time())
    code = currency.lower()
    assert value(ingest, "stripe_charges_total", currency=code) == 1
    assert value(ingest, "stripe_charge_amount_total", currency=code) == pytest.approx(major)
    assert to_major(amount, code) == pytest.approx(major)


def test_failed_charges_by_code_and_ratio_denominator(ingest):
    now = time.time()
    for code in ("card_declined", "card_declined", "expired_card"):
        ingest.ingest(make_event("charge.failed", samples.charge(status="failed", failure_code=code)), now)
    ingest.ingest(make_event("charge.succeeded", samples.charge()), now)
    assert value(ingest, "stripe_charges_total", currency="usd") == 4
    assert value(ingest, "stripe_charges_failed_total", currency="usd", failure_code="card_declined") == 2
    assert value(ingest, "stripe_charges_failed_total", currency="usd", failure_code="expired_card") == 1
    assert value(ingest, "stripe_charge_amount_total", currency="usd") == 20.0


def test_uncaptured_charge_counts_revenue_only_when_captured(ingest):
    now = time.time()
    auth = samples.charge(amount=5000, currency="gbp")
    auth["captured"] = False
    auth["amount_captured"] = 0
    ingest.ingest(make_event("charge.succeeded", auth), now)
    assert value(ingest, "stripe_charges_total", currency="gbp") == 1
    assert value(ingest, "stripe_charge_amount_total", currency="gbp") is None
    captured = {**auth, "captured": True, "amount_captured": 4000}
    ingest.ingest(make_event("charge.captured", captured), now)
    assert value(ingest, "stripe_charges_total", currency="gbp") == 1
    assert value(ingest, "stripe_charge_amount_total", currency="gbp") == 40.0


def test_partial_refunds_count_once_even_out_of_order(ingest):
    now = time.time()
    charge = samples.charge(amount=10000, currency="usd", charge_id="ch_refund_me")
    first = make_event("charge.refunded", {**charge, "amount_refunded": 3000})
    second = make_event("charge.refunded", {**charge, "amount_refunded": 5000})
    ingest.ingest(second, now)  # the later snapshot arrives first
    ingest.ingest(first, now)
    ingest.ingest(second, now)  # redelivery
    assert value(ingest, "stripe_refund_amount_total", currency="usd") == 50.0
    assert value(ingest, "stripe_refunds_total", currency="usd") == 1
    ingest.ingest(make_event("charge.refunded", {**charge, "amount_refunded": 10000}), now)
    assert value(ingest, "stripe_refund_amount_total", currency="usd") == 100.0
    assert value(ingest, "stripe_refunds_total", currency="usd") == 2


def test_disputes_and_early_fraud_warnings(ingest):
    now = time.time()
    ingest.ingest(make_event("charge.dispute.created", samples.dispute(charge_id="ch_1", amount=4200,
                                                                       currency="jpy", reason="fraudulent")), now)
    ingest.ingest(make_event("charge.dispute.updated", samples.dispute(charge_id="ch_1", amount=4200,
                                                                       currency="jpy")), now)
    ingest.ingest(make_event("radar.early_fraud_warning.created",
                             samples.early_fraud_warning(charge_id="ch_2", fraud_type="card_never_received")), now)
    assert value(ingest, "stripe_disputes_total", reason="fraudulent") == 1
    assert value(ingest, "stripe_dispute_amount_total", currency="jpy") == 4200.0
    assert value(ingest, "stripe_early_fraud_warnings_total", fraud_type="card_never_received") == 1


@pytest.mark.parametrize("basil", [True, False])
def test_invoices_in_both_api_shapes(ingest, basil):
    now = time.time()
    paid = samples.invoice(total=4900, currency="eur", basil=basil)
    ingest.ingest(make_event("invoice.paid", paid), now)
    ingest.ingest(make_event("invoice.payment_succeeded", paid), now)  # same invoice, other event: not counted again
    failed = samples.invoice(total=4900, currency="eur", status="open", basil=basil)
    ingest.ingest(make_event("invoice.payment_failed", failed), now)
    assert value(ingest, "stripe_invoices_paid_total", currency="eur") == 1
    assert value(ingest, "stripe_invoice_amount_paid_total", currency="eur") == 49.0
    assert value(ingest, "stripe_invoice_payment_failures_total", currency="eur") == 1


def test_stripe_fixture_shapes_are_read(ingest):
    """Stripe's own example objects (shape only) go through without errors."""
    now = time.time()
    for event_type, name in [("charge.succeeded", "charge"), ("invoice.paid", "invoice"),
                             ("charge.dispute.created", "dispute"), ("customer.subscription.updated", "subscription"),
                             ("radar.early_fraud_warning.created", "radar.early_fraud_warning"),
                             ("credit_note.created", "credit_note"), ("refund.created", "refund")]:
        ingest.ingest(make_event(event_type, stripe_fixture(name)), now)
    assert value(ingest, "billingwatch_event_processing_errors_total", stage="metrics") is None
    assert value(ingest, "stripe_charges_total", currency="usd") == 1
    assert value(ingest, "stripe_invoices_paid_total", currency="usd") == 1


def test_delivery_delay_histogram_and_timestamps(ingest):
    created = 1_800_000_000
    ingest.ingest(make_event("charge.succeeded", samples.charge(), created=created), created + 3)
    ingest.ingest(make_event("charge.succeeded", samples.charge(), created=created - 1200), created + 10)
    ingest.ingest(make_event("charge.succeeded", samples.charge(), created=created + 60), created + 11)  # skew
    assert value(ingest, "stripe_event_delivery_delay_seconds_count") == 3
    assert value(ingest, "stripe_event_delivery_delay_seconds_bucket", le="5.0") == 2
    assert value(ingest, "stripe_event_delivery_delay_seconds_bucket", le="900.0") == 2
    assert value(ingest, "stripe_event_delivery_delay_seconds_bucket", le="1800.0") == 3
    assert value(ingest, "stripe_last_event_timestamp_seconds") == created + 11
    assert value(ingest, "stripe_last_event_created_timestamp_seconds") == created + 60


def test_every_contract_metric_is_exposed():
    metrics = Metrics()
    names = {m.name for m in metrics.registry.collect()}
    for name in ["billingwatch_webhook_requests", "stripe_events", "stripe_event_delivery_delay_seconds",
                 "stripe_last_event_timestamp_seconds", "stripe_charges", "stripe_charges_failed",
                 "stripe_charge_amount", "stripe_refund_amount", "stripe_disputes", "stripe_dispute_amount",
                 "stripe_early_fraud_warnings", "stripe_invoices_paid", "stripe_invoice_amount_paid",
                 "stripe_invoice_payment_failures"]:
        assert name in names
    outcomes = {s.labels["outcome"] for m in metrics.registry.collect() if m.name == "billingwatch_webhook_requests"
                for s in m.samples}
    assert {"accepted", "duplicate", "invalid_signature", "invalid_payload", "too_large"} <= outcomes


@pytest.mark.parametrize(("mode", "counted"), [("any", {True, False}), ("live", {True}), ("test", {False})])
async def test_mode_filter(tmp_path, mode, counted):
    config = make_config(tmp_path / "s.sqlite3", stripe={"mode": mode})
    async with running_exporter(config) as ex:
        for livemode in (True, False):
            event = make_event("charge.succeeded", samples.charge(amount=100, livemode=livemode), livemode=livemode)
            assert await ex.post_event(event) == 200
        for livemode in (True, False):
            expected = 1 if livemode in counted else None
            label = "true" if livemode else "false"
            assert ex.value("stripe_charges_total", {"currency": "usd", "livemode": label}) == expected
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "ignored"}) == 2 - len(counted)
        assert ex.value("stripe_events_by_mode_total", {"livemode": "true"}) == 1
        assert ex.value("stripe_events_by_mode_total", {"livemode": "false"}) == 1


async def test_private_listener_endpoints(tmp_path):
    config = make_config(tmp_path / "s.sqlite3")
    async with running_exporter(config) as ex:
        event = make_event("charge.succeeded", samples.charge(customer="cus_private_x"))
        await ex.post_event(event)
        await ex.post_event(event)
        async with ex.session.get(ex.private + "/api/v1/events/recent?limit=10") as resp:
            data = await resp.json()
        assert [e["outcome"] for e in data["events"]] == ["duplicate", "accepted"]
        assert data["events"][0]["id"] == event["id"]
        assert set(data["events"][0]) == {
                "id", "type", "created", "received", "outcome", "created_iso", "received_iso"
            }
        assert "cus_private_x" not in str(data)
        for bad in ("0", "abc", "100000"):
            async with ex.session.get(ex.private + f"/api/v1/events/recent?limit={bad}") as resp:
                assert resp.status == 400
        async with ex.session.get(ex.private + "/metrics") as resp:
            text = await resp.text()
            assert 'stripe_charges_total{currency="usd",livemode="false"} 1.0' in text
            assert "_created{" not in text and "_created " not in text.replace("_created_timestamp", "")
        for path in ("/", "/healthz", "/readyz"):
            async with ex.session.get(ex.private + path) as resp:
                assert resp.status == 200
        async with ex.session.get(ex.private + "/") as resp:
            assert "/metrics" in await resp.text()


def test_events_fetched_by_the_poller_count_once_but_are_not_webhook_deliveries(ingest):
    created = 1_800_000_000
    event = make_event("charge.succeeded", samples.charge(amount=900), created=created)
    assert ingest.ingest(event, created + 7200, via_webhook=False) == "accepted"
    assert value(ingest, "stripe_charges_total", currency="usd") == 1
    # Two hours late, but not through the webhook: webhook lag and request counts stay untouched.
    assert value(ingest, "stripe_event_delivery_delay_seconds_count") == 0
    assert value(ingest, "billingwatch_webhook_requests_total", outcome="accepted") == 0
    # Stripe's own delivery arriving later is a duplicate: nothing is counted twice.
    assert ingest.ingest(event, created + 7300) == "duplicate"
    assert value(ingest, "stripe_charges_total", currency="usd") == 1
    assert value(ingest, "billingwatch_webhook_requests_total", outcome="duplicate") == 1
