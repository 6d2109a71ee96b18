"""Thin events: what a Stripe event destination sends when it is set to "thin" payloads.

A thin event (`"object": "v2.core.event"`) carries no snapshot: only the event's id, `type` (`v1.<snapshot type>`
for API v1 resources, e.g. `v1.invoice.paid`), `created` (an RFC 3339 string), `livemode`, a `related_object`
{id, type, url} and, when the same action also produced a snapshot event, `snapshot_event` (that event's id).

With STRIPE_API_KEY set (the same restricted key and HTTP client as the poller; it needs read access to the objects
BillingWatch reads), the receiver fetches what the thin event points at and processes it like a snapshot event:
- `snapshot_event` given: that snapshot event itself (GET /v1/events/<id>), under its own id, so that it dedupes
  against its webhook delivery and the poller;
- otherwise the related object's current state (GET <related_object.url>), as an event with the thin event's id,
  its type without `v1.` and its time.
If the fetch fails the answer is 503 (Stripe retries). Without a key there is nothing to count from: the answer is
422 and the outcome `thin_event`, with a warning log line (at most once a minute) saying how to fix it; Stripe
retries for three days, so setting the key (or switching the destination to snapshot payloads) in that time loses
nothing. Thin events of API v2 types (no v1 object: `v2.core.event_destination.ping` and the like) are answered
200 with the outcome `thin_event`: BillingWatch reads no v2 resource.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from exporter import logs
from exporter.ingest import Ingestor, event_shape_error
from exporter.state import StateUnavailable

OUTCOME = "thin_event"
LOG_EVERY_SECONDS = 60.0
# A webhook waits for the fetch; Stripe gives up on a delivery after some seconds and retries later.
FETCH_TIMEOUT_SECONDS = 10.0
MAX_ID_LENGTH = 255


def is_thin(event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    if event.get("object") == "v2.core.event":
        return True
    data = event.get("data")
    return isinstance(event.get("related_object"), dict) and not (isinstance(data, dict) and "object" in data)


def _created(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None
    return None


class ThinEvents:
    def __init__(
        self,
        ingestor: Ingestor,
        client: Any | None,
        *,
        clock: Callable[[], float] = time.time,
    ):
        """client: a stripe.StripeClient (the poller's), or None without STRIPE_API_KEY."""
        self.ingestor = ingestor
        self.client = client
        self.clock = clock
        self._counter = ingestor.metrics.webhook_requests.labels(OUTCOME)
        self._last_log = float("-inf")

    def _warn(self, message: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = now
            logs.event(logging.WARNING, message, **fields)

    def _get(self, path: str) -> dict[str, Any]:
        """Blocking (run in a thread): GET a v1 path with the restricted key; plain dicts, as webhooks parse."""
        response = self.client.raw_request("get", path)  # type: ignore[union-attr]
        data = orjson.loads(response.body)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data

    async def _fetch(self, path: str) -> dict[str, Any]:
        return await asyncio.wait_for(asyncio.to_thread(self._get, path), FETCH_TIMEOUT_SECONDS)

    async def receive(self, event: dict[str, Any], received: float) -> tuple[str, int]:
        """(outcome, HTTP status) for one verified thin event."""
        event_type = event.get("type")
        event_type = event_type if isinstance(event_type, str) else ""
        related = event.get("related_object")
        url = related.get("url") if isinstance(related, dict) else None
        snapshot = event.get("snapshot_event")
        if not event_type.startswith("v1."):
            self._counter.inc()
            return OUTCOME, 200  # a v2 resource: nothing BillingWatch reads
        if self.client is None:
            self._counter.inc()
            self._warn(
                "thin event received but not processed: set STRIPE_API_KEY (a restricted read key) so that "
                "BillingWatch can fetch what it points at, or send snapshot payloads to this endpoint",
                type=event_type[:100],
            )
            return OUTCOME, 422
        try:
            if isinstance(snapshot, str) and snapshot.startswith("evt_") and len(snapshot) <= MAX_ID_LENGTH:
                full = await self._fetch(f"/v1/events/{snapshot}")
            elif isinstance(url, str) and url.startswith("/v1/") and len(url) <= 1000 and "?" not in url:
                obj = await self._fetch(url)
                full = {
                    "id": event.get("id"),
                    "object": "event",
                    "type": event_type[3:],
                    "created": _created(event.get("created")),
                    "livemode": event.get("livemode"),
                    "data": {"object": obj},
                }
            else:
                raise ValueError("no snapshot_event and no v1 related_object.url")
        except Exception as exc:
            self._counter.inc()
            self._warn("thin event: fetching its object failed (Stripe will retry)", error=type(exc).__name__)
            return OUTCOME, 503
        if event_shape_error(full) is not None:
            self._counter.inc()
            self._warn("thin event: the fetched object is not usable", type=event_type[:100])
            return OUTCOME, 503
        try:
            return await self.ingestor.ingest_acknowledged(full, received), 200
        except (StateUnavailable, sqlite3.Error):
            self.ingestor.unavailable()
            return "unavailable", 503
