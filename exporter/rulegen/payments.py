"""charge_failure_spike, card testing and fraud_spike (disputes, early fraud warnings, the networks' monthly
programmes) as PromQL. The math, the false-alarm rates and the cold start are in docs/detectors.md.

Everything is aggregated `by (..., livemode)` (docs/CONTRACTS.md, contract 1): live and test traffic are judged
apart. Counts are recorded as `:increase<window>`; ratios divide recorded (aggregated) counts. Baselines read
recorded series through subqueries with hour or day steps (a few hundred points), never weeks of raw samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import parse_duration
from exporter.rulegen.promql import alert, counter_increase, percent, points, query_value, record, sel
from exporter.rulegen.stats import larger, num, poisson_threshold, scan_z, wilson_lower

BY_CURRENCY = "currency, livemode"
BY_JOB = "job, livemode"


def group(cfg: RulesConfig) -> dict[str, Any]:
    rules = charge_failure_rules(cfg)
    lead = outage_path(cfg, rules)
    return {
        "name": "billingwatch-payments",
        "interval": cfg.intervals.payments,
        # In a group of its own, in this order: Prometheus evaluates a group's rules one after another at one
        # timestamp, so the 15-minute path has no group boundary (each costs up to an interval) inside it, and one
        # to the on-session alerts, which read its records directly.
        "lead": lead,
        "rules": [r for r in rules if r not in lead]
        + card_testing_rules(cfg)
        + fraud_rules(cfg)
        + monthly_dispute_rules(cfg),
    }


def outage_path(cfg: RulesConfig, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records from the raw counters to the on-session Wilson bound over the short window and the fast path's
    count, in rule order (each one's inputs come before it). The spike and the alerts, which also read the hour
    windows and the baseline, stay with those."""
    on = scopes(cfg)[0]
    w = cfg.charge_failure_spike.short_window
    names = {
        f"job:stripe_charge_attempts:increase{w}",
        f"job:stripe_charge_attempts_failed:increase{w}",
        f"job:stripe_charges_off_session:increase{w}",
        f"job:stripe_charges_off_session_failed:increase{w}",
        on.a(w),
        on.f(w),
        on.p(w),
        on.k(w),
        on.n(w),
        on.wilson(w),
        f"{PROCESSING}:increase{w}",
    }
    return [r for r in rules if r.get("record") in names]


# ---------------------------------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class Scope:
    """One population of charge attempts whose failure ratio is tested: its record names and windows."""

    level: str  # "currency" or "job"
    by: str
    attempts: str  # metric part of the attempts records
    failed: str  # metric part of the failures records
    windows: tuple[str, ...]
    payers: bool  # whether the failing-payers guard applies

    def a(self, w: str) -> str:
        return f"{self.level}:{self.attempts}:increase{w}"

    def f(self, w: str) -> str:
        return f"{self.level}:{self.failed}:increase{w}"

    def p(self, w: str) -> str:
        return f"{self.level}:stripe_charge_failed_payers:increase{w}"

    def k(self, w: str) -> str:
        """Failures the test counts: each failing payer once per window where the exporter tells payers apart."""
        return f"{self.level}:{self.failed}:distinct_increase{w}" if self.payers else self.f(w)

    def n(self, w: str) -> str:
        """Attempts the test counts: a payer's repeated failures in the window folded into one."""
        return f"{self.level}:{self.attempts}:distinct_increase{w}" if self.payers else self.a(w)

    def ratio(self, w: str) -> str:
        return f"{self.level}:{self.failed}:ratio_rate{w}"

    def wilson(self, w: str) -> str:
        return f"{self.level}:{self.failed}:wilson_lower{w}"

    @property
    def threshold(self) -> str:
        return f"{self.level}:{self.failed}:threshold"

    def baseline(self, days: int) -> str:
        return f"{self.level}:{self.failed}:ratio_baseline{days}d"

    @property
    def spike(self) -> str:
        return f"{self.level}:{self.failed}:spike"


