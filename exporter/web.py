"""The two aiohttp applications: the public webhook listener and the private metrics/API listener."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from stripe import SignatureVerificationError, WebhookSignature

from exporter import logs
from exporter.http_guard import ConnectionGuard
from exporter.ingest import Ingestor, event_shape_error
from exporter.landing import LandingPage, iso
from exporter.metrics import Metrics
from exporter.scrape import ScrapeHandler
from exporter.state import StateUnavailable
from exporter.thin_events import ThinEvents, is_thin

SIGNATURE_HEADER = "Stripe-Signature"
WEBHOOK_PATH = "/webhooks/stripe"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


OK = "ok"
MISSING_SIGNATURE = "missing_signature"
STALE_SIGNATURE = "stale_signature"
INVALID_SIGNATURE = "invalid_signature"


def signature_timestamp(header: str | None) -> int | None:
    """The `t=` of a Stripe-Signature header that also has a `v1=`, or None when the header is missing or cannot
    be read as one (scanners, probes). Same reading as the SDK: the first `t`, any number of `v1`."""
    if not header:
        return None
    timestamp: int | None = None
    has_v1 = False
    seen_t = False
    for item in header.split(","):
        key, sep, value = item.partition("=")
        if key == "t" and not seen_t:
            seen_t = True
            try:
                timestamp = int(value) if sep else None
            except ValueError:
                return None
        elif key == "v1" and sep:
            has_v1 = True
    return timestamp if has_v1 else None


class SignatureVerifier:
    """Checks the Stripe-Signature header against every configured secret with the stripe SDK.

    `check()` tells apart a header that is not one (missing_signature), a signature made with none of the secrets
    (invalid_signature: a wrong secret or a broken rotation) and a matching signature whose timestamp is older
    than the tolerance (stale_signature: this host's clock, or a replay). The SDK's own age check raises the same
    error as a mismatch, so the signature is verified with the SDK without a tolerance and the age is compared
    here, with the SDK's rule (only timestamps older than the tolerance are refused; future ones pass)."""

    def __init__(self, secrets: list[str], tolerance: int, clock: Callable[[], float] = time.time):
        if not secrets:
            raise ValueError("no webhook secret configured")
        if tolerance <= 0:
            # The SDK reads a tolerance of 0 as "no age check": a signature from 1970 would verify.
            raise ValueError("the signature tolerance must be positive")
        self.secrets = list(secrets)
        self.tolerance = tolerance
        self.clock = clock
        self.last_age = 0.0  # age in seconds of the last stale signature, for the log line

    def check(self, body: bytes, header: str | None) -> str:
        if not header:
            return MISSING_SIGNATURE
        for secret in self.secrets:
            try:
                # Bound at import: `stripe.X` goes through the SDK's lazy module __getattr__ (an import_module
                # call) on every access, a measurable cost per webhook.
                WebhookSignature.verify_header(body, header, secret, None)
            except SignatureVerificationError:
                continue
            except Exception:
                # Odd bytes (non-UTF-8 body, non-ASCII signature) make the SDK raise other errors: not verified.
                return INVALID_SIGNATURE
            timestamp = signature_timestamp(header)
            if timestamp is None:  # the SDK read a `t` and a `v1` that our reading does not see
                return INVALID_SIGNATURE
            age = self.clock() - timestamp
            if age > self.tolerance:
                self.last_age = age
                return STALE_SIGNATURE
            return OK
        # Rejected by every secret: a header that is not a signature at all, or one made with another secret.
        return MISSING_SIGNATURE if signature_timestamp(header) is None else INVALID_SIGNATURE

    def verify(self, body: bytes, header: str | None) -> bool:
        return self.check(body, header) == OK


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
    guard: ConnectionGuard,
    on_malformed: Callable[[], None],
    clock: Callable[[], float] = time.time,
    stripe_client: Any | None = None,
) -> web.Application:
    metrics: Metrics = ingestor.metrics
    thin = ThinEvents(ingestor, stripe_client, clock=clock)
    counts = {
        o: metrics.webhook_requests.labels(o)
        for o in (INVALID_SIGNATURE, MISSING_SIGNATURE, STALE_SIGNATURE, "invalid_payload", "too_large")
    }
    debug = logs.log.isEnabledFor(logging.DEBUG)
    answers = {o: orjson.dumps({"received": True, "outcome": o}) for o in ("accepted", "duplicate", "ignored")}
    stale_log = logs.RateLimited(60.0)

    def reject(outcome: str, status: int, message: str) -> web.Response:
        counts[outcome].inc()
        if debug:
            logs.event(logging.DEBUG, "webhook rejected", outcome=outcome, status=status)
        # The outcome is the same word the metrics use, so that a sender (simulate, replay, a support script) can
        # tell a wrong secret from a bad payload without parsing the message.
        resp = _json({"error": message, "outcome": outcome}, status=status)
        if outcome == "too_large":
            # The unread remainder of the body would otherwise be parsed as the next request.
            resp.force_close()
        return resp

    def log_stale() -> None:
        held = stale_log.allow()
        if held is not None:
            logs.event(
                logging.WARNING,
                "webhook signature matches a secret but is older than the tolerance: check this host's clock "
                "(NTP) against Stripe's, or someone is replaying old deliveries",
                age_seconds=round(verifier.last_age, 1),
                tolerance_seconds=verifier.tolerance,
                suppressed_since_last=held,
            )

    async def read_body(request: web.Request) -> bytes | web.Response | None:
        try:
            if request.content.is_eof():
                # The whole body came with the head (a Stripe event usually does): nothing to wait for, and no
                # deadline to arm (a timer per request is a measurable share of the per-webhook cost).
                return await _read_limited(request, max_body_bytes)
            async with guard.body_deadline():
                return await _read_limited(request, max_body_bytes)
        except TimeoutError:
            guard.count("body_timeout")
            resp = _json({"error": "request body not received in time"}, status=408)
            resp.force_close()
            return resp
        except (ConnectionError, HttpProcessingError):
            # A broken chunked encoding or a client that went away mid-body: a malformed request, not our error.
            on_malformed()
            resp = _json({"error": "malformed request body"}, status=400)
            resp.force_close()
            return resp

    async def handle(request: web.Request) -> web.Response:
        transport = request.transport
        guard.request_started(transport)
        try:
            length = request.content_length
            if length is not None and length > max_body_bytes:
                return reject("too_large", 413, f"body larger than {max_body_bytes} bytes")
            body = await read_body(request)
            if body is None:
                return reject("too_large", 413, f"body larger than {max_body_bytes} bytes")
            if isinstance(body, web.Response):
                return body
            verdict = verifier.check(body, request.headers.get(SIGNATURE_HEADER))
            if verdict != OK:
                if verdict == STALE_SIGNATURE:
                    log_stale()
                return reject(verdict, 400, SIGNATURE_ERRORS[verdict])
            try:
                event = orjson.loads(body)
            except orjson.JSONDecodeError:
                return reject("invalid_payload", 400, "body is not JSON")
            if is_thin(event):
                outcome, status = await thin.receive(event, clock())
                return _json({"received": status == 200, "outcome": outcome}, status=status)
            problem = event_shape_error(event)
            if problem is not None:
                return reject("invalid_payload", 400, f"not a Stripe event: {problem}")
            try:
                # Answered only once the id is on disk; if it cannot be saved, 503 makes Stripe deliver it again.
                outcome = await ingestor.ingest_acknowledged(event, clock())
            except (StateUnavailable, sqlite3.Error):
                ingestor.unavailable()
                return _json({"error": "state cannot be saved; retry later", "outcome": "unavailable"}, status=503)
            if debug:
                logs.event(logging.DEBUG, "webhook", outcome=outcome, type=event["type"][:100])
            return web.Response(body=answers[outcome], content_type="application/json")
        finally:
            guard.request_finished(transport)

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(WEBHOOK_PATH, handle)
    app.router.add_get("/healthz", healthz)
    return app


