"""One subscription of the ledger, stored compactly.

A ledger may hold hundreds of thousands of subscriptions, so each record keeps its numbers in one array of
doubles (8 bytes each) instead of a Python int or float object per field (~32 bytes plus a pointer each); that
halves a record's memory. Times are unix seconds (exact in a double); money is in minor units of `currency`.
"""

from __future__ import annotations

import base64
import struct
import sys
from array import array
from typing import Any

NEG_INF = 0  # "never" for payment times (Stripe times are far above 0); 0 keeps the journal's JSON short
NEVER_SEEN = 2**62  # first_seen before any event: min() replaces it (exactly representable as a double)
_NONE = -1.0  # an optional time that is not set (Stripe times are positive)

# name -> (index, kind): "t" optional time (None when unset), "i" integer, "f" float, "b" boolean.
_LAYOUT = {
    "first_seen": (0, "i"),
    "snap_created": (1, "i"),
    "last_payment": (2, "i"),
    "paid_through": (3, "i"),
    "period_start": (4, "t"),
    "period_end": (5, "t"),
    "trial_end": (6, "t"),
    "cancel_at": (7, "t"),
    "open_since": (8, "i"),
    "open_amount": (9, "i"),
    "monthly": (10, "f"),
    "interval_s": (11, "i"),
    "send_invoice_days": (12, "i"),
    "cancel_at_period_end": (13, "b"),
    "paused": (14, "b"),
    # 15..17: the settled-invoice marks (below). Added later, so older stored records (18 doubles) load with the
    # defaults for these:
    "list_monthly": (18, "f"),  # monthly value before discounts
    "invoices_per_month": (19, "f"),  # billing periods per month (amount-off coupons apply once per invoice)
    "discount_end": (20, "t"),  # when the discounts applied to `monthly` stop (None: never, or none applied)
    "livemode": (21, "i"),  # 1 live, 0 test, -1 unknown
    "snap_kind": (22, "i"),  # event type of the applied snapshot: 0 created, 1 updated (and others), 2 deleted
}
_MONTHLY, _INTERVAL = _LAYOUT["monthly"][0], _LAYOUT["interval_s"][0]
_PERIOD_START, _PERIOD_END = _LAYOUT["period_start"][0], _LAYOUT["period_end"][0]
_TRIAL_END, _CANCEL_AT = _LAYOUT["trial_end"][0], _LAYOUT["cancel_at"][0]
_CANCEL_AT_PERIOD_END, _PAUSED = _LAYOUT["cancel_at_period_end"][0], _LAYOUT["paused"][0]
_SEND_INVOICE_DAYS = _LAYOUT["send_invoice_days"][0]
_LIST_MONTHLY, _PER_MONTH = _LAYOUT["list_monthly"][0], _LAYOUT["invoices_per_month"][0]
_DISCOUNT_END, _SNAP_CREATED = _LAYOUT["discount_end"][0], _LAYOUT["snap_created"][0]
_SETTLED = 15  # three slots: crc32 of the last invoices settled (0 = empty)
KEEP_SETTLED = 3
_OLD_SIZE = _SETTLED + KEEP_SETTLED  # records stored before the discount, livemode and tie-break fields
_SIZE = _OLD_SIZE + 5
_DEFAULTS = array(
    "d",
    [NEVER_SEEN, NEG_INF, NEG_INF, NEG_INF, _NONE, _NONE, _NONE, _NONE, 0, 0, 0, 0, -1, 0, 0, *[0] * KEEP_SETTLED,
     0, 0, _NONE, -1, 1],
)
_CODES = ("livemode", "snap_kind")  # small codes where 0 is a value, not "never"
STRING_FIELDS = ("customer", "status", "currency", "open_invoice", "alerted", "lapsed")


def _prop(index: int, kind: str) -> property:
    if kind == "t":

        def get(self: Sub) -> int | None:
            v = self.n[index]
            return None if v == _NONE else int(v)

        def put(self: Sub, value: int | None) -> None:
            self.n[index] = _NONE if value is None else value

    elif kind == "i":

        def get(self: Sub) -> int:  # type: ignore[misc]
            return int(self.n[index])

        def put(self: Sub, value: int) -> None:  # type: ignore[misc]
            self.n[index] = value

    elif kind == "f":

        def get(self: Sub) -> float:  # type: ignore[misc]
            return self.n[index]

        def put(self: Sub, value: float) -> None:  # type: ignore[misc]
            self.n[index] = value

    else:

        def get(self: Sub) -> bool:  # type: ignore[misc]
            return self.n[index] != 0.0

        def put(self: Sub, value: bool) -> None:  # type: ignore[misc]
            self.n[index] = 1.0 if value else 0.0

    return property(get, put)


