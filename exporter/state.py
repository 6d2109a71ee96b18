"""Embedded SQLite state: the seen-event-id store behind dedupe, and a small key/value store for detectors.

Durability (docs/faults.md): a webhook is answered 200 only once its event id is committed. Ids of concurrent
requests are written together ("group commit"): the first new id of a loop iteration schedules a commit; ids
that arrive while a commit runs go into the next one, so one transaction serves every request
waiting meanwhile. The writer connection uses WAL with `synchronous=NORMAL`: a commit has been written into the
WAL (the kernel holds it) before the answer, so an acknowledged id survives a crash or kill of the process. The
WAL is fsync'd by the checkpoint, once a second: an OS crash or a power loss can lose the ids of that last second
(docs/faults.md says what that costs; an fsync per commit doubled the exporter's CPU per webhook, docs/benchmark.md).
A failed commit acknowledges nothing: its requests are answered 503 (Stripe retries them), the ids are forgotten,
and the store reports itself not writable until a write succeeds again.

Every write runs in one writer thread (`_Writer`), in order, never on the event loop: id commits, the detectors'
key/value batch (written in chunks of KV_CHUNK_ROWS rows, so an id commit waits behind one short chunk at most)
and pruning. Lookups read SQLite (the primary key) on the caller's thread.

At start the file is checked (`PRAGMA quick_check`) and locked to this process (a `flock` on `<path>.lock`);
anything unusable raises StateError with a one-line reason naming the path and what to do. A state file that
does not exist yet is created 0600 (its directory 0700), through a temporary file renamed into place, so a
missing or empty file is never mistaken for a fresh start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from exporter import logs

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
# Earlier versions (up to b3f67e2) named the big-row namespaces "zz_<name>", to sort them after the small rows
# for SQLite's page splits; bench/state_layout.py measured no difference (month-start run, 250,000 subscriptions),
# so they have plain names now and the old rows are renamed at start (one UPDATE, a no-op once done).
PREFIXED_NAMESPACES = ("zz_duplicate_charge", "zz_ledger")

_DELETED = object()

# A writer waits this long for a lock held by another process (a sqlite3 shell, a backup tool) before the
# transaction fails and its requests are answered 503: long enough for a short external transaction, short
# enough that a webhook is answered fast. Once a write has failed, the next ones do not wait at all (each is
# still an attempt, so the first one after the lock is released succeeds).
WRITE_BUSY_TIMEOUT_SECONDS = 0.5
# Lookups run on the event loop: they never wait for a lock (a WAL reader only meets one during recovery).
READ_BUSY_TIMEOUT_SECONDS = 0.02
# An episode of failed writes ends only after this long without a failure: a full disk still takes the odd
# commit that fits in the WAL's allocated space, and readiness, the metric and the log must not flap with it.
RECOVERY_QUIET_SECONDS = 5.0
# Rows per key/value transaction, written as one multi-row statement (one sqlite3_step: the writer takes the GIL
# back once per chunk, not once per row as executemany does). Id commits queue behind one chunk at most: at the
# ingest benchmark's 2,000 events/s a 1,000-row executemany chunk took 20-60 ms and the id commits waiting behind
# it made the p99 (56 ms, 2026-12-03); 100 rows take about 2 ms.
KV_CHUNK_ROWS = 100
PRUNE_CHUNK_ROWS = 5000
# SQLite cuts the WAL back to journal_size_limit in the first commit after a checkpoint let it start over: that is
# an id commit, and every webhook waiting for it waits for the ftruncate. With 4 MB, at 1,000 of the ingest
# benchmark's events a second (each changed subscription is a 4 KB page in the WAL, so the WAL grows by MBs a
# second), that ftruncate took up to 67 ms (strace) and the longest id commit was 77-96 ms; without the cut, 4-20 ms
# (four runs alternated, load 4-5, 2026-12-02, with 50-row key/value chunks). 64 MB is far above what a second of
# one account's traffic writes, and still bounds the file on disk after a burst.
WAL_SIZE_LIMIT_BYTES = 64 << 20

SEEN_ROWS_PER_STATEMENT = 2000  # ids per one-statement group commit (SQLite allows 32,766 parameters)

FRESH_START_HINT = "(the seen event ids are then lost: redeliveries of the last days count again)"


@functools.lru_cache(maxsize=256)
def _insert_seen_sql(rows: int) -> str:
    return "INSERT OR IGNORE INTO seen_events (id, received) VALUES " + ",".join(["(?, ?)"] * rows)


@functools.lru_cache(maxsize=128)
def _upsert_kv_sql(rows: int) -> str:
    return (
        "INSERT INTO kv (ns, key, value, updated) VALUES " + ",".join(["(?, ?, ?, ?)"] * rows)
        + " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, updated = excluded.updated"
    )


@functools.lru_cache(maxsize=128)
def _delete_kv_sql(rows: int) -> str:
    return "DELETE FROM kv WHERE (ns, key) IN (VALUES " + ",".join(["(?, ?)"] * rows) + ")"


def _flat(rows: list[tuple]) -> list[Any]:
    return [v for row in rows for v in row]


class StateError(Exception):
    """The state file cannot be used at all; the message is one line naming the path and what to do."""


class StateUnavailable(Exception):
    """A write to the state failed: whatever it held is not acknowledged."""


class _SeenBatch:
    __slots__ = ("future", "ids")

    def __init__(self, ids: dict[str, int], future: asyncio.Future[None] | None):
        self.ids = ids
        self.future = future


class _Writer:
    """The state's one writer thread, running jobs (plain callables) in the order they were queued.

    Special machinery kept because the benchmark showed it matters: with a ThreadPoolExecutor (submit with its
    Future and work item, a done callback, then call_soon_threadsafe) handing over a group commit and taking its
    result back were 6.9 % of the event loop's samples at saturation; here an id commit is one SimpleQueue.put (C)
    on the loop and one call_soon_threadsafe back, which resolves the batch's one future: 4.3 % (py-spy, server
    pinned, 2026-12-03, docs/benchmark.md).
    Started with the first job (stores in memory never need it); close() runs what is queued, then ends it."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.closed = False

    def put(self, job: Callable[[], None]) -> None:
        if self.closed:
            raise RuntimeError("the state writer is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="state-writer", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """`fn(*args)` in the writer thread, as a future (for the few jobs a second that are not id commits)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to whoever awaits the future, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)

        self.put(job)
        return future

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            job()

    def stop(self) -> None:
        """No more jobs; those queued still run (the thread ends after them)."""
        if not self.closed:
            self.closed = True
            self._queue.put(None)

    def close(self) -> None:
        """stop(), and wait until every queued job has run."""
        self.stop()
        if self._thread is not None:
            self._thread.join()


