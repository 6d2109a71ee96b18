"""Every bad-input class answers fast with the right status, is counted, and changes no business metric."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from exporter import samples
from tests.conftest import SECRET, make_event, sign
from tests.ingest_support import make_config, running_exporter

BUSINESS = [
    ("stripe_charges_total", {"currency": "usd"}),
    ("stripe_charge_amount_total", {"currency": "usd"}),
    ("stripe_last_event_timestamp_seconds", {}),
]


def _business_snapshot(ex):
    return [ex.value(n, lbl) or 0 for n, lbl in BUSINESS] + [ex.value("stripe_event_delivery_delay_seconds_count")]


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "state.sqlite3")


def _signed(body: bytes) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, SECRET)}


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b"{", b"\xff\xfe\x00garbage", b"[]", b"123", b'"event"', b"{}",
     b'{"id": "evt_1", "type": "charge.succeeded"}',
     b'{"id": "evt_1", "type": "charge.succeeded", "data": {}}',
     b'{"id": "evt_1", "type": "charge.succeeded", "data": {"object": "x"}}',
     b'{"id": 5, "type": "charge.succeeded", "data": {"object": {}}}',
     b'{"id": "evt_1", "type": null, "data": {"object": {}}}',
     b'{"id": "", "type": "charge.succeeded", "data": {"object": {}}}'],
)
async def test_signed_but_not_an_event_is_400_invalid_payload(config, body):
    async with running_exporter(config) as ex:
        before = _business_snapshot(ex)
        status, data = await ex.post_raw(body, _signed(body))
        assert status == 400, data
        outcome = ex.value("billingwatch_webhook_requests_total", {"outcome": "invalid_payload"})
        if body.startswith(b"\xff"):
            # Not UTF-8: the SDK cannot even compute the signature over it.
            outcome = outcome or ex.value("billingwatch_webhook_requests_total", {"outcome": "invalid_signature"})
        assert outcome == 1
        assert _business_snapshot(ex) == before


async def test_body_over_limit_is_413_from_content_length_without_reading(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", server={"max_body_bytes": 2048})
    async with running_exporter(config) as ex:
        body = b"x" * 5000
        status, _ = await ex.post_raw(body, _signed(body))
        assert status == 413
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "too_large"}) == 1


async def test_chunked_body_over_limit_is_413(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", server={"max_body_bytes": 2048})

    async def chunks():
        for _ in range(10):
            yield b"y" * 1000

    async with running_exporter(config) as ex:
        async with ex.session.post(ex.webhook_url, data=chunks(), headers={"Stripe-Signature": "t=1,v1=a"}) as resp:
            assert resp.status == 413
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "too_large"}) == 1


async def test_huge_declared_body_is_refused_fast(tmp_path):
    """A client announcing 1 GB gets 413 before sending it: the server never waits for the body."""
    config = make_config(tmp_path / "s.sqlite3")
    async with running_exporter(config) as ex:
        reader, writer = await asyncio.open_connection("127.0.0.1", ex.service.webhook_port)
        writer.write(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
                     b"Stripe-Signature: t=1,v1=ab\r\n\r\n" + b"z" * 1000)
        await writer.drain()
        start = time.monotonic()
        line = await asyncio.wait_for(reader.readline(), timeout=5)
        assert line.startswith(b"HTTP/1.1 413")
        assert time.monotonic() - start < 2
        writer.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405(config, method):
    async with running_exporter(config) as ex:
        async with ex.session.request(method, ex.webhook_url) as resp:
            assert resp.status == 405


async def test_only_webhook_and_healthz_are_reachable_on_the_public_listener(config):
    async with running_exporter(config) as ex:
        for path in ("/metrics", "/", "/api/v1/events/recent", "/readyz"):
            async with ex.session.get(ex.base + path) as resp:
                assert resp.status == 404, path
        async with ex.session.get(ex.base + "/healthz") as resp:
            assert resp.status == 200


async def test_unexpected_field_types_are_200_and_counted_as_far_as_valid(config):
    odd = samples.charge(amount=2500, currency="usd", customer=None)
    odd["amount"] = "2500"  # amount as string
    odd["amount_captured"] = None
    unknown_currency = samples.charge(amount=700, currency="zzz9", customer="cus_x")
    events = [
        make_event("charge.succeeded", odd),
        make_event("charge.succeeded", unknown_currency),
        make_event("charge.failed", {"currency": 12, "failure_code": {"nested": True}}),
        make_event("invoice.paid", {"currency": "eur", "amount_paid": None, "customer": None}),
        make_event("brand.new.event_type", {"anything": [1, 2, 3]}),
        make_event("charge.refunded", {"id": None, "amount_refunded": "lots"}),
        make_event("charge.dispute.created", {"reason": None, "amount": -5, "currency": "usd"}),
        {**make_event("charge.succeeded", samples.charge()), "created": "yesterday", "livemode": "maybe"},
    ]
    async with running_exporter(config) as ex:
        for event in events:
            assert await ex.post_event(event) == 200
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == len(events)
        # The string amount is not added, but the attempt is counted.
        assert ex.value("stripe_charges_total", {"currency": "usd"}) == 2
        assert ex.value("stripe_charge_amount_total", {"currency": "usd"}) == 20.0
        assert ex.value("stripe_charges_total", {"currency": "unknown"}) == 2
        assert ex.value("stripe_charges_failed_total", {"currency": "unknown", "failure_code": "unknown"}) == 1
        assert ex.value("stripe_invoices_paid_total", {"currency": "eur"}) == 1
        assert ex.value("stripe_invoice_amount_paid_total", {"currency": "eur"}) is None
        assert ex.value("stripe_events_total", {"type": "brand.new.event_type"}) == 1
        assert ex.value("stripe_disputes_total", {"reason": "unknown"}) == 1
        assert ex.value("stripe_dispute_amount_total", {"currency": "usd"}) is None
        assert ex.value("billingwatch_event_processing_errors_total", {"stage": "metrics"}) is None


async def test_label_values_stay_bounded_under_hostile_input(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", metrics={"max_label_values": 5})
    async with running_exporter(config) as ex:
        for i in range(20):
            charge = samples.charge(status="failed", failure_code=f"code_{i}", currency="usd")
            assert await ex.post_event(make_event("charge.failed", charge)) == 200
            assert await ex.post_event(make_event(f"weird.type_{i}", {})) == 200
        codes = {s.labels["failure_code"] for m in ex.service.metrics.registry.collect()
                 if m.name == "stripe_charges_failed" for s in m.samples}
        assert len(codes) == 6 and "other" in codes
        types = {s.labels["type"] for m in ex.service.metrics.registry.collect()
                 if m.name == "stripe_events" for s in m.samples}
        assert len(types) <= 6 and "other" in types
        assert ex.value("billingwatch_label_values_overflowed_total") > 0


async def test_bad_input_never_leaks_into_logs(config, capfd):
    from exporter.logs import setup_logging

    setup_logging("debug", "json")
    secret_looking = "whsec_leak_me_please"
    async with running_exporter(config) as ex:
        body = orjson.dumps(make_event("charge.succeeded", samples.charge(fingerprint="FPRINTSECRET123")))
        await ex.post_raw(body, {"Stripe-Signature": sign(body, secret_looking)})
        await ex.post_raw(body, {"Stripe-Signature": sign(body, SECRET)})
        await ex.post_raw(b"{garbage", {"Stripe-Signature": sign(b"{garbage", SECRET)})
    setup_logging("info", "json")
    err = capfd.readouterr().err
    assert "webhook" in err  # debug request lines were written
    for needle in (secret_looking, SECRET, "FPRINTSECRET123", "4242"):
        assert needle not in err
