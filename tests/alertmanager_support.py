"""A real Alertmanager on a loopback port, and real HTTP and SMTP servers catching what it sends.

Shared by tests/test_alertmanager_routing.py (the shipped routes, receivers and email template) and
tests/test_alertmanager_receivers.py (the contrib/ receiver examples). Nothing is mocked: the binary is Debian's
prometheus-alertmanager, the catchers are real servers the test reads after the fact.
"""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary
from tests.e2e.e2e_stack import free_port, wait_for

__all__ = ["free_port", "wait_for"]  # re-exported for the Alertmanager tests

@dataclass
class Mail:
    subject: str
    text: str  # the text/plain part
    html: str  # the text/html part


class Mailbox:
    """aiosmtpd handler keeping each message's subject and bodies."""

    def __init__(self) -> None:
        self.messages: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        self.messages.append(
            Mail(
                str(msg["Subject"] or ""),
                text.get_content().replace("\r\n", "\n") if text is not None else "",
                html.get_content() if html is not None else "",
            )
        )
        return "250 OK"


@dataclass
class Post:
    path: str
    body: dict[str, Any]


class HttpCatcher:
    """A loopback HTTP server that records every JSON POST (Alertmanager's webhook, Slack, Discord payloads)."""

    def __init__(self) -> None:
        posts: list[Post] = []
        self.posts = posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append(Post(self.path, json.loads(body)))
                # Discord answers 204, Slack 200 "ok"; Alertmanager accepts any 2xx.
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[dict[str, Any]]:
        return [p.body for p in self.posts if p.path == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Alertmanager:
    def __init__(self, url: str):
        self.url = url

    def post(self, alerts: list[dict[str, Any]]) -> None:
        """POST alerts to the v2 API, as Prometheus does; each item is {"labels": ..., "annotations": ...}."""
        req = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200


@contextmanager
def running_alertmanager(config: dict[str, Any], work: Path) -> Iterator[Alertmanager]:
    """Start Debian's prometheus-alertmanager on `config` (its external URL is its own loopback address)."""
    binary = require_binary("prometheus-alertmanager")
    work.mkdir(parents=True, exist_ok=True)
    path = work / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "alertmanager.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.external-url={url}/",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
                    pytest.fail("alertmanager did not start: " + log_path.read_text()[-2000:])
                time.sleep(0.1)
            yield Alertmanager(url)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
