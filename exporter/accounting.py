"""Turns one verified, first-seen Stripe event into metric updates.

Each handler reads only the fields it needs and skips what is malformed: a signed event with odd field types is
still counted as far as it is valid (stripe_events_total always), never rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.charge_signals import ChargeSignals
from exporter.metrics import Children, Metrics
from exporter.money import normalize_currency, to_major
from exporter.state import StateStore
from exporter.stripe_shapes import captured_amount, get_int, get_str

# charge.refunded carries a running `amount_refunded`; we count what it grew by, per charge, so that redelivered,
# out-of-order and partial refunds each count once. Stripe allows refunds up to 180 days after a charge.
REFUNDS_NS = "refunded"
REFUNDS_RETENTION_SECONDS = 190 * 86400


class Accounting:
    def __init__(self, metrics: Metrics, state: StateStore):
        self.m = metrics
        self.state = state
        # Memoised children of every labelled counter written here (see metrics.Children).
        m = metrics
        self._charges = Children(m.charges)
        self._charges_failed = Children(m.charges_failed)
        self._charge_amount = Children(m.charge_amount)
        self._refunds = Children(m.refunds)
        self._refund_amount = Children(m.refund_amount)
        self._disputes = Children(m.disputes)
        self._dispute_amount = Children(m.dispute_amount)
        self._early_fraud_warnings = Children(m.early_fraud_warnings)
        self._invoices_paid = Children(m.invoices_paid)
        self._invoice_amount_paid = Children(m.invoice_amount_paid)
        self._invoice_payment_failures = Children(m.invoice_payment_failures)
        self.signals = ChargeSignals(metrics)
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "charge.succeeded": self._charge_succeeded,
            "charge.captured": self._charge_captured,
            "charge.failed": self._charge_failed,
            "charge.refunded": self._charge_refunded,
            "charge.dispute.created": self._dispute_created,
            "radar.early_fraud_warning.created": self._early_fraud_warning,
            "invoice.paid": self._invoice_paid,
            "invoice.payment_failed": self._invoice_payment_failed,
        }

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        handler = self._handlers.get(event_type)
        if handler is not None:
            handler(obj)
        self.signals.apply(event_type, obj)

    def _currency(self, obj: dict[str, Any]) -> tuple[str, str | None]:
        """(label value, currency code usable for amounts or None)."""
        code = normalize_currency(obj.get("currency"))
        return self.m.cap_currency(code), code

    def _add_amount(self, counter: Children, label: str, code: str | None, amount: int | None) -> None:
        if code is None or amount is None or amount < 0 or label == "other":
            return
        counter(label).inc(to_major(amount, code))

    def _charge_succeeded(self, charge: dict[str, Any]) -> None:
        label, code = self._currency(charge)
        self._charges(label).inc()
        # An authorisation without capture collects nothing yet: charge.captured adds it later.
        self._add_amount(self._charge_amount, label, code, captured_amount(charge))

    def _charge_captured(self, charge: dict[str, Any]) -> None:
        label, code = self._currency(charge)
        amount = get_int(charge, "amount_captured")
        if amount is None:
            amount = get_int(charge, "amount")
        self._add_amount(self._charge_amount, label, code, amount)

    def _charge_failed(self, charge: dict[str, Any]) -> None:
        label, _ = self._currency(charge)
        self._charges(label).inc()
        code = self.m.cap_failure_code(get_str(charge, "failure_code"))
        self._charges_failed(label, code).inc()

    def _charge_refunded(self, charge: dict[str, Any]) -> None:
        charge_id = get_str(charge, "id")
        total = get_int(charge, "amount_refunded")
        if charge_id is None or total is None:
            return
        previous = self.state.get(REFUNDS_NS, charge_id) or 0
        if total <= previous:
            return  # an older snapshot arriving late, or nothing new
        self.state.put(REFUNDS_NS, charge_id, total)
        label, code = self._currency(charge)
        self._refunds(label).inc()
        self._add_amount(self._refund_amount, label, code, total - previous)

    def _dispute_created(self, dispute: dict[str, Any]) -> None:
        self._disputes(self.m.cap_reason(get_str(dispute, "reason"))).inc()
        label, code = self._currency(dispute)
        self._add_amount(self._dispute_amount, label, code, get_int(dispute, "amount"))

    def _early_fraud_warning(self, warning: dict[str, Any]) -> None:
        self._early_fraud_warnings(self.m.cap_fraud_type(get_str(warning, "fraud_type"))).inc()

    def _invoice_paid(self, invoice: dict[str, Any]) -> None:
        label, code = self._currency(invoice)
        self._invoices_paid(label).inc()
        self._add_amount(self._invoice_amount_paid, label, code, get_int(invoice, "amount_paid"))

    def _invoice_payment_failed(self, invoice: dict[str, Any]) -> None:
        label, _ = self._currency(invoice)
        self._invoice_payment_failures(label).inc()
