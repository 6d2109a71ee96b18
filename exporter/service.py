"""The running exporter: builds everything from a Config, serves both listeners, shuts down cleanly."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Callable
from ssl import SSLContext
from typing import Any

from aiohttp import web
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from exporter import __version__, http_logs, logs, runbook
from exporter.config import Config, parse_hostport, resolve_secret_files
from exporter.http_guard import ConnectionGuard, connection_cap, open_files_limit, raise_fd_limit
from exporter.http_metrics import LISTENERS, HttpMetrics
from exporter.landing import LandingPage
from exporter.state import StateUnavailable
from exporter.web import WEBHOOK_PATH, SignatureVerifier, private_app, webhook_app
from exporter.webconfig import BasicAuth, add_headers, load_web_config
from exporter.wiring import PRUNE_INTERVAL_SECONDS, wire

# Connections waiting to be accepted. asyncio's default (100) overflows under a connection flood, and a dropped
# SYN costs a real client a one-second retransmission; the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024


class Service:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        # Missed-delivery poller (exporter/poller.py): only when STRIPE_API_KEY is set.
        self.wiring = wire(config, env=resolve_secret_files(os.environ), clock=clock)
        self.metrics = self.wiring.metrics
        self.state = self.wiring.state
        self.detector_set = self.wiring.detector_set
        self.ingestor = self.wiring.ingestor
        self.poller = self.wiring.poller
        # The serving process's CPU, memory, file descriptors, Python version and garbage collections.
        for runtime in (ProcessCollector, PlatformCollector, GCCollector):
            runtime(registry=self.metrics.registry)
        self.verifier = SignatureVerifier(config.stripe.webhook_secrets, config.stripe.tolerance_seconds, clock=clock)
        self.http_metrics = HttpMetrics(self.metrics.registry)
        # TLS and basic auth of the private listener (--web.config.file); a bad file stops the start here.
        self.web_config = load_web_config(config.server.web_config_file)
        max_connections = connection_cap(config.server.max_connections)
        self.guards = {
            listener: ConnectionGuard(
                max_connections=max_connections,
                body_timeout=config.server.body_timeout_seconds,
                on_close=self.http_metrics.closer(listener),
            )
            for listener in LISTENERS
        }
        for listener, guard in self.guards.items():

            def count(g: ConnectionGuard = guard) -> int:
                return g.open_connections

            self.http_metrics.watch_open(listener, count)
        self._remove_log_filter: Callable[[], None] | None = None
        self._poller_task: asyncio.Task[None] | None = None
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._ready = False
        self._housekeeping: asyncio.Task[None] | None = None
        self.webhook_port: int | None = None
        self.metrics_port: int | None = None

    async def start(self) -> None:
        cfg = self.config
        malformed = self.http_metrics.malformed.inc
        self._remove_log_filter = http_logs.install(malformed)
        public = webhook_app(
            self.ingestor,
            self.verifier,
            max_body_bytes=cfg.server.max_body_bytes,
            guard=self.guards["webhook"],
            on_malformed=malformed,
            clock=self.clock,
            # Thin events are fetched with the poller's client (STRIPE_API_KEY), when there is one.
            stripe_client=self.poller.client if self.poller is not None else None,
        )
        board = self.detector_set.board
        routes = [*self.detector_set.routes, *runbook.routes()]
        landing = LandingPage(
            self.metrics.registry,
            webhook_path=WEBHOOK_PATH,
            started_at=self.clock(),
            clock=self.clock,
            recent_anomalies=board.recent if board is not None else list,
            poller_enabled=self.poller is not None,
            links=[("Prometheus", cfg.server.prometheus_url), ("Alertmanager", cfg.server.alertmanager_url)],
            routes=[(path, desc) for method, path, _, desc in routes if method == "GET"],
        )
        private = private_app(
            self.ingestor,
            ready=lambda: self._ready and self.state.writable,
            landing=landing,
            extra_routes=routes,
            middlewares=self._private_middlewares(),
        )
        if self.web_config.headers:
            add_headers(private, self.web_config.headers)
        self.webhook_port = await self._serve(public, cfg.server.listen, self.guards["webhook"])
        self.metrics_port = await self._serve(
            private, cfg.server.metrics_listen, self.guards["private"], ssl=self.web_config.ssl
        )
        host, _ = parse_hostport(cfg.server.metrics_listen)
        if not self.web_config.protected and not _is_loopback(host):
            logs.event(
                logging.WARNING,
                "the private listener (metrics, anomaly API with customer ids) listens beyond loopback without "
                "TLS or basic auth: set --web.config.file (docs/running.md) or keep the port unreachable",
                metrics=cfg.server.metrics_listen,
            )
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
            metrics_tls=self.web_config.ssl is not None,
            metrics_basic_auth=bool(self.web_config.users),
            secrets=len(cfg.stripe.webhook_secrets),
            mode=cfg.stripe.mode,
            state=cfg.state.path,
            max_connections=self.guards["webhook"].max_connections,
            open_files_limit=open_files_limit(),
        )

    def _private_middlewares(self) -> list[Any]:
        out = [self.guards["private"].middleware()]
        if self.web_config.users:
            out.append(BasicAuth(self.web_config.users).middleware())
        return out

    async def _serve(
        self, app: web.Application, hostport: str, guard: ConnectionGuard, ssl: SSLContext | None = None
    ) -> int:
        host, port = parse_hostport(hostport)
        server_cfg = self.config.server
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=server_cfg.shutdown_timeout_seconds,
            # aiohttp closes a connection that has not sent a complete request head this long after it opened
            # or after its last answer: slow headers (slowloris) and idle keep-alive alike (its default is an hour).
            keepalive_timeout=server_cfg.idle_timeout_seconds,
            # After refusing an oversized body, aiohttp drains what the client keeps sending for this long before
            # closing; its 10 s default lets one slow client hold a connection (and shutdown) for 10 s.
            lingering_time=1.0,
        )
        await runner.setup()
        self._runners.append(runner)
        assert runner.server is not None
        # Our own listening socket around aiohttp's protocol factory: the connection cap sees every new
        # connection (exporter/http_guard.py). aiohttp still tracks and shuts down each connection itself.
        server = await asyncio.get_running_loop().create_server(
            guard.factory(runner.server), host, port, reuse_address=True, ssl=ssl, backlog=LISTEN_BACKLOG
        )
        self._servers.append(server)
        sockets = server.sockets
        return sockets[0].getsockname()[1] if sockets else port

    async def _housekeep(self) -> None:
        interval = self.config.state.flush_interval_seconds
        next_prune = 0.0
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            try:
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
                    self.wiring.prune_namespaces(now)
                    _, kept = await self.state.prune_in_background(now)
                    self.metrics.state_seen_ids.set(kept)
            except StateUnavailable:
                pass  # logged once per episode by the store, counted, and /readyz says not ready
            except Exception:
                logs.error("housekeeping failed")

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then flush and close the state."""
        self._ready = False
        for server in self._servers:
            server.close()
        for guard in self.guards.values():
            guard.hurry_bodies()
        for runner in self._runners:
            await runner.cleanup()
        if self._remove_log_filter is not None:
            self._remove_log_filter()
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


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# Young collections every 700 net allocations are mostly wasted on webhook traffic: an event's ~100 containers
# are freed by reference counting right after it is handled. Fewer, larger young collections (docs/benchmark.md).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """For the serving process only: startup objects (modules, config, metrics, the restored state) are never
    garbage, so freeze them out of every future collection, and space young collections out, which makes the
    older-generation collections (they walk every object the detectors hold, e.g. each ledger record) rarer too.
    Kept after issue 15's review because it still matters: in process over 250,000 benchmark events (35,000
    subscriptions, 2026-12-02, loaded machine) the default collector spent 3.7 s in 280 collections, 3 of them full
    (up to 1 s each on that machine), against 0.65 s in 5 young collections with this tuning (docs/benchmark.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)


async def serve_forever(config: Config) -> None:
    raise_fd_limit()
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
