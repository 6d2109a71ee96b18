"""StateStore.flush_in_background: the periodic flush writes from a worker thread; nothing is lost or seen twice."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from exporter.state import StateStore

NOW = 1_800_000_000


def _on_disk(path) -> tuple[set[str], dict[str, bytes]]:
    db = sqlite3.connect(path)
    try:
        ids = {row[0] for row in db.execute("SELECT id FROM seen_events")}
        kv = {row[0]: row[1] for row in db.execute("SELECT key, value FROM kv")}
    finally:
        db.close()
    return ids, kv


class _Gate:
    """Holds StateStore._write inside the worker thread until released, to look at the store mid-flush."""

    def __init__(self, store: StateStore, monkeypatch: pytest.MonkeyPatch):
        self.entered = threading.Event()
        self.release = threading.Event()
        original = store._write

        def gated(batch):
            self.entered.set()
            assert self.release.wait(10)
            original(batch)

        monkeypatch.setattr(store, "_write", gated)


async def test_batch_in_flight_stays_visible_and_reaches_disk(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    store.check_and_mark("evt_1", NOW)
    store.put("ns", "a", [1])
    gate = _Gate(store, monkeypatch)
    task = asyncio.create_task(store.flush_in_background(NOW))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    # Mid-flush: the event loop runs, the batch is not on disk yet but lookups still see it.
    assert _on_disk(path) == (set(), {})
    assert store.check_and_mark("evt_1", NOW) is True
    assert store.get("ns", "a") == [1]
    assert dict(store.items("ns")) == {"a": [1]}
    assert store.dirty
    # New writes meanwhile go to the next batch; a newer value wins over the one in flight.
    assert store.check_and_mark("evt_2", NOW) is False
    store.put("ns", "a", [2])
    assert store.get("ns", "a") == [2]
    assert store.seen_count() == 2
    gate.release.set()
    await task
    assert _on_disk(path) == ({"evt_1"}, {"a": b"[1]"})
    store.flush(NOW)
    assert _on_disk(path) == ({"evt_1", "evt_2"}, {"a": b"[2]"})
    assert store.seen_count() == 2 and not store.dirty
    store.close()


async def test_synchronous_flush_waits_for_the_background_one_and_keeps_order(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    store.put("ns", "k", "old")
    gate = _Gate(store, monkeypatch)
    task = asyncio.create_task(store.flush_in_background(NOW))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    store.put("ns", "k", "new")
    threading.Timer(0.2, gate.release.set).start()
    store.flush(NOW)  # blocks until the older batch is committed, then writes the newer value after it
    assert _on_disk(path)[1] == {"k": b'"new"'}
    await task
    store.close()
    reopened = StateStore(path)
    assert reopened.get("ns", "k") == "new"
    reopened.close()


async def test_failed_background_write_keeps_the_batch_pending(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    store.check_and_mark("evt_1", NOW)
    store.put("ns", "k", 1)
    original = store._write

    def failing(batch):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_write", failing)
    with pytest.raises(sqlite3.OperationalError):
        await store.flush_in_background(NOW)
    store.put("ns", "k", 2)  # newer than the failed batch: must win
    assert store.check_and_mark("evt_1", NOW) is True
    monkeypatch.setattr(store, "_write", original)
    await store.flush_in_background(NOW)
    assert _on_disk(path) == ({"evt_1"}, {"k": b"2"})
    store.close()


async def test_cancelled_background_flush_is_completed_by_close(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    store.check_and_mark("evt_1", NOW)
    gate = _Gate(store, monkeypatch)
    task = asyncio.create_task(store.flush_in_background(NOW))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.check_and_mark("evt_1", NOW) is True  # still visible while its write goes on
    store.check_and_mark("evt_2", NOW)
    threading.Timer(0.2, gate.release.set).start()
    store.close()
    assert _on_disk(path)[0] == {"evt_1", "evt_2"}


async def test_in_memory_store_flushes_synchronously():
    store = StateStore(":memory:")
    store.check_and_mark("evt_1", NOW)
    await store.flush_in_background(NOW)
    assert not store.dirty
    assert store.check_and_mark("evt_1", NOW) is True
    store.close()
