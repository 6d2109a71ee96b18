"""Realistic, distinct, correctly signed webhook requests, rendered fast enough not to be what is measured.

Each event type is rendered once with `exporter.samples` builders into a JSON template holding sentinel values
(event id, object id, customer, subscription, related charge, created time, amount). Per event only the
sentinels are substituted (a list join) and the HMAC is computed (one C call), so the load generator spends a few
microseconds per event and the server under test stays the bottleneck.
"""

from __future__ import annotations

import hmac
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from exporter import samples

# Sentinels: strings and integers that never occur in a rendered sample by chance.
EVT, OBJ, CUS, SUB, CH = "@@EVT@@", "@@OBJ@@", "@@CUS@@", "@@SUB@@", "@@CH@@"
CREATED = 1111111111
AMOUNT = 987654321
_SLOT_RE = re.compile(rb"(@@EVT@@|@@OBJ@@|@@CUS@@|@@SUB@@|@@CH@@|1111111111|987654321)")
_SLOT_NAMES = {
    b"@@EVT@@": "evt",
    b"@@OBJ@@": "obj",
    b"@@CUS@@": "cus",
    b"@@SUB@@": "sub",
    b"@@CH@@": "ch",
    b"1111111111": "created",
    b"987654321": "amount",
}

# Currency -> range of amounts in its minor unit (jpy has none, kwd has three decimals): plausible prices.
CURRENCIES: dict[str, tuple[int, int]] = {
    "usd": (500, 50_000),
    "eur": (500, 50_000),
    "gbp": (500, 40_000),
    "cad": (500, 60_000),
    "aud": (500, 60_000),
    "jpy": (300, 60_000),
    "krw": (5_000, 600_000),
    "kwd": (1_000, 150_000),
    "bhd": (1_000, 150_000),
}
CURRENCY_WEIGHTS = {"usd": 40, "eur": 20, "gbp": 10, "cad": 5, "aud": 5, "jpy": 10, "krw": 3, "kwd": 5, "bhd": 2}

# Event type -> share of the traffic (roughly a subscription business: mostly charges and invoices).
TYPE_WEIGHTS: dict[str, float] = {
    "charge.succeeded": 30,
    "charge.failed": 6,
    "charge.refunded": 3,
    "charge.dispute.created": 1,
    # About 0.3 % of successful charges: a merchant near 1 % is in the card networks' fraud programmes already.
    "radar.early_fraud_warning.created": 0.1,
    "invoice.created": 8,
    "invoice.finalized": 8,
    "invoice.paid": 16,
    "invoice.payment_failed": 3,
    "customer.subscription.created": 6,
    "customer.subscription.updated": 14,
    "customer.subscription.deleted": 4,
}
FAILURE_CODES = ("card_declined", "insufficient_funds", "expired_card", "incorrect_cvc", "processing_error")
DISPUTE_REASONS = ("fraudulent", "product_not_received", "duplicate", "subscription_canceled")
FRAUD_TYPES = ("made_with_stolen_card", "unauthorized_use_of_card", "card_never_received")

# Fields real Stripe objects carry that the sample builders leave out; they bring payloads to production size.
_DISPUTE_EVIDENCE = dict.fromkeys(
    (
        "access_activity_log billing_address cancellation_policy cancellation_policy_disclosure "
        "cancellation_rebuttal customer_communication customer_email_address customer_name customer_purchase_ip "
        "customer_signature duplicate_charge_documentation duplicate_charge_explanation duplicate_charge_id "
        "product_description receipt refund_policy refund_policy_disclosure refund_refusal_explanation "
        "service_date service_documentation shipping_address shipping_carrier shipping_date "
        "shipping_documentation shipping_tracking_number uncategorized_file uncategorized_text"
    ).split()
)


def _metadata(i: int) -> dict[str, str]:
    return {
        "order_id": f"ORD-{100000 + i}",
        "plan": "pro_monthly",
        "source": "checkout",
        "tenant": "eu-west-1",
        "account_manager": "team-emea",
        "internal_customer_ref": f"acct-{7000 + i}",
        "campaign": "spring-upgrade-2026",
        "integration_version": "billing-svc@4.12.3",
    }