def scopes(cfg: RulesConfig) -> tuple[Scope, Scope, Scope]:
    c = cfg.charge_failure_spike
    on = Scope("job", BY_JOB, "stripe_charges_on_session", "stripe_charges_on_session_failed",
               (c.short_window, c.window, c.long_window), True)  # fmt: skip
    off = Scope("job", BY_JOB, "stripe_charges_off_session", "stripe_charges_off_session_failed",
                (c.window, c.long_window), False)  # fmt: skip
    currency = Scope(
        "currency", BY_CURRENCY, "stripe_charges", "stripe_charges_failed", (c.window, c.long_window), True
    )
    return on, off, currency


def charge_failure_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    on, off, currency = scopes(cfg)
    rules: list[dict[str, Any]] = []
    attempts = sel(cfg, "stripe_charge_attempts_total")
    invoices_off = sel(cfg, "stripe_invoice_payment_attempts_total", 'session="off"')
    for w in on.windows:
        every, every_failed = (
            f"job:stripe_charge_attempts:increase{w}",
            f"job:stripe_charge_attempts_failed:increase{w}",
        )
        failed_sel = sel(cfg, "stripe_charge_attempts_total", 'outcome="failed"')
        off_failed_sel = sel(cfg, "stripe_invoice_payment_attempts_total", 'session="off"', 'outcome="failed"')
        rules += [
            record(every, counter_increase(attempts, w, BY_JOB)),
            record(every_failed, f"{counter_increase(failed_sel, w, BY_JOB)}\nor\n{every} * 0"),
            # Off-session attempts are invoice payment attempts Stripe made without the customer (renewals,
            # dunning retries): counted from invoice events, which every API version sends.
            record(off.a(w), f"{counter_increase(invoices_off, w, BY_JOB)}\nor\n{every} * 0"),
            record(off.f(w), f"{counter_increase(off_failed_sel, w, BY_JOB)}\nor\n{off.a(w)} * 0"),
            record(on.a(w), f"clamp_min({every} - {off.a(w)}, 0)"),
            record(on.f(w), f"clamp_min({every_failed} - {off.f(w)}, 0)"),
            record(on.p(w), counter_increase(sel(cfg, "stripe_charge_failed_payers_total"), w, BY_JOB)),
        ]
    for w in currency.windows:
        rules += [
            record(currency.a(w), counter_increase(sel(cfg, "stripe_charges_total"), w, BY_CURRENCY)),
            # A currency with attempts but no failure series yet records 0 rather than nothing.
            record(
                currency.f(w),
                f"{counter_increase(sel(cfg, 'stripe_charges_failed_total'), w, BY_CURRENCY)}\nor\n{currency.a(w)} * 0",
            ),
            record(currency.p(w), counter_increase(sel(cfg, "stripe_charge_failed_payers_total"), w, BY_CURRENCY)),
        ]
    rules += processing_rules(cfg)
    for scope in (on, off, currency):
        rules += scope_rules(cfg, scope)
    rules += [
        # The expression rather than the spike record: one group boundary less between the counts and the alert.
        failure_alert(cfg, on, "warning", spike_expr(cfg, on), "Checkout charge failures are far above normal."),
        failure_alert(
            cfg, on, "critical", spike_expr(cfg, on, critical=True), "Most checkout charges are failing: an outage."
        ),
        failure_alert(
            cfg, off, "warning", spike_expr(cfg, off), "Renewal and retry charge failures are far above normal."
        ),
        # A single currency, when the all-currency view does not already say it: one episode, one notification.
        failure_alert(
            cfg,
            currency,
            "warning",
            f"{spike_expr(cfg, currency)}\nunless on (livemode)\n{on.spike}",
            "Charge failures in one currency are far above normal.",
        ),
    ]
    return rules


PROCESSING = "job:stripe_charge_processing_failed_payers"


