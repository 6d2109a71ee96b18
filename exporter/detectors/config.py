"""Typed view of the `detectors:` section of the config (defaults live in exporter/defaults.yml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorsConfig:
    pass
