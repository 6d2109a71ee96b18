"""PromQL building blocks shared by the dashboards: selectors bound to the dashboard variables and the names of the
series the shipped recording rules define (derived from the same `rules:` defaults the rules are rendered from)."""

from __future__ import annotations

from dataclasses import dataclass

from dashboards.sources import rules_config
from exporter.rulegen.config import RulesConfig
from exporter.rulegen.webhooks import quantile_name

# Every series the exporter exposes carries the scrape's job and instance; the variables narrow to one exporter.
# Business series also carry livemode: `($livemode)?` picks the chosen Stripe mode and still matches the series
# that have no livemode label (the exporter's own health metrics).
MODE = 'livemode=~"($livemode)?"'
SCOPE = f'job=~"$job", instance=~"$instance", {MODE}'
SCOPE_CURRENCY = SCOPE + ', currency=~"$currency"'

# Every alert the shipped rules define is named BillingWatch... (rules/*.yml); ALERTS also holds other teams' alerts.
ALERTS_MATCHER = 'alertname=~"BillingWatch.+"'


def sel(metric: str, *extra: str, currency: bool = False) -> str:
    """`metric{job=~"$job", instance=~"$instance"[, currency=~"$currency"], extra...}`."""
    matchers = [SCOPE_CURRENCY if currency else SCOPE, *extra]
    return f"{metric}{{{', '.join(matchers)}}}"


def increase(selector: str, window: str, by: str = "") -> str:
    """Summed increase of a counter over `window`, counting series born inside the window.

    The exporter creates a labelled series (a failure code, a dispute reason, an event type, a processing stage) at
    its first increment, so the series' first sample is already 1 and increase() alone never sees that event: for
    rare events such as a dispute of a new reason, the only one. Series without a sample `window` earlier count with
    their whole value (the same approach as the recording rules, exporter/rulegen/promql.py).
    """
    aggregate = f"sum by ({by})" if by else "sum"
    return (
        f"{aggregate} ((increase({selector}[{window}]) and {selector} offset {window}) "
        f"or ({selector} unless {selector} offset {window}))"
    )


def per_currency(record: str) -> str:
    """A `currency:` recorded series (summed over the exporter's job, so only the currency can be chosen)."""
    return f'{record}{{currency=~"$currency", {MODE}}}'


def per_job(record: str) -> str:
    return f'{record}{{job=~"$job", {MODE}}}'


@dataclass(frozen=True)
class Recorded:
    """Names of the recording rules the panels read, as exporter/rulegen names them from the windows."""

    charge_failure_ratio: str
    dispute_ratio_day: str
    dispute_ratio_month: str
    early_fraud_warning_ratio_day: str
    revenue: str
    revenue_baseline: str
    refunded: str
    refund_ratio: str
    delivery_delay_quantile: str

    @classmethod
    def from_config(cls, cfg: RulesConfig) -> Recorded:
        failures = cfg.charge_failure_spike.window
        day = cfg.fraud_spike.window
        revenue = cfg.revenue_drop.window
        refunds = cfg.refunds.window
        lag = cfg.webhook_lag
        return cls(
            charge_failure_ratio=f"currency:stripe_charges_failed:ratio_rate{failures}",
            dispute_ratio_day=f"job:stripe_disputes:ratio_rate{day}",
            dispute_ratio_month=f"job:stripe_disputes:ratio_rate{cfg.dispute_monthly.window}",
            early_fraud_warning_ratio_day=f"job:stripe_early_fraud_warnings:ratio_rate{day}",
            revenue=f"currency_livemode:stripe_charge_amount:increase{revenue}",
            revenue_baseline=f"currency_livemode:stripe_charge_amount:seasonal_expected{revenue}",
            refunded=f"currency:stripe_refund_amount:increase{refunds}",
            refund_ratio=f"currency:stripe_refund_amount:ratio_rate{refunds}",
            delivery_delay_quantile=(
                f"job:stripe_event_delivery_delay_seconds:{quantile_name(lag.quantile)}_rate{lag.window}"
            ),
        )


def recorded() -> Recorded:
    return Recorded.from_config(rules_config())
