"""The shipped alertmanager.yml, run by a real Alertmanager with only its addresses changed, delivers each severity
where docs/alerting.md says: critical by email and webhook, warning by email only, info by webhook only, and a
critical alert mutes the warning of the same detector about the same subject. A real SMTP server (aiosmtpd) and a
real HTTP receiver catch the notifications.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from tests.conftest import REPO, require_binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = [msg["Subject"] or ""]
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        self.messages.append("\n".join(parts))
        return "250 OK"


class _Webhooks(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Stack:
    def __init__(self, url: str, mailbox: _Mailbox, webhooks: list[dict[str, Any]]):
        self.url, self.mailbox, self.webhooks = url, mailbox, webhooks

    def post(self, alerts: list[dict[str, str]]) -> None:
        body = json.dumps([{"labels": labels, "annotations": {"summary": "test"}} for labels in alerts]).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200

    def webhook_alerts(self) -> list[dict[str, str]]:
        return [a["labels"] for payload in self.webhooks for a in payload["alerts"] if a["status"] == "firing"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = require_binary("prometheus-alertmanager")
    work: Path = tmp_path_factory.mktemp("alertmanager")
    mailbox = _Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    _Webhooks.received = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Webhooks)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    # Only the addresses change: routes, timings, receivers and inhibition are the shipped ones.
    cfg = yaml.safe_load((REPO / "alertmanager.yml").read_text())
    cfg["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp.port}"
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{http.server_address[1]}/alerts"
    config = work / "alertmanager.yml"
    config.write_text(yaml.safe_dump(cfg))
    port = _free_port()
    log = (work / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("alertmanager did not start: " + (work / "alertmanager.log").read_text()[-2000:])
            time.sleep(0.1)
        yield Stack(url, mailbox, _Webhooks.received)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        http.shutdown()
        smtp.stop()


def _anomaly(alertname: str, severity: str, detector: str, customer: str, **extra: str) -> dict[str, str]:
    return {
        "alertname": alertname,
        "severity": severity,
        "detector": detector,
        "customer": customer,
        "job": "billingwatch",
        **extra,
    }


def test_severities_reach_the_documented_receivers_and_critical_inhibits_warning(stack: Stack) -> None:
    stack.post(
        [
            _anomaly("BillingWatchDuplicateCharge", "critical", "duplicate_charge", "cus_crit", currency="usd"),
            _anomaly("BillingWatchNegativeInvoice", "warning", "negative_invoice", "cus_warn", invoice="in_1"),
            _anomaly("BillingWatchCustomAnomaly", "info", "vip_refund", "cus_info"),
            _anomaly("BillingWatchSilentLapse", "critical", "silent_lapse", "cus_inh", subscription="sub_1"),
            _anomaly("BillingWatchSilentLapse", "warning", "silent_lapse", "cus_inh", subscription="sub_1"),
        ]
    )
    started = time.monotonic()

    def mails_for(customer: str) -> list[str]:
        return [m for m in stack.mailbox.messages if customer in m]

    def hooks_for(customer: str) -> list[dict[str, str]]:
        return [a for a in stack.webhook_alerts() if a.get("customer") == customer]

    expected_mail = ("cus_crit", "cus_warn", "cus_inh")
    expected_hooks = ("cus_crit", "cus_info", "cus_inh")
    while time.monotonic() - started < 30:
        if all(mails_for(c) for c in expected_mail) and all(hooks_for(c) for c in expected_hooks):
            break
        time.sleep(0.2)
    first = time.monotonic() - started
    # The anomaly routes' group_wait is 5 s: everything arrives well within the 15 s budget.
    assert first < 12, f"notifications took {first:.1f}s"
    time.sleep(2)  # let anything that should not come have the chance to arrive

    for customer in expected_mail:
        assert len(mails_for(customer)) == 1, (customer, stack.mailbox.messages)
    for customer in expected_hooks:
        assert hooks_for(customer), customer
    assert mails_for("cus_info") == [], "info must not be emailed"
    assert hooks_for("cus_warn") == [], "warning must not go to the webhook"
    # The warning about the same subscription was inhibited by the critical one: one email (checked above, it
    # would be two otherwise) and only the critical alert on the webhook.
    assert [a["severity"] for a in hooks_for("cus_inh")] == ["critical"]
    # Labels travel intact: the webhook names the detector and customer.
    (crit,) = hooks_for("cus_crit")
    assert crit["detector"] == "duplicate_charge" and crit["currency"] == "usd"
