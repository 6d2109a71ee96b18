"""Stripe amounts are integers in a currency's minor unit; metrics carry major units."""

from __future__ import annotations

import re

# Stripe's zero-decimal currencies: the amount is already in whole units.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
# Three-decimal currencies: the amount is in thousandths.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

_CURRENCY_RE = re.compile(r"^[a-z]{3}$")


def normalize_currency(value: object) -> str | None:
    """Lower-case ISO code, or None when the value cannot be a currency code."""
    if not isinstance(value, str):
        return None
    code = value.strip().lower()
    return code if _CURRENCY_RE.match(code) else None


def minor_unit_exponent(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def to_major(amount: int, currency: str) -> float:
    """1999 usd -> 19.99; 1999 jpy -> 1999.0; 1999 kwd -> 1.999."""
    exponent = minor_unit_exponent(currency)
    return amount / (10**exponent) if exponent else float(amount)

