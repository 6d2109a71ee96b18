"""exporter.fast_metrics exposes exactly what prometheus_client's Counter, Gauge and Histogram would for the same
operations (tests/test_history_units.py checks that the backtest's fast scrape writer reads them like collect())."""

from __future__ import annotations

import math
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import exporter.metrics  # noqa: F401  (as in the exporter: no `_created` series, which the fast metrics never have)
from exporter.fast_metrics import FastCounter, FastGauge, FastHistogram

BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def _both(fast_cls, slow_cls, *args, **kwargs):
    fast_reg, slow_reg = CollectorRegistry(), CollectorRegistry()
    fast = fast_cls(*args, registry=fast_reg, **kwargs)
    return fast_reg, fast, slow_reg, slow_cls(*args, registry=slow_reg, **kwargs)


def test_counter_exposition_equals_prometheus_client():
    fr, fast, sr, slow = _both(FastCounter, Counter, "stripe_things", "Things, by kind.", ["kind", "currency"])
    for metric in (fast, slow):
        metric.labels("a", "usd").inc()
        metric.labels("a", "usd").inc(2.5)
        metric.labels('we"ird\\\n', "eur").inc(0.1)
        metric.labels(7, None).inc()  # label values are stringified, as prometheus_client does
    assert generate_latest(fr) == generate_latest(sr)


def test_unlabelled_counter_gauge_and_total_suffix():
    fr, fast, sr, slow = _both(FastCounter, Counter, "plain_total", "Plain.")
    fast.inc(3)
    slow.inc(3)
    assert generate_latest(fr) == generate_latest(sr)
    fr, fg, sr, sg = _both(FastGauge, Gauge, "last_seen_seconds", "When.")
    fg.set(1_795_000_000.125)
    sg.set(1_795_000_000.125)
    assert generate_latest(fr) == generate_latest(sr)
    assert fr.get_sample_value("last_seen_seconds") == 1_795_000_000.125


def test_histogram_exposition_equals_prometheus_client_including_bucket_edges():
    fr, fast, sr, slow = _both(FastHistogram, Histogram, "delay_seconds", "Delay.", buckets=BUCKETS)
    for value in (0.0, 0.5, 1.0, 1.0000001, 600.0, 601.0, 21600.0, 1e9, math.inf):
        fast.observe(value)
        slow.observe(value)
    assert generate_latest(fr) == generate_latest(sr)
    assert fr.get_sample_value("delay_seconds_bucket", {"le": "600.0"}) == 5  # le is inclusive


def test_wrong_label_use_is_an_error_like_prometheus_client():
    counter = FastCounter("x", "d", ["a"], registry=CollectorRegistry())
    with pytest.raises(ValueError):
        counter.labels("1", "2")
    with pytest.raises(ValueError):
        counter.inc()
    with pytest.raises(ValueError):
        FastGauge("y", "d", registry=CollectorRegistry()).labels("z")
    reg = CollectorRegistry()
    FastCounter("dup", "d", registry=reg)
    with pytest.raises(ValueError):
        Counter("dup", "d", registry=reg)  # names are registered like any collector's


def test_scrape_from_another_thread_while_series_are_added():
    reg = CollectorRegistry()
    counter = FastCounter("many", "d", ["k"], registry=reg)
    counter.max_series = 100_000  # many series on purpose: the budget is tested on its own below
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                generate_latest(reg)
        except BaseException as exc:  # a "dict changed size during iteration" would land here
            errors.append(exc)

    thread = threading.Thread(target=scrape)
    thread.start()
    for i in range(30_000):
        counter.labels(str(i)).inc()
    stop.set()
    thread.join()
    assert errors == []
    assert reg.get_sample_value("many_total", {"k": "29999"}) == 1


def test_series_budget_folds_new_label_sets_into_other_and_keeps_livemode():
    from exporter.metrics import Children

    reg = CollectorRegistry()
    counter = FastCounter("failed", "d", ["currency", "failure_code", "livemode"], registry=reg)
    counter.max_series = 10
    folded: list[str] = []
    counter.on_overflow = folded.append
    cached = Children(counter)
    for i in range(40):
        cached("usd", f"code_{i}", "true" if i % 2 else "false").inc()
    series = {tuple(s.labels.values()): s.value for m in reg.collect() for s in m.samples}
    # Ten real series plus one overflow series per livemode value.
    assert len(series) == 12
    assert series[("other", "other", "true")] == 15 and series[("other", "other", "false")] == 15
    assert folded == ["failed"] * 30
    # Updates of a folded label set are counted every time (the memo never keeps them).
    cached("usd", "code_39", "true").inc()
    assert len(folded) == 31 and counter.labels("usd", "code_39", "true").value == 16


def test_amount_families_drop_overflowed_updates():
    reg = CollectorRegistry()
    amount = FastCounter("amount", "d", ["currency"], registry=reg)
    amount.max_series = 2
    amount.drop_on_overflow = True
    for code in ("usd", "eur", "jpy", "gbp"):
        amount.labels(code).inc(5)
    assert {s.labels["currency"] for m in reg.collect() for s in m.samples} == {"usd", "eur"}
