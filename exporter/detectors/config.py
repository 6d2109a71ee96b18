"""Typed view of the `detectors:` section of the config (defaults live in exporter/defaults.yml)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from exporter.money import normalize_currency

SEVERITIES = ("critical", "warning", "info")
# Statuses Stripe gives a subscription; MRR may only count a subset of these.
SUBSCRIPTION_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "canceled",
    "paused",
)
BUILTIN_NAMES = ("duplicate_charge", "negative_invoice", "silent_lapse", "early_fraud_warning")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
CUSTOM_KEYS = ("name", "class", "options")


@dataclass(frozen=True)
class DuplicateChargeConfig:
    enabled: bool
    severity: str
    window_seconds: int
    late_arrival_seconds: int
    max_remembered_charges: int


@dataclass(frozen=True)
class NegativeInvoiceConfig:
    enabled: bool
    severity: str
    credit_severity: str
    reversal_threshold: float
    reversal_threshold_by_currency: dict[str, float]


@dataclass(frozen=True)
class SubscriptionsConfig:
    enabled: bool
    severity: str
    grace_seconds: int
    sweep_interval_seconds: float
    mrr_statuses: list[str]
    ended_retention_seconds: int
    max_subscriptions: int


@dataclass(frozen=True)
class CustomDetectorSpec:
    """One validated entry of `detectors.custom`."""

    name: str
    factory: str
    options: dict[str, Any]


@dataclass(frozen=True)
class DetectorsConfig:
    anomaly_ttl_seconds: float
    max_series: int
    recent_anomalies: int
    duplicate_charge: DuplicateChargeConfig
    negative_invoice: NegativeInvoiceConfig
    subscriptions: SubscriptionsConfig
    # Free-form entries ({name, class, options}); checked by validate() because `class` is not a Python name.
    custom: list[dict[str, Any]]

    def custom_specs(self) -> list[CustomDetectorSpec]:
        return [CustomDetectorSpec(str(c["name"]), str(c["class"]), dict(c.get("options") or {})) for c in self.custom]

    def validate(self) -> list[str]:
        errors: list[str] = []
        if self.anomaly_ttl_seconds <= 0:
            errors.append("detectors.anomaly_ttl_seconds: must be above 0")
        if self.max_series < 1:
            errors.append("detectors.max_series: must be at least 1")
        if self.recent_anomalies < 1:
            errors.append("detectors.recent_anomalies: must be at least 1")
        for section in ("duplicate_charge", "negative_invoice", "subscriptions"):
            severity = getattr(self, section).severity
            if severity not in SEVERITIES:
                errors.append(f"detectors.{section}.severity: must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        if self.negative_invoice.credit_severity not in SEVERITIES:
            errors.append(
                "detectors.negative_invoice.credit_severity: must be one of "
                f"{', '.join(SEVERITIES)}, got {self.negative_invoice.credit_severity!r}"
            )
        dc = self.duplicate_charge
        if dc.window_seconds < 1:
            errors.append("detectors.duplicate_charge.window_seconds: must be at least 1")
        if dc.max_remembered_charges < 1:
            errors.append("detectors.duplicate_charge.max_remembered_charges: must be at least 1")
        if dc.late_arrival_seconds < 0:
            errors.append("detectors.duplicate_charge.late_arrival_seconds: must not be negative")
        ni = self.negative_invoice
        if ni.reversal_threshold <= 0:
            errors.append("detectors.negative_invoice.reversal_threshold: must be above 0")
        for code, value in ni.reversal_threshold_by_currency.items():
            where = f"detectors.negative_invoice.reversal_threshold_by_currency.{code}"
            if normalize_currency(code) != code:
                errors.append(f"{where}: not a lower-case ISO currency code")
            if value <= 0:
                errors.append(f"{where}: must be above 0")
        sc = self.subscriptions
        if sc.grace_seconds < 0:
            errors.append("detectors.subscriptions.grace_seconds: must not be negative")
        if sc.sweep_interval_seconds <= 0:
            errors.append("detectors.subscriptions.sweep_interval_seconds: must be above 0")
        if sc.ended_retention_seconds < 0:
            errors.append("detectors.subscriptions.ended_retention_seconds: must not be negative")
        if sc.max_subscriptions < 1000:
            errors.append("detectors.subscriptions.max_subscriptions: must be at least 1000")
        for i, status in enumerate(sc.mrr_statuses):
            if status not in SUBSCRIPTION_STATUSES:
                errors.append(
                    f"detectors.subscriptions.mrr_statuses[{i}]: unknown status {status!r} "
                    f"(one of {', '.join(SUBSCRIPTION_STATUSES)})"
                )
        errors.extend(self._validate_custom())
        return errors

    def _validate_custom(self) -> list[str]:
        errors: list[str] = []
        names: set[str] = set()
        for i, entry in enumerate(self.custom):
            where = f"detectors.custom[{i}]"
            if not isinstance(entry, dict):
                errors.append(f"{where}: expected a mapping with name, class and options")
                continue
            for key in entry:
                if key not in CUSTOM_KEYS:
                    errors.append(f"{where}.{key}: unknown key")
            name = entry.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                errors.append(f"{where}.name: required, snake_case (a-z, 0-9, _), got {name!r}")
            elif name in BUILTIN_NAMES or name in names:
                errors.append(f"{where}.name: {name!r} is already used by another detector")
            else:
                names.add(name)
            factory = entry.get("class")
            if not isinstance(factory, str) or not _FACTORY_RE.match(factory):
                errors.append(f"{where}.class: required, 'package.module:ClassName', got {factory!r}")
            else:
                # Import now, so check-config and start-up report a wrong path as a config error.
                from exporter.detectors.loader import resolve

                try:
                    if not callable(resolve(factory)):
                        errors.append(f"{where}.class: {factory!r} is not a class or function")
                except Exception as exc:
                    errors.append(f"{where}.class: cannot import {factory!r}: {type(exc).__name__}: {exc}")
            options = entry.get("options", {})
            if options is not None and not isinstance(options, dict):
                errors.append(f"{where}.options: expected a mapping, got {type(options).__name__}")
        return errors