# Nullable fields present on real invoices and subscriptions (shape only).
_INVOICE_EXTRA = {
    "account_tax_ids": None,
    "application": None,
    "automatically_finalizes_at": None,
    "custom_fields": None,
    "customer_phone": None,
    "customer_shipping": None,
    "effective_at": None,
    "from_invoice": None,
    "issuer": {"type": "self"},
    "last_finalization_error": None,
    "latest_revision": None,
    "next_payment_attempt": None,
    "on_behalf_of": None,
    "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
    "post_payment_credit_notes_amount": 0,
    "pre_payment_credit_notes_amount": 0,
    "receipt_number": None,
    "shipping_cost": None,
    "shipping_details": None,
    "statement_descriptor": None,
    "test_clock": None,
    "threshold_reason": None,
    "total_excluding_tax": None,
    "total_pretax_credit_amounts": [],
    "total_taxes": [],
    "transfer_data": None,
}
_SUBSCRIPTION_EXTRA = {
    "application": None,
    "application_fee_percent": None,
    "billing_cycle_anchor_config": None,
    "billing_thresholds": None,
    "cancellation_details": {"comment": None, "feedback": None, "reason": None},
    "default_source": None,
    "default_tax_rates": [],
    "description": None,
    "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
    "next_pending_invoice_item_invoice": None,
    "on_behalf_of": None,
    "pause_collection": None,
    "pending_invoice_item_interval": None,
    "pending_setup_intent": None,
    "pending_update": None,
    "schedule": None,
    "test_clock": None,
    "transfer_data": None,
    "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
}


@dataclass(frozen=True)
class Template:
    event_type: str
    currency: str
    obj_prefix: str
    parts: tuple[bytes | str, ...]  # literal bytes, or the name of a slot to fill


def _compile(event_type: str, currency: str, obj_prefix: str, event: dict[str, Any]) -> Template:
    blob = orjson.dumps(event)
    pieces = _SLOT_RE.split(blob)
    parts: list[bytes | str] = []
    for n, piece in enumerate(pieces):
        if n % 2:
            parts.append(_SLOT_NAMES[piece])
        elif piece:
            parts.append(piece)
    return Template(event_type, currency, obj_prefix, tuple(parts))


