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
from collections.abc import Callable, Iterator, Sequence
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


# Series one metric may have. Labels are capped one by one (exporter/labels.py), but two capped labels still
# multiply: 310 currencies x 310 failure codes were 90,601 series of one metric, a 6.6 MB scrape. Stripe's real
# combinations stay far below this (a few currencies x ~60 failure codes x 2 modes).
DEFAULT_MAX_SERIES = 1000
OVERFLOW_VALUE = "other"
# Labels whose values are a closed set decided by our code, not by input: they keep their value in the overflow
# series, so that live and test traffic (contract 1) are still told apart there.
KEEP_ON_OVERFLOW = frozenset({"livemode"})


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
        self.max_series = DEFAULT_MAX_SERIES
        # Beyond max_series, new label sets go to one overflow series (every label "other" but KEEP_ON_OVERFLOW)
        # or, with drop_on_overflow (amounts: adding different currencies would be meaningless), nowhere.
        self.drop_on_overflow = False
        self.on_overflow: Callable[[str], None] | None = None
        self._keep = tuple(n in KEEP_ON_OVERFLOW for n in self.labelnames)
        if not self.labelnames:
            self._children[()] = self._new_child()
        if registry is not None:
            registry.register(self)

    def _new_child(self) -> Any:
        return Cell()

    def labels(self, *values: Any) -> Any:
        """The child for these label values (created at first use), like prometheus_client's labels()."""
        return self.lookup(values)[0]

    def lookup(self, values: Sequence[Any]) -> tuple[Any, bool]:
        """(child, whether it stands for an overflowed label set: then it must not be memoised by these values)."""
        if len(values) != len(self.labelnames) or not self.labelnames:
            raise ValueError(f"{self.name}: expected label values for {self.labelnames}, got {values!r}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is not None:
            return child, False
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                return child, False
            if len(self._children) < self.max_series:
                child = self._children[key] = self._new_child()
                return child, False
            if self.drop_on_overflow:
                child = self._new_child()  # never exposed
            else:
                other = tuple(v if keep else OVERFLOW_VALUE for v, keep in zip(key, self._keep, strict=True))
                child = self._children.get(other)
                if child is None:
                    # At most one overflow series per kept value: the budget is exceeded by that little only.
                    child = self._children[other] = self._new_child()
        if self.on_overflow is not None:
            self.on_overflow(self.name)
        return child, True

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
