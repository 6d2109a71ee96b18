"""What the ledger reads from a Subscription object, in every API shape.

Basil (2025-03-31+) moved `current_period_start/end` from the Subscription onto each item, and replaced the
singular `discount` by a `discounts` list; clover (2025-09-30+) moved a Discount's `coupon` under
`source.coupon`. Older shapes also carry a legacy `plan` on each item.

Monthly value: each licensed item's price for its quantity (per unit, or by its tiers: volume or graduated),
normalised to a month, minus the discounts whose terms the payload carries (docs/detectors.md, "Monthly value").
Metered prices add nothing (their amount is only known from usage), nor tiered prices whose `tiers` the payload
omits (Stripe includes them only when expanded). Taxes are not included.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

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
    monthly_minor: float  # after the discounts that apply at the snapshot's time
    list_monthly_minor: float  # before discounts
    invoices_per_month: float
    discount_end: int | None  # when a discount included in monthly_minor stops applying
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


class Discount(NamedTuple):
    percent_off: float
    amount_off: float  # minor units of `currency`, off each invoice
    currency: str | None
    end: int | None


def _coupon(discount: dict[str, Any]) -> dict[str, Any] | None:
    coupon = discount.get("coupon")
    if type(coupon) is not dict:
        source = discount.get("source")  # clover
        coupon = source.get("coupon") if type(source) is dict else None
    return coupon if type(coupon) is dict else None


def read_discounts(sub: dict[str, Any]) -> tuple[list[Discount], bool]:
    """The recurring discounts whose terms the payload carries, and whether some could not be read (only ids)."""
    raw: list[Any] = []
    single = sub.get("discount")  # before basil
    if type(single) is dict:
        raw.append(single)
    many = sub.get("discounts")
    if type(many) is list:
        # Pre-basil payloads may carry the same discount in both (the list unexpanded): count it once.
        single_id = single.get("id") if type(single) is dict else None
        for d in many:
            if single_id is None or (d != single_id and not (type(d) is dict and d.get("id") == single_id)):
                raw.append(d)
    found: list[Discount] = []
    unresolved = False
    for discount in raw:
        coupon = _coupon(discount) if type(discount) is dict else None
        if coupon is None:
            unresolved = True  # an id only (webhooks do not expand `discounts`, clover not `coupon`)
            continue
        duration = coupon.get("duration")
        if duration == "once":
            continue  # one invoice, not a recurring rate
        end = _int(discount.get("end"))
        if duration == "repeating" and end is None:
            start = _int(discount.get("start"))
            months = _int(coupon.get("duration_in_months"))
            if start is not None and months is not None:
                end = start + round(months * 365.25 / 12 * 86400)
        percent = _number(coupon.get("percent_off"))
        amount = _number(coupon.get("amount_off"))
        if (percent is None or not 0 < percent <= 100) and (amount is None or amount <= 0):
            continue
        found.append(
            Discount(
                percent if percent is not None and 0 < percent <= 100 else 0.0,
                amount if amount is not None and amount > 0 else 0.0,
                normalize_currency(coupon.get("currency")),
                end,
            )
        )
    return found, unresolved


def apply_discounts(list_monthly: float, per_month: float, currency: str | None, discounts: list[Discount],
                    at: float) -> tuple[float, int | None]:
    """(monthly value after the discounts active at `at`, the earliest end among them)."""
    value = list_monthly
    first_end: int | None = None
    for discount in discounts:
        if discount.end is not None and discount.end <= at:
            continue  # expired
        if discount.percent_off:
            value *= 1 - discount.percent_off / 100
        if discount.amount_off and discount.currency == currency:
            value -= discount.amount_off * per_month
        if discount.end is not None and (first_end is None or discount.end < first_end):
            first_end = discount.end
    return max(0.0, value), first_end


def read_subscription(sub: dict[str, Any], at: float = 0) -> SubscriptionView:
    """Hot path (every subscription event): plain dict access, every field type-checked. `at`: the event's time
    (discounts that ended before it do not apply)."""
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
                amount = price_amount(price, quantity) if quantity > 0 else None
                if amount is not None and amount > 0:
                    monthly += amount * MONTHS_FACTOR[interval] / count
        # Basil: the period is on each item (they share it in classic billing; keep the latest).
        item_start, item_end = _int(item.get("current_period_start")), _int(item.get("current_period_end"))
        if item_start is not None and (start is None or item_start > start):
            start = item_start
        if item_end is not None and (end is None or item_end > end):
            end = item_end
    discounts, _ = read_discounts(sub)
    discounted, discount_end = apply_discounts(monthly, per_month, currency, discounts, at)
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
        discounted,
        monthly,
        per_month,
        discount_end,
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