def processing_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """The outage fast path's counts and its r: processing-failing payers in the short window, and how many of
    them make chance about `processing_false_alerts_per_30_days` a month at the account's own ratio."""
    c = cfg.charge_failure_spike
    step = c.window
    days = f"[{points(f'{c.baseline_days}d')}:{step}]"
    steps_per_day = 86400 // parse_duration(step)
    per_step = f"job:stripe_charge_attempts:increase{step}"
    attempts = f"sum_over_time({per_step}{days})"
    failed = f"sum_over_time({PROCESSING}:increase{step}{days})"
    known = f"count_over_time({per_step}{days}) >= {steps_per_day * c.min_baseline_days}"
    # Runs of r processing failures happen about M * p^r times a month (M attempts a month, p the ratio; card
    # declines in between do not break a run, a success does): r = ln(budget / M) / ln(p), rounded up.
    monthly = f"({30 * steps_per_day} * avg_over_time({per_step}{days}))"
    needed = (
        f"clamp_min(\n  ceil(ln({num(c.processing_false_alerts_per_30_days)} / {monthly})"
        f" / ln({PROCESSING}:ratio_baseline{c.baseline_days}d)),\n  {c.processing_min_failing_payers}\n)"
    )
    counter = sel(cfg, "stripe_charge_processing_failed_payers_total")
    return [
        record(f"{PROCESSING}:increase{w}", counter_increase(counter, w, BY_JOB)) for w in (c.short_window, step)
    ] + [
        # (failures + 1) / (attempts + 2) over the last days: never 0 (an account that has not seen one yet), and
        # an outage in those days raises it (and r) for a week rather than being forgotten.
        record(
            f"{PROCESSING}:ratio_baseline{c.baseline_days}d",
            f"(({failed} or {attempts} * 0) + 1)\n/\n({attempts} + 2)\nand on ({BY_JOB})\n{known}",
        ),
        record(f"{PROCESSING}:needed{c.short_window}", needed),
    ]


def processing_outage(cfg: RulesConfig) -> str:
    """Nothing succeeded in the short window while r payers failed with processing errors; the value is the
    window's failure ratio (1: every attempt failed)."""
    w = cfg.charge_failure_spike.short_window
    every, failed = f"job:stripe_charge_attempts:increase{w}", f"job:stripe_charge_attempts_failed:increase{w}"
    return (
        f"{failed} / ({every} > 0)\n"
        f"and on ({BY_JOB}) {PROCESSING}:increase{w} >= on ({BY_JOB}) {PROCESSING}:needed{w}\n"
        f"and on ({BY_JOB}) ({every} - {failed}) < 0.5"
    )


def scope_rules(cfg: RulesConfig, s: Scope) -> list[dict[str, Any]]:
    c = cfg.charge_failure_spike
    main = c.window
    a_day = f"sum_over_time({s.a(main)}[{points('1d')}:{main}])"
    f_day = f"sum_over_time({s.f(main)}[{points('1d')}:{main}])"
    daily = f"({f_day} / ({a_day} > 0))"
    off = s.attempts.endswith("off_session")
    start = c.cold_start_off_session_baseline_ratio if off else c.cold_start_baseline_ratio
    cold = min(max(c.baseline_factor * start, c.min_threshold_ratio), c.max_threshold_ratio)
    rules = [record(s.ratio(main), f"{s.f(main)}\n/\n({s.a(main)} > 0)")]
    if s.payers:
        for w in s.windows:
            rules += [
                # A customer retrying a declined card four times is one failure, not four independent ones (falls
                # back to every failure where stripe_charge_failed_payers_total is missing).
                record(s.k(w), f"{s.p(w)} <= on ({s.by}) {s.f(w)}\nor\n{s.f(w)}"),
                record(s.n(w), f"{s.a(w)} - {s.f(w)} + {s.k(w)}"),
            ]
    rules += [record(s.wilson(w), wilson_lower(s.k(w), f"({s.n(w)} > 0)", c.z)) for w in s.windows]
    rules += [
        # The median of the last completed UTC days' failure ratios (daily sums of the recorded hourly counts:
        # 7 x 24 points), once enough days are known.
        record(
            s.baseline(c.baseline_days),
            f"quantile_over_time(0.5, {daily}[{points(f'{c.baseline_days}d')}:1d])\n"
            f"and on ({s.by})\ncount_over_time({daily}[{points(f'{c.baseline_days}d')}:1d]) >= {c.min_baseline_days}",
        ),
        record(
            s.threshold,
            f"clamp(\n  {num(c.baseline_factor)} * {s.baseline(c.baseline_days)},\n  {num(c.min_threshold_ratio)},"
            f" {num(c.max_threshold_ratio)}\n)\nor\n{s.a(main)} * 0 + {num(cold)}",
        ),
    ]
    if s.level == "job" and s.payers:
        rules.append(record(s.spike, spike_expr(cfg, s)))
    return rules


