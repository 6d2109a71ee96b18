"""Connection limits for one listener: a cap on open connections and a deadline for reading a request body.

aiohttp itself closes a connection that has not delivered a complete request head within `keepalive_timeout` of
opening it or of its last answer (its keep-alive timer starts when the connection is made and is not pushed back
by arriving bytes), so slow headers and idle keep-alive connections are the server's own business (the service
passes `keepalive_timeout`). What aiohttp has no setting for:

- a bound on open connections: every idle or slow client holds a file descriptor until its timer fires, and
  at a few thousand the process cannot accept anything else. At the cap, the connection that has waited longest
  without a request in progress is closed to make room, so a fresh client (Stripe) is served and an attacker
  mostly evicts its own connections. The listening socket is made with `loop.create_server` and a protocol factory
  that wraps aiohttp's own (`runner.server`, public): the only place a new connection can be seen at once.
- a deadline for the body: aiohttp calls the handler once the head is parsed and the handler reads the body; a
  client that sends it one byte at a time (or never finishes a chunked body) keeps the handler waiting for ever.
  `body_deadline()` bounds that read, and `hurry_bodies()` cuts the remaining ones short at shutdown so that
  SIGTERM is not held up by slow senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

# Seconds a body still being read gets once shutdown has begun: a real sender has long finished by then.
SHUTDOWN_BODY_GRACE_SECONDS = 0.5

CLOSE_REASONS = ("over_capacity", "body_timeout")


class Deadlines:
    """asyncio timeouts that a shutdown can cut short: each `async with deadlines():` block gets `seconds`, and
    after `hurry()` every running or later block gets `grace` at most."""

    def __init__(self, seconds: float, grace: float):
        self.seconds = seconds
        self.grace = grace
        self._active: set[asyncio.Timeout] = set()
        self._hurry = False

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        async with asyncio.timeout(self.grace if self._hurry else self.seconds) as deadline:
            self._active.add(deadline)
            try:
                yield
            finally:
                self._active.discard(deadline)

    def hurry(self) -> None:
        self._hurry = True
        soon = asyncio.get_running_loop().time() + self.grace
        for deadline in list(self._active):
            when = deadline.when()
            if when is None or when > soon:
                deadline.reschedule(soon)


class _Guarded(asyncio.Protocol):
    """Forwards every protocol call to aiohttp's handler and tells the guard when a connection opens and closes."""

    __slots__ = ("guard", "inner", "transport")

    def __init__(self, guard: ConnectionGuard, inner: Any):
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        self.guard.opened(self, transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    def __init__(self, *, max_connections: int, body_timeout: float, on_close: Callable[[str], None]):
        self.max_connections = max_connections
        self.body_timeout = body_timeout
        self._on_close = on_close
        # Connections without a request in progress, oldest first (a dict keeps insertion order).
        self._waiting: dict[_Guarded, None] = {}
        self._by_transport: dict[Any, _Guarded] = {}
        self._bodies = Deadlines(body_timeout, SHUTDOWN_BODY_GRACE_SECONDS)

    @property
    def open_connections(self) -> int:
        return len(self._by_transport)

    def factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, inner())

    def opened(self, conn: _Guarded, transport: asyncio.BaseTransport) -> None:
        if len(self._by_transport) >= self.max_connections:
            victim = next(iter(self._waiting), None)
            if victim is None:
                # Every connection has a request in progress: refuse the newcomer instead.
                self._on_close("over_capacity")
                transport.close()
                return
            self._forget(victim)
            self._on_close("over_capacity")
            if victim.transport is not None:
                victim.transport.close()
        self._by_transport[transport] = conn
        self._waiting[conn] = None

    def count(self, reason: str) -> None:
        self._on_close(reason)

    def closed(self, conn: _Guarded) -> None:
        self._forget(conn)

    def _forget(self, conn: _Guarded) -> None:
        self._waiting.pop(conn, None)
        if conn.transport is not None:
            self._by_transport.pop(conn.transport, None)

    def request_started(self, transport: Any) -> None:
        conn = self._by_transport.get(transport)
        if conn is not None:
            self._waiting.pop(conn, None)

    def request_finished(self, transport: Any) -> None:
        conn = self._by_transport.get(transport)
        if conn is not None:
            # Re-inserted at the end: it now counts as the newest waiting connection.
            self._waiting[conn] = None

    def body_deadline(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Raises TimeoutError when the body has not arrived within body_timeout (or shortly after shutdown)."""
        return self._bodies()

    def hurry_bodies(self) -> None:
        """Shutdown: bodies still being read get SHUTDOWN_BODY_GRACE_SECONDS more at most."""
        self._bodies.hurry()

    def middleware(self) -> Any:
        """For listeners whose handlers are not hot (the private one): marks every request in progress."""

        @web.middleware
        async def mark(request: web.Request, handler: Any) -> web.StreamResponse:
            transport = request.transport
            self.request_started(transport)
            try:
                return await handler(request)
            finally:
                self.request_finished(transport)

        return mark


# File descriptors kept for everything but client connections: the state database and its journal, listening
# sockets, the poller's HTTPS connections, log and standard streams, Python's own.
RESERVED_FDS = 128


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit (what the process may do without privileges):
    systemd and many shells start services at a soft limit of 1,024, which a few hundred idle clients on two
    listeners would exhaust. Returns (soft, hard) after the change."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(configured: int) -> int:
    """The per-listener cap that fits the current open-files limit (two listeners share it)."""
    soft = open_files_limit()
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, (soft - RESERVED_FDS) // 2))
