"""Runs the exporter's own ingest and detector code over a history on a virtual clock, and writes what a
Prometheus scraping it every `interval` seconds would have stored, as OpenMetrics text with timestamps.

Every series present at a scrape gets a sample at that scrape (like a real scrape), of the metric names the rules
select (the others cannot change a result; see OpenMetricsWriter); a series that disappears
(an anomaly gauge that expired) simply has no more samples. Prometheus would write a staleness marker there; the
backtest's Prometheus gets the same effect from a lookback delta just under the scrape interval (see prom.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from prometheus_client import CollectorRegistry
from prometheus_client.registry import RestrictedRegistry

from exporter.config import Config
from exporter.ingest import event_shape_error
from exporter.wiring import PRUNE_INTERVAL_SECONDS, wire

# The state store is in memory and never restarted in a backtest, so flushing it is bookkeeping only (lookups see
# pending writes); flushing every few virtual minutes instead of every second keeps its cost out of the way.
FLUSH_INTERVAL_SECONDS = 600.0
# The subscription ledger's full sweep (lapses, gauge recount) walks every subscription: at the service's once a
# minute, a month of a busy account spends most of a backtest there. Lapses are judged in days (default grace:
# 3 days), so backtests sweep every 3 virtual hours: silent_lapse alerts start up to 3 hours later than live.
MIN_SWEEP_SECONDS = 3 * 3600.0


@dataclass
class SampleStats:
    events: int = 0
    duplicates: int = 0
    invalid: int = 0
    scrapes: int = 0
    samples: int = 0
    start: float = 0.0
    end: float = 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class VirtualExporter:
    """The exporter's own wiring (exporter/wiring.py) without persistence or poller, housekept on virtual time."""

    def __init__(self, config: Config):
        self.wiring = wire(config, env=None, persist=False)
        self.metrics = self.wiring.metrics
        self.state = self.wiring.state
        self.ingestor = self.wiring.ingestor
        self._next_prune = 0.0
        self._next_flush = 0.0

    def housekeep(self, now: float) -> None:
        """What the service's housekeeping loop does, at virtual time `now`."""
        self.ingestor.tick(now)
        if now >= self._next_flush:
            self._next_flush = now + FLUSH_INTERVAL_SECONDS
            self.state.flush(now)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL_SECONDS
            self.wiring.prune_namespaces(now)
            self.state.prune(now)
            self.metrics.state_seen_ids.set(self.state.seen_count())


class OpenMetricsWriter:
    """Writes one scrape of a registry as OpenMetrics lines with a timestamp, read through the public
    `registry.collect()`; each series' name-and-labels text is rendered once and remembered.

    With `names`, only the samples of those names are read and written (the registry's public
    `restricted_registry`): the series that no rule selects cannot change any rule's result, and reading and
    writing them was half the cost of a month's backtest (measured in docs/backtest.md).
    """

    def __init__(
        self,
        out: IO[str],
        registry: CollectorRegistry,
        target_labels: dict[str, str],
        names: set[str] | None = None,
    ):
        self.out = out
        self.registry: CollectorRegistry | RestrictedRegistry = (
            registry if names is None else registry.restricted_registry(names)
        )
        self.target = "".join(f',{k}="{_escape(v)}"' for k, v in sorted(target_labels.items()))
        self._keys: dict[Any, str] = {}
        self.samples = 0
        self.extra: list[tuple[str, dict[str, str], float]] = []

    def key(self, name: str, labels: dict[str, str]) -> str:
        cache_key = (name, tuple(labels.items()))
        key = self._keys.get(cache_key)
        if key is None:
            # The scrape's target labels win over exposed ones, as with honor_labels: false.
            own = "".join(f',{k}="{_escape(v)}"' for k, v in labels.items() if f',{k}="' not in self.target)
            key = self._keys[cache_key] = f"{name}{{{(own + self.target)[1:]}}}"
        return key

    def rows(self) -> list[tuple[str, float]]:
        """(series key, value) of every series in the registry now."""
        key = self.key
        out = [(key(s.name, s.labels), float(s.value)) for family in self.registry.collect() for s in family.samples]
        out.extend((key(name, labels), value) for name, labels, value in self.extra)
        return out

    def write(self, ts: float) -> None:
        stamp = f" {int(ts)}\n" if ts == int(ts) else f" {ts:.3f}\n"
        # NaN is skipped: it would be read as a real sample, not as "no value".
        lines = [key + " " + repr(value) + stamp for key, value in self.rows() if value == value]
        self.samples += len(lines)
        self.out.write("".join(lines))

    def close(self) -> None:
        self.out.write("# EOF\n")


def backtest_config(config: Config) -> Config:
    """`config` with the ledger sweep no more frequent than MIN_SWEEP_SECONDS (see above)."""
    subs = config.detectors.subscriptions
    if subs.sweep_interval_seconds >= MIN_SWEEP_SECONDS:
        return config
    subs = dataclasses.replace(subs, sweep_interval_seconds=MIN_SWEEP_SECONDS)
    return dataclasses.replace(config, detectors=dataclasses.replace(config.detectors, subscriptions=subs))


def run_virtual(
    events: Iterable[tuple[float, dict[str, Any]]],
    *,
    config: Config,
    interval: float,
    start: float,
    end: float,
    out: IO[str],
    target_labels: dict[str, str],
    names: set[str] | None = None,
    progress: Callable[[float, SampleStats], None] | None = None,
) -> SampleStats:
    """Ingest `events` (sorted by virtual time) and scrape every `interval` s from `start` to `end` inclusive;
    with `names`, write only the samples of those metric names (the scrape's `up` always)."""
    exporter = VirtualExporter(backtest_config(config))
    writer = OpenMetricsWriter(out, exporter.metrics.registry, target_labels, names)
    # What the scrape itself adds: the target is up.
    writer.extra.append(("up", {}, 1.0))
    stats = SampleStats(start=start, end=end)
    scrape_at = start
    last_report = time.monotonic()
    outcome_counts = {"duplicate": 0}

    def scrape(ts: float) -> None:
        exporter.housekeep(ts)
        writer.write(ts)
        stats.scrapes += 1

    for vtime, event in events:
        while scrape_at < vtime and scrape_at <= end:
            scrape(scrape_at)
            scrape_at += interval
        if event_shape_error(event) is not None:
            stats.invalid += 1
            exporter.metrics.webhook_requests.labels("invalid_payload").inc()
            continue
        outcome = exporter.ingestor.ingest(event, vtime)
        stats.events += 1
        if outcome in outcome_counts:
            stats.duplicates += 1
        if progress is not None and stats.events % 2000 == 0:
            now = time.monotonic()
            if now - last_report >= 1.0:
                last_report = now
                progress(vtime, stats)
    while scrape_at <= end:
        scrape(scrape_at)
        scrape_at += interval
    writer.close()
    stats.samples = writer.samples
    exporter.state.close()
    return stats
