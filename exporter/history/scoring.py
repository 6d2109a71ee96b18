"""Scoring a backtest's alerts against a scenario's labels (the evaluation corpus's matching rule).

Only alerts that start firing inside the evaluated period count; the warm-up before it is not scored.

- **Catch.** An alert of the label's detector that starts firing within [label start, label end + allowed delay]
  catches the label, if it is live (an alert labelled `livemode="false"` cannot catch a live anomaly) and names
  the label's keys where it names them at all (a duplicate_charge alert must name the customer; an alert without
  a `currency` label may catch a one-currency outage). Its delay is from the label's start to the first catch.
- **Tolerated.** An alert of the label's detector or of a detector the label allows (knock-on effects: a revenue
  drop raises the refund ratio) that starts within the label's window plus delay plus aftermath is a consequence
  of the anomaly, neither a catch nor false (e.g. the monthly dispute ratio after a dispute wave). An allowed
  detector that judges a rolling window (revenue_drop) is tolerated until that window has passed the anomaly
  (scenario.WINDOW_AFTERMATH: a day), even where the kind's aftermath is shorter. Key rules as for a catch.
- **Test-mode alerts.** An alert labelled `livemode="false"` is routed to a non-paging receiver: counted apart,
  never false.
- **False.** Every other alert: counted, with its alert-hours (firing time clipped to the evaluated period).

A label with no detector (a test-mode anomaly) is "silent" if no false alert starts in its window plus delay plus
aftermath, else "alerted".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter.history.rules_eval import AlertSpan
from exporter.history.scenario import WINDOW_AFTERMATH, Label


@dataclass
class Outcome:
    label: Label
    status: str  # caught | missed | silent | alerted
    delay: float | None = None
    alerts: int = 0  # alerts matched to the label: notifications for one episode


@dataclass
class Score:
    scenario: str
    eval_start: float
    eval_end: float
    outcomes: list[Outcome] = field(default_factory=list)
    false_alerts: list[tuple[AlertSpan, float]] = field(default_factory=list)  # (alert, alert-hours)
    test_alerts: int = 0
    warmup_alerts: int = 0

    def false_by_detector(self) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for alert, hours in self.false_alerts:
            n, h = out.get(alert.detector, (0, 0.0))
            out[alert.detector] = (n + 1, h + hours)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "eval_start": self.eval_start,
            "eval_end": self.eval_end,
            "eval_days": round((self.eval_end - self.eval_start) / 86400, 3),
            "anomalies": [
                {**o.label.as_dict(), "status": o.status, "delay": o.delay, "alerts": o.alerts} for o in self.outcomes
            ],
            "false_alerts": [{**a.as_dict(), "alert_hours": round(h, 3)} for a, h in self.false_alerts],
            "false_by_detector": {
                d: {"alerts": n, "alert_hours": round(h, 3)} for d, (n, h) in sorted(self.false_by_detector().items())
            },
            "test_mode_alerts": self.test_alerts,
            "warmup_alerts": self.warmup_alerts,
        }


def is_live(alert: AlertSpan) -> bool:
    """Alerts without the label (rules older than the livemode contract) are treated as live: they page."""
    return alert.labels.get("livemode", "") != "false"


def _keys_agree(alert: AlertSpan, label: Label) -> bool:
    return all(not alert.labels.get(k) or alert.labels[k] == v for k, v in label.keys.items())


def matches(alert: AlertSpan, label: Label) -> bool:
    if label.detector is None or alert.detector != label.detector:
        return False
    if label.livemode and not is_live(alert):
        return False
    return label.start <= alert.starts_at <= label.end + label.delay and _keys_agree(alert, label)


def tolerated(alert: AlertSpan, label: Label) -> bool:
    if alert.detector not in (*label.allowed, *((label.detector,) if label.detector else ())):
        return False
    aftermath = label.aftermath
    if alert.detector in label.allowed:
        aftermath = max(aftermath, WINDOW_AFTERMATH.get(alert.detector, 0.0))
    horizon = label.end + label.delay + aftermath
    return label.start <= alert.starts_at <= horizon and _keys_agree(alert, label)


def alert_hours(alert: AlertSpan, eval_start: float, eval_end: float) -> float:
    end = eval_end if alert.ends_at is None else min(alert.ends_at, eval_end)
    return max(0.0, end - max(alert.starts_at, eval_start)) / 3600


def score(
    scenario: str, alerts: Iterable[AlertSpan], labels: Iterable[Label], *, eval_start: float, eval_end: float
) -> Score:
    labels = list(labels)
    result = Score(scenario, eval_start, eval_end)
    scored: list[AlertSpan] = []
    for a in sorted(alerts, key=lambda a: (a.starts_at, a.alertname)):
        if eval_start <= a.starts_at < eval_end:
            scored.append(a)
        elif a.starts_at < eval_start:
            result.warmup_alerts += 1
    for a in scored:
        if not is_live(a):
            result.test_alerts += 1
        elif not any(matches(a, lb) or tolerated(a, lb) for lb in labels):
            result.false_alerts.append((a, alert_hours(a, eval_start, eval_end)))
    for lb in labels:
        if lb.detector is None:
            horizon = lb.end + lb.delay + lb.aftermath
            n = sum(1 for a, _ in result.false_alerts if lb.start <= a.starts_at <= horizon)
            result.outcomes.append(Outcome(lb, "alerted" if n else "silent", alerts=n))
            continue
        hits = [a for a in scored if matches(a, lb)]
        if hits:
            delay = min(a.starts_at for a in hits) - lb.start
            result.outcomes.append(Outcome(lb, "caught", delay, len(hits)))
        else:
            result.outcomes.append(Outcome(lb, "missed"))
    return result
