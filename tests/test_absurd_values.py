"""Validly signed events with values no real Stripe object has: the event is counted, the value is left out of the
metrics and counted in billingwatch_values_rejected_total{field}; later sane events are counted exactly."""

from __future__ import annotations

import time

import pytest

from exporter import samples
from exporter.bounds import MAX_AMOUNT_MINOR_UNITS
from tests.conftest import make_event
from tests.ingest_support import make_config, running_exporter

INT64_MAX = 2**63 - 1


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "state.sqlite3")


def _rejected(ex, field: str) -> float:
    return ex.value("billingwatch_values_rejected_total", {"field": field})


async def test_absurd_amounts_are_rejected_and_the_charge_still_counted(config):
    async with running_exporter(config) as ex:
        for field in ("amount", "created", "delivery_delay"):
            assert _rejected(ex, field) == 0  # exists before the first rejection
        for amount in (INT64_MAX, MAX_AMOUNT_MINOR_UNITS + 1):
            charge = samples.charge(amount=amount, currency="usd")
            assert await ex.post_event(make_event("charge.succeeded", charge)) == 200
        assert await ex.post_event(make_event("charge.succeeded", samples.charge(amount=1999, currency="usd"))) == 200
        # The largest amount Stripe documents is still counted.
        top = samples.charge(amount=MAX_AMOUNT_MINOR_UNITS, currency="usd")
        assert await ex.post_event(make_event("charge.succeeded", top)) == 200
        assert ex.value("stripe_charges_total", {"currency": "usd"}) == 4
        assert ex.value("stripe_charge_amount_total", {"currency": "usd"}) == pytest.approx(19.99 + 999_999.99)
        assert _rejected(ex, "amount") == 2


async def test_an_absurd_running_refund_total_is_never_stored(config):
    async with running_exporter(config) as ex:
        charge = samples.charge(amount=5000, currency="eur")
        poisoned = {**charge, "amount_refunded": INT64_MAX, "refunded": True}
        assert await ex.post_event(make_event("charge.refunded", poisoned)) == 200
        real = {**charge, "amount_refunded": 1500, "refunded": True}
        assert await ex.post_event(make_event("charge.refunded", real)) == 200
        assert ex.value("stripe_refund_amount_total", {"currency": "eur"}) == 15.0
        assert ex.value("stripe_refunds_total", {"currency": "eur"}) == 1
        assert _rejected(ex, "amount") == 1


@pytest.mark.parametrize("created", [10**18, -(10**18), 1e18, 0, 1_000_000_000])
async def test_absurd_created_pins_neither_the_gauge_nor_the_delay_histogram(config, created):
    now = int(time.time())
    async with running_exporter(config) as ex:
        assert await ex.post_event(make_event("charge.succeeded", samples.charge(), created=now - 2)) == 200
        assert await ex.post_event(make_event("charge.succeeded", samples.charge(), created=created)) == 200
        assert await ex.post_event(make_event("charge.succeeded", samples.charge(), created=now - 1)) == 200
        assert ex.value("stripe_events_total", {"type": "charge.succeeded"}) == 3
        assert ex.value("stripe_last_event_created_timestamp_seconds") == now - 1
        assert ex.value("stripe_event_delivery_delay_seconds_count") == 2
        assert ex.value("stripe_event_delivery_delay_seconds_sum") < 60
        assert _rejected(ex, "created") == 1


async def test_a_delay_beyond_any_redelivery_is_not_observed(config):
    async with running_exporter(config) as ex:
        old = make_event("invoice.paid", samples.invoice(), created=int(time.time()) - 40 * 86400)
        assert await ex.post_event(old) == 200
        assert ex.value("stripe_invoices_paid_total", {"currency": "usd"}) == 1
        assert ex.value("stripe_event_delivery_delay_seconds_count") == 0
        assert _rejected(ex, "delivery_delay") == 1
