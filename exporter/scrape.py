"""GET /metrics rendered off the event loop, shared between concurrent scrapes, written in bounded pieces.

Rendering walks every series: at tens of thousands of series that is a second of CPU, and on the event loop every
webhook would wait behind it. It runs in one worker thread instead (the event loop keeps the GIL most of the
time: Python switches threads every few milliseconds). Reading the metrics from that thread is safe:
prometheus_client's metrics take their locks, and our scrape-time collectors copy what they read (docs/CONTRACTS.md).

Scrapes that arrive while a render runs wait for that render and get the same bytes; at most MAX_WRITERS
responses are written at once, each in WRITE_CHUNK pieces that wait for the client to read (aiohttp's write()
drains), so slow readers hold a share of one body, not a copy each in the socket buffers.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter.http_guard import Deadlines

MAX_WRITERS = 4
# How long a scrape waits for a writer slot before it is refused (503): well inside Prometheus's scrape timeout.
WRITER_WAIT_SECONDS = 5.0
WRITE_CHUNK = 64 * 1024
# A scrape answer still unread after this long is dropped (Prometheus gives up after its scrape timeout, 10 s by
# default); at shutdown the remaining ones get half a second, so SIGTERM never waits for a reader that stalls.
WRITE_SECONDS = 30.0
SHUTDOWN_WRITE_SECONDS = 0.5
GZIP_LEVEL = 1  # most of the saving for a fraction of the CPU of the default level
RENDER_SWITCH_INTERVAL_SECONDS = 0.0005


class ScrapeHandler:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="billingwatch-scrape")
        self._renders: dict[tuple[str, bool], asyncio.Future[bytes]] = {}
        self._writers = asyncio.Semaphore(MAX_WRITERS)
        self._deadlines = Deadlines(WRITE_SECONDS, SHUTDOWN_WRITE_SECONDS)

    def _render(self, accept: str, compress: bool) -> bytes:
        encoder, _ = choose_encoder(accept)
        # Each event-loop iteration waits for the GIL while this thread runs Python: up to one switch interval
        # (5 ms by default), and a webhook takes about ten iterations. A shorter interval while rendering hands
        # the GIL back sooner; renders are one at a time (one worker), so restoring it afterwards is safe.
        previous = sys.getswitchinterval()
        sys.setswitchinterval(RENDER_SWITCH_INTERVAL_SECONDS)
        try:
            body = encoder(self.registry)
        finally:
            sys.setswitchinterval(previous)
        # zlib releases the GIL while it compresses.
        return gzip.compress(body, compresslevel=GZIP_LEVEL) if compress else body

    async def body(self, accept: str, compress: bool) -> tuple[bytes, str]:
        _, content_type = choose_encoder(accept)
        key = (content_type, compress)
        render = self._renders.get(key)
        if render is None:
            loop = asyncio.get_running_loop()
            render = self._renders[key] = loop.run_in_executor(self._executor, self._render, accept, compress)
            render.add_done_callback(lambda _: self._renders.pop(key, None))
        # shield: one scrape giving up must not cancel the render the others are waiting for.
        return await asyncio.shield(render), content_type

    async def handle(self, request: web.Request) -> web.StreamResponse:
        accept = ",".join(request.headers.getall("Accept", []))
        compress = gzip_accepted(request.headers.get("Accept-Encoding", ""))
        try:
            await asyncio.wait_for(self._writers.acquire(), WRITER_WAIT_SECONDS)
        except TimeoutError:
            return web.Response(status=503, text="too many scrapes in progress\n", headers={"Retry-After": "5"})
        try:
            body, content_type = await self.body(accept, compress)
            resp = web.StreamResponse(headers={"Content-Type": content_type})
            if compress:
                resp.headers["Content-Encoding"] = "gzip"
            resp.content_length = len(body)
            await resp.prepare(request)
            view = memoryview(body)
            try:
                async with self._deadlines():
                    for start in range(0, len(body), WRITE_CHUNK):
                        await resp.write(view[start : start + WRITE_CHUNK])
                    await resp.write_eof()
            except TimeoutError:
                # A reader that does not read: drop the connection (close() would wait to flush the buffer).
                if request.transport is not None:
                    request.transport.abort()
            return resp
        finally:
            self._writers.release()

    def hurry(self) -> None:
        """Shutdown: answers still being written get SHUTDOWN_WRITE_SECONDS more at most."""
        self._deadlines.hurry()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
