"""The private listener's landing page: what state the exporter is in, at a glance, and where to look next.

Everything shown is read from the exporter's own registry (public prometheus_client API) and the anomaly board, at
request time: the page costs nothing until somebody opens it.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from exporter import __version__


def iso(ts: float | None) -> str | None:
    """ISO 8601 (UTC, seconds) for an epoch time, as the private API shows it beside the epoch value."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def _sum(registry: CollectorRegistry, sample_name: str, **match: str) -> float | None:
    total, found = 0.0, False
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in match.items()):
                total += sample.value
                found = True
    return total if found else None


class LandingPage:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        webhook_path: str,
        started_at: float,
        clock: Callable[[], float],
        recent_anomalies: Callable[[], list[dict[str, Any]]] = list,
        poller_enabled: bool = False,
        links: Iterable[tuple[str, str]] = (),
        routes: Iterable[tuple[str, str]] = (),
    ):
        self.registry = registry
        self.webhook_path = webhook_path
        self.started_at = started_at
        self.clock = clock
        self.recent_anomalies = recent_anomalies
        self.poller_enabled = poller_enabled
        self.links = [(name, url) for name, url in links if url]
        self.routes = list(routes)

    def status(self) -> dict[str, Any]:
        now = self.clock()
        midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        r = self.registry
        last = _sum(r, "stripe_last_event_timestamp_seconds")
        anomalies_today = [a for a in self.recent_anomalies() if (a.get("detected_at") or 0) >= midnight]
        poller: dict[str, Any] = {"enabled": self.poller_enabled}
        if self.poller_enabled:
            poller.update(
                polls_ok=_sum(r, "billingwatch_poller_polls_total", outcome="ok") or 0,
                polls_failed=_sum(r, "billingwatch_poller_polls_total", outcome="error") or 0,
                undelivered=_sum(r, "stripe_events_undelivered"),
                fetched=_sum(r, "billingwatch_events_fetched_total") or 0,
            )
        return {
            "now": now,
            "started_at": self.started_at,
            "last_event_at": last if last else None,
            "events_since_start": _sum(r, "billingwatch_webhook_requests_total", outcome="accepted") or 0,
            "duplicates_since_start": _sum(r, "billingwatch_webhook_requests_total", outcome="duplicate") or 0,
            "rejected_since_start": sum(
                _sum(r, "billingwatch_webhook_requests_total", outcome=o) or 0
                for o in ("invalid_signature", "invalid_payload", "too_large")
            ),
            "anomalies_today": anomalies_today,
            "poller": poller,
        }

    def render(self) -> str:
        s = self.status()
        now = s["now"]
        esc = html.escape
        if s["last_event_at"]:
            last = f"{esc(iso(s['last_event_at']) or '')} ({_age(now - s['last_event_at'])} ago)"
        else:
            last = "none yet: is Stripe (or <code>stripe listen</code>) sending to the webhook URL?"
        rows = [
            ("Last event received", last),
            ("Running since", f"{esc(iso(s['started_at']) or '')} ({_age(now - s['started_at'])})"),
            ("Events since start", f"{s['events_since_start']:.0f} accepted, {s['duplicates_since_start']:.0f} "
             f"redeliveries, {s['rejected_since_start']:.0f} rejected"),
            ("Anomalies today (UTC)", str(len(s["anomalies_today"]))),
        ]  # fmt: skip
        p = s["poller"]
        if p["enabled"]:
            undelivered = "?" if p["undelivered"] is None else f"{p['undelivered']:.0f}"
            rows.append(
                ("Missed-delivery poller", f"{p['polls_ok']:.0f} polls ok, {p['polls_failed']:.0f} failed; "
                 f"{undelivered} events Stripe has not delivered; {p['fetched']:.0f} fetched")
            )  # fmt: skip
        else:
            rows.append(("Missed-delivery poller", "off (set STRIPE_API_KEY to turn it on)"))
        table = "\n".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
        anomalies = "\n".join(
            f"<li>{esc(iso(a.get('detected_at')) or '')} <b>{esc(str(a.get('severity', '')))}</b> "
            f"{esc(str(a.get('detector', '')))}: {esc(str(a.get('summary', '')))}</li>"
            for a in s["anomalies_today"][:20]
        )
        links = "\n".join(f'<li><a href="{esc(url)}">{esc(name)}</a></li>' for name, url in self.links)
        routes = "\n".join(
            f'<li><a href="{esc(path.lstrip("/"))}">{esc(path)}</a>: {esc(desc)}</li>' for path, desc in self.routes
        )
        return _PAGE.format(
            version=esc(__version__),
            webhook=esc(self.webhook_path),
            table=table,
            anomalies=f"<h2>Today's anomalies</h2><ul>{anomalies}</ul>" if anomalies else "",
            links=f"<h2>Alerts</h2><ul>{links}</ul>" if links else "",
            routes=routes,
        )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BillingWatch</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:3rem auto;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .2rem}} th{{text-align:left;padding-right:1rem;vertical-align:top}}</style>
</head><body><h1>BillingWatch {version}</h1>
<p>Stripe billing monitor. Webhooks are received on the public listener at <code>{webhook}</code>.</p>
<table>
{table}
</table>
{anomalies}
{links}
<h2>This listener</h2>
<ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="healthz">/healthz</a>: liveness; <a href="readyz">/readyz</a>: readiness</li>
<li><a href="api/v1/events/recent">/api/v1/events/recent</a>: the last events received (no customer data)</li>
{routes}
</ul></body></html>
"""
