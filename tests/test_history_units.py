"""Unit tests of the backtest's own bookkeeping: history files, the scrape writer, alert state from rule results."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exporter.history.events_file import HistoryFileError, index_history, iter_history
from exporter.history.rules_eval import (
    Rule,
    alert_spans,
    alerting_rounds,
    duration_or,
    metric_names,
    recorded_series_lines,
    recording_levels,
    series_by_labels,
)
from exporter.history.sampler import OpenMetricsWriter
from exporter.metrics import budgeted
from tests.conftest import make_event


def test_history_file_accepts_both_forms_and_orders_by_delivery_time(tmp_path: Path) -> None:
    late = make_event("charge.succeeded", {"id": "ch_1"}, created=1000, event_id="evt_late")
    plain = make_event("charge.succeeded", {"id": "ch_2"}, created=1500, event_id="evt_plain")
    early = make_event("charge.succeeded", {"id": "ch_3"}, created=1200, event_id="evt_early")
    path = tmp_path / "h.jsonl"
    path.write_text(
        json.dumps({"received": 2000, "event": late})
        + "\n\n"
        + json.dumps(plain)
        + "\n"
        + json.dumps({"received": 1201.5, "event": early})
        + "\n"
    )
    index = index_history(path)
    assert [(t, e["id"]) for t, e in iter_history(index)] == [
        (1201.5, "evt_early"),
        (1500.0, "evt_plain"),
        (2000.0, "evt_late"),
    ]


def test_history_file_that_is_not_events_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": "world"}\n')
    with pytest.raises(HistoryFileError, match="not a Stripe event"):
        index_history(path)


def _parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, value, ts = line.rsplit(" ", 2)
        assert ts == "120"
        out[key] = float(value)
    return out


def test_scrape_writer_matches_prometheus_client_collect() -> None:
    reg = CollectorRegistry()
    c = budgeted(Counter, "things", "d", ["kind"], registry=reg)
    c.labels("a").inc(3)
    g = Gauge("level", "d", registry=reg)
    g.set(2.5)
    cb = Gauge("callback", "d", registry=reg)
    cb.set_function(lambda: 7)
    h = Histogram("delay_seconds", "d", ["route"], buckets=(1, 5), registry=reg)
    h.labels("x").observe(0.5)
    h.labels("x").observe(3)
    h.labels("x").observe(30)
    buf = io.StringIO()
    writer = OpenMetricsWriter(buf, reg, {"job": "billingwatch", "instance": "backtest"})
    writer.write(60)
    c.labels('we"ird\\').inc()  # a series added after the first scrape
    buf.seek(0)
    buf.truncate()
    writer.write(120)
    fast = _parse(buf.getvalue())
    reference = {writer.key(s.name, s.labels): s.value for family in reg.collect() for s in family.samples}
    assert fast == reference
    assert fast['things_total{kind="we\\"ird\\\\",instance="backtest",job="billingwatch"}'] == 1
    assert fast['delay_seconds_bucket{route="x",le="5.0",instance="backtest",job="billingwatch"}'] == 2
    assert fast['delay_seconds_bucket{route="x",le="+Inf",instance="backtest",job="billingwatch"}'] == 3
    assert fast['callback{instance="backtest",job="billingwatch"}'] == 7


def _rule(expr: str) -> Rule:
    return Rule(group="g", interval=60, expr=expr, record="r:x:y")


def test_scrape_writer_given_names_writes_only_the_samples_that_rules_select() -> None:
    reg = CollectorRegistry()
    Counter("things", "d", ["kind"], registry=reg).labels("a").inc(3)
    Gauge("level", "d", registry=reg).set(2.5)
    Histogram("delay_seconds", "d", buckets=(1,), registry=reg).observe(0.5)
    names = metric_names([_rule("histogram_quantile(0.9, rate(delay_seconds_bucket[5m]))"), _rule("things_total")])
    assert names is not None
    buf = io.StringIO()
    writer = OpenMetricsWriter(buf, reg, {"job": "billingwatch", "instance": "backtest"}, names)
    writer.write(120)
    assert sorted(_parse(buf.getvalue())) == [
        'delay_seconds_bucket{le="+Inf",instance="backtest",job="billingwatch"}',
        'delay_seconds_bucket{le="1.0",instance="backtest",job="billingwatch"}',
        'things_total{kind="a",instance="backtest",job="billingwatch"}',
    ]


def test_metric_names_are_every_word_of_the_rules_unless_a_selector_matches_any_name() -> None:
    names = metric_names([_rule('sum by (currency) (rate(stripe_charges_total {livemode="true"}[1h]))'), _rule("up")])
    assert names is not None and {"stripe_charges_total", "up", "livemode"} <= names
    assert "stripe_refunds_total" not in names
    for expr in ('count({job="billingwatch"})', '{__name__=~"stripe_.*"}', 'x and on() (\n  {a="b"})'):
        assert metric_names([_rule("up"), _rule(expr)]) is None, expr
    # A `{` in a string might be a selector for all we know: all series are kept.
    assert metric_names([_rule('label_replace(up, "a", "{", "b", "")')]) is None


def _result(times: list[float], **labels: str) -> list[dict]:
    return [{"metric": {"__name__": "x", **labels}, "values": [[t, "1"] for t in times]}]


def test_for_clause_needs_consecutive_evaluations_and_starts_at_firing_time() -> None:
    rule = Rule(group="g", interval=60, expr="x > 0", alert="A", for_seconds=300, labels={"severity": "warning"})
    # Present 0..240 (pending, never long enough), then 600..1200, then absent.
    times = [0, 60, 120, 180, 240, *range(600, 1260, 60)]
    (span,) = alert_spans(rule, _result(times, currency="usd"), step=60, first=0, last=3000)
    assert (span.starts_at, span.ends_at) == (900, 1260)
    assert span.labels == {"currency": "usd", "severity": "warning", "alertname": "A"}


def test_alert_still_firing_at_the_end_has_no_end_and_keep_firing_for_bridges_gaps() -> None:
    rule = Rule(group="g", interval=60, expr="x", alert="B", keep_firing_for=180)
    times = [0, 60, 240, 300]  # absent at 120 and 180 only: bridged
    (span,) = alert_spans(rule, _result(times), step=60, first=0, last=300)
    assert (span.starts_at, span.ends_at) == (0, None)
    (span,) = alert_spans(rule, _result([0, 60]), step=60, first=0, last=3000)
    assert span.ends_at == 120 + 180


def test_rule_labels_template_series_labels() -> None:
    rule = Rule(group="g", interval=60, expr="x", alert="C", labels={"who": "{{ $labels.customer }}"})
    (span,) = alert_spans(rule, _result([0], customer="cus_1"), step=60, first=0, last=60)
    assert span.labels["who"] == "cus_1"


def test_recording_rules_are_evaluated_after_the_rules_they_read() -> None:
    rules = [
        Rule(group="g", interval=60, expr="a:b:c / 2", record="a:b:half"),
        Rule(group="g", interval=60, expr="sum(x)", record="a:b:c"),
        Rule(group="g", interval=60, expr="a:b:half and a:b:c", record="a:b:both"),
    ]
    assert [[r.record for r in level] for level in recording_levels(rules)] == [
        ["a:b:c"],
        ["a:b:half"],
        ["a:b:both"],
    ]


def test_recorded_samples_are_each_evaluation_and_fill_the_scrape_grid_up_to_the_next() -> None:
    result = [{"metric": {"__name__": "x", "c": "usd"}, "values": [[600, "1"], [720, "NaN"], [840, "2.5"]]}]
    rule = Rule(group="g", interval=60, expr="x", record="c:x:y", labels={"w": "1"})
    lines = recorded_series_lines(rule, result, step=120, fill_step=120, end=840)
    assert lines == ['c:x:y{c="usd",w="1"} 1 600\n', 'c:x:y{c="usd",w="1"} 2.5 840\n']
    # A 5-minute rule on a 2-minute grid: each value also at the next scrape, never past the next evaluation.
    result = [{"metric": {"c": "usd"}, "values": [[600, "1"], [900, "2"]]}]
    lines = recorded_series_lines(rule, result, step=300, fill_step=120, end=1000)
    assert [line.rsplit(" ", 2)[1:] for line in lines] == [
        ["1", "600.000\n"], ["1", "720.000\n"], ["2", "900.000\n"]
    ]


def test_series_that_differ_only_by_name_are_merged_in_time_order_and_others_kept_as_they_are() -> None:
    a = {"metric": {"__name__": "a", "c": "usd"}, "values": [[0, "1"], [120, "1"]]}
    b = {"metric": {"__name__": "b", "c": "usd"}, "values": [[60, "2"]]}
    other = {"metric": {"__name__": "a", "c": "eur"}, "values": [[0, "3"]]}
    assert series_by_labels([a, b, other]) == [
        {"metric": {"c": "usd"}, "values": [[0, "1"], [60, "2"], [120, "1"]]},
        {"metric": {"c": "eur"}, "values": [[0, "3"]]},
    ]


def test_alerting_rules_are_evaluated_once_every_recorded_series_they_read_is_there() -> None:
    rules = [
        Rule(group="g", interval=60, expr="sum(x)", record="a:b:c"),
        Rule(group="g", interval=60, expr="a:b:c / 2", record="a:b:half"),
        Rule(group="g", interval=60, expr="x > 1", alert="Raw"),
        Rule(group="g", interval=60, expr="a:b:c > 1", alert="First"),
        Rule(group="g", interval=60, expr="a:b:half > 1 and a:b:c", alert="Second"),
        Rule(group="g", interval=60, expr='count({job="j"}) > 1', alert="AnyName"),
    ]
    rounds = alerting_rounds(rules, recording_levels(rules))
    assert [[r.alert for r in batch] for batch in rounds] == [["Raw"], ["First"], ["Second", "AnyName"]]
    assert [[r.alert for r in batch] for batch in alerting_rounds(rules[2:3], [])] == [["Raw"]]


def test_durations() -> None:
    assert duration_or("1h30m") == 5400
    assert duration_or("500ms") == 0.5
    assert duration_or(None, 60) == 60
    assert duration_or("0") == 0
    with pytest.raises(ValueError):
        duration_or("5 minutes")
    with pytest.raises(ValueError):  # Prometheus takes whole numbers only
        duration_or("1.5h")


def test_generated_traffic_is_diurnal_mixed_and_deterministic() -> None:
    from collections import Counter as Count

    from exporter.history.generator import generate

    start = 1767225600  # midnight UTC
    pairs, _ = generate(start=start, days=2, events_per_day=4000, seed=5)
    again, _ = generate(start=start, days=2, events_per_day=4000, seed=5)
    assert [e["id"] for _, e in pairs] == [e["id"] for _, e in again]
    assert 7000 <= len({e["id"] for _, e in pairs}) <= 9000
    by_hour = Count(int((received - start) % 86400 // 3600) for received, _ in pairs)
    assert by_hour[15] > 2 * by_hour[3]  # busy afternoon, quiet night (renewals are flat, the rest follows the curve)
    types = Count(e["type"] for _, e in pairs)
    for t in (
        "charge.succeeded",
        "charge.failed",
        "charge.refunded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.created",
        "customer.subscription.deleted",
        "payment_intent.succeeded",
    ):
        assert types[t] > 0, t
    failed = types["charge.failed"] / (types["charge.failed"] + types["charge.succeeded"])
    assert 0.01 < failed < 0.06
    assert all(received >= e["created"] for received, e in pairs)  # nothing arrives before it happened
