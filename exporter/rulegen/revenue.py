"""revenue_drop and the refund-to-revenue ratio, per currency, as PromQL.

Revenue is stripe_charge_amount_total: money actually collected through successful (captured) charges. Invoice
amounts are not added: an invoice paid by card also produces a charge, so adding invoice.paid amounts would count
it twice, and invoices marked paid out of band move no money through Stripe.
"""

from __future__ import annotations

from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import format_duration, parse_duration
from exporter.rulegen.promql import alert, counter_increase, percent, query_value, record, sel
from exporter.rulegen.stats import larger, num, poisson_threshold


def group(cfg: RulesConfig) -> dict[str, Any]:
    rules = revenue_rules(cfg)
    rules += refund_rules(cfg)
    return {"name": "billingwatch-revenue", "interval": cfg.intervals.revenue, "rules": rules}


def succeeded_increase(cfg: RulesConfig, window: str, offset: str = "", by: str = "currency") -> str:
    attempts = counter_increase(sel(cfg, "stripe_charges_total"), window, by, offset)
    failed = counter_increase(sel(cfg, "stripe_charges_failed_total"), window, by, offset)
    return f"{attempts}\n-\n(\n{failed}\nor\n{attempts} * 0\n)"


def revenue_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    r = cfg.revenue_drop
    w, n = r.window, r.baseline_windows
    window_s = parse_duration(w)
    baseline_range = format_duration(window_s * n)
    amount = sel(cfg, "stripe_charge_amount_total")
    current = f"currency:stripe_charge_amount:increase{w}"
    baseline = f"currency:stripe_charge_amount:avg_increase{w}_prev{n}"
    baseline_charges = f"currency:stripe_charges_succeeded:avg_increase{w}_prev{n}"
    # A brand-new install (or a currency first seen recently) has no full baseline: the series must have had a
    # sample in the first stretch of the oldest baseline window (a twenty-fourth of a window, at least a minute).
    span = min(window_s, max(60, window_s // 24))
    oldest = format_duration(window_s * (n + 1) - span)

    def drop_alert(severity: str, ratio: float) -> dict[str, Any]:
        return alert(
            cfg,
            "BillingWatchRevenueDrop",
            (
                f"(1 - {current} / {baseline}) > {ratio}\n"
                f"and on (currency)\n{baseline_charges} >= {r.min_baseline_charges}\n"
                f"and on (currency)\nmax by (currency) (present_over_time({amount}[{format_duration(span)}] "
                f"offset {oldest}))\n"
                f"and on ()\nmin(avg_over_time({sel(cfg, 'up')}[{w}])) >= {r.min_up_ratio}"
            ),
            for_duration=r.for_duration,
            labels={"detector": "revenue_drop", "severity": severity},
            summary="Collected revenue of the last day is far below its weekly baseline.",
            description=(
                f"{{{{ $labels.currency | toUpper }}}} collected over the last {w}: "
                + query_value(f"{current}{{currency=%q}}", "$labels.currency", money=True)
                + ", {{ $value | humanizePercentage }} below the average of the previous "
                + f"{n} windows ("
                + query_value(f"{baseline}{{currency=%q}}", "$labels.currency", money=True)
                + f"); {severity} from {percent(ratio)}."
            ),
        )

    return [
        record(baseline, f"{counter_increase(amount, baseline_range, 'currency', w)}\n/ {n}"),
        record(baseline_charges, f"(\n{succeeded_increase(cfg, baseline_range, w)}\n)\n/ {n}"),
        # A currency without a single sample in the current window (no charge since an exporter restart long ago)
        # still had a baseline: it records 0, which is the drop to alert on.
        record(current, f"{counter_increase(amount, w, 'currency')}\nor\n{baseline} * 0"),
        drop_alert("warning", r.warning_drop_ratio),
        drop_alert("critical", r.critical_drop_ratio),
    ]


def refund_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """Refunded amount above max_refund_ratio of the day's revenue AND more refunds than the currency's usual
    refunds per successful charge explain (Poisson test, docs/detectors.md), per currency and livemode."""
    f = cfg.refunds
    w = f.window
    by = "currency, livemode"
    # Own record of the collected amount, by currency AND livemode (the revenue rules' may aggregate differently).
    revenue = f"currency:stripe_charge_amount_collected:increase{w}"
    refunded = f"currency:stripe_refund_amount:increase{w}"
    refunds = f"currency:stripe_refunds:increase{w}"
    succeeded = f"currency:stripe_charges_succeeded:increase{w}"
    ratio = f"currency:stripe_refund_amount:ratio_rate{w}"
    rate = f"currency:stripe_refunds:per_charge_{f.baseline_days}d"
    expected = f"currency:stripe_refunds:expected_increase{w}"
    history = f"[{f.baseline_days}d:1d] offset 1d"
    q, args = "{currency=%q,livemode=%q}", "$labels.currency $labels.livemode"
    rules = [
        record(revenue, counter_increase(sel(cfg, "stripe_charge_amount_total"), w, by)),
        record(succeeded, succeeded_increase(cfg, w, by=by)),
        record(refunded, f"{counter_increase(sel(cfg, 'stripe_refund_amount_total'), w, by)}\nor\n{revenue} * 0"),
        record(refunds, f"{counter_increase(sel(cfg, 'stripe_refunds_total'), w, by)}\nor\n{succeeded} * 0"),
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
                f"and on ({by})\n{refunds} >= {f.min_refunds}"
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
