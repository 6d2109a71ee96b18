"""Typed view of the `rules:` section of the config (defaults and the reason for each live in exporter/defaults.yml).

`for_duration` is an alert's Prometheus `for:` (a Python keyword cannot be a field name). Durations are
Prometheus duration strings ("30s", "5m", "1h", "7d"); ratios are fractions (0.15 is 15 %).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from exporter.metrics import DELAY_BUCKETS
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
    window: str
    max_failure_ratio: float
    min_attempts: int
    for_duration: str


@dataclass(frozen=True)
class FraudRules:
    window: str
    max_dispute_ratio: float
    min_charges: int
    critical_disputes: int
    max_early_fraud_warning_ratio: float
    low_volume_early_fraud_warnings: int
    for_duration: str


@dataclass(frozen=True)
class MonthlyDisputeRules:
    window: str
    warning_ratio: float
    min_charges: int
    for_duration: str


@dataclass(frozen=True)
class RefundRules:
    window: str
    max_refund_ratio: float
    min_charges: int
    for_duration: str


@dataclass(frozen=True)
class RevenueDropRules:
    window: str
    short_window: str
    baseline_weeks: int
    min_baseline_weeks: int
    warning_drop_ratio: float
    critical_drop_ratio: float
    min_expected_charges: int
    false_alarm_probability: float
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
    false_alarm_probability: float
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
        if not 0 < rd.false_alarm_probability < 0.5:
            errors.append("rules.revenue_drop.false_alarm_probability: must be between 0 and 0.5")
        try:
            hour, short, long = (parse_duration(x) for x in ("1h", rd.short_window, rd.window))
            if not (hour <= short <= long <= 7 * 86400 and short % hour == 0 and long % hour == 0):
                errors.append("rules.revenue_drop: windows must be whole hours, short_window <= window <= 7d")
        except ValueError:
            pass  # already reported by _check_tree
        ch = self.churn_spike
        if not 1 <= ch.min_baseline_weeks <= ch.baseline_weeks <= 8:
            errors.append("rules.churn_spike: need 1 <= min_baseline_weeks <= baseline_weeks <= 8")
        if not 0 < ch.false_alarm_probability < 0.5 or ch.min_increase_factor < 1:
            errors.append("rules.churn_spike: false_alarm_probability in (0, 0.5), min_increase_factor >= 1")
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
