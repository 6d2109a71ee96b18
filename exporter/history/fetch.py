"""`billingwatch fetch-events`: a history file from Stripe's Events API, through the stripe SDK's auto-paging.

Stripe lists events newest first and keeps 30 days. A fetch walks that list once and writes JSON lines, one event per
line, as listed (newest first; the backtest sorts by time itself). Resuming: with --resume the last line of the
output file names the oldest event written so far, and listing continues after it (`starting_after`), appending.
The key needs read access to events only: a restricted key with "Events: read" is enough.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson
import stripe

_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PAGE_SIZE = 100  # Stripe's maximum


def parse_since(value: str, now: float | None = None) -> int:
    """'30d', '12h' (ago) or a unix timestamp -> unix seconds."""
    now = time.time() if now is None else now
    m = _SINCE.match(value.strip())
    if m:
        return int(now - int(m.group(1)) * _UNIT[m.group(2)])
    if value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"--since: expected e.g. 30d, 12h or a unix timestamp, got {value!r}")


def make_client(api_key: str, api_base: str | None = None) -> stripe.StripeClient:
    kwargs: dict[str, Any] = {"max_network_retries": 3}
    if api_base:
        kwargs["base_addresses"] = {"api": api_base}
    return stripe.StripeClient(api_key, **kwargs)


def drop_partial_line(path: Path) -> None:
    """Cut a torn last line (a fetch killed mid-write) so that appended events start on a line of their own."""
    try:
        with path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            start = max(0, size - (1 << 20))
            fh.seek(start)
            tail = fh.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            fh.truncate(start + cut + 1 if cut >= 0 else start)
    except FileNotFoundError:
        return


def last_event_id(path: Path) -> str | None:
    """Id of the event on the last complete line of `path` (a partial last line, from a crash, is ignored)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - (1 << 20)))
            tail = fh.read()
    except OSError:
        return None
    for line in reversed(tail.split(b"\n")):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        event = doc.get("event", doc) if isinstance(doc, dict) else None
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            return event["id"]
    return None


def fetch_events(
    client: stripe.StripeClient,
    out: IO[bytes],
    *,
    since: int,
    types: list[str],
    starting_after: str | None = None,
    delivery_success: bool | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> int:
    params: dict[str, Any] = {"limit": PAGE_SIZE, "created": {"gte": since}}
    if len(types) == 1:
        params["type"] = types[0]  # `type` accepts a wildcard such as invoice.*
    elif types:
        params["types"] = types[:20]
    if starting_after:
        params["starting_after"] = starting_after
    if delivery_success is not None:
        params["delivery_success"] = delivery_success
    written = 0
    last_report = time.monotonic()
    oldest = None
    for event in client.v1.events.list(params=params).auto_paging_iter():  # type: ignore[arg-type]
        doc = event.to_dict()
        out.write(orjson.dumps(doc) + b"\n")
        written += 1
        oldest = doc.get("created")
        if time.monotonic() - last_report >= 2.0:
            last_report = time.monotonic()
            out.flush()
            log(f"  fetched {written} events (back to {_iso(oldest)})")
    out.flush()
    log(f"fetch-events: {written} events written (oldest {_iso(oldest)})")
    return written


def _iso(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
