"""Turns one verified, first-seen Stripe event into metric updates.

Each handler reads only the fields it needs and skips what is malformed: a signed event with odd field types is
still counted as far as it is valid (stripe_events_total always), never rejected. Every business counter carries
the event's mode (`livemode`, exporter.modes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.bounds import sane_amount
from exporter.charge_signals import ChargeSignals
from exporter.churn_signals import ChurnSignals
from exporter.metrics import Metrics
from exporter.modes import mode_label
from exporter.money import normalize_currency, to_major
from exporter.refund_ledger import RefundLedger
from exporter.state import StateStore
from exporter.stripe_shapes import captured_amount, get_dict, get_int, get_str

# Refunds are counted by refund id and by each charge's running `amount_refunded` (exporter.refund_ledger);
# disputes once per dispute id and stage. Stripe allows refunds up to 180 days after a charge and disputes take
# up to about four months: both are kept 190 days (the service prunes this namespace).
REFUNDS_NS = "refunded"
REFUNDS_RETENTION_SECONDS = 190 * 86400
DISPUTE_OUTCOMES = frozenset(("won", "lost"))

Handler = Callable[[dict[str, Any], str, dict[str, Any]], None]
Labels = Callable[..., Any]  # a metrics.Budgeted family's labels()


def is_inquiry(dispute: dict[str, Any]) -> bool:
    """Inquiries (warning_needs_response, warning_under_review, warning_closed) move no funds and are no
    chargebacks for the card networks."""
    status = get_str(dispute, "status")
    return status is not None and status.startswith("warning_")


class Accounting:
    def __init__(self, metrics: Metrics, state: StateStore):
        self.m = metrics
        self.state = state
        self.refund_ledger = RefundLedger(state, REFUNDS_NS)
        # The (memoised, budgeted) labels() of every labelled counter written here (see metrics.Budgeted).
        m = metrics
        self._charges = m.charges.labels
        self._charges_failed = m.charges_failed.labels
        self._charge_amount = m.charge_amount.labels
        self._refunds = m.refunds.labels
        self._refund_amount = m.refund_amount.labels
        self._refund_failures = m.refund_failures.labels
        self._refund_failure_amount = m.refund_failure_amount.labels
        self._disputes = m.disputes.labels
        self._dispute_amount = m.dispute_amount.labels
        self._dispute_inquiries = m.dispute_inquiries.labels
        self._disputes_closed = m.disputes_closed.labels
        self._dispute_lost_amount = m.dispute_lost_amount.labels
        self._dispute_withdrawn = m.dispute_funds_withdrawn_amount.labels
        self._dispute_reinstated = m.dispute_funds_reinstated_amount.labels
        self._early_fraud_warnings = m.early_fraud_warnings.labels
        self._invoices_paid = m.invoices_paid.labels
        self._invoice_amount_paid = m.invoice_amount_paid.labels
        self._invoice_payment_failures = m.invoice_payment_failures.labels
        self.churn = ChurnSignals(metrics, state)
        self.signals = ChargeSignals(metrics)
        self._handlers: dict[str, Handler] = {
            "charge.succeeded": self._charge_succeeded,
            "charge.captured": self._charge_captured,
            "charge.failed": self._charge_failed,
            "charge.refunded": self._charge_refunds,
            "charge.refund.updated": self._refund_event,
            "charge.updated": self._charge_refunds,
            "refund.created": self._refund_event,
            "refund.updated": self._refund_event,
            "refund.failed": self._refund_event,
            "charge.dispute.created": self._dispute_created,
            "charge.dispute.updated": self._dispute_updated,
            "charge.dispute.closed": self._dispute_closed,
            "charge.dispute.funds_withdrawn": self._dispute_funds_withdrawn,
            "charge.dispute.funds_reinstated": self._dispute_funds_reinstated,
            "radar.early_fraud_warning.created": self._early_fraud_warning,
            "invoice.paid": self._invoice_paid,
            "invoice.payment_failed": self._invoice_payment_failed,
        }

    def apply(self, event_type: str, obj: dict[str, Any], event: dict[str, Any] | None = None) -> None:
        event = event or {}
        handler = self._handlers.get(event_type)
        if handler is not None:
            handler(obj, mode_label(event.get("livemode")), event)
        data = event.get("data")
        self.churn.apply(event_type, obj, data.get("previous_attributes") if isinstance(data, dict) else None)
        self.signals.apply(event_type, obj)

    def _currency(self, obj: dict[str, Any]) -> tuple[str, str | None]:
        """(label value, currency code usable for amounts or None)."""
        code = normalize_currency(obj.get("currency"))
        return self.m.cap_currency(code), code

    def _add_amount(self, counter: Labels, label: str, mode: str, code: str | None, amount: int | None) -> None:
        if code is None or amount is None or amount < 0 or label == "other":
            return
        if not self._sane(amount):
            return
        counter(label, mode).inc(to_major(amount, code))

    def _sane(self, amount: int) -> bool:
        """False (and counted) for an amount no real Stripe object has (exporter.bounds)."""
        if sane_amount(amount):
            return True
        self.m.values_rejected.labels("amount").inc()
        return False

    # -- charges ---------------------------------------------------------------------------------------------

    def _charge_succeeded(self, charge: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        label, code = self._currency(charge)
        self._charges(label, mode).inc()
        # An authorisation without capture collects nothing yet: charge.captured adds it later.
        self._add_amount(self._charge_amount, label, mode, code, captured_amount(charge))

    def _charge_captured(self, charge: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        label, code = self._currency(charge)
        amount = get_int(charge, "amount_captured")
        if amount is None:
            amount = get_int(charge, "amount")
        self._add_amount(self._charge_amount, label, mode, code, amount)

    def _charge_failed(self, charge: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        label, _ = self._currency(charge)
        self._charges(label, mode).inc()
        code = self.m.cap_failure_code(get_str(charge, "failure_code"))
        self._charges_failed(label, code, mode).inc()

    # -- refunds ---------------------------------------------------------------------------------------------

    def _count_refund(self, obj: dict[str, Any], mode: str, out: int, failed: int) -> None:
        label, code = self._currency(obj)
        if out > 0:
            self._refunds(label, mode).inc()
            self._add_amount(self._refund_amount, label, mode, code, out)
        if failed > 0:
            self._refund_failures(label, mode).inc()
            self._add_amount(self._refund_failure_amount, label, mode, code, failed)

    def _refund_event(self, refund: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        refund_id = get_str(refund, "id")
        amount = get_int(refund, "amount")
        if refund_id is None or amount is None or amount <= 0:
            return
        if not self._sane(amount):
            return  # never stored: an absurd amount would hide every later real refund of this charge
        out, failed = self.refund_ledger.refund(
            get_str(refund, "charge"), refund_id, amount, get_str(refund, "status")
        )
        self._count_refund(refund, mode, out, failed)

    def _charge_refunds(self, charge: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        charge_id = get_str(charge, "id")
        previous = get_int(event, "data", "previous_attributes", "amount_refunded")
        if charge_id is None or (event.get("type") == "charge.updated" and previous is None):
            return  # charge.updated matters here only when it says amount_refunded changed
        # Older API versions list the charge's refunds: count those by id first, so that the total below only
        # adds what the list does not show.
        listed = get_dict(charge, "refunds")
        refunds = listed.get("data") if listed else None
        for refund in refunds if isinstance(refunds, list) else ():
            refund_id = get_str(refund, "id")
            amount = get_int(refund, "amount")
            if refund_id is not None and amount is not None and amount > 0 and self._sane(amount):
                out, failed = self.refund_ledger.refund(charge_id, refund_id, amount, get_str(refund, "status"))
                self._count_refund(charge, mode, out, failed)
        total = get_int(charge, "amount_refunded")
        if total is None or total < 0 or not self._sane(total):
            return  # an absurd running total is never stored: it would hide every later real refund
        out, failed = self.refund_ledger.total(charge_id, total, previous)
        self._count_refund(charge, mode, out, failed)

    # -- disputes --------------------------------------------------------------------------------------------

    def _first(self, key: str) -> bool:
        """True the first time `key` is seen (persisted)."""
        if self.state.get(REFUNDS_NS, key) is not None:
            return False
        self.state.put(REFUNDS_NS, key, 1)
        return True

    def _chargeback(self, dispute: dict[str, Any], dispute_id: str, mode: str) -> None:
        if self._first(f"dp:{dispute_id}"):
            self._disputes(self.m.cap_reason(get_str(dispute, "reason")), mode).inc()
            label, code = self._currency(dispute)
            self._add_amount(self._dispute_amount, label, mode, code, get_int(dispute, "amount"))

    def _dispute_created(self, dispute: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        dispute_id = get_str(dispute, "id") or get_str(event, "id") or ""
        if is_inquiry(dispute):
            if self._first(f"dpi:{dispute_id}"):
                self._dispute_inquiries(self.m.cap_reason(get_str(dispute, "reason")), mode).inc()
        else:
            self._chargeback(dispute, dispute_id, mode)

    def _dispute_updated(self, dispute: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        # An inquiry escalated by the bank keeps its dispute id and leaves the warning_* statuses: it becomes a
        # chargeback then. Other updates (evidence submitted, ...) change nothing counted here.
        dispute_id = get_str(dispute, "id")
        if dispute_id is None or is_inquiry(dispute):
            return
        previous = get_str(event, "data", "previous_attributes", "status") or ""
        if previous.startswith("warning_") or self.state.get(REFUNDS_NS, f"dpi:{dispute_id}") is not None:
            self._chargeback(dispute, dispute_id, mode)

    def _dispute_closed(self, dispute: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        dispute_id = get_str(dispute, "id")
        status = get_str(dispute, "status")
        if dispute_id is None or status not in DISPUTE_OUTCOMES or not self._first(f"dpc:{dispute_id}"):
            return
        self._disputes_closed(status, mode).inc()
        if status == "lost":
            label, code = self._currency(dispute)
            self._add_amount(self._dispute_lost_amount, label, mode, code, get_int(dispute, "amount"))

    def _dispute_funds(self, dispute: dict[str, Any], mode: str, counter: Labels, stage: str) -> None:
        dispute_id = get_str(dispute, "id")
        if dispute_id is not None and self._first(f"{stage}:{dispute_id}"):
            label, code = self._currency(dispute)
            self._add_amount(counter, label, mode, code, get_int(dispute, "amount"))

    def _dispute_funds_withdrawn(self, dispute: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        self._dispute_funds(dispute, mode, self._dispute_withdrawn, "dpw")

    def _dispute_funds_reinstated(self, dispute: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        self._dispute_funds(dispute, mode, self._dispute_reinstated, "dpr")

    # -- the rest --------------------------------------------------------------------------------------------

    def _early_fraud_warning(self, warning: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        self._early_fraud_warnings(self.m.cap_fraud_type(get_str(warning, "fraud_type")), mode).inc()

    def _invoice_paid(self, invoice: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        label, code = self._currency(invoice)
        self._invoices_paid(label, mode).inc()
        self._add_amount(self._invoice_amount_paid, label, mode, code, get_int(invoice, "amount_paid"))

    def _invoice_payment_failed(self, invoice: dict[str, Any], mode: str, event: dict[str, Any]) -> None:
        label, _ = self._currency(invoice)
        self._invoice_payment_failures(label, mode).inc()
