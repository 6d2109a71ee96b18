"""Hostile label values cannot grow one metric past its series budget, and a scrape of a huge registry does not
hold up webhooks: /metrics is rendered in a worker thread, shared by concurrent scrapes."""

from __future__ import annotations

import asyncio
import gc
import itertools
import socket
import string
import time

import pytest
from prometheus_client import generate_latest

from exporter import samples
from exporter.service import Service, tune_gc
from tests.conftest import make_event
from tests.ingest_support import make_config, running_exporter


def _currencies():
    for letters in itertools.product(string.ascii_lowercase, repeat=3):
        yield "".join(letters)


def _series(ex, name: str) -> list[dict[str, str]]:
    return [s.labels for m in ex.service.metrics.registry.collect() if m.name == name for s in m.samples]


async def test_two_capped_labels_cannot_multiply_past_the_series_budget(tmp_path):
    budget = 40
    config = make_config(tmp_path / "s.sqlite3", metrics={"max_series_per_metric": budget})
    async with running_exporter(config) as ex:
        currencies = _currencies()
        for i in range(150):
            charge = samples.charge(status="failed", currency=next(currencies), failure_code=f"code_{i % 30}")
            assert await ex.post_event(make_event("charge.failed", charge)) == 200
        failed = _series(ex, "stripe_charges_failed")
        assert budget <= len(failed) <= budget + 1
        assert {"currency": "other", "failure_code": "other", "livemode": "false"} in failed
        # Every event is still counted, in its own series or the overflow one.
        total = sum(s.value for m in ex.service.metrics.registry.collect() if m.name == "stripe_charges_failed"
                    for s in m.samples)
        assert total == 150
        overflowed = ex.value("billingwatch_series_overflowed_total", {"metric": "stripe_charges_failed"})
        assert overflowed == 150 - budget
        # stripe_charges_total{currency} has one label: capped per label (300 by default) and by the budget.
        assert len(_series(ex, "stripe_charges")) <= budget + 1


@pytest.fixture
def served_gc():
    """The garbage collector as `billingwatch serve` runs it (service.tune_gc), restored afterwards."""
    thresholds = gc.get_threshold()
    tune_gc()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_a_huge_scrape_does_not_hold_up_webhooks(tmp_path, served_gc):
    config = make_config(tmp_path / "s.sqlite3")
    async with running_exporter(config) as ex:
        failed = ex.service.metrics.charges_failed
        failed.max_series = 10**6  # a registry far beyond any budget, to make the render slow
        for currency, code in itertools.product(itertools.islice(_currencies(), 300), range(200)):
            failed.labels(currency, f"c{code}", "true").inc()
        start = time.perf_counter()
        size = len(generate_latest(ex.service.metrics.registry))
        render_seconds = time.perf_counter() - start
        assert size > 3_000_000 and render_seconds > 0.2, (size, render_seconds)

        async def scrape() -> int:
            async with ex.session.get(ex.private + "/metrics") as resp:
                return len(await resp.read())

        scrapes = [asyncio.ensure_future(scrape()) for _ in range(3)]
        latencies = []
        while not all(s.done() for s in scrapes):
            t = time.perf_counter()
            assert await ex.post_event(make_event("charge.succeeded", samples.charge())) == 200
            latencies.append(time.perf_counter() - t)
        sizes = await asyncio.gather(*scrapes)
        assert min(sizes) > 3_000_000
        assert len(latencies) >= 3
        # On the event loop, a webhook arriving during a render waited for all of it.
        assert max(latencies) < min(0.25, render_seconds / 2), (max(latencies), render_seconds)


async def test_scrapes_nobody_reads_do_not_hold_up_shutdown(tmp_path):
    """Readers that request /metrics and never read it: the answer (MBs) fills the socket buffers and the write
    waits; at shutdown those writes get half a second, so the stop takes well under Docker's 10 s grace."""
    config = make_config(tmp_path / "s.sqlite3")
    service = Service(config)
    await service.start()
    stalled = []
    try:
        failed = service.metrics.charges_failed
        failed.max_series = 10**6
        for currency, code in itertools.product(itertools.islice(_currencies(), 300), range(200)):
            failed.labels(currency, f"c{code}", "true").inc()
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", service.metrics_port))
            # identity encoding: 6 MB, more than the kernel buffers hold
            await asyncio.get_running_loop().sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        # Wait until each answer is being written (its render in the worker thread is done).
        deadline = time.monotonic() + 30
        while not all(_has_bytes(sock) for sock in stalled) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert all(_has_bytes(sock) for sock in stalled), "the scrapes never started writing"
    finally:
        start = time.monotonic()
        await service.stop()
        took = time.monotonic() - start
        for sock in stalled:
            sock.close()
    assert took < 3.0, f"stop took {took:.1f} s"


def _has_bytes(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
