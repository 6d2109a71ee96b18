"""An in-memory filter in front of the seen-event-id table: "certainly new" without a database read.

Nearly every delivery is a new event, and asking SQLite whether its id exists costs a read transaction (file
locks, and page reads whenever the writer has changed the database since), the largest single cost of a webhook
after JSON parsing. A Bloom filter answers "never seen" for almost every new id from memory; only a "maybe" (a
real redelivery, or a false positive) goes on to SQLite, which stays the one source of truth. The filter can
therefore never make a seen id look new, only cost an occasional extra read.

Bloom filters cannot forget, so two generations rotate: ids go into the current one; every `span` seconds (the
id retention) the current one becomes the previous one and the oldest is cleared. An id is covered for at least
`span` seconds after it was added, as long as the store keeps it. Memory is fixed: 2 x 2^25 bits = 8 MiB.
Past about 4 million ids per generation (a million events a day) the false-positive rate passes 2 % and the
extra reads grow smoothly; correctness does not change.
"""

from __future__ import annotations

from collections.abc import Iterable

BITS_LOG2 = 25
_BITS_MASK = (1 << BITS_LOG2) - 1
_HASH_MASK = (1 << 64) - 1


def _positions(item: str) -> tuple[int, int, int]:
    # Three probes by double hashing (Kirsch-Mitzenmacher) from one 64-bit str hash. str hashes are salted per
    # process, which is fine: the filter lives and dies with the process and is rebuilt from the store at start.
    h = hash(item) & _HASH_MASK
    a = h & _BITS_MASK
    b = (h >> 32) | 1
    return a, (a + b) & _BITS_MASK, (a + 2 * b) & _BITS_MASK


def _has(bits: bytearray, p: tuple[int, int, int]) -> bool:
    return bool(
        bits[p[0] >> 3] & (1 << (p[0] & 7))
        and bits[p[1] >> 3] & (1 << (p[1] & 7))
        and bits[p[2] >> 3] & (1 << (p[2] & 7))
    )


class SeenFilter:
    def __init__(self, span_seconds: float):
        self.span = span_seconds
        self._current = bytearray(1 << (BITS_LOG2 - 3))
        self._previous = bytearray(1 << (BITS_LOG2 - 3))
        self._started: float | None = None  # when the current generation began (set by the first add)

    def may_contain(self, item: str) -> bool:
        """False: certainly never added (within its coverage). True: maybe; ask the store."""
        p = _positions(item)
        return _has(self._current, p) or _has(self._previous, p)

    def check_and_add(self, item: str, now: float) -> bool:
        """may_contain(item) as it was before, then add(item, now): one hash for both.

        The per-webhook path: written out inline (no helper calls, no tuple) because it runs for every delivery.
        """
        started = self._started
        if started is None or now - started >= self.span:
            # The first add, or a rotation: the general path (checked before the rotation drops anything).
            p = _positions(item)
            found = _has(self._current, p) or _has(self._previous, p)
            self._add(p, now)
            return found
        h = hash(item) & _HASH_MASK
        a = h & _BITS_MASK
        b = (h >> 32) | 1
        p1 = (a + b) & _BITS_MASK
        p2 = (a + 2 * b) & _BITS_MASK
        cur = self._current
        i0, m0, i1, m1, i2, m2 = a >> 3, 1 << (a & 7), p1 >> 3, 1 << (p1 & 7), p2 >> 3, 1 << (p2 & 7)
        found = bool(cur[i0] & m0 and cur[i1] & m1 and cur[i2] & m2)
        if not found:
            prev = self._previous
            found = bool(prev[i0] & m0 and prev[i1] & m1 and prev[i2] & m2)
        cur[i0] |= m0
        cur[i1] |= m1
        cur[i2] |= m2
        return found

    def add(self, item: str, now: float) -> None:
        self._add(_positions(item), now)

    def _add(self, p: tuple[int, int, int], now: float) -> None:
        started = self._started
        if started is None:
            self._started = now
        elif now - started >= self.span:
            self._rotate(now)
        bits = self._current
        for pos in p:
            bits[pos >> 3] |= 1 << (pos & 7)

    def add_all(self, rows: Iterable[tuple[str, float]]) -> int:
        """Add (id, time added) pairs, oldest first; returns how many."""
        n = 0
        for item, at in rows:
            self._add(_positions(item), at)
            n += 1
        return n

    def _rotate(self, now: float) -> None:
        assert self._started is not None
        if now - self._started >= 2 * self.span:
            # Nothing added in the last two spans is left to cover.
            self._previous[:] = bytes(len(self._previous))
        else:
            self._previous, self._current = self._current, self._previous
        self._current[:] = bytes(len(self._current))
        self._started = now
