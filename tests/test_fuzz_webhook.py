"""Property-based fuzzing over bodies, headers and field types: no input yields a 5xx, an exception or a crash.

One exporter (with every default detector) runs in a background thread; hypothesis posts to it over real HTTP.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.service import Service
from tests.conftest import SECRET, sign
from tests.ingest_support import make_config

EVENT_TYPES = [
    "charge.succeeded", "charge.failed", "charge.captured", "charge.refunded", "charge.dispute.created",
    "radar.early_fraud_warning.created", "refund.created", "invoice.created", "invoice.finalized", "invoice.updated",
    "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed", "credit_note.created",
    "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
    "payment_intent.succeeded", "something.unknown",
]
FIELDS = [
    "id", "amount", "amount_captured", "amount_refunded", "currency", "customer", "status", "failure_code", "captured",
    "reason", "fraud_type", "total", "amount_paid", "subscription", "parent", "items", "quantity", "created",
    "billing_reason", "payment_method_details", "current_period_end", "charge", "invoice", "outcome", "refunds",
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["usd", "jpy", "kwd", "", "cus_1", "sub_1", "active", "month", "succeeded", "zzz"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(FIELDS), children, max_size=5)),
    max_leaves=15,
)


class ThreadedExporter:
    def __init__(self, tmp_path: Any):
        self.config = make_config(tmp_path / "fuzz.sqlite3")
        self.loop = asyncio.new_event_loop()
        self.service: Service | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.service = Service(self.config)
        self.loop.run_until_complete(self.service.start())
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(15)

    def stop(self) -> None:
        assert self.service is not None
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        assert self.service is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.service.webhook_port, timeout=10)
        try:
            conn.request("POST", "/webhooks/stripe", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        return resp.status

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        assert self.service is not None
        return self.service.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture(scope="module")
def exporter(tmp_path_factory) -> Iterator[ThreadedExporter]:
    ex = ThreadedExporter(tmp_path_factory.mktemp("fuzz"))
    ex.start()
    yield ex
    ex.stop()


def _errors(ex: ThreadedExporter) -> float:
    assert ex.service is not None
    return sum(s.value for m in ex.service.metrics.registry.collect()
               if m.name == "billingwatch_event_processing_errors" for s in m.samples if s.name.endswith("_total"))


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
# CR and LF cannot be sent in a header at all (the client refuses them); every other character can.
@given(body=st.binary(max_size=2048),
       header=st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=200)))
def test_unsigned_garbage_is_always_a_4xx(exporter, body, header):
    headers = {} if header is None else {"Stripe-Signature": header.encode("latin-1", "replace").decode("latin-1")}
    before = exporter.sample("stripe_last_event_timestamp_seconds")
    status = exporter.post(body, headers)
    assert status in (400, 413)
    assert exporter.sample("stripe_last_event_timestamp_seconds") == before


@FUZZ
@given(doc=json_values)
def test_signed_arbitrary_json_is_200_or_400_never_5xx(exporter, doc):
    body = orjson.dumps(doc)
    status = exporter.post(body, {"Stripe-Signature": sign(body, SECRET)})
    assert status in (200, 400)
    assert _errors(exporter) == 0


@FUZZ
@given(
    event_type=st.sampled_from(EVENT_TYPES),
    obj=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=12),
    created=st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.none(), st.text(max_size=5)),
    # Integers JSON can carry (orjson refuses beyond 64 bits, which would fail the test itself, not the exporter).
    livemode=st.one_of(st.booleans(), st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
)
def test_signed_events_with_any_field_types_are_accepted_without_errors(exporter, event_type, obj, created, livemode):
    event = {"id": f"evt_fuzz_{time.time_ns()}", "object": "event", "type": event_type, "created": created,
             "livemode": livemode, "data": {"object": obj}}
    body = orjson.dumps(event)
    accepted = exporter.sample("billingwatch_webhook_requests_total", {"outcome": "accepted"})
    ignored = exporter.sample("billingwatch_webhook_requests_total", {"outcome": "ignored"})
    assert exporter.post(body, {"Stripe-Signature": sign(body, SECRET)}) == 200
    after = exporter.sample("billingwatch_webhook_requests_total", {"outcome": "accepted"}) + exporter.sample(
        "billingwatch_webhook_requests_total", {"outcome": "ignored"})
    assert after == accepted + ignored + 1
    assert _errors(exporter) == 0, "an event handler or detector raised on odd field types"


def test_exporter_still_healthy_after_fuzzing(exporter):
    assert exporter.service is not None
    conn = http.client.HTTPConnection("127.0.0.1", exporter.service.webhook_port, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
