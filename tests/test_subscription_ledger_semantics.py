"""The subscription ledger through the running exporter's webhook listener: same-second snapshots, MRR with
discounts, tiers and intervals, live and test mode kept apart, and the ledger's bound."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from exporter import samples
from tests.detectors_support import T0, Clock
from tests.ingest_support import Exporter, make_config, running_exporter

DAY = 86400


def sub(sub_id: str = "sub_1QsemTest01", **kw: Any) -> dict[str, Any]:
    kw.setdefault("customer", "cus_S3mant1cs01")
    kw.setdefault("created", T0)
    return samples.subscription(subscription_id=sub_id, current_period_start=T0, **kw)


def event(event_type: str, obj: dict[str, Any], *, created: int = T0, **kw: Any) -> dict[str, Any]:
    ev = samples.event(event_type, obj, created=created, **kw)
    ev["livemode"] = obj["livemode"]
    return ev


async def until(check: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def post_all(exp: Exporter, *events: dict[str, Any]) -> None:
    for ev in events:
        assert await exp.post_event(ev) == 200
    # Each accepted event is processed once its commit completes, before its 200 is returned.


def mrr(exp: Exporter, currency: str = "usd", livemode: str = "false") -> float | None:
    return exp.value("stripe_mrr", {"currency": currency, "livemode": livemode})


def count(exp: Exporter, status: str, livemode: str = "false") -> float | None:
    return exp.value("stripe_subscriptions", {"status": status, "livemode": livemode})


@pytest.fixture
def config(tmp_path: Path) -> Any:
    return make_config(tmp_path / "state.sqlite3")


# -- same-second snapshots ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["updated_first", "created_first"])
async def test_same_second_created_and_updated_end_at_active(config: Any, order: str) -> None:
    # One API call (a subscription paid at creation) emits created (incomplete) and updated (active) in one second.
    created = event("customer.subscription.created", sub(status="incomplete"))
    updated = event("customer.subscription.updated", sub(status="active"), previous_attributes={"status": "incomplete"})
    async with running_exporter(config, clock=Clock(T0 + 5)) as exp:
        await post_all(exp, *([updated, created] if order == "updated_first" else [created, updated]))
        assert (count(exp, "active"), count(exp, "incomplete")) == (1, 0)
        assert mrr(exp) == 20.0


@pytest.mark.parametrize("order", ["chain", "reversed"])
async def test_same_second_updates_follow_previous_attributes(config: Any, order: str) -> None:
    # trialing -> active -> past_due within one second: whatever the arrival order, the status the chain of
    # previous_attributes ends at is kept.
    converted = event("customer.subscription.updated", sub(status="active"), previous_attributes={"status": "trialing"})
    fell = event("customer.subscription.updated", sub(status="past_due"), previous_attributes={"status": "active"})
    async with running_exporter(config, clock=Clock(T0 + 5)) as exp:
        await post_all(exp, *([converted, fell] if order == "chain" else [fell, converted]))
        assert (count(exp, "active"), count(exp, "past_due")) == (0, 1)


async def test_same_second_deleted_wins_over_updated(config: Any) -> None:
    deleted = event("customer.subscription.deleted", sub(status="canceled"))
    updated = event("customer.subscription.updated", sub(status="active"), previous_attributes={"quantity": 2})
    async with running_exporter(config, clock=Clock(T0 + 5)) as exp:
        await post_all(exp, deleted, updated)
        assert (count(exp, "canceled"), count(exp, "active")) == (1, 0)
        assert not mrr(exp)


# -- MRR: discounts ----------------------------------------------------------------------------------------------

# A yearly plan of 1,200.00 USD a seat, 3 seats: 300.00 a month at list price.
YEARLY_3_SEATS = {"unit_amount": 120_000, "quantity": 3, "interval": "year"}


def coupon(**terms: Any) -> dict[str, Any]:
    out = {
        "id": "co_Sem4nt1cs",
        "object": "coupon",
        "percent_off": None,
        "amount_off": None,
        "currency": None,
        "duration": "forever",
        "duration_in_months": None,
        "valid": True,
    }
    out.update(terms)
    return out


def discount(coupon_obj: dict[str, Any], *, shape: str, start: int = T0, end: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": "di_Sem4nt1cs",
        "object": "discount",
        "start": start,
        "end": end,
        "subscription": "sub_1QsemTest01",
        "subscription_item": None,
        "customer": "cus_S3mant1cs01",
    }
    if shape == "clover":
        d["source"] = {"type": "coupon", "coupon": coupon_obj}
    else:
        d["coupon"] = coupon_obj
    return d


def discounted(d: dict[str, Any] | None, *, shape: str, **price: Any) -> dict[str, Any]:
    obj = sub(**{**YEARLY_3_SEATS, **price}, basil=shape != "pre_basil")
    if d is None:
        return obj
    if shape == "pre_basil":
        obj["discount"] = d
        obj["discounts"] = [d["id"]]  # pre-basil payloads carried both: the list unexpanded
    else:
        obj["discounts"] = [d]
    return obj


@pytest.mark.parametrize("shape", ["pre_basil", "basil", "clover"])
async def test_percent_off_coupon_reduces_mrr(config: Any, shape: str) -> None:
    obj = discounted(discount(coupon(percent_off=25.0), shape=shape), shape=shape)
    async with running_exporter(config) as exp:
        await post_all(exp, event("customer.subscription.created", obj))
        assert mrr(exp) == 225.0


@pytest.mark.parametrize("shape", ["pre_basil", "clover"])
async def test_amount_off_applies_once_per_invoice(config: Any, shape: str) -> None:
    # 30.00 off each (yearly) invoice is 2.50 a month.
    obj = discounted(discount(coupon(amount_off=3000, currency="usd"), shape=shape), shape=shape)
    other = discounted(discount(coupon(amount_off=3000, currency="eur"), shape=shape), shape=shape)
    other["id"] = "sub_1QsemTest02"
    async with running_exporter(config) as exp:
        await post_all(exp, event("customer.subscription.created", obj), event("customer.subscription.created", other))
        assert mrr(exp) == 297.5 + 300.0  # a coupon in another currency cannot apply


async def test_once_and_expired_discounts_do_not_count(config: Any) -> None:
    once = discounted(discount(coupon(percent_off=50.0, duration="once"), shape="basil"), shape="basil")
    expired = discounted(
        discount(
            coupon(percent_off=50.0, duration="repeating", duration_in_months=3),
            shape="basil",
            start=T0 - 200 * DAY,
            end=T0 - 100 * DAY,
        ),
        shape="basil",
    )
    expired["id"] = "sub_1QsemTest02"
    async with running_exporter(config) as exp:
        await post_all(
            exp, event("customer.subscription.created", once), event("customer.subscription.created", expired)
        )
        assert mrr(exp) == 600.0


async def test_repeating_discount_stops_at_its_end(config: Any) -> None:
    clock = Clock(T0 + 5)
    # Three months of 20 % off, its end computed from `duration_in_months` when the payload has none.
    obj = discounted(
        discount(coupon(percent_off=20.0, duration="repeating", duration_in_months=3), shape="basil"),
        shape="basil",
    )
    async with running_exporter(config, clock=clock) as exp:
        await post_all(exp, event("customer.subscription.created", obj))
        assert mrr(exp) == 240.0
        clock.now = T0 + 80 * DAY
        exp.service.ingestor.tick(clock.now)
        assert mrr(exp) == 240.0
        clock.now = T0 + 95 * DAY
        exp.service.ingestor.tick(clock.now)
        await until(lambda: mrr(exp) == 300.0, "the discount to end")


async def test_unexpanded_discount_ids_count_at_list_price(config: Any) -> None:
    obj = discounted(None, shape="basil")
    obj["discounts"] = ["di_OnlyAnId"]
    async with running_exporter(config) as exp:
        await post_all(exp, event("customer.subscription.created", obj))
        assert mrr(exp) == 300.0


def discount_event(event_type: str, d: dict[str, Any], created: int = T0) -> dict[str, Any]:
    return samples.event(event_type, d, created=created)


@pytest.mark.parametrize("order", ["subscription_first", "discount_first"])
async def test_basil_discount_ids_are_resolved_from_discount_events(config: Any, order: str) -> None:
    # Basil webhooks list a subscription's discounts as ids; the Discount (with its coupon, before clover) comes
    # in its own customer.discount.created, in any order.
    obj = discounted(None, shape="basil")
    obj["discounts"] = ["di_Sem4nt1cs"]
    created = discount_event("customer.discount.created", discount(coupon(percent_off=25.0), shape="basil"))
    snapshot = event("customer.subscription.created", obj)
    async with running_exporter(config) as exp:
        await post_all(exp, *([snapshot, created] if order == "subscription_first" else [created, snapshot]))
        assert mrr(exp) == 225.0
        deleted = discount_event(
            "customer.discount.deleted", discount(coupon(percent_off=25.0), shape="basil"), created=T0 + 60
        )
        await post_all(exp, deleted)
        assert mrr(exp) == 300.0


@pytest.mark.parametrize("order", ["coupon_last", "coupon_first"])
async def test_clover_coupon_ids_are_resolved_from_coupon_events(tmp_path: Path, order: str) -> None:
    # Clover: the Discount's `source.coupon` is an id; the coupon's terms come from coupon.created.
    config = make_config(tmp_path / "state.sqlite3")
    obj = discounted(None, shape="clover")
    obj["discounts"] = ["di_Sem4nt1cs"]
    d = discount(coupon(), shape="clover")
    d["source"]["coupon"] = "co_Sem4nt1cs"
    events = [event("customer.subscription.created", obj), discount_event("customer.discount.created", d)]
    terms = samples.event("coupon.created", coupon(percent_off=25.0), created=T0 - 86400)
    events = [*events, terms] if order == "coupon_last" else [terms, *events]
    async with running_exporter(config) as exp:
        await post_all(exp, *events)
        assert mrr(exp) == 225.0
    async with running_exporter(config) as exp:  # kept across a restart
        assert mrr(exp) == 225.0


# -- MRR: tiers, quantities, intervals ---------------------------------------------------------------------------

TIERS = [
    {"up_to": 2, "unit_amount": 1500, "flat_amount": None},
    {"up_to": None, "unit_amount": 1000, "flat_amount": 500},
]


def tiered(mode: str | None, quantity: int, tiers: list[dict[str, Any]] | None) -> dict[str, Any]:
    obj = sub(unit_amount=0, quantity=quantity)
    price = obj["items"]["data"][0]["price"]
    price.update(billing_scheme="tiered", tiers_mode=mode, unit_amount=None, unit_amount_decimal=None)
    if tiers is not None:
        price["tiers"] = copy.deepcopy(tiers)
    return obj


@pytest.mark.parametrize(
    ("mode", "quantity", "tiers", "expected"),
    [
        ("volume", 3, TIERS, 35.0),  # all 3 units at the second tier's 10.00, plus its flat 5.00
        ("volume", 2, TIERS, 30.0),
        ("graduated", 3, TIERS, 45.0),  # 2 x 15.00 + 1 x 10.00 + 5.00 flat of the second tier
        ("graduated", 1, TIERS, 15.0),
        ("volume", 3, None, None),  # the payload omits the tiers (not expanded): nothing to count
    ],
)
async def test_tiered_prices_count(config: Any, mode: str, quantity: int, tiers: Any, expected: float | None) -> None:
    async with running_exporter(config) as exp:
        await post_all(exp, event("customer.subscription.created", tiered(mode, quantity, tiers)))
        assert count(exp, "active") == 1
        assert mrr(exp) == expected


@pytest.mark.parametrize("decimal", ["string", "number"])
async def test_decimal_amounts_count_in_every_shape(config: Any, decimal: str) -> None:
    # `*_decimal` fields are strings in the JSON of every version (dahlia's SDKs type them as decimals); a
    # fraction of a minor unit per seat adds up over the quantity.
    obj = sub(unit_amount=0, quantity=4)
    price = obj["items"]["data"][0]["price"]
    price["unit_amount"] = None
    price["unit_amount_decimal"] = "1250.5" if decimal == "string" else 1250.5
    tiered_obj = tiered("graduated", 3, [{"up_to": None, "unit_amount": None, "unit_amount_decimal": "100.25",
                                           "flat_amount": None, "flat_amount_decimal": "99.25"}])  # fmt: skip
    tiered_obj["id"] = "sub_1QsemTest02"
    async with running_exporter(config) as exp:
        await post_all(
            exp, event("customer.subscription.created", obj), event("customer.subscription.created", tiered_obj)
        )
        assert mrr(exp) == pytest.approx(50.02 + 4.0, abs=0.005)


@pytest.mark.parametrize(
    ("interval", "interval_count", "expected"),
    [("day", 1, 30.0 * 365 / 12), ("week", 2, 30.0 * 52 / 12 / 2), ("month", 6, 5.0), ("year", 1, 2.5)],
)
async def test_intervals_are_normalised_to_a_month(
    config: Any, interval: str, interval_count: int, expected: float
) -> None:
    obj = sub(unit_amount=3000, interval=interval, interval_count=interval_count)
    async with running_exporter(config) as exp:
        await post_all(exp, event("customer.subscription.created", obj))
        assert mrr(exp) == pytest.approx(expected, abs=0.01)


# -- live and test mode ------------------------------------------------------------------------------------------


async def test_live_and_test_subscriptions_are_kept_apart(config: Any) -> None:
    live = sub("sub_1QLiveMode01", unit_amount=5000, livemode=True)
    test = sub("sub_1QTestMode01", unit_amount=999_999, livemode=False)
    async with running_exporter(config) as exp:
        await post_all(exp, event("customer.subscription.created", live), event("customer.subscription.created", test))
        assert (mrr(exp, livemode="true"), mrr(exp, livemode="false")) == (50.0, 9999.99)
        assert (count(exp, "active", "true"), count(exp, "active", "false")) == (1, 1)
        assert exp.value("stripe_subscriptions_lapsed", {"livemode": "true"}) == 0


# -- the bound ---------------------------------------------------------------------------------------------------


async def test_full_ledger_forgets_ended_subscriptions_first(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state.sqlite3", detectors={"subscriptions": {"max_subscriptions": 1000}})
    events = [
        event("customer.subscription.deleted", sub(f"sub_ended{i:04d}", status="canceled"), created=T0 + i)
        for i in range(10)
    ]
    events += [
        event("customer.subscription.created", sub(f"sub_new{i:04d}", status="incomplete"), created=T0 + 50 + i)
        for i in range(3)
    ]
    events += [
        event("customer.subscription.created", sub(f"sub_live{i:04d}"), created=T0 + 100 + i) for i in range(988)
    ]
    async with running_exporter(config, clock=Clock(T0 + 2000)) as exp:
        await post_all(exp, *events)
        # 1,001 > 1,000: down to 990 (1 % headroom): the 10 ended ones, then the oldest incomplete one.
        evicted = {s: exp.value("billingwatch_subscriptions_evicted_total", {"status": s}) for s in
                   ("canceled", "incomplete", "active")}  # fmt: skip
        assert evicted == {"canceled": 10, "incomplete": 1, "active": None}
        ledger = exp.service.detector_set.by_name["silent_lapse"]
        assert len(ledger.subs) == 990 and "sub_new0000" not in ledger.subs and "sub_new0001" in ledger.subs
        assert (count(exp, "canceled"), count(exp, "incomplete"), count(exp, "active")) == (0, 2, 988)
        # Then the oldest active ones, and stripe_mrr loses what they counted.
        more = [
            event("customer.subscription.created", sub(f"sub_more{i:04d}"), created=T0 + 1500 + i) for i in range(11)
        ]
        await post_all(exp, *more)
        assert exp.value("billingwatch_subscriptions_evicted_total", {"status": "incomplete"}) == 3
        assert exp.value("billingwatch_subscriptions_evicted_total", {"status": "active"}) == 9
        assert "sub_live0008" not in ledger.subs and "sub_live0009" in ledger.subs
        assert mrr(exp) == count(exp, "active") * 20.0 == 990 * 20.0


def test_records_stored_by_earlier_versions_still_load() -> None:
    # The array-packed form of earlier versions: six strings, then base64 of 18 (or, later, 23) doubles.
    import base64
    import struct

    from exporter.detectors.ledger_record import NEVER_SEEN, Sub

    old18 = [NEVER_SEEN, 1_700_000_000, 0, 0, 1_700_000_000, 1_702_592_000, -1, -1, 0, 0, 2000.0, 2_592_000, -1, 0, 1,
             12345, 0, 0]  # fmt: skip
    strings = ["cus_1", "active", "usd", None, None, None]
    old = Sub.load([*strings, base64.b64encode(struct.pack("18d", *old18)).decode()])
    assert old is not None and (old.customer, old.status, old.currency) == ("cus_1", "active", "usd")
    assert (old.monthly, old.list_monthly, old.livemode, old.discount_end) == (2000.0, 2000.0, -1, None)
    assert (old.period_start, old.period_end, old.trial_end, old.paused, old.settled) == (
        1_700_000_000, 1_702_592_000, None, True, (12345,)
    )
    old23 = [*old18, 1800.0, 1.0, 1_705_000_000, 1, 2]
    newer = Sub.load([*strings, base64.b64encode(struct.pack("23d", *old23)).decode()])
    assert newer is not None
    assert (newer.list_monthly, newer.discount_end, newer.livemode, newer.snap_kind) == (1800.0, 1_705_000_000, 1, 2)
    again = Sub.load(newer.dump())
    assert again is not None and again.dump() == newer.dump()
    assert Sub.load([*strings, "not base64!"]) is None
    assert Sub.load([*newer.dump()[:-1], "1"]) is None  # a field of the wrong type
