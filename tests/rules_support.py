"""Reading the committed rule files and their promtool tests (shared by the rules tests)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

RULES_DIR = REPO / "rules"
RULE_TESTS_DIR = RULES_DIR / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"


@dataclass(frozen=True)
class AlertRule:
    name: str
    severity: str | None  # None when it comes from the series (in-process anomaly gauges)
    rule: dict[str, Any]
    file: str


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


@functools.cache
def _load_cached(path: Path, mtime: float) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load(path: Path) -> dict[str, Any]:
    # Parsed once per file version: the coverage tests read every test file for every alert.
    return _load_cached(path, path.stat().st_mtime)


def all_rules() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in rule_files():
        for group in load(path)["groups"]:
            out.extend((path.name, rule) for rule in group["rules"])
    return out


def alerts() -> list[AlertRule]:
    return [AlertRule(r["alert"], r.get("labels", {}).get("severity"), r, f) for f, r in all_rules() if "alert" in r]


def records() -> list[str]:
    return [r["record"] for _, r in all_rules() if "record" in r]


def rule_test_cases() -> list[dict[str, Any]]:
    out = []
    for path in rule_test_files():
        for case in load(path)["tests"]:
            out.append({**case, "_file": path.name})
    return out