SIGNATURE_ERRORS = {
    MISSING_SIGNATURE: "missing or unreadable signature header (Stripe-Signature)",
    STALE_SIGNATURE: "signature timestamp older than the tolerance (check this host's clock)",
    INVALID_SIGNATURE: "signature matches no configured webhook secret",
}


def private_app(
    ingestor: Ingestor,
    *,
    ready: Callable[[], bool],
    landing: LandingPage,
    extra_routes: list[tuple[str, str, Any, str]] | None = None,
    middlewares: list[Any] | None = None,
) -> web.Application:
    """extra_routes: (method, path, handler, description) added by detectors and other subsystems."""
    metrics = ingestor.metrics
    extra_routes = extra_routes or []

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=landing.render(), content_type="text/html")

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
        items = [
            {**item, "created_iso": iso(item.get("created")), "received_iso": iso(item.get("received"))}
            for item in reversed(list(ingestor.recent)[-limit:])
        ]
        return _json({"events": items})

    app = web.Application(middlewares=middlewares or [])
    app.router.add_get("/", index)
    scrape = ScrapeHandler(metrics.registry)
    app.router.add_get("/metrics", scrape.handle)

    async def hurry_scrapes(_: web.Application) -> None:
        scrape.hurry()

    async def close_scrape(_: web.Application) -> None:
        scrape.close()

    app.on_shutdown.append(hurry_scrapes)
    app.on_cleanup.append(close_scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/events/recent", recent)
    for method, path, handler, _ in extra_routes:
        app.router.add_route(method, path, handler)
    return app
