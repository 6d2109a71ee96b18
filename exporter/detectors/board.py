"""The anomaly board: the one place detectors report to.

Each anomaly becomes a bounded, expiring `billingwatch_anomaly{...} = 1` series (plus its amount), a count in
`billingwatch_anomalies_total{detector}`, one structured log line and an entry in the recent list behind
GET /api/v1/anomalies. Active series and the recent list are persisted, so a restart neither ends an alert early
nor forgets what was found.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter import logs
from exporter.modes import anomaly_mode_label
from exporter.state import StateStore

# The label set of every anomaly series (docs/CONTRACTS.md); a label that does not apply is "". `livemode` is
# "true" / "false" ("" when the detector cannot tell): live and test anomalies are separate series and alerts.
LABELS = ("detector", "severity", "reason", "customer", "subscription", "invoice", "currency", "livemode")
SEVERITIES = ("critical", "warning", "info")
# Past max_series the oldest series of the least severe kind goes first: routine info records never push out a
# page.
EVICTION_ORDER = ("info", "warning", "critical")
SERIES_NS = "anomaly_series"
RECENT_NS = "anomalies"
MAX_LABEL_LENGTH = 128


def _label(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_LABEL_LENGTH]


class AnomalyBoard:
    def __init__(
        self,
        registry: CollectorRegistry,
        state: StateStore,
        *,
        ttl_seconds: float = 3600.0,
        max_series: int = 200,
        recent_size: int = 500,
    ):
        self.state = state
        self.ttl = ttl_seconds
        self.max_series = max_series
        self.gauge = Gauge(
            "billingwatch_anomaly",
            "1 while an anomaly found by an in-process detector is active (anomaly_ttl_seconds after detection).",
            list(LABELS),
            registry=registry,
        )
        self.amount = Gauge(
            "billingwatch_anomaly_amount",
            "Amount involved in an active anomaly, in major units of its currency.",
            list(LABELS),
            registry=registry,
        )
        self.total = Counter(
            "billingwatch_anomalies", "Anomalies found by in-process detectors.", ["detector"], registry=registry
        )
        self.dropped = Counter(
            "billingwatch_anomaly_series_dropped",
            "Anomaly series removed before their time because detectors.max_series was reached (oldest first).",
            registry=registry,
        )
        # label tuple -> (expires_at, has_amount), oldest (first raised) first.
        self._series: OrderedDict[tuple[str, ...], tuple[float, bool]] = OrderedDict()
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self._seq = 0
        self._restore()

    def precreate(self, detector: str) -> None:
        """Show billingwatch_anomalies_total{detector} at 0 before the first anomaly."""
        self.total.labels(detector)

    # -- reporting -----------------------------------------------------------------------------------------

    def raise_anomaly(
        self,
        detector: str,
        reason: str,
        *,
        at: float,
        severity: str = "warning",
        customer: str | None = None,
        subscription: str | None = None,
        invoice: str | None = None,
        currency: str | None = None,
        amount: float | None = None,
        summary: str = "",
        details: dict[str, Any] | None = None,
        livemode: bool | None = None,
        series: bool = True,
    ) -> dict[str, Any]:
        """Report one anomaly found at time `at` (the event's reception time or the tick's `now`).

        Labels name what the alert is about; `details` (ids, amounts, times) only reach the API and the log line,
        so they must hold nothing secret (no emails, no card fingerprints). `livemode` is the Stripe mode of the
        events behind it. series=False records it (API, log, billingwatch_anomalies_total) without a gauge
        series: for notes no alert is meant to fire on.
        """
        if severity not in SEVERITIES:
            severity = "warning"
        labels = (
            _label(detector),
            severity,
            _label(reason),
            _label(customer),
            _label(subscription),
            _label(invoice),
            _label(currency),
            anomaly_mode_label(livemode),
        )
        self._seq += 1
        record: dict[str, Any] = {
            "id": f"{at:.0f}-{self._seq}",
            "seq": self._seq,
            "detected_at": round(at, 3),
            "expires_at": round(at + self.ttl, 3),
            **dict(zip(LABELS, labels, strict=True)),
            "amount": amount,
            "summary": summary,
            "details": details or {},
        }
        self.total.labels(labels[0]).inc()
        if series:
            self._set_series(labels, at + self.ttl, amount)
        else:
            record["expires_at"] = None
        self._remember(record)
        fields = {k: v for k, v in record.items() if v not in ("", None) and k not in ("seq", "details", "expires_at")}
        fields.update(details or {})
        # At the record's own severity: an info record (an early fraud warning) is a note, not a warning.
        logs.event(logging.INFO if severity == "info" else logging.WARNING, "anomaly detected", **fields)
        return record

    def _set_series(self, labels: tuple[str, ...], expires_at: float, amount: float | None) -> None:
        if labels in self._series:
            # The same alert again (e.g. a third duplicate charge): keep it active from now on, keep its place.
            _, had_amount = self._series[labels]
            if had_amount and amount is None:
                self.amount.remove(*labels)
        self.gauge.labels(*labels).set(1)
        if amount is not None:
            self.amount.labels(*labels).set(amount)
        self._series[labels] = (expires_at, amount is not None)
        self.state.put(
            SERIES_NS, "\x1f".join(labels), {"labels": list(labels), "expires_at": expires_at, "amount": amount}
        )
        while len(self._series) > self.max_series:
            self._remove(self._eviction_candidate())
            self.dropped.inc()

    def _eviction_candidate(self) -> tuple[str, ...]:
        for severity in EVICTION_ORDER:
            for labels in self._series:
                if labels[1] == severity:
                    return labels
        return next(iter(self._series))

    def _remove(self, labels: tuple[str, ...]) -> None:
        _, has_amount = self._series.pop(labels)
        self.gauge.remove(*labels)
        if has_amount:
            self.amount.remove(*labels)
        self.state.delete(SERIES_NS, "\x1f".join(labels))

    def _remember(self, record: dict[str, Any]) -> None:
        if len(self._recent) == self._recent.maxlen:
            evicted = self._recent[0]
            self.state.delete(RECENT_NS, f"{evicted['seq']:012d}")
        self._recent.append(record)
        self.state.put(RECENT_NS, f"{record['seq']:012d}", record)

    # -- time ------------------------------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Remove series whose time is up; returns how many."""
        done = [labels for labels, (expires_at, _) in self._series.items() if expires_at <= now]
        for labels in done:
            self._remove(labels)
        return len(done)

    # -- reading ---------------------------------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        return len(self._series)

    def recent(self, limit: int | None = None, detector: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        out = []
        for record in reversed(self._recent):
            if detector is not None and record["detector"] != detector:
                continue
            out.append({"livemode": "", **{k: v for k, v in record.items() if k != "seq"}})
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- restart ---------------------------------------------------------------------------------------------

    def _restore(self) -> None:
        records = sorted((v for _, v in self.state.items(RECENT_NS) if isinstance(v, dict)), key=lambda r: r["seq"])
        keep = records[-(self._recent.maxlen or 0) :] if self._recent.maxlen else []
        for record in records[: len(records) - len(keep)]:
            self.state.delete(RECENT_NS, f"{record['seq']:012d}")
        self._recent.extend(keep)
        if records:
            self._seq = records[-1]["seq"]
        series = [v for _, v in self.state.items(SERIES_NS) if isinstance(v, dict)]
        series.sort(key=lambda s: s["expires_at"])
        for entry in series:
            labels = tuple(entry["labels"])
            if len(labels) == len(LABELS) - 1:
                # Written before the livemode label existed: the mode is unknown. Rewritten under the new key.
                self.state.delete(SERIES_NS, "\x1f".join(labels))
                labels = (*labels, "")
                self.state.put(SERIES_NS, "\x1f".join(labels), {**entry, "labels": list(labels)})
            if len(labels) != len(LABELS):
                continue
            amount = entry.get("amount")
            self.gauge.labels(*labels).set(1)
            if amount is not None:
                self.amount.labels(*labels).set(amount)
            self._series[labels] = (float(entry["expires_at"]), amount is not None)
        # Expired ones go at the first tick (which knows the right clock, virtual or not).