def spike_expr(cfg: RulesConfig, s: Scope, *, critical: bool = False) -> str:
    """Any window's Wilson lower bound above the threshold (or, critical, above critical_ratio as well), with
    enough failures from enough payers; the long window only while the main one is still elevated (an hour without
    attempts must not revive an episode that ended hours ago; keep_firing_for bridges quiet hours within one)."""
    c = cfg.charge_failure_spike
    branches = []
    for w in s.windows:
        cond = f"{s.wilson(w)} > on ({s.by}) {s.threshold}"
        if critical:
            cond = f"({cond}) > {num(c.critical_ratio)}"
        cond += f"\nand on ({s.by}) {s.k(w)} >= {c.min_failures}"
        if s.payers:
            cond += f"\nunless on ({s.by}) {s.p(w)} < {c.min_failing_payers}"
        if w == c.long_window:
            cond += f"\nand on ({s.by}) {s.ratio(c.window)} > on ({s.by}) {s.threshold}"
        branches.append(f"(\n{cond}\n)")
    if s.level == "job" and s.payers:
        branches.append(f"(\n{processing_outage(cfg)}\n)")
    # `or` matches label sets without the metric name: whichever window holds, one alert per (job, livemode).
    return "\nor\n".join(branches)


def failure_alert(cfg: RulesConfig, s: Scope, severity: str, expr: str, summary: str) -> dict[str, Any]:
    c = cfg.charge_failure_spike
    main = c.window
    if s.level == "currency":
        q, args, where = (
            "{currency=%q,livemode=%q}",
            "$labels.currency $labels.livemode",
            " in {{ $labels.currency | toUpper }}",
        )
    else:
        q, args, where = "{job=%q,livemode=%q}", "$labels.job $labels.livemode", ""
    kind = {"stripe_charges_on_session": " on-session", "stripe_charges_off_session": " off-session"}.get(
        s.attempts, ""
    )
    labels = {"detector": "charge_failure_spike", "severity": severity}
    if s.level == "job":
        labels["session"] = "off" if s.attempts.endswith("off_session") else "on"
    extra = f" and above {percent(c.critical_ratio)}" if severity == "critical" else ""
    return alert(
        cfg,
        "BillingWatchChargeFailureSpike",
        expr,
        for_duration=c.for_duration,
        keep_firing_for=c.keep_firing_for,
        labels=labels,
        summary=summary,
        description=(
            query_value(s.f(main) + q, args, "%.0f")
            + " of "
            + query_value(s.a(main) + q, args, "%.0f")
            + f"{kind} charge attempts{where} failed over the last {main} (livemode {{{{ $labels.livemode }}}}). "
            + "At least {{ $value | humanizePercentage }} of attempts are failing "
            + f"(Wilson lower bound, z = {num(c.z)}), above the threshold of "
            + query_value(s.threshold + q, args, "%.3f")
            + f"{extra}: {num(c.baseline_factor)} x the usual ratio of the last {c.baseline_days} days ("
            + query_value(s.baseline(c.baseline_days) + q, args, "%.3f", missing="not known yet")
            + f"), within {percent(c.min_threshold_ratio)}-{percent(c.max_threshold_ratio)}."
        ),
    )


