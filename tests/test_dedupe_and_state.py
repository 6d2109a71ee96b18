"""Dedupe by event id: redeliveries answer 200 and change nothing, across clean restarts and crashes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import orjson

from exporter import samples
from exporter.state import StateStore
from tests.conftest import REPO, SECRET, make_event, sign
from tests.ingest_support import make_config, running_exporter


async def test_redelivery_answers_200_and_changes_no_business_metric(tmp_path):
    config = make_config(tmp_path / "s.sqlite3")
    event = make_event("charge.succeeded", samples.charge(amount=1000, currency="eur"), created=int(time.time()) - 5)
    async with running_exporter(config) as ex:
        for _ in range(3):
            assert await ex.post_event(event) == 200
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 1
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == 2
        assert ex.value("stripe_charges_total", {"currency": "eur"}) == 1
        assert ex.value("stripe_charge_amount_total", {"currency": "eur"}) == 10.0
        assert ex.value("stripe_events_total", {"type": "charge.succeeded"}) == 1
        assert ex.value("stripe_event_delivery_delay_seconds_count") == 1


async def test_dedupe_survives_a_clean_restart(tmp_path):
    config = make_config(tmp_path / "s.sqlite3")
    events = [make_event("charge.succeeded", samples.charge(amount=100 * i)) for i in range(1, 6)]
    async with running_exporter(config) as ex:
        for event in events:
            assert await ex.post_event(event) == 200
    async with running_exporter(config) as ex:
        for event in events:
            assert await ex.post_event(event) == 200
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == 5
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 0
        assert ex.value("stripe_charges_total", {"currency": "usd"}) is None


def test_state_store_flushes_in_batches_and_prunes(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path, retention_seconds=4 * 86400)
    now = 1_800_000_000
    assert store.check_and_mark("evt_a", now) is False
    assert store.check_and_mark("evt_a", now) is True  # seen while still pending
    store.flush(now)
    other = sqlite3.connect(path)
    assert other.execute("select count(*) from seen_events").fetchone()[0] == 1
    assert store.check_and_mark("evt_a", now + 10) is True  # seen from disk
    store.check_and_mark("evt_old", now - 5 * 86400)
    store.put("ns", "k", {"v": 1})
    store.flush(now)
    assert store.prune(now) == 1
    assert store.check_and_mark("evt_old", now) is False  # beyond retention: forgotten
    assert store.check_and_mark("evt_a", now) is True  # within 4 days: kept
    assert store.get("ns", "k") == {"v": 1}
    store.delete("ns", "k")
    assert store.get("ns", "k") is None
    store.close()
    reopened = StateStore(path)
    assert reopened.get("ns", "k") is None
    assert reopened.check_and_mark("evt_a", now) is True
    reopened.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve(tmp_path, port: int, mport: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET, "BILLINGWATCH_STATE": str(tmp_path / "state.sqlite3")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{mport}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/readyz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exporter did not start")


def _post(port: int, event: dict) -> int:
    body = orjson.dumps(event)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/stripe", data=body, method="POST",
                                 headers={"Stripe-Signature": sign(body, SECRET)})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


def _metric(mport: int, line_prefix: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_sigterm_flushes_state_and_exits_zero(tmp_path):
    port, mport = _free_port(), _free_port()
    proc = _start_serve(tmp_path, port, mport)
    events = [make_event("invoice.paid", samples.invoice(total=500 + i)) for i in range(20)]
    try:
        for event in events:
            assert _post(port, event) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "billingwatch stopped" in err
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    ids = {row[0] for row in db.execute("select id from seen_events")}
    assert {e["id"] for e in events} <= ids


def test_crash_loses_at_most_the_last_second_of_dedupe_memory(tmp_path):
    port, mport = _free_port(), _free_port()
    proc = _start_serve(tmp_path, port, mport)
    early = [make_event("charge.succeeded", samples.charge(amount=300)) for _ in range(10)]
    try:
        for event in early:
            assert _post(port, event) == 200
        time.sleep(1.6)  # longer than the 1 s flush interval
    finally:
        proc.kill()  # SIGKILL: no shutdown hook runs
        proc.wait(timeout=10)
    proc = _start_serve(tmp_path, port, mport)
    try:
        for event in early:
            assert _post(port, event) == 200
        assert _metric(mport, 'billingwatch_webhook_requests_total{outcome="duplicate"}') == 10.0
        assert _metric(mport, 'stripe_charges_total{currency="usd"}') is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_ids_written_by_another_process_are_found(tmp_path):
    # Dedupe reads the table itself: an id another process put there is a duplicate, one nobody wrote is not.
    path = tmp_path / "s.sqlite3"
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO seen_events (id, received) VALUES ('evt_outside', ?)", (int(time.time()),))
    db.commit()
    db.close()
    store = StateStore(path)
    assert store.seen("evt_outside")
    assert store.check_and_mark("evt_outside", time.time()) is True
    assert not store.seen("evt_never")
    assert store.check_and_mark("evt_never", time.time()) is False
    store.close()


async def test_db_lookups_are_exposed_and_count_every_read_of_the_table(tmp_path):
    config = make_config(tmp_path / "s.sqlite3")
    event = make_event("charge.succeeded", samples.charge())
    async with running_exporter(config) as ex:
        assert ex.value("billingwatch_state_seen_db_lookups_total") == 0
        assert await ex.post_event(event) == 200  # new: one read of the table found nothing
        assert ex.value("billingwatch_state_seen_db_lookups_total") == 1
        for _ in range(3):
            assert await ex.post_event(event) == 200  # committed: each redelivery reads the table and finds it
        assert ex.value("billingwatch_state_seen_db_lookups_total") == 4
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == 3
