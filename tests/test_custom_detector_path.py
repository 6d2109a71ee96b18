"""docs/detectors.md's "Where custom modules live", literally: the example module copied into a directory of its
own, that directory on PYTHONPATH, `class: "big_charge:BigChargeDetector"`, and the real `billingwatch` command run
from elsewhere than the checkout: the detector loads and reports a big charge. Without PYTHONPATH the config is
refused, naming the entry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from exporter import samples
from tests.conftest import REPO, SECRET, make_event, sign
from tests.e2e.e2e_stack import VENV_BILLINGWATCH, Proc, free_port, get_json, http, wait_for

CONFIG = """detectors:
  custom:
    - name: big_charge
      class: "big_charge:BigChargeDetector"
      options: {min_amount: 1000, currency: usd}
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLINGWATCH_", "PYTHON"))}
    return {**env, "STRIPE_WEBHOOK_SECRET": SECRET, **extra}


def test_a_custom_detector_from_its_own_directory_on_pythonpath(tmp_path: Path) -> None:
    detectors = tmp_path / "detectors"
    detectors.mkdir()
    shutil.copy(REPO / "tests" / "detector_example.py", detectors / "big_charge.py")
    config = tmp_path / "billingwatch.yml"
    config.write_text(CONFIG)

    refused = subprocess.run(
        [str(VENV_BILLINGWATCH), "check-config", str(config)],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "detectors.custom[0]" in refused.stdout + refused.stderr

    env = _env(PYTHONPATH=str(detectors))
    webhook, metrics = free_port(), free_port()
    proc = Proc(
        "exporter",
        [
            str(VENV_BILLINGWATCH),
            "serve",
            "--config",
            str(config),
            "--state",
            str(tmp_path / "state.sqlite3"),
            "--listen",
            f"127.0.0.1:{webhook}",
            "--metrics-listen",
            f"127.0.0.1:{metrics}",
        ],
        tmp_path,
        env,
    )
    proc.start()
    try:
        wait_for(lambda: http("GET", f"http://127.0.0.1:{metrics}/readyz")[0] == 200, 20, "the exporter")
        body = json.dumps(make_event("charge.succeeded", samples.charge(amount=150_000, currency="usd"))).encode()
        status, _ = http(
            "POST",
            f"http://127.0.0.1:{webhook}/webhooks/stripe",
            body,
            {"Content-Type": "application/json", "Stripe-Signature": sign(body)},
        )
        assert status == 200
        found = wait_for(
            lambda: get_json(f"http://127.0.0.1:{metrics}/api/v1/anomalies?detector=big_charge")["anomalies"],
            20,
            "the big_charge anomaly",
        )
        assert found[0]["detector"] == "big_charge"
    finally:
        assert proc.stop() == 0, proc.log_tail()
