"""What the ledger reads from a Subscription object, in every API shape.

Basil (2025-03-31+) moved `current_period_start/end` from the Subscription onto each item, and replaced the
singular `discount` by a `discounts` list; clover (2025-09-30+) moved a Discount's `coupon` under
`source.coupon`. Older shapes also carry a legacy `plan` on each item.

Monthly value: each licensed item's price for its quantity (per unit, or by its tiers: volume or graduated),
normalised to a month; the ledger then applies the discounts (exporter/detectors/discounts.py).
Metered prices add nothing (their amount is only known from usage), nor tiered prices whose `tiers` the payload
omits (Stripe includes them only when expanded). Taxes are not included.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from exporter.detectors.discounts import DiscountRef, subscription_discounts
from exporter.money import normalize_currency
from exporter.stripe_shapes import get_dict, get_int

# Months' worth of one billing `interval`, inverted: the monthly value of an amount billed once per interval is
# amount * factor (a yearly price counts 1/12 a month, a weekly one 52/12 times, a daily one 365/12 times).
MONTHS_FACTOR = {"day": 365 / 12, "week": 52 / 12, "month": 1.0, "year": 1 / 12}
# The longest an interval can last, for "no payment within one billing interval" (generous on purpose).
INTERVAL_SECONDS = {"day": 86400, "week": 7 * 86400, "month": 31 * 86400, "year": 366 * 86400}


class SubscriptionView(NamedTuple):
    status: str | None
    customer: str | None
    currency: str | None
    list_monthly_minor: float  # before discounts (the ledger applies them: exporter/detectors/discounts.py)
    invoices_per_month: float
    discounts: list[DiscountRef] | None  # None: the payload does not say
    interval_seconds: int
    period_start: int | None
    period_end: int | None
    trial_end: int | None
    cancel_at: int | None
    cancel_at_period_end: bool
    send_invoice_days: int  # -1 for charge_automatically
    collection_paused: bool


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _str(value: Any) -> str | None:
    if type(value) is dict:  # an expanded reference
        value = value.get("id")
    return value if type(value) is str and value else None


def _number(value: Any) -> float | None:
    """An integer amount, or Stripe's `*_decimal` string form (fractions of a minor unit)."""
    if type(value) is int:
        return float(value)
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _field(obj: dict[str, Any], name: str) -> float | None:
    found = _number(obj.get(name))
    return found if found is not None else _number(obj.get(f"{name}_decimal"))


def price_amount(price: dict[str, Any], quantity: int) -> float | None:
    """What one billing period of `quantity` units of `price` costs (minor units), or None when unknown."""
    if price.get("billing_scheme") == "tiered":
        tiers = price.get("tiers")
        if type(tiers) is not list or not tiers:
            return None  # not expanded in the payload
        return _tiered(tiers, quantity, price.get("tiers_mode"))
    amount = _field(price, "unit_amount")
    if amount is None:
        amount = _field(price, "amount")  # legacy Plan
    if amount is None:
        return None
    units: float = quantity
    transform = price.get("transform_quantity") or price.get("transform_usage")
    if type(transform) is dict and type(transform.get("divide_by")) is int and transform["divide_by"] > 0:
        units = quantity / transform["divide_by"]
        units = math.floor(units) if transform.get("round") == "down" else math.ceil(units)
    return amount * units


def _tiered(tiers: list[Any], quantity: int, mode: Any) -> float | None:
    total = 0.0
    lower = 0  # units covered by the tiers before this one
    for tier in tiers:
        if type(tier) is not dict:
            return None
        up_to = tier.get("up_to")
        top = up_to if type(up_to) is int else None  # None: "inf", the last tier
        unit = _field(tier, "unit_amount") or 0.0
        flat = _field(tier, "flat_amount") or 0.0
        if mode == "volume":
            if top is None or quantity <= top:
                return unit * quantity + flat  # every unit at the price of the tier the quantity falls in
            continue
        # graduated: each tier prices the units that fall in it
        if quantity <= lower:
            break
        in_tier = quantity - lower if top is None else min(quantity, top) - lower
        total += unit * in_tier + flat
        if top is None:
            break
        lower = top
    return total if mode != "volume" else None


def read_subscription(sub: dict[str, Any]) -> SubscriptionView:
    """Hot path (every subscription event): plain dict access, every field type-checked."""
    items_list = sub.get("items")
    items = items_list.get("data") if type(items_list) is dict else None
    monthly = 0.0
    per_month = 0.0
    interval_seconds = 0
    currency = normalize_currency(sub.get("currency"))
    start = end = None
    for item in items if type(items) is list else ():
        if type(item) is not dict:
            continue
        price = item.get("price")
        if type(price) is not dict:
            price = item.get("plan")
            if type(price) is not dict:
                price = {}
        recurring = price.get("recurring")
        if type(recurring) is not dict:
            recurring = price  # the legacy Plan carries the interval fields itself
        interval = recurring.get("interval")
        count = _int(recurring.get("interval_count")) or 1
        if currency is None:
            currency = normalize_currency(price.get("currency"))
        if interval in INTERVAL_SECONDS and 0 < count <= 1000:
            interval_seconds = max(interval_seconds, INTERVAL_SECONDS[interval] * count)
            per_month = max(per_month, MONTHS_FACTOR[interval] / count)
            if recurring.get("usage_type") != "metered":
                quantity = _int(item.get("quantity"))
                if quantity is None:
                    quantity = _int(sub.get("quantity")) or 1
                unit = price.get("unit_amount")
                plain = price.get("billing_scheme") != "tiered" and not price.get("transform_quantity")
                if type(unit) is int and plain:
                    amount: float | None = float(unit * quantity)  # the common per-unit price, on the hot path
                else:
                    amount = price_amount(price, quantity) if quantity > 0 else None
                if amount is not None and amount > 0:
                    monthly += amount * MONTHS_FACTOR[interval] / count
        # Basil: the period is on each item (they share it in classic billing; keep the latest).
        item_start, item_end = _int(item.get("current_period_start")), _int(item.get("current_period_end"))
        if item_start is not None and (start is None or item_start > start):
            start = item_start
        if item_end is not None and (end is None or item_end > end):
            end = item_end
    # Pre-basil shapes carry the period on the subscription itself.
    period_start = _int(sub.get("current_period_start"))
    period_end = _int(sub.get("current_period_end"))
    send_invoice_days = -1
    if sub.get("collection_method") == "send_invoice":
        send_invoice_days = max(0, _int(sub.get("days_until_due")) or 0)
    return SubscriptionView(
        _str(sub.get("status")),
        _str(sub.get("customer")),
        currency,
        monthly,
        per_month,
        subscription_discounts(sub),
        interval_seconds,
        start if period_start is None else period_start,
        end if period_end is None else period_end,
        _int(sub.get("trial_end")),
        _int(sub.get("cancel_at")),
        sub.get("cancel_at_period_end") is True,
        send_invoice_days,
        type(sub.get("pause_collection")) is dict,
    )


def invoice_paid_through(invoice: dict[str, Any]) -> int | None:
    """End of the service period an invoice pays for: its lines' periods (a renewal invoice's own
    `period_end` is the end of the *previous* period, so it is only the fallback)."""
    lines = get_dict(invoice, "lines")
    data = lines.get("data") if lines else None
    ends = []
    if isinstance(data, list):
        for line in data:
            end = get_int(line, "period", "end")
            if end is not None:
                ends.append(end)
    if ends:
        return max(ends)
    return get_int(invoice, "period_end")
