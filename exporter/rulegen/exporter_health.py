"""The exporter's own health: down or not scraped, silent while traffic is normal, signature failures (a wrong
secret apart from scanners, stale timestamps apart from both), errors and dropped anomaly series, all with
detector="exporter"; and the always-firing Watchdog (detector="watchdog")."""

from __future__ import annotations

from typing import Any

from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import parse_duration
from exporter.rulegen.promql import alert, counter_increase, percent, sel

LABELS = {"detector": "exporter"}


# Outcomes of requests that carried a well-formed Stripe-Signature header (contract 2): the deliveries Stripe
# makes. missing_signature (no or unparsable header: scanners and probes) and too_large are not among them.
WELL_FORMED = "accepted|duplicate|ignored|invalid_payload|invalid_signature|stale_signature"


def no_events_alerts(cfg: RulesConfig) -> list[dict[str, Any]]:
    """Silence that the traffic of the same hours one day and one week earlier makes improbable, over a short
    window (busy accounts) and a long one (small accounts); and webhooks silent while the poller keeps finding
    events Stripe did not deliver."""
    e = cfg.exporter
    # What makes a silence improbable is counted in charge attempts, not events: one payment brings several events
    # at once (charge, payment intent, invoice...), so ten events can be two payments, and an hour without any of
    # two expected payments is ordinary. Charge attempts arrive one customer (or one renewal) at a time.
    charges = sel(cfg, "stripe_charges_total")
    last = sel(cfg, "stripe_last_event_timestamp_seconds")

    def silent(window: str) -> str:
        usual = " and on (job)\n".join(
            f"sum by (job) (increase({charges}[{window}] offset {ago})) >= {e.silence_min_usual_events}\n"
            for ago in ("1d", "1w")
        )
        return (
            f"(\ntime() - max by (job) (max_over_time({last}[{window}])) > {parse_duration(window)}\n"
            f"and on (job)\n{usual})"
        )

    windows = list(dict.fromkeys((e.silence, e.silence_long)))
    accepted = sel(cfg, "billingwatch_webhook_requests_total", 'outcome=~"accepted|duplicate"')
    fetched = sel(cfg, "billingwatch_events_fetched_total")
    w = e.poller_silence
    return [
        alert(
            cfg,
            "BillingWatchNoEvents",
            "\nor\n".join(silent(x) for x in windows),
            for_duration="0s",
            labels={**LABELS, "severity": "warning", "evidence": "silence"},
            summary="No Stripe event has arrived for an unusually long time.",
            description=(
                "The last unique Stripe event arrived {{ $value | humanizeDuration }} ago, although the same hours "
                f"one day and one week earlier each had at least {e.silence_min_usual_events} charge attempts "
                f"(checked over {' and '.join(windows)}): with that many usually, a silence this long happens by "
                "chance less "
                "than once in 20,000 times."
            ),
        ),
        alert(
            cfg,
            "BillingWatchNoEvents",
            (
                f"sum by (job) (increase({fetched}[{w}])) >= 1\n"
                f"unless on (job)\nsum by (job) (increase({accepted}[{w}])) > 0"
            ),
            for_duration="0s",
            labels={**LABELS, "severity": "warning", "evidence": "poller"},
            summary="No webhook has delivered an event, but the poller keeps finding events Stripe did not deliver.",
            description=(
                f"No webhook request was accepted over the last {w}, while the missed-delivery poller fetched "
                '{{ $value | printf "%.0f" }} events from the Events API: Stripe is not reaching this endpoint '
                "(disabled endpoint, wrong URL, TLS or firewall) even though the account is active."
            ),
        ),
    ]


