"""How the detectors' state layout costs under the heaviest load one Stripe account sends: a month-start invoice run.

A ledger of 250,000 subscriptions, renewals at `--rate` a second (50,000 in an hour is ~14/s), each dirtying its
ledger record and adding a captured charge to the duplicate-charge rows; one tick and one flush a second, as the
server does. Compared, in one process on one state file each:
- the ledger written through the 256-shard journal (`journal`, exporter/detectors/journal.py up to e65271b, the
  last commit that has it: run it there) against one key/value row per dirty record (`simple`, what the ledger
  does now);
- the big-row namespaces named with the `zz_` prefix against plain names.
Prints, per layout: the mean time of the detectors' part of a tick (before the flush), the mean, p99 and max of a
tick plus its flush (everything the server does per second for the state; the SQLite part of it runs in the writer
thread), the time to read the ledger back at start and the file's size.

    .venv/bin/python -m bench.state_layout --rate 14 --seconds 300 [--layouts simple:zz_,simple:]

Measured 2026-12-02 (2 shared cores, load ~0.5), 250,000 subscriptions, tick+flush mean / p99 ms, load at start:
    rate 14/s, 300 s   journal zz_ 4.97/7.78  journal plain 5.41/6.33  load 3.0 s, file 61 MB
                       simple  zz_ 0.56/0.74  simple  plain 0.56/0.78  load 2.3 s, file 86 MB
    rate 200/s, 120 s  journal zz_ 9.81/11.6  journal plain 10.4/11.9  load 3.1 s
                       simple  zz_ 8.01/11.3  simple  plain 8.25/11.3  load 2.3 s
    rate 1000/s, 120 s journal zz_ 61.7/114   journal plain 59.5/92.8  load 4.8 s
                       simple  zz_ 47.0/53.7  simple  plain 46.4/59.1  load 2.4 s
    make-bench scale, 50,000 subscriptions, rate 3000/s, 30 s: detectors' part 19.2 (journal) vs 15.5 (simple),
                       tick+flush mean 85.5 vs 107 (3,000 random-key upserts a second in the writer thread),
                       p99 158 vs 157, load 1.5 vs 0.5 s
    rate 14/s, 60 s    detectors' part 2.13 (journal) vs 0.17 (simple), tick+flush 5.06 vs 0.59
The prefix changes nothing beyond noise. One row per dirty record costs a tenth of the journal at a month-start
rate (the journal rewrites a ~1,000-record shard every tick); only far beyond one account (thousands of changed
records a second) does its writer thread do more, ~20 ms a second.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from exporter.detectors.ledger_record import Sub
from exporter.state import StateStore

try:
    from exporter.detectors.journal import Journal  # type: ignore[import-not-found]
except ImportError:  # removed after e65271b
    Journal = None

T0 = 1_780_000_000


def _record(n: int) -> Sub:
    return Sub(customer=f"cus_{n:014d}", status="active", currency="usd", first_seen=T0 - 86400 * 200,
               snap_created=T0 - 86400 * 3, last_payment=T0 - 86400 * 28, paid_through=T0 + 86400 * 2,
               period_start=T0 - 86400 * 28, period_end=T0 + 86400 * 2, monthly=4900.0, interval_s=2592000,
               settled=(123456789, 987654321), list_monthly=4900.0, invoices_per_month=1.0, livemode=1)


def _populate(path: Path, scheme: str, ns: str, subs: dict[str, Sub]) -> None:
    """The ledger as that scheme leaves it in steady state (written straight into SQLite: faster to set up)."""
    state = StateStore(path)
    if scheme == "journal":
        journal = Journal(state, ns)
        for key in subs:
            journal.track(key)
        for i in range(256):  # one full cycle of shard snapshots
            journal.write(lambda k: subs[k].dump())
            state.flush(T0 + i)
    else:
        state.close()
        db = sqlite3.connect(path)
        db.executemany("INSERT INTO kv (ns, key, value, updated) VALUES (?, ?, ?, ?)",
                       ((ns, k, orjson.dumps(rec.dump()), T0) for k, rec in subs.items()))
        db.commit()
        db.close()
        return
    state.close()


def run(scheme: str, prefix: str, rate: int, seconds: int, size: int) -> dict[str, float]:
    rng = random.Random(1)
    subs = {f"sub_{n:014d}": _record(n) for n in range(size)}
    keys = list(subs)
    ledger_ns, dup_ns = f"{prefix}ledger", f"{prefix}duplicate_charge"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite3"
        _populate(path, scheme, ledger_ns, subs)
        state = StateStore(path)
        journal = Journal(state, ledger_ns) if scheme == "journal" else None
        if journal is not None:
            for _ in journal.replay():
                pass
            for key in subs:
                journal.track(key)
        ticks: list[float] = []
        before_flush: list[float] = []  # the detectors' own part, before the state store serialises and writes
        rows: list[str] = []
        for s in range(seconds):
            now = T0 + 1000 + s
            started = time.perf_counter()
            chunk = []
            for i in range(rate):
                key = rng.choice(keys)
                rec = subs[key]
                rec.last_payment = rec.paid_through = now
                rec.settle(rng.getrandbits(32))
                if journal is not None:
                    journal.changed(key)
                else:
                    state.put(ledger_ns, key, rec.dump())
                chunk.append((f"{rng.getrandbits(60):x}", f"ch_{s:08d}{i:06d}", now, now, f"in_{s}{i}", f"pi_{s}{i}"))
                # The small rows that move with a renewal: its anomaly series, a discount list, the poller cursor.
                state.put("anomaly_series", f"silent_lapse|{key}", [now, 0])
            state.put("poller", "cursor", now)
            if journal is not None:
                journal.write(lambda k: subs[k].dump())
            row = f"{now:012d}-{s}"
            state.put(dup_ns, row, chunk)
            rows.append(row)
            while len(rows) > 900:  # the 15-minute horizon
                state.delete(dup_ns, rows.pop(0))
            before_flush.append(time.perf_counter() - started)
            state.flush(now)
            ticks.append(time.perf_counter() - started)
        state.close()
        started = time.perf_counter()
        state = StateStore(path)
        restored = 0
        if scheme == "journal":
            for _key, values in Journal(state, ledger_ns).replay():
                restored += Sub.load(values) is not None
        else:
            for _key, values in state.items(ledger_ns):
                restored += Sub.load(values) is not None
        load = time.perf_counter() - started
        state.close()
        size_mb = path.stat().st_size / 1e6
    assert restored >= size
    return {"detectors_mean_ms": statistics.fmean(before_flush) * 1000, "tick_mean_ms": statistics.fmean(ticks) * 1000,
            "tick_p99_ms": sorted(ticks)[int(len(ticks) * 0.99)] * 1000,
            "tick_max_ms": max(ticks) * 1000, "load_s": load, "file_mb": size_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=14, help="renewals a second")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--subscriptions", type=int, default=250_000)
    layouts = "journal:zz_,journal:,simple:zz_,simple:" if Journal else "simple:zz_,simple:"
    parser.add_argument("--layouts", default=layouts)
    args = parser.parse_args()
    for layout in args.layouts.split(","):
        scheme, prefix = layout.split(":")
        result = run(scheme, prefix, args.rate, args.seconds, args.subscriptions)
        print(f"{scheme:8} ns={prefix or '-':4} rate={args.rate}/s " +
              " ".join(f"{k}={v:.2f}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