# ---------------------------------------------------------------------------------------------- card testing


def card_testing_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    t = cfg.card_testing
    w = t.window
    failed = f"job:stripe_charges_guest_failed:increase{w}"
    guests = f"job:stripe_charges_guest:increase{w}"
    baseline = f"job:stripe_charges_guest_failed:q{round(t.baseline_quantile * 100)}_increase{w}_{t.baseline_days}d"
    threshold = f"job:stripe_charges_guest_failed:threshold{w}"
    guest_sel = sel(cfg, "stripe_charge_attempts_total", 'payer="guest"')
    guest_failed_sel = sel(cfg, "stripe_charge_attempts_total", 'payer="guest"', 'outcome="failed"')
    step = f"[{t.baseline_days}d:{w}]"
    # A day of hourly points before the baseline counts (cold start below).
    min_points = max(1, round(86400 / parse_duration(w)))
    q = "{job=%q,livemode=%q}"
    args = "$labels.job $labels.livemode"
    return [
        record(guests, counter_increase(guest_sel, w, BY_JOB)),
        record(
            failed,
            f"{counter_increase(guest_failed_sel, w, BY_JOB)}\nor\n{guests} * 0",
        ),
        record(
            baseline,
            f"quantile_over_time({num(t.baseline_quantile)}, {failed}{step})\n"
            f"and on ({BY_JOB})\ncount_over_time({failed}{step}) >= {min_points}",
        ),
        record(
            threshold,
            f"clamp_min({baseline} + {num(t.z)} * sqrt({baseline}), {t.min_failures})\n"
            f"or\n{failed} * 0 + {t.min_failures}",
        ),
        alert(
            cfg,
            "BillingWatchCardTesting",
            (
                f"{failed} >= on ({BY_JOB}) {threshold}\n"
                f"and on ({BY_JOB})\n(\n  {baseline}\n  or\n  {failed} / ({guests} > 0) >= "
                f"{num(t.cold_start_guest_failure_ratio)}\n)"
            ),
            for_duration=t.for_duration,
            keep_firing_for=t.keep_firing_for,
            labels={"detector": "charge_failure_spike", "severity": "warning"},
            summary="A burst of failed guest charges: card testing is likely.",
            description=(
                '{{ $value | printf "%.0f" }} charges without a customer failed over the last '
                + f"{w} (livemode {{{{ $labels.livemode }}}}), out of "
                + query_value(guests + q, args)
                + " guest attempts; the alert threshold is "
                + query_value(threshold + q, args)
                + f" (a busy hour of the last {t.baseline_days} days, "
                + query_value(baseline + q, args, missing="not known yet")
                + f", plus {num(t.z)} standard deviations; at least {t.min_failures})."
            ),
        ),
    ]


# ---------------------------------------------------------------------------------------------------- disputes


def spike_condition(count: str, expected: str, z: float, factor: float, least: int) -> str:
    """A count significantly above its Poisson expectation (z), at least `factor` x it and at least `least`."""
    return (
        f"{count} >= on ({BY_JOB}) {poisson_threshold(expected, z)}\n"
        f"and on ({BY_JOB})\n{count} >= on ({BY_JOB}) {num(factor)} * {expected}\n"
        f"and on ({BY_JOB})\n{count} >= {least}"
    )


