"""revenue_drop (seasonal, per currency and across currencies) and the refund-to-revenue ratio, as PromQL.

Revenue is stripe_charge_amount_total: money actually collected through successful (captured) charges. Invoice
amounts are not added: an invoice paid by card also produces a charge, so adding invoice.paid amounts would count
it twice, and invoices marked paid out of band move no money through Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import parse_duration
from exporter.rulegen.promql import alert, counter_increase, percent, points, query_value, record, sel
from exporter.rulegen.seasonal import Trend, expected, median_of_weeks, seasonal_margin, trend_records, weeks_ago
from exporter.rulegen.stats import larger, num, poisson_threshold, scan_z


def group(cfg: RulesConfig) -> dict[str, Any]:
    rules = revenue_rules(cfg)
    rules += refund_rules(cfg)
    return {"name": "billingwatch-revenue", "interval": cfg.intervals.revenue, "rules": rules}


def succeeded_increase(cfg: RulesConfig, window: str, offset: str = "", by: str = "currency") -> str:
    attempts = counter_increase(sel(cfg, "stripe_charges_total"), window, by, offset)
    failed = counter_increase(sel(cfg, "stripe_charges_failed_total"), window, by, offset)
    return f"{attempts}\n-\n(\n{failed}\nor\n{attempts} * 0\n)"


# Labels every revenue_drop series keeps (contract 1: live and test traffic are judged apart).
BY = "currency, livemode"
BY_ALL = "livemode"


def window_z(cfg: RulesConfig, window: str) -> float:
    """The z of a window's Poisson test: each window, watched as it rolls, alerts by chance about
    false_alerts_per_30_days times in 30 days (docs/detectors.md, "revenue_drop"), so the 6h window needs a larger
    z than the day."""
    return scan_z(parse_duration(window), cfg.revenue_drop.false_alerts_per_30_days)


@dataclass(frozen=True)
class Names:
    """Recorded series of one window of revenue_drop."""

    window: str

    @property
    def amount(self) -> str:
        return f"currency_livemode:stripe_charge_amount:increase{self.window}"

    @property
    def charges(self) -> str:
        return f"currency_livemode:stripe_charges_succeeded:increase{self.window}"

    @property
    def charges_all(self) -> str:
        return f"livemode:stripe_charges_succeeded:increase{self.window}"

    @property
    def amount_usual(self) -> str:
        return f"currency_livemode:stripe_charge_amount:seasonal_median{self.window}"

    @property
    def charges_usual(self) -> str:
        return f"currency_livemode:stripe_charges_succeeded:seasonal_median{self.window}"

    @property
    def charges_all_usual(self) -> str:
        return f"livemode:stripe_charges_succeeded:seasonal_median{self.window}"

    @property
    def amount_expected(self) -> str:
        return f"currency_livemode:stripe_charge_amount:seasonal_expected{self.window}"

    @property
    def charges_expected(self) -> str:
        return f"currency_livemode:stripe_charges_succeeded:seasonal_expected{self.window}"

    @property
    def charges_all_expected(self) -> str:
        return f"livemode:stripe_charges_succeeded:seasonal_expected{self.window}"

    def weekly(self, name: str) -> str:
        """The series `name` (one of the window's totals) at the same time of each previous week."""
        level, metric, _ = name.split(":")
        return f"{level}:{metric}:weekly_increase{self.window}"

    def weeks(self, name: str) -> str:
        level = name.split(":")[0]
        return f"count by ({level.replace('_', ', ')}) ({self.weekly(name)})"


def up_record(window: str) -> str:
    return f"job:up:avg_over_time{window}"


HOURLY_AMOUNT = "currency_livemode:stripe_charge_amount:increase1h"
HOURLY_CHARGES = "currency_livemode:stripe_charges_succeeded:increase1h"
HOURLY_REFUND_AMOUNT = "currency_livemode:stripe_refund_amount:increase1h"
HOURLY_REFUNDS = "currency_livemode:stripe_refunds:increase1h"
# The account's trend, per currency and across currencies, from successful charges (exporter/rulegen/seasonal.py).
# The amounts follow the counts' trend: their own would add the noise of a few large charges.
TREND = Trend("currency_livemode:stripe_charges_succeeded")
TREND_ALL = Trend("livemode:stripe_charges_succeeded")


def covered(window: str) -> str:
    """Series whose hourly record of successful charges already existed at the window's start: rolling() takes the
    mean of the hours it has for the whole window, so a younger series (a new currency, the first day after
    install) would be extrapolated from its first hours."""
    start = parse_duration(window) // 3600 - 1
    at = f" offset {start}h" if start else ""
    return f"count by ({BY}) (present_over_time({HOURLY_CHARGES}[1h]{at}))"


def rolling(hourly: str, window: str) -> str:
    """A window's increase from the recorded hourly increases: their mean over the window times its hours.

    An average, not a sum: unaffected by how often the hourly series was sampled. The edges are tapered over an
    hour: an event counts a/1h of itself in its first hour (a: its age), fully from then until the window's
    length, and fades out over the hour after (docs/detectors.md, "Refund ratio"). Only the hourly records read
    raw samples (one hour per series); a raw 24-hour increase() at a 5 s scrape reads 17,280 samples per series.
    """
    return f"avg_over_time({hourly}[{window}]) * {parse_duration(window) // 3600}"


def revenue_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """Seasonal revenue_drop: each window against the same hours of the same weekday in the previous weeks."""
    r = cfg.revenue_drop
    rules = [
        # Level 1: hourly increases from raw samples, recorded every evaluation; nothing later reads raw samples.
        record(HOURLY_AMOUNT, counter_increase(sel(cfg, "stripe_charge_amount_total"), "1h", BY)),
        record(HOURLY_CHARGES, succeeded_increase(cfg, "1h", by=BY)),
    ]
    # The share of the window the exporter was scraped, read once per evaluation instead of once per alert.
    rules += [
        record(up_record(w), f"min by (job) (avg_over_time({sel(cfg, 'up')}[{w}]))")
        for w in dict.fromkeys((r.short_window, r.window))
    ]
    rules += trend_records(TREND, HOURLY_CHARGES, BY, r.baseline_weeks)
    rules += trend_records(TREND_ALL, HOURLY_CHARGES, BY_ALL, r.baseline_weeks)
    for window in dict.fromkeys((r.short_window, r.window)):
        rules += window_records(cfg, Names(window))
    rules += [
        drop_alert(cfg, "warning", r.warning_drop_ratio),
        drop_alert(cfg, "critical", r.critical_drop_ratio),
        all_currencies_alert(cfg),
    ]
    return rules


def window_records(cfg: RulesConfig, n: Names) -> list[dict[str, Any]]:
    r = cfg.revenue_drop
    hours = parse_duration(n.window) // 3600

    def total(hourly: str) -> str:
        return rolling(hourly, n.window)

    def weekly(series: str, by: str) -> dict[str, Any]:
        return record(n.weekly(series), weeks_ago(series, by, HOURLY_CHARGES, hours, r.baseline_weeks))

    def usual(name: str, series: str, by: str) -> dict[str, Any]:
        return record(name, median_of_weeks(n.weekly(series), by))

    return [
        record(n.amount, total(HOURLY_AMOUNT)),
        record(n.charges, total(HOURLY_CHARGES)),
        record(n.charges_all, f"sum by ({BY_ALL}) ({n.charges})"),
        weekly(n.amount, BY),
        weekly(n.charges, BY),
        weekly(n.charges_all, BY_ALL),
        usual(n.amount_usual, n.amount, BY),
        usual(n.charges_usual, n.charges, BY),
        usual(n.charges_all_usual, n.charges_all, BY_ALL),
        record(n.amount_expected, expected(n.amount_usual, TREND, BY)),
        record(n.charges_expected, expected(n.charges_usual, TREND, BY)),
        record(n.charges_all_expected, expected(n.charges_all_usual, TREND_ALL, BY_ALL)),
    ]


def _windows(cfg: RulesConfig) -> list[Names]:
    r = cfg.revenue_drop
    return [Names(w) for w in dict.fromkeys((r.window, r.short_window))]


def _significant(cfg: RulesConfig, n: Names, observed: str, usual: str, by: str, trend: Trend) -> str:
    """The window's count of successful charges is improbably low for its seasonal expectation, which rests on
    enough charges and weeks, and the exporter was scraped for most of the window."""
    r = cfg.revenue_drop
    margin = seasonal_margin(n.weekly(observed), by, window_z(cfg, n.window), parse_duration(n.window), trend)
    return (
        f"and on ({by})\n({observed} or {usual} * 0)\n< clamp_min(sqrt({usual}) - {margin}, 0) ^ 2\n"
        f"and on ({by})\n{usual} >= {r.min_expected_charges}\n"
        f"and on ({by})\n{n.weeks(observed)} >= {r.min_baseline_weeks}\n"
        f"and on ()\nmin({up_record(n.window)}) >= {r.min_up_ratio}"
    )


def drop_condition(cfg: RulesConfig, ratio: float) -> str:
    """Per currency: the amount is `ratio` or more below its seasonal expectation over the long or the short window,
    on significantly fewer successful charges (the value is the drop of the first window that qualifies)."""
    parts = []
    for n in _windows(cfg):
        parts.append(
            f"(\n1 - ({n.amount} or {n.amount_expected} * 0) / ({n.amount_expected} > 0) >= {ratio}\n"
            + _significant(cfg, n, n.charges, n.charges_expected, BY, TREND)
            + "\n)"
        )
    return "\nor\n".join(parts)


def drop_alert(cfg: RulesConfig, severity: str, ratio: float) -> dict[str, Any]:
    r = cfg.revenue_drop
    long, short = Names(r.window), Names(r.short_window)
    labels = "$labels.currency $labels.livemode"

    def money(name: str) -> str:
        return query_value(f"{name}{{currency=%q,livemode=%q}}", labels, money=True)

    def count(name: str) -> str:
        return query_value(f"{name}{{currency=%q,livemode=%q}}", labels, "%.0f")

    return alert(
        cfg,
        "BillingWatchRevenueDrop",
        drop_condition(cfg, ratio),
        for_duration=r.for_duration,
        keep_firing_for=r.keep_firing_for,
        labels={"detector": "revenue_drop", "severity": severity, "scope": "currency"},
        summary="Collected revenue is far below the same hours of previous weeks.",
        description=(
            "{{ $labels.currency | toUpper }} revenue is {{ $value | humanizePercentage }} below the "
            f"trend-adjusted median of the same hours of the previous {r.baseline_weeks} weeks: "
            f"{money(long.amount)} collected over the last {long.window} (usually {money(long.amount_expected)}, "
            f"{count(long.charges)} successful charges, usually {count(long.charges_expected)}), "
            f"{money(short.amount)} over the last {short.window} (usually {money(short.amount_expected)}); "
            f"{severity} from {percent(ratio)} with fewer charges than chance explains."
        ),
    )


def visible_currency_drop(cfg: RulesConfig) -> str:
    """A currency with the volume to decide on its own (three times min_expected_charges in the window: at 30
    expected, a halving is significant) shows at least half the drop: its own alert speaks for it, so the
    all-currency view stays silent rather than notifying a second time for one episode (also while that alert
    fades out of its window). Currencies below that volume are what the all-currency view is for."""
    r = cfg.revenue_drop
    return "\nor\n".join(
        f"(\n1 - ({n.amount} or {n.amount_expected} * 0) / ({n.amount_expected} > 0) >= "
        f"{r.warning_drop_ratio / 2:g}\n"
        f"and on ({BY})\n{n.charges_expected} >= {3 * r.min_expected_charges}\n)"
        for n in _windows(cfg)
    )


def all_currencies_alert(cfg: RulesConfig) -> dict[str, Any]:
    """The count of successful charges across currencies: catches a drop spread thinly over many currencies,
    none of which has the volume to decide on its own. Silent while a per-currency drop explains it."""
    r = cfg.revenue_drop
    long, short = Names(r.window), Names(r.short_window)
    parts = []
    for n in _windows(cfg):
        parts.append(
            f"(\n1 - ({n.charges_all} or {n.charges_all_expected} * 0) / ({n.charges_all_expected} > 0) >= "
            f"{r.warning_drop_ratio}\n"
            + _significant(cfg, n, n.charges_all, n.charges_all_expected, BY_ALL, TREND_ALL)
            + "\n)"
        )

    def count(name: str) -> str:
        return query_value(f"{name}{{livemode=%q}}", "$labels.livemode", "%.0f")

    return alert(
        cfg,
        "BillingWatchRevenueDrop",
        "(\n" + "\nor\n".join(parts) + f"\n)\nunless on ({BY_ALL})\n(\n{visible_currency_drop(cfg)}\n)",
        for_duration=r.for_duration,
        keep_firing_for=r.keep_firing_for,
        labels={"detector": "revenue_drop", "severity": "warning", "scope": "all_currencies"},
        summary="Successful charges across all currencies are far below the same hours of previous weeks.",
        description=(
            "Successful charges in all currencies together are {{ $value | humanizePercentage }} below the "
            f"trend-adjusted median of the same hours of the previous {r.baseline_weeks} weeks: "
            f"{count(long.charges_all)} over the last {long.window} (usually {count(long.charges_all_expected)}), "
            f"{count(short.charges_all)} over the last {short.window} (usually {count(short.charges_all_expected)}); "
            f"warning from {percent(r.warning_drop_ratio)} with fewer charges than chance explains, when no single "
            "currency explains it."
        ),
    )


def refund_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """Refunded amount above max_refund_ratio of the day's revenue AND more refunds than the currency's usual
    refunds per successful charge explain (Poisson test, docs/detectors.md), per currency and livemode."""
    f = cfg.refunds
    w = f.window
    by = "currency, livemode"
    # Own records of the window's amounts and counts (the refund window may differ from revenue_drop's), built from
    # the hourly records like revenue_drop's windows.
    revenue = f"currency:stripe_charge_amount_collected:increase{w}"
    refunded = f"currency:stripe_refund_amount:increase{w}"
    refunds = f"currency:stripe_refunds:increase{w}"
    succeeded = f"currency:stripe_charges_succeeded:increase{w}"
    ratio = f"currency:stripe_refund_amount:ratio_rate{w}"
    rate = f"currency:stripe_refunds:per_charge_{f.baseline_days}d"
    expected = f"currency:stripe_refunds:expected_increase{w}"
    history = f"[{points(f'{f.baseline_days}d')}:1d] offset 1d"
    q, args = "{currency=%q,livemode=%q}", "$labels.currency $labels.livemode"
    # Whole-hour windows (the shipped day) from the hourly records; shorter ones (test setups) from raw samples.
    hourly = parse_duration(w) % 3600 == 0
    rules = []
    if hourly:
        # Level 1 (the revenue hourly records are revenue_rules'). Zero where the charges' hourly record exists but
        # no refund was counted yet: a currency's first refunds must not start a series whose mean over its first
        # hours would then be taken for the whole window.
        rules += [
            record(name, f"{counter_increase(sel(cfg, metric), '1h', by)}\nor\n{HOURLY_CHARGES} * 0")
            for name, metric in (
                (HOURLY_REFUND_AMOUNT, "stripe_refund_amount_total"),
                (HOURLY_REFUNDS, "stripe_refunds_total"),
            )
        ]

    def increase(name: str, raw: str) -> str:
        return rolling(name, w) if hourly else raw

    def counted(metric: str) -> str:
        return counter_increase(sel(cfg, metric), w, by)

    rules += [
        record(revenue, increase(HOURLY_AMOUNT, counted("stripe_charge_amount_total"))),
        record(succeeded, increase(HOURLY_CHARGES, succeeded_increase(cfg, w, by=by))),
        record(refunded, f"{increase(HOURLY_REFUND_AMOUNT, counted('stripe_refund_amount_total'))}\nor\n{revenue} * 0"),
        record(refunds, f"{increase(HOURLY_REFUNDS, counted('stripe_refunds_total'))}\nor\n{succeeded} * 0"),
        record(ratio, f"{refunded}\n/\n({revenue} > 0)"),
        # Refunds per successful charge over the previous completed days (day steps: no overlap with today),
        # once min_baseline_days are known, never below min_refund_rate_ratio.
        record(
            rate,
            f"clamp_min(\n  sum_over_time({refunds}{history})\n  /\n  (sum_over_time({succeeded}{history}) > 0),\n"
            f"  {num(f.min_refund_rate_ratio)}\n)\nand on ({by})\ncount_over_time({succeeded}{history}) >= "
            f"{f.min_baseline_days}",
        ),
        # Today's charges at the usual rate, or the usual daily count when that is more: refunds follow charges by
        # days, so a quiet Sunday still receives the refunds of a busy week.
        record(
            expected,
            larger(
                f"(\n  {rate}\n  or\n  {succeeded} * 0 + {num(f.cold_start_refund_rate_ratio)}\n)\n"
                f"* on ({by})\n{succeeded}",
                f"avg_over_time({refunds}{history})\nand on ({by})\ncount_over_time({succeeded}{history}) >= "
                f"{f.min_baseline_days}",
            ),
        ),
        alert(
            cfg,
            "BillingWatchRefundRatioHigh",
            (
                f"{ratio} > {num(f.max_refund_ratio)}\n"
                f"and on ({by})\n{refunds} >= on ({by}) {poisson_threshold(expected, f.z)}\n"
                f"and on ({by})\n{refunds} >= on ({by}) {num(f.factor)} * {expected}\n"
                f"and on ({by})\n{refunds} >= {f.min_refunds}" + (f"\nand on ({by})\n{covered(w)}" if hourly else "")
            ),
            for_duration=f.for_duration,
            keep_firing_for=f.keep_firing_for,
            labels={"detector": "refund_ratio", "severity": "warning"},
            summary="A large share of the last day's revenue was refunded, in more refunds than usual.",
            description=(
                query_value(refunds + q, args)
                + " refunds of "
                + query_value(refunded + q, args, money=True)
                + f" {{{{ $labels.currency | toUpper }}}} over the last {w} (livemode {{{{ $labels.livemode }}}}) are "
                + "{{ $value | humanizePercentage }} of the "
                + query_value(revenue + q, args, money=True)
                + f" collected (threshold {percent(f.max_refund_ratio)}); "
                + query_value(expected + q, args, "%.1f")
                + f" refunds were expected from the usual refunds per charge of the last {f.baseline_days} days "
                + f"(significant at z = {num(f.z)}, at least {num(f.factor)} x expected and {f.min_refunds})."
            ),
        ),
    ]
    return rules
