"""docs/detectors.md's "Where custom modules live", literally: the example module copied into a directory of its
own, that directory on PYTHONPATH, `class: "big_charge:BigChargeDetector"`, and the real `billingwatch` command run
from elsewhere than the checkout: the detector loads and reports a big charge. Without PYTHONPATH the config is
refused, naming the entry."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from exporter import samples
from tests.conftest import REPO, SECRET, make_event
from tests.e2e.e2e_stack import VENV_BILLINGWATCH, get_json, wait_for
from tests.exporter_process import running_exporter

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
    shutil.copy(REPO / "examples" / "detectors" / "big_charge.py", detectors / "big_charge.py")
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

    with running_exporter(tmp_path, _env(PYTHONPATH=str(detectors)), "--config", str(config)) as exporter:
        event = make_event("charge.succeeded", samples.charge(amount=150_000, currency="usd"))
        assert exporter.post(event)[0] == 200
        found = wait_for(
            lambda: get_json(f"{exporter.metrics_url}/api/v1/anomalies?detector=big_charge")["anomalies"],
            20,
            "the big_charge anomaly",
        )
        assert found[0]["detector"] == "big_charge"