def count_spike_alerts(
    cfg: RulesConfig, name: str, metric: str, what: str, minimum: int, summary: str
) -> list[dict[str, Any]]:
    """Warning (and, for disputes, critical) when a day's count is significantly above its expected count; for
    disputes the warning also tests the last completed days (sustained_window, long_sustained_window), where a
    wave at a few times the usual rate of a small account shows over days what no single day can."""
    f = cfg.fraud_spike
    q, args = "{job=%q,livemode=%q}", "$labels.job $labels.livemode"
    count, expected = f"job:{metric}:increase{f.window}", f"job:{metric}:expected_increase{f.window}"
    disputes = name == "BillingWatchDisputeSpike"
    windows = sustained_windows(f) if disputes else ()
    # The rolling day gets many correlated looks a day: its z is solved from the false-alert budget, as
    # revenue_drop's; the completed-day windows change once a day and keep f.z.
    day_z = scan_z(parse_duration(f.window), f.false_alerts_per_30_days)
    levels = [("warning", day_z, f.factor, minimum)]
    if disputes:
        levels.append(("critical", f.critical_z, f.critical_factor, f.critical_min_disputes))
    out = []
    for severity, z, factor, least in levels:
        expr = spike_condition(count, expected, z, factor, least)
        described = f"from z = {num(z)}"
        if severity == "warning" and windows:
            # `or` matches label sets without the metric name: whichever window holds, one alert per (job, livemode).
            expr = "\nor\n".join(
                f"(\n{spike_condition(c, e, wz, factor, least)}\n)"
                for c, e, wz in ((count, expected, z), *((f"job:{metric}:increase{w}",
                                                         f"job:{metric}:expected_increase{w}", f.z) for w in windows))
            )  # fmt: skip
            described = f"when the day reaches z = {num(z)} or a run of completed days z = {num(f.z)}"
        sustained = "".join(
            "; "
            + query_value(f"job:{metric}:increase{w}" + q, args)
            + f" over the last {w[:-1]} completed days against "
            + query_value(f"job:{metric}:expected_increase{w}" + q, args, "%.1f")
            + " expected"
            for w in (windows if severity == "warning" else ())
        )
        out.append(
            alert(
                cfg,
                name,
                expr,
                for_duration=f.for_duration,
                keep_firing_for=f.keep_firing_for,
                labels={"detector": "fraud_spike", "severity": severity},
                summary=summary,
                description=(
                    query_value(count + q, args) + f" {what} over the last {f.window} (livemode "
                    "{{ $labels.livemode }}) against "
                    + query_value(expected + q, args, "%.1f")
                    + f" expected from the previous {f.baseline_days} days (at least "
                    + f"{percent(f.min_expected_ratio)} of "
                    + query_value(f"job:stripe_charges_succeeded:increase{f.window}" + q, args)
                    + f" successful charges){sustained}. {severity.capitalize()} {described}, "
                    f"{num(factor)} x the expected count and at least {least}."
                ),
            )
        )
    return out


def sustained_windows(f: Any) -> tuple[str, ...]:
    return tuple(w for w in (f.sustained_window, f.long_sustained_window) if w)


def fraud_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    f = cfg.fraud_spike
    w = f.window
    attempts = f"job:stripe_charges:increase{w}"
    failed = f"job:stripe_charges_failed:increase{w}"
    succeeded = f"job:stripe_charges_succeeded:increase{w}"
    rules = [
        *day_count_rules(cfg),
        # Disputes and fraud warnings are measured against successful charges, as Stripe and the networks do.
        record(succeeded, f"{attempts} - {failed}"),
    ]
    for metric, alert_name, what, minimum, summary in (
        ("stripe_disputes", "BillingWatchDisputeSpike", "disputes were opened", f.min_disputes,
         "Disputes are far above the account's usual rate."),
        ("stripe_early_fraud_warnings", "BillingWatchEarlyFraudWarningSpike", "early fraud warnings arrived",
         f.min_early_fraud_warnings, "Radar early fraud warnings are far above usual: disputes are likely to follow."),
    ):  # fmt: skip
        count, ratio = f"job:{metric}:increase{w}", f"job:{metric}:ratio_rate{w}"
        expected = f"job:{metric}:expected_increase{w}"
        history = f"{count}[{points(f'{f.baseline_days}d')}:1d] offset 1d"
        rules += [
            record(ratio, f"{count}\n/\n({succeeded} > 0)"),
            # The mean of the previous completed days' counts (day steps: no overlap with the current window),
            # never below min_expected_ratio of today's successful charges.
            record(
                expected,
                larger(
                    f"avg_over_time({history})\n  and on ({BY_JOB})\n  count_over_time({history}) >= "
                    f"{f.min_baseline_days}",
                    f"{num(f.min_expected_ratio)} * {succeeded}",
                ),
            ),
        ]
        if alert_name == "BillingWatchDisputeSpike":
            rules += sustained_rules(cfg, metric, count, succeeded)
        rules += count_spike_alerts(cfg, alert_name, metric, what, minimum, summary)
    return rules


