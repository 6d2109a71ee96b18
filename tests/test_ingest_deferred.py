"""Deferred processing (Ingestor.process_later_with): the answer is decided at once (dedupe, mode), the counters,
accounting and detectors run when the scheduled drain runs, in arrival order, and nothing queued is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from exporter import samples
from exporter.ingest import Ingestor
from exporter.metrics import Metrics
from exporter.state import StateStore
from tests.conftest import make_event
from tests.ingest_support import make_config, running_exporter


class Recorder:
    """A detector that records the order of the events it sees, and fails on one chosen event."""

    name = "recorder"

    def __init__(self, fail_on: str | None = None):
        self.seen: list[str] = []
        self.ticks = 0
        self.fail_on = fail_on

    def on_event(self, event: dict[str, Any], received: float) -> None:
        if event["id"] == self.fail_on:
            raise RuntimeError("boom")
        self.seen.append(event["id"])

    def tick(self, now: float) -> None:
        self.ticks += 1


def make(fail_on: str | None = None) -> tuple[Ingestor, Recorder, list[Callable[[], None]]]:
    recorder = Recorder(fail_on)
    ingestor = Ingestor(Metrics(), StateStore(":memory:"), detectors=[recorder])
    scheduled: list[Callable[[], None]] = []
    ingestor.process_later_with(scheduled.append)
    return ingestor, recorder, scheduled


def charges(n: int) -> list[dict[str, Any]]:
    return [make_event("charge.succeeded", samples.charge(amount=100 + i)) for i in range(n)]


def test_answers_at_once_and_processes_when_the_drain_runs_in_order():
    ingestor, recorder, scheduled = make()
    events = charges(5)
    now = time.time()
    assert [ingestor.ingest(e, now) for e in events] == ["accepted"] * 5
    assert ingestor.ingest(events[0], now) == "duplicate"  # dedupe is not deferred
    registry = ingestor.metrics.registry
    assert registry.get_sample_value("stripe_charges_total", {"currency": "usd", "livemode": "false"}) is None
    assert recorder.seen == []
    assert len(scheduled) == 1  # one drain for the whole batch
    scheduled.pop()()
    assert recorder.seen == [e["id"] for e in events]
    assert registry.get_sample_value("stripe_charges_total", {"currency": "usd", "livemode": "false"}) == 5
    assert registry.get_sample_value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 5


def test_a_failing_event_does_not_take_the_rest_of_its_batch():
    events = charges(3)
    ingestor, recorder, scheduled = make(fail_on=events[1]["id"])
    for e in events:
        ingestor.ingest(e, time.time())
    scheduled.pop()()
    assert recorder.seen == [events[0]["id"], events[2]["id"]]
    errors = ingestor.metrics.registry.get_sample_value(
        "billingwatch_event_processing_errors_total", {"stage": "recorder"}
    )
    assert errors == 1


def test_tick_and_switching_back_process_what_is_queued():
    ingestor, recorder, scheduled = make()
    a, b = charges(2)
    ingestor.ingest(a, time.time())
    ingestor.tick(time.time())  # detectors tick on a state that includes every admitted event
    assert recorder.seen == [a["id"]] and recorder.ticks == 1
    ingestor.ingest(b, time.time())
    ingestor.process_later_with(None)
    assert recorder.seen == [a["id"], b["id"]]
    c = charges(1)[0]
    ingestor.ingest(c, time.time())  # synchronous again
    assert recorder.seen[-1] == c["id"]
    for drain in scheduled:  # drains scheduled earlier find nothing left to do
        drain()
    assert recorder.seen.count(a["id"]) == 1 and recorder.seen.count(b["id"]) == 1


async def test_the_served_metrics_include_an_event_once_its_answer_is_received(tmp_path):
    config = make_config(tmp_path / "s.sqlite3")
    async with running_exporter(config) as ex:
        assert ex.service.ingestor.deferred  # the server runs the deferred path this test is about
        for i, event in enumerate(charges(20), start=1):
            assert await ex.post_event(event) == 200
            assert ex.value("stripe_charges_total", {"currency": "usd"}) == i
