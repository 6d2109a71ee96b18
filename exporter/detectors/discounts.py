"""Subscription discounts for the monthly value, in every API shape.

A subscription names its discounts in `discount` (before basil, a Discount object) and `discounts` (a list; in
webhooks usually ids only, since Stripe does not expand it). A Discount carries its coupon as `coupon` (an
object before clover) or `source.coupon` (clover and later: an id, not expanded). So the terms are gathered from
every place Stripe sends them:
- Discount objects in the subscription's payload;
- `customer.discount.created` / `.updated` / `.deleted` events (a Discount naming its `subscription`);
- `coupon.created` / `.updated` events (a coupon's terms never change once created).
The discounts that apply to a subscription are those its latest snapshot lists; one whose terms are still unknown
applies as soon as they arrive (the ledger reprices the subscription then).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, NamedTuple

from exporter.money import normalize_currency
from exporter.state import StateStore

COUPONS_NS = "ledger_coupons"
DISCOUNTS_NS = "ledger_discounts"
LISTED_NS = "ledger_discount_lists"
MAX_COUPONS = 10_000
MAX_DISCOUNTS = 200_000  # discounts of subscriptions not (yet) in the ledger are the first forgotten
MONTH_SECONDS = 365.25 / 12 * 86400


class CouponTerms(NamedTuple):
    percent_off: float
    amount_off: float  # minor units of `currency`, off each invoice
    currency: str | None
    duration: str  # forever, repeating or once
    duration_in_months: int | None


class DiscountRef(NamedTuple):
    id: str
    coupon: CouponTerms | str | None  # the terms, a coupon id, or unknown
    start: int | None
    end: int | None


class Discount(NamedTuple):
    percent_off: float
    amount_off: float
    currency: str | None
    end: int | None


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    return None


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def coupon_terms(coupon: Any) -> CouponTerms | None:
    if type(coupon) is not dict:
        return None
    percent = _num(coupon.get("percent_off"))
    amount = _num(coupon.get("amount_off"))
    duration = coupon.get("duration")
    if duration not in ("forever", "repeating", "once"):
        return None
    return CouponTerms(
        percent if percent is not None and 0 < percent <= 100 else 0.0,
        amount if amount is not None and amount > 0 else 0.0,
        normalize_currency(coupon.get("currency")),
        duration,
        _int(coupon.get("duration_in_months")),
    )


def discount_ref(discount: Any) -> DiscountRef | None:
    if type(discount) is str and discount:
        return DiscountRef(discount, None, None, None)
    if type(discount) is not dict:
        return None
    discount_id = discount.get("id")
    coupon: Any = discount.get("coupon")
    if coupon is None:
        source = discount.get("source")  # clover
        coupon = source.get("coupon") if type(source) is dict else None
    ref: CouponTerms | str | None = coupon_terms(coupon)
    if ref is None and type(coupon) is dict and type(coupon.get("id")) is str:
        ref = coupon["id"]
    elif ref is None and type(coupon) is str and coupon:
        ref = coupon
    return DiscountRef(
        discount_id if type(discount_id) is str and discount_id else f"inline:{id(discount)}",
        ref,
        _int(discount.get("start")),
        _int(discount.get("end")),
    )


def subscription_discounts(sub: dict[str, Any]) -> list[DiscountRef] | None:
    """The discounts a snapshot lists (None when it has neither field: nothing said, nothing changes)."""
    many = sub.get("discounts")
    single_raw = sub.get("discount")
    if single_raw is None and (many is None or many == []):
        return None if many is None and "discount" not in sub else []  # the common case, on the hot path
    refs: dict[str, DiscountRef] = {}
    for raw in many if type(many) is list else ():
        ref = discount_ref(raw)
        if ref is not None:
            refs[ref.id] = ref
    single = discount_ref(single_raw)  # before basil; the same discount may also be listed as an id
    if single is not None:
        refs[single.id] = single
    return list(refs.values())


def apply_discounts(
    list_monthly: float, per_month: float, currency: str | None, discounts: list[Discount], at: float
) -> tuple[float, int | None]:
    """(monthly value after the discounts active at `at`, the earliest end among those applied)."""
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


class DiscountBook:
    """Coupons and discounts seen, and which discounts each subscription's latest snapshot lists."""

    def __init__(self, state: StateStore):
        self.state = state
        self.coupons: OrderedDict[str, CouponTerms] = OrderedDict()
        self.known: OrderedDict[str, DiscountRef] = OrderedDict()
        self.listed: dict[str, tuple[str, ...]] = {}
        for key, value in state.items(COUPONS_NS):
            if isinstance(value, list) and len(value) == len(CouponTerms._fields):
                self.coupons[key] = CouponTerms(*value)
        for key, value in state.items(DISCOUNTS_NS):
            if isinstance(value, list) and len(value) == 3:
                coupon = CouponTerms(*value[0]) if isinstance(value[0], list) else value[0]
                self.known[key] = DiscountRef(key, coupon, value[1], value[2])
        for key, value in state.items(LISTED_NS):
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                self.listed[key] = tuple(value)

    # -- what arrives ----------------------------------------------------------------------------------------

    def on_coupon(self, coupon: dict[str, Any]) -> list[str]:
        """A coupon's terms; returns the subscriptions listing a discount of it (to reprice)."""
        coupon_id = coupon.get("id")
        terms = coupon_terms(coupon)
        if type(coupon_id) is not str or terms is None:
            return []
        self.coupons[coupon_id] = terms
        self.coupons.move_to_end(coupon_id)
        self.state.put(COUPONS_NS, coupon_id, list(terms))
        if len(self.coupons) > MAX_COUPONS:
            old, _ = self.coupons.popitem(last=False)
            self.state.delete(COUPONS_NS, old)
        using = {d.id for d in self.known.values() if d.coupon == coupon_id}
        return [sub for sub, ids in self.listed.items() if using.intersection(ids)]

    def on_discount(self, event_type: str, discount: dict[str, Any]) -> str | None:
        """A customer.discount.* event; returns its subscription (to reprice), None for others."""
        sub_id = discount.get("subscription")
        if type(sub_id) is dict:
            sub_id = sub_id.get("id")
        if type(sub_id) is not str or discount.get("subscription_item"):
            return None  # a customer's or an item's discount: not applied to a subscription's value
        ref = discount_ref(discount)
        if ref is None or ref.id.startswith("inline:"):
            return None
        if event_type == "customer.discount.deleted":
            self.known.pop(ref.id, None)
            self.state.delete(DISCOUNTS_NS, ref.id)
        else:
            self._remember(ref)
        return sub_id

    def set_listed(self, sub_id: str, refs: list[DiscountRef] | None) -> None:
        """The discounts a newly applied snapshot lists (None: the snapshot does not say)."""
        if refs is None or (not refs and sub_id not in self.listed):
            return  # the common case (no discounts), on the hot path
        for ref in refs:
            if ref.coupon is not None:
                self._remember(ref)
        ids = tuple(ref.id for ref in refs)
        if ids == self.listed.get(sub_id, ()):
            return
        if ids:
            self.listed[sub_id] = ids
            self.state.put(LISTED_NS, sub_id, list(ids))
        else:
            self.forget(sub_id)

    def forget(self, sub_id: str) -> None:
        for discount_id in self.listed.pop(sub_id, ()):
            if self.known.pop(discount_id, None) is not None:
                self.state.delete(DISCOUNTS_NS, discount_id)
        self.state.delete(LISTED_NS, sub_id)

    def _remember(self, ref: DiscountRef) -> None:
        if ref.coupon is None and ref.id in self.known:
            return  # an id only: keep the terms we have
        self.known[ref.id] = ref
        self.known.move_to_end(ref.id)
        coupon = list(ref.coupon) if isinstance(ref.coupon, CouponTerms) else ref.coupon
        self.state.put(DISCOUNTS_NS, ref.id, [coupon, ref.start, ref.end])
        if len(self.known) > MAX_DISCOUNTS:
            old, _ = self.known.popitem(last=False)
            self.state.delete(DISCOUNTS_NS, old)

    # -- what applies ----------------------------------------------------------------------------------------

    def resolve(self, sub_id: str) -> list[Discount]:
        """The recurring discounts with known terms among those the subscription's snapshot lists."""
        out = []
        for discount_id in self.listed.get(sub_id, ()):
            ref = self.known.get(discount_id)
            if ref is None:
                continue
            terms = self.coupons.get(ref.coupon) if isinstance(ref.coupon, str) else ref.coupon
            if terms is None or terms.duration == "once":
                continue  # unknown terms; or one invoice only, not a recurring rate
            end = ref.end
            if terms.duration == "repeating" and end is None and ref.start is not None and terms.duration_in_months:
                end = ref.start + round(terms.duration_in_months * MONTH_SECONDS)
            if terms.duration == "forever":
                end = None
            out.append(Discount(terms.percent_off, terms.amount_off, terms.currency, end))
        return out
