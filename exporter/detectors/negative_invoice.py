"""negative_invoice: invoices whose `total` is below zero, and large single refunds or credit notes.

Stripe never sends `amount_paid < 0` (what the product we replace watched), but an invoice's `total` goes negative
when credits or discounts exceed its charges; the customer's balance then owes them money. Any invoice event
carries the total, so the first one that shows it negative reports the invoice, once.

Large reversals are reported once per refund or credit note:
- `refund.created` (and `refund.updated`) name the refund and its amount;
- `charge.refunded` either lists its refunds (older API versions) or carries the running `amount_refunded`, from
  which the refund's amount is the growth over `previous_attributes.amount_refunded` (or over the last total seen
  here). A refund seen both ways is recognised by its charge and amount and reported once;
- `credit_note.created` names the credit note and its amount.
"""

from __future__ import annotations

from typing import Any

from exporter.detectors.board import AnomalyBoard
from exporter.detectors.config import NegativeInvoiceConfig
from exporter.money import normalize_currency, to_major
from exporter.state import StateStore
from exporter.stripe_shapes import get_dict, get_int, get_str, invoice_subscription_id

NS = "negative_invoice"
# Refunds may come up to 180 days after a charge; invoice events keep coming for months. Forget after 200 days.
RETENTION_SECONDS = 200 * 86400
PRUNE_INTERVAL = 3600.0


