"""contrib/systemd/billingwatch.service passes `systemd-analyze verify` without a warning (unknown keys and bad
values are only warnings there), with ExecStart pointed at this checkout's billingwatch; and what it sets matches
what the exporter reads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO, require_binary

UNIT = REPO / "contrib" / "systemd" / "billingwatch.service"
INSTALLED = "/opt/billingwatch/venv/bin/billingwatch"


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve " in text
    unit = tmp_path / "billingwatch.service"
    unit.write_text(text.replace(INSTALLED, str(REPO / ".venv" / "bin" / "billingwatch")))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Warnings about this unit (unknown keys, bad values) would name it; other units' noise would not.
    assert "billingwatch.service" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_unit_passes_the_secret_as_a_credential_file_and_stops_in_time() -> None:
    text = UNIT.read_text()
    assert "LoadCredential=webhook_secret:" in text
    assert "Environment=STRIPE_WEBHOOK_SECRET_FILE=%d/webhook_secret" in text  # read by exporter/config.py
    assert "STRIPE_WEBHOOK_SECRET=" not in text.replace("STRIPE_WEBHOOK_SECRET_FILE=", "")
    # SIGTERM waits up to server.shutdown_timeout_seconds (10 s) for requests, then flushes: more than that here.
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))
    assert stop > 10
