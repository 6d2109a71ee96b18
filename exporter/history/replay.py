"""`billingwatch replay FILE --url URL`: re-send recorded events to a running exporter, freshly signed.

Events go out in delivery order (`received`, else `created`), keeping their recorded gaps divided by `--speed`, or
back to back with `--max`. Without either, the speed-up is chosen so that the replay takes at most
DEFAULT_MAX_SECONDS (a recorded minute is replayed in a minute, a recorded month in ten minutes). Payloads are
sent as recorded (same ids, so an exporter that saw them already answers `duplicate`); only the signature is new.
`--rebase` shifts each event's top-level `created` so that the history ends now: without it an exporter records
the events' real age in its delivery-delay histogram, which is what a webhook-lag alert reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from exporter.history.events_file import index_history, iter_history
from exporter.history.interrupt import run_interruptible
from exporter.history.sender import latency_summary, send_all

# The default pace: recorded gaps shrink just enough to finish within ten minutes. Real time (speed 1) is rarely
# what anybody wants from a history of days, and back to back (--max) loses the shape of the traffic.
DEFAULT_MAX_SECONDS = 600.0


def run_replay(
    path: str | Path,
    *,
    url: str,
    secret: str,
    speed: float | None,
    as_fast_as_possible: bool,
    rebase: bool,
    concurrency: int,
    log: Callable[[str], None],
) -> int:
    index = index_history(path)
    span = index.last - index.first
    shift = time.time() - index.last if rebase else 0.0
    if speed is None:
        speed = max(1.0, span / DEFAULT_MAX_SECONDS)
    mode = "as fast as possible" if as_fast_as_possible else f"at {speed:g}x (about {span / speed:.0f} s)"
    log(f"replay: {len(index)} events spanning {span:.0f} s to {url}, {mode}")

    def items() -> Iterator[tuple[float, dict[str, Any]]]:
        for vtime, event in iter_history(index):
            if shift and isinstance(event.get("created"), int | float) and not isinstance(event["created"], bool):
                event = dict(event)
                event["created"] = int(event["created"] + shift)
            yield (vtime - index.first) / speed, event

    stats = run_interruptible(
        send_all(items(), url=url, secret=secret, concurrency=concurrency, log=log,
                 as_fast_as_possible=as_fast_as_possible, total=len(index), planned_seconds=span / speed)
    )  # fmt: skip
    log(f"replay: done. {stats.line()}; {latency_summary(stats)}")
    log(f"  answers: {stats.outcome_line()}")
    hint = stats.hint()
    if hint:
        log(f"  hint: {hint}")
    return 0 if stats.errors == 0 and stats.ok == stats.sent else 1
