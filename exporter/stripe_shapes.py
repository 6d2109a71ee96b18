"""Readers for Stripe objects that accept every API version's shape and never raise on odd field types."""

from __future__ import annotations

from typing import Any


def get_str(obj: Any, *path: str) -> str | None:
    """The string at a path of nested mapping keys, or None for a missing key or another type."""
    cur = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    if isinstance(cur, dict):
        # Expanded references (e.g. `customer` as an object) carry their id inside.
        cur = cur.get("id")
    return cur if isinstance(cur, str) and cur else None


def get_int(obj: Any, *path: str) -> int | None:
    cur = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    if isinstance(cur, bool) or not isinstance(cur, int):
        return None
    return cur


def get_dict(obj: Any, *path: str) -> dict[str, Any] | None:
    cur = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur if isinstance(cur, dict) else None


def invoice_subscription_id(invoice: Any) -> str | None:
    """Basil (2025-03-31+) moved `subscription` under `parent.subscription_details`; read both."""
    return get_str(invoice, "parent", "subscription_details", "subscription") or get_str(
        invoice, "subscription"
    )


def captured_amount(charge: Any) -> int | None:
    """What a successful charge actually collected (`amount_captured` appeared in 2019; older shapes: amount)."""
    if charge.get("captured") is False:
        return None
    captured = get_int(charge, "amount_captured")
    if captured is not None and captured > 0:
        return captured
    return get_int(charge, "amount")
