"""From a verified event to metrics and detectors: dedupe, mode filter, accounting, detectors.

The same code serves the HTTP handler and offline replays (backtests pass a virtual `received` time).

Dedupe and the mode filter decide the webhook's answer; the rest (counters, the recent-events list,
accounting, detectors) runs once the id is committed, just before the answer. A commit serves every request that
waited for it, so in the server those requests resume one after the other and their processing runs back to back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from exporter import logs
from exporter.accounting import Accounting
from exporter.bounds import MAX_DELIVERY_DELAY_SECONDS, sane_created
from exporter.detectors.base import Detector
from exporter.metrics import Metrics
from exporter.state import StateStore

MAX_EVENT_ID_LENGTH = 255


def event_shape_error(event: Any) -> str | None:
    """Why a parsed body is not a Stripe event, or None when it is one."""
    if not isinstance(event, dict):
        return "not a JSON object"
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH:
        return "missing or invalid id"
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type:
        return "missing or invalid type"
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return "missing data.object"
    return None


class Ingestor:
    def __init__(
        self,
        metrics: Metrics,
        state: StateStore,
        *,
        mode: str = "any",
        detectors: Sequence[Detector] = (),
        recent_size: int = 200,
    ):
        self.metrics = metrics
        self.state = state
        self.mode = mode
        self.detectors = list(detectors)
        self.accounting = Accounting(metrics, state)
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self._modes_seen: set[bool] = set()
        self._newest_created = 0.0
        self._requests = {
            o: metrics.webhook_requests.labels(o) for o in ("accepted", "duplicate", "ignored", "unavailable")
        }
        self._events_by_mode = metrics.events_by_mode.labels
        self._events = metrics.events.labels

    def ingest(self, event: dict[str, Any], received: float, *, via_webhook: bool = True) -> str:
        """Process one shape-checked event; returns its outcome (accepted, duplicate or ignored).

        via_webhook=False is for events fetched from the Events API (the missed-delivery poller): they are deduped
        and counted like any event, but are neither webhook requests nor observations of webhook delivery delay.
        """
        outcome = self.admit(event, received)
        self.complete(event, received, outcome, via_webhook=via_webhook)
        return outcome

    def admit(self, event: dict[str, Any], received: float) -> str:
        """Dedupe and the mode decision: the outcome the answer will carry. Nothing is counted yet: the webhook
        handler first waits for the id's commit (StateStore.commit_of), then calls complete(); a failed commit
        answers 503 and counts nothing (Stripe redelivers, and the redelivery is counted once).

        Raises sqlite3.Error when the seen-id table cannot be read."""
        if self.state.check_and_mark(event["id"], received):
            return "duplicate"
        livemode = event.get("livemode")
        if (self.mode == "live" and livemode is not True) or (self.mode == "test" and livemode is not False):
            return "ignored"
        return "accepted"

    async def ingest_acknowledged(self, event: dict[str, Any], received: float) -> str:
        """ingest() for a delivery that is answered: returns only once the id is on disk (group commit,
        exporter/state.py), so an acknowledged event is never forgotten. Raises StateUnavailable or sqlite3.Error
        when it cannot be saved: the caller answers 503 and Stripe delivers it again later, counted once then."""
        outcome = self.admit(event, received)
        commit = self.state.commit_of(event["id"])
        if commit is not None:
            await commit
        self.complete(event, received, outcome)
        return outcome

    def unavailable(self) -> None:
        """A webhook answered 503 because the state could not be read or saved."""
        self._requests["unavailable"].inc()

    def complete(self, event: dict[str, Any], received: float, outcome: str, *, via_webhook: bool = True) -> None:
        """Count an admitted event and process it."""
        if via_webhook:
            # Counted with the answer, so the counter never lags behind what a sender was told.
            self._requests[outcome].inc()
        try:
            self._process(event, received, outcome, via_webhook)
        except Exception:
            # _process guards its own stages; this is the last line, so that no event can break the answer.
            self.metrics.processing_errors.labels("ingest").inc()
            logs.error("event processing failed", event_id=event_id_safe(event))

    def _process(self, event: dict[str, Any], received: float, outcome: str, via_webhook: bool) -> None:
        """The recent list, and for first deliveries the mode counter, then (accepted events only) the event
        counters, accounting and detectors."""
        m = self.metrics
        event_type: str = event["type"]
        created = event.get("created")
        if isinstance(created, bool) or not isinstance(created, int | float):
            created = None
        self.recent.append(
            {
                "id": event["id"],
                "type": m.cap_type(event_type),
                "created": created,
                "received": round(received, 3),
                "outcome": outcome,
            }
        )
        if outcome == "duplicate":
            return
        livemode = event.get("livemode")
        self._events_by_mode("true" if livemode is True else "false" if livemode is False else "unknown").inc()
        if isinstance(livemode, bool) and livemode not in self._modes_seen:
            self._modes_seen.add(livemode)
            if len(self._modes_seen) == 2 and self.mode == "any":
                logs.event(
                    logging.INFO,
                    "both live and test mode events arrive; business metrics and anomalies keep them apart "
                    "(label livemode); set stripe.mode to live or test to ignore the other mode",
                )
        if outcome != "accepted":
            return
        self._events(m.cap_type(event_type)).inc()
        m.last_event.set(received)
        if created is not None and via_webhook:
            if not sane_created(created, received):
                m.values_rejected.labels("created").inc()
            else:
                delay = received - created
                if delay <= MAX_DELIVERY_DELAY_SECONDS:
                    m.delivery_delay.observe(max(0.0, delay))
                else:
                    m.values_rejected.labels("delivery_delay").inc()
                if created > self._newest_created:
                    self._newest_created = created
                    m.last_event_created.set(created)
        obj = event["data"]["object"]
        try:
            self.accounting.apply(event_type, obj, event)
        except Exception:
            m.processing_errors.labels("metrics").inc()
            logs.error("event accounting failed", event_id=event_id_safe(event), type=event_type[:100])
        for detector in self.detectors:
            try:
                detector.on_event(event, received)
            except Exception:
                m.processing_errors.labels(detector.name).inc()
                logs.error("detector failed", detector=detector.name, event_id=event_id_safe(event))

    def tick(self, now: float) -> None:
        for detector in self.detectors:
            self.tick_detector(detector, now)

    def tick_detector(self, detector: Detector, now: float) -> None:
        try:
            detector.tick(now)
        except Exception:
            self.metrics.processing_errors.labels(detector.name).inc()
            logs.error("detector tick failed", detector=detector.name)


def event_id_safe(event: dict[str, Any]) -> str:
    return str(event.get("id", ""))[:MAX_EVENT_ID_LENGTH]
