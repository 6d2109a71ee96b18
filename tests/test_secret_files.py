"""Secrets from files (STRIPE_WEBHOOK_SECRET_FILE, STRIPE_API_KEY_FILE), as docker-compose's secrets and systemd's
credentials provide them: the env layer reads them, refuses ambiguity, and a real `billingwatch serve` verifies
webhooks with the secret from the file and polls Stripe (a fake API on loopback) with the key from the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import samples
from exporter.config import ConfigError, load_config, resolve_secret_files
from tests.conftest import SECRET, make_event
from tests.e2e.e2e_stack import wait_for
from tests.exporter_process import running_exporter
from tests.fake_stripe_api import API_KEY, FakeStripeAPI


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_file_values_are_read_stripped(tmp_path: Path) -> None:
    env = {"STRIPE_WEBHOOK_SECRET_FILE": _file(tmp_path, "s", f"{SECRET}\n"), "OTHER": "x"}
    assert resolve_secret_files(env) == {**env, "STRIPE_WEBHOOK_SECRET": SECRET}
    assert load_config(env=env).stripe.webhook_secrets == [SECRET]
    # A comma-separated list works as in the variable (secret rotation).
    env = {"STRIPE_WEBHOOK_SECRET_FILE": _file(tmp_path, "two", "whsec_a, whsec_b\n")}
    assert load_config(env=env).stripe.webhook_secrets == ["whsec_a", "whsec_b"]


def test_an_empty_file_is_unset_and_both_set_is_an_error(tmp_path: Path) -> None:
    empty = _file(tmp_path, "empty", "\n")
    assert load_config(env={"STRIPE_WEBHOOK_SECRET_FILE": empty}).stripe.webhook_secrets == []
    assert load_config(
        env={"STRIPE_WEBHOOK_SECRET_FILE": empty, "STRIPE_WEBHOOK_SECRET": "whsec_x"}
    ).stripe.webhook_secrets == ["whsec_x"]
    with pytest.raises(ConfigError) as exc:
        resolve_secret_files({"STRIPE_API_KEY": "rk_a", "STRIPE_API_KEY_FILE": _file(tmp_path, "k", "rk_b")})
    assert exc.value.errors == ["STRIPE_API_KEY and STRIPE_API_KEY_FILE are both set: set only one"]
    with pytest.raises(ConfigError) as exc:
        resolve_secret_files({"STRIPE_WEBHOOK_SECRET_FILE": str(tmp_path / "missing")})
    (error,) = exc.value.errors
    assert error.startswith("STRIPE_WEBHOOK_SECRET_FILE: cannot read ") and "No such file" in error


def test_serve_takes_both_secrets_from_files(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLINGWATCH_"))}
    env["STRIPE_WEBHOOK_SECRET_FILE"] = _file(tmp_path, "webhook_secret", SECRET + "\n")
    env["STRIPE_API_KEY_FILE"] = _file(tmp_path, "api_key", API_KEY + "\n")
    with FakeStripeAPI() as api:
        config = _file(tmp_path, "config.yml", json.dumps({"poller": {"api_base": api.url, "interval_seconds": 10.0}}))
        with running_exporter(tmp_path, env, "--config", config) as exporter:
            status, answer = exporter.post(make_event("charge.succeeded", samples.charge(amount=500, currency="usd")))
            assert (status, json.loads(answer)["outcome"]) == (200, "accepted")
            # The fake API answers only the right key (401 otherwise): a request means the file's key was used.
            wait_for(lambda: api.requests, 20, "a poll of the Stripe API")
    log = exporter.proc.log_path.read_text()
    assert API_KEY not in log and SECRET not in log


def test_serve_names_an_unreadable_secret_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLINGWATCH_"))}
    env["STRIPE_WEBHOOK_SECRET_FILE"] = str(tmp_path / "nope")
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "serve"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr  # an invalid configuration
    assert f"STRIPE_WEBHOOK_SECRET_FILE: cannot read {tmp_path / 'nope'}" in proc.stderr
    assert "Traceback" not in proc.stderr
