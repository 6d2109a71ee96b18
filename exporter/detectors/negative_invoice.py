"""negative_invoice: negative invoice totals (customer credits) and large single reversals (money out).

Stripe never sends `amount_paid < 0` (what the product we replace watched), but an invoice's `total` goes negative
when credits or discounts exceed its charges: proration on a downgrade, a coupon. No money moves then: Stripe
puts the amount on the customer's credit balance, which pays their next invoices. Such credits are routine, so
they are reported at `credit_severity` (default info: recorded, never a page), once per invoice.

Money leaving the business is reported at `severity` (default critical), once per refund or credit note, when one
reversal reaches the currency's threshold (`reversal_threshold_by_currency`, else `reversal_threshold`, in major
units):
- `refund.created` / `refund.updated` name the refund and its amount (failed or canceled refunds are no money
  out);
- `charge.refunded` either lists its refunds (older API versions) or carries the running `amount_refunded`, from
  which the refund's amount is the growth over `previous_attributes.amount_refunded` (or over the last total seen
  here, which falls again when a refund fails). A refund seen both ways is recognised by its charge and amount:
  each sighting without an id is matched with one sighting by id, so a second partial refund of the same amount
  is a second refund;
- `credit_note.created`: the part refunded or paid out of band (`refunds[].amount_refunded`,
  `out_of_band_amount`) is money out (reason large_credit_note); a credit note that credits the customer's balance
  (`customer_balance_transaction`) is reported at credit_severity (reason large_balance_credit); one that only
  lowers an unpaid invoice (pre_payment) moves nothing and is not reported.
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
# Value of `re:<refund id>` for a refund reported as part of its credit note, before the refund itself was seen.
CREDIT_NOTE_MARK = "credit_note"


class NegativeInvoiceDetector:
    name = "negative_invoice"

    def __init__(self, board: AnomalyBoard, state: StateStore, config: NegativeInvoiceConfig):
        self.board = board
        self.state = state
        self.severity = config.severity
        self.credit_severity = config.credit_severity
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
            "credit_severity": self.credit_severity,
            "reasons": ["negative_total", "large_refund", "large_credit_note", "large_balance_credit"],
        }

    def threshold_for(self, currency: str) -> float:
        return self.by_currency.get(currency, self.threshold)

    def on_event(self, event: dict[str, Any], received: float) -> None:
        event_type: str = event["type"]
        obj = event["data"]["object"]
        mode = event.get("livemode")
        livemode = mode if isinstance(mode, bool) else None
        if event_type.startswith("invoice."):
            total = get_int(obj, "total")
            if total is not None and total < 0:
                self._negative_invoice(obj, total, received, livemode)
        elif event_type == "charge.refunded":
            self._charge_refunded(event, obj, received, livemode)
        elif event_type == "charge.updated":
            self._refund_total_fell(event, obj)
        elif event_type in ("refund.created", "refund.updated"):
            if obj.get("status") in ("failed", "canceled"):
                return
            self._refund(
                obj, get_str(obj, "id"), get_int(obj, "amount"), get_str(obj, "charge"), received, livemode=livemode
            )
        elif event_type == "credit_note.created":
            self._credit_note(obj, received, livemode)

    # -- negative invoices -----------------------------------------------------------------------------------

    def _negative_invoice(self, invoice: dict[str, Any], total: int, received: float, livemode: bool | None) -> None:
        invoice_id = get_str(invoice, "id")
        currency = normalize_currency(invoice.get("currency"))
        if invoice_id is None or currency is None or not self._first(f"in:{invoice_id}", received):
            return
        major = to_major(total, currency)
        self.board.raise_anomaly(
            self.name,
            "negative_total",
            at=received,
            severity=self.credit_severity,
            customer=get_str(invoice, "customer"),
            subscription=invoice_subscription_id(invoice),
            invoice=invoice_id,
            currency=currency,
            amount=major,
            livemode=livemode,
            summary=f"invoice {invoice_id} has a negative total of {major:g} {currency.upper()}, "
            "credited to the customer's balance",
            details={
                "money_out": False,
                "ending_balance_minor": get_int(invoice, "ending_balance"),
                "invoice": invoice_id,
                "total_minor": total,
                "subtotal_minor": get_int(invoice, "subtotal"),
                "status": get_str(invoice, "status"),
                "billing_reason": get_str(invoice, "billing_reason"),
                "invoice_created": get_int(invoice, "created"),
            },
        )

    # -- refunds ---------------------------------------------------------------------------------------------

    def _charge_refunded(
        self, event: dict[str, Any], charge: dict[str, Any], received: float, livemode: bool | None
    ) -> None:
        charge_id = get_str(charge, "id")
        if charge_id is None:
            return
        listed = get_dict(charge, "refunds")
        refunds = listed.get("data") if listed else None
        if isinstance(refunds, list) and refunds:
            for refund in refunds:
                if isinstance(refund, dict) and refund.get("status") not in ("failed", "canceled"):
                    self._refund(
                        refund,
                        get_str(refund, "id"),
                        get_int(refund, "amount"),
                        charge_id,
                        received,
                        charge=charge,
                        livemode=livemode,
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
            self._refund(charge, None, total - previous, charge_id, received, charge=charge, livemode=livemode)

    def _refund_total_fell(self, event: dict[str, Any], charge: dict[str, Any]) -> None:
        """A failed or canceled refund lowers `amount_refunded` (charge.updated names the old value): a retry
        then grows it again and is a refund of its own."""
        charge_id = get_str(charge, "id")
        total = get_int(charge, "amount_refunded")
        previous = get_int(event, "data", "previous_attributes", "amount_refunded")
        if charge_id is None or total is None or previous is None or total >= previous:
            return
        seen_key = f"total:{charge_id}"
        if (self.state.get(NS, seen_key) or 0) > total:
            self.state.put(NS, seen_key, total)

    def _refund(
        self,
        obj: dict[str, Any],
        refund_id: str | None,
        amount: int | None,
        charge_id: str | None,
        received: float,
        *,
        charge: dict[str, Any] | None = None,
        livemode: bool | None = None,
    ) -> None:
        currency = normalize_currency(obj.get("currency")) or normalize_currency((charge or {}).get("currency"))
        if amount is None or amount <= 0 or currency is None:
            return
        major = to_major(amount, currency)
        if major < self.threshold_for(currency) or not self._new_refund(refund_id, charge_id, amount, received):
            return
        customer = get_str(obj, "customer") or (get_str(charge, "customer") if charge else None)
        self.board.raise_anomaly(
            self.name,
            "large_refund",
            at=received,
            severity=self.severity,
            customer=customer,
            currency=currency,
            amount=major,
            livemode=livemode,
            summary=f"refund of {major:g} {currency.upper()} (threshold {self.threshold_for(currency):g})",
            details={
                "refund": refund_id,
                "charge": charge_id,
                "amount_minor": amount,
                "threshold": self.threshold_for(currency),
                "reason": get_str(obj, "reason") if refund_id else None,
            },
        )

    def _new_refund(self, refund_id: str | None, charge_id: str | None, amount: int, received: float) -> bool:
        """True the first time a refund is seen. One refund may reach us by id (refund.*, refund lists) and
        without one (the growth of `amount_refunded`): per charge and amount, each sighting without an id is
        matched with one by id. Two refunds of the same amount on one charge are therefore two refunds."""
        reported = True
        if refund_id is not None:
            seen = self.state.get(NS, f"re:{refund_id}")
            if seen is not None and seen != CREDIT_NOTE_MARK:
                return False
            self.state.put(NS, f"re:{refund_id}", int(received))
            # Reported already as its credit note: still matched below, so that its charge.refunded is not new.
            reported = seen is None
            if charge_id is None:
                return reported
        if charge_id is None:
            return False
        key = f"chre:{charge_id}:{amount}"
        pool = self.state.get(NS, key)
        if not isinstance(pool, dict):
            # Written by an older version for a refund already reported (under both names at once).
            pool = {"anon": 1, "ids": 1} if pool is not None else {"anon": 0, "ids": 0}
        mine, theirs = ("ids", "anon") if refund_id is not None else ("anon", "ids")
        if pool[theirs] > 0:
            pool[theirs] -= 1  # the same refund, already reported through the other kind of sighting
            new = False
        else:
            pool[mine] += 1
            new = True
        self.state.put(NS, key, pool)
        return new and reported

    # -- credit notes ----------------------------------------------------------------------------------------

    def _credit_note(self, note: dict[str, Any], received: float, livemode: bool | None) -> None:
        note_id = get_str(note, "id")
        currency = normalize_currency(note.get("currency"))
        amount = get_int(note, "amount")
        if amount is None:
            amount = get_int(note, "total")
        if note_id is None or currency is None or amount is None or amount <= 0:
            return
        refunded, credited = credit_note_split(note, amount)
        threshold = self.threshold_for(currency)
        # The larger kind decides; a note that is both, above the threshold in money out, is money out.
        if to_major(refunded, currency) >= threshold:
            reason, severity, part = "large_credit_note", self.severity, refunded
        elif to_major(credited, currency) >= threshold:
            reason, severity, part = "large_balance_credit", self.credit_severity, credited
        else:
            return
        if not self._first(f"cn:{note_id}", received):
            return
        if reason == "large_credit_note":
            # Its refunds reach us as refund.created too: one reversal, one page.
            for refund_id in credit_note_refunds(note):
                if self.state.get(NS, f"re:{refund_id}") is None:
                    self.state.put(NS, f"re:{refund_id}", CREDIT_NOTE_MARK)
        major = to_major(part, currency)
        invoice_id = get_str(note, "invoice")
        what = "refunded or paid out of band" if reason == "large_credit_note" else "credited to the customer's balance"
        self.board.raise_anomaly(
            self.name,
            reason,
            at=received,
            severity=severity,
            customer=get_str(note, "customer"),
            invoice=invoice_id,
            currency=currency,
            amount=major,
            livemode=livemode,
            summary=f"credit note {note_id} on invoice {invoice_id}: {major:g} {currency.upper()} {what}",
            details={
                "credit_note": note_id,
                "invoice": invoice_id,
                "amount_minor": amount,
                "money_out_minor": refunded,
                "balance_credit_minor": credited,
                "threshold": threshold,
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


def credit_note_split(note: dict[str, Any], amount: int) -> tuple[int, int]:
    """(money out, balance credit) of a credit note, in minor units.

    Refunded (`refunds[].amount_refunded`) and paid out of band (`out_of_band_amount`) leave the business; with a
    `customer_balance_transaction` the rest went to the customer's credit balance; otherwise the rest lowered an
    unpaid invoice (pre_payment), which is neither. Older API versions name one `refund` without its amount: the
    whole note is then taken as refunded."""
    refunded = 0
    listed = note.get("refunds")
    for entry in listed if isinstance(listed, list) else ():
        part = get_int(entry, "amount_refunded")
        refunded += part if part is not None and part > 0 else 0
    if not refunded and get_str(note, "refund"):
        refunded = amount
    out_of_band = get_int(note, "out_of_band_amount") or 0
    money_out = min(amount, refunded + max(out_of_band, 0))
    credited = amount - money_out if get_str(note, "customer_balance_transaction") else 0
    return money_out, credited


def credit_note_refunds(note: dict[str, Any]) -> list[str]:
    """Refund ids of a credit note: `refund` (older API versions) or `refunds[].refund` (newer)."""
    out = []
    single = get_str(note, "refund")
    if single:
        out.append(single)
    listed = note.get("refunds")
    for entry in listed if isinstance(listed, list) else ():
        refund_id = get_str(entry, "refund") if isinstance(entry, dict) else None
        if refund_id:
            out.append(refund_id)
    return out
