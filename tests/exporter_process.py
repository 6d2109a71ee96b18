"""A real `billingwatch serve` on free loopback ports, for tests that need only the exporter (no Prometheus)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import SECRET, sign
from tests.e2e.e2e_stack import VENV_BILLINGWATCH, Proc, free_port, http, wait_for


@dataclass
class Exporter:
    proc: Proc
    webhook_url: str
    metrics_url: str

    def post(self, event: dict[str, Any], secret: str = SECRET) -> tuple[int, bytes]:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)}
        return http("POST", self.webhook_url, body, headers)


@contextmanager
def running_exporter(work: Path, env: dict[str, str], *args: str) -> Iterator[Exporter]:
    """Start it with `env` and extra `serve` args, wait until ready; on exit SIGTERM it and require exit 0."""
    webhook, metrics = free_port(), free_port()
    argv = [str(VENV_BILLINGWATCH), "serve", "--state", str(work / "state.sqlite3"),
            "--listen", f"127.0.0.1:{webhook}", "--metrics-listen", f"127.0.0.1:{metrics}", *args]
    proc = Proc("exporter", argv, work, env)
    proc.start()
    try:
        metrics_url = f"http://127.0.0.1:{metrics}"
        wait_for(lambda: http("GET", f"{metrics_url}/readyz")[0] == 200, 20, "the exporter to be ready")
        yield Exporter(proc, f"http://127.0.0.1:{webhook}/webhooks/stripe", metrics_url)
    finally:
        assert proc.stop() == 0, proc.log_tail()
