"""Slow, idle and malformed clients against the real `billingwatch serve` process: each is cut off by a limit,
counted, and a real signed webhook is still answered fast meanwhile. The attack code is bench/slow_clients.py's
(the same functions measure the figures in docs/faults.md); here with small numbers and short timeouts."""

from __future__ import annotations

import json
import resource

import pytest

from bench.slow_clients import (
    ExporterProcess,
    close_all,
    count_closed,
    open_idle,
    open_slowloris,
    open_unfinished_chunked,
    send_junk,
    webhook_latencies,
)

SHORT = {"idle_timeout_seconds": 1.5, "body_timeout_seconds": 1.5}
# A real webhook on loopback takes a few ms; one second leaves room for a loaded 2-core CI machine.
FAST_ENOUGH_SECONDS = 1.0


@pytest.fixture
def exporter(tmp_path, request):
    procs: list[ExporterProcess] = []

    def start(server: dict | None = None, **kwargs) -> ExporterProcess:
        ex = ExporterProcess(tmp_path, server)
        ex.start(**kwargs)
        procs.append(ex)
        return ex

    yield start
    for ex in procs:
        if ex.proc is not None and ex.proc.poll() is None:
            ex.stop()


def _closed(ex: ExporterProcess, reason: str) -> float:
    return ex.value("billingwatch_http_connections_closed_total", listener="webhook", reason=reason) or 0.0


async def test_slowloris_heads_are_closed_and_a_real_webhook_is_answered_meanwhile(exporter):
    ex = exporter(SHORT)
    conns = await open_slowloris(ex.port, 200)
    try:
        assert len(conns) == 200
        assert max(await webhook_latencies(ex.webhook_url, 5)) < FAST_ENOUGH_SECONDS
        # Closed by the server's own timer; the deadline only bounds how long the test waits for that.
        assert await count_closed(conns, timeout=SHORT["idle_timeout_seconds"] + 8) == 200
    finally:
        close_all(conns)


async def test_unfinished_chunked_bodies_are_answered_408_and_closed(exporter):
    ex = exporter(SHORT)
    conns = await open_unfinished_chunked(ex.port, 100)
    try:
        assert max(await webhook_latencies(ex.webhook_url, 5)) < FAST_ENOUGH_SECONDS
        assert await count_closed(conns, timeout=SHORT["body_timeout_seconds"] + 8) == 100
        assert _closed(ex, "body_timeout") == 100
        # Not a webhook request outcome: nothing reached signature verification.
        assert ex.value("billingwatch_webhook_requests_total", outcome="invalid_signature") == 0
    finally:
        close_all(conns)


async def test_idle_connections_beyond_the_cap_make_room_for_a_real_webhook(exporter):
    cap = 150
    ex = exporter({"max_connections": cap, "idle_timeout_seconds": 60.0})
    conns = await open_idle(ex.port, 1000)
    try:
        latencies = await webhook_latencies(ex.webhook_url, 5)
        assert len(latencies) == 5 and max(latencies) < FAST_ENOUGH_SECONDS
        assert (ex.value("billingwatch_http_open_connections", listener="webhook") or 0) <= cap
        # Every connection beyond the cap evicted the oldest idle one (the webhooks' own five included).
        assert _closed(ex, "over_capacity") >= 1000 - cap
        # Descriptors stay near the cap: listening sockets, the state database, the scrape connection.
        assert ex.fds() <= cap + 64
    finally:
        close_all(conns)


async def test_sigterm_with_slow_bodies_and_heads_exits_well_within_docker_grace(exporter):
    ex = exporter()  # shipped timeouts (10 s): shutdown must not wait them out
    slow = await open_unfinished_chunked(ex.port, 50)
    heads = await open_slowloris(ex.port, 50)
    try:
        await webhook_latencies(ex.webhook_url, 1)
        rc, seconds = ex.stop()
        assert rc == 0
        assert seconds < 3.0, f"SIGTERM took {seconds:.1f} s"
    finally:
        close_all(slow + heads)


async def test_malformed_requests_are_counted_answered_400_and_logged_rarely(exporter):
    ex = exporter()
    statuses = await send_junk(ex.port, 250)
    assert statuses == {400: 250}, statuses
    assert ex.value("billingwatch_http_malformed_requests_total") == 250
    assert max(await webhook_latencies(ex.webhook_url, 3)) < FAST_ENOUGH_SECONDS
    ex.stop()
    lines = [json.loads(line) for line in ex.log_text().splitlines() if line.startswith("{")]
    noisy = [r for r in lines if r["level"] in ("warning", "error") and r["msg"] != "billingwatch stopped"]
    # One line per minute at most (the run takes seconds): the first, naming the counter.
    assert len(noisy) == 1, noisy
    assert "billingwatch_http_malformed_requests_total" in noisy[0]["msg"]


async def test_a_low_open_files_limit_is_raised_to_the_hard_limit_at_start(exporter):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 512:
        pytest.skip(f"hard open-files limit is {hard}: nothing to raise to")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    ex = exporter(preexec_fn=low_soft_limit)
    started = json.loads(ex.wait_log("billingwatch started"))
    assert started["open_files_limit"] == hard
    assert started["max_connections"] == min(1000, (hard - 128) // 2)
