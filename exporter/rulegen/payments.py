"""charge_failure_spike and fraud_spike (disputes, early fraud warnings, 30-day dispute ratio) as PromQL.

Ratios divide aggregated increases (never averages of ratios); the `:ratio_rate<window>` records are the ratio of
the two rates over that window, which equals the ratio of the recorded increases. Counts are recorded as
`:increase<window>` so that descriptions and volume floors read as numbers of charges.
"""

from __future__ import annotations

from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import parse_duration
from exporter.rulegen.promql import alert, counter_increase, percent, query_value, record, sel


def group(cfg: RulesConfig) -> dict[str, Any]:
    return {
        "name": "billingwatch-payments",
        "interval": cfg.intervals.payments,
        "rules": charge_failure_rules(cfg) + fraud_rules(cfg) + monthly_dispute_rules(cfg),
    }


def charge_failure_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    c = cfg.charge_failure_spike
    w = c.window
    attempts = f"currency:stripe_charges:increase{w}"
    failed = f"currency:stripe_charges_failed:increase{w}"
    ratio = f"currency:stripe_charges_failed:ratio_rate{w}"
    return [
        record(attempts, counter_increase(sel(cfg, "stripe_charges_total"), w, "currency")),
        # A currency with attempts but no failure series yet records 0 rather than nothing.
        record(
            failed,
            f"{counter_increase(sel(cfg, 'stripe_charges_failed_total'), w, 'currency')}\nor\n{attempts} * 0",
        ),
        record(ratio, f"{failed}\n/\n({attempts} > 0)"),
        alert(
            cfg,
            "BillingWatchChargeFailureSpike",
            f"{ratio} > {c.max_failure_ratio}\nand on (currency)\n{attempts} >= {c.min_attempts}",
            for_duration=c.for_duration,
            labels={"detector": "charge_failure_spike", "severity": "warning"},
            summary="Charge failures are far above normal.",
            description=(
                "{{ $value | humanizePercentage }} of "
                + query_value(f"{attempts}{{currency=%q}}", "$labels.currency", "%.0f")
                + f" charge attempts in {{{{ $labels.currency | toUpper }}}} failed over the last {w} "
                f"(threshold {percent(c.max_failure_ratio)}, at least {c.min_attempts} attempts)."
            ),
        ),
    ]


