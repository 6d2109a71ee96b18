"""Who paid, in a form that is safe to keep, log and show (card fingerprints never leave this module)."""

from __future__ import annotations

import hashlib
from typing import Any

from exporter.stripe_shapes import get_str


def card_ref(fingerprint: str) -> str:
    """A stable, non-reversible reference to a card: 'card:' + 12 hex digits of its fingerprint's SHA-256."""
    return "card:" + hashlib.sha256(fingerprint.encode()).hexdigest()[:12]


def identities_of(charge: dict[str, Any], livemode: bool) -> list[str]:
    """Every name under which a charge's payer is known: its customer id and, in live mode, its card.

    The same card is the same payer even under two customer ids (two Checkout sessions each creating a customer).
    In test mode a card is nobody: Stripe's test cards (4242...) have one fingerprint for everyone who tests on
    the account, so only the customer id identifies a test payer.
    """
    out = []
    customer = get_str(charge, "customer")
    if customer:
        out.append(customer)
    fingerprint = get_str(charge, "payment_method_details", "card", "fingerprint")
    if fingerprint and livemode:
        out.append(card_ref(fingerprint))
    return out


def payer_key(charge: dict[str, Any]) -> str | None:
    """One name for a charge's payer, to tell repeated attempts of one payer apart from many payers: the customer,
    else (a guest checkout) the hashed card."""
    customer = get_str(charge, "customer")
    if customer:
        return customer
    fingerprint = get_str(charge, "payment_method_details", "card", "fingerprint")
    return card_ref(fingerprint) if fingerprint else None
