"""One subscription of the ledger: a plain slotted dataclass, stored as a JSON array of its fields.

Times are unix seconds; money is in minor units of `currency`. Measured with 240,000 records (about what the
ingest benchmark leaves in the ledger after 1M events): ~480 bytes each with the dict entry, against ~410 for the
array-packed records this replaced; the difference (~17 MB at the 250,000 cap) buys records that are read and
changed in place, with checked types.
"""

from __future__ import annotations

import base64
import struct
import sys
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

NEG_INF = 0  # "never" for payment times (Stripe times are far above 0); 0 keeps the stored JSON short
NEVER_SEEN = 2**62  # first_seen before any event: min() replaces it
KEEP_SETTLED = 3
# Shared string objects: a handful of distinct values across all records (and a customer's subscriptions).
INTERNED = ("customer", "status", "currency", "lapsed")


@dataclass(slots=True, eq=False)
class Sub:
    customer: str | None = None
    status: str | None = None
    currency: str | None = None
    open_invoice: str | None = None
    alerted: str | None = None
    lapsed: str | None = None
    first_seen: int = NEVER_SEEN
    snap_created: int = NEG_INF
    last_payment: int = NEG_INF
    paid_through: int = NEG_INF
    period_start: int | None = None
    period_end: int | None = None
    trial_end: int | None = None
    cancel_at: int | None = None
    open_since: int = 0
    open_amount: int = 0
    monthly: float = 0.0
    interval_s: int = 0
    send_invoice_days: int = -1  # -1 for charge_automatically
    cancel_at_period_end: bool = False
    paused: bool = False
    # crc32 of the last few invoices paid, voided or marked uncollectible: a late "open" copy of one of them must
    # not reopen it.
    settled: tuple[int, ...] = ()
    list_monthly: float = 0.0  # monthly value before discounts
    invoices_per_month: float = 0.0  # billing periods per month (amount-off coupons apply once per invoice)
    discount_end: int | None = None  # when the discounts applied to `monthly` stop (None: never, or none applied)
    livemode: int = -1  # 1 live, 0 test, -1 unknown
    snap_kind: int = 1  # event type of the applied snapshot: 0 created, 1 updated (and others), 2 deleted

    def apply_snapshot(self, view: Any) -> None:
        """The subscription's own fields from a SubscriptionView."""
        self.monthly = self.list_monthly = view.list_monthly_minor  # the ledger then applies the discounts
        self.invoices_per_month = view.invoices_per_month
        self.discount_end = None
        if view.interval_seconds:
            self.interval_s = view.interval_seconds
        self.period_start = view.period_start
        self.period_end = view.period_end
        self.trial_end = view.trial_end
        self.cancel_at = view.cancel_at
        self.cancel_at_period_end = bool(view.cancel_at_period_end)
        self.send_invoice_days = view.send_invoice_days
        self.paused = bool(view.collection_paused)

    def settle(self, mark: int) -> None:
        if mark not in self.settled:
            self.settled = (*self.settled[-(KEEP_SETTLED - 1) :], mark)

    def dump(self) -> tuple[Any, ...]:
        """Every field in declaration order (a tuple of atomic values: the cyclic GC stops tracking it)."""
        return _ALL(self)

    @classmethod
    def load(cls, values: Any) -> Sub | None:
        """From dump(), or from a record stored by an older version; None for anything else."""
        if not isinstance(values, list | tuple):
            return None
        if len(values) == len(_OLD_STRINGS) + 1 and isinstance(values[-1], str):
            return _load_packed(values)
        if len(values) != len(_FIELDS):
            return None
        kwargs: dict[str, Any] = {}
        for name, value in zip(_FIELDS, values, strict=True):
            if name == "settled":
                if not isinstance(value, list | tuple) or not all(type(v) is int for v in value):
                    return None
                value = tuple(value[-KEEP_SETTLED:])
            elif type(value) not in _TYPES[name]:  # exact types: a bool is no number here
                return None
            elif name in INTERNED and value:
                value = sys.intern(value)
            kwargs[name] = value
        return cls(**kwargs)

    def view(self, sub_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": sub_id}
        for name in _FIELDS:
            value = getattr(self, name)
            if name == "settled":
                continue
            out[name] = None if value in (NEG_INF, NEVER_SEEN) and name not in _CODES else value
        return out


_FIELDS = tuple(f.name for f in fields(Sub))
_ALL = attrgetter(*_FIELDS)
_CODES = ("livemode", "snap_kind")  # small codes where 0 is a value, not "never"
_STRING = (str, type(None))
_OPTIONAL_TIME = (int, type(None))
_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("customer", "status", "currency", "open_invoice", "alerted", "lapsed"), _STRING),
    **dict.fromkeys(("period_start", "period_end", "trial_end", "cancel_at", "discount_end"), _OPTIONAL_TIME),
    **dict.fromkeys(("monthly", "list_monthly", "invoices_per_month"), (float, int)),
    **dict.fromkeys(("cancel_at_period_end", "paused"), (bool,)),
}
for _name in _FIELDS:
    _TYPES.setdefault(_name, (int,))

# -- records stored before 2026-12 -------------------------------------------------------------------------------
# Six strings, then the numbers as base64 of an array of doubles: 18 of them, or 23 with the discount, livemode
# and tie-break fields. They load as plain records; the ledger writes them back in the new form as it goes.
_OLD_STRINGS = ("customer", "status", "currency", "open_invoice", "alerted", "lapsed")
_OLD_NUMBERS = (
    "first_seen", "snap_created", "last_payment", "paid_through", "period_start", "period_end", "trial_end",
    "cancel_at", "open_since", "open_amount", "monthly", "interval_s", "send_invoice_days", "cancel_at_period_end",
    "paused", "settled", "settled", "settled", "list_monthly", "invoices_per_month", "discount_end", "livemode",
    "snap_kind",
)  # fmt: skip
_OLD_SIZES = (18, 23)


def _load_packed(values: list[Any] | tuple[Any, ...]) -> Sub | None:
    strings = values[:-1]
    if not all(v is None or isinstance(v, str) for v in strings):
        return None
    try:
        raw = base64.b64decode(values[-1], validate=True)
    except (ValueError, TypeError):
        return None
    if len(raw) not in (n * 8 for n in _OLD_SIZES):
        return None
    numbers = struct.unpack(f"{len(raw) // 8}d", raw)
    rec = Sub()
    for name, value in zip(_OLD_STRINGS, strings, strict=True):
        setattr(rec, name, sys.intern(value) if name in INTERNED and value else value)
    settled: list[int] = []
    for name, number in zip(_OLD_NUMBERS, numbers, strict=False):
        kind = _TYPES[name]
        if name == "settled":
            if number:
                settled.append(int(number))
        elif kind is _OPTIONAL_TIME:
            setattr(rec, name, None if number == -1.0 else int(number))
        elif kind == (bool,):
            setattr(rec, name, number != 0.0)
        elif kind == (int,):
            setattr(rec, name, int(number))
        else:
            setattr(rec, name, number)
    rec.settled = tuple(settled)
    if len(numbers) == _OLD_SIZES[0]:
        rec.list_monthly = rec.monthly  # before discounts were tracked, the stored value was the list value
    return rec
