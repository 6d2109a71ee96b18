"""Rate signals the payment rules need beyond the per-currency charge counters (docs/CONTRACTS.md, contract 3).

- `stripe_charge_attempts_total{livemode, payer, outcome}`: every charge attempt across currencies (the
  all-currency view, so thin currencies add up), split by payer `customer` / `guest` (no customer on the charge:
  guest checkouts, and the usual shape of card testing) and outcome `succeeded` / `failed`.
- `stripe_charge_failed_payers_total{currency, livemode}`: failed charges of a payer (customer, else card
  fingerprint) who had no other failed charge in the previous hour. A declined customer retrying the same card
  four times is one failing payer, not four independent failures; the failure-spike rule asks for several.
- `stripe_charge_processing_failed_payers_total{livemode}`: the same, across currencies, for failures that are
  not about the card: the processor or the issuer could not handle the charge (`failure_code` or
  `outcome.reason` one of PROCESSING_FAILURES). Healthy accounts see a fraction of a percent of these (cards are
  declined for funds, expiry, CVC or fraud), so a few in a row with nothing succeeding is an outage (docs/detectors.md).
- `stripe_invoice_payment_attempts_total{livemode, session, retry, outcome}`: invoice payment attempts, read from
  `invoice.payment_failed` and `invoice.payment_succeeded`, which every API version sends (the charge's own
  `invoice` link was removed in 2025-03-31.basil, where only invoice payments link the two). `session` is `off`
  for what Stripe charges without the customer present (renewals, prorations, auto-charged invoices), `on` for a
  subscription's first invoice and for invoices the customer pays himself (`send_invoice`); `retry` is `true` from
  the second attempt on (`attempt_count` > 1: Smart Retries / dunning). The rules subtract the off-session
  attempts from all charges to judge on-session checkout failures apart from dunning, which fails far more often.

All labels are bounded: currency by the exporter's currency cap, the others are fixed sets.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from prometheus_client import Counter

from exporter.detectors.payers import payer_key
from exporter.metrics import Metrics, budgeted
from exporter.money import normalize_currency
from exporter.stripe_shapes import get_int, get_str

# A payer failing again within this long is the same episode (a retry), not a new failing payer.
REPEAT_SECONDS = 3600
# Memory bound of the repeat window (~150 bytes each): far above the distinct failing payers of an hour at any
# real volume; beyond it the oldest are forgotten, which can only count a repeat as a new payer.
MAX_REMEMBERED_PAYERS = 20000
# Stripe's codes for "the charge could not be processed", as opposed to "the card was declined": its error code
# processing_error, and the decline codes asking to try again later (issuer unreachable, issuer's own error).
PROCESSING_FAILURES = frozenset({"processing_error", "issuer_not_available", "try_again_later"})


def processing_failure(charge: dict[str, Any]) -> bool:
    """Whether a failed charge failed for the processor or issuer rather than for the card."""
    return (
        get_str(charge, "failure_code") in PROCESSING_FAILURES
        or get_str(charge, "outcome", "reason") in PROCESSING_FAILURES
    )


def _livemode(obj: dict[str, Any]) -> str:
    value = obj.get("livemode")
    return "true" if value is True else "false" if value is False else ""


class ChargeSignals:
    def __init__(self, metrics: Metrics):
        self.m = metrics
        r = metrics.registry
        self._attempts = budgeted(
            Counter,
            "stripe_charge_attempts",
            "Charge attempts of all currencies by payer (customer or guest) and outcome (succeeded, failed).",
            ["livemode", "payer", "outcome"],
            registry=r,
        ).labels
        self._failed_payers = budgeted(
            Counter,
            "stripe_charge_failed_payers",
            "Failed charges of a payer with no other failed charge in the previous hour, by currency.",
            ["currency", "livemode"],
            registry=r,
        ).labels
        self._processing_failed_payers = budgeted(
            Counter,
            "stripe_charge_processing_failed_payers",
            "Charges the processor or issuer could not handle (not declined for the card), of a payer with no other"
            " such failure in the previous hour, all currencies.",
            ["livemode"],
            registry=r,
        ).labels
        self._invoice_attempts = budgeted(
            Counter,
            "stripe_invoice_payment_attempts",
            "Invoice payment attempts by session (off: charged without the customer), retry and outcome.",
            ["livemode", "session", "retry", "outcome"],
            registry=r,
        ).labels
        self._last_failure: OrderedDict[str, int] = OrderedDict()
        self._last_processing_failure: OrderedDict[str, int] = OrderedDict()

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "charge.succeeded":
            self._charge(obj, "succeeded")
        elif event_type == "charge.failed":
            self._charge(obj, "failed")
        elif event_type == "invoice.payment_failed":
            self._invoice(obj, "failed")
        elif event_type == "invoice.payment_succeeded" and (get_int(obj, "amount_paid") or 0) > 0:
            # A zero invoice (a trial) is "paid" without any charge: not an attempt.
            self._invoice(obj, "succeeded")

    def _charge(self, charge: dict[str, Any], outcome: str) -> None:
        mode = _livemode(charge)
        payer = "customer" if get_str(charge, "customer") else "guest"
        self._attempts(mode, payer, outcome).inc()
        if outcome != "failed":
            return
        if _new_failing_payer(self._last_failure, charge):
            currency = self.m.cap_currency(normalize_currency(charge.get("currency")))
            self._failed_payers(currency, mode).inc()
        if processing_failure(charge) and _new_failing_payer(self._last_processing_failure, charge):
            self._processing_failed_payers(mode).inc()

    def _invoice(self, invoice: dict[str, Any], outcome: str) -> None:
        customer_present = (
            get_str(invoice, "collection_method") == "send_invoice"
            or get_str(invoice, "billing_reason") == "subscription_create"
        )
        retry = "true" if (get_int(invoice, "attempt_count") or 0) > 1 else "false"
        self._invoice_attempts(_livemode(invoice), "on" if customer_present else "off", retry, outcome).inc()


def _new_failing_payer(last_failure: OrderedDict[str, int], charge: dict[str, Any]) -> bool:
    """Whether the charge's payer had no failure remembered in `last_failure` within REPEAT_SECONDS (and remember
    this one)."""
    key = payer_key(charge)
    created = get_int(charge, "created")
    if key is None or created is None:
        return True  # nothing ties it to another attempt
    last = last_failure.pop(key, None)
    last_failure[key] = created if last is None else max(last, created)
    while len(last_failure) > MAX_REMEMBERED_PAYERS:
        last_failure.popitem(last=False)
    return last is None or abs(created - last) > REPEAT_SECONDS
