"""Bounded label values: odd input must never grow a metric's series without limit."""

from __future__ import annotations

import re
from collections.abc import Callable

OTHER = "other"
UNKNOWN = "unknown"
_SAFE_RE = re.compile(r"^[a-z0-9_.\-]{1,64}$")


class LabelCap:
    """Admits the first `limit` distinct well-formed values of one label; the rest become "other"."""

    __slots__ = ("_limit", "_on_overflow", "_seen")

    def __init__(self, limit: int, on_overflow: Callable[[], None] | None = None):
        self._limit = limit
        self._seen: set[str] = set()
        self._on_overflow = on_overflow

    def __call__(self, value: object, *, missing: str = UNKNOWN) -> str:
        if value is None or value == "":
            return missing
        if not isinstance(value, str):
            return OTHER
        if value in self._seen:
            return value
        value = value.strip().lower()
        if value in self._seen:
            return value
        if not _SAFE_RE.match(value) or value == OTHER:
            return OTHER
        if len(self._seen) >= self._limit:
            if self._on_overflow is not None:
                self._on_overflow()
            return OTHER
        self._seen.add(value)
        return value
