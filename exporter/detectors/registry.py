"""Builds the configured in-process detectors and the private API routes they contribute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.config import Config
from exporter.detectors.base import Detector
from exporter.state import StateStore


@dataclass
class DetectorSet:
    detectors: list[Detector] = field(default_factory=list)
    # (method, path, handler, description) for the private listener.
    routes: list[tuple[str, str, Any, str]] = field(default_factory=list)


def build_detectors(config: Config, registry: CollectorRegistry, state: StateStore) -> DetectorSet:
    return DetectorSet()
