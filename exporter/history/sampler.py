"""Runs the exporter's own ingest and detector code over a history on a virtual clock, and writes what a
Prometheus scraping it every `interval` seconds would have stored, as OpenMetrics text with timestamps.

Every series present at a scrape gets a sample at that scrape (like a real scrape); a series that disappears
(an anomaly gauge that expired) simply has no more samples. Prometheus would write a staleness marker there; the
backtest's Prometheus gets the same effect from a lookback delta just under the scrape interval (see prom.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

from exporter.config import Config
from exporter.fast_metrics import FastCounter, FastGauge, FastHistogram, _Family
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
    """Writes one scrape of a registry as OpenMetrics lines with a timestamp.

    Reading the registry through `collect()` costs ~100 µs a scrape (it builds a Sample object per series), which
    over 40,000 virtual scrapes dominated a backtest. For the plain Counter, Gauge and Histogram types this
    reads the children's values directly, with each series' name-and-labels prefix rendered once; anything else
    (custom collectors, callback gauges) goes through `collect()` as usual. tests/test_history_sampler.py checks
    that both paths give the same exposition.
    """

    def __init__(self, out: IO[str], registry: Any, target_labels: dict[str, str]):
        self.out = out
        self.registry = registry
        self.target = "".join(f',{k}="{_escape(v)}"' for k, v in sorted(target_labels.items()))
        self._keys: dict[Any, str] = {}
        self._plans: dict[Any, tuple[tuple[Any, ...], Any]] = {}
        self.samples = 0
        self.extra: list[tuple[str, dict[str, str], float]] = []

    def key(self, name: str, labels: dict[str, str]) -> str:
        cache_key = (name, tuple(labels.items()))
        key = self._keys.get(cache_key)
        if key is None:
            key = self._render(name, labels.items())
            self._keys[cache_key] = key
        return key

    def _render(self, name: str, labels: Iterable[tuple[str, str]]) -> str:
        # The scrape's target labels win over exposed ones, as with honor_labels: false.
        own = "".join(f',{k}="{_escape(v)}"' for k, v in labels if f',{k}="' not in self.target)
        return f"{name}{{{(own + self.target)[1:]}}}"

    def rows(self) -> list[tuple[str, float]]:
        """(series key, value) of every series in the registry now."""
        out: list[tuple[str, float]] = []
        for collector in list(self.registry._collector_to_names):
            plan = self._plan(collector)
            if plan is None:
                out.extend(self._generic(collector))
                continue
            if isinstance(plan, _FastPlan):
                out.extend(plan.rows())
                continue
            plain, histograms = plan
            # Single-threaded here, so the values are read without taking each child's lock.
            out.extend([(key, value._value) for key, value in plain])
            for keys, child in histograms:
                acc = 0.0
                for key, bucket in zip(keys, child._buckets, strict=False):
                    acc += bucket._value
                    out.append((key, acc))
                out.append((keys[-2], acc))
                if child._upper_bounds[0] >= 0:
                    out.append((keys[-1], child._sum._value))
        for name, labels, value in self.extra:
            out.append((self.key(name, labels), value))
        return out

    def _plan(self, collector: Any) -> Any:
        """Rendered keys and value holders of a plain metric's children, rebuilt when its children change."""
        kind = type(collector)
        if isinstance(collector, _Family):
            return self._fast_plan(collector)
        if kind not in (Counter, Gauge, Histogram) or "_child_samples" in vars(collector):
            return None
        parent = collector._is_parent()
        signature = tuple(collector._metrics) if parent else ()
        cached = self._plans.get(collector)
        if cached is not None and cached[0] == signature:
            return cached[1]
        children = list(collector._metrics.items()) if parent else [((), collector)]
        plain: list[tuple[str, Any]] = []
        histograms: list[tuple[list[str], Any]] = []
        for labelvalues, child in children:
            if "_child_samples" in vars(child):  # a callback gauge
                self._plans[collector] = (signature, None)
                return None
            base = list(zip(collector._labelnames, labelvalues, strict=True))
            name = collector._name
            if kind is Counter:
                plain.append((self._render(name + "_total", base), child._value))
            elif kind is Gauge:
                plain.append((self._render(name, base), child._value))
            else:
                keys = [
                    self._render(name + "_bucket", [*base, ("le", floatToGoString(b))]) for b in child._upper_bounds
                ]
                keys.append(self._render(name + "_count", base))
                keys.append(self._render(name + "_sum", base))
                histograms.append((keys, child))
        plan = (plain, histograms)
        self._plans[collector] = (signature, plan)
        return plan

    def _fast_plan(self, family: _Family) -> _FastPlan:
        """The same for exporter.fast_metrics families (their cells hold plain floats)."""
        signature = tuple(family._children)
        cached = self._plans.get(family)
        if cached is not None and cached[0] == signature:
            return cached[1]
        plan = _FastPlan()
        name = family.name
        for labelvalues, cell in family._children.items():
            base = list(zip(family.labelnames, labelvalues, strict=True))
            if isinstance(family, FastCounter):
                plan.cells.append((self._render(name + "_total", base), cell))
            elif isinstance(family, FastGauge):
                plan.cells.append((self._render(name, base), cell))
            elif isinstance(family, FastHistogram):
                keys = [self._render(name + "_bucket", [*base, ("le", floatToGoString(b))]) for b in family.bounds]
                keys.append(self._render(name + "_count", base))
                keys.append(self._render(name + "_sum", base))
                plan.histograms.append((keys, cell))
        self._plans[family] = (signature, plan)
        return plan

    def _generic(self, collector: Any) -> Iterator[tuple[str, float]]:
        for family in collector.collect():
            for s in family.samples:
                yield self.key(s.name, s.labels), float(s.value)

    def write(self, ts: float) -> None:
        stamp = f" {int(ts)}\n" if ts == int(ts) else f" {ts:.3f}\n"
        # NaN is skipped: it would be read as a real sample, not as "no value".
        lines = [key + " " + repr(value) + stamp for key, value in self.rows() if value == value]
        self.samples += len(lines)
        self.out.write("".join(lines))

    def close(self) -> None:
        self.out.write("# EOF\n")


class _FastPlan:
    __slots__ = ("cells", "histograms")

    def __init__(self) -> None:
        self.cells: list[tuple[str, Any]] = []
        self.histograms: list[tuple[list[str], Any]] = []

    def rows(self) -> list[tuple[str, float]]:
        out = [(key, cell.value) for key, cell in self.cells]
        for keys, cell in self.histograms:
            acc = 0.0
            for key, n in zip(keys, cell.counts, strict=False):
                acc += n
                out.append((key, acc))
            out.append((keys[-2], acc))
            out.append((keys[-1], cell.sum))
        return out


def registry_rows(registry: Any) -> Iterable[tuple[str, dict[str, str], float]]:
    """The registry through the public collect() path (the reference the fast path is tested against)."""
    for family in registry.collect():
        for s in family.samples:
            yield s.name, s.labels, float(s.value)


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
    progress: Callable[[float, SampleStats], None] | None = None,
) -> SampleStats:
    """Ingest `events` (sorted by virtual time) and scrape every `interval` s from `start` to `end` inclusive."""
    exporter = VirtualExporter(backtest_config(config))
    writer = OpenMetricsWriter(out, exporter.metrics.registry, target_labels)
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
