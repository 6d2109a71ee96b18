"""Helpers for the detector tests: a Service driven directly (no sockets) on a virtual clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter import samples
from exporter.service import Service
from tests.ingest_support import make_config, sample_value

T0 = 1_780_000_000  # 2026-05-28, a fixed "now" so every time in a test is explicit


class Clock:
    def __init__(self, now: float = T0):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


class Harness:
    """A Service whose events and ticks are fed by the test, with its metrics at hand."""

    def __init__(self, state_path: Path, clock: Clock | None = None, **sections: dict[str, Any]):
        self.state_path = state_path
        self.sections = sections
        self.clock = clock or Clock()
        self.service = Service(make_config(state_path, **sections), clock=self.clock)

    @property
    def board(self):
        return self.service.detector_set.board

    def detector(self, name: str) -> Any:
        return self.service.detector_set.by_name[name]

    def send(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        created: int | None = None,
        received: float | None = None,
        event_id: str | None = None,
        **event_kw: Any,
    ) -> str:
        created = int(self.clock.now) if created is None else created
        event = samples.event(event_type, obj, created=created, event_id=event_id, **event_kw)
        return self.send_event(event, received=received)

    def send_event(self, event: dict[str, Any], *, received: float | None = None) -> str:
        if received is not None:
            self.clock.now = max(self.clock.now, received)
        return self.service.ingestor.ingest(event, self.clock.now if received is None else received)

    def tick(self, now: float | None = None) -> None:
        if now is not None:
            self.clock.now = now
        self.service.ingestor.tick(self.clock.now)
        self.service.state.flush(self.clock.now)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return sample_value(self.service.metrics.registry, name, labels)

    def anomalies(self, detector: str | None = None) -> list[dict[str, Any]]:
        return self.board.recent(None, detector)

    def total(self, detector: str) -> float:
        return self.value("billingwatch_anomalies_total", {"detector": detector}) or 0.0

    def restart(self) -> Harness:
        """Close the state like a clean shutdown and build a new Service on the same file."""
        self.service.ingestor.tick(self.clock.now)
        self.service.state.close()
        return Harness(self.state_path, self.clock, **self.sections)


def anomaly_labels(
    detector: str,
    severity: str,
    reason: str,
    *,
    customer: str = "",
    subscription: str = "",
    invoice: str = "",
    currency: str = "",
    livemode: str = "false",
) -> dict[str, str]:
    return {
        "detector": detector,
        "severity": severity,
        "reason": reason,
        "customer": customer,
        "subscription": subscription,
        "invoice": invoice,
        "currency": currency,
        # exporter.samples builds test-mode objects unless told otherwise.
        "livemode": livemode,
    }