class Sub:
    __slots__ = ("alerted", "currency", "customer", "lapsed", "n", "open_invoice", "status")

    # Numeric fields (properties over `n`), declared for type checkers; assigned below.
    first_seen: int
    snap_created: int
    last_payment: int
    paid_through: int
    period_start: int | None
    period_end: int | None
    trial_end: int | None
    cancel_at: int | None
    open_since: int
    open_amount: int
    monthly: float
    interval_s: int
    send_invoice_days: int  # -1 for charge_automatically
    cancel_at_period_end: bool
    paused: bool
    list_monthly: float
    invoices_per_month: float
    discount_end: int | None
    livemode: int
    snap_kind: int

    def __init__(self) -> None:
        self.n = array("d", _DEFAULTS)
        self.customer: str | None = None
        self.status: str | None = None
        self.currency: str | None = None
        self.open_invoice: str | None = None
        self.alerted: str | None = None
        self.lapsed: str | None = None

    def apply_snapshot(self, view: Any) -> None:
        """The subscription's own fields from a SubscriptionView (one call instead of ten property writes)."""
        n = self.n
        n[_MONTHLY] = n[_LIST_MONTHLY] = view.list_monthly_minor  # the ledger then applies the discounts
        n[_PER_MONTH] = view.invoices_per_month
        n[_DISCOUNT_END] = _NONE
        if view.interval_seconds:
            n[_INTERVAL] = view.interval_seconds
        n[_PERIOD_START] = _NONE if view.period_start is None else view.period_start
        n[_PERIOD_END] = _NONE if view.period_end is None else view.period_end
        n[_TRIAL_END] = _NONE if view.trial_end is None else view.trial_end
        n[_CANCEL_AT] = _NONE if view.cancel_at is None else view.cancel_at
        n[_CANCEL_AT_PERIOD_END] = 1.0 if view.cancel_at_period_end else 0.0
        n[_SEND_INVOICE_DAYS] = view.send_invoice_days
        n[_PAUSED] = 1.0 if view.collection_paused else 0.0

    @property
    def settled(self) -> list[int]:
        """crc32 of the last few invoices paid, voided or marked uncollectible: a late "open" copy of one of them
        must not reopen it."""
        return [int(v) for v in self.n[_SETTLED : _SETTLED + KEEP_SETTLED] if v]

    def settle(self, mark: int) -> None:
        n = self.n
        marks = [v for v in (n[_SETTLED], n[_SETTLED + 1], n[_SETTLED + 2]) if v]
        if mark in marks:
            return
        marks = [*marks[-(KEEP_SETTLED - 1) :], mark]
        marks += [0.0] * (KEEP_SETTLED - len(marks))
        n[_SETTLED], n[_SETTLED + 1], n[_SETTLED + 2] = marks

    # -- packed form: what the ledger keeps between events --------------------------------------------------
    # A tuple of strings and bytes is untracked by Python's cyclic GC (a Sub with its array is tracked), so
    # 100,000s of stored records add nothing to the full collections that would otherwise pause the listener.

    def pack(self) -> tuple[Any, ...]:
        return (
            self.customer,
            self.status,
            self.currency,
            self.open_invoice,
            self.alerted,
            self.lapsed,
            self.n.tobytes(),
        )

    @classmethod
    def unpack(cls, packed: tuple[Any, ...]) -> Sub:
        sub = cls.__new__(cls)
        sub.customer, sub.status, sub.currency, sub.open_invoice, sub.alerted, sub.lapsed, raw = packed
        sub.n = array("d")
        sub.n.frombytes(raw)
        return sub

    @staticmethod
    def dump_packed(packed: tuple[Any, ...]) -> tuple[Any, ...]:
        # The numbers as base64 of their doubles: JSON-encoding 18 floats costs ~10x more than one short string,
        # and the ledger writes thousands of records a second under load. A tuple (JSON array all the same) of
        # atomic values leaves the cyclic GC's young generation after one look, unlike a list.
        return (*packed[:6], base64.b64encode(packed[6]).decode("ascii"))

    @staticmethod
    def packed_status(packed: tuple[Any, ...]) -> str | None:
        return packed[1]

    @staticmethod
    def packed_snap_created(packed: tuple[Any, ...]) -> float:
        """The applied snapshot's event time, read without unpacking (the ledger's eviction scans every record)."""
        return struct.unpack_from("d", packed[6], _SNAP_CREATED * 8)[0]

    def dump(self) -> tuple[Any, ...]:
        return Sub.dump_packed(self.pack())

    @classmethod
    def load(cls, values: list[Any] | tuple[Any, ...]) -> Sub | None:
        """From dump() (six strings, then the numbers as base64); None for anything else."""
        if (
            not isinstance(values, list | tuple)
            or len(values) != len(STRING_FIELDS) + 1
            or not isinstance(values[-1], str)
        ):
            return None
        sub = cls()
        for name, value in zip(STRING_FIELDS, values, strict=False):
            if value is not None and not isinstance(value, str):
                return None
            setattr(sub, name, sys.intern(value) if name in ("status", "currency", "lapsed") and value else value)
        try:
            raw = base64.b64decode(values[-1], validate=True)
        except (ValueError, TypeError):
            return None
        if len(raw) not in (_SIZE * 8, _OLD_SIZE * 8):
            return None
        sub.n = array("d")
        sub.n.frombytes(raw)
        if len(sub.n) == _OLD_SIZE:
            # A record from before the newer fields: their defaults, with the list value equal to the stored one.
            sub.n.extend(_DEFAULTS[_OLD_SIZE:])
            sub.n[_LIST_MONTHLY] = sub.n[_MONTHLY]
        return sub

    def view(self, sub_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": sub_id}
        for name in STRING_FIELDS:
            out[name] = getattr(self, name)
        for name in _LAYOUT:
            value = getattr(self, name)
            out[name] = None if value in (NEG_INF, NEVER_SEEN) and name not in _CODES else value
        return out


for _name, (_index, _kind) in _LAYOUT.items():
    setattr(Sub, _name, _prop(_index, _kind))
