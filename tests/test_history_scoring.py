"""The corpus's matching rule on hand-built alert spans and labels (no backtest involved)."""

from __future__ import annotations

from exporter.history.rules_eval import AlertSpan
from exporter.history.scenario import Label
from exporter.history.scoring import Score, score

H = 3600.0
EVAL_START = 100 * H
EVAL_END = 100 * H + 7 * 24 * H


def alert(detector: str, starts: float, ends: float | None, **labels: str) -> AlertSpan:
    name = "BillingWatch" + "".join(p.title() for p in detector.split("_"))
    return AlertSpan(name, {"alertname": name, "detector": detector, "severity": "warning", **labels}, starts, ends)


def label(detector: str | None, start: float, end: float, **kw: object) -> Label:
    base: dict[str, object] = {"delay": 0.5 * H, "aftermath": 2 * H}
    base.update(kw)
    return Label("kind", detector, start, end, **base)  # type: ignore[arg-type]


def run(alerts: list[AlertSpan], labels: list[Label]) -> Score:
    return score("s", alerts, labels, eval_start=EVAL_START, eval_end=EVAL_END)


def test_an_alert_of_the_labelled_detector_inside_window_plus_delay_catches_and_its_delay_is_from_the_start() -> None:
    lb = label("charge_failure_spike", EVAL_START + 10 * H, EVAL_START + 11 * H)
    s = run([alert("charge_failure_spike", EVAL_START + 11.4 * H, EVAL_START + 12 * H)], [lb])
    (o,) = s.outcomes
    assert (o.status, o.alerts) == ("caught", 1)
    assert abs(o.delay - 1.4 * H) < 1e-6
    assert s.false_alerts == []


def test_an_alert_after_the_allowed_delay_misses_and_an_alert_before_the_window_is_false() -> None:
    lb = label("charge_failure_spike", EVAL_START + 10 * H, EVAL_START + 11 * H, aftermath=0.0)
    late = alert("charge_failure_spike", EVAL_START + 11.6 * H, EVAL_START + 12 * H)
    early = alert("charge_failure_spike", EVAL_START + 9 * H, EVAL_START + 9.5 * H)
    s = run([late, early], [lb])
    assert s.outcomes[0].status == "missed"
    assert [a for a, _ in s.false_alerts] == [early, late]
    assert [round(h, 3) for _, h in s.false_alerts] == [0.5, 0.4]


def test_another_detector_is_false_unless_the_label_allows_it_and_only_within_the_aftermath() -> None:
    lb = label("revenue_drop", EVAL_START + 24 * H, EVAL_START + 48 * H, delay=6 * H, aftermath=24 * H,
               allowed=("refund_ratio",))  # fmt: skip
    knock_on = alert("refund_ratio", EVAL_START + 60 * H, EVAL_START + 70 * H)
    too_late = alert("refund_ratio", EVAL_START + 80 * H, EVAL_START + 81 * H)
    stranger = alert("fraud_spike", EVAL_START + 30 * H, EVAL_START + 31 * H)
    s = run([knock_on, too_late, stranger], [lb])
    assert s.outcomes[0].status == "missed"
    assert [a for a, _ in s.false_alerts] == [stranger, too_late]



def test_an_allowed_window_detector_is_tolerated_until_its_window_has_passed_the_anomaly() -> None:
    # A total outage's lost charges stay in revenue_drop's day window for a day after it, beyond the 2 h aftermath;
    # the labelled detector itself keeps the kind's aftermath.
    lb = label("charge_failure_spike", EVAL_START + 10 * H, EVAL_START + 11 * H, allowed=("revenue_drop",))
    in_window = alert("revenue_drop", EVAL_START + 17 * H, EVAL_START + 20 * H)
    past_window = alert("revenue_drop", EVAL_START + 36 * H, EVAL_START + 37 * H)
    late_spike = alert("charge_failure_spike", EVAL_START + 17 * H, EVAL_START + 18 * H)
    s = run([in_window, past_window, late_spike], [lb])
    assert s.outcomes[0].status == "missed"
    assert [a for a, _ in s.false_alerts] == [late_spike, past_window]

