"""An example custom in-process detector (the one docs/detectors.md shows), also used by the detector tests.

The exporter imports it by module name, so its folder must be on the exporter's Python path:

    PYTHONPATH=examples/detectors billingwatch serve --config billingwatch.yml

with, in billingwatch.yml:
    detectors:
      custom:
        - name: big_charge
          class: "big_charge:BigChargeDetector"
          options: {min_amount: 1000, currency: usd}
"""

from __future__ import annotations

from typing import Any

from exporter.detectors.base import DetectorContext
from exporter.money import to_major


class BigChargeDetector:
    """Reports every successful charge of at least `min_amount` (major units) in one currency."""

    name = "big_charge"

    def __init__(self, context: DetectorContext):
        self.board = context.board
        self.state = context.state
        self.min_amount = float(context.options.get("min_amount", 1000))
        self.currency = str(context.options.get("currency", "usd"))

    def describe(self) -> dict[str, Any]:
        return {"min_amount": self.min_amount, "currency": self.currency}

    def on_event(self, event: dict[str, Any], received: float) -> None:
        if event["type"] != "charge.succeeded":
            return
        charge = event["data"]["object"]
        amount = charge.get("amount")
        if charge.get("currency") != self.currency or not isinstance(amount, int):
            return
        major = to_major(amount, self.currency)
        if major < self.min_amount or self.state.get(self.name, charge["id"]) is not None:
            return
        self.state.put(self.name, charge["id"], int(received))  # once per charge, across restarts too
        self.board.raise_anomaly(
            self.name,
            "big_charge",
            at=received,
            severity="info",
            customer=charge.get("customer"),
            currency=self.currency,
            amount=major,
            livemode=event.get("livemode") is True,
            summary=f"charge of {major:g} {self.currency.upper()}",
            details={"charge": charge["id"]},
        )

    def tick(self, now: float) -> None:
        pass
