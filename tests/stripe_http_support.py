"""Driving a running exporter with signed events and reading what it made of them, after they were processed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from exporter import samples
from tests.ingest_support import Exporter

# An event type nothing counts or detects: a barrier whose arrival proves every earlier event was processed
# (events are processed in order).
BARRIER_TYPE = "balance.available"


class Driver:
    def __init__(self, ex: Exporter):
        self.ex = ex
        self._barriers = 0

    async def send(self, event_type: str, obj: dict[str, Any], *, livemode: bool | None = None,
                   created: int | None = None, previous_attributes: dict[str, Any] | None = None,
                   event_id: str | None = None, automatic: bool = False) -> dict[str, Any]:
        event = samples.event(event_type, obj, created=created, previous_attributes=previous_attributes,
                              event_id=event_id)
        if livemode is not None:
            event["livemode"] = livemode
        if automatic:
            # Caused by Stripe itself (e.g. subscription billing), not by an API request.
            event["request"] = {"id": None, "idempotency_key": None}
        assert await self.ex.post_event(event) == 200
        return event

    async def resend(self, event: dict[str, Any]) -> None:
        assert await self.ex.post_event(event) == 200

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until everything posted so far has been processed."""
        self._barriers += 1
        await self.send(BARRIER_TYPE, {"object": "balance", "available": [], "pending": []})
        await self.until(lambda: (self.value("stripe_events_total", type=BARRIER_TYPE) or 0) >= self._barriers,
                         timeout)

    async def until(self, condition: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached before the deadline")
            await asyncio.sleep(0.01)

    def value(self, name: str, **labels: str) -> float | None:
        return self.ex.value(name, labels)

    async def anomalies(self, detector: str | None = None) -> list[dict[str, Any]]:
        query = "?limit=500" + (f"&detector={detector}" if detector else "")
        async with self.ex.session.get(f"{self.ex.private}/api/v1/anomalies{query}") as resp:
            assert resp.status == 200
            return (await resp.json())["anomalies"]

    async def metrics_text(self) -> str:
        async with self.ex.session.get(f"{self.ex.private}/metrics") as resp:
            return await resp.text()
