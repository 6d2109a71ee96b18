"""./scripts/run.sh, the README's first command: starts everything, the demo alerts within a minute, Ctrl-C stops all.

Runs the real script on free ports with a temporary data directory (the install checks are skipped: the test runs
from the installed venv already). The shipped intervals apply here, so the demo alert takes ~10-15 s.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.stack_config import port_problem
from tests.conftest import require_binary
from tests.e2e.e2e_stack import REPO, free_port, http, wait_for

RUN = REPO / "scripts" / "run.sh"


class Run:
    def __init__(self, proc: subprocess.Popen[str], data: Path, ports: dict[str, int]):
        self.proc = proc
        self.data = data
        self.ports = ports
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def _ports() -> dict[str, int]:
    names = (
        "BILLINGWATCH_WEBHOOK_PORT",
        "BILLINGWATCH_METRICS_PORT",
        "PROMETHEUS_PORT",
        "ALERTMANAGER_PORT",
        "DEMO_SMTP_PORT",
        "DEMO_WEBHOOK_PORT",
        "DEMO_INBOX_PORT",
    )
    return {name: free_port() for name in names}


def _env(data: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STRIPE_WEBHOOK_SECRET", "BILLINGWATCH_CONFIG")}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(
        BILLINGWATCH_DATA_DIR=str(data),
        BILLINGWATCH_SKIP_INSTALL="1",
        BILLINGWATCH_LISTEN=f"127.0.0.1:{ports['BILLINGWATCH_WEBHOOK_PORT']}",
    )
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    data = tmp_path_factory.mktemp("run-data")
    ports = _ports()
    proc = subprocess.Popen(
        ["bash", str(RUN), "--demo"],
        cwd=REPO,
        env=_env(data, ports),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    run = Run(proc, data, ports)
    try:
        yield run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only if the test failed before stopping it itself
            proc.wait(10)


def test_run_demo_prints_urls_and_delivers_the_duplicate_charge_alert(demo: Run) -> None:
    p = demo.ports
    wait_for(
        lambda: "BillingWatch is running" in demo.output or demo.proc.poll() is not None,
        90,
        "run.sh to report it is running",
    )
    assert demo.proc.poll() is None, demo.output
    for url in (
        f"http://127.0.0.1:{p['BILLINGWATCH_WEBHOOK_PORT']}/webhooks/stripe",
        f"http://127.0.0.1:{p['BILLINGWATCH_METRICS_PORT']}/",
        f"http://127.0.0.1:{p['PROMETHEUS_PORT']}/",
        f"http://127.0.0.1:{p['ALERTMANAGER_PORT']}/",
        f"http://127.0.0.1:{p['DEMO_INBOX_PORT']}/",
        "stripe listen --forward-to",
    ):
        assert url in demo.output
    secret = (demo.data / "webhook-secret").read_text().strip()
    assert secret.startswith("whsec_") and secret in demo.output
    # The exporter's landing page links the Prometheus and Alertmanager this run started, on their ports.
    status, raw = http("GET", f"http://127.0.0.1:{p['BILLINGWATCH_METRICS_PORT']}/")
    landing = raw.decode()
    assert status == 200
    assert f'href="http://127.0.0.1:{p["PROMETHEUS_PORT"]}/">Prometheus' in landing
    assert f'href="http://127.0.0.1:{p["ALERTMANAGER_PORT"]}/">Alertmanager' in landing

    # The demo traffic's duplicate charge reaches Alertmanager, the mail catcher and the webhook receiver.
    wait_for(
        lambda: any("cus_demo_double" in a["labels"].get("customer", "") for a in _am_alerts(p)),
        60,
        "the duplicate charge alert in Alertmanager",
        interval=0.5,
    )
    wait_for(lambda: _mails_mentioning(demo.data, "cus_demo_double"), 60, "the demo email", interval=0.5)
    # Every link the alert carries works in this run: the runbook on the exporter's private listener (at this
    # run's port), the source in this run's Prometheus, and no Grafana link (run.sh starts no Grafana).
    (alert,) = [a for a in _am_alerts(p) if "cus_demo_double" in a["labels"].get("customer", "")]
    runbook, anchor = alert["annotations"]["runbook_url"].split("#")
    assert runbook == f"http://127.0.0.1:{p['BILLINGWATCH_METRICS_PORT']}/runbook"
    status, page = http("GET", runbook)
    assert status == 200 and f'id="{anchor}"'.encode() in page
    assert "dashboard_url" not in alert["annotations"]
    assert alert["generatorURL"].startswith(f"http://127.0.0.1:{p['PROMETHEUS_PORT']}/graph?")
    assert http("GET", alert["generatorURL"])[0] == 200
    (path,) = _mails_mentioning(demo.data, "cus_demo_double")
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert "Duplicate charge: 120.00 USD twice for cus_demo_double_" in str(mail["Subject"])
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert f"http://127.0.0.1:{p['ALERTMANAGER_PORT']}/#/alerts?receiver=" in text
    hooks = (demo.data / "demo" / "webhooks.jsonl").read_text().splitlines()
    alerts = [a for line in hooks for a in json.loads(line)["payload"]["alerts"]]
    assert any(a["labels"].get("customer", "").startswith("cus_demo_double_") for a in alerts)
    assert any("customer=cus_demo_double_" in line and "received" in line for line in demo.lines)
    status, page = http("GET", f"http://127.0.0.1:{p['DEMO_INBOX_PORT']}/")
    assert status == 200 and b"BillingWatchDuplicateCharge" in page

    # The generated secret is the one `billingwatch trigger` needs.
    trigger = subprocess.run(
        [
            str(REPO / ".venv/bin/billingwatch"),
            "trigger",
            "charge.succeeded",
            "--url",
            f"http://127.0.0.1:{p['BILLINGWATCH_WEBHOOK_PORT']}/webhooks/stripe",
        ],
        env={**os.environ, "STRIPE_WEBHOOK_SECRET": secret},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr


def test_run_stops_everything_on_sigterm(demo: Run) -> None:
    assert demo.proc.poll() is None
    os.kill(demo.proc.pid, signal.SIGTERM)  # what Ctrl-C does (SIGINT) is handled by the same trap
    assert demo.proc.wait(30) == 0, demo.output
    # The reader thread may not have taken the script's last line off the pipe yet when wait() returns.
    wait_for(lambda: "stopped" in demo.output, 10, "run.sh's last line to be read")
    for name, port in demo.ports.items():
        wait_for(lambda port=port: port_problem("127.0.0.1", port) is None, 10, f"{name} {port} to be released")


def _am_alerts(ports: dict[str, int]) -> list[dict]:
    status, body = http("GET", f"http://127.0.0.1:{ports['ALERTMANAGER_PORT']}/api/v2/alerts")
    return json.loads(body) if status == 200 else []


def _mails_mentioning(data: Path, needle: str) -> list[Path]:
    out = []
    for path in (data / "demo" / "mail").glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = msg.get_body(preferencelist=("html", "plain"))
        if body is not None and needle in body.get_content():
            out.append(path)
    return out


def test_run_refuses_a_port_in_use(tmp_path: Path) -> None:
    ports = _ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["PROMETHEUS_PORT"]))
        busy.listen()
        started = time.monotonic()
        proc = subprocess.run(
            ["bash", str(RUN)], cwd=REPO, env=_env(tmp_path, ports), capture_output=True, text=True, timeout=60
        )
    assert proc.returncode != 0
    assert f"prometheus 127.0.0.1:{ports['PROMETHEUS_PORT']}" in proc.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "logs").exists()  # nothing was started