def test_keys_must_agree_where_the_alert_names_them() -> None:
    lb = label("duplicate_charge", EVAL_START + H, EVAL_START + 2 * H, keys={"customer": "cus_A"})
    other = alert("duplicate_charge", EVAL_START + 1.1 * H, EVAL_START + 2.1 * H, customer="cus_B")
    s = run([other], [lb])
    assert s.outcomes[0].status == "missed"
    assert [a for a, _ in s.false_alerts] == [other]
    right = alert("duplicate_charge", EVAL_START + 1.2 * H, EVAL_START + 2.2 * H, customer="cus_A")
    assert run([right], [lb]).outcomes[0].status == "caught"
    # An alert that does not name the key at all (an all-currency view) may catch a one-currency label.
    eur = label("charge_failure_spike", EVAL_START + H, EVAL_START + 2 * H, keys={"currency": "eur"})
    assert run([alert("charge_failure_spike", EVAL_START + H, None)], [eur]).outcomes[0].status == "caught"
    assert run([alert("charge_failure_spike", EVAL_START + H, None, currency="usd")], [eur]).outcomes[0].status == (
        "missed"
    )


def test_warm_up_alerts_are_not_scored_and_alert_hours_are_clipped_to_the_evaluated_period() -> None:
    warm = alert("revenue_drop", EVAL_START - 5 * H, EVAL_START + 5 * H)
    open_end = alert("fraud_spike", EVAL_END - 3 * H, None)
    beyond = alert("webhook_lag", EVAL_END - H, EVAL_END + 10 * H)
    s = run([warm, open_end, beyond], [])
    assert s.warmup_alerts == 1
    assert [(a.detector, round(h, 3)) for a, h in s.false_alerts] == [("fraud_spike", 3.0), ("webhook_lag", 1.0)]
    assert s.false_by_detector() == {"fraud_spike": (1, 3.0), "webhook_lag": (1, 1.0)}


def test_test_mode_alerts_are_never_false_and_never_catch_a_live_anomaly() -> None:
    lb = label("charge_failure_spike", EVAL_START + H, EVAL_START + 2 * H)
    test_alert = alert("charge_failure_spike", EVAL_START + 1.5 * H, EVAL_START + 3 * H, livemode="false")
    s = run([test_alert], [lb])
    assert (s.outcomes[0].status, s.test_alerts, s.false_alerts) == ("missed", 1, [])
    live = alert("charge_failure_spike", EVAL_START + 1.5 * H, EVAL_START + 3 * H, livemode="true")
    assert run([live], [lb]).outcomes[0].status == "caught"


def test_a_test_mode_anomaly_is_silent_without_live_alerts_and_alerted_with_one() -> None:
    lb = label(None, EVAL_START + H, EVAL_START + 2 * H, livemode=False)
    quiet = run([alert("charge_failure_spike", EVAL_START + 1.5 * H, None, livemode="false")], [lb])
    assert (quiet.outcomes[0].status, quiet.false_alerts) == ("silent", [])
    paged = run([alert("charge_failure_spike", EVAL_START + 1.5 * H, EVAL_START + 2 * H)], [lb])
    assert (paged.outcomes[0].status, paged.outcomes[0].alerts, len(paged.false_alerts)) == ("alerted", 1, 1)


def test_several_alerts_of_one_episode_are_one_catch_with_their_count() -> None:
    lb = label("charge_failure_spike", EVAL_START + H, EVAL_START + 3 * H)
    flaps = [alert("charge_failure_spike", EVAL_START + (1.2 + 0.3 * i) * H, EVAL_START + (1.3 + 0.3 * i) * H)
             for i in range(4)]  # fmt: skip
    (o,) = run(flaps, [lb]).outcomes
    assert (o.status, o.alerts) == ("caught", 4)
    assert abs(o.delay - 0.2 * H) < 1e-6
