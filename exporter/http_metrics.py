"""The HTTP listeners' own metrics: connections closed by a limit, connections open, malformed requests."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.http_guard import CLOSE_REASONS

LISTENERS = ("webhook", "private")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.closed = Counter(
            "billingwatch_http_connections_closed",
            "Connections closed by a limit: over_capacity (the listener's connection cap was reached: the oldest "
            "connection without a request in progress was closed, or the new one when every connection had "
            "one), body_timeout (the request body did not arrive within server.body_timeout_seconds).",
            ["listener", "reason"],
            registry=registry,
        )
        for listener in LISTENERS:
            for reason in CLOSE_REASONS:
                self.closed.labels(listener, reason)
        self.open = Gauge(
            "billingwatch_http_open_connections",
            "Connections open on each listener (capped by server.max_connections).",
            ["listener"],
            registry=registry,
        )
        self.malformed = Counter(
            "billingwatch_http_malformed_requests",
            "Requests that could not be parsed as HTTP (bad request line or headers, broken chunked framing, "
            "non-HTTP bytes) or whose client went away mid-body, on either listener; answered 400 or dropped. "
            "Logged at most once a minute.",
            registry=registry,
        )

    def closer(self, listener: str) -> Callable[[str], None]:
        children = {reason: self.closed.labels(listener, reason) for reason in CLOSE_REASONS}
        return lambda reason: children[reason].inc()

    def watch_open(self, listener: str, count: Callable[[], int]) -> None:
        self.open.labels(listener).set_function(lambda: float(count()))
