"""Embedded SQLite state: the seen-event-id store behind dedupe, and a small key/value store for detectors.

Writes are batched in memory and flushed at least every `flush_interval` seconds (a crash loses at most that
much), and on shutdown. Memory stays bounded: only the ids of the current batch are held in Python; lookups of
older ids go to SQLite's index.

`flush()` writes synchronously. `flush_in_background()` (the service's periodic flush) writes the batch from a
worker thread on a second connection, so the event loop keeps answering webhooks meanwhile (a second's batch
takes milliseconds to write: a pause every request arriving meanwhile would wait for). Until its transaction is
committed, a batch stays visible to lookups in memory ("in flight"); one lock orders every write, so batches
reach the database in the order they were taken.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from exporter.seen_filter import SeenFilter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_events (
    id TEXT PRIMARY KEY,
    received INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_events_received ON seen_events (received);
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_updated ON kv (ns, updated);
"""

_DELETED = object()


class _Batch:
    """Writes taken out of the pending maps for one transaction; visible to lookups until committed."""

    __slots__ = ("committed", "deletes", "kv", "seen", "seen_rows", "upserts")

    def __init__(self, seen: dict[str, int], kv: dict[tuple[str, str], Any], now: float | None):
        self.seen = seen
        self.kv = kv
        self.committed = False
        # The rows are built (and values serialised) here, on the thread that took the batch: a worker thread
        # doing this Python work would hold the GIL in long stretches and stall the event loop.
        now_i = int(now if now is not None else time.time())
        # The dict's own items view: no tuple per id (the dict is never changed once taken).
        self.seen_rows = seen.items()
        self.upserts = [(ns, k, orjson.dumps(v), now_i) for (ns, k), v in kv.items() if v is not _DELETED]
        self.deletes = [(ns, k) for (ns, k), v in kv.items() if v is _DELETED]


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves around each batch.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL with WAL survives a process crash (only power loss can drop the last transaction).
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class StateStore:
    def __init__(self, path: str | Path, *, retention_seconds: int = 4 * 86400):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.retention_seconds = retention_seconds
        # Lookups use _db on the caller's thread; every write goes through _wdb under _write_lock. A database in
        # memory exists once per connection, so there both are the same connection and writes stay synchronous.
        self._db = _connect(self.path)
        self._db.executescript(_SCHEMA)
        self._in_memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self._wdb = self._db if self._in_memory else _connect(self.path)
        self._write_lock = threading.Lock()
        self._pending_seen: dict[str, int] = {}
        self._pending_kv: dict[tuple[str, str], Any] = {}
        self._inflight: list[_Batch] = []  # oldest first
        self._closed = False
        # Answers "certainly new" for almost every new id without a read (exporter/seen_filter.py); it must hold
        # every id the table holds, so it is filled from the table before the first lookup.
        self._filter = SeenFilter(retention_seconds)
        self.loaded_ids = self._filter.add_all(
            self._db.execute("SELECT id, received FROM seen_events ORDER BY received")
        )
        self.db_lookups = 0  # lookups the filter could not answer (redeliveries and false positives)

    # -- seen event ids --------------------------------------------------------------------------------------

    def check_and_mark(self, event_id: str, now: float) -> bool:
        """True if `event_id` was seen before; otherwise remember it and return False."""
        if event_id in self._pending_seen:
            return True
        for batch in self._inflight:
            if event_id in batch.seen:
                return True
        if self._filter.check_and_add(event_id, now):
            self.db_lookups += 1
            row = self._db.execute("SELECT 1 FROM seen_events WHERE id = ?", (event_id,)).fetchone()
            if row is not None:
                return True
        self._pending_seen[event_id] = int(now)
        return False

    def seen(self, event_id: str) -> bool:
        """True if `event_id` was seen before; read-only (unlike check_and_mark, remembers nothing)."""
        if event_id in self._pending_seen or any(event_id in b.seen for b in self._inflight):
            return True
        if not self._filter.may_contain(event_id):
            return False
        self.db_lookups += 1
        return self._db.execute("SELECT 1 FROM seen_events WHERE id = ?", (event_id,)).fetchone() is not None

    def seen_count(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM seen_events").fetchone()
        return n + len(self._pending_seen) + sum(len(b.seen) for b in self._inflight if not b.committed)

    # -- key/value state for detectors -----------------------------------------------------------------------

    def put(self, ns: str, key: str, value: Any) -> None:
        self._pending_kv[(ns, key)] = value

    def delete(self, ns: str, key: str) -> None:
        self._pending_kv[(ns, key)] = _DELETED

    def get(self, ns: str, key: str) -> Any:
        pending = self._pending_kv.get((ns, key), None)
        if pending is None:
            for batch in reversed(self._inflight):  # newest first
                pending = batch.kv.get((ns, key), None)
                if pending is not None:
                    break
        if pending is _DELETED:
            return None
        if pending is not None:
            return pending
        row = self._db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return orjson.loads(row[0]) if row else None

    def items(self, ns: str) -> Iterator[tuple[str, Any]]:
        """Every (key, value) of a namespace, pending writes included."""
        pending: dict[str, Any] = {}
        for batch in self._inflight:  # oldest first: newer writes replace older ones
            pending.update((k, v) for (n, k), v in batch.kv.items() if n == ns)
        pending.update((k, v) for (n, k), v in self._pending_kv.items() if n == ns)
        for key, blob in self._db.execute("SELECT key, value FROM kv WHERE ns = ?", (ns,)):
            if key in pending:
                continue
            yield key, orjson.loads(blob)
        for key, value in pending.items():
            if value is not _DELETED:
                yield key, value

    # -- persistence -----------------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether some write is not on disk yet (pending, or in a background flush still running)."""
        return bool(self._pending_seen or self._pending_kv) or any(not b.committed for b in self._inflight)

    def flush(self, now: float | None = None) -> None:
        """Write every pending change, and wait for a background flush in progress: on return all is on disk."""
        if self._closed:
            return
        batch = self._take(now)
        with self._write_lock:
            if batch is not None:
                self._commit_or_restore(batch)

    async def flush_in_background(self, now: float | None = None) -> None:
        """Like flush(), but the writing happens in a worker thread while the event loop goes on."""
        if self._closed:
            return
        if self._in_memory:
            self.flush(now)
            return
        batch = self._take(now)
        if batch is None:
            return
        # Taken on the loop thread, released by the worker: a later flush() waits for this batch to be written.
        self._write_lock.acquire()
        future = asyncio.get_running_loop().run_in_executor(None, self._write_and_release, batch)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The write goes on (close() waits for it through the lock); keep the batch visible until it ends.
            future.add_done_callback(lambda f: self._settle(batch, f.exception() if not f.cancelled() else None))
            raise
        except Exception as exc:
            self._settle(batch, exc)
            raise
        self._settle(batch, None)

    def _take(self, now: float | None) -> _Batch | None:
        if not (self._pending_seen or self._pending_kv):
            return None
        batch = _Batch(self._pending_seen, self._pending_kv, now)
        self._pending_seen = {}
        self._pending_kv = {}
        self._inflight.append(batch)
        return batch

    def _commit_or_restore(self, batch: _Batch) -> None:
        try:
            self._write(batch)
        except BaseException as exc:
            self._settle(batch, exc)
            raise
        self._settle(batch, None)

    def _write_and_release(self, batch: _Batch) -> None:
        try:
            self._write(batch)
        finally:
            self._write_lock.release()

    def _settle(self, batch: _Batch, error: BaseException | None) -> None:
        """On the caller's thread, after a batch's transaction: forget it, or on failure make it pending again."""
        if batch in self._inflight:
            self._inflight.remove(batch)
        if error is not None:
            # Not on disk: pending again, for the next flush; writes made since then are newer and win.
            for event_id, received in batch.seen.items():
                self._pending_seen.setdefault(event_id, received)
            for key, value in batch.kv.items():
                self._pending_kv.setdefault(key, value)

    def _write(self, batch: _Batch) -> None:
        """One transaction on the writer connection; the caller holds _write_lock."""
        db = self._wdb
        db.execute("BEGIN")
        try:
            if batch.seen_rows:
                db.executemany("INSERT OR IGNORE INTO seen_events (id, received) VALUES (?, ?)", batch.seen_rows)
            if batch.upserts:
                db.executemany(
                    "INSERT INTO kv (ns, key, value, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                    batch.upserts,
                )
            if batch.deletes:
                db.executemany("DELETE FROM kv WHERE ns = ? AND key = ?", batch.deletes)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        batch.committed = True

    def prune(self, now: float) -> int:
        """Forget ids older than the retention; returns how many were dropped."""
        cutoff = int(now - self.retention_seconds)
        with self._write_lock:
            cur = self._wdb.execute("DELETE FROM seen_events WHERE received < ?", (cutoff,))
            return cur.rowcount

    def prune_namespace(self, ns: str, older_than: float) -> int:
        """Forget key/value entries of `ns` last written before `older_than` (unix seconds)."""
        self.flush()
        with self._write_lock:
            cur = self._wdb.execute("DELETE FROM kv WHERE ns = ? AND updated < ?", (ns, int(older_than)))
            return cur.rowcount

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        with self._write_lock:
            if self._wdb is not self._db:
                self._wdb.close()
            self._db.close()
