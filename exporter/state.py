"""Embedded SQLite state: the seen-event-id store behind dedupe, and a small key/value store for detectors.

Writes are batched in memory and flushed at least every `flush_interval` seconds (a crash loses at most that
much), and on shutdown. Memory stays bounded: only the ids of the current batch are held in Python; lookups of
older ids go to SQLite's index.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

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


class StateStore:
    def __init__(self, path: str | Path, *, retention_seconds: int = 4 * 86400):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.retention_seconds = retention_seconds
        # isolation_level=None: we issue BEGIN/COMMIT ourselves around each batch.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL with WAL survives a process crash (only power loss can drop the last transaction).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._pending_seen: dict[str, int] = {}
        self._pending_kv: dict[tuple[str, str], Any] = {}
        self._closed = False

    # -- seen event ids --------------------------------------------------------------------------------------

    def check_and_mark(self, event_id: str, now: float) -> bool:
        """True if `event_id` was seen before; otherwise remember it and return False."""
        if event_id in self._pending_seen:
            return True
        row = self._db.execute("SELECT 1 FROM seen_events WHERE id = ?", (event_id,)).fetchone()
        if row is not None:
            return True
        self._pending_seen[event_id] = int(now)
        return False

    def seen_count(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM seen_events").fetchone()
        return n + len(self._pending_seen)

    # -- key/value state for detectors -----------------------------------------------------------------------

    def put(self, ns: str, key: str, value: Any) -> None:
        self._pending_kv[(ns, key)] = value

    def delete(self, ns: str, key: str) -> None:
        self._pending_kv[(ns, key)] = _DELETED

    def get(self, ns: str, key: str) -> Any:
        pending = self._pending_kv.get((ns, key), None)
        if pending is _DELETED:
            return None
        if pending is not None:
            return pending
        row = self._db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return orjson.loads(row[0]) if row else None

    def items(self, ns: str) -> Iterator[tuple[str, Any]]:
        """Every (key, value) of a namespace, pending writes included."""
        pending = {k: v for (n, k), v in self._pending_kv.items() if n == ns}
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
        return bool(self._pending_seen or self._pending_kv)

    def flush(self, now: float | None = None) -> None:
        if self._closed or not self.dirty:
            return
        now_i = int(now if now is not None else time.time())
        seen = list(self._pending_seen.items())
        kv = list(self._pending_kv.items())
        db = self._db
        db.execute("BEGIN")
        try:
            if seen:
                db.executemany("INSERT OR IGNORE INTO seen_events (id, received) VALUES (?, ?)", seen)
            upserts = [(ns, k, orjson.dumps(v), now_i) for (ns, k), v in kv if v is not _DELETED]
            deletes = [(ns, k) for (ns, k), v in kv if v is _DELETED]
            if upserts:
                db.executemany(
                    "INSERT INTO kv (ns, key, value, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                    upserts,
                )
            if deletes:
                db.executemany("DELETE FROM kv WHERE ns = ? AND key = ?", deletes)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        # Only forget the batch once it is on disk (flush runs on the event loop with no await inside, so
        # nothing can have been added meanwhile).
        self._pending_seen.clear()
        self._pending_kv.clear()

    def prune(self, now: float) -> int:
        """Forget ids older than the retention; returns how many were dropped."""
        cutoff = int(now - self.retention_seconds)
        cur = self._db.execute("DELETE FROM seen_events WHERE received < ?", (cutoff,))
        return cur.rowcount

    def prune_namespace(self, ns: str, older_than: float) -> int:
        """Forget key/value entries of `ns` last written before `older_than` (unix seconds)."""
        self.flush()
        cur = self._db.execute("DELETE FROM kv WHERE ns = ? AND updated < ?", (ns, int(older_than)))
        return cur.rowcount

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._db.close()
