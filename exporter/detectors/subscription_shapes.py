"""What the ledger reads from a Subscription object, in every API shape.

Basil (2025-03-31+) moved `current_period_start/end` from the Subscription onto each item; older shapes also
carry a legacy `plan` on each item. Prices without a fixed unit amount (metered or tiered) add nothing to the
monthly value, which is therefore a list-price MRR: discounts and taxes are not applied.
"""

from __future__ import annotations

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
    monthly_minor: float
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


def read_subscription(sub: dict[str, Any]) -> SubscriptionView:
    """Hot path (every subscription event): plain dict access, every field type-checked."""
    items_list = sub.get("items")
    items = items_list.get("data") if type(items_list) is dict else None
    monthly = 0.0
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
            if recurring.get("usage_type") != "metered":
                amount: float | None = _int(price.get("unit_amount"))
                if amount is None:
                    amount = _int(price.get("amount"))  # legacy Plan
                if amount is None:
                    raw = price.get("unit_amount_decimal")
                    if type(raw) is str:
                        try:
                            amount = float(raw)
                        except ValueError:
                            amount = None
                quantity = _int(item.get("quantity"))
                if quantity is None:
                    quantity = _int(sub.get("quantity")) or 1
                if amount is not None and amount > 0 and quantity > 0:
                    monthly += amount * quantity * MONTHS_FACTOR[interval] / count
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
