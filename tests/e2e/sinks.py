"""Where Alertmanager's notifications land in e2e runs: a real SMTP server (aiosmtpd) and a real aiohttp receiver.

Both run in background threads so the tests (and bench/e2e_latency.py) can stay plain synchronous code that polls.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller


@dataclass
class Mail:
    received: float
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    text: str  # every text part, decoded, joined


@dataclass
class Notification:
    received: float
    path: str
    payload: dict[str, Any]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return self.payload.get("alerts", [])


class _SmtpHandler:
    def __init__(self, sink: MailSink):
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        parts = []
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        self.sink._add(
            Mail(time.time(), envelope.mail_from, list(envelope.rcpt_tos), str(msg["Subject"] or ""), "\n".join(parts))
        )
        return "250 Message accepted for delivery"


class MailSink:
    """A real SMTP server on 127.0.0.1 that keeps every message it accepts."""

    def __init__(self, port: int = 0):
        self._lock = threading.Lock()
        self._mails: list[Mail] = []
        self.controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=port or _free_port())
        self.port = self.controller.port

    def _add(self, mail: Mail) -> None:
        with self._lock:
            self._mails.append(mail)

    @property
    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self._mails)

    def start(self) -> MailSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class WebhookSink:
    """A real aiohttp server on 127.0.0.1 that keeps every JSON body POSTed to it, in its own thread and loop."""

    def __init__(self, port: int = 0):
        self.port = port or _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._items: list[Notification] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-sink", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400)
        with self._lock:
            self._items.append(Notification(time.time(), request.path, payload))
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @property
    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._items)

    def start(self) -> WebhookSink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _free_port() -> int:
    from tests.e2e.e2e_stack import free_port

    return free_port()


def alerts_matching(notifications: list[Notification], **labels: str) -> list[tuple[Notification, dict[str, Any]]]:
    """(notification, alert) pairs whose alert carries all of `labels`."""
    out = []
    for note in notifications:
        for alert in note.alerts:
            if all(alert.get("labels", {}).get(k) == v for k, v in labels.items()):
                out.append((note, alert))
    return out
