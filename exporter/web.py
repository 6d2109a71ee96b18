"""The two aiohttp applications: the public webhook listener and the private metrics/API listener."""

from __future__ import annotations

import html
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from stripe import SignatureVerificationError, WebhookSignature

from exporter import __version__, logs
from exporter.ingest import Ingestor, event_shape_error
from exporter.metrics import Metrics
from exporter.state import StateUnavailable

SIGNATURE_HEADER = "Stripe-Signature"
WEBHOOK_PATH = "/webhooks/stripe"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class SignatureVerifier:
    """Checks the Stripe-Signature header against every configured secret with the stripe SDK."""

    def __init__(self, secrets: list[str], tolerance: int):
        if not secrets:
            raise ValueError("no webhook secret configured")
        self.secrets = list(secrets)
        self.tolerance = tolerance

    def verify(self, body: bytes, header: str | None) -> bool:
        if not header:
            return False
        for secret in self.secrets:
            try:
                # Bound at import: `stripe.X` goes through the SDK's lazy module __getattr__ (an import_module
                # call) on every access, a measurable cost per webhook.
                WebhookSignature.verify_header(body, header, secret, self.tolerance)
                return True
            except SignatureVerificationError:
                continue
            except Exception:
                # Odd bytes (non-UTF-8 body, non-ASCII signature) make the SDK raise other errors: not verified.
                return False
        return False


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def webhook_app(
    ingestor: Ingestor,
    verifier: SignatureVerifier,
    *,
    max_body_bytes: int,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    metrics: Metrics = ingestor.metrics
    state = ingestor.state
    counts = {
        o: metrics.webhook_requests.labels(o) for o in ("invalid_signature", "invalid_payload", "too_large")
    }
    debug = logs.log.isEnabledFor(logging.DEBUG)
    answers = {o: orjson.dumps({"received": True, "outcome": o}) for o in ("accepted", "duplicate", "ignored")}

    def reject(outcome: str, status: int, message: str) -> web.Response:
        counts[outcome].inc()
        if debug:
            logs.event(logging.DEBUG, "webhook rejected", outcome=outcome, status=status)
        resp = _json({"error": message}, status=status)
        if outcome == "too_large":
            # The unread remainder of the body would otherwise be parsed as the next request.
            resp.force_close()
        return resp

    async def handle(request: web.Request) -> web.Response:
        length = request.content_length
        if length is not None and length > max_body_bytes:
            return reject("too_large", 413, f"body larger than {max_body_bytes} bytes")
        body = await _read_limited(request, max_body_bytes)
        if body is None:
            return reject("too_large", 413, f"body larger than {max_body_bytes} bytes")
        if not verifier.verify(body, request.headers.get(SIGNATURE_HEADER)):
            return reject("invalid_signature", 400, "missing, malformed, stale or non-matching signature")
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return reject("invalid_payload", 400, "body is not JSON")
        problem = event_shape_error(event)
        if problem is not None:
            return reject("invalid_payload", 400, f"not a Stripe event: {problem}")
        received = clock()
        try:
            outcome = ingestor.admit(event, received)
            # Answered only once the id is on disk (group commit: exporter/state.py), so an acknowledged event
            # is never forgotten; if it cannot be saved, 503 makes Stripe deliver it again later.
            commit = state.commit_of(event["id"])
            if commit is not None:
                await commit
        except (StateUnavailable, sqlite3.Error):
            ingestor.unavailable()
            return _json({"error": "state cannot be saved; retry later"}, status=503)
        ingestor.complete(event, received, outcome)
        if debug:
            logs.event(logging.DEBUG, "webhook", outcome=outcome, type=event["type"][:100])
        return web.Response(body=answers[outcome], content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(WEBHOOK_PATH, handle)
    app.router.add_get("/healthz", healthz)
    return app


_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BillingWatch</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .2rem}}</style></head>
<body><h1>BillingWatch {version}</h1>
<p>Stripe billing monitor. Webhooks are received on the public listener at <code>{webhook}</code>.</p>
<ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="healthz">/healthz</a>: liveness; <a href="readyz">/readyz</a>: readiness</li>
<li><a href="api/v1/events/recent">/api/v1/events/recent</a>: the last events received (no customer data)</li>
{extra}
</ul></body></html>
"""


def private_app(
    ingestor: Ingestor,
    *,
    ready: Callable[[], bool],
    extra_routes: list[tuple[str, str, Any, str]] | None = None,
) -> web.Application:
    """extra_routes: (method, path, handler, description) added by detectors and other subsystems."""
    metrics = ingestor.metrics
    extra_routes = extra_routes or []
    links = "\n".join(
        f'<li><a href="{html.escape(path.lstrip("/"))}">{html.escape(path)}</a>: {html.escape(desc)}</li>'
        for method, path, _, desc in extra_routes
        if method == "GET"
    )
    landing = _LANDING.format(version=__version__, webhook=WEBHOOK_PATH, extra=links)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=landing, content_type="text/html")

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return _json({"status": "ready"})
        return _json({"status": "not ready"}, status=503)

    async def recent(request: web.Request) -> web.Response:
        raw = request.query.get("limit", "50")
        size = ingestor.recent.maxlen or 0
        try:
            limit = int(raw)
        except ValueError:
            return _json({"error": f"limit must be an integer from 1 to {size}"}, status=400)
        if not 1 <= limit <= size:
            return _json({"error": f"limit must be an integer from 1 to {size}"}, status=400)
        items = list(ingestor.recent)[-limit:]
        items.reverse()
        return _json({"events": items})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/events/recent", recent)
    for method, path, handler, _ in extra_routes:
        app.router.add_route(method, path, handler)
    return app
