"""Posting events to a webhook URL the way Stripe does: raw JSON body, a fresh `Stripe-Signature` per delivery.

Used by `simulate --url` and `replay`. Deliveries are scheduled at offsets from the start (seconds, already divided
by any speed-up) and sent by a bounded pool of concurrent requests, so one slow answer does not delay the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from exporter import __version__
from exporter.samples import sign

PROGRESS_EVERY_SECONDS = 5.0


@dataclass
class SendStats:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    # The exporter's own word on each delivery (`outcome` in its JSON answer): accepted, duplicate, ...
    outcomes: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    latencies: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("2"))

    def line(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        codes = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        return f"sent {self.sent} ({self.sent / elapsed:.1f}/s) HTTP {codes or '-'} errors {self.errors}"

    def outcome_line(self) -> str:
        return ", ".join(f"{outcome} {n}" for outcome, n in self.outcomes.most_common()) or "no answers"

    def hint(self) -> str | None:
        """What a run in which nothing was accepted most likely means, in the user's terms."""
        if self.sent == 0 or self.ok:
            return None
        if self.outcomes.get("invalid_signature", 0) >= max(1, self.sent // 2):
            return (
                "every delivery was refused as invalid_signature: the secret used here (--secret or "
                "STRIPE_WEBHOOK_SECRET) is not the one the exporter was started with"
            )
        if self.errors >= max(1, self.sent // 2):
            return "most deliveries got no answer: is the exporter running and listening at that URL?"
        return None


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


async def _schedule(items: Iterable[tuple[float, dict[str, Any]]], start: float) -> AsyncIterator[dict[str, Any]]:
    for offset, event in items:
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield event


async def send_all(
    items: Iterable[tuple[float, dict[str, Any]]],
    *,
    url: str,
    secret: str,
    concurrency: int = 16,
    log: Callable[[str], None] = lambda _m: None,
    as_fast_as_possible: bool = False,
    total: int | None = None,
    planned_seconds: float | None = None,
) -> SendStats:
    """POST each event at its offset (seconds from now; ignored with as_fast_as_possible). With `total` (and
    `planned_seconds`, the last offset) progress lines show how far the run is and when it should end."""
    stats = SendStats()
    limit = asyncio.Semaphore(concurrency)
    headers_base = {"Content-Type": "application/json", "User-Agent": f"billingwatch-sim/{__version__}"}
    tasks: set[asyncio.Task[None]] = set()
    next_report = time.monotonic() + PROGRESS_EVERY_SECONDS

    async def post(session: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        try:
            body = orjson.dumps(event)
            headers = dict(headers_base)
            headers["Stripe-Signature"] = sign(body, secret)  # signed at send time, as Stripe does per attempt
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                raw = await resp.read()
                stats.statuses[str(resp.status)] += 1
            try:
                answer = orjson.loads(raw)
            except orjson.JSONDecodeError:
                answer = None
            outcome = answer.get("outcome") if isinstance(answer, dict) else None
            stats.outcomes[str(outcome) if outcome else f"HTTP {resp.status}"] += 1
            stats.latencies.append(time.perf_counter() - t0)
        except (TimeoutError, aiohttp.ClientError, OSError):
            stats.errors += 1
        finally:
            limit.release()

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        source: Any
        if as_fast_as_possible:
            source = _immediate(items)
        else:
            source = _schedule(items, time.monotonic())
        async for event in source:
            await limit.acquire()
            stats.sent += 1
            stats.types[str(event.get("type"))] += 1
            task = asyncio.create_task(post(session, event))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_EVERY_SECONDS
                log(f"  {stats.line()}{_progress(stats, total, planned_seconds, as_fast_as_possible)}")
        if tasks:
            await asyncio.gather(*tasks)
    return stats


def _progress(stats: SendStats, total: int | None, planned: float | None, as_fast_as_possible: bool) -> str:
    if not total:
        return ""
    elapsed = time.monotonic() - stats.started
    if as_fast_as_possible or not planned:
        remaining = (total - stats.sent) * elapsed / max(1, stats.sent)
    else:
        remaining = planned - elapsed
    return f"; {stats.sent}/{total} ({stats.sent / total:.0%}), ETA {_eta(remaining)}"


async def _immediate(items: Iterable[tuple[float, dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
    for i, (_offset, event) in enumerate(items):
        if i % 256 == 0:
            await asyncio.sleep(0)
        yield event


def latency_summary(stats: SendStats) -> str:
    if not stats.latencies:
        return "no answers"
    lat = sorted(stats.latencies)
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
