"""Refunds counted as what happened: each refund once when it leaves, and once more (apart) if it fails.

A refund reaches us by id (refund.created / .updated / .failed, the `refunds.data` list of charge.refunded in
older API versions) or only as a charge's running `amount_refunded` (charge.refunded since 2022-11-15). Stripe
takes a refund's amount from the balance when the refund is created and gives it back if the refund fails or is
canceled (`amount_refunded` then falls); a retry is a new refund with a new id. So:

- money out: a refund id first seen pending, requires_action or succeeded; or growth of `amount_refunded` over
  what this charge has counted;
- failure: a counted refund id that turns failed or canceled; or `amount_refunded` falling below its previous
  value (`previous_attributes`) in an event that says so. A refund that fails before we count it out is nothing.

Both kinds of sighting describe the same refunds, so each charge keeps a small pool of amounts counted without an
id (and of failures counted without one): a refund id seen later is matched against that pool instead of
counted again. Redelivered, out-of-order and mixed (by id and by total) sightings therefore count each refund once;
an older `amount_refunded` snapshot arriving late never counts as a failure.
"""

from __future__ import annotations

from typing import Any

from exporter.state import StateStore

OUT_STATUSES = frozenset(("pending", "requires_action", "succeeded"))
FAILED_STATUSES = frozenset(("failed", "canceled"))


class RefundLedger:
    def __init__(self, state: StateStore, ns: str):
        self.state = state
        self.ns = ns

    def _load(self, key: str) -> dict[str, Any]:
        value = self.state.get(self.ns, key)
        if isinstance(value, dict):
            return value
        # Before refund ids were kept, the value was the charge's largest amount_refunded: all unattributed.
        counted = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
        return {"c": counted, "g": counted, "f": 0, "o": [], "x": []}

    def refund(self, charge_id: str | None, refund_id: str, amount: int, status: str | None) -> tuple[int, int]:
        """A refund seen by id; returns (amount newly out, amount newly failed)."""
        key = charge_id or f"re:{refund_id}"
        rec = self._load(key)
        out = failed = 0
        counted_out = refund_id in rec["o"]
        if not counted_out and status in OUT_STATUSES | FAILED_STATUSES:
            if rec["g"] >= amount:
                rec["g"] -= amount  # already counted from amount_refunded
                rec["o"].append(refund_id)
                counted_out = True
            elif status in OUT_STATUSES:
                out = amount
                rec["c"] += amount
                rec["o"].append(refund_id)
                counted_out = True
        if counted_out and status in FAILED_STATUSES and refund_id not in rec["x"]:
            rec["x"].append(refund_id)
            if rec["f"] >= amount:
                rec["f"] -= amount  # already counted from amount_refunded falling
            else:
                failed = amount
                rec["c"] = max(0, rec["c"] - amount)
        if out or failed or counted_out:
            self.state.put(self.ns, key, rec)
        return out, failed

    def total(self, charge_id: str, total: int, previous: int | None) -> tuple[int, int]:
        """A charge's `amount_refunded` (and its `previous_attributes` value, if any); returns (out, failed)."""
        rec = self._load(charge_id)
        out = failed = 0
        if total > rec["c"]:
            out = total - rec["c"]
            rec["g"] += out
            rec["c"] = total
        elif previous is not None and previous > total and rec["c"] > total:
            # Only an event that says the total fell (a refund failed or was canceled) is a failure; a lower
            # total without that is an older snapshot delivered late.
            failed = rec["c"] - total
            rec["f"] += failed
            rec["c"] = total
        if out or failed:
            self.state.put(self.ns, charge_id, rec)
        return out, failed
