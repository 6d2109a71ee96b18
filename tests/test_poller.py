"""The missed-delivery poller in a running exporter, against the fake Stripe API with the real stripe SDK."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from exporter import samples
from tests.fake_stripe_api import API_KEY, FakeStripeAPI
from tests.ingest_support import Exporter, make_config, running_exporter


def _charge_event(n: int, created: int) -> dict[str, Any]:
    ch = samples.charge(amount=1000 + n, customer=f"cus_poll_{n}", created=created, charge_id=f"ch_poll_{n}")
    return samples.event("charge.succeeded", ch, created=created, event_id=f"evt_poll_{n}")


@pytest.fixture
def world() -> Any:
    now = int(time.time())
    events = {
        "delivered": _charge_event(1, now - 600),  # reached us by webhook
        "missed": _charge_event(2, now - 500),  # never delivered: Stripe still retrying
        "young": _charge_event(3, now - 10),  # may still be on its way
        "old": _charge_event(4, now - 2 * 86400),  # before the first poll's look-back
        "other_type": samples.event("customer.updated", {"id": "cus_x", "object": "customer"}, created=now - 400),
    }
    api = FakeStripeAPI()
    for name, event in events.items():
        api.add(event, delivered=name not in ("missed", "old"))
    with api:
        yield api, events, now


def _config(tmp_path: Path, api: FakeStripeAPI, **poller: Any) -> Any:
    return make_config(
        tmp_path / "state.sqlite3",
        poller={"api_base": api.url, "settle_seconds": 60.0, "lookback_seconds": 3600.0, **poller},
    )


async def _wait_for_poll(exp: Exporter, outcome: str = "ok", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (exp.value("billingwatch_poller_polls_total", {"outcome": outcome}) or 0) < 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {outcome} poll within {timeout:g} s")
        await asyncio.sleep(0.05)
    # The poll counts itself as soon as its events are admitted; their accounting runs in the next loop iteration
    # (deferred, as for webhooks). Run it now so that the counters the test reads are complete.
    exp.service.ingestor.drain()


async def _deliver_first(tmp_path: Path, api: FakeStripeAPI, event: dict[str, Any], monkeypatch: Any) -> None:
    # Without an API key there is no poller; the webhook delivery lands in the state file.
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    async with running_exporter(_config(tmp_path, api)) as exp:
        assert exp.service.poller is None
        assert await exp.post_event(event) == 200


async def test_poller_counts_undelivered_and_ingests_missed_events_exactly_once(
    world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, events, now = world
    await _deliver_first(tmp_path, api, events["delivered"], monkeypatch)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    async with running_exporter(_config(tmp_path, api)) as exp:
        await _wait_for_poll(exp)
        assert exp.value("stripe_events_undelivered") == 2  # "missed" and "old": Stripe says not delivered
        assert exp.value("billingwatch_events_fetched_total") == 1  # only "missed" is ours to fetch
        # (Counters restarted with this process.) The missed charge is counted like a delivery, without counting a
        # webhook request.
        assert exp.value("stripe_charges_total", {"currency": "usd"}) == 1
        assert exp.value("stripe_events_total", {"type": "charge.succeeded"}) == 1
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 0
        # Stripe's retry arrives after all: a duplicate, no business metric moves.
        assert await exp.post_event(events["missed"]) == 200
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == 1
        assert exp.value("stripe_charges_total", {"currency": "usd"}) == 1
    calls = [dict(r["params"]) for r in api.requests]
    undelivered_call = next(c for c in calls if c.get("delivery_success") == "false")
    assert abs(int(undelivered_call["created[gte]"]) - (now - 3 * 86400)) < 60
    recent_call = next(c for c in calls if "delivery_success" not in c)
    assert abs(int(recent_call["created[gte]"]) - (now - 3600 - 60)) < 60
    # Only the event types BillingWatch reads are polled (the endpoint need not receive anything else).
    typed = [v for r in api.requests for k, v in r["params"] if k.startswith("types")]
    assert "charge.succeeded" in typed and "customer.updated" not in typed
    assert all(r["headers"].get("Authorization") == f"Bearer {API_KEY}" for r in api.requests)


async def test_poller_can_count_without_ingesting(world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, events, _ = world
    await _deliver_first(tmp_path, api, events["delivered"], monkeypatch)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    async with running_exporter(_config(tmp_path, api, ingest_fetched=False)) as exp:
        await _wait_for_poll(exp)
        assert exp.value("billingwatch_events_fetched_total") == 1
        assert exp.value("stripe_charges_total", {"currency": "usd"}) is None  # nothing ingested
        # Not ingested, so not remembered: the late webhook delivery is the first one.
        assert await exp.post_event(events["missed"]) == 200
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 1
        assert exp.value("stripe_charges_total", {"currency": "usd"}) == 1


async def test_poller_survives_a_rejected_key_without_logging_it(
    world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    api, _, now = world
    wrong = "rk_test_wrong_key_abcdef123456"
    monkeypatch.setenv("STRIPE_API_KEY", wrong)
    caplog.set_level(logging.INFO)
    async with running_exporter(_config(tmp_path, api)) as exp:
        await _wait_for_poll(exp, "error")
        assert exp.value("billingwatch_poller_polls_total", {"outcome": "ok"}) == 0
        assert exp.value("billingwatch_events_fetched_total") == 0
        assert await exp.post_event(_charge_event(9, now)) == 200  # the webhook path is unaffected
    assert "Stripe Events API poll failed" in caplog.text
    assert wrong not in caplog.text and wrong[-8:] not in caplog.text


def test_poller_config_is_validated() -> None:
    from exporter.config import ConfigError, build_config

    with pytest.raises(ConfigError) as exc:
        build_config({"poller": {"interval_seconds": 1, "types": [f"t{i}" for i in range(21)]}})
    assert any(e.startswith("poller.interval_seconds") for e in exc.value.errors)
    assert any(e.startswith("poller.types") for e in exc.value.errors)
