"""Slow and hostile clients against a real `billingwatch serve` process, and how a real webhook fares meanwhile.

    .venv/bin/python -m bench.slow_clients                 # the figures in docs/faults.md
    .venv/bin/python -m bench.slow_clients --idle 4000 --slowloris 200 --chunked 200 --junk 3000

Each scenario starts a fresh exporter (the shipped defaults unless flags say otherwise), opens its connections,
then sends real signed webhooks and times them, then measures how many of the hostile connections the server
still holds after the idle/body timeout, and the process's open file descriptors. The scrape scenario floods
signed charge.failed events with new currency x failure code pairs, then leaves 20 `GET /metrics` unread while
webhooks are timed (with the shipped series budget, then without one). The last scenario sends SIGTERM while slow
bodies and half-sent heads are still open and times the exit. tests/test_slow_clients.py
drives the same functions with small numbers and asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter import samples

REPO = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_slow_clients_0123456789"
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
ACCEPTED = ("billingwatch_webhook_requests_total", frozenset({("outcome", "accepted")}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExporterProcess:
    """`python -m exporter serve` with a config file of `server` keys, on free loopback ports."""

    def __init__(
        self,
        workdir: Path,
        server: dict[str, Any] | None = None,
        *,
        args: tuple[str, ...] = (),
        sections: dict[str, Any] | None = None,
    ):
        self.dir = workdir
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = workdir / "billingwatch.yml"
        doc = {
            "server": {
                "listen": f"127.0.0.1:{self.port}",
                "metrics_listen": f"127.0.0.1:{self.metrics_port}",
                **(server or {}),
            },
            "stripe": {"webhook_secrets": [SECRET]},
            "state": {"path": str(workdir / "state.sqlite3")},
            **(sections or {}),
        }
        self.config.write_text(yaml.safe_dump(doc))
        self.args = args
        self.log = workdir / "exporter.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_scheme = "http"

    def start(self, timeout: float = 20.0, preexec_fn: Any = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exporter", "serve", "--config", str(self.config), *self.args],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=preexec_fn,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"exporter not listening after {timeout} s:\n{self.log_text()}") from None
                time.sleep(0.05)

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        """The first log line containing `needle`, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                if needle in line:
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line with {needle!r} after {timeout} s:\n{self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/stripe"

    def metrics(self, opener: Any = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"{self.metrics_scheme}://127.0.0.1:{self.metrics_port}/metrics"
        open_url = opener.open if opener is not None else urllib.request.urlopen
        with open_url(url, timeout=10) as resp:
            text = resp.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def fds(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until exit)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            rc = -9
        return rc, time.monotonic() - start


def signed_request(event: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    import hashlib
    import hmac

    body = orjson.dumps(event or samples.trigger_event("charge.succeeded"))
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}


async def webhook_latencies(url: str, count: int = 5) -> list[float]:
    """Seconds per real signed webhook (one fresh connection each, as Stripe opens them); raises on non-200."""
    out = []
    timeout = aiohttp.ClientTimeout(total=15)
    for _ in range(count):
        body, headers = signed_request()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            start = time.monotonic()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise AssertionError(f"real webhook answered {resp.status}")
            out.append(time.monotonic() - start)
    return out


async def _open(port: int, count: int, first_bytes: bytes) -> list[Conn]:
    conns: list[Conn] = []
    for _ in range(count):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue  # refused or reset at once: the server did not hold it
        if first_bytes:
            writer.write(first_bytes)
        conns.append((reader, writer))
    return conns


SLOWLORIS_HEAD = b"POST /webhooks/stripe HTTP/1.1\r\nHost: billingwatch\r\nContent-Type: application/json\r\nX-Slow: "
CHUNKED_HEAD = (
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: billingwatch\r\nTransfer-Encoding: chunked\r\n"
    b"Stripe-Signature: t=1,v1=00\r\n\r\n5\r\nhello\r\n"
)
JUNK = [
    b"GARBAGE\r\n\r\n",
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n",
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,  # a TLS ClientHello on the plain port
]


async def open_slowloris(port: int, count: int) -> list[Conn]:
    """Request heads that are never finished."""
    return await _open(port, count, SLOWLORIS_HEAD)


async def open_unfinished_chunked(port: int, count: int) -> list[Conn]:
    """Complete heads, then a chunked body that never ends."""
    return await _open(port, count, CHUNKED_HEAD)


async def open_idle(port: int, count: int) -> list[Conn]:
    """Connections that never send a byte."""
    return await _open(port, count, b"")


async def send_junk(port: int, count: int) -> dict[int, int]:
    """`count` malformed requests, one per connection; returns {HTTP status or 0 for none: how many}."""
    statuses: dict[int, int] = {}
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(JUNK[i % len(JUNK)])
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
        except (TimeoutError, ConnectionError):
            line = b""
        status = int(line.split()[1]) if line.startswith(b"HTTP/1.") else 0
        statuses[status] = statuses.get(status, 0) + 1
        writer.close()
    return statuses


async def count_closed(conns: list[Conn], timeout: float) -> int:
    """How many of `conns` the server closes within `timeout` seconds (reads until EOF or reset)."""

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        return True

    tasks = [asyncio.ensure_future(closed(r)) for r, _ in conns]
    if not tasks:
        return 0
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    return len(done)


def close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()


def _fmt_latency(latencies: list[float]) -> str:
    return f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"


async def scenario(name: str, workdir: Path, opener: str, count: int, server: dict[str, Any]) -> dict[str, Any]:
    ex = ExporterProcess(workdir, server)
    ex.start()
    try:
        fds_before = ex.fds()
        open_fn = {"slowloris": open_slowloris, "chunked": open_unfinished_chunked, "idle": open_idle}[opener]
        conns = await open_fn(ex.port, count)
        latencies = await webhook_latencies(ex.webhook_url)
        fds_during = ex.fds()
        wait = max(server.get("idle_timeout_seconds", 10.0), server.get("body_timeout_seconds", 10.0)) + 3
        start = time.monotonic()
        closed = await count_closed(conns, wait)
        held = len(conns) - closed
        took = time.monotonic() - start
        close_all(conns)
        metrics = ex.metrics()
        over = metrics.get(
            ("billingwatch_http_connections_closed_total",
             frozenset({("listener", "webhook"), ("reason", "over_capacity")})), 0.0)
        body = metrics.get(
            ("billingwatch_http_connections_closed_total",
             frozenset({("listener", "webhook"), ("reason", "body_timeout")})), 0.0)
        return {
            "scenario": name,
            "opened": count,
            "held_after_s": round(wait, 1),
            "held": held,
            "closed_within_s": round(took, 1),
            "fds_before": fds_before,
            "fds_with_clients": fds_during,
            "webhook": _fmt_latency(latencies),
            "over_capacity": int(over),
            "body_timeout": int(body),
            "webhooks_sent": len(latencies),
            "accepted": int(metrics.get(ACCEPTED, 0.0)),
        }
    finally:
        ex.stop()


async def junk_scenario(workdir: Path, count: int) -> dict[str, Any]:
    ex = ExporterProcess(workdir)
    ex.start()
    try:
        statuses = await send_junk(ex.port, count)
        latencies = await webhook_latencies(ex.webhook_url)
        malformed = ex.value("billingwatch_http_malformed_requests_total")
        accepted = ex.value("billingwatch_webhook_requests_total", outcome="accepted")
    finally:
        ex.stop()
    lines = [line for line in ex.log_text().splitlines() if "malformed" in line or "Error handling" in line]
    return {"scenario": "junk", "sent": count, "statuses": statuses, "counted": malformed, "log_lines": len(lines),
            "webhook": _fmt_latency(latencies), "webhooks_sent": len(latencies), "accepted": accepted}


async def sigterm_scenario(workdir: Path, count: int) -> dict[str, Any]:
    ex = ExporterProcess(workdir)
    ex.start()
    slow = await open_unfinished_chunked(ex.port, count)
    heads = await open_slowloris(ex.port, count)
    await webhook_latencies(ex.webhook_url, 1)
    rc, seconds = ex.stop()
    close_all(slow + heads)
    return {"scenario": "sigterm", "slow_bodies": count, "slow_heads": count, "exit_code": rc,
            "seconds": round(seconds, 2)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def hostile_labels(url: str, count: int) -> None:
    """`count` signed charge.failed events, each with a new currency x failure code pair (310 x 310 reached
    90,601 series of one metric before the series budget)."""
    import itertools
    import string

    codes = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=3)]
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def post(i: int) -> None:
            charge = samples.charge(status="failed", currency=codes[i % 310], failure_code=f"code_{i // 310}")
            body, headers = signed_request(samples.event("charge.failed", charge))
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()

        for start in range(0, count, 200):
            await asyncio.gather(*(post(i) for i in range(start, min(count, start + 200))))


async def scrape_scenario(workdir: Path, events: int, slow_readers: int, budget: int | None) -> dict[str, Any]:
    sections = {"metrics": {"max_series_per_metric": budget}} if budget else None
    ex = ExporterProcess(workdir, sections=sections)
    ex.start()
    try:
        await hostile_labels(ex.webhook_url, events)
        await asyncio.sleep(2)  # let the state flush of the flood finish: this measures scrapes, not that
        quiet = await webhook_latencies(ex.webhook_url, 20)
        metrics = ex.metrics()
        failed_series = sum(1 for name, _ in metrics if name == "stripe_charges_failed_total")
        start = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{ex.metrics_port}/metrics", timeout=30).read()
        scrape_seconds = time.monotonic() - start
        rss_before = rss_mb(ex.proc.pid)  # type: ignore[union-attr]
        # Readers that ask for /metrics and never read the answer.
        readers = await _open(ex.metrics_port, slow_readers, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        latencies = await webhook_latencies(ex.webhook_url, 20)
        rss_during = rss_mb(ex.proc.pid)  # type: ignore[union-attr]
        close_all(readers)
        accepted = ex.value("billingwatch_webhook_requests_total", outcome="accepted")
        return {"scenario": "hostile labels + slow scrapers", "events": events, "series_budget": budget or "default",
                "charges_failed_series": failed_series, "metrics_bytes": len(body),
                "scrape_ms": round(scrape_seconds * 1000), "slow_readers": slow_readers,
                "rss_mb_before": round(rss_before, 1), "rss_mb_with_readers": round(rss_during, 1),
                "webhook_quiet": _fmt_latency(quiet), "webhook_with_readers": _fmt_latency(latencies),
                "accepted": accepted, "sent": events + len(quiet) + len(latencies)}
    finally:
        ex.stop()


async def run_scrapes(root: Path, args: argparse.Namespace) -> None:
    """With the shipped series budget, then with none (what the render thread and the writer limit do alone)."""
    for budget in (None, 1_000_000):
        (root / f"scrape{budget}").mkdir()
        print(await scrape_scenario(root / f"scrape{budget}", args.hostile_events, args.slow_readers, budget),
              flush=True)


async def main_async(args: argparse.Namespace) -> None:
    server: dict[str, Any] = {}
    if args.max_connections:
        server["max_connections"] = args.max_connections
    with tempfile.TemporaryDirectory(prefix="bw-slow-") as tmp:
        root = Path(tmp)
        if args.only == "scrape":
            await run_scrapes(root, args)
            return
        runs = [("slowloris", "slowloris", args.slowloris), ("unfinished chunked", "chunked", args.chunked),
                ("idle", "idle", args.idle)]
        for i, (name, opener, count) in enumerate(runs):
            (root / str(i)).mkdir()
            print(await scenario(name, root / str(i), opener, count, server), flush=True)
        (root / "junk").mkdir()
        print(await junk_scenario(root / "junk", args.junk), flush=True)
        await run_scrapes(root, args)
        (root / "term").mkdir()
        print(await sigterm_scenario(root / "term", args.sigterm), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowloris", type=int, default=200)
    parser.add_argument("--chunked", type=int, default=200)
    parser.add_argument("--idle", type=int, default=4000)
    parser.add_argument("--junk", type=int, default=3000)
    parser.add_argument("--sigterm", type=int, default=100, help="slow bodies and slow heads open at SIGTERM")
    parser.add_argument("--hostile-events", type=int, default=20000, help="charge.failed with new label pairs")
    parser.add_argument("--slow-readers", type=int, default=20, help="/metrics requests never read")
    parser.add_argument("--only", choices=("scrape",), help="run one scenario only")
    parser.add_argument("--max-connections", type=int, default=0, help="server.max_connections (default: shipped)")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
