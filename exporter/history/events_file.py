"""Reading history files: JSON lines, each a Stripe event or `{"received": <unix seconds>, "event": {...}}`.

Files can hold hundreds of thousands of 3 KB events, so they are not loaded whole: a first pass records each line's
virtual time (delivery time, else the event's `created`) and byte span, a second pass parses lines in time order
through a memory map. Lines in the same second keep their file order (the sort is stable).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


class HistoryFileError(Exception):
    pass


@dataclass
class HistoryIndex:
    path: Path
    # (virtual time, byte offset, byte length), sorted by time
    entries: list[tuple[float, int, int]]
    skipped: int  # blank or unusable lines

    @property
    def first(self) -> float:
        return self.entries[0][0]

    @property
    def last(self) -> float:
        return self.entries[-1][0]

    def __len__(self) -> int:
        return len(self.entries)


def split_line(doc: Any) -> tuple[float, dict[str, Any]] | None:
    """(virtual time, event) of one parsed line, or None when it is neither form."""
    if not isinstance(doc, dict):
        return None
    received = None
    event = doc
    if "event" in doc and isinstance(doc.get("event"), dict):
        event = doc["event"]
        received = doc.get("received")
    if received is None or isinstance(received, bool) or not isinstance(received, int | float):
        received = event.get("created")
    if isinstance(received, bool) or not isinstance(received, int | float):
        return None
    return float(received), event


def index_history(path: str | Path) -> HistoryIndex:
    path = Path(path)
    entries: list[tuple[float, int, int]] = []
    skipped = 0
    offset = 0
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise HistoryFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        for lineno, line in enumerate(fh, 1):
            length = len(line)
            stripped = line.strip()
            if stripped:
                try:
                    parsed = split_line(orjson.loads(stripped))
                except orjson.JSONDecodeError:
                    parsed = None
                if parsed is None:
                    skipped += 1
                    if skipped <= 3 and lineno <= 3:
                        # A wrong file type shows on its first lines; say so instead of silently skipping.
                        raise HistoryFileError(
                            f"{path}:{lineno}: not a Stripe event or {{received, event}} JSON object"
                        )
                else:
                    entries.append((parsed[0], offset, length))
            offset += length
    if not entries:
        raise HistoryFileError(f"{path}: no events")
    entries.sort(key=lambda e: e[0])
    return HistoryIndex(path, entries, skipped)


def iter_history(index: HistoryIndex) -> Iterator[tuple[float, dict[str, Any]]]:
    """(virtual time, event) in time order."""
    with index.path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for vtime, offset, length in index.entries:
            parsed = split_line(orjson.loads(mm[offset : offset + length]))
            if parsed is not None:
                yield vtime, parsed[1]
