"""BillingWatch overview: the dashboard a founder opens in the morning.

Top to bottom: what needs attention now (firing alerts, active anomalies), money coming in (revenue against its
baseline, MRR, subscriptions, refunds), payment health (failure ratio, failure codes) and risk (disputes and early
fraud warnings against the card networks' thresholds).
"""

from __future__ import annotations

from typing import Any

from dashboards import alert_links
from dashboards import model as m
from dashboards.queries import ALERTS_MATCHER, increase, per_currency, per_job, recorded, sel
from dashboards.sources import rules_config
from dashboards.variables import variables
from exporter import panels

UID = panels.OVERVIEW
TITLE = "BillingWatch overview"

# How far back the "since" column of the anomaly table looks for an anomaly's first sample (anomalies stay active
# for an hour by default) and at what resolution.
ANOMALY_SINCE_LOOKBACK = "1d:30s"


def _hide(*names: str) -> dict[str, bool]:
    return dict.fromkeys(names, True)


def _override(name: str, *props: tuple[str, Any]) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": k, "value": v} for k, v in props]}


# ALERTS_FOR_STATE holds each active alert's activeAt time; `and` keeps only the ones that are firing.
FIRING_SINCE = (
    f"1000 * (ALERTS_FOR_STATE{{{ALERTS_MATCHER}}} "
    f'and ignoring(alertstate) ALERTS{{alertstate="firing", {ALERTS_MATCHER}}})'
)


def firing_alerts_table() -> m.Panel:
    """The query gets each alert's panel_url once every panel has its id (see build())."""
    panel_link = {
        "title": "Open the panel that explains this alert",
        "url": f"${{__data.fields.{alert_links.LABEL}}}&${{__url_time_range}}&${{__all_variables}}",
    }
    return m.table(
        "Firing alerts",
        "BillingWatch alerts firing now, newest first. `Since` is when the alert became active. Click an alert's "
        "name to open the panel that explains it; its runbook is in the alert's annotations (Alertmanager and "
        "the notifications show it).",
        [m.target(FIRING_SINCE, instant=True, table=True)],
        transformations=[
            {
                "id": "organize",
                "options": {
                    "excludeByName": _hide("Time", "__name__", "alertstate"),
                    "indexByName": {"alertname": 0, "severity": 1},
                    "renameByName": {"Value": "Since", "alertname": "Alert"},
                },
            }
        ],
        overrides=[
            _override("Since", ("unit", "dateTimeFromNow")),
            _override("Alert", ("links", [panel_link])),
            # Hidden rather than removed: the link above reads it from the same row.
            _override(alert_links.LABEL, ("custom.hidden", True)),
        ],
        sort_by="Since",
        no_value="No BillingWatch alert is firing",
    )


def anomalies_table() -> m.Panel:
    anomaly = sel("billingwatch_anomaly")
    amount = sel("billingwatch_anomaly_amount")
    # `max without ()` drops the metric name so that the three results merge into one row per anomaly.
    return m.table(
        "Active anomalies",
        "Anomalies the in-process detectors (duplicate charge, negative invoice, silent lapse, ...) hold active. "
        "`Since` is the first scrape that saw the anomaly (to 30 s); `Amount` is in major units of `currency`.",
        [
            m.target(f"max without () ({anomaly})", instant=True, table=True),
            m.target(f"max without () ({amount})", instant=True, table=True),
            # The subquery's steps are aligned to its resolution: an anomaly younger than one step is not in it
            # yet and takes its current sample's time instead.
            m.target(
                f"1000 * (min_over_time(timestamp({anomaly})[{ANOMALY_SINCE_LOOKBACK}]) or timestamp({anomaly}))",
                instant=True,
                table=True,
            ),
        ],
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": _hide("Time", "Value #A", "job", "instance"),
                    "indexByName": {
                        "detector": 0,
                        "severity": 1,
                        "reason": 2,
                        "customer": 3,
                        "subscription": 4,
                        "invoice": 5,
                        "currency": 6,
                        "Value #B": 7,
                        "Value #C": 8,
                    },
                    "renameByName": {"Value #B": "Amount", "Value #C": "Since"},
                },
            },
        ],
        overrides=[_override("Since", ("unit", "dateTimeFromNow")), _override("Amount", ("decimals", 2))],
        sort_by="Since",
        no_value="No active anomaly",
    )


