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
        build_config({"poller": {"interval_seconds": 1, "types": ["charge*"]}})
    assert any(e.startswith("poller.interval_seconds") for e in exc.value.errors)
    assert any(e.startswith("poller.types") for e in exc.value.errors)


# -- more than one poll's worth, more than 20 types, wildcards ---------------------------------------------------


async def _poll(exp: Exporter) -> None:
    assert exp.service.poller is not None
    await exp.service.poller.poll_once()


async def test_a_window_larger_than_one_poll_is_read_over_several_polls_without_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    api = FakeStripeAPI()
    # 250 missed charges, two a second, the oldest 1,000 s ago; max_events_per_poll is 100.
    for n in range(250):
        api.add(_charge_event(100 + n, now - 1000 + n // 2), delivered=False)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    with api:
        async with running_exporter(_config(tmp_path, api, max_events_per_poll=100)) as exp:
            await _wait_for_poll(exp)
            assert exp.value("billingwatch_events_fetched_total") == 100  # the newest 100; the rest is kept for later
            await _poll(exp)
            assert exp.value("billingwatch_events_fetched_total") == 200
            await _poll(exp)
            assert exp.value("billingwatch_events_fetched_total") == 250
            assert exp.value("stripe_charges_total", {"currency": "usd"}) == 250
            # The window is read: the cursor moved past it, and a further poll finds nothing new.
            assert exp.service.state.get("poller", "backlog") is None
            await _poll(exp)
            assert exp.value("billingwatch_events_fetched_total") == 250
    # Pages continue below the oldest event read, with Stripe's starting_after cursor.
    afters = [v for r in api.requests for k, v in r["params"] if k == "starting_after"]
    assert afters and all(a.startswith("evt_poll_") for a in afters)


async def test_more_than_20_types_are_polled_in_several_calls(
    world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, _, now = world
    refund = samples.event("refund.created", {"id": "re_poll_1", "object": "refund", "amount": 500,
                                              "currency": "usd", "charge": "ch_poll_1", "status": "succeeded"},
                           created=now - 450, event_id="evt_poll_refund")  # fmt: skip
    api.add(refund, delivered=False)
    updated = samples.event("invoice.updated", {"id": "in_poll_1", "object": "invoice", "total": 100,
                                                "currency": "usd", "status": "open"},
                            created=now - 440, event_id="evt_poll_invoice_updated")  # fmt: skip
    api.add(updated, delivered=False)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    async with running_exporter(_config(tmp_path, api)) as exp:
        assert len(exp.service.config.poller.types) > 20
        await _wait_for_poll(exp)
        assert exp.value("stripe_events_total", {"type": "refund.created"}) == 1
        assert exp.value("stripe_events_total", {"type": "invoice.updated"}) == 1
    calls = [[v for k, v in r["params"] if k.startswith("types")] for r in api.requests]
    assert all(len(types) <= 20 for types in calls)
    polled = {t for types in calls for t in types}
    for needed in (
        "refund.created",
        "invoice.updated",
        "invoice_payment.paid",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "refund.failed",
    ):
        assert needed in polled


async def test_wildcards_are_polled_with_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: Any) -> None:
    api, _, _ = world
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    async with running_exporter(_config(tmp_path, api, types=["charge.*", "invoice.paid", "refund.created"])) as exp:
        await _wait_for_poll(exp)
        # Nothing reached this state file by webhook: "delivered" and "missed" (charge.succeeded) through charge.*;
        # customer.updated is not polled.
        assert exp.value("billingwatch_events_fetched_total") == 2
        assert exp.value("stripe_events_total", {"type": "customer.updated"}) is None
    single = [dict(r["params"]).get("type") for r in api.requests]
    assert "charge.*" in single
    listed = [[v for k, v in r["params"] if k.startswith("types")] for r in api.requests]
    assert ["invoice.paid", "refund.created"] in listed


@pytest.mark.parametrize("entry", ["charge*", "*.succeeded", "charge.*.created", "Charge.Succeeded", "", "charge..x"])
def test_check_config_refuses_malformed_types_and_wildcards(entry: str) -> None:
    from exporter.config import ConfigError, build_config

    with pytest.raises(ConfigError) as exc:
        build_config({"poller": {"types": ["invoice.paid", entry]}})
    assert any(e.startswith("poller.types[1]") for e in exc.value.errors)


@pytest.mark.parametrize("types", [["*"], ["charge.*", "invoice.paid"], [f"type_{i}.created" for i in range(45)]])
def test_check_config_accepts_wildcards_and_many_types(types: list[str]) -> None:
    from exporter.config import build_config

    assert build_config({"poller": {"types": types}}).poller.types == types
