"""Counters, gauges and a histogram for the per-event path, exposed through prometheus_client's collector API.

prometheus_client's `Counter.inc()` checks that the metric is observable, checks the sign, then takes a lock
around the addition: about 0.5 µs, five to seven times per event. Everything these metrics count happens on the
event loop's thread (webhooks, the deferred processing, housekeeping), so a plain float addition is enough: the
value cells here are an attribute write. Measured on the ingest benchmark: about 4-7 % of the server's CPU per
event (docs/benchmark.md).

Only the writes must stay on one thread. A scrape may run on another one: it copies the children under a lock
that adding a series also takes (never an update), and a float read is atomic. The exposition is
prometheus_client's own (tests compare it with the text its Counter, Gauge and Histogram produce for the same
operations).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString


class Cell:
    """One series' value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Family(Collector):
    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), registry: CollectorRegistry | None = None
    ):
        if self.kind == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        # Taken only to add a series and to copy them for a scrape (never per update): a scrape on another
        # thread must not iterate the dict while a series is being added.
        self._lock = threading.Lock()
        if not self.labelnames:
            self._children[()] = self._new_child()
        if registry is not None:
            registry.register(self)

    def _new_child(self) -> Any:
        return Cell()

    def labels(self, *values: Any) -> Any:
        """The child for these label values (created at first use), like prometheus_client's labels()."""
        if len(values) != len(self.labelnames) or not self.labelnames:
            raise ValueError(f"{self.name}: expected label values for {self.labelnames}, got {values!r}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, self._new_child())
        return child

    def _only(self) -> Any:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use labels()")
        return self._children[()]

    def _family(self) -> Metric:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _items(self) -> list[tuple[tuple[str, ...], Any]]:
        with self._lock:
            children = self._children.copy()
        return list(children.items())


class _ScalarFamily(_Family):
    def collect(self) -> Iterator[Metric]:
        family: Any = self._family()
        for values, cell in self._items():
            family.add_metric(values, cell.value)
        yield family


class FastCounter(_ScalarFamily):
    kind = "counter"

    def inc(self, amount: float = 1.0) -> None:
        self._only().value += amount

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class FastGauge(_ScalarFamily):
    kind = "gauge"

    def set(self, value: float) -> None:
        self._only().value = float(value)

    def _family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)


class HistogramCell:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds  # upper bounds, ascending, +Inf last
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # `le` is inclusive: the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class FastHistogram(_Family):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float],
    ):
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != INF:
            bounds.append(INF)
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramCell:
        return HistogramCell(self.bounds)

    def observe(self, value: float) -> None:
        self._only().observe(value)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family: Any = self._family()
        les = [floatToGoString(b) for b in self.bounds]
        for values, cell in self._items():
            counts, total = list(cell.counts), cell.sum
            acc = 0
            buckets = []
            for le, n in zip(les, counts, strict=True):
                acc += n
                buckets.append((le, float(acc)))
            family.add_metric(values, buckets, total)
        yield family