HOUR = "1h"
DAY_COUNTED = ("stripe_charges", "stripe_charges_failed", "stripe_disputes", "stripe_early_fraud_warnings")


def day_count_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """`job:<metric>:increase<window>` of charges, failed charges, disputes and early fraud warnings, from
    recorded hourly counts when the window is whole hours (a test-only window of minutes is one bucket)."""
    w = cfg.fraud_spike.window
    bucket = HOUR if parse_duration(w) % parse_duration(HOUR) == 0 else w
    attempts = f"job:stripe_charges:increase{bucket}"
    rules = []
    for metric in DAY_COUNTED:
        counted = counter_increase(sel(cfg, metric + "_total"), bucket, BY_JOB)
        # An hour with attempts but no failure (dispute, fraud warning) series yet records 0 rather than nothing.
        fill = "" if metric == DAY_COUNTED[0] else f"\nor\n{attempts} * 0"
        rules.append(record(f"job:{metric}:increase{bucket}", counted + fill))
    if bucket != w:
        rules += [record(f"job:{m}:increase{w}", completed_hours(f"job:{m}:increase{bucket}", w)) for m in DAY_COUNTED]
    return rules


def completed_hours(hourly_record: str, window: str) -> str:
    """The count of the last `window` (whole hours), summed from the recorded hourly counts of now, an hour ago,
    two hours ago ...: consecutive hours that tile the window exactly, up to the last evaluation (docs/detectors.md,
    "Counting a day from recorded hours" says what this does at the window's edges). An hour without a record
    (before the install, a Prometheus outage) counts 0.

    Not `sum_over_time(...[24h:1h])`: subquery points sit on the clock's hour marks, so the current hour would
    count only once it is over. At a 5 s scrape, increase() over 24 hours of raw counters cost 60-230 ms per rule
    (docs/backtest.md, "Rule cost in a real Prometheus"); an hour of raw samples and 24 recorded points cost a
    fraction of that.
    """
    hours = parse_duration(window) // parse_duration(HOUR)
    terms = [hourly_record] + [f"({hourly_record} offset {k}h or {hourly_record} * 0)" for k in range(1, hours)]
    return "\n+ ".join(terms)


def sustained_rules(cfg: RulesConfig, metric: str, daily: str, succeeded: str) -> list[dict[str, Any]]:
    """The count of the last N completed UTC days (the rolling-day counts at the last N midnights: N recorded
    points) and its expectation: N x the mean day of the `baseline_days` before them (offset N days, so a wave
    never raises its own baseline), never below min_expected_ratio of those days' successful charges."""
    f = cfg.fraud_spike
    rules = []
    for w in sustained_windows(f):
        days = round(parse_duration(w) / 86400)
        history = f"{daily}[{points(f'{f.baseline_days}d')}:1d] offset {w}"
        rules += [
            record(f"job:{metric}:increase{w}", f"sum_over_time({daily}[{points(w)}:1d])"),
            record(
                f"job:{metric}:expected_increase{w}",
                larger(
                    f"{days} * avg_over_time({history})\n  and on ({BY_JOB})\n  count_over_time({history}) >= "
                    f"{f.min_baseline_days}",
                    f"{num(f.min_expected_ratio)} * sum_over_time({succeeded}[{points(w)}:1d])",
                ),
            ),
        ]
    return rules


