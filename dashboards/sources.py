"""What the dashboards read from the rest of the repository: the thresholds of the rules (the `rules:` section of
exporter/defaults.yml, typed by exporter.rulegen.config) and the names the shipped rules (rules/*.yml) define.

Reading thresholds and windows from the defaults keeps the lines drawn on the panels equal to the values the
alerts fire at, and the recorded series' names equal to the ones the rules record; regenerating after a change to
the defaults updates the dashboards with the rules (tests/test_dashboards.py checks both stay in step).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from exporter.config import load_config
from exporter.rulegen.config import RulesConfig
from exporter.rulegen.durations import parse_duration

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "rules"


_config_file: str | None = None


def use_config(path: str | None) -> None:
    """Draw the thresholds of this config file (None: the packaged defaults, which the committed JSON uses)."""
    global _config_file
    _config_file = path
    rules_config.cache_clear()


@cache
def rules_config() -> RulesConfig:
    """The packaged defaults, or use_config()'s file over them; never the environment, so output is reproducible."""
    return load_config(_config_file, env={}).rules


def seconds(duration: str) -> float:
    return float(parse_duration(duration))


def rule_documents(rules_dir: Path = RULES_DIR) -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text(encoding="utf-8")) or {} for p in sorted(rules_dir.glob("*.yml"))]


def _rules(rules_dir: Path) -> list[dict[str, Any]]:
    return [rule for doc in rule_documents(rules_dir) for group in doc.get("groups") or [] for rule in group["rules"]]


def recorded_names(rules_dir: Path = RULES_DIR) -> set[str]:
    """Every series name a recording rule in rules/*.yml defines."""
    return {rule["record"] for rule in _rules(rules_dir) if "record" in rule}


def alert_names(rules_dir: Path = RULES_DIR) -> list[str]:
    """The alert names the shipped rules define, sorted and without repeats (warning/critical pairs share one)."""
    return sorted({rule["alert"] for rule in _rules(rules_dir) if "alert" in rule})
