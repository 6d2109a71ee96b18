"""Realistic Stripe events (current API shape unless asked) for `trigger`, the benchmark and simulations.

Objects carry the fields real Stripe objects carry, so a payload weighs what production payloads weigh
(about 2-4 KB); values are plausible, ids random.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

API_VERSION = "2025-03-31.basil"


ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Where new ids' randomness comes from: the OS by default; seeded_ids() swaps in a seeded generator so that a
# simulated history is the same byte for byte on every run.
_id_bits: Callable[[int], int] = secrets.randbits


def new_id(prefix: str, n: int = 24) -> str:
    bits = _id_bits(6 * n)
    # One draw for the whole id (24 secrets.choice calls cost ~15x more); the 64 -> 62 fold is a negligible bias.
    return prefix + "_" + "".join(ID_ALPHABET[((bits >> (6 * i)) & 63) % 62] for i in range(n))


@contextmanager
def seeded_ids(rng: random.Random) -> Iterator[None]:
    """Within this block, ids of sample objects are drawn from `rng` (deterministic), not from the OS."""
    global _id_bits
    previous, _id_bits = _id_bits, rng.getrandbits
    try:
        yield
    finally:
        _id_bits = previous


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header value for `payload` (what Stripe sends, v1 scheme)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def charge(
    *,
    amount: int = 2000,
    currency: str = "usd",
    customer: str | None = "cus_default",
    status: str = "succeeded",
    failure_code: str | None = None,
    fingerprint: str = "Xt5EWLLDS7FJjR1c",
    created: int | None = None,
    charge_id: str | None = None,
    amount_refunded: int = 0,
    livemode: bool = False,
) -> dict[str, Any]:
    created = int(time.time()) if created is None else created
    succeeded = status == "succeeded"
    return {
        "id": charge_id or new_id("ch"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if succeeded else 0,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": new_id("txn") if succeeded else None,
        "billing_details": {
            "address": {
                "city": "Berlin",
                "country": "DE",
                "line1": None,
                "line2": None,
                "postal_code": "10115",
                "state": None,
            },
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "BILLINGWATCH",
        "captured": succeeded,
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": "Subscription update",
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": failure_code,
        "failure_message": "Your card was declined." if failure_code else None,
        "fraud_details": {},
        "livemode": livemode,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network" if succeeded else "declined_by_network",
            "reason": None if succeeded else "generic_decline",
            "risk_level": "normal",
            "risk_score": 32,
            "seller_message": "Payment complete."
            if succeeded
            else "The bank did not return any further details.",
            "type": "authorized" if succeeded else "issuer_declined",
        },
        "paid": succeeded,
        "payment_intent": new_id("pi"),
        "payment_method": new_id("pm"),
        "payment_method_details": {
            "card": {
                "amount_authorized": amount if succeeded else None,
                "brand": "visa",
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": "pass",
                    "cvc_check": "pass",
                },
                "country": "US",
                "exp_month": 8,
                "exp_year": 2030,
                "extended_authorization": {"status": "disabled"},
                "fingerprint": fingerprint,
                "funding": "credit",
                "incremental_authorization": {"status": "unavailable"},
                "installments": None,
                "last4": "4242",
                "mandate": None,
                "multicapture": {"status": "unavailable"},
                "network": "visa",
                "network_token": {"used": False},
                "network_transaction_id": "104102978678771",
                "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
                "regulated_status": "unregulated",
                "three_d_secure": None,
                "wallet": None,
            },
            "type": "card",
        },
        "radar_options": {},
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": "https://pay.stripe.com/receipts/payment/placeholder",
        "refunded": amount_refunded >= amount > 0,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def invoice(
    *,
    total: int = 2000,
    currency: str = "usd",
    customer: str = "cus_default",
    subscription: str | None = "sub_default",
    status: str = "paid",
    billing_reason: str = "subscription_cycle",
    created: int | None = None,
    invoice_id: str | None = None,
    basil: bool = True,
    livemode: bool = False,
    period_start: int | None = None,
    period_end: int | None = None,
) -> dict[str, Any]:
    created = int(time.time()) if created is None else created
    paid = status == "paid"
    period_start = created if period_start is None else period_start
    period_end = created + 30 * 86400 if period_end is None else period_end
    inv: dict[str, Any] = {
        "id": invoice_id or new_id("in"),
        "object": "invoice",
        "account_country": "US",
        "account_name": "BillingWatch Demo",
        "amount_due": max(total, 0),
        "amount_paid": max(total, 0) if paid else 0,
        "amount_remaining": 0 if paid else max(total, 0),
        "amount_shipping": 0,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": not paid,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "customer_email": None,
        "customer_name": None,
        "customer_tax_exempt": "none",
        "default_payment_method": None,
        "description": None,
        "discounts": [],
        "due_date": None,
        "ending_balance": 0,
        "hosted_invoice_url": "https://invoice.stripe.com/i/placeholder",
        "invoice_pdf": "https://pay.stripe.com/invoice/placeholder/pdf",
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": new_id("il"),
                    "object": "line_item",
                    "amount": total,
                    "currency": currency,
                    "description": "1 × Pro plan (at $20.00 / month)",
                    "period": {"start": period_start, "end": period_end},
                    "quantity": 1,
                }
            ],
            "has_more": False,
            "url": "/v1/invoices/placeholder/lines",
        },
        "livemode": livemode,
        "metadata": {},
        "number": "BW-0001",
        "period_end": period_end,
        "period_start": period_start,
        "starting_balance": 0,
        "status": status,
        "status_transitions": {
            "finalized_at": created,
            "marked_uncollectible_at": None,
            "paid_at": created if paid else None,
            "voided_at": None,
        },
        "subtotal": total,
        "tax": None,
        "total": total,
        "total_discount_amounts": [],
        "webhooks_delivered_at": created,
    }
    if basil:
        inv["parent"] = {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription} if subscription else None,
            "type": "subscription_details" if subscription else "invoice_item_details",
        }
    else:
        inv["subscription"] = subscription
        inv["charge"] = new_id("ch") if paid else None
        inv["payment_intent"] = new_id("pi")
        inv["paid"] = paid
    return inv


def subscription(
    *,
    customer: str = "cus_default",
    subscription_id: str | None = None,
    status: str = "active",
    unit_amount: int = 2000,
    quantity: int = 1,
    currency: str = "usd",
    interval: str = "month",
    interval_count: int = 1,
    created: int | None = None,
    current_period_start: int | None = None,
    current_period_end: int | None = None,
    basil: bool = True,
    livemode: bool = False,
) -> dict[str, Any]:
    created = int(time.time()) if created is None else created
    start = created if current_period_start is None else current_period_start
    end = start + 30 * 86400 if current_period_end is None else current_period_end
    sub_id = subscription_id or new_id("sub")
    item: dict[str, Any] = {
        "id": new_id("si", 14),
        "object": "subscription_item",
        "created": created,
        "metadata": {},
        "price": {
            "id": new_id("price"),
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "currency": currency,
            "product": new_id("prod", 14),
            "recurring": {
                "interval": interval,
                "interval_count": interval_count,
                "usage_type": "licensed",
                "meter": None,
                "trial_period_days": None,
            },
            "type": "recurring",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        },
        "quantity": quantity,
        "subscription": sub_id,
        "tax_rates": [],
    }
    sub: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": start,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "days_until_due": None,
        "default_payment_method": None,
        "discounts": [],
        "ended_at": None,
        "items": {"object": "list", "data": [item], "has_more": False, "url": "/v1/subscription_items"},
        "latest_invoice": None,
        "livemode": livemode,
        "metadata": {},
        "start_date": created,
        "status": status,
        "trial_end": None,
        "trial_start": None,
    }
    if basil:
        item["current_period_start"] = start
        item["current_period_end"] = end
    else:
        sub["current_period_start"] = start
        sub["current_period_end"] = end
        item["plan"] = {
            "id": item["price"]["id"],
            "object": "plan",
            "amount": unit_amount,
            "currency": currency,
            "interval": interval,
            "interval_count": interval_count,
        }
    return sub


def dispute(
    *,
    charge_id: str,
    amount: int = 2000,
    currency: str = "usd",
    reason: str = "fraudulent",
    created: int | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    created = int(time.time()) if created is None else created
    return {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge_id,
        "created": created,
        "currency": currency,
        "evidence_details": {
            "due_by": created + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": livemode,
        "metadata": {},
        "payment_intent": new_id("pi"),
        "reason": reason,
        "status": "needs_response",
    }


def early_fraud_warning(
    *,
    charge_id: str,
    fraud_type: str = "made_with_stolen_card",
    created: int | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    created = int(time.time()) if created is None else created
    return {
        "id": new_id("issfr"),
        "object": "radar.early_fraud_warning",
        "actionable": True,
        "charge": charge_id,
        "created": created,
        "fraud_type": fraud_type,
        "livemode": livemode,
        "payment_intent": new_id("pi"),
    }


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int | None = None,
    event_id: str | None = None,
    api_version: str = API_VERSION,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    created = int(time.time()) if created is None else created
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": bool(obj.get("livemode", False)),
        "pending_webhooks": 1,
        "request": {"id": new_id("req", 14), "idempotency_key": new_id("ik", 20)},
        "type": event_type,
    }


def trigger_event(event_type: str, *, livemode: bool = False) -> dict[str, Any]:
    """One event of `event_type`, as `stripe trigger` would cause it."""
    now = int(time.time())
    customer = new_id("cus", 14)
    if event_type in ("charge.succeeded", "charge.captured"):
        obj = charge(customer=customer, created=now, livemode=livemode)
    elif event_type == "charge.failed":
        obj = charge(
            customer=customer, status="failed", failure_code="card_declined", created=now, livemode=livemode
        )
    elif event_type == "charge.refunded":
        obj = charge(customer=customer, created=now, amount_refunded=2000, livemode=livemode)
    elif event_type == "charge.dispute.created":
        obj = dispute(charge_id=new_id("ch"), created=now, livemode=livemode)
    elif event_type == "radar.early_fraud_warning.created":
        obj = early_fraud_warning(charge_id=new_id("ch"), created=now, livemode=livemode)
    elif event_type.startswith("invoice."):
        status = {
            "invoice.paid": "paid",
            "invoice.payment_succeeded": "paid",
            "invoice.voided": "void",
            "invoice.marked_uncollectible": "uncollectible",
        }.get(event_type, "open")
        obj = invoice(
            customer=customer, subscription=new_id("sub"), status=status, created=now, livemode=livemode
        )
    elif event_type.startswith("customer.subscription."):
        status = "canceled" if event_type == "customer.subscription.deleted" else "active"
        obj = subscription(customer=customer, status=status, created=now, livemode=livemode)
    else:
        raise ValueError(
            f"no sample for event type {event_type!r}; choose one of: {', '.join(TRIGGER_TYPES)}"
        )
    return event(event_type, obj, created=now)


TRIGGER_TYPES = (
    "charge.succeeded",
    "charge.failed",
    "charge.captured",
    "charge.refunded",
    "charge.dispute.created",
    "radar.early_fraud_warning.created",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
