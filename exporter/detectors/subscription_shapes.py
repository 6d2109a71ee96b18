"""What the ledger reads from a Subscription object, in every API shape.

Basil (2025-03-31+) moved `current_period_start/end` from the Subscription onto each item; older shapes also
carry a legacy `plan` on each item. Prices without a fixed unit amount (metered or tiered) add nothing to the
monthly value, which is therefore a list-price MRR: discounts and taxes are not applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.money import normalize_currency
from exporter.stripe_shapes import get_dict, get_int, get_str

# Months' worth of one billing `interval`, inverted: the monthly value of an amount billed once per interval is
# amount * factor (a yearly price counts 1/12 a month, a weekly one 52/12 times, a daily one 365/12 times).
MONTHS_FACTOR = {"day": 365 / 12, "week": 52 / 12, "month": 1.0, "year": 1 / 12}
# The longest an interval can last, for "no payment within one billing interval" (generous on purpose).
INTERVAL_SECONDS = {"day": 86400, "week": 7 * 86400, "month": 31 * 86400, "year": 366 * 86400}


@dataclass(frozen=True)
class SubscriptionView:
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


def _item_amount(item: dict[str, Any]) -> tuple[float | None, str | None, str | None, int]:
    """(unit amount in minor units or None, currency, interval, interval_count) of one subscription item."""
    price = get_dict(item, "price") or get_dict(item, "plan") or {}
    recurring = get_dict(price, "recurring") or {}
    interval = get_str(recurring, "interval") or get_str(price, "interval")
    count = get_int(recurring, "interval_count") or get_int(price, "interval_count") or 1
    usage = get_str(recurring, "usage_type") or get_str(price, "usage_type")
    currency = normalize_currency(price.get("currency"))
    if usage == "metered":
        return None, currency, interval, count
    amount: float | None = get_int(price, "unit_amount")
    if amount is None:
        amount = get_int(price, "amount")  # legacy Plan
    if amount is None:
        raw = price.get("unit_amount_decimal")
        if isinstance(raw, str):
            try:
                amount = float(raw)
            except ValueError:
                amount = None
    return amount, currency, interval, count


def read_subscription(sub: dict[str, Any]) -> SubscriptionView:
    items_list = get_dict(sub, "items")
    items = items_list.get("data") if items_list else None
    if not isinstance(items, list):
        items = []
    monthly = 0.0
    interval_seconds = 0
    currency = normalize_currency(sub.get("currency"))
    starts: list[int] = []
    ends: list[int] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        amount, item_currency, interval, count = _item_amount(item)
        currency = currency or item_currency
        if interval in INTERVAL_SECONDS and 0 < count <= 1000:
            interval_seconds = max(interval_seconds, INTERVAL_SECONDS[interval] * count)
            quantity = get_int(item, "quantity")
            if quantity is None:
                quantity = get_int(sub, "quantity") or 1
            if amount is not None and amount > 0 and quantity > 0:
                monthly += amount * quantity * MONTHS_FACTOR[interval] / count
        start, end = get_int(item, "current_period_start"), get_int(item, "current_period_end")
        if start is not None:
            starts.append(start)
        if end is not None:
            ends.append(end)
    # Pre-basil shapes carry the period on the subscription itself.
    period_start = get_int(sub, "current_period_start")
    period_end = get_int(sub, "current_period_end")
    if period_start is None and starts:
        period_start = max(starts)
    if period_end is None and ends:
        period_end = max(ends)
    send_invoice_days = -1
    if get_str(sub, "collection_method") == "send_invoice":
        send_invoice_days = max(0, get_int(sub, "days_until_due") or 0)
    return SubscriptionView(
        status=get_str(sub, "status"),
        customer=get_str(sub, "customer"),
        currency=currency,
        monthly_minor=monthly,
        interval_seconds=interval_seconds,
        period_start=period_start,
        period_end=period_end,
        trial_end=get_int(sub, "trial_end"),
        cancel_at=get_int(sub, "cancel_at"),
        cancel_at_period_end=sub.get("cancel_at_period_end") is True,
        send_invoice_days=send_invoice_days,
        collection_paused=isinstance(sub.get("pause_collection"), dict),
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
