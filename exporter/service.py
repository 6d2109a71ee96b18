"""The running exporter: builds everything from a Config, serves both listeners, shuts down cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable

from aiohttp import web

from exporter import __version__, logs
from exporter.accounting import REFUNDS_NS, REFUNDS_RETENTION_SECONDS
from exporter.config import Config, parse_hostport
from exporter.detectors.registry import build_detectors
from exporter.ingest import Ingestor
from exporter.metrics import CallbackCounter, Metrics
from exporter.poller import build_poller
from exporter.state import StateStore, StateUnavailable
from exporter.web import SignatureVerifier, private_app, webhook_app

PRUNE_INTERVAL_SECONDS = 3600.0


class Service:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self.metrics = Metrics(max_label_values=config.metrics.max_label_values)
        self.metrics.build_info.labels(__version__).set(1)
        self.state = StateStore(config.state.path, retention_seconds=config.state.retention_seconds)
        CallbackCounter(
            "billingwatch_state_seen_db_lookups",
            "Dedupe lookups the in-memory filter could not answer, so SQLite was read: redeliveries and the "
            "filter's false positives (much more than the duplicates means the filter is overfull).",
            lambda: self.state.db_lookups,
            self.metrics.registry,
        )
        CallbackCounter(
            "billingwatch_state_write_errors",
            "State write transactions that failed (disk full, read-only, locked by another process, I/O error); "
            "while they fail, webhooks are answered 503 and /readyz is not ready.",
            lambda: self.state.write_errors,
            self.metrics.registry,
        )
        self.metrics.state_writable.set_function(lambda: 1.0 if self.state.writable else 0.0)
        self.detector_set = build_detectors(config, self.metrics.registry, self.state)
        self.ingestor = Ingestor(
            self.metrics,
            self.state,
            mode=config.stripe.mode,
            detectors=self.detector_set.detectors,
            recent_size=config.server.recent_events,
        )
        self.verifier = SignatureVerifier(config.stripe.webhook_secrets, config.stripe.tolerance_seconds)
        # Missed-delivery poller (exporter/poller.py): only when STRIPE_API_KEY is set.
        self.poller = build_poller(
            config, self.metrics.registry, self.state, self.ingestor, env=os.environ, clock=clock
        )
        self._poller_task: asyncio.Task[None] | None = None
        self._runners: list[web.AppRunner] = []
        self._sites: list[web.TCPSite] = []
        self._ready = False
        self._housekeeping: asyncio.Task[None] | None = None
        self.webhook_port: int | None = None
        self.metrics_port: int | None = None

    async def start(self) -> None:
        cfg = self.config
        public = webhook_app(
            self.ingestor, self.verifier, max_body_bytes=cfg.server.max_body_bytes, clock=self.clock
        )
        private = private_app(
            self.ingestor, ready=lambda: self._ready and self.state.writable, extra_routes=self.detector_set.routes
        )
        # Counters, accounting and detectors run right after each answer, batched per loop iteration (ingest.py).
        self.ingestor.process_later_with(asyncio.get_running_loop().call_soon)
        self.webhook_port = await self._serve(public, cfg.server.listen)
        self.metrics_port = await self._serve(private, cfg.server.metrics_listen)
        self._housekeeping = asyncio.create_task(self._housekeep())
        if self.poller is not None:
            self._poller_task = asyncio.create_task(self.poller.run())
        self._ready = True
        logs.event(
            logging.INFO,
            "billingwatch started",
            version=__version__,
            webhook=f"{cfg.server.listen} POST /webhooks/stripe",
            metrics=cfg.server.metrics_listen,
            secrets=len(cfg.stripe.webhook_secrets),
            mode=cfg.stripe.mode,
            state=cfg.state.path,
            # Read into the dedupe filter at start: about 1.7 s per million ids on a 2-core machine.
            seen_ids_loaded=self.state.loaded_ids,
        )

    async def _serve(self, app: web.Application, hostport: str) -> int:
        host, port = parse_hostport(hostport)
        # lingering_time: after refusing an oversized body, aiohttp drains what the client keeps sending for this
        # long before closing; its 10 s default lets one slow client hold a connection (and shutdown) for 10 s.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.config.server.shutdown_timeout_seconds, lingering_time=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        self._sites.append(site)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return sockets[0].getsockname()[1] if sockets else port

    async def _housekeep(self) -> None:
        interval = self.config.state.flush_interval_seconds
        next_prune = 0.0
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            try:
                self.ingestor.drain()
                for detector in self.ingestor.detectors:
                    self.ingestor.tick_detector(detector, now)
                    # Webhooks that arrived meanwhile are answered between two ticks, not after all of them.
                    await asyncio.sleep(0)
                with self.metrics.state_flush_seconds.time():
                    # Written from a worker thread: webhooks keep being answered during the write.
                    await self.state.flush_in_background(now)
                await self.state.checkpoint()
                if now >= next_prune:
                    next_prune = now + PRUNE_INTERVAL_SECONDS
                    self.state.prune_namespace(REFUNDS_NS, now - REFUNDS_RETENTION_SECONDS)
                    _, kept = await self.state.prune_in_background(now)
                    self.metrics.state_seen_ids.set(kept)
            except StateUnavailable:
                pass  # logged once per episode by the store, counted, and /readyz says not ready
            except Exception:
                logs.error("housekeeping failed")

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then flush and close the state."""
        self._ready = False
        for site in self._sites:
            await site.stop()
        for runner in self._runners:
            await runner.cleanup()
        self.ingestor.process_later_with(None)  # processes what is still queued
        if self._poller_task is not None:
            self._poller_task.cancel()
            try:
                await self._poller_task
            except asyncio.CancelledError:
                pass
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            try:
                await self._housekeeping
            except asyncio.CancelledError:
                pass
        self.ingestor.tick(self.clock())
        try:
            self.state.close()
        except StateUnavailable as exc:
            # Every acknowledged id is already on disk; what is lost here is the last detector state.
            logs.event(logging.ERROR, "state could not be saved at shutdown", path=self.config.state.path,
                       error=str(exc)[:300])
        logs.event(logging.INFO, "billingwatch stopped")


# Young collections every 700 net allocations are mostly wasted on webhook traffic: an event's ~100 containers
# are freed by reference counting right after it is handled. Fewer, larger young collections (docs/benchmark.md).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """For the serving process only: startup objects (modules, config, metrics) are never garbage, so freeze
    them out of every future collection, and space young collections out, which makes the older-generation
    collections (they walk every object the detectors hold, pausing the event loop for tens of ms) about 30
    times rarer too. Measured with `python -m bench.ingest`: see docs/benchmark.md."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)


async def serve_forever(config: Config) -> None:
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    tune_gc()
    try:
        await stop.wait()
    finally:
        await service.stop()
