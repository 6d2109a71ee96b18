"""A running exporter Service on free loopback ports, and a client that posts signed events to it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from exporter.config import Config, build_config
from exporter.service import Service
from tests.conftest import SECRET, sign


def sample_value(registry: Any, name: str, labels: dict[str, str] | None = None) -> float | None:
    """A sample's value. Business series carry `livemode` and the test builders (exporter.samples, make_event)
    make test-mode events unless told otherwise: a lookup that names no mode finds the test-mode series."""
    labels = labels or {}
    value = registry.get_sample_value(name, labels)
    if value is None and "livemode" not in labels:
        value = registry.get_sample_value(name, {**labels, "livemode": "false"})
    return value


def make_config(state_path: Path, **sections: dict[str, Any]) -> Config:
    doc: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0"},
        "stripe": {"webhook_secrets": [SECRET]},
        "state": {"path": str(state_path)},
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return build_config(doc)


class Exporter:
    def __init__(self, service: Service, session: aiohttp.ClientSession):
        self.service = service
        self.session = session
        self.webhook_url = f"http://127.0.0.1:{service.webhook_port}/webhooks/stripe"
        self.base = f"http://127.0.0.1:{service.webhook_port}"
        self.private = f"http://127.0.0.1:{service.metrics_port}"

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return sample_value(self.service.metrics.registry, name, labels)

    async def post_raw(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.webhook_url, data=body, headers=headers or {}) as resp:
            raw = await resp.read()
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = {"raw": raw.decode(errors="replace")}
            return resp.status, data

    async def post_event(self, event: dict[str, Any], *, secret: str = SECRET, timestamp: int | None = None) -> int:
        body = orjson.dumps(event)
        status, _ = await self.post_raw(body, {"Stripe-Signature": sign(body, secret, timestamp),
                                               "Content-Type": "application/json"})
        return status


@contextlib.asynccontextmanager
async def running_exporter(config: Config, clock: Any = time.time) -> AsyncIterator[Exporter]:
    service = Service(config, clock=clock)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Exporter(service, session)
    finally:
        await service.stop()
