"""The per-event metrics are prometheus_client's own behind exporter.metrics.Budgeted (memoised labels() and a series
budget): the wrapper changes nothing in the exposition, keeps every family within its budget, and a scrape from
another thread is safe while series are added."""

from __future__ import annotations

import contextlib
import itertools
import math
import string
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from exporter import samples
from exporter.bounds import DELAY_BUCKETS
from exporter.metrics import Budgeted, Metrics, budgeted
from tests.detectors_support import Harness
from tests.ingest_support import make_config, running_exporter


def test_budgeted_counter_exposition_equals_a_plain_prometheus_client_counter():
    budgeted_reg, plain_reg = CollectorRegistry(), CollectorRegistry()
    labels = ["kind", "currency"]
    wrapped = budgeted(Counter, "stripe_things", "Things, by kind.", labels, registry=budgeted_reg)
    plain = Counter("stripe_things", "Things, by kind.", labels, registry=plain_reg)
    for metric in (wrapped, plain):
        metric.labels("a", "usd").inc()
        metric.labels("a", "usd").inc(2.5)
        metric.labels('we"ird\\\n', "eur").inc(0.1)
        metric.labels(7, None).inc()  # label values are stringified, as prometheus_client does
    assert generate_latest(budgeted_reg) == generate_latest(plain_reg)


def test_delivery_delay_buckets_are_the_contract_and_le_is_inclusive():
    metrics = Metrics()
    for value in (0.0, 0.5, 1.0, 1.0000001, 600.0, 601.0, 21600.0, 1e9, math.inf):
        metrics.delivery_delay.observe(value)
    reg = metrics.registry
    (family,) = [m for m in reg.collect() if m.name == "stripe_event_delivery_delay_seconds"]
    les = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
    assert les == [str(float(b)) for b in DELAY_BUCKETS] + ["+Inf"]
    assert reg.get_sample_value("stripe_event_delivery_delay_seconds_bucket", {"le": "600.0"}) == 5
    assert reg.get_sample_value("stripe_event_delivery_delay_seconds_count") == 9
    metrics.last_event.set(1_795_000_000.125)
    assert reg.get_sample_value("stripe_last_event_timestamp_seconds") == 1_795_000_000.125


def test_wrong_label_use_is_an_error_like_prometheus_client():
    counter = budgeted(Counter, "x", "d", ["a"], registry=CollectorRegistry())
    with pytest.raises(ValueError):
        counter.labels("1", "2")
    reg = CollectorRegistry()
    budgeted(Counter, "dup", "d", ["a"], registry=reg)
    with pytest.raises(ValueError):
        Counter("dup", "d", registry=reg)  # names are registered like any collector's


@contextlib.contextmanager
def scraping(registry: Any) -> Iterator[list[BaseException]]:
    """Scrapes `registry` in a loop on another thread (as exporter/scrape.py does) until the block ends; yields
    the errors the scrapes raised."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                generate_latest(registry)
        except BaseException as exc:  # a "dict changed size during iteration" would land here
            errors.append(exc)

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join()


def test_scrape_from_another_thread_while_series_are_added():
    reg = CollectorRegistry()
    counter = budgeted(Counter, "many", "d", ["k"], registry=reg)
    counter.max_series = 100_000  # many series on purpose: the budget is tested on its own below
    with scraping(reg) as errors:
        for i in range(30_000):
            counter.labels(str(i)).inc()
    assert errors == []
    assert reg.get_sample_value("many_total", {"k": "29999"}) == 1


def test_series_budget_folds_new_label_sets_into_other_and_keeps_livemode():
    reg = CollectorRegistry()
    counter = budgeted(Counter, "failed", "d", ["currency", "failure_code", "livemode"], registry=reg)
    counter.max_series = 10
    folded: list[str] = []
    counter.on_overflow = folded.append
    for i in range(40):
        counter.labels("usd", f"code_{i}", "true" if i % 2 else "false").inc()
    series = {tuple(s.labels.values()): s.value for m in reg.collect() for s in m.samples}
    # Ten real series plus one overflow series per livemode value.
    assert len(series) == 12
    assert series[("other", "other", "true")] == 15 and series[("other", "other", "false")] == 15
    assert folded == ["failed"] * 30
    # Updates of a folded label set are counted every time (the memo never keeps them).
    counter.labels("usd", "code_39", "true").inc()
    overflow = {"currency": "other", "failure_code": "other", "livemode": "true"}
    assert len(folded) == 31 and reg.get_sample_value("failed_total", overflow) == 16


def test_amount_families_drop_overflowed_updates():
    reg = CollectorRegistry()
    amount = budgeted(Counter, "amount", "d", ["currency"], registry=reg)
    amount.max_series = 2
    amount.drop_on_overflow = True
    for code in ("usd", "eur", "jpy", "gbp"):
        amount.labels(code).inc(5)
    assert {s.labels["currency"] for m in reg.collect() for s in m.samples} == {"usd", "eur"}


def test_metrics_applies_the_configured_budget_to_its_labelled_families():
    metrics = Metrics(max_series_per_metric=7)
    families = [f for f in vars(metrics).values() if isinstance(f, Budgeted)]
    assert len(families) >= 20
    assert all(f.max_series == 7 and f.on_overflow is not None for f in families)
    assert {f.name for f in families if f.drop_on_overflow} == {
        f.name for f in families if f.name.endswith("_amount")
    }


async def test_the_serving_process_exposes_process_python_and_gc_metrics(tmp_path):
    async with running_exporter(make_config(tmp_path / "s.sqlite3")) as ex:
        async with ex.session.get(ex.private + "/metrics") as resp:
            text = await resp.text()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info", "python_gc_"):
        assert f"\n{name}" in text, name


def test_ledger_gauges_scraped_from_another_thread_while_subscriptions_arrive(tmp_path):
    h = Harness(tmp_path / "state.sqlite3")
    reg = h.service.metrics.registry
    ledger = reg.restricted_registry(["stripe_subscriptions", "stripe_mrr", "stripe_subscriptions_lapsed"])
    # New currencies keep adding MRR series (up to the label cap of 300) while the other thread scrapes.
    currencies = ["".join(c) for c in itertools.islice(itertools.product(string.ascii_lowercase, repeat=3), 300)]
    # Threads swap every microsecond instead of every 5 ms: the scrape is caught mid-family far more often.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with scraping(ledger) as errors:
            for i in range(1200):
                sub = samples.subscription(
                    subscription_id=f"sub_{i}", currency=currencies[i % 300], livemode=bool(i // 300 % 2)
                )
                h.send("customer.subscription.created", sub)
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    for mode in ("true", "false"):
        assert reg.get_sample_value("stripe_subscriptions", {"status": "active", "livemode": mode}) == 600
    assert {s.labels["currency"] for f in reg.collect() if f.name == "stripe_mrr" for s in f.samples} == set(currencies)
