"""churn_spike: subscription cancellations (ended and scheduled) above the account's own seasonal baseline.

The same construction as revenue_drop (exporter/rulegen/revenue.py, docs/detectors.md): an hourly record, a rolling
day from it, the same day of the previous weeks, their median; the decision is an upper-tail Poisson test on the
count, plus a minimum count and a minimum factor over the baseline.
"""

from __future__ import annotations

from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import parse_duration
from exporter.rulegen.promql import alert, counter_increase, query_value, record, sel
from exporter.rulegen.seasonal import Trend, expected, median_of_weeks, seasonal_margin, trend_records, weeks_ago
from exporter.rulegen.stats import scan_z

HOURLY = "livemode:stripe_subscription_cancellations:increase1h"
# A growing subscriber base cancels more in absolute numbers than four weeks ago (exporter/rulegen/seasonal.py).
TREND = Trend("livemode:stripe_subscription_cancellations")


def group(cfg: RulesConfig) -> dict[str, Any]:
    c = cfg.churn_spike
    w = c.window
    hours = parse_duration(w) // 3600
    total = f"livemode:stripe_subscription_cancellations:increase{w}"
    weekly = f"livemode:stripe_subscription_cancellations:weekly_increase{w}"
    usual = f"livemode:stripe_subscription_cancellations:seasonal_median{w}"
    expect = f"livemode:stripe_subscription_cancellations:seasonal_expected{w}"
    margin = seasonal_margin(
        weekly, "livemode", scan_z(parse_duration(w), c.false_alerts_per_30_days), parse_duration(w), TREND
    )
    # Decisions to leave: immediate ends and newly scheduled ones. A scheduled end (ended_as_scheduled) was counted
    # when it was scheduled, and all such ends fall on the billing anchor; an end because a renewal went unpaid
    # (payment_failed) follows an anchor day by days and is nobody's decision (exporter/churn_signals.py).
    decisions = sel(cfg, "stripe_subscription_cancellations_total", 'kind=~"canceled|scheduled"')
    return {
        "name": "billingwatch-churn",
        "interval": cfg.intervals.churn,
        "rules": [
            record(HOURLY, counter_increase(decisions, "1h", "livemode")),
            record(total, f"avg_over_time({HOURLY}[{w}]) * {hours}"),
            *trend_records(TREND, HOURLY, "livemode", c.baseline_weeks),
            record(weekly, weeks_ago(total, "livemode", HOURLY, hours, c.baseline_weeks)),
            record(usual, median_of_weeks(weekly, "livemode")),
            record(expect, expected(usual, TREND, "livemode")),
            alert(
                cfg,
                "BillingWatchChurnSpike",
                (
                    f"{total} >= {c.min_cancellations}\n"
                    f"and on (livemode)\n{total} >= {c.min_increase_factor:g} * {expect}\n"
                    f"and on (livemode)\nsqrt({total}) > sqrt({expect}) + {margin}\n"
                    f"and on (livemode)\ncount by (livemode) ({weekly}) >= {c.min_baseline_weeks}"
                ),
                for_duration=c.for_duration,
                keep_firing_for=c.keep_firing_for,
                labels={"detector": "churn_spike", "severity": "warning"},
                summary="Subscription churn exceeds the account's own baseline.",
                description=(
                    '{{ $value | printf "%.0f" }} subscriptions were canceled or scheduled to cancel over the last '
                    f"{w}, against a trend-adjusted median of "
                    + query_value(f"{expect}{{livemode=%q}}", "$labels.livemode", "%.1f")
                    + f" on the same day of the previous {c.baseline_weeks} weeks: at least "
                    f"{c.min_increase_factor:g} times as many, at least {c.min_cancellations}, and more than chance "
                    "explains."
                ),
            ),
        ],
    }
