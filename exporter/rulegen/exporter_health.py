"""The exporter's own health: down or not scraped, silent while traffic is normal, signature failures, errors and
dropped anomaly series. These alerts carry detector="exporter"."""

from __future__ import annotations

from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import parse_duration
from exporter.rulegen.promql import alert, counter_increase, percent, sel

LABELS = {"detector": "exporter"}


def group(cfg: RulesConfig) -> dict[str, Any]:
    e = cfg.exporter
    up = sel(cfg, "up")
    requests = "billingwatch_webhook_requests_total"
    sig_window = e.signature_failures_window
    invalid_sel = sel(cfg, requests, 'outcome="invalid_signature"')
    # Requests that reached signature verification (too_large bodies are refused before it).
    checked_sel = sel(cfg, requests, 'outcome=~"accepted|duplicate|ignored|invalid_payload|invalid_signature"')
    invalid = f"sum by (job) (increase({invalid_sel}[{sig_window}]))"
    verified_or_not = f"sum by (job) (increase({checked_sel}[{sig_window}]))"
    events = sel(cfg, "stripe_events_total")
    # Unlabelled, so it exists at 0 from the start: plain increase() sees the first drop.
    dropped = sel(cfg, "billingwatch_anomaly_series_dropped_total")
    # Labelled by stage and born at its first error, which plain increase() would miss.
    errors = sel(cfg, "billingwatch_event_processing_errors_total")
    silence = e.silence
    usual = " and on (job)\n".join(
        f"sum by (job) (increase({events}[{silence}] offset {ago})) >= {e.silence_min_usual_events}\n"
        for ago in ("1d", "1w")
    )
    return {
        "name": "billingwatch-exporter",
        "interval": cfg.intervals.exporter,
        "rules": [
            alert(
                cfg,
                "BillingWatchExporterDown",
                f"{up} == 0\nor\nabsent({up})",
                for_duration=e.down_for,
                labels={**LABELS, "severity": "critical"},
                summary="Prometheus cannot scrape the BillingWatch exporter: no billing alert can fire.",
                description=(
                    "{{ if $labels.instance }}{{ $labels.instance }} of job {{ $labels.job }} is down"
                    "{{ else }}No target of job {{ $labels.job }} is being scraped{{ end }}"
                    f" for more than {e.down_for}."
                ),
            ),
            alert(
                cfg,
                "BillingWatchNoEvents",
                (
                    f"time() - max by (job) (max_over_time({sel(cfg, 'stripe_last_event_timestamp_seconds')}"
                    f"[{silence}])) > {parse_duration(silence)}\nand on (job)\n{usual}"
                ),
                for_duration="0s",
                labels={**LABELS, "severity": "warning"},
                summary="No Stripe event has arrived for an unusually long time.",
                description=(
                    "The last unique Stripe event arrived {{ $value | humanizeDuration }} ago, although the same "
                    f"{silence} one day and one week earlier each had at least {e.silence_min_usual_events} events."
                ),
            ),
            alert(
                cfg,
                "BillingWatchSignatureFailures",
                f"{invalid} >= {e.signature_failures_min}",
                for_duration="0s",
                labels={**LABELS, "severity": "warning"},
                summary="Webhook requests are failing signature verification.",
                description=(
                    f'{{{{ $value | printf "%.0f" }}}} requests failed signature verification over the last '
                    f"{sig_window} (threshold {e.signature_failures_min}): a wrong or rotated secret, or someone "
                    "probing the endpoint."
                ),
            ),
            alert(
                cfg,
                "BillingWatchSignatureFailures",
                (
                    f"{invalid}\n/\n({verified_or_not} > 0)\n>= {e.signature_failures_critical_ratio}\n"
                    f"and on (job)\n{invalid} >= {e.signature_failures_min}"
                ),
                for_duration="0s",
                labels={**LABELS, "severity": "critical"},
                summary="Almost every webhook request fails signature verification: events are being lost.",
                description=(
                    "{{ $value | humanizePercentage }} of webhook requests failed signature verification over the "
                    f"last {sig_window} (critical from {percent(e.signature_failures_critical_ratio)}): the "
                    "configured signing secret is almost certainly wrong."
                ),
            ),
            alert(
                cfg,
                "BillingWatchAnomalySeriesDropped",
                f"sum by (job) (increase({dropped}[{e.errors_window}])) > 0",
                for_duration="0s",
                labels={**LABELS, "severity": "warning"},
                summary="Active anomalies were dropped because the anomaly series cap was reached.",
                description=(
                    f'{{{{ $value | printf "%.0f" }}}} anomaly series were dropped over the last {e.errors_window}: '
                    "some anomalies may never have alerted. /api/v1/anomalies on the exporter still lists them."
                ),
            ),
            alert(
                cfg,
                "BillingWatchEventProcessingErrors",
                f"{counter_increase(errors, e.errors_window, 'job')} > 0",
                for_duration="0s",
                labels={**LABELS, "severity": "warning"},
                summary="The exporter failed to process some Stripe events.",
                description=(
                    f'{{{{ $value | printf "%.0f" }}}} events raised an error while being processed over the last '
                    f"{e.errors_window}; they were acknowledged but may be missing from metrics. See the exporter's "
                    "error log lines."
                ),
            ),
            # While the state cannot be saved, webhooks are answered 503 (Stripe retries them for 3 days, so
            # nothing is lost yet) and the metrics stop moving. `for`: a write lock held for a second by a backup
            # heals by itself and is no reason to page.
            alert(
                cfg,
                "BillingWatchStateNotWritable",
                f"{sel(cfg, 'billingwatch_state_writable')} == 0",
                for_duration=e.down_for,
                labels={**LABELS, "severity": "critical"},
                summary="The exporter cannot save its state: webhooks are answered 503.",
                description=(
                    "{{ $labels.instance }} of job {{ $labels.job }} has failed to write its state for more than "
                    f"{e.down_for} (disk full, read-only filesystem, or a lock held by another process; the exporter's "
                    "log names the SQLite error). Stripe retries the rejected events, but billing metrics and alerts "
                    "are stale until it recovers."
                ),
            ),
        ],
    }
