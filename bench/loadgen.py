"""A lean HTTP/1.1 load generator on raw asyncio protocols (run as its own process, on its own core).

Modes:
- `saturate`: N keep-alive connections, each sends its next request as soon as the previous answer arrives
  (closed loop). Reports the rate over the measurement window, after a warm-up.
- `paced`: open loop at a fixed rate over a pool of keep-alive connections. Requests are due on a fixed
  schedule whatever the server does; one that finds no idle connection waits in a queue and its latency counts
  from when it was due, so a slow server cannot hide its own queueing (no coordinated omission).

Prints one JSON object on stdout. Every answer must be HTTP 200 with `expect` in its body, else it counts as
an error.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.events import RequestFactory

perf = time.perf_counter


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


class Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining, like Stripe's senders)."""

    def __init__(self, on_done: Callable[[Conn, bool], None], expect: bytes):
        self.on_done = on_done
        self.expect = expect
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.sent_at = 0.0
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def send(self, request: bytes, sent_at: float) -> None:
        self.sent_at = sent_at
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            eol = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : eol if eol > 0 else len(head)])
        else:
            length = 0
        total = end + 4 + length
        if len(buf) < total:
            return
        ok = head[9:12] == b"200" and self.expect in buf[end + 4 : total]
        del buf[:total]
        self.on_done(self, ok)


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.factory = RequestFactory(
            args.secret, args.host, args.port, id_prefix=args.id_prefix, customers=args.customers, seed=args.seed
        )
        self.expect = args.expect.encode()
        self.errors = 0
        self.done = 0
        self.latencies: list[float] = []
        self.conns: list[Conn] = []

    async def connect(self, n: int, on_done: Callable[[Conn, bool], None]) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            _, proto = await loop.create_connection(lambda: Conn(on_done, self.expect), self.args.host, self.args.port)
            self.conns.append(proto)

    async def saturate(self) -> dict[str, Any]:
        """Closed loop: warm-up, then count answers over `duration` seconds (or until `count` events)."""
        a = self.args
        count = a.count or 0
        finished = asyncio.get_running_loop().create_future()
        window = {"start": 0.0, "start_done": 0, "measuring": False}
        factory = self.factory
        latencies = self.latencies

        def on_done(conn: Conn, ok: bool) -> None:
            now = perf()
            self.done += 1
            if not ok:
                self.errors += 1
            if window["measuring"] and len(latencies) < 200_000:
                latencies.append(now - conn.sent_at)
            if count and factory.count >= count:
                if self.done >= count and not finished.done():
                    finished.set_result(None)
                return
            if not finished.done():
                conn.send(factory.next_request(), perf())

        await self.connect(a.connections, on_done)
        t0 = perf()
        for c in self.conns:
            if not count or factory.count < count:
                c.send(factory.next_request(), perf())
        if count:
            window["measuring"] = True
            window["start"] = t0
            await finished
            t1 = perf()
            measured = self.done
        else:
            await asyncio.sleep(a.warmup)
            window["start"], window["start_done"], window["measuring"] = perf(), self.done, True
            await asyncio.sleep(a.duration)
            t1 = perf()
            measured = self.done - window["start_done"]
            finished.set_result(None)
            # Let the requests still in flight finish so the server is quiet and nothing is left half-sent.
            deadline = perf() + 5
            while self.done < factory.count and perf() < deadline:
                await asyncio.sleep(0.01)
        elapsed = t1 - window["start"]
        return {"rate": measured / elapsed if elapsed > 0 else 0.0, "measured": measured, "elapsed": elapsed}

    async def paced(self) -> dict[str, Any]:
        """Open loop at `rate` events/s for `duration` seconds (after a paced warm-up)."""
        a = self.args
        interval = 1.0 / a.rate
        idle: collections.deque[Conn] = collections.deque()
        backlog: collections.deque[float] = collections.deque()  # due times of queued requests
        factory = self.factory
        latencies = self.latencies
        state = {"measure_from": float("inf"), "lag": 0.0, "lag_n": 0, "queued": 0}
        pending_sent: dict[Conn, float] = {}

        def on_done(conn: Conn, ok: bool) -> None:
            now = perf()
            self.done += 1
            if not ok:
                self.errors += 1
            started = pending_sent.pop(conn)
            if started >= state["measure_from"]:
                latencies.append(now - started)
            if backlog:
                due = backlog.popleft()
                pending_sent[conn] = due
                conn.send(factory.next_request(), now)
            else:
                idle.append(conn)

        await self.connect(a.connections, on_done)
        idle.extend(self.conns)
        start = perf()
        state["measure_from"] = start + a.warmup
        end = state["measure_from"] + a.duration
        total = int((a.warmup + a.duration) * a.rate)
        issued = 0
        next_due = start
        loop_sleep = asyncio.sleep
        while issued < total:
            now = perf()
            while next_due <= now and issued < total:
                # Latency counts from the moment the pacer dispatches the request (at most one timer tick after
                # it was due); the mean of that tick lag is reported separately.
                state["lag"] += now - next_due
                state["lag_n"] += 1
                if idle:
                    conn = idle.popleft()
                    pending_sent[conn] = now
                    conn.send(factory.next_request(), now)
                else:
                    backlog.append(now)
                    state["queued"] += 1
                issued += 1
                next_due += interval
            await loop_sleep(max(0.0, next_due - perf()))
        deadline = perf() + 10
        while (pending_sent or backlog) and perf() < deadline:
            await loop_sleep(0.005)
        return {
            "rate": a.rate,
            "achieved_rate": issued / max(1e-9, end - start),
            "measured": len(latencies),
            "elapsed": a.duration,
            "timer_lag_mean_ms": 1000 * state["lag"] / max(1, state["lag_n"]),
            "queued_for_connection": state["queued"],
        }

    async def main(self) -> dict[str, Any]:
        t = perf()
        result = await (self.saturate() if self.args.mode == "saturate" else self.paced())
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()
        lat = sorted(self.latencies)
        result.update(
            {
                "mode": self.args.mode,
                "connections": self.args.connections,
                "sent": self.factory.count,
                "answered": self.done,
                "errors": self.errors,
                "bytes_out": self.factory.bytes_out,
                "mean_body_bytes": self.factory.bytes_out / max(1, self.factory.count),
                "p50_ms": 1000 * percentile(lat, 0.50),
                "p90_ms": 1000 * percentile(lat, 0.90),
                "p99_ms": 1000 * percentile(lat, 0.99),
                "max_ms": 1000 * lat[-1] if lat else float("nan"),
                "wall_seconds": perf() - t,
            }
        )
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("saturate", "paced"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--id-prefix", required=True, help="makes this run's event ids distinct from every other run's")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=8.0, help="measurement window, seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--count", type=int, default=0, help="saturate: send exactly this many events instead")
    p.add_argument("--rate", type=float, default=2000.0, help="paced: events per second")
    p.add_argument("--customers", type=int, default=50_000, help="size of the customer pool")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--expect", default="", help="substring every 200 answer must contain")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(Run(args).main())
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
