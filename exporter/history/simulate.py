"""`billingwatch simulate --url`: live, signed, realistic traffic with injected anomalies.

The traffic is the history generator's (diurnal by the real time of day, mixed event types, redeliveries,
out-of-order subscription events) laid out from now over `duration` at `rate` events a second, and delivered at each
event's delivery time. Anomalies are placed evenly over the first 70 % of the run; the spike anomalies are shortened
to fit (a quarter of the run, at most 40 min). What each one does live is in docs/backtest.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from exporter.history.generator import DAY, HistoryGenerator
from exporter.history.interrupt import run_interruptible
from exporter.history.sender import latency_summary, send_all


def run_live(
    *,
    url: str,
    secret: str,
    rate: float,
    duration: float,
    anomalies: list[str],
    seed: int,
    log: Callable[[str], None],
) -> int:
    if rate <= 0 or duration <= 0:
        log("billingwatch simulate: --rate and --duration must be positive")
        return 2
    now = time.time()
    gen = HistoryGenerator(start=now, days=duration / DAY, events_per_day=max(1, round(rate * DAY)), seed=seed)
    gen.plan_live(anomalies)
    pairs = gen.generate()
    log(f"simulate: {len(pairs)} deliveries to {url} over {duration:g} s (~{rate:g}/s), seed {seed} "
        f"(--seed {seed} sends the same traffic again)")
    tail = pairs[-1][0] - (now + duration) if pairs else 0
    if tail > 1:
        log(f"  late deliveries (redeliveries, lag) keep the run going {tail:.0f} s longer")
    for inj in gen.injections:
        who = " ".join(x for x in (inj.customer, inj.subscription) if x)
        at = datetime.fromtimestamp(inj.start, UTC).strftime("%H:%M:%S")
        log(f"  anomaly {inj.name} at {at} UTC (+{inj.start - now:.0f} s): {inj.note} {who}".rstrip())
    # Offsets from the moment sending starts (generation took a little time; keep the schedule relative).
    items = [(received - now, event) for received, event in pairs]
    planned = items[-1][0] if items else 0.0
    stats = run_interruptible(
        send_all(items, url=url, secret=secret, log=log, total=len(items), planned_seconds=planned)
    )
    unique = len({e["id"] for _, e in pairs})
    log(f"simulate: done. {stats.line()}; {latency_summary(stats)}")
    log(f"  sent {unique} unique events and {len(pairs) - unique} planned redeliveries")
    # What the exporter made of them: more duplicates than the planned redeliveries means it had seen these events
    # before (the same --seed run twice), rejections mean a wrong secret or URL.
    log(f"  answers: {stats.outcome_line()}")
    hint = stats.hint()
    if hint:
        log(f"  hint: {hint}")
    top = ", ".join(f"{t} {n}" for t, n in stats.types.most_common(8))
    log(f"  by type: {top}")
    return 0 if stats.errors == 0 and stats.ok == stats.sent else 1
