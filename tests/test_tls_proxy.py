"""docs/production.md's TLS termination, for real: Debian's nginx runs contrib/nginx/billingwatch.conf (only the
listen address, the certificate and the upstream port changed) with a self-signed certificate on loopback, in
front of a real `billingwatch serve`. A signed event over HTTPS is verified and counted (the body and the
Stripe-Signature header pass untouched), a bad signature and an oversized body get the exporter's own answers, and
nothing but the webhook path is reachable through the proxy."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from exporter import samples
from tests.conftest import REPO, SECRET, make_event, require_binary, sign
from tests.e2e.e2e_stack import Proc, free_port, http, wait_for
from tests.exporter_process import running_exporter

SITE = REPO / "contrib" / "nginx" / "billingwatch.conf"


@dataclass
class Proxy:
    port: int
    context: ssl.SSLContext
    metrics_url: str

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        conn = HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def _site_for_test(port: int, cert: Path, key: Path, upstream: int) -> str:
    """The shipped server block with its addresses and certificate replaced; each replacement must apply."""
    text = SITE.read_text()
    for old, new in (
        ("    listen 443 ssl;\n", f"    listen 127.0.0.1:{port} ssl;\n"),
        ("    listen [::]:443 ssl;\n", ""),
        ("/etc/letsencrypt/live/billing.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/billing.example.com/privkey.pem", str(key)),
        ("proxy_pass http://127.0.0.1:8000;", f"proxy_pass http://127.0.0.1:{upstream};"),
    ):
        assert old in text, f"{SITE.name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx = require_binary("nginx")
    openssl = require_binary("openssl")
    work = tmp_path_factory.mktemp("tls")
    cert, key = work / "cert.pem", work / "key.pem"
    subj = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subj, "-keyout", str(key),
         "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLINGWATCH_"))}
    env["STRIPE_WEBHOOK_SECRET"] = SECRET
    stack = ExitStack()
    exporter = stack.enter_context(running_exporter(work, env))
    webhook = urlsplit(exporter.webhook_url).port
    (work / "site.conf").write_text(_site_for_test(port, cert, key, webhook))
    temp = {name: work / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    # A minimal main config around the shipped server block: one foreground process, everything under `work`.
    (work / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {work / 'nginx.pid'};\nerror_log {work / 'error.log'} info;\n"
        "events {}\nhttp {\n  access_log off;\n"
        + "".join(f"  {name}_temp_path {path};\n" for name, path in temp.items())
        + f"  include {work / 'site.conf'};\n}}\n"
    )
    check = subprocess.run(
        [nginx, "-t", "-p", str(work), "-c", str(work / "nginx.conf")], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stderr
    server = Proc("nginx", [nginx, "-p", str(work), "-c", str(work / "nginx.conf")], work)
    context = ssl.create_default_context(cafile=str(cert))
    server.start()
    try:
        result = Proxy(port, context, exporter.metrics_url)
        wait_for(lambda: result.request("GET", "/")[0] == 404, 20, "nginx on TLS")
        yield result
    finally:
        server.stop()
        stack.close()
        print((work / "error.log").read_text()[-2000:])


def _event() -> bytes:
    return json.dumps(make_event("charge.succeeded", samples.charge(amount=2_500, currency="eur"))).encode()


def test_a_signed_event_over_https_is_verified_and_counted(proxy: Proxy) -> None:
    body = _event()
    status, answer = proxy.request(
        "POST", "/webhooks/stripe", body, {"Content-Type": "application/json", "Stripe-Signature": sign(body)}
    )
    assert status == 200 and json.loads(answer)["outcome"] == "accepted", answer
    _, metrics = http("GET", f"{proxy.metrics_url}/metrics")
    assert 'billingwatch_webhook_requests_total{outcome="accepted"} 1.0' in metrics.decode()


def test_the_exporter_answers_bad_input_itself_through_the_proxy(proxy: Proxy) -> None:
    body = _event()
    status, answer = proxy.request(
        "POST",
        "/webhooks/stripe",
        body,
        {"Content-Type": "application/json", "Stripe-Signature": sign(body, "whsec_wrong")},
    )
    assert status == 400 and b"signature" in answer
    big = b"{" + b" " * (1024 * 1024 + 10) + b"}"
    status, answer = proxy.request("POST", "/webhooks/stripe", big, {"Stripe-Signature": sign(big)})
    assert status == 413 and "larger than" in json.loads(answer)["error"]  # the exporter's JSON, not nginx's page
    _, metrics = http("GET", f"{proxy.metrics_url}/metrics")
    assert 'billingwatch_webhook_requests_total{outcome="too_large"} 1.0' in metrics.decode()


def test_only_the_webhook_path_is_public_and_only_over_tls(proxy: Proxy) -> None:
    for path in ("/metrics", "/api/v1/anomalies", "/runbook", "/healthz", "/webhooks/stripe/../../metrics"):
        assert proxy.request("GET", path)[0] == 404, path
    # Plain HTTP on the TLS port is refused (nginx answers 400 "plain HTTP request was sent to HTTPS port").
    conn = HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/webhooks/stripe")
    assert conn.getresponse().status == 400
    conn.close()
