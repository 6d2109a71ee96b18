"""exporter/rulegen/stats.py: the z of a rolling window's Poisson test (scan_z) against an independent calculation."""

from __future__ import annotations

import math

import pytest

from exporter.rulegen.stats import scan_z


def chance_crossings_per_30_days(window_hours: float, z: float) -> float:
    phi = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return 30 * 24 / window_hours * z * phi


@pytest.mark.parametrize(("hours", "budget"), [(24, 0.3), (6, 0.3), (24, 0.2), (1, 0.05)])
def test_scan_z_gives_the_requested_chance_rate(hours: int, budget: float) -> None:
    z = scan_z(hours * 3600, budget)
    assert chance_crossings_per_30_days(hours, z) == pytest.approx(budget, rel=0.01)


def test_a_shorter_window_gets_more_looks_and_a_larger_z() -> None:
    day, six_hours = scan_z(86400, 0.3), scan_z(6 * 3600, 0.3)
    assert six_hours > day > 3.0
