"""The objects `serve` and the backtests share, built in one place: metrics, state, detectors and their board,
ingestor (with its accounting) and the missed-delivery poller. The HTTP side (listeners, verifier, guards) is the
service's own (exporter/service.py); a backtest drives the ingestor on a virtual clock (history/sampler.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from exporter import __version__
from exporter.accounting import REFUNDS_NS, REFUNDS_RETENTION_SECONDS
from exporter.churn_signals import CANCELED_NS, CANCELED_RETENTION_SECONDS
from exporter.config import Config
from exporter.detectors.registry import DetectorSet, build_detectors
from exporter.ingest import Ingestor
from exporter.metrics import CallbackCounter, Metrics
from exporter.poller import MissedDeliveryPoller, build_poller
from exporter.state import StateStore

# Housekeeping forgets expired ids and key/value entries this often (serve and backtests alike).
PRUNE_INTERVAL_SECONDS = 3600.0


@dataclass
class Wiring:
    metrics: Metrics
    state: StateStore
    detector_set: DetectorSet
    ingestor: Ingestor
    poller: MissedDeliveryPoller | None

    def prune_namespaces(self, now: float) -> None:
        """Forget the accounting's refunds and the churn signals' cancellations once past their retention."""
        self.state.prune_namespace(REFUNDS_NS, now - REFUNDS_RETENTION_SECONDS)
        self.state.prune_namespace(CANCELED_NS, now - CANCELED_RETENTION_SECONDS)


def wire(
    config: Config,
    *,
    env: Mapping[str, str] | None,
    persist: bool = True,
    clock: Callable[[], float] = time.time,
) -> Wiring:
    """Everything between a verified event and the registry, for `config`.

    `env` is the process environment (secret files resolved): with STRIPE_API_KEY the poller is built. None, for
    a backtest, builds no poller: a backtest never calls Stripe. `persist=False`, for a backtest too, which never
    restarts: the state store lives in memory and the subscription ledger does not write its records for
    restarts; what the detectors keep in memory and report is the same.
    """
    metrics = Metrics(
        max_label_values=config.metrics.max_label_values,
        max_series_per_metric=config.metrics.max_series_per_metric,
    )
    metrics.build_info.labels(__version__).set(1)
    state = StateStore(config.state.path if persist else ":memory:", retention_seconds=config.state.retention_seconds)
    CallbackCounter(
        "billingwatch_state_seen_db_lookups",
        "Dedupe lookups that read the seen-id table in SQLite: every delivery whose id is not already "
        "waiting for its commit.",
        lambda: state.db_lookups,
        metrics.registry,
    )
    CallbackCounter(
        "billingwatch_state_write_errors",
        "State write transactions that failed (disk full, read-only, locked by another process, I/O error); "
        "while they fail, webhooks are answered 503 and /readyz is not ready.",
        lambda: state.write_errors,
        metrics.registry,
    )
    metrics.state_writable.set_function(lambda: 1.0 if state.writable else 0.0)
    detector_set = build_detectors(config, metrics.registry, state, persist=persist)
    ingestor = Ingestor(
        metrics,
        state,
        mode=config.stripe.mode,
        detectors=detector_set.detectors,
        recent_size=config.server.recent_events,
    )
    poller = None
    if env is not None:
        poller = build_poller(config, metrics.registry, state, ingestor, env=env, clock=clock)
    return Wiring(metrics, state, detector_set, ingestor, poller)
