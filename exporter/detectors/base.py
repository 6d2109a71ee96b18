"""The interface every in-process detector implements (built-in and custom ones alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry

from exporter.state import StateStore

if TYPE_CHECKING:
    from exporter.config import Config
    from exporter.detectors.board import AnomalyBoard


def key_hash(text: str) -> int:
    """60 bits of `text`'s hash, for detectors that remember many ids by hash: an int of two 30-bit digits (32 bytes)
    rather than three (48). At 100,000 remembered keys two collide with odds of ~4 * 10^-9."""
    return hash(text) & 0x0FFF_FFFF_FFFF_FFFF


class Detector(Protocol):
    # Short snake_case name; becomes the `detector` label of its alerts.
    name: str

    def on_event(self, event: dict[str, Any], received: float) -> None:
        """Called once per unique, counted event (after dedupe), in arrival order. Must not block."""

    def tick(self, now: float) -> None:
        """Called about once a second with the current (or, in backtests, virtual) time."""


@runtime_checkable
class Describes(Protocol):
    """Optional: what GET /api/v1/detectors shows as a detector's thresholds (else its configured settings)."""

    def describe(self) -> dict[str, Any]: ...


@dataclass
class DetectorContext:
    """What a detector's factory receives: `factory(context) -> Detector`.

    - `board.raise_anomaly(...)` reports an anomaly (gauge, counter, log line, /api/v1/anomalies);
    - `state` persists small JSON values per namespace (use your detector's name as the namespace): writes are
      batched and flushed every second and on shutdown, so prefer put/delete over reads on the hot path;
    - `options` is the detector's `options:` mapping from the config file (custom detectors only);
    - `registry` is the exporter's Prometheus registry, for a detector's own metrics.
    """

    name: str
    board: AnomalyBoard
    state: StateStore
    registry: CollectorRegistry
    config: Config
    options: dict[str, Any] = field(default_factory=dict)
