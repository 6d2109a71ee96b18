"""One subscription of the ledger: a slotted object (its integer fields in one array, see _INT_FIELDS), stored as
a JSON array of its fields.

Times are unix seconds; money is in minor units of `currency`. Records are read and changed in place, with checked
types when loaded.
"""

from __future__ import annotations

import base64
import struct
import sys
from array import array
from typing import Any

NEG_INF = 0  # "never" for payment times (Stripe times are far above 0); 0 keeps the stored JSON short
NEVER_SEEN = 2**62  # first_seen before any event: min() replaces it
KEEP_SETTLED = 3
# Shared string objects: a handful of distinct values across all records (and a customer's subscriptions).
INTERNED = ("customer", "status", "currency", "lapsed")
# Shared float objects too: billing periods per month take a handful of values (monthly, yearly, ...), and a float
# per record cost 24 bytes. Bounded: beyond SHARED_NUMBERS distinct values, further ones are kept per record.
SHARED_NUMBERS = 256
_PER_MONTH: dict[float, float] = {}


def _shared_per_month(value: Any) -> Any:
    pool = _PER_MONTH
    found = pool.get(value)
    if found is None:
        if len(pool) < SHARED_NUMBERS:
            pool[value] = value
        return value
    return found if type(found) is type(value) else value  # 1 == 1.0: the type stays the record's own


# The integer fields (times, the open amount, the interval, the settled marks) live in one array of 64-bit ints
# per record, read and written through descriptors, instead of one int object each (28-32 bytes plus its slot's 8,
# against 8; the marks' tuple was another 64): special machinery kept because the benchmark shows it matters. In
# process after 400,000 ingest benchmark events (42,500 records; customer ids and the dict entry included) a record
# took 786 bytes as a slotted dataclass and takes 572 now (2026-12-03, docs/benchmark.md), about 11 MB less at the
# 50,000 records the benchmark's 1M events leave; the RSS target (150 MB) was missed by 16 MB. A field read costs
# a descriptor call (~50 ns more than a slot).
_INT_FIELDS = (
    "first_seen", "snap_created", "last_payment", "paid_through", "period_start", "period_end", "trial_end",
    "cancel_at", "open_since", "open_amount", "interval_s", "discount_end",
    *(f"settled_{i}" for i in range(KEEP_SETTLED)),  # `settled`, oldest first, unused places _NONE
)  # fmt: skip
_OPTIONAL = frozenset(("period_start", "period_end", "trial_end", "cancel_at", "discount_end"))  # None: not set
_NONE = -(2**63)  # None in the array
_LOW, _HIGH = -(2**63) + 1, 2**63 - 1  # what the array holds besides _NONE; beyond, values are clamped
_DEFAULTS: dict[str, Any] = {
    "customer": None, "status": None, "currency": None, "open_invoice": None, "alerted": None, "lapsed": None,
    "first_seen": NEVER_SEEN, "snap_created": NEG_INF, "last_payment": NEG_INF, "paid_through": NEG_INF,
    "period_start": None, "period_end": None, "trial_end": None, "cancel_at": None, "open_since": 0,
    "open_amount": 0, "monthly": 0.0, "interval_s": 0, "send_invoice_days": -1, "cancel_at_period_end": False,
    "paused": False, "settled": (), "list_monthly": 0.0, "invoices_per_month": 0.0, "discount_end": None,
    "livemode": -1, "snap_kind": 1,
}  # fmt: skip
_OPTIONAL_AT = tuple(i for i, name in enumerate(_INT_FIELDS) if name in _OPTIONAL)
_INT_TEMPLATE: array[int] = array("q", (_NONE if _DEFAULTS.get(n) is None else _DEFAULTS[n] for n in _INT_FIELDS))


class _Int:
    """An integer field of Sub, kept in its _ints array."""

    __slots__ = ("index",)

    def __init__(self, name: str):
        self.index = _INT_FIELDS.index(name)

    def __get__(self, rec: Sub, owner: type | None = None) -> int:
        return rec._ints[self.index]

    def __set__(self, rec: Sub, value: int) -> None:
        rec._ints[self.index] = min(max(value, _LOW), _HIGH)


class _OptionalInt(_Int):
    """An integer field of Sub that may be None."""

    __slots__ = ()

    def __get__(self, rec: Sub, owner: type | None = None) -> int | None:  # type: ignore[override]
        value = rec._ints[self.index]
        return None if value == _NONE else value

    def __set__(self, rec: Sub, value: int | None) -> None:  # type: ignore[override]
        rec._ints[self.index] = _NONE if value is None else min(max(value, _LOW), _HIGH)