def _event(event_type: str, obj: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ev = samples.event(event_type, obj, created=CREATED, event_id=EVT, **extra)
    ev["request"] = {"id": "req_" + "Q3x8Lm2Zp0Rt9V", "idempotency_key": "c0a8f1e2-7b6d-4e5f-9a8b-1c2d3e4f5a6b"}
    return ev


def _build(event_type: str, currency: str, variant: int, base: int) -> Template:
    """One template of `event_type` in `currency`; `variant` varies codes/reasons and the API shape.

    `base` (now) anchors the periods and due dates that are not substituted per event, so that none lies in
    the past as seen by the detectors.
    """
    basil = variant % 3 != 0  # a third of the invoices/subscriptions in the pre-2025 shape
    if event_type.startswith("charge.") and event_type != "charge.dispute.created":
        failed = event_type == "charge.failed"
        obj = samples.charge(
            amount=AMOUNT,
            currency=currency,
            customer=CUS,
            status="failed" if failed else "succeeded",
            failure_code=FAILURE_CODES[variant % len(FAILURE_CODES)] if failed else None,
            fingerprint=f"Fp{variant:04d}x7Kq2LmZ",
            created=CREATED,
            charge_id=OBJ,
            amount_refunded=AMOUNT if event_type == "charge.refunded" else 0,
        )
        obj["metadata"] = _metadata(variant)
        obj["description"] = f"Invoice BW-{variant:06d} (Pro plan, monthly)"
        obj["billing_details"]["email"] = None
        obj["refunds"] = {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": "/v1/refunds"}
        obj["source"] = None
        obj["payment_method_details"]["card"]["network_transaction_id"] = f"{104102978678771 + variant}"
        return _compile(event_type, currency, "ch", _event(event_type, obj))
    if event_type == "charge.dispute.created":
        obj = samples.dispute(
            charge_id=CH,
            amount=AMOUNT,
            currency=currency,
            reason=DISPUTE_REASONS[variant % len(DISPUTE_REASONS)],
            created=CREATED,
        )
        obj["id"] = OBJ
        obj["evidence_details"]["due_by"] = base + 7 * 86400
        obj["evidence"] = dict(_DISPUTE_EVIDENCE)
        obj["payment_method_details"] = {"card": {"brand": "visa", "network_reason_code": "10.4"}, "type": "card"}
        obj["metadata"] = _metadata(variant)
        return _compile(event_type, currency, "dp", _event(event_type, obj))
    if event_type == "radar.early_fraud_warning.created":
        obj = samples.early_fraud_warning(
            charge_id=CH, fraud_type=FRAUD_TYPES[variant % len(FRAUD_TYPES)], created=CREATED
        )
        obj["id"] = OBJ
        return _compile(event_type, currency, "issfr", _event(event_type, obj))
    if event_type.startswith("invoice."):
        status = {"invoice.paid": "paid", "invoice.created": "draft"}.get(event_type, "open")
        obj = samples.invoice(
            total=AMOUNT,
            currency=currency,
            customer=CUS,
            subscription=SUB,
            status=status,
            created=CREATED,
            invoice_id=OBJ,
            basil=basil,
            period_start=base - 30 * 86400,
            period_end=base,
        )
        obj["metadata"] = _metadata(variant)
        obj["customer_address"] = {
            "city": "Berlin",
            "country": "DE",
            "line1": None,
            "line2": None,
            "postal_code": "10115",
            "state": None,
        }
        obj["footer"] = None
        obj.update(_INVOICE_EXTRA)
        obj["rendering"] = {"amount_tax_display": None, "pdf": {"page_size": "letter"}, "template": None}
        return _compile(event_type, currency, "in", _event(event_type, obj))
    if event_type.startswith("customer.subscription."):
        status = "canceled" if event_type.endswith(".deleted") else "active"
        obj = samples.subscription(
            customer=CUS,
            subscription_id=SUB,
            status=status,
            unit_amount=AMOUNT,
            currency=currency,
            created=CREATED,
            current_period_start=base,
            current_period_end=base + 30 * 86400,
            basil=basil,
        )
        obj["metadata"] = _metadata(variant)
        obj["automatic_tax"] = {"disabled_reason": None, "enabled": False, "liability": None}
        obj.update(_SUBSCRIPTION_EXTRA)
        obj["payment_settings"] = {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        }
        extra: dict[str, Any] = {}
        if event_type.endswith(".updated"):
            extra["previous_attributes"] = {"items": obj["items"], "metadata": {"plan": "basic_monthly"}}
        return _compile(event_type, currency, "sub", _event(event_type, obj, **extra))
    raise ValueError(f"no template for {event_type}")


def build_templates(seed: int = 7, per_type: int = 12) -> list[tuple[Template, float]]:
    """(template, weight) for every event type across currencies; weights give the traffic mix."""
    rng = random.Random(seed)
    currencies = list(CURRENCY_WEIGHTS)
    out: list[tuple[Template, float]] = []
    base = int(time.time())
    for event_type, type_weight in TYPE_WEIGHTS.items():
        for variant in range(per_type):
            currency = (
                currencies[variant % len(currencies)]
                if variant < len(currencies)
                else rng.choices(currencies, weights=list(CURRENCY_WEIGHTS.values()))[0]
            )
            out.append((_build(event_type, currency, variant, base), type_weight * CURRENCY_WEIGHTS[currency]))
    return out


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class RequestFactory:
    """Renders signed HTTP/1.1 POST requests of distinct events, in the same mix every run of a given seed."""

    def __init__(
        self,
        secret: str,
        host: str,
        port: int,
        *,
        id_prefix: str,
        customers: int = 50_000,
        seed: int = 7,
        path: str = "/webhooks/stripe",
    ):
        self._key = secret.encode()
        self._id_prefix = id_prefix
        self._customers = customers
        weighted = build_templates(seed)
        # A pre-drawn cycle of templates reproduces the weights without a weighted draw per event; it is the
        # same for every factory of a seed.
        self._cycle = random.Random(seed).choices([t for t, _ in weighted], weights=[w for _, w in weighted], k=4096)
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
            "Accept: */*; q=0.5, application/xml\r\nCache-Control: no-cache\r\n"
            "Content-Type: application/json; charset=utf-8\r\nStripe-Signature: t="
        ).encode()
        # Customers and amounts differ between factories (runs, phases): a replay of the same (customer, amount)
        # sequence with new ids would look like duplicate charges to the detectors.
        self._rng = random.Random(f"{seed}:{id_prefix}")
        self.count = 0
        self.bytes_out = 0
        self._ts = 0
        self._ts_bytes = b""

    @property
    def templates(self) -> list[Template]:
        return list(dict.fromkeys(self._cycle))

    def body(self, n: int, now: int) -> bytes:
        """The JSON body of the n-th event of this factory."""
        tpl = self._cycle[n & 4095]
        uniq = f"{self._id_prefix}{n:012d}"
        rng = self._rng
        cus_n = rng.randrange(self._customers)
        lo, hi = CURRENCIES[tpl.currency]
        values = {
            "evt": f"evt_{uniq}",
            "obj": f"{tpl.obj_prefix}_{uniq}",
            "cus": f"cus_{cus_n:014d}",
            "sub": f"sub_{cus_n:014d}",
            "ch": f"ch_{uniq}",
            "created": str(now),
            "amount": str(rng.randrange(lo, hi)),
        }
        return b"".join(p if isinstance(p, bytes) else values[p].encode() for p in tpl.parts)

    def next_request(self) -> bytes:
        now = int(time.time())
        if now != self._ts:
            self._ts = now
            self._ts_bytes = str(now).encode()
        body = self.body(self.count, now)
        self.count += 1
        ts = self._ts_bytes
        mac = hmac.digest(self._key, ts + b"." + body, "sha256").hex().encode()
        req = b"".join(
            (self._head, ts, b",v1=", mac, b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        )
        self.bytes_out += len(body)
        return req


def id_prefix(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    return "".join(rng.choice(_ALPHABET) for _ in range(8))
