"""Thin events (event destinations with thin payloads) through the running exporter's webhook listener: fetched
with the restricted key when there is one, else refused with a distinct, counted outcome and a log line."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from exporter import samples
from tests.fake_stripe_api import API_KEY, FakeStripeAPI
from tests.ingest_support import make_config, running_exporter

SUB = "sub_1QThinEvents01"


def thin(event_type: str, *, related: dict[str, Any] | None, snapshot: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "evt_65RThinEvent0001",
        "object": "v2.core.event",
        "type": event_type,
        "created": "2026-05-28T12:00:00.000Z",
        "livemode": False,
        "context": None,
        "reason": {"type": "request", "request": {"id": "req_thin01", "idempotency_key": None}},
        "related_object": related,
    }
    if snapshot is not None:
        out["snapshot_event"] = snapshot
    return out


def subscription() -> dict[str, Any]:
    now = int(time.time())
    return samples.subscription(subscription_id=SUB, customer="cus_Thin01", unit_amount=4200, created=now - 10)


RELATED = {"id": SUB, "type": "subscription", "url": f"/v1/subscriptions/{SUB}"}


@pytest.fixture
def api() -> Any:
    with FakeStripeAPI() as fake:
        yield fake


def _config(tmp_path: Path, api: FakeStripeAPI) -> Any:
    return make_config(tmp_path / "state.sqlite3", poller={"api_base": api.url})


def _outcome(exp: Any, outcome: str) -> float | None:
    return exp.value("billingwatch_webhook_requests_total", {"outcome": outcome})


async def test_without_a_key_thin_events_get_a_distinct_counted_outcome(
    tmp_path: Path, api: FakeStripeAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    caplog.set_level(logging.WARNING)
    async with running_exporter(_config(tmp_path, api)) as exp:
        assert _outcome(exp, "thin_event") == 0  # pre-created
        status, body = await exp.post_raw(*_signed(thin("v1.customer.subscription.created", related=RELATED)))
        # Not 2xx: Stripe keeps retrying (three days), so setting the key later loses nothing.
        assert (status, body["outcome"]) == (422, "thin_event")
        assert _outcome(exp, "thin_event") == 1 and _outcome(exp, "accepted") == 0
        assert exp.value("stripe_subscriptions", {"status": "active", "livemode": "false"}) == 0
    assert "thin event received but not processed: set STRIPE_API_KEY" in caplog.text


async def test_with_a_key_the_snapshot_event_is_fetched_and_dedupes_with_its_delivery(
    tmp_path: Path, api: FakeStripeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = samples.event(
        "customer.subscription.created", subscription(), created=int(time.time()) - 10, event_id="evt_1QSnapshot01"
    )
    api.add(snapshot)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    async with running_exporter(_config(tmp_path, api)) as exp:
        event = thin("v1.customer.subscription.created", related=RELATED, snapshot="evt_1QSnapshot01")
        status, body = await exp.post_raw(*_signed(event))
        assert (status, body["outcome"]) == (200, "accepted")
        assert exp.value("stripe_subscriptions", {"status": "active", "livemode": "false"}) == 1
        assert exp.value("stripe_mrr", {"currency": "usd", "livemode": "false"}) == 42.0
        # The snapshot destination delivers the same event: a duplicate, counted once.
        assert await exp.post_event(snapshot) == 200
        assert _outcome(exp, "duplicate") == 1
    assert any(r["path"] == "/v1/events/evt_1QSnapshot01" for r in api.requests)


async def test_with_a_key_the_related_object_is_fetched(
    tmp_path: Path, api: FakeStripeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.objects[f"/v1/subscriptions/{SUB}"] = subscription()
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    async with running_exporter(_config(tmp_path, api)) as exp:
        status, body = await exp.post_raw(*_signed(thin("v1.customer.subscription.updated", related=RELATED)))
        assert (status, body["outcome"]) == (200, "accepted")
        assert exp.value("stripe_events_total", {"type": "customer.subscription.updated"}) == 1
        assert exp.value("stripe_subscriptions", {"status": "active", "livemode": "false"}) == 1


async def test_a_failed_fetch_asks_stripe_to_retry(
    tmp_path: Path, api: FakeStripeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    async with running_exporter(_config(tmp_path, api)) as exp:
        # Nothing at that path: Stripe answers 404.
        status, body = await exp.post_raw(*_signed(thin("v1.customer.subscription.updated", related=RELATED)))
        assert (status, body["outcome"]) == (503, "thin_event")
        assert _outcome(exp, "thin_event") == 1 and _outcome(exp, "accepted") == 0


async def test_v2_thin_events_are_acknowledged_and_counted(
    tmp_path: Path, api: FakeStripeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    ping = thin("v2.core.event_destination.ping", related={"id": "ed_1", "type": "v2.core.event_destination",
                                                          "url": "/v2/core/event_destinations/ed_1"})  # fmt: skip
    async with running_exporter(_config(tmp_path, api)) as exp:
        status, body = await exp.post_raw(*_signed(ping))
        assert (status, body["outcome"]) == (200, "thin_event")
        assert _outcome(exp, "thin_event") == 1


def _signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    import orjson

    from tests.conftest import sign

    body = orjson.dumps(event)
    return body, {"Stripe-Signature": sign(body), "Content-Type": "application/json"}
