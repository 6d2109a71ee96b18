"""Who paid, in a form that is safe to keep, log and show (card fingerprints never leave this module)."""

from __future__ import annotations

import hashlib
from typing import Any

from exporter.stripe_shapes import get_str


def card_ref(fingerprint: str) -> str:
    """A stable, non-reversible reference to a card: 'card:' + 12 hex digits of its fingerprint's SHA-256."""
    return "card:" + hashlib.sha256(fingerprint.encode()).hexdigest()[:12]


def payer_of(charge: dict[str, Any]) -> tuple[str | None, str | None]:
    """(payer key, customer id): the customer, or for guest checkouts a hashed card fingerprint (customer None)."""
    customer = get_str(charge, "customer")
    if customer:
        return customer, customer
    fingerprint = get_str(charge, "payment_method_details", "card", "fingerprint")
    if fingerprint:
        return card_ref(fingerprint), None
    return None, None
