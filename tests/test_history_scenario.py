"""The scenario generator's spec handling: shapes, Stripe delivery semantics, modes, API shapes, labelled anomalies.

Statistical checks use tolerances that a correct generator meets for any seed with overwhelming probability
(several standard errors), and that the stratified default generator or a mis-applied spec would not.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from exporter.history.generator import DAY, HOUR
from exporter.history.scenario import (
    LEGACY_API_VERSION,
    AnomalySpec,
    ScenarioGenerator,
    TrafficSpec,
    add_month,
    poisson,
)

MONDAY = 1769990400.0  # 2026-02-02 00:00 UTC


def gen(spec: TrafficSpec, days: float = 14, anomalies: tuple[AnomalySpec, ...] = (), seed: int = 5,
        warmup: float = 0) -> ScenarioGenerator:  # fmt: skip
    return ScenarioGenerator(spec, start=MONDAY - warmup * DAY, days=days, eval_start=MONDAY, anomalies=anomalies,
                             seed=seed)  # fmt: skip


def charges(pairs: list[tuple[float, dict[str, Any]]], *, live: bool = True) -> list[dict[str, Any]]:
    """Unique charge objects (first delivery of each event)."""
    seen, out = set(), []
    for _, ev in pairs:
        if ev["type"] in ("charge.succeeded", "charge.failed") and ev["livemode"] is live and ev["id"] not in seen:
            seen.add(ev["id"])
            out.append(ev["data"]["object"])
    return out


def per_day(objs: list[dict[str, Any]], start: float) -> list[int]:
    days = Counter(int((o["created"] - start) // DAY) for o in objs)
    return [days[d] for d in sorted(days)]


def test_poisson_draws_have_poisson_mean_and_variance() -> None:
    import random

    rng = random.Random(3)
    for lam in (0.3, 4.0, 200.0):
        xs = [poisson(rng, lam) for _ in range(20000)]
        assert statistics.mean(xs) == pytest.approx(lam, rel=0.05, abs=0.02)
        assert statistics.variance(xs) == pytest.approx(lam, rel=0.1, abs=0.03)


def test_add_month_keeps_the_day_and_time_and_clamps_to_the_months_end() -> None:
    jan4 = datetime(2026, 1, 4, 1, 30, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(add_month(jan4), UTC) == datetime(2026, 2, 4, 1, 30, tzinfo=UTC)
    jan31 = datetime(2026, 1, 31, 12, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(add_month(jan31), UTC) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    dec15 = datetime(2025, 12, 15, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(add_month(dec15), UTC) == datetime(2026, 1, 15, tzinfo=UTC)


def test_daily_counts_are_noisy_like_poisson_not_stratified() -> None:
    spec = TrafficSpec(400, subscription_share=0.0, monthly_churn=0.0, filler_per_charge=0, redelivery_ratio=0,
                       retry_ratio=0)  # fmt: skip
    counts = per_day(charges(gen(spec, days=28).generate()), MONDAY)
    assert statistics.mean(counts) == pytest.approx(400, rel=0.05)
    # Index of dispersion of Poisson counts is 1; stratified counts would give ~0.
    assert 0.4 < statistics.variance(counts) / statistics.mean(counts) < 2.5


def test_weekends_growth_and_decline_rates_follow_the_spec() -> None:
    spec = TrafficSpec(600, weekend_factor=0.45, subscription_share=0.0, monthly_churn=0.0, filler_per_charge=0,
                       growth_per_week=0.05)  # fmt: skip
    objs = charges(gen(spec, days=28).generate())
    counts = per_day(objs, MONDAY)
    weekdays = [c for i, c in enumerate(counts) if i % 7 < 5]
    weekends = [c for i, c in enumerate(counts) if i % 7 >= 5]
    assert statistics.mean(weekends) / statistics.mean(weekdays) == pytest.approx(0.45, abs=0.05)
    assert sum(counts[21:28]) / sum(counts[0:7]) == pytest.approx(1.05**3, rel=0.06)
    failed = sum(1 for o in objs if o["status"] == "failed")
    assert failed / len(objs) == pytest.approx(0.07, abs=0.01)


def test_renewals_land_on_the_billing_anchor_day_of_every_month() -> None:
    spec = TrafficSpec(200, subscription_share=0.6, anchor_share=0.7, anchor_day=4, monthly_churn=0.0)
    pairs = gen(spec, days=33).generate()
    renewals = defaultdict(int)
    for _, ev in pairs:
        obj = ev["data"]["object"]
        if ev["type"] == "invoice.created" and obj["billing_reason"] == "subscription_cycle":
            renewals[datetime.fromtimestamp(obj["created"], UTC).date()] += 1
    anchor_days = {d: n for d, n in renewals.items() if d.day == 4}
    others = [n for d, n in renewals.items() if d.day != 4]
    assert set(d.month for d in anchor_days) == {2, 3}  # Feb 4 and Mar 4
    assert min(anchor_days.values()) > 10 * statistics.mean(others)


def test_currencies_keep_their_minor_units() -> None:
    spec = TrafficSpec(600, currencies=(("usd", 0.5), ("jpy", 0.3), ("kwd", 0.2)), subscription_share=0.0)
    objs = charges(gen(spec, days=3).generate())
    by = Counter(o["currency"] for o in objs)
    assert by["jpy"] / len(objs) == pytest.approx(0.3, abs=0.05)
    jpy = [o["amount"] for o in objs if o["currency"] == "jpy"]
    # Zero-decimal: a 980-yen price is sent as 980, not 98000.
    assert min(jpy) >= 500 and max(jpy) <= 20000
    assert {o["currency"] for o in objs} == {"usd", "jpy", "kwd"}


def test_deliveries_are_at_least_once_late_and_out_of_order_like_stripe() -> None:
    spec = TrafficSpec(1500, redelivery_ratio=0.02, retry_ratio=0.01)
    pairs = gen(spec, days=2).generate()
    first: dict[str, float] = {}
    again = []
    for received, ev in pairs:
        if ev["id"] in first:
            again.append(received - first[ev["id"]])
        else:
            first[ev["id"]] = received
    assert len(again) / len(first) == pytest.approx(0.02, abs=0.005)
    assert min(again) >= 0.8 * 60  # Stripe's first retry, not an instant echo
    lateness = sorted(r - ev["created"] for r, ev in pairs)
    assert lateness[len(lateness) // 2] < 10  # most deliveries within seconds
    assert sum(1 for x in lateness if x > 0.8 * 300) / len(lateness) > 0.001  # some at later retries
    assert max(lateness) <= 3 * DAY + 10
    created_order = [ev["created"] for _, ev in pairs]
    inversions = sum(1 for a, b in itertools.pairwise(created_order) if b < a - 60)
    assert inversions > 10  # delivery order is not creation order


def test_test_mode_traffic_is_marked_and_shares_test_cards() -> None:
    spec = TrafficSpec(300, test_charges_per_day=100)
    pairs = gen(spec, days=3).generate()
    test = charges(pairs, live=False)
    assert len(test) > 100
    assert all(o["livemode"] is False for o in test)
    assert {o["payment_method_details"]["card"]["fingerprint"] for o in test} == {"fpTEST4242"}
    assert all(ev["livemode"] is False for _, ev in pairs if ev["data"]["object"] in test)
    assert all(o["livemode"] is True for o in charges(pairs))


def test_both_api_shapes_before_and_after_the_endpoint_upgrade() -> None:
    spec = TrafficSpec(300, subscription_share=0.5, legacy_days=2)
    pairs = gen(spec, days=4).generate()
    invoices = [(ev["api_version"], ev["data"]["object"]) for _, ev in pairs if ev["type"] == "invoice.paid"]
    old = [inv for v, inv in invoices if v == LEGACY_API_VERSION]
    new = [inv for v, inv in invoices if v != LEGACY_API_VERSION]
    assert old and new
    assert all(inv["subscription"] and "parent" not in inv for inv in old)
    assert all(inv["parent"]["subscription_details"]["subscription"] and "subscription" not in inv for inv in new)
    assert all(inv["created"] < MONDAY + 2 * DAY for inv in old)


def test_the_same_seed_gives_the_same_bytes() -> None:
    spec = TrafficSpec(200, test_charges_per_day=20)
    a, b = (b"".join(orjson.dumps(p) for p in gen(spec, days=1, seed=9).generate()) for _ in range(2))
    assert a == b
    assert a != b"".join(orjson.dumps(p) for p in gen(spec, days=1, seed=10).generate())


def test_total_outage_fails_every_live_attempt_and_reaches_the_minimum_attempts_even_at_low_volume() -> None:
    outage = AnomalySpec("total_outage", 10 * HOUR, HOUR, size=5)
    g = gen(TrafficSpec(30), days=2, anomalies=(outage,))
    objs = charges(g.generate())
    in_window = [o for o in objs if MONDAY + 10 * HOUR <= o["created"] < MONDAY + 11 * HOUR]
    assert len(in_window) >= 5
    assert {o["status"] for o in in_window} == {"failed"}
    (lb,) = g.labels
    assert (lb.detector, lb.start, lb.end, lb.livemode) == ("charge_failure_spike", MONDAY + 10 * HOUR,
                                                            MONDAY + 11 * HOUR, True)  # fmt: skip


def test_card_testing_and_partial_outage_shape_the_failures() -> None:
    anomalies = (
        AnomalySpec("card_testing", 3 * HOUR, HOUR, size=120),
        AnomalySpec("partial_outage", 12 * HOUR, 6 * HOUR, size=0.7, currency="eur"),
    )
    g = gen(TrafficSpec(2000, currencies=(("usd", 0.5), ("eur", 0.5))), days=1, anomalies=anomalies)
    objs = charges(g.generate())
    burst = [o for o in objs if MONDAY + 3 * HOUR <= o["created"] < MONDAY + 4 * HOUR and o["customer"] is None
             and o["status"] == "failed" and o["amount"] <= 300]  # fmt: skip
    assert len(burst) >= 120
    assert len({o["payment_method_details"]["card"]["fingerprint"] for o in burst}) >= 100  # many stolen cards
    window = [o for o in objs if MONDAY + 12 * HOUR <= o["created"] < MONDAY + 18 * HOUR]
    eur = [o for o in window if o["currency"] == "eur"]
    usd = [o for o in window if o["currency"] == "usd"]
    assert sum(o["status"] == "failed" for o in eur) / len(eur) == pytest.approx(0.72, abs=0.08)
    assert sum(o["status"] == "failed" for o in usd) / len(usd) < 0.12
    assert g.labels[1].keys == {"currency": "eur"}


def test_revenue_drop_dispute_wave_and_webhook_lag() -> None:
    spec = TrafficSpec(1500, subscription_share=0.0, dispute_rate=0.004, monthly_churn=0.0)
    anomalies = (
        AnomalySpec("revenue_drop", 1 * DAY, DAY, size=0.5),
        AnomalySpec("dispute_wave", 3 * DAY, 2 * DAY, size=3),
        AnomalySpec("webhook_lag", 5 * DAY + 12 * HOUR, HOUR),
    )
    pairs = gen(spec, days=6, anomalies=anomalies).generate()
    ok = [o for o in charges(pairs) if o["status"] == "succeeded"]
    days = per_day(ok, MONDAY)
    assert days[1] / statistics.mean([days[0], days[2]]) == pytest.approx(0.5, abs=0.08)
    disputes = per_day([ev["data"]["object"] for _, ev in pairs if ev["type"] == "charge.dispute.created"], MONDAY)
    assert (days and disputes[3] + disputes[4]) / 2 > 2 * statistics.mean(disputes[0:3])
    lag_start, lag_end = MONDAY + 5.5 * DAY, MONDAY + 5.5 * DAY + HOUR
    in_lag = [r for r, ev in pairs if lag_start <= ev["created"] < lag_end and ev["livemode"]]
    assert in_lag and min(in_lag) >= lag_end  # nothing gets through while the endpoint is down


def test_test_mode_anomalies_touch_test_traffic_only_and_expect_no_live_alert() -> None:
    anomalies = (
        AnomalySpec("card_testing", 3 * HOUR, HOUR, size=150, livemode=False),
        AnomalySpec("duplicate_charge", 6 * HOUR, livemode=False),
    )
    g = gen(TrafficSpec(500, test_charges_per_day=50), days=1, anomalies=anomalies)
    pairs = g.generate()
    live_failed = [o for o in charges(pairs) if MONDAY + 3 * HOUR <= o["created"] < MONDAY + 4 * HOUR
                   and o["status"] == "failed"]  # fmt: skip
    test_failed = [o for o in charges(pairs, live=False) if MONDAY + 3 * HOUR <= o["created"] < MONDAY + 4 * HOUR
                   and o["status"] == "failed"]  # fmt: skip
    assert len(test_failed) >= 150 and len(live_failed) < 20
    assert [(lb.detector, lb.livemode) for lb in g.labels] == [(None, False), (None, False)]
    dup = g.labels[1].keys["customer"]
    assert all(ev["livemode"] is False for _, ev in pairs if ev["data"]["object"].get("customer") == dup)


def test_in_process_anomalies_name_their_keys_and_the_lapse_is_labelled_when_it_becomes_reportable() -> None:
    anomalies = (AnomalySpec("duplicate_charge", 5 * HOUR), AnomalySpec("silent_lapse", HOUR))
    g = gen(TrafficSpec(100), days=7, anomalies=anomalies)
    g.generate()
    dup, lapse = g.labels
    assert dup.keys["customer"].startswith("cus_dupcharge")
    assert set(lapse.keys) == {"customer", "subscription"}
    # Paid on day 0 and 1, renewal of day 2 unpaid, 3-day grace: reportable from day 5.
    assert lapse.start == MONDAY + HOUR + 5 * DAY


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        gen(TrafficSpec(10), anomalies=(AnomalySpec("meteor", 0),))
    with pytest.raises(ValueError, match="does not fit"):
        gen(TrafficSpec(10), days=1, anomalies=(AnomalySpec("total_outage", 2 * DAY),))


def test_every_snapshot_of_a_subscription_carries_its_current_period() -> None:
    # A scheduled cancellation (cancel_at_period_end) does not start a new period: a snapshot claiming one would
    # make an unpaid "renewal" out of nothing.
    spec = TrafficSpec(300, subscription_share=0.5, monthly_churn=0.3, scheduled_cancel_share=1.0)
    pairs = gen(spec, days=6).generate()
    periods: dict[str, set[tuple[int, int]]] = defaultdict(set)
    cancels = 0
    for _, ev in pairs:
        obj = ev["data"]["object"]
        if ev["type"].startswith("customer.subscription.") and obj["status"] in ("active", "past_due"):
            item = obj["items"]["data"][0]
            periods[obj["id"]].add((item["current_period_start"], item["current_period_end"]))
            cancels += obj["cancel_at_period_end"]
    assert cancels > 20
    for sub_id, seen in periods.items():
        starts = sorted(start for start, _ in seen)
        # One period per renewal at most (a renewal in these six days starts the next one), never more.
        assert len(seen) <= 2, (sub_id, seen)
        assert all(end > start for start, end in seen)
        if len(starts) == 2:
            assert (starts[1] - starts[0]) > 27 * DAY


def test_a_past_due_subscription_is_never_reported_active_before_its_retry_pays() -> None:
    # Every renewal and every retry declines: once past_due, a subscription may only be cancelled.
    spec = TrafficSpec(300, subscription_share=0.5, renewal_decline_rate=1.0, monthly_churn=0.5,
                       scheduled_cancel_share=1.0, decline_rate=0.0)  # fmt: skip
    g = gen(spec, days=5)
    pairs = g.generate()
    past_due: dict[str, int] = {}
    later_active = []
    for _, ev in sorted(pairs, key=lambda p: p[1]["created"]):
        obj = ev["data"]["object"]
        if not ev["type"].startswith("customer.subscription."):
            continue
        if obj["status"] == "past_due":
            past_due.setdefault(obj["id"], ev["created"])
        elif obj["status"] == "active" and obj["id"] in past_due:
            later_active.append(obj["id"])
    assert len(past_due) > 50
    assert later_active == []
