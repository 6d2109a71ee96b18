"""The interface every in-process detector implements (built-in and custom ones alike)."""

from __future__ import annotations

from typing import Any, Protocol


class Detector(Protocol):
    # Short snake_case name; becomes the `detector` label of its alerts.
    name: str

    def on_event(self, event: dict[str, Any], received: float) -> None:
        """Called once per unique, counted event (after dedupe), in arrival order. Must not block."""

    def tick(self, now: float) -> None:
        """Called about once a second with the current (or, in backtests, virtual) time."""
