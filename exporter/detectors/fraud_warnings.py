"""early_fraud_warning: each Radar early fraud warning on the board, naming its charge and, when known, its
customer and amount.

An early fraud warning (radar.early_fraud_warning.created) means the card's issuer reported the charge as fraud;
a dispute often follows within weeks unless the charge is refunded first. What to do is per charge, so each
warning is recorded on the board (GET /api/v1/anomalies, one log line, billingwatch_anomalies_total) at severity
info and without an anomaly series: the rate of warnings is what the PromQL rules alert on (BillingWatch
EarlyFraudWarningSpike), and a series per warning would only compete with real pages for detectors.max_series.

The warning object names its `charge` and `payment_intent` but no customer or amount. Those come from the charges
this process has seen (a bounded memory of the most recent ones, not persisted): a warning about an older charge,
or one from before a restart, names the charge only.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

from exporter.detectors.base import key_hash
from exporter.detectors.board import AnomalyBoard
from exporter.money import normalize_currency, to_major
from exporter.stripe_shapes import get_int, get_str

# About 175 bytes each (the charge id's hash, the tuple, the amount, a dict entry and a place in the order; customer
# and currency strings are shared): 50,000 charges are weeks of traffic for most users, in about 9 MiB. Keyed by the
# charge id itself it was 280 bytes (13.5 MiB: a ~27-character id is an 80-byte string); with each event's own
# customer and currency strings kept, more (measured in process after the ingest benchmark's events, 2026-12-03).
REMEMBERED_CHARGES = 50_000
CHARGE_EVENTS = frozenset(("charge.succeeded", "charge.captured"))


def _shared(value: Any) -> Any:
    """One string object per distinct customer or currency (the ledger interns customers too), not one per event."""
    return sys.intern(value) if type(value) is str else value


class EarlyFraudWarningDetector:
    name = "early_fraud_warning"

    def __init__(self, board: AnomalyBoard, remembered: int = REMEMBERED_CHARGES):
        self.board = board
        self.remembered = remembered
        # key_hash(charge id) -> the charge's raw (customer, amount, currency). A 60-bit hash stands for the id, as a
        # 64-bit one does in duplicate_charge: a warning matching another charge by collision has odds of ~10^-13
        # at 50,000 charges.
        self._charges: dict[int, tuple[Any, Any, Any]] = {}
        # The same hashes, oldest first. Not the dict's own order: deleting its first entry leaves a hole that the
        # next `next(iter(dict))` walks past, and after tens of thousands of such deletions each lookup of the
        # oldest cost ~16 us (measured: 0.6 us with a separate order) on every charge event.
        self._order: deque[int] = deque()
        board.precreate(self.name)

    def on_event(self, event: dict[str, Any], received: float) -> None:
        event_type = event["type"]
        obj = event["data"]["object"]
        if event_type in CHARGE_EVENTS:
            # Raw values, read only if a warning comes: this runs for every charge.
            charge_id = obj.get("id")
            charges = self._charges
            if isinstance(charge_id, str) and (key := key_hash(charge_id)) not in charges:
                charges[key] = (_shared(obj.get("customer")), obj.get("amount"), _shared(obj.get("currency")))
                self._order.append(key)
                if len(charges) > self.remembered:
                    del charges[self._order.popleft()]
        elif event_type == "radar.early_fraud_warning.created":
            self._warning(event, obj, received)

    def _warning(self, event: dict[str, Any], warning: dict[str, Any], received: float) -> None:
        charge_id = get_str(warning, "charge")
        raw = self._charges.get(key_hash(charge_id), (None, None, None)) if charge_id else (None, None, None)
        seen = {"customer": raw[0], "amount": raw[1]}
        customer, amount, currency = get_str(seen, "customer"), get_int(seen, "amount"), normalize_currency(raw[2])
        fraud_type = get_str(warning, "fraud_type") or "unknown"
        major = to_major(amount, currency) if amount is not None and currency is not None else None
        mode = event.get("livemode")
        what = f"{major:g} {currency.upper()} " if major is not None and currency else ""
        who = f"customer {customer}" if customer else "a payer this exporter has not seen"
        self.board.raise_anomaly(
            self.name,
            fraud_type,
            at=received,
            severity="info",
            customer=customer,
            currency=currency if major is not None else None,
            amount=major,
            livemode=mode if isinstance(mode, bool) else None,
            series=False,
            summary=f"early fraud warning ({fraud_type}) on {what}charge {charge_id} of {who}: refunding it "
            "before a dispute avoids the dispute fee",
            details={
                "early_fraud_warning": get_str(warning, "id"),
                "charge": charge_id,
                "payment_intent": get_str(warning, "payment_intent"),
                "fraud_type": fraud_type,
                "actionable": warning.get("actionable") if isinstance(warning.get("actionable"), bool) else None,
            },
        )

    def tick(self, now: float) -> None:
        return None