def signature_alerts(cfg: RulesConfig, outcome: str, what: str, meaning: str) -> list[dict[str, Any]]:
    """Warning on a few failures of `outcome` in the window; critical when they are most well-formed requests of
    the recent window for `for`: a burst of junk ends within minutes, a wrong secret or a wrong clock does not."""
    e = cfg.exporter
    w = e.signature_failures_window
    failed_sel = sel(cfg, "billingwatch_webhook_requests_total", f'outcome="{outcome}"')
    checked_sel = sel(cfg, "billingwatch_webhook_requests_total", f'outcome=~"{WELL_FORMED}"')
    recent_w = e.signature_failures_recent
    failed = f"sum by (job) (increase({failed_sel}[{w}]))"
    # The share is taken over the recent window: it is ~100 % within minutes of a broken rotation (the hour
    # would still hold the deliveries accepted before it), and it vanishes when a burst of junk stops.
    recent = f"sum by (job) (increase({failed_sel}[{recent_w}]))"
    checked = f"sum by (job) (increase({checked_sel}[{recent_w}]))"
    name = "BillingWatchSignatureFailures" if outcome == "invalid_signature" else "BillingWatchSignatureStale"
    return [
        alert(
            cfg,
            name,
            f"{failed} >= {e.signature_failures_min}",
            for_duration="0s",
            labels={**LABELS, "severity": "warning"},
            summary=f"Webhook requests {what}.",
            description=(
                f'{{{{ $value | printf "%.0f" }}}} well-formed webhook requests {what} over the last {w} '
                f"(threshold {e.signature_failures_min}): {meaning}"
            ),
        ),
        alert(
            cfg,
            name,
            (
                f"{recent}\n/\n({checked} > 0)\n>= {e.signature_failures_critical_ratio}\n"
                f"and on (job)\n{failed} >= {e.signature_failures_min}"
            ),
            for_duration=e.signature_failures_for,
            labels={**LABELS, "severity": "critical"},
            summary=f"Almost all webhook deliveries {what}: events are being refused.",
            description=(
                "{{ $value | humanizePercentage }} of well-formed webhook requests over the last "
                f"{recent_w} {what}, still so after {e.signature_failures_for} (critical from "
                f"{percent(e.signature_failures_critical_ratio)}): {meaning} Stripe retries refused events for "
                "three days; fix it and they arrive."
            ),
        ),
    ]


def watchdog(cfg: RulesConfig) -> dict[str, Any]:
    """Always firing: an external dead man's switch that stops receiving it knows that Prometheus, the rules or
    Alertmanager are down (docs/runbook.md#billingwatchwatchdog)."""
    return alert(
        cfg,
        "BillingWatchWatchdog",
        "vector(1)",
        for_duration="0s",
        labels={"detector": "watchdog", "severity": "info"},
        summary="Always firing: proves that Prometheus evaluates the rules and Alertmanager delivers them.",
        description=(
            "This alert fires all the time on purpose. Route it to an external dead man's switch that alerts you "
            "when it stops arriving: then Prometheus, its rule evaluation, Alertmanager or the path between them "
            "is down and no other BillingWatch alert could reach you."
        ),
    )


def group(cfg: RulesConfig) -> dict[str, Any]:
    e = cfg.exporter
    up = sel(cfg, "up")
    # Unlabelled, so it exists at 0 from the start: plain increase() sees the first drop.
    dropped = sel(cfg, "billingwatch_anomaly_series_dropped_total")
    # Labelled by stage and born at its first error, which plain increase() would miss.
    errors = sel(cfg, "billingwatch_event_processing_errors_total")
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
            *no_events_alerts(cfg),
            *signature_alerts(
                cfg,
                "invalid_signature",
                "fail signature verification",
                "a fresh, well-formed Stripe signature that matches no configured secret: a wrong secret or a "
                "secret rotation that missed this receiver (requests without a signature, scanners and probes, "
                "are not counted here).",
            ),
            *signature_alerts(
                cfg,
                "stale_signature",
                "carry a valid signature with a stale timestamp",
                "the signature matches a configured secret but its timestamp is outside the tolerance: this "
                "host's clock is wrong (check NTP) or someone replays old deliveries.",
            ),
            watchdog(cfg),
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
