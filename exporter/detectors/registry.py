"""Builds the configured in-process detectors and the private API routes they contribute."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.config import Config
from exporter.detectors import catalog
from exporter.detectors.api import anomalies_handler, detectors_handler
from exporter.detectors.base import Describes, Detector, DetectorContext
from exporter.detectors.board import AnomalyBoard
from exporter.detectors.config import DuplicateChargeConfig, NegativeInvoiceConfig, SubscriptionsConfig
from exporter.detectors.custom import load_custom
from exporter.detectors.duplicate_charge import DuplicateChargeDetector
from exporter.detectors.fraud_warnings import EarlyFraudWarningDetector
from exporter.detectors.negative_invoice import NegativeInvoiceDetector
from exporter.detectors.subscriptions import SubscriptionLedger
from exporter.state import StateStore


class BoardKeeper:
    """Expires anomaly series on the tick; listed last so a tick's new anomalies are in place first."""

    name = "anomaly_board"

    def __init__(self, board: AnomalyBoard):
        self.board = board

    def on_event(self, event: dict[str, Any], received: float) -> None:
        return None

    def tick(self, now: float) -> None:
        self.board.expire(now)


@dataclass
class DetectorSet:
    detectors: list[Detector] = field(default_factory=list)
    # (method, path, handler, description) for the private listener.
    routes: list[tuple[str, str, Any, str]] = field(default_factory=list)
    board: AnomalyBoard | None = None
    by_name: dict[str, Detector] = field(default_factory=dict)


def build_detectors(
    config: Config, registry: CollectorRegistry, state: StateStore, *, persist: bool = True
) -> DetectorSet:
    """`persist=False`: the subscription ledger keeps its table in memory only (backtests, exporter/wiring.py)."""
    dc = config.detectors
    board = AnomalyBoard(
        registry, state, ttl_seconds=dc.anomaly_ttl_seconds, max_series=dc.max_series, recent_size=dc.recent_anomalies
    )
    out = DetectorSet(board=board)
    if dc.duplicate_charge.enabled:
        out.by_name["duplicate_charge"] = DuplicateChargeDetector(board, state, dc.duplicate_charge, registry)
    if dc.negative_invoice.enabled:
        out.by_name["negative_invoice"] = NegativeInvoiceDetector(board, state, dc.negative_invoice)
    if dc.subscriptions.enabled:
        ledger = SubscriptionLedger(
            board, state, registry, dc.subscriptions, max_label_values=config.metrics.max_label_values
        )
        ledger.persist = persist
        out.by_name["silent_lapse"] = ledger
    # Records each early fraud warning with its charge and customer (no series, no alert of its own).
    out.by_name["early_fraud_warning"] = EarlyFraudWarningDetector(board)
    for i, spec in enumerate(dc.custom_specs()):
        context = DetectorContext(
            name=spec.name, board=board, state=state, registry=registry, config=config, options=spec.options
        )
        board.precreate(spec.name)
        out.by_name[spec.name] = load_custom(i, spec.name, spec.factory, context)
    out.detectors = [*out.by_name.values(), BoardKeeper(board)]

    def describe() -> list[dict[str, Any]]:
        return describe_detectors(config, out)

    out.routes = [
        (
            "GET",
            "/api/v1/anomalies",
            anomalies_handler(board, dc.recent_anomalies),
            "recent anomalies of the in-process detectors, newest first (?limit=, ?detector=)",
        ),
        ("GET", "/api/v1/detectors", detectors_handler(describe), "every detector, where it runs, its thresholds"),
    ]
    return out


def describe_detectors(config: Config, detector_set: DetectorSet) -> list[dict[str, Any]]:
    rules, shared = catalog.rule_settings(config.rules)
    alerts = catalog.rule_alerts(config.rules)
    out: list[dict[str, Any]] = []
    for name, thresholds in rules.items():
        out.append(
            {
                "name": name,
                "runs": catalog.RULE,
                "enabled": True,
                "alert": catalog.ALERT_NAMES[name],
                "description": catalog.DESCRIPTIONS[name],
                "alerts": alerts.get(name, []),
                "thresholds": thresholds,
                "shared_rule_settings": shared,
            }
        )
    dc = config.detectors
    common = {"anomaly_ttl_seconds": dc.anomaly_ttl_seconds, "max_series": dc.max_series}
    builtin_configs: dict[str, DuplicateChargeConfig | NegativeInvoiceConfig | SubscriptionsConfig] = {
        "duplicate_charge": dc.duplicate_charge,
        "negative_invoice": dc.negative_invoice,
        "silent_lapse": dc.subscriptions,
    }
    for name, section in builtin_configs.items():
        detector = detector_set.by_name.get(name)
        # A disabled detector shows its configured settings.
        thresholds = detector.describe() if isinstance(detector, Describes) else dataclasses.asdict(section)
        out.append(
            {
                "name": name,
                "runs": catalog.IN_PROCESS,
                "enabled": section.enabled,
                "alert": catalog.ALERT_NAMES[name],
                "description": catalog.DESCRIPTIONS[name],
                "alerts": alerts.get(name, []),
                "thresholds": {**thresholds, **common},
                "metric": f'billingwatch_anomaly{{detector="{name}"}}',
            }
        )
    for spec in dc.custom_specs():
        detector = detector_set.by_name[spec.name]
        out.append(
            {
                "name": spec.name,
                "runs": catalog.IN_PROCESS,
                "custom": True,
                "class": spec.factory,
                "enabled": True,
                "alert": catalog.CUSTOM_ALERT_NAME,
                "alerts": alerts.get("custom", []),
                "description": (detector.__doc__ or "").strip().splitlines()[0] if detector.__doc__ else "",
                "thresholds": detector.describe() if isinstance(detector, Describes) else dict(spec.options),
                "metric": f'billingwatch_anomaly{{detector="{spec.name}"}}',
            }
        )
    return out
