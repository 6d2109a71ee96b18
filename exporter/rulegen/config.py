"""Typed view of the `rules:` section of the config (defaults live in exporter/defaults.yml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RulesConfig:
    pass