class _Settled:
    """Sub.settled: a tuple of up to KEEP_SETTLED marks, kept in the last places of _ints."""

    __slots__ = ("first",)

    def __init__(self) -> None:
        self.first = _INT_FIELDS.index("settled_0")

    def __get__(self, rec: Sub, owner: type | None = None) -> tuple[int, ...]:
        return tuple(v for v in rec._ints[self.first :] if v != _NONE)

    def __set__(self, rec: Sub, marks: tuple[int, ...]) -> None:
        kept = [min(max(v, _LOW), _HIGH) for v in marks[-KEEP_SETTLED:]]
        rec._ints[self.first :] = array("q", [*kept, *[_NONE] * (KEEP_SETTLED - len(kept))])


class Sub:
    # Plain slots; the integer fields are in _ints.
    __slots__ = (
        "_ints",
        "alerted",
        "cancel_at_period_end",
        "currency",
        "customer",
        "invoices_per_month",
        "lapsed",
        "list_monthly",
        "livemode",
        "monthly",
        "open_invoice",
        "paused",
        "send_invoice_days",
        "snap_kind",
        "status",
    )
    customer: str | None
    status: str | None
    currency: str | None
    open_invoice: str | None
    alerted: str | None
    lapsed: str | None
    first_seen = _Int("first_seen")
    snap_created = _Int("snap_created")
    last_payment = _Int("last_payment")
    paid_through = _Int("paid_through")
    period_start = _OptionalInt("period_start")
    period_end = _OptionalInt("period_end")
    trial_end = _OptionalInt("trial_end")
    cancel_at = _OptionalInt("cancel_at")
    open_since = _Int("open_since")
    open_amount = _Int("open_amount")
    monthly: float
    interval_s = _Int("interval_s")
    send_invoice_days: int  # -1 for charge_automatically
    cancel_at_period_end: bool
    paused: bool
    # crc32 of the last few invoices paid, voided or marked uncollectible: a late "open" copy of one of them must
    # not reopen it.
    settled = _Settled()
    list_monthly: float  # monthly value before discounts
    invoices_per_month: float  # billing periods per month (amount-off coupons apply once per invoice)
    discount_end = _OptionalInt("discount_end")  # when the discounts applied to `monthly` stop (None: never)
    livemode: int  # 1 live, 0 test, -1 unknown
    snap_kind: int  # event type of the applied snapshot: 0 created, 1 updated (and others), 2 deleted

    def __init__(self, **values: Any) -> None:
        self._ints: array[int] = array("q", _INT_TEMPLATE)
        self.customer = self.status = self.currency = self.open_invoice = self.alerted = self.lapsed = None
        self.monthly = self.list_monthly = self.invoices_per_month = 0.0
        self.send_invoice_days = -1
        self.cancel_at_period_end = self.paused = False
        self.livemode = -1
        self.snap_kind = 1
        for name, value in values.items():
            if name not in _DEFAULTS:
                raise TypeError(f"Sub has no field {name!r}")
            setattr(self, name, value)

    def __repr__(self) -> str:
        return "Sub(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS) + ")"

    def apply_snapshot(self, view: Any) -> None:
        """The subscription's own fields from a SubscriptionView."""
        self.monthly = self.list_monthly = view.list_monthly_minor  # the ledger then applies the discounts
        self.invoices_per_month = _shared_per_month(view.invoices_per_month)
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
        """Every field in _FIELDS order (a tuple of atomic values: the cyclic GC stops tracking it). Written out
        rather than read through the descriptors: the ledger's tick dumps every changed record on the event loop,
        and field by field took 1.8 us a record against 1.0 (timeit); a tick with ~750 changed records (2,000
        benchmark events/s) 3.4-4.5 ms, against 2.5-3.4 ms now and 2.3-3.3 ms with the dataclass (in process)."""
        n: list[Any] = self._ints.tolist()
        for k in _OPTIONAL_AT:
            if n[k] == _NONE:
                n[k] = None
        first_seen, snap_created, last_payment, paid_through, period_start, period_end, trial_end = n[:7]
        cancel_at, open_since, open_amount, interval_s, discount_end = n[7:12]
        return (
            self.customer, self.status, self.currency, self.open_invoice, self.alerted, self.lapsed, first_seen,
            snap_created, last_payment, paid_through, period_start, period_end, trial_end, cancel_at, open_since,
            open_amount, self.monthly, interval_s, self.send_invoice_days, self.cancel_at_period_end, self.paused,
            tuple(m for m in n[12:] if m != _NONE), self.list_monthly, self.invoices_per_month, discount_end,
            self.livemode, self.snap_kind,
        )  # fmt: skip

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
            elif name == "invoices_per_month":
                value = _shared_per_month(value)
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


_FIELDS = tuple(_DEFAULTS)  # every field in the stored order
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
