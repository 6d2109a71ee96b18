"""StateStore's writer thread: group commits of seen ids, the periodic key/value flush; nothing is lost or seen
twice, a failed write acknowledges nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from exporter.state import StateStore, StateUnavailable

NOW = 1_800_000_000


@pytest.fixture(autouse=True)
def _no_quiet_spell(monkeypatch):
    """An episode of failed writes ends at the first success here (RECOVERY_QUIET_SECONDS is tested below)."""
    monkeypatch.setattr("exporter.state.RECOVERY_QUIET_SECONDS", 0.0)


def _on_disk(path) -> tuple[set[str], dict[str, bytes]]:
    db = sqlite3.connect(path)
    try:
        ids = {row[0] for row in db.execute("SELECT id FROM seen_events")}
        kv = {row[0]: row[1] for row in db.execute("SELECT key, value FROM kv WHERE ns != 'billingwatch'")}
    finally:
        db.close()
    return ids, kv


class _Gate:
    """Holds every write (id commit, key/value chunk, probe) inside the writer thread until released; counts
    them, and fails them while `fail` is set."""

    def __init__(self, store: StateStore, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.transactions = 0
        for name in ("_write_seen", "_write_kv", "_probe"):
            monkeypatch.setattr(store, name, self._gated(getattr(store, name)))

    def _gated(self, original):
        def gated(*args):
            self.entered.set()
            assert self.release.wait(10)
            self.transactions += 1
            if self.fail:
                raise sqlite3.OperationalError("database or disk is full")
            original(*args)

        return gated


async def test_concurrent_ids_share_one_commit_and_are_on_disk_when_it_answers(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    gate = _Gate(store, monkeypatch)
    futures = []
    for i in range(5):
        assert store.check_and_mark(f"evt_{i}", NOW) is False
        futures.append(store.commit_of(f"evt_{i}"))
    assert len({id(f) for f in futures}) == 1  # one loop iteration: one commit for all
    assert await asyncio.to_thread(gate.entered.wait, 10)
    # Mid-commit: not on disk, not answered, still known to dedupe; a new id goes into the next commit.
    assert _on_disk(path)[0] == set() and not futures[0].done()
    assert store.check_and_mark("evt_0", NOW) is True
    assert store.commit_of("evt_0") is futures[0]  # a redelivery waits for the same commit
    assert store.check_and_mark("evt_late", NOW) is False
    late = store.commit_of("evt_late")
    assert late is not futures[0]
    gate.release.set()
    await asyncio.gather(*futures)
    assert {f"evt_{i}" for i in range(5)} <= _on_disk(path)[0]
    await late
    assert _on_disk(path)[0] == {f"evt_{i}" for i in range(5)} | {"evt_late"}
    assert gate.transactions == 2
    assert store.commit_of("evt_0") is None  # durable: nothing to wait for
    assert store.writable and store.write_errors == 0
    store.close()


async def test_failed_commit_acknowledges_nothing_and_forgets_the_ids(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    gate = _Gate(store, monkeypatch, fail=True)
    gate.release.set()
    store.check_and_mark("evt_1", NOW)
    with pytest.raises(StateUnavailable, match="disk is full"):
        await store.commit_of("evt_1")
    assert not store.writable and store.write_errors == 1
    # Not saved, so not seen: Stripe's redelivery must be taken as new.
    assert store.check_and_mark("evt_1", NOW) is False
    with pytest.raises(StateUnavailable):
        await store.commit_of("evt_1")
    assert store.write_errors == 2
    gate.fail = False
    assert store.check_and_mark("evt_1", NOW) is False  # the redelivery after the disk is back
    store.check_and_mark("evt_2", NOW)
    await store.commit_of("evt_1")
    assert store.writable
    assert _on_disk(path)[0] == {"evt_1", "evt_2"}
    store.close()


async def test_failed_key_value_flush_keeps_the_writes_pending_and_newer_ones_win(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    store.put("ns", "k", 1)
    gate = _Gate(store, monkeypatch, fail=True)
    gate.release.set()
    with pytest.raises(StateUnavailable):
        await store.flush_in_background(NOW)
    assert not store.writable
    store.put("ns", "k", 2)  # newer than the failed batch: must win
    assert store.get("ns", "k") == 2
    gate.fail = False
    await store.flush_in_background(NOW)
    assert store.writable and not store.dirty
    assert _on_disk(path)[1] == {"k": b"2"}
    store.close()


async def _failed_commit(tmp_path, monkeypatch) -> tuple[StateStore, _Gate]:
    """A store whose commit of evt_1 has just failed; its gate still fails every write."""
    store = StateStore(tmp_path / "s.sqlite3")
    gate = _Gate(store, monkeypatch, fail=True)
    gate.release.set()
    store.check_and_mark("evt_1", NOW)
    with pytest.raises(StateUnavailable):
        await store.commit_of("evt_1")
    return store, gate


async def test_unwritable_store_probes_on_a_quiet_flush_and_recovers(tmp_path, monkeypatch):
    store, gate = await _failed_commit(tmp_path, monkeypatch)
    assert not store.writable and not store.dirty  # nothing pending: the failed ids were answered 503
    with pytest.raises(StateUnavailable):
        await store.flush_in_background(NOW)  # no traffic: a probe write is what notices the end of a failure
    gate.fail = False
    await store.flush_in_background(NOW)
    assert store.writable and store.write_errors == 2
    store.close()


async def test_close_waits_for_the_background_write_and_keeps_order(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    store.put("ns", "k", "old")
    gate = _Gate(store, monkeypatch)
    task = asyncio.create_task(store.flush_in_background(NOW))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    store.put("ns", "k", "new")
    assert store.get("ns", "k") == "new"
    threading.Timer(0.2, gate.release.set).start()
    store.close()  # waits for the older batch, then writes the newer value after it
    await task
    assert _on_disk(path)[1] == {"k": b'"new"'}
    reopened = StateStore(path)
    assert reopened.get("ns", "k") == "new"
    reopened.close()


async def test_cancelled_background_flush_is_completed_by_close(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    for i in range(3):
        store.put("ns", f"k{i}", i)
    gate = _Gate(store, monkeypatch)
    task = asyncio.create_task(store.flush_in_background(NOW))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get("ns", "k1") == 1  # still visible while its write goes on
    store.check_and_mark("evt_2", NOW)
    threading.Timer(0.2, gate.release.set).start()
    store.close()
    assert _on_disk(path) == ({"evt_2"}, {"k0": b"0", "k1": b"1", "k2": b"2"})


async def test_pruning_runs_in_the_writer_thread_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("exporter.state.PRUNE_CHUNK_ROWS", 10)
    store = StateStore(tmp_path / "s.sqlite3", retention_seconds=4 * 86400)
    for i in range(25):
        store.check_and_mark(f"evt_old_{i}", NOW - 5 * 86400)
    store.check_and_mark("evt_new", NOW)
    store.flush(NOW)
    loop_thread = threading.get_ident()
    threads = set()
    original = store._transaction

    def recording(body):
        threads.add(threading.get_ident())
        original(body)

    monkeypatch.setattr(store, "_transaction", recording)
    assert await store.prune_in_background(NOW) == (25, 1)
    assert threads and loop_thread not in threads
    store.close()


async def test_an_episode_ends_only_after_a_quiet_spell(tmp_path, monkeypatch):
    monkeypatch.setattr("exporter.state.RECOVERY_QUIET_SECONDS", 0.3)
    store, gate = await _failed_commit(tmp_path, monkeypatch)
    gate.fail = False
    store.check_and_mark("evt_2", NOW)
    await store.commit_of("evt_2")  # answered 200: durable, whatever the episode
    assert not store.writable  # a success right after a failure (a full disk's odd commit) ends nothing
    await asyncio.sleep(0.35)
    await store.flush_in_background(NOW)  # the probe after the quiet spell
    assert store.writable
    store.close()


async def test_in_memory_store_flushes_synchronously():
    store = StateStore(":memory:")
    store.check_and_mark("evt_1", NOW)
    assert store.commit_of("evt_1") is None
    await store.flush_in_background(NOW)
    assert not store.dirty
    assert store.check_and_mark("evt_1", NOW) is True
    store.close()