def _connect(path: str, timeout: float) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves around each batch.
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path) -> None:
    """A new, empty state database at `path`, 0600, appearing whole (written aside, then renamed)."""
    tmp = path.with_name(path.name + ".new")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-journal")):
        leftover.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
    finally:
        db.close()  # the last connection checkpoints the WAL into the file and removes it
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _check(path: str) -> None:
    """Raise StateError unless `path` is an intact BillingWatch state database."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=WRITE_BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise StateError(f"state {path} cannot be opened: {exc}") from None
    try:
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise StateError(
                f"state {path} is not a readable SQLite database ({exc}): restore it from a backup, or move it "
                f"away to start afresh {FRESH_START_HINT}"
            ) from None
        try:
            # Reads every page (about 0.3 s per 100 MB): corrupt pages are found here, not by a webhook.
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        except sqlite3.Error as exc:
            problems = [str(exc)]
    finally:
        db.close()
    if problems != ["ok"]:
        raise StateError(
            f"state {path} is damaged (quick_check: {'; '.join(problems)[:200]}): restore it from a backup, or "
            f"move it away to start afresh {FRESH_START_HINT}"
        )
    if not {"seen_events", "kv"} <= tables:
        raise StateError(
            f"state {path} is a SQLite database but not BillingWatch state (no seen_events/kv tables): check "
            "--state / BILLINGWATCH_STATE"
        )


def _lock(path: Path) -> int:
    """An exclusive lock on `<path>.lock`, held as long as the process (or close()) keeps the fd open."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"state {path}: cannot open the lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateError(
            f"state {path} is in use by another billingwatch process (pid {holder}, lock {lock_path}): one "
            "process per state file; stop the other one or give this one its own --state"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_state_file(path: Path) -> int:
    """Check, lock and if needed create the state file; returns the lock's fd. Raises StateError."""
    if path.is_dir():
        raise StateError(f"state {path} is a directory: give the path of a file (created if missing)")
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {parent}: {exc.strerror}") from None
    lock_fd = _lock(path)
    try:
        if not path.exists():
            try:
                _create(path)
            except (OSError, sqlite3.Error) as exc:
                raise StateError(f"cannot create state {path}: {getattr(exc, 'strerror', None) or exc}") from None
        else:
            try:
                os.close(os.open(path, os.O_RDWR))
            except OSError as exc:
                raise StateError(f"state {path} cannot be opened for writing: {exc.strerror}") from None
            if path.stat().st_size == 0:
                raise StateError(
                    f"state {path} is empty (0 bytes), not a state database: restore it from a backup, or delete "
                    f"it to start afresh {FRESH_START_HINT}"
                )
            _check(str(path))
    except BaseException:
        os.close(lock_fd)
        raise
    return lock_fd


class StateStore:
    def __init__(self, path: str | Path, *, retention_seconds: int = 4 * 86400):
        self.path = str(path)
        self.retention_seconds = retention_seconds
        self._in_memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self._lock_fd = None if self._in_memory else open_state_file(Path(self.path))
        try:
            # Lookups use _db on the caller's thread; every write goes through _wdb under _write_lock. A database
            # in memory exists once per connection, so there both are the same connection.
            self._db = _connect(self.path, READ_BUSY_TIMEOUT_SECONDS)
            if self._in_memory:
                self._db.executescript(_SCHEMA)
                self._wdb = self._db
            else:
                self._wdb = _connect(self.path, WRITE_BUSY_TIMEOUT_SECONDS)
                self._wdb.execute("PRAGMA journal_mode=WAL")
                # NORMAL: a commit is a write into the WAL, which a killed process cannot take back; the fsync
                # waits for the next checkpoint (see the module docstring).
                self._wdb.execute("PRAGMA synchronous=NORMAL")
                # Checkpoints (copying the WAL into the database, two more fsyncs) would land in some webhook's
                # commit; checkpoint() runs them from its own connection instead, which writers do not wait for.
                self._wdb.execute("PRAGMA wal_autocheckpoint=0")
                # Once checkpointed, the WAL is cut back to this size (WAL_SIZE_LIMIT_BYTES says why it is large).
                self._wdb.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
                self._cdb = _connect(self.path, 0)
            self._wdb.execute("UPDATE kv SET ns = substr(ns, 4) WHERE ns IN (?, ?)", PREFIXED_NAMESPACES)
        except sqlite3.Error as exc:
            self._release_lock()
            raise StateError(f"state {self.path} cannot be read: {exc}: restore it from a backup") from None
        self._write_lock = threading.Lock()
        # The checkpoint runs in a thread of its own (it must not wait behind id commits); close() takes this lock
        # so that it never closes the checkpoint connection under a checkpoint that a cancelled task left running.
        self._checkpoint_lock = threading.Lock()
        self._writer = _Writer()
        weakref.finalize(self, self._writer.stop)  # a store dropped without close() does not leave its thread
        self._pending_seen: dict[str, int] = {}
        self._pending_future: asyncio.Future[None] | None = None  # answered when the pending ids are committed
        self._inflight_seen: list[_SeenBatch] = []
        self._committing = False
        self._pending_kv: dict[tuple[str, str], Any] = {}
        self._pending_prunes: list[tuple[str, int]] = []
        self._inflight_kv: list[dict[tuple[str, str], Any]] = []  # oldest first
        self._closed = False
        self.db_lookups = 0  # lookups that read SQLite (ids not pending in memory)
        self.writable = True
        self.write_errors = 0  # failed write transactions
        self._unwritable_since = 0.0
        self._last_failure = 0.0
        self._busy_ms = int(WRITE_BUSY_TIMEOUT_SECONDS * 1000)
        self.on_writable_change: Callable[[bool], None] | None = None

    # -- seen event ids --------------------------------------------------------------------------------------

    def _known(self, event_id: str) -> bool:
        if event_id in self._pending_seen:
            return True
        return any(event_id in b.ids for b in self._inflight_seen)

    def check_and_mark(self, event_id: str, now: float) -> bool:
        """True if `event_id` was seen before; otherwise remember it (not yet on disk) and return False.

        Raises sqlite3.Error when the table cannot be read (the caller answers 503)."""
        if self.seen(event_id):
            return True
        self._pending_seen[event_id] = int(now)
        return False

    def commit_of(self, event_id: str) -> asyncio.Future[None] | None:
        """The commit that makes `event_id` durable, to await before acknowledging; None if it already is.

        Fails with StateUnavailable if that commit fails. Starts a commit when none is under way."""
        if event_id in self._pending_seen:
            if self._in_memory:
                return None
            future = self._pending_future
            if future is None:
                loop = asyncio.get_running_loop()
                future = self._pending_future = loop.create_future()
                if not self._committing:
                    self._committing = True
                    # call_soon: every request of this loop iteration joins the same commit.
                    loop.call_soon(self._commit_next)
            return future
        for batch in self._inflight_seen:
            if event_id in batch.ids:
                return batch.future
        return None

    def _commit_next(self) -> None:
        """On the event loop: hand the pending ids to the writer thread (or stop, when there are none)."""
        future, self._pending_future = self._pending_future, None
        if self._closed or not self._pending_seen:
            self._committing = False
            if future is not None and not future.done():
                future.set_result(None)
            return
        batch = _SeenBatch(self._pending_seen, future)
        self._pending_seen = {}
        self._inflight_seen.append(batch)
        try:
            self._writer.put(functools.partial(self._commit_batch, batch, asyncio.get_running_loop()))
        except RuntimeError as exc:  # the writer is shut down (closing): nobody may be left waiting
            self._seen_written(batch, exc)

    def _commit_batch(self, batch: _SeenBatch, loop: asyncio.AbstractEventLoop) -> None:
        """In the writer thread: commit a batch of ids, then wake the loop once to answer all of its requests."""
        error: BaseException | None = None
        try:
            self._write_seen(batch.ids)
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: close() has written everything
            loop.call_soon_threadsafe(self._seen_written, batch, error)

    def _seen_written(self, batch: _SeenBatch, error: BaseException | None) -> None:
        if batch in self._inflight_seen:
            self._inflight_seen.remove(batch)
        future = batch.future
        if error is None:
            self._note_ok()
            if future is not None and not future.done():
                future.set_result(None)
        else:
            # Nothing of the batch is acknowledged, so nothing of it is kept: Stripe redelivers, and the
            # redelivery must be taken as new (the filter's stale bits only cost a lookup).
            self._note_failure(error)
            if future is not None and not future.done():
                future.set_exception(StateUnavailable(str(error)))
                future.exception()  # retrieved: no "never retrieved" warning when no request waits
        if self._pending_seen or self._pending_future is not None:
            self._commit_next()
        else:
            self._committing = False

    def _wait_for_locks(self) -> None:
        """In the writer thread, before a write: wait for another process's lock only while writes succeed."""
        busy_ms = int(WRITE_BUSY_TIMEOUT_SECONDS * 1000) if self.writable else 0
        if busy_ms != self._busy_ms:
            self._wdb.execute(f"PRAGMA busy_timeout={busy_ms}")
            self._busy_ms = busy_ms

    def _write_seen(self, ids: dict[str, int]) -> None:
        rows = list(ids.items())
        with self._write_lock:
            self._wait_for_locks()
            if len(rows) <= SEEN_ROWS_PER_STATEMENT:
                # One statement in autocommit mode is its own transaction: a single sqlite3_step, so the worker
                # takes the GIL back once, not once per row and per BEGIN/COMMIT (a busy event loop hands the
                # GIL over only every few ms).
                self._wdb.execute(_insert_seen_sql(len(rows)), _flat(rows))
                return
            self._transaction(lambda db: db.executemany(
                "INSERT OR IGNORE INTO seen_events (id, received) VALUES (?, ?)", rows
            ))

    def seen(self, event_id: str) -> bool:
        """True if `event_id` was seen before; read-only (unlike check_and_mark, remembers nothing)."""
        if self._known(event_id):
            return True
        self.db_lookups += 1
        return self._db.execute("SELECT 1 FROM seen_events WHERE id = ?", (event_id,)).fetchone() is not None

    def seen_count(self) -> int:
        """Counts the table: a scan, so not for the event loop of a big store (prune_in_background counts too)."""
        (n,) = self._db.execute("SELECT count(*) FROM seen_events").fetchone()
        return n + len(self._pending_seen) + sum(len(b.ids) for b in self._inflight_seen)

    # -- key/value state for detectors -----------------------------------------------------------------------

    def put(self, ns: str, key: str, value: Any) -> None:
        self._pending_kv[(ns, key)] = value

    def delete(self, ns: str, key: str) -> None:
        self._pending_kv[(ns, key)] = _DELETED

    def get(self, ns: str, key: str) -> Any:
        pending = self._pending_kv.get((ns, key), None)
        if pending is None:
            for batch in reversed(self._inflight_kv):  # newest first
                pending = batch.get((ns, key), None)
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
        for batch in self._inflight_kv:  # oldest first: newer writes replace older ones
            pending.update((k, v) for (n, k), v in batch.items() if n == ns)
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
        """Whether some write is not on disk yet (pending, or being written)."""
        return bool(
            self._pending_seen or self._pending_kv or self._pending_prunes or self._inflight_seen
            or self._inflight_kv
        )

    def _transaction(self, body: Callable[[sqlite3.Connection], object]) -> None:
        """One write transaction on the writer connection; the caller holds _write_lock."""
        db = self._wdb
        db.execute("BEGIN IMMEDIATE")
        try:
            body(db)
            db.execute("COMMIT")
        except BaseException:
            # The ROLLBACK can fail too (e.g. a full disk); the error that matters is the first one.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _note_ok(self) -> None:
        if not self.writable and time.time() - self._last_failure >= RECOVERY_QUIET_SECONDS:
            self.writable = True
            logs.event(logging.WARNING, "state writable again", path=self.path,
                       unwritable_seconds=round(time.time() - self._unwritable_since, 1))
            if self.on_writable_change is not None:
                self.on_writable_change(True)

    def _note_failure(self, error: BaseException) -> None:
        self.write_errors += 1
        self._last_failure = time.time()
        if self.writable:
            # Once per episode: a full disk fails every commit, and one line says all there is to say.
            self.writable = False
            self._unwritable_since = time.time()
            logs.event(logging.ERROR, "state cannot be saved: webhooks are answered 503 until it can",
                       path=self.path, error=f"{type(error).__name__}: {error}"[:300])
            if self.on_writable_change is not None:
                self.on_writable_change(False)

    def flush(self, now: float | None = None) -> None:
        """Write every pending change on the caller's thread, after any write under way: then all is on disk.

        For shutdown, tests and in-memory stores; the server's periodic flush is flush_in_background."""
        if self._closed:
            return
        seen, self._pending_seen = self._pending_seen, {}
        kv, self._pending_kv = self._pending_kv, {}
        prunes, self._pending_prunes = self._pending_prunes, []
        future, self._pending_future = self._pending_future, None
        try:
            with self._write_lock:
                if seen:
                    self._transaction(lambda db: db.executemany(
                        "INSERT OR IGNORE INTO seen_events (id, received) VALUES (?, ?)", seen.items()
                    ))
                if kv or prunes:
                    upserts, deletes = self._kv_rows(kv.items(), now)
                    self._transaction(lambda db: self._write_kv_rows(db, upserts, deletes, prunes))
        except BaseException as exc:
            for event_id, received in seen.items():
                self._pending_seen.setdefault(event_id, received)
            self._restore_kv(kv, prunes)
            if future is not None and not future.done():
                self._pending_future = future
            if isinstance(exc, sqlite3.Error):
                self._note_failure(exc)
            raise
        self._note_ok()
        if future is not None and not future.done():
            future.set_result(None)

    def commit_pending(self) -> asyncio.Future[None] | None:
        """The commit of every pending id (started if need be), or None when nothing is pending."""
        if not self._pending_seen:
            return self._inflight_seen[-1].future if self._inflight_seen else None
        return self.commit_of(next(iter(self._pending_seen)))

    async def flush_in_background(self, now: float | None = None) -> None:
        """Commit pending ids and the detectors' key/value writes from the writer thread while the loop goes on.

        Raises StateUnavailable when a write fails (the writes stay pending for the next flush; nothing of the
        key/value state is acknowledged to anyone, so keeping it costs nothing but bounded memory)."""
        if self._closed:
            return
        if self._in_memory:
            self.flush(now)
            return
        ids = self.commit_pending()
        if ids is not None:
            await ids
        if not (self._pending_kv or self._pending_prunes):
            # While not writable (an episode lasts until a quiet spell, RECOVERY_QUIET_SECONDS), a probe write
            # each flush is what ends it, with or without traffic.
            if not self.writable:
                await self._run(self._probe)
            return
        kv, self._pending_kv = self._pending_kv, {}
        prunes, self._pending_prunes = self._pending_prunes, []
        self._inflight_kv.append(kv)
        try:
            rows = list(kv.items())
            last = max(len(rows), 1)
            for start in range(0, last, KV_CHUNK_ROWS):
                end = start + KV_CHUNK_ROWS
                chunk_prunes = prunes if end >= last else []
                # Serialised a chunk at a time: the loop never spends more than a chunk's dumps in one go.
                upserts, deletes = self._kv_rows(rows[start:end], now)
                await self._run(self._write_kv, upserts, deletes, chunk_prunes)
        except BaseException:
            # Written again whole by the next flush (upserts are idempotent; newer values put meanwhile win).
            self._restore_kv(kv, prunes)
            raise
        finally:
            self._inflight_kv.remove(kv)

    async def _run(self, job: Callable[..., None], *args: Any) -> None:
        """Run a write job in the writer thread; its failure marks the store unwritable (StateUnavailable)."""
        try:
            await asyncio.wrap_future(self._writer.submit(job, *args))
        except sqlite3.Error as exc:
            self._note_failure(exc)
            raise StateUnavailable(str(exc)) from exc
        self._note_ok()

    def _probe(self) -> None:
        with self._write_lock:
            self._wait_for_locks()
            self._transaction(lambda db: db.execute(
                "INSERT INTO kv (ns, key, value, updated) VALUES ('billingwatch', 'probe', x'31', ?) "
                "ON CONFLICT (ns, key) DO UPDATE SET updated = excluded.updated", (int(time.time()),)
            ))

    def _restore_kv(self, kv: dict[tuple[str, str], Any], prunes: list[tuple[str, int]]) -> None:
        for key, value in kv.items():
            self._pending_kv.setdefault(key, value)
        self._pending_prunes[:0] = prunes

    @staticmethod
    def _kv_rows(
        kv: Iterable[tuple[tuple[str, str], Any]], now: float | None
    ) -> tuple[list[tuple], list[tuple]]:
        # Built (and values serialised) on the caller's thread: a worker thread doing this Python work would
        # hold the GIL in long stretches and stall the event loop.
        now_i = int(now if now is not None else time.time())
        upserts: list[tuple] = []
        deletes: list[tuple] = []
        for (ns, k), v in kv:
            if v is _DELETED:
                deletes.append((ns, k))
            else:
                upserts.append((ns, k, orjson.dumps(v), now_i))
        return upserts, deletes

    def _write_kv(self, upserts: list[tuple], deletes: list[tuple], prunes: list[tuple[str, int]]) -> None:
        with self._write_lock:
            self._wait_for_locks()
            self._transaction(lambda db: self._write_kv_rows(db, upserts, deletes, prunes))

    @staticmethod
    def _write_kv_rows(db: sqlite3.Connection, upserts: list[tuple], deletes: list[tuple],
                       prunes: list[tuple[str, int]]) -> None:
        for start in range(0, len(upserts), KV_CHUNK_ROWS):
            part = upserts[start : start + KV_CHUNK_ROWS]
            db.execute(_upsert_kv_sql(len(part)), _flat(part))
        for start in range(0, len(deletes), KV_CHUNK_ROWS):
            part = deletes[start : start + KV_CHUNK_ROWS]
            db.execute(_delete_kv_sql(len(part)), _flat(part))
        for ns, older_than in prunes:
            db.execute("DELETE FROM kv WHERE ns = ? AND updated < ?", (ns, older_than))

    def prune(self, now: float) -> int:
        """Forget ids older than the retention; returns how many were dropped (synchronous: in-memory stores)."""
        cutoff = int(now - self.retention_seconds)
        with self._write_lock:
            cur = self._wdb.execute("DELETE FROM seen_events WHERE received < ?", (cutoff,))
            return cur.rowcount

    async def prune_in_background(self, now: float) -> tuple[int, int]:
        """prune() from the writer thread, in chunks (id commits get in between); returns (dropped, kept)."""
        if self._in_memory:
            return self.prune(now), self.seen_count()
        cutoff = int(now - self.retention_seconds)
        dropped = [0]

        def chunk() -> None:
            with self._write_lock:
                self._transaction(lambda db: dropped.__setitem__(0, db.execute(
                    "DELETE FROM seen_events WHERE id IN "
                    "(SELECT id FROM seen_events WHERE received < ? LIMIT ?)", (cutoff, PRUNE_CHUNK_ROWS)
                ).rowcount))

        total = 0
        while True:
            await self._run(chunk)
            total += dropped[0]
            if dropped[0] < PRUNE_CHUNK_ROWS:
                break
        count = [0]

        def counting() -> None:
            with self._write_lock:
                count[0] = self._wdb.execute("SELECT count(*) FROM seen_events").fetchone()[0]

        await asyncio.wrap_future(self._writer.submit(counting))
        return total, count[0]

    def prune_namespace(self, ns: str, older_than: float) -> None:
        """Forget key/value entries of `ns` last written before `older_than` (unix seconds), with the next flush
        (the entries written by that flush are stamped with its time, so they are kept)."""
        self._pending_prunes.append((ns, int(older_than)))
        if self._in_memory:
            self.flush()

    async def checkpoint(self) -> None:
        """Copy the WAL into the database off the loop: first beside the writer (PASSIVE: never waits for, nor
        blocks, it), then what the writer appended meanwhile, from the writer thread between two writes.

        The second pass is what lets the WAL start over. SQLite rewrites the WAL from its beginning only after a
        checkpoint copied every frame in it; under steady traffic the writer always appends a few frames while
        the first pass runs, so the WAL never started over: after the ingest benchmark's 1M events it was
        508 MB on disk and its index (`-shm`, mapped into the process) 7.1 MB of RSS, both growing with uptime
        (2026-12-03). The second pass only copies the frames of the first pass's duration, so an id commit waits
        for little (and a WAL kept small is never cut back, see WAL_SIZE_LIMIT_BYTES)."""
        if self._in_memory or self._closed:
            return

        def run() -> None:
            with self._checkpoint_lock, contextlib.suppress(sqlite3.Error):  # a failed one is retried by the next
                if not self._closed:
                    self._cdb.execute("PRAGMA wal_checkpoint(PASSIVE)")

        await asyncio.to_thread(run)
        with contextlib.suppress(RuntimeError):  # the writer is closed: close() checkpoints on its own
            await asyncio.wrap_future(self._writer.submit(self._catch_up))

    def _catch_up(self) -> None:
        with self._write_lock, contextlib.suppress(sqlite3.Error):  # a failed one is retried by the next
            self._wdb.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Write what is pending and close. Raises StateUnavailable when that last write fails."""
        if self._closed:
            return
        self._writer.close()  # writes under way and queued finish first
        try:
            self.flush()
        except sqlite3.Error as exc:
            raise StateUnavailable(str(exc)) from exc
        finally:
            self._closed = True
            with self._write_lock, self._checkpoint_lock:
                if self._wdb is not self._db:
                    self._wdb.close()
                    self._cdb.close()
                self._db.close()
            self._release_lock()
