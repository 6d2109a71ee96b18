"""The rule files the e2e stack loads: the shipped rules rendered from tests/e2e/e2e-config.yml (short windows)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

E2E_CONFIG = Path(__file__).with_name("e2e-config.yml")


def render_test_rules(out_dir: Path) -> Path:
    """`billingwatch rules --config e2e-config.yml --output out_dir`, the same command users run on their config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "rules", "--config", str(E2E_CONFIG), "--output", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"billingwatch rules failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if not list(out_dir.glob("*.yml")):
        raise RuntimeError(f"billingwatch rules wrote no rule file into {out_dir}")
    return out_dir
