"""Config loading (defaults, file, env, flags), check-config, serve's refusal without a secret, and trigger."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from exporter.config import ConfigError, default_document, load_config
from tests.conftest import REPO, SECRET
from tests.ingest_support import make_config, running_exporter


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLINGWATCH_"))}
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_every_option_has_a_default_without_a_config_file():
    config = load_config(None, env={})
    assert config.server.listen == "0.0.0.0:8000"
    assert config.server.metrics_listen == "127.0.0.1:9847"
    assert config.stripe.tolerance_seconds == 300
    assert config.server.max_body_bytes == 1024 * 1024
    assert config.state.retention_seconds >= 4 * 86400
    assert config.stripe.webhook_secrets == []


def test_precedence_defaults_file_env_flags(tmp_path):
    path = tmp_path / "bw.yml"
    path.write_text("server:\n  listen: 127.0.0.1:7000\n  metrics_listen: 127.0.0.1:7001\nstate:\n  path: a.db\n")
    env = {"BILLINGWATCH_METRICS_LISTEN": "127.0.0.1:7002", "STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b,,"}
    config = load_config(path, env=env, overrides={"state": {"path": "b.db"}})
    assert config.server.listen == "127.0.0.1:7000"
    assert config.server.metrics_listen == "127.0.0.1:7002"
    assert config.state.path == "b.db"
    assert config.stripe.webhook_secrets == ["whsec_a", "whsec_b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  lisen: 1.2.3.4:80\n", "server.lisen: unknown key"),
        ("stripe:\n  tolerance_seconds: soon\n", "stripe.tolerance_seconds: expected an integer"),
        ("stripe:\n  mode: sometimes\n", "stripe.mode: must be one of"),
        ("state:\n  retention_seconds: 60\n", "state.retention_seconds: must be at least"),
        ("extra_section: {}\n", "extra_section: unknown key"),
        ("server: [1, 2]\n", "server: expected a mapping"),
        ("server:\n  listen: nowhere\n", "server.listen: expected HOST:PORT"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("server:\n  listen: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_configs_name_their_location(tmp_path, text, expected):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_check_config_exit_codes(tmp_path):
    good = tmp_path / "good.yml"
    good.write_text("stripe:\n  webhook_secrets: [whsec_x]\n  mode: live\n")
    result = run_cli("check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("stripe:\n  webhook_secret: whsec_typo\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "stripe.webhook_secret: unknown key" in result.stderr
    assert run_cli("check-config", str(tmp_path / "missing.yml")).returncode == 1


def test_shipped_example_configs_are_valid():
    """The defaults document itself is a valid user config (it is what `billingwatch rules` renders from)."""
    load_config(REPO / "exporter" / "defaults.yml", env={})
    assert set(default_document()) >= {"server", "stripe", "state", "log", "metrics", "detectors", "rules"}


def test_serve_refuses_to_start_without_a_secret(tmp_path):
    result = run_cli("serve", "--state", str(tmp_path / "s.sqlite3"), "--listen", "127.0.0.1:0",
                     "--metrics-listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "no webhook signing secret" in result.stderr
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr


def test_serve_reports_a_busy_port_clearly(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--state", str(tmp_path / "s.sqlite3"), "--listen", f"127.0.0.1:{port}",
                         "--metrics-listen", "127.0.0.1:0", env={"STRIPE_WEBHOOK_SECRET": SECRET})
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert SECRET not in result.stderr + result.stdout


async def test_trigger_sends_a_signed_event_the_exporter_accepts(tmp_path):
    config = make_config(tmp_path / "s.sqlite3")
    async with running_exporter(config) as ex:
        for event_type in ("charge.succeeded", "charge.failed", "invoice.paid", "customer.subscription.created"):
            result = await _async_cli("trigger", event_type, "--url", ex.webhook_url, "--secret", SECRET)
            assert result[0] == 0, result
            assert "HTTP 200" in result[1]
        # `trigger` sends test-mode events (like `stripe trigger`) unless --livemode.
        assert ex.value("stripe_charges_total", {"currency": "usd", "livemode": "false"}) == 2
        assert ex.value("stripe_invoices_paid_total", {"currency": "usd", "livemode": "false"}) == 1
        wrong = await _async_cli("trigger", "charge.succeeded", "--url", ex.webhook_url, "--secret", "whsec_wrong")
        assert wrong[0] == 1 and "HTTP 400" in wrong[1]
        unknown = await _async_cli("trigger", "no.such.type", "--url", ex.webhook_url, "--secret", SECRET)
        assert unknown[0] == 2


async def _async_cli(*args: str) -> tuple[int, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode() + err.decode()


def test_readme_documents_every_flag_and_env_var():
    readme = (REPO / "README.md").read_text()
    for needle in ["--listen", "--metrics-listen", "--state", "--config", "--log-level", "--mode",
                   "BILLINGWATCH_LISTEN", "BILLINGWATCH_METRICS_LISTEN", "BILLINGWATCH_STATE", "BILLINGWATCH_CONFIG",
                   "BILLINGWATCH_LOG_LEVEL", "BILLINGWATCH_MODE", "STRIPE_WEBHOOK_SECRET", "check-config", "trigger",
                   "stripe listen --forward-to localhost:8000/webhooks/stripe"]:
        assert needle in readme, needle
    from exporter.metrics import Metrics

    for metric in Metrics().registry.collect():
        name = metric.name + ("_total" if metric.type == "counter" else "")
        assert name in readme, f"{name} is not documented in README.md"
    assert textwrap.dedent(readme).splitlines()[0].startswith("# BillingWatch")


def test_check_config_reports_every_problem_at_once_with_its_line(tmp_path):
    """Unknown keys, wrong types, bad values and duplicate keys in one pass, in file order, each with its line."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "server:\n"  # 1
        "  lisen: 1.2.3.4:80\n"  # 2: unknown, close to `listen`
        "  max_body_bytes: 10\n"  # 3: a bad value
        "stripe:\n"  # 4
        "  tolerance_seconds: soon\n"  # 5: a wrong type (and no value check on top of it)
        "  mode: test\n"  # 6
        "  mode: live\n"  # 7: a duplicate
        "rules:\n"  # 8
        "  charge_failure_spike:\n"  # 9
        "    zzz_unrelated: 1\n"  # 10: unknown, nothing close
    )
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    lines = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert lines == [
        f"{bad}:2: server.lisen: unknown key (did you mean 'listen'?)",
        f"{bad}:3: server.max_body_bytes: must be at least 1024",
        f"{bad}:5: stripe.tolerance_seconds: expected an integer, got 'soon'",
        f"{bad}:7: stripe.mode: duplicate key (first at line 6; YAML keeps only the last)",
        f"{bad}:10: rules.charge_failure_spike.zzz_unrelated: unknown key",
    ], result.stderr