def build() -> dict[str, Any]:
    cfg = rules_config()
    rec = recorded()
    g = m.Grid()
    g.row("Needs attention")
    g.add(
        m.stat(
            "Alerts firing",
            "BillingWatch alerts firing now (details in the table below).",
            [m.target(f'count(ALERTS{{alertstate="firing", {ALERTS_MATCHER}}}) or vector(0)', instant=True)],
            unit="none",
            thresholds=m.steps((None, "green"), (1, "red")),
            color_mode="background",
        ),
        4,
        4,
    )
    g.add(
        m.stat(
            "Anomalies active",
            "Anomalies the in-process detectors hold active (details in the table below).",
            [m.target(f"count({sel('billingwatch_anomaly')}) or vector(0)", instant=True)],
            unit="none",
            thresholds=m.steps((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        4,
        4,
    )
    g.add(
        m.stat(
            "Lapsed subscriptions",
            "Subscriptions that are active on our side but had no successful payment when one was due.",
            [m.target(f"sum({sel('stripe_subscriptions_lapsed')})", instant=True)],
            unit="none",
            thresholds=m.steps((None, "green"), (1, "orange")),
            color_mode="background",
        ),
        4,
        4,
    )
    g.add(
        m.stat(
            f"Collected (last {cfg.revenue_drop.window})",
            "Captured amount of successful charges over the rolling window of the revenue-drop alert, per currency.",
            [m.target(per_currency(rec.revenue), "{{currency}}", instant=True)],
            unit="none",
            decimals=2,
            overrides=m.currency_overrides(),
        ),
        6,
        4,
    )
    g.add(
        m.stat(
            "MRR",
            "Monthly recurring revenue of active subscriptions, per currency (major units per month).",
            [m.target(f"sum by (currency) ({sel('stripe_mrr', currency=True)})", "{{currency}}", instant=True)],
            unit="none",
            decimals=2,
            overrides=m.currency_overrides(),
        ),
        6,
        4,
    )
    g.add(firing_alerts_table(), 12, 8)
    g.add(anomalies_table(), 12, 8)

    g.row("Revenue")
    drop = cfg.revenue_drop
    g.add(
        m.timeseries(
            f"Collected revenue (rolling {drop.window}) vs baseline",
            f"Captured amount of successful charges over the last {drop.window}, per currency, against the median of "
            f"the same {drop.window} of the previous {drop.baseline_weeks} weeks scaled by the account's trend "
            f"(dashed) and the level at which BillingWatchRevenueDrop warns ({_pct(drop.warning_drop_ratio)} below "
            f"the baseline, dotted; it also needs significantly fewer charges). The baseline needs "
            f"{drop.min_baseline_weeks} weeks of history.",
            [
                m.target(per_currency(rec.revenue), "{{currency}}"),
                m.target(per_currency(rec.revenue_baseline), "{{currency}} baseline"),
                m.target(
                    f"{per_currency(rec.revenue_baseline)} * {1 - drop.warning_drop_ratio:g}",
                    "{{currency}} alert level",
                ),
            ],
            unit="none",
            decimals=2,
            overrides=[
                *m.currency_overrides(),
                _line_style("/ baseline$/", [10, 10]),
                _line_style("/ alert level$/", [2, 6]),
            ],
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Revenue vs baseline",
            f"Collected revenue of the last {drop.window} as a share of its baseline, per currency. "
            f"BillingWatchRevenueDrop warns below {_pct(1 - drop.warning_drop_ratio)} and is critical below "
            f"{_pct(1 - drop.critical_drop_ratio)} (when the baseline has at least {drop.min_expected_charges} "
            "charges and the count of charges is significantly low too).",
            [m.target(f"{per_currency(rec.revenue)} / ({per_currency(rec.revenue_baseline)} > 0)", "{{currency}}")],
            unit="percentunit",
            thresholds=m.steps(
                (None, "red"), (1 - drop.critical_drop_ratio, "orange"), (1 - drop.warning_drop_ratio, "green")
            ),
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "MRR by currency",
            "Monthly recurring revenue of active subscriptions (major units per month).",
            [m.target(f"sum by (currency) ({sel('stripe_mrr', currency=True)})", "{{currency}}")],
            unit="none",
            decimals=2,
            overrides=m.currency_overrides(),
        ),
        8,
        8,
    )
    g.add(
        m.timeseries(
            "Subscriptions by status",
            "Subscriptions BillingWatch knows of, by Stripe status (active, trialing, past_due, unpaid, "
            "canceled, ...).",
            [m.target(f"sum by (status) ({sel('stripe_subscriptions')})", "{{status}}")],
            unit="none",
            stack=True,
            decimals=0,
        ),
        8,
        8,
    )
    g.add(
        m.timeseries(
            "Lapsed subscriptions over time",
            "Subscriptions still active but without a successful payment when one was due (the silent_lapse detector).",
            [m.target(f"sum({sel('stripe_subscriptions_lapsed')})", "lapsed")],
            unit="none",
            decimals=0,
            thresholds=m.steps((None, "green"), (1, "orange")),
        ),
        8,
        8,
    )
    refunds = cfg.refunds
    g.add(
        m.timeseries(
            f"Refunded (rolling {refunds.window})",
            f"Refunded amount over the last {refunds.window}, per currency (counted once per refund).",
            [m.target(per_currency(rec.refunded), "{{currency}}")],
            unit="none",
            decimals=2,
            overrides=m.currency_overrides(),
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Refund ratio",
            f"Refunded amount / collected amount over the last {refunds.window}, per currency. "
            f"BillingWatchRefundRatioHigh fires above {_pct(refunds.max_refund_ratio)} when the number of refunds is "
            "also significantly above the currency's usual refunds per charge.",
            [m.target(per_currency(rec.refund_ratio), "{{currency}}")],
            unit="percentunit",
            thresholds=m.threshold_steps(critical=refunds.max_refund_ratio),
        ),
        12,
        8,
    )

    g.row("Payments")
    spike = cfg.charge_failure_spike
    g.add(
        m.timeseries(
            "Charge failure ratio",
            f"Failed charge attempts / all charge attempts over the last {spike.window}, per currency. "
            f"BillingWatchChargeFailureSpike fires when the ratio is significantly above {spike.baseline_factor:g} x "
            f"the usual ratio, and never below {_pct(spike.min_threshold_ratio)} (the line).",
            [m.target(per_currency(rec.charge_failure_ratio), "{{currency}}")],
            unit="percentunit",
            thresholds=m.threshold_steps(critical=spike.min_threshold_ratio),
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Failed charges by code",
            "Failed charge attempts by Stripe failure code (card_declined, insufficient_funds, expired_card, ...).",
            [
                m.target(
                    increase(sel("stripe_charges_failed_total", currency=True), "$__rate_interval", "failure_code"),
                    "{{failure_code}}",
                )
            ],
            unit="none",
            stack=True,
            bars=True,
            decimals=0,
        ),
        12,
        8,
    )

    g.row("Disputes and fraud")
    fraud, monthly = cfg.fraud_spike, cfg.dispute_monthly
    g.add(
        m.timeseries(
            "Dispute ratio vs network thresholds",
            f"Disputes / successful charges over the last {fraud.window} and {monthly.window}. Visa's and Mastercard's "
            f"monitoring programmes start at 1 % a month: BillingWatchMonthlyDisputeRatioHigh warns from "
            f"{_pct(monthly.warning_ratio)} over {monthly.window} and is critical from Mastercard's "
            f"{_pct(monthly.mastercard_ratio)}; BillingWatchDisputeSpike compares a day with the account's own rate.",
            [
                m.target(per_job(rec.dispute_ratio_day), f"last {fraud.window}"),
                m.target(per_job(rec.dispute_ratio_month), f"last {monthly.window}"),
            ],
            unit="percentunit",
            thresholds=m.threshold_steps(warning=monthly.warning_ratio, critical=monthly.mastercard_ratio),
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Early fraud warning ratio",
            f"Radar early fraud warnings / successful charges over the last {fraud.window}. Warnings precede disputes "
            "by weeks; BillingWatchEarlyFraudWarningSpike fires when a day's count is far above the account's own.",
            [m.target(per_job(rec.early_fraud_warning_ratio_day), f"last {fraud.window}")],
            unit="percentunit",
            thresholds=m.threshold_steps(),
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Disputes by reason",
            "Disputes opened, by reason (fraudulent, product_not_received, duplicate, ...).",
            [m.target(increase(sel("stripe_disputes_total"), "$__rate_interval", "reason"), "{{reason}}")],
            unit="none",
            stack=True,
            bars=True,
            decimals=0,
        ),
        12,
        8,
    )
    g.add(
        m.timeseries(
            "Early fraud warnings by type",
            "Radar early fraud warnings (card issuers reporting fraud), by fraud type.",
            [
                m.target(
                    increase(sel("stripe_early_fraud_warnings_total"), "$__rate_interval", "fraud_type"),
                    "{{fraud_type}}",
                )
            ],
            unit="none",
            stack=True,
            bars=True,
            decimals=0,
        ),
        12,
        8,
    )

    from dashboards import operations

    urls = alert_links.checked_panel_urls(
        {"overview": (UID, g.panels), "operations": (operations.UID, operations.build()["panels"])}
    )
    firing = alert_links.find_panel(g.panels, "Firing alerts")
    firing["targets"][0]["expr"] = alert_links.with_panel_urls(FIRING_SINCE, urls)

    return m.dashboard(
        uid=UID,
        title=TITLE,
        description="Stripe billing at a glance: alerts and anomalies, revenue, payments, disputes and fraud.",
        panels=g.panels,
        variables=variables(),
        links=[m.dashboard_link("BillingWatch operations", operations.UID)],
        time_from="now-24h",
        refresh="1m",
    )


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.4f}".rstrip("0").rstrip(".") + " %"


def _line_style(name_regex: str, dash: list[int]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byRegexp", "options": name_regex},
        "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": dash}}],
    }