def fraud_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    f = cfg.fraud_spike
    w = f.window
    attempts = f"job:stripe_charges:increase{w}"
    failed = f"job:stripe_charges_failed:increase{w}"
    succeeded = f"job:stripe_charges_succeeded:increase{w}"
    disputes = f"job:stripe_disputes:increase{w}"
    dispute_ratio = f"job:stripe_disputes:ratio_rate{w}"
    efws = f"job:stripe_early_fraud_warnings:increase{w}"
    efw_ratio = f"job:stripe_early_fraud_warnings:ratio_rate{w}"
    labels = {"detector": "fraud_spike"}
    count_of = lambda name: query_value(f"{name}{{job=%q}}", "$labels.job", "%.0f")  # noqa: E731
    return [
        record(attempts, counter_increase(sel(cfg, "stripe_charges_total"), w, "job")),
        record(failed, f"{counter_increase(sel(cfg, 'stripe_charges_failed_total'), w, 'job')}\nor\n{attempts} * 0"),
        # Disputes and fraud warnings are measured against successful charges, as Stripe and the networks do.
        record(succeeded, f"{attempts} - {failed}"),
        record(disputes, f"{counter_increase(sel(cfg, 'stripe_disputes_total'), w, 'job')}\nor\n{attempts} * 0"),
        record(dispute_ratio, f"{disputes}\n/\n({succeeded} > 0)"),
        record(
            efws, f"{counter_increase(sel(cfg, 'stripe_early_fraud_warnings_total'), w, 'job')}\nor\n{attempts} * 0"
        ),
        record(efw_ratio, f"{efws}\n/\n({succeeded} > 0)"),
        alert(
            cfg,
            "BillingWatchDisputeSpike",
            f"{dispute_ratio} >= {f.max_dispute_ratio}\nand on (job)\n{succeeded} >= {f.min_charges}",
            for_duration=f.for_duration,
            labels={**labels, "severity": "warning"},
            summary="The dispute ratio of the last day is at the card networks' monitoring threshold.",
            description=(
                f"{count_of(disputes)} disputes against {count_of(succeeded)} successful charges over the last "
                f"{w}: {{{{ $value | humanizePercentage }}}} (threshold {percent(f.max_dispute_ratio)}, "
                f"at least {f.min_charges} charges)."
            ),
        ),
        alert(
            cfg,
            "BillingWatchDisputeSpike",
            f"{disputes} >= {f.critical_disputes}",
            for_duration=f.for_duration,
            labels={**labels, "severity": "critical"},
            summary="Many disputes were opened within one day.",
            description=(
                f'{{{{ $value | printf "%.0f" }}}} disputes were opened over the last {w} '
                f"(critical from {f.critical_disputes}, whatever the volume)."
            ),
        ),
        alert(
            cfg,
            "BillingWatchEarlyFraudWarningSpike",
            (
                f"(\n  {efw_ratio} >= {f.max_early_fraud_warning_ratio}\n  and on (job)\n  {succeeded} >= "
                f"{f.min_charges}\n)\nor\n(\n  {efws} >= {f.low_volume_early_fraud_warnings}\n  and on (job)\n"
                f"  {succeeded} < {f.min_charges}\n)"
            ),
            for_duration=f.for_duration,
            labels={**labels, "severity": "warning"},
            summary="Radar early fraud warnings are elevated: disputes are likely to follow.",
            description=(
                f"{count_of(efws)} early fraud warnings against {count_of(succeeded)} successful charges over "
                f"the last {w} (threshold {percent(f.max_early_fraud_warning_ratio)} with at least "
                f"{f.min_charges} charges, or {f.low_volume_early_fraud_warnings} warnings below that volume)."
            ),
        ),
    ]


def monthly_dispute_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    f, m = cfg.fraud_spike, cfg.dispute_monthly
    day, month = f.window, m.window
    windows = parse_duration(month) / parse_duration(day)
    daily_disputes = f"job:stripe_disputes:increase{day}"
    daily_succeeded = f"job:stripe_charges_succeeded:increase{day}"
    succeeded = f"job:stripe_charges_succeeded:increase{month}"
    ratio = f"job:stripe_disputes:ratio_rate{month}"
    windows_text = f"{windows:g}"
    return [
        # The average of the recorded rolling daily counts over the month times the number of days estimates the
        # monthly count from about 43,000 recorded points instead of a month of raw samples per series.
        record(succeeded, f"avg_over_time({daily_succeeded}[{month}]) * {windows_text}"),
        record(ratio, f"avg_over_time({daily_disputes}[{month}])\n/\n(avg_over_time({daily_succeeded}[{month}]) > 0)"),
        alert(
            cfg,
            "BillingWatchMonthlyDisputeRatioHigh",
            f"{ratio} >= {m.warning_ratio}\nand on (job)\n{succeeded} >= {m.min_charges}",
            for_duration=m.for_duration,
            labels={"detector": "fraud_spike", "severity": "warning"},
            summary="The dispute ratio of the last 30 days is approaching the card networks' 1 % programmes.",
            description=(
                f"Disputes over the last {month} are {{{{ $value | humanizePercentage }}}} of about "
                + query_value(f"{succeeded}{{job=%q}}", "$labels.job", "%.0f")
                + f" successful charges (warning from {percent(m.warning_ratio)}, at least {m.min_charges} "
                "charges). Visa and Mastercard programmes start at 1 % a month."
            ),
        ),
    ]