def monthly_dispute_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    f, m = cfg.fraud_spike, cfg.dispute_monthly
    day, month = f.window, m.window
    q, args = "{job=%q,livemode=%q}", "$labels.job $labels.livemode"
    succeeded = f"job:stripe_charges_succeeded:increase{month}"
    disputes = f"job:stripe_disputes:increase{month}"
    efws = f"job:stripe_early_fraud_warnings:increase{month}"
    ratio = f"job:stripe_disputes:ratio_rate{month}"
    lower = f"job:stripe_disputes:wilson_lower{month}"
    vamp = f"job:stripe_disputes_and_fraud_warnings:ratio_rate{month}"

    def monthly(daily: str) -> str:
        # Sum of the rolling-day counts at the last 30 UTC midnights: the 30 completed days (a day late at most,
        # which a monthly programme does not mind), from 30 recorded points; a new install sums what it has.
        return f"sum_over_time({daily}[{points(month)}:1d])"

    return [
        record(succeeded, monthly(f"job:stripe_charges_succeeded:increase{day}")),
        record(disputes, monthly(f"job:stripe_disputes:increase{day}")),
        record(efws, monthly(f"job:stripe_early_fraud_warnings:increase{day}")),
        record(ratio, f"{disputes}\n/\n({succeeded} > 0)"),
        record(lower, wilson_lower(disputes, f"({succeeded} > 0)", m.z)),
        record(vamp, f"({disputes} + {efws})\n/\n({succeeded} > 0)"),
        alert(
            cfg,
            "BillingWatchMonthlyDisputeRatioHigh",
            f"{lower} >= {num(m.warning_ratio)}\nand on ({BY_JOB})\n{succeeded} >= {m.min_charges}",
            for_duration=m.for_duration,
            labels={"detector": "fraud_spike", "severity": "warning"},
            summary="The dispute ratio of the last 30 days is approaching the card networks' programmes.",
            description=(
                query_value(disputes + q, args)
                + " disputes against "
                + query_value(succeeded + q, args)
                + f" successful charges over the last {month} (livemode {{{{ $labels.livemode }}}}): "
                + query_value(ratio + q, args, "%.4f")
                + ", and at least {{ $value | humanizePercentage }} with "
                + f"z = {num(m.z)} (warning from {percent(m.warning_ratio)}, at least {m.min_charges} charges). "
                + f"Mastercard's programme starts at {percent(m.mastercard_ratio)} and {m.mastercard_min_disputes} "
                + f"chargebacks a month, Visa's VAMP at {percent(m.visa_ratio)} and {m.visa_min_count}."
            ),
        ),
        alert(
            cfg,
            "BillingWatchMonthlyDisputeRatioHigh",
            (
                f"(\n  {ratio} >= {num(m.mastercard_ratio)}\n  and on ({BY_JOB})\n  {disputes} >= "
                f"{m.mastercard_min_disputes}\n)\nor\n(\n  {vamp} >= {num(m.visa_ratio)}\n  and on ({BY_JOB})\n"
                f"  {disputes} + {efws} >= {m.visa_min_count}\n)"
            ),
            for_duration=m.for_duration,
            labels={"detector": "fraud_spike", "severity": "critical"},
            summary="Disputes of the last 30 days meet a card network's monitoring programme.",
            description=(
                query_value(disputes + q, args)
                + " disputes and "
                + query_value(efws + q, args)
                + " early fraud warnings against "
                + query_value(succeeded + q, args)
                + f" successful charges over the last {month} (livemode {{{{ $labels.livemode }}}}): "
                + f"Mastercard from {percent(m.mastercard_ratio)} with {m.mastercard_min_disputes} chargebacks, "
                + f"Visa VAMP from {percent(m.visa_ratio)} of (disputes + fraud reports) with {m.visa_min_count}."
            ),
        ),
    ]