class NegativeInvoiceDetector:
    name = "negative_invoice"

    def __init__(self, board: AnomalyBoard, state: StateStore, config: NegativeInvoiceConfig):
        self.board = board
        self.state = state
        self.severity = config.severity
        self.threshold = config.reversal_threshold
        self.by_currency = dict(config.reversal_threshold_by_currency)
        self._next_prune = 0.0
        board.precreate(self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "invoice_total_below": 0,
            "reversal_threshold": self.threshold,
            "reversal_threshold_by_currency": self.by_currency,
            "severity": self.severity,
            "reasons": ["negative_total", "large_refund", "large_credit_note"],
        }

    def threshold_for(self, currency: str) -> float:
        return self.by_currency.get(currency, self.threshold)

    def on_event(self, event: dict[str, Any], received: float) -> None:
        event_type: str = event["type"]
        obj = event["data"]["object"]
        if event_type.startswith("invoice."):
            total = get_int(obj, "total")
            if total is not None and total < 0:
                self._negative_invoice(obj, total, received)
        elif event_type == "charge.refunded":
            self._charge_refunded(event, obj, received)
        elif event_type in ("refund.created", "refund.updated"):
            if obj.get("status") in ("failed", "canceled"):
                return
            self._refund(obj, get_str(obj, "id"), get_int(obj, "amount"), get_str(obj, "charge"), received)
        elif event_type == "credit_note.created":
            self._credit_note(obj, received)

    # -- negative invoices -----------------------------------------------------------------------------------

    def _negative_invoice(self, invoice: dict[str, Any], total: int, received: float) -> None:
        invoice_id = get_str(invoice, "id")
        currency = normalize_currency(invoice.get("currency"))
        if invoice_id is None or currency is None or not self._first(f"in:{invoice_id}", received):
            return
        major = to_major(total, currency)
        self.board.raise_anomaly(
            self.name,
            "negative_total",
            at=received,
            severity=self.severity,
            customer=get_str(invoice, "customer"),
            subscription=invoice_subscription_id(invoice),
            invoice=invoice_id,
            currency=currency,
            amount=major,
            summary=f"invoice {invoice_id} has a negative total of {major:g} {currency.upper()}",
            details={
                "invoice": invoice_id,
                "total_minor": total,
                "subtotal_minor": get_int(invoice, "subtotal"),
                "status": get_str(invoice, "status"),
                "billing_reason": get_str(invoice, "billing_reason"),
                "invoice_created": get_int(invoice, "created"),
            },
        )

    # -- refunds ---------------------------------------------------------------------------------------------

    def _charge_refunded(self, event: dict[str, Any], charge: dict[str, Any], received: float) -> None:
        charge_id = get_str(charge, "id")
        if charge_id is None:
            return
        listed = get_dict(charge, "refunds")
        refunds = listed.get("data") if listed else None
        if isinstance(refunds, list) and refunds:
            for refund in refunds:
                if isinstance(refund, dict) and refund.get("status") not in ("failed", "canceled"):
                    self._refund(
                        refund, get_str(refund, "id"), get_int(refund, "amount"), charge_id, received, charge=charge
                    )
            return
        total = get_int(charge, "amount_refunded")
        if total is None or total <= 0:
            return
        previous = get_int(event, "data", "previous_attributes", "amount_refunded")
        seen_key = f"total:{charge_id}"
        if previous is None:
            # No previous_attributes: the growth over the largest total seen here (0 for a charge's first refund);
            # an older snapshot arriving late shows no growth.
            previous = self.state.get(NS, seen_key) or 0
            if total > previous:
                self.state.put(NS, seen_key, total)
        if total > previous:
            self._refund(charge, None, total - previous, charge_id, received, charge=charge)

    def _refund(
        self,
        obj: dict[str, Any],
        refund_id: str | None,
        amount: int | None,
        charge_id: str | None,
        received: float,
        *,
        charge: dict[str, Any] | None = None,
    ) -> None:
        currency = normalize_currency(obj.get("currency")) or normalize_currency((charge or {}).get("currency"))
        if amount is None or amount <= 0 or currency is None:
            return
        major = to_major(amount, currency)
        if major < self.threshold_for(currency):
            return
        # One refund may reach us as refund.created and as charge.refunded: mark it under both names.
        keys = [f"re:{refund_id}"] if refund_id else []
        if charge_id:
            keys.append(f"chre:{charge_id}:{amount}")
        if not keys or any(self.state.get(NS, k) is not None for k in keys):
            return
        for k in keys:
            self.state.put(NS, k, int(received))
        customer = get_str(obj, "customer") or (get_str(charge, "customer") if charge else None)
        self.board.raise_anomaly(
            self.name,
            "large_refund",
            at=received,
            severity=self.severity,
            customer=customer,
            currency=currency,
            amount=major,
            summary=f"refund of {major:g} {currency.upper()} (threshold {self.threshold_for(currency):g})",
            details={
                "refund": refund_id,
                "charge": charge_id,
                "amount_minor": amount,
                "threshold": self.threshold_for(currency),
                "reason": get_str(obj, "reason") if refund_id else None,
            },
        )

    # -- credit notes ----------------------------------------------------------------------------------------

    def _credit_note(self, note: dict[str, Any], received: float) -> None:
        note_id = get_str(note, "id")
        currency = normalize_currency(note.get("currency"))
        amount = get_int(note, "amount")
        if amount is None:
            amount = get_int(note, "total")
        if note_id is None or currency is None or amount is None or amount <= 0:
            return
        major = to_major(amount, currency)
        if major < self.threshold_for(currency) or not self._first(f"cn:{note_id}", received):
            return
        invoice_id = get_str(note, "invoice")
        self.board.raise_anomaly(
            self.name,
            "large_credit_note",
            at=received,
            severity=self.severity,
            customer=get_str(note, "customer"),
            invoice=invoice_id,
            currency=currency,
            amount=major,
            summary=f"credit note {note_id} of {major:g} {currency.upper()} on invoice {invoice_id}",
            details={
                "credit_note": note_id,
                "invoice": invoice_id,
                "amount_minor": amount,
                "threshold": self.threshold_for(currency),
                "type": get_str(note, "type"),
                "reason": get_str(note, "reason"),
            },
        )

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def _first(self, key: str, received: float) -> bool:
        """True the first time `key` is seen (persisted, so also across restarts)."""
        if self.state.get(NS, key) is not None:
            return False
        self.state.put(NS, key, int(received))
        return True

    def tick(self, now: float) -> None:
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL
            # Hourly: the deletion runs with the next state flush, in the writer thread.
            self.state.prune_namespace(NS, now - RETENTION_SECONDS)
