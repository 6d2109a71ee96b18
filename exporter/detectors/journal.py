"""Persisting a large keyed table through the StateStore with a few rows per second instead of one per change.

Random-key upserts are the expensive part of a SQLite flush (~15-30 µs each on this machine, against ~3 µs for
the append-like seen-id inserts), and the subscription ledger changes thousands of records a second under load.
So changes are written as one journal row per tick, and the table is re-snapshotted one shard per tick in a
rolling cycle; once a full cycle has passed, the journal rows written before it are deleted. Every row carries a
global sequence number and a restart replays all rows in that order, which reproduces the table exactly (a shard
snapshot newer than a journal row wins, and vice versa).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

from exporter.state import StateStore

# One shard is snapshotted per tick (a second in the server), so a tick's pause grows with ledger size / SHARDS:
# at 50,000 subscriptions, 64 shards meant ~800 records to serialise in one go (3-5 ms on the event loop, the
# largest periodic pause); 256 keep it under ~1 ms. A full cycle then takes 256 ticks, so journal rows live up to
# about twice that before they are deleted. Changing SHARDS is safe across restarts (replay follows sequence
# numbers, not shard membership).
SHARDS = 256


def shard_of(key: str) -> int:
    # crc32, not hash(): shard membership must be the same after a restart.
    return zlib.crc32(key.encode()) % SHARDS


class Journal:
    def __init__(self, state: StateStore, ns: str):
        self.state = state
        self.ns = ns
        self._dirty: dict[str, bool] = {}  # key -> True (changed) or False (deleted) since the last tick
        self._dirty_shards: set[int] = set(range(SHARDS))
        self._journal: list[tuple[str, int]] = []  # (row key, cycle written)
        self._seq = 0
        self._cycle = 0
        self._next_shard = 0
        self._shard_keys: list[set[str]] = [set() for _ in range(SHARDS)]

    # -- changes ---------------------------------------------------------------------------------------------

    def track(self, key: str) -> None:
        """A key that exists in the table (for the shard snapshots)."""
        self._shard_keys[shard_of(key)].add(key)

    def changed(self, key: str) -> None:
        self._dirty[key] = True

    def deleted(self, key: str) -> None:
        shard = shard_of(key)
        self._shard_keys[shard].discard(key)
        self._dirty_shards.add(shard)
        self._dirty[key] = False

    def _row_key(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}{self._seq:015d}"

    def write(self, dump: Callable[[str], Any]) -> None:
        """Called once per tick: one journal row of the changes, then one shard snapshot."""
        if self._dirty:
            key = self._row_key("j")
            self.state.put(self.ns, key, [(k, dump(k) if alive else None) for k, alive in self._dirty.items()])
            self._journal.append((key, self._cycle))
            self._dirty_shards.update(shard_of(k) for k in self._dirty)
            self._dirty = {}
        shard = self._next_shard
        if shard in self._dirty_shards:
            # Unchanged shards keep their last snapshot, which is newer than any journal row touching them.
            self._dirty_shards.discard(shard)
            self._seq += 1
            # A shard row is rewritten in place; its sequence number travels inside the value.
            items = {k: dump(k) for k in self._shard_keys[shard]}
            self.state.put(self.ns, f"s{shard:02d}", {"seq": self._seq, "items": items})
        self._next_shard = (shard + 1) % SHARDS
        if self._next_shard == 0:
            # Every shard has been written after the rows of earlier cycles: those rows are redundant now.
            keep = []
            for row_key, cycle in self._journal:
                if cycle < self._cycle:
                    self.state.delete(self.ns, row_key)
                else:
                    keep.append((row_key, cycle))
            self._journal = keep
            self._cycle += 1

    # -- restart ---------------------------------------------------------------------------------------------

    def replay(self) -> Iterator[tuple[str, Any]]:
        """(key, value or None) in the order they were written; the table is the last value of each key."""
        rows: list[tuple[int, str, Any]] = []
        for row_key, value in self.state.items(self.ns):
            if row_key.startswith("j") and row_key[1:].isdigit():
                rows.append((int(row_key[1:]), row_key, value))
            elif row_key.startswith("s") and isinstance(value, dict):
                rows.append((int(value.get("seq", 0)), row_key, value))
        rows.sort(key=lambda r: r[0])
        for seq, row_key, value in rows:
            self._seq = max(self._seq, seq)
            if row_key.startswith("j"):
                self._journal.append((row_key, self._cycle))
                if isinstance(value, list):
                    for entry in value:
                        if isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str):
                            yield entry[0], entry[1]
            else:
                items = value.get("items")
                if isinstance(items, dict):
                    yield from items.items()
