"""Seasonal baselines shared by revenue_drop and churn_spike, as PromQL (docs/detectors.md, "The trend").

A window is compared with the same window 1..N weeks earlier (weekly and daily seasonality compare like with
like), through the median of those weeks (one anchor-day spike or holiday does not move it), scaled by the
account's trend since those weeks: a business growing or shrinking a few percent a week is 2.5 weeks away from
the median of four past weeks, which alone leaves a test one or two standard deviations off all week.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from exporter.rulegen.promql import record
from exporter.rulegen.stats import num

# The trend is clamped: beyond halving or doubling within a month it is not a trend but an event (an outage week,
# a launch), and the alert should judge the window against the plain seasonal median.
TREND_MIN = 0.5
TREND_MAX = 2.0
# Fewer weeks than this give no trend (factor 1): one past week is too noisy to scale every baseline by.
TREND_MIN_WEEKS = 2
# Nor does a level below this many a day. The trend's noise widens every decision's margin by the same factor at
# any volume (10 % for the day window), while the bias it removes grows with the square root of the count: at 2-4 %
# a week the two break even at 15-60 a day in the window. Below 50 a day (churn's tens of cancellations, a small
# account's charges) the plain median and its narrower margin decide.
TREND_MIN_LEVEL = 50
# The level is the median of this many whole days: one week, so weekly seasonality cancels and one renewal day or
# holiday among them does not move it. Two weeks would halve its noise, which every decision pays for
# (seasonal_margin), but its past levels need a week more history: until they span the baseline's weeks the trend
# covers less time than the median lags (1.5 of 2.5 weeks with two levels), a bias that the noise saved does not buy.
LEVEL_DAYS = 7

# The variance of a seasonal baseline relative to one week's count: the median of four weekly counts (the mean of
# the middle two) has about 0.30 times the variance of one count, the median of three 0.45; the smaller of two has
# about 0.68 but sits about half a standard deviation low, which only makes a drop harder to call (0.45 covers it).
MEDIAN_OF_FOUR_VARIANCE = 0.30
FEWER_WEEKS_VARIANCE = 0.45
# A median of n counts has about pi/2 times the variance of their mean, so the trend (a median of LEVEL_DAYS daily
# counts over the same median in past weeks) adds about (pi/2) x (window / LEVEL_DAYS) x (1 + the weeks' variance)
# to the baseline's relative variance.
MEDIAN_VARIANCE = math.pi / 2


def existed(hourly: str, by: str, hours_ago: int) -> str:
    """Label sets whose hourly record already existed `hours_ago` hours ago (the start of a past window)."""
    return f"count by ({by}) (present_over_time({hourly}[1h] offset {hours_ago}h))"


def weeks_ago(series: str, by: str, hourly: str, window_hours: int, weeks: int) -> str:
    """`series` at the same time of each of the previous `weeks` weeks, labelled weeks_ago; a week counts only if
    the hourly record already existed at the start of that window (a partial first window is not a baseline)."""
    parts = []
    for k in range(1, weeks + 1):
        shifted = f"{series} offset {k}w and on ({by}) {existed(hourly, by, k * 168 + window_hours - 1)}"
        parts.append(f'label_replace(\n  {shifted},\n  "weeks_ago", "{k}", "", ""\n)')
    return "\nor\n".join(parts)


def median_of_weeks(weekly: str, by: str) -> str:
    """The median of three or more weeks ignores one anchor-day spike or holiday; with two weeks the smaller one
    (a spike in one of them cannot raise the baseline); with one week, that week."""
    return (
        f"quantile by ({by}) (0.5, {weekly})\nand on ({by})\ncount by ({by}) ({weekly}) >= 3\n"
        f"or\nmin by ({by}) ({weekly})"
    )


@dataclass(frozen=True)
class Trend:
    """Recorded series of one trend: `prefix` is level:metric of the counts it follows."""

    prefix: str

    @property
    def level(self) -> str:
        return f"{self.prefix}:day_median{LEVEL_DAYS}d"

    @property
    def weekly(self) -> str:
        return f"{self.prefix}:weekly_day_median{LEVEL_DAYS}d"

    @property
    def ratio(self) -> str:
        return f"{self.prefix}:trend{LEVEL_DAYS}d"


def trend_records(t: Trend, hourly: str, by: str, weeks: int) -> list[dict[str, Any]]:
    """The account's level now against the same level 1..`weeks` weeks ago.

    The level is the median of the last LEVEL_DAYS whole days' counts (days ending at UTC midnight, from the hourly
    record): whole weeks, so weekly seasonality cancels; a median of days, so a renewal-day spike or a holiday
    does not move it (a sum would carry the spike into every baseline for weeks). It is recorded only once the
    hourly record is a day older than that (LEVEL_DAYS whole days behind the last midnight).
    """
    day = f"sum by ({by}) (avg_over_time({hourly}[1d])) * 24"
    level = (
        f"quantile_over_time(0.5, ({day})[{LEVEL_DAYS}d:1d])\nand on ({by})\n"
        f"{existed(hourly, by, (LEVEL_DAYS + 1) * 24 - 1)}"
    )
    parts = [f'label_replace(\n  {t.level} offset {k}w,\n  "weeks_ago", "{k}", "", ""\n)' for k in range(1, weeks + 1)]
    ratio = (
        f"clamp(\n  {t.level}\n  /\n  (quantile by ({by}) (0.5, {t.weekly}) > 0),\n  {TREND_MIN}, {TREND_MAX}\n)\n"
        f"and on ({by})\ncount by ({by}) ({t.weekly}) >= {TREND_MIN_WEEKS}\n"
        f"and on ({by})\n{t.level} >= {TREND_MIN_LEVEL}"
    )
    return [record(t.level, level), record(t.weekly, "\nor\n".join(parts)), record(t.ratio, ratio)]


def expected(usual: str, t: Trend, by: str) -> str:
    """The seasonal median scaled by the trend; the plain median while there is no trend yet (cold start)."""
    return f"{usual}\n* on ({by})\n(\n  {t.ratio}\n  or\n  {usual} * 0 + 1\n)"


def seasonal_margin(weekly: str, by: str, z: float, window_seconds: int, trend: Trend) -> str:
    """k in `sqrt(observed) ≶ sqrt(expected) ∓ k`, as a vector by `by`: sqrt of a Poisson count has variance 1/4
    whatever its mean (Anscombe), widened by the baseline's own variance for the number of weeks it rests on and,
    where the trend scales it, by the trend's."""
    weeks = f"count by ({by}) ({weekly})"
    trended = 1 + MEDIAN_VARIANCE * window_seconds / (LEVEL_DAYS * 86400)

    def k(variance: float, factor: float = 1.0) -> str:
        return num(round(z * math.sqrt((1 + variance) * factor) / 2, 3))

    parts = [
        f"({weeks} >= 4 and on ({by}) {trend.ratio}) * 0 + {k(MEDIAN_OF_FOUR_VARIANCE, trended)}",
        f"({weeks} and on ({by}) {trend.ratio}) * 0 + {k(FEWER_WEEKS_VARIANCE, trended)}",
        f"({weeks} >= 4) * 0 + {k(MEDIAN_OF_FOUR_VARIANCE)}",
        f"{weeks} * 0 + {k(FEWER_WEEKS_VARIANCE)}",
    ]
    return "(\n  " + "\n  or\n  ".join(parts) + "\n)"
