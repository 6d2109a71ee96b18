"""Typed view of the `rules:` section of the config (defaults and the reason for each live in exporter/defaults.yml).

`for_duration` is an alert's Prometheus `for:` (a Python keyword cannot be a field name). Durations are
Prometheus duration strings ("30s", "5m", "1h", "7d"); ratios are fractions (0.15 is 15 %).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from exporter.bounds import DELAY_BUCKETS
from exporter.rulegen.durations import parse_duration


@dataclass(frozen=True)
class GroupIntervals:
    anomalies: str
    payments: str
    revenue: str
    webhooks: str
    exporter: str
    churn: str


@dataclass(frozen=True)
class AnomalyRules:
    for_duration: str
    keep_firing_for: str


@dataclass(frozen=True)
class ChargeFailureRules:
    short_window: str
    window: str
    long_window: str
    z: float
    baseline_days: int
    min_baseline_days: int
    baseline_factor: float
    min_threshold_ratio: float
    max_threshold_ratio: float
    cold_start_baseline_ratio: float
    cold_start_off_session_baseline_ratio: float
    critical_ratio: float
    min_failures: int
    min_failing_payers: int
    processing_false_alerts_per_30_days: float
    processing_min_failing_payers: int
    for_duration: str
    keep_firing_for: str


@dataclass(frozen=True)
class CardTestingRules:
    window: str
    baseline_days: int
    baseline_quantile: float
    z: float
    min_failures: int
    cold_start_guest_failure_ratio: float
    for_duration: str
    keep_firing_for: str


@dataclass(frozen=True)
class FraudRules:
    window: str
    baseline_days: int
    min_baseline_days: int
    z: float
    false_alerts_per_30_days: float
    factor: float
    min_disputes: int
    min_expected_ratio: float
    critical_z: float
    critical_factor: float
    critical_min_disputes: int
    min_early_fraud_warnings: int
    sustained_window: str
    long_sustained_window: str
    for_duration: str
    keep_firing_for: str


@dataclass(frozen=True)
class MonthlyDisputeRules:
    window: str
    warning_ratio: float
    z: float
    min_charges: int
    mastercard_ratio: float
    mastercard_min_disputes: int
    visa_ratio: float
    visa_min_count: int
    for_duration: str


@dataclass(frozen=True)
class RefundRules:
    window: str
    max_refund_ratio: float
    baseline_days: int
    min_baseline_days: int
    z: float
    factor: float
    min_refunds: int
    min_refund_rate_ratio: float
    cold_start_refund_rate_ratio: float
    for_duration: str
    keep_firing_for: str


@dataclass(frozen=True)
class RevenueDropRules:
    window: str
    short_window: str
    baseline_weeks: int
    min_baseline_weeks: int
    warning_drop_ratio: float
    critical_drop_ratio: float
    min_expected_charges: int
    false_alerts_per_30_days: float
    min_up_ratio: float
    for_duration: str
    keep_firing_for: str


@dataclass(frozen=True)
class ChurnRules:
    window: str
    baseline_weeks: int
    min_baseline_weeks: int
    min_cancellations: int
    min_increase_factor: float
    false_alerts_per_30_days: float
    for_duration: str
    keep_firing_for: str


@dataclass(frozen=True)
class WebhookLagRules:
    window: str
    quantile: float
    warning_seconds: int
    critical_seconds: int
    min_events: int
    min_late_events: int
    for_duration: str


@dataclass(frozen=True)
class WebhookDeliveryRules:
    max_undelivered: int
    fetched_window: str
    min_fetched: int
    for_duration: str


@dataclass(frozen=True)
class ExporterRules:
    down_for: str
    silence: str
    silence_long: str
    silence_min_usual_events: int
    poller_silence: str
    signature_failures_window: str
    signature_failures_min: int
    signature_failures_critical_ratio: float
    signature_failures_recent: str
    signature_failures_for: str
    errors_window: str


@dataclass(frozen=True)
class RulesConfig:
    runbook_base_url: str
    grafana_url: str
    job: str
    intervals: GroupIntervals
    anomalies: AnomalyRules
    charge_failure_spike: ChargeFailureRules
    card_testing: CardTestingRules
    fraud_spike: FraudRules
    dispute_monthly: MonthlyDisputeRules
    refunds: RefundRules
    revenue_drop: RevenueDropRules
    churn_spike: ChurnRules
    webhook_lag: WebhookLagRules
    webhook_delivery: WebhookDeliveryRules
    exporter: ExporterRules

    def validate(self) -> list[str]:
        errors: list[str] = []
        _check_tree(self, "rules", errors)
        if not self.job or '"' in self.job or "\\" in self.job:
            errors.append("rules.job: must be a non-empty job name without quotes or backslashes")
        if not self.runbook_base_url.startswith(("http://", "https://")):
            errors.append("rules.runbook_base_url: must be an http(s) URL")
        if self.grafana_url and not self.grafana_url.startswith(("http://", "https://")):
            errors.append("rules.grafana_url: must be an http(s) URL, or empty for no dashboard links")
        rd = self.revenue_drop
        if rd.warning_drop_ratio >= rd.critical_drop_ratio:
            errors.append("rules.revenue_drop: warning_drop_ratio must be below critical_drop_ratio")
        if not 1 <= rd.min_baseline_weeks <= rd.baseline_weeks <= 8:
            errors.append("rules.revenue_drop: need 1 <= min_baseline_weeks <= baseline_weeks <= 8")
        if not 0 < rd.false_alerts_per_30_days <= 3:
            errors.append("rules.revenue_drop.false_alerts_per_30_days: must be above 0 and at most 3")
        try:
            hour, short, long = (parse_duration(x) for x in ("1h", rd.short_window, rd.window))
            if not (hour <= short <= long <= 7 * 86400 and short % hour == 0 and long % hour == 0):
                errors.append("rules.revenue_drop: windows must be whole hours, short_window <= window <= 7d")
        except ValueError:
            pass  # already reported by _check_tree
        # Built from the recorded hourly increases (exporter/rulegen/churn.py).
        try:
            seconds = parse_duration(self.churn_spike.window)
            if seconds % 3600 or not 3600 <= seconds <= 7 * 86400:
                errors.append("rules.churn_spike.window: must be whole hours, at most 7d")
        except ValueError:
            pass  # already reported by _check_tree
        ch = self.churn_spike
        if not 1 <= ch.min_baseline_weeks <= ch.baseline_weeks <= 8:
            errors.append("rules.churn_spike: need 1 <= min_baseline_weeks <= baseline_weeks <= 8")
        if not 0 < self.fraud_spike.false_alerts_per_30_days <= 3:
            errors.append("rules.fraud_spike.false_alerts_per_30_days: must be above 0 and at most 3")
        if not 0 < ch.false_alerts_per_30_days <= 3 or ch.min_increase_factor < 1:
            errors.append("rules.churn_spike: false_alerts_per_30_days in (0, 3], min_increase_factor >= 1")
        errors.extend(_payment_errors(self))
        wl = self.webhook_lag
        if wl.warning_seconds >= wl.critical_seconds:
            errors.append("rules.webhook_lag: warning_seconds must be below critical_seconds")
        # The rules count deliveries beyond each threshold from its bucket, so each must be a bucket bound.
        for name in ("warning_seconds", "critical_seconds"):
            if getattr(wl, name) not in DELAY_BUCKETS:
                errors.append(f"rules.webhook_lag.{name}: must be a bucket bound: {DELAY_BUCKETS}")
        if not 0 < wl.quantile < 1:
            errors.append("rules.webhook_lag.quantile: must be between 0 and 1")
        for section, name in (("dispute_monthly", "window"),):
            try:
                if parse_duration(getattr(self, section).window) < parse_duration(self.fraud_spike.window):
                    errors.append(f"rules.{section}.{name}: must not be shorter than rules.fraud_spike.window")
            except ValueError:
                pass  # already reported by _check_tree
        return errors


def _payment_errors(cfg: RulesConfig) -> list[str]:
    errors = []
    c = cfg.charge_failure_spike
    try:
        short, main, long = (parse_duration(w) for w in (c.short_window, c.window, c.long_window))
        if not short < main < long:
            errors.append("rules.charge_failure_spike: short_window < window < long_window is required")
    except ValueError:
        pass  # already reported by _check_tree
    if c.min_threshold_ratio > c.max_threshold_ratio:
        errors.append("rules.charge_failure_spike: min_threshold_ratio must not exceed max_threshold_ratio")
    if not 0 < c.processing_false_alerts_per_30_days <= 3 or c.processing_min_failing_payers < 2:
        errors.append(
            "rules.charge_failure_spike: processing_false_alerts_per_30_days in (0, 3],"
            " processing_min_failing_payers >= 2"
        )
    for section in ("charge_failure_spike", "card_testing", "fraud_spike", "refunds", "dispute_monthly"):
        for name in ("z", "critical_z"):
            value = getattr(getattr(cfg, section), name, None)
            if value is not None and not 0 < value <= 10:
                errors.append(f"rules.{section}.{name}: must be a z-score above 0 and at most 10 (3 is 99.87 %)")
    for section in ("charge_failure_spike", "fraud_spike", "refunds"):
        sec = getattr(cfg, section)
        if getattr(sec, "min_baseline_days", 1) > getattr(sec, "baseline_days", 1):
            errors.append(f"rules.{section}.min_baseline_days: must not exceed baseline_days")
    f = cfg.fraud_spike
    try:
        day = 86400
        for name in ("sustained_window", "long_sustained_window"):
            seconds = parse_duration(getattr(f, name))
            if seconds % day or not parse_duration(f.window) < seconds <= 7 * day:
                errors.append(f"rules.fraud_spike.{name}: must be whole days, longer than window and at most 7d")
        if parse_duration(f.sustained_window) >= parse_duration(f.long_sustained_window):
            errors.append("rules.fraud_spike: sustained_window must be shorter than long_sustained_window")
    except ValueError:
        pass  # already reported by _check_tree
    if not 0 < cfg.card_testing.baseline_quantile < 1:
        errors.append("rules.card_testing.baseline_quantile: must be between 0 and 1")
    return errors


# Field-name conventions checked for every section: durations parse and are positive (`for_duration` and
# `keep_firing_for` may be 0s),
# ratios lie in (0, 1], counts are not negative.
def _check_tree(obj: object, where: str, errors: list[str]) -> None:
    for field in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, field.name)
        loc = f"{where}.{field.name}"
        if dataclasses.is_dataclass(value):
            _check_tree(value, loc, errors)
        elif field.name in ("runbook_base_url", "grafana_url", "job"):
            continue
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                errors.append(f"{loc}: {exc}")
                continue
            if seconds <= 0 and field.name not in ("for_duration", "keep_firing_for"):
                errors.append(f"{loc}: must be longer than 0s")
        elif isinstance(value, float) and ("ratio" in field.name) and not 0 < value <= 1:
            errors.append(f"{loc}: must be a fraction above 0 and at most 1 (0.15 is 15 %)")
        elif isinstance(value, int) and value < 0:
            errors.append(f"{loc}: must not be negative")
