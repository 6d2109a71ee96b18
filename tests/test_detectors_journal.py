"""The journal behind the subscription ledger: a restart at any moment reproduces the table exactly."""

from __future__ import annotations

import random

import orjson
import pytest

from exporter.detectors.journal import SHARDS, Journal
from exporter.state import StateStore


def replayed(path) -> dict[str, object]:
    state = StateStore(path)
    table: dict[str, object] = {}
    for key, value in Journal(state, "t").replay():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    state.close()
    return table


@pytest.mark.parametrize("seed", range(4))
def test_replay_after_random_changes_ticks_and_restarts_matches_the_table(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "j.sqlite3"
    table: dict[str, list[int]] = {}
    state = StateStore(path)
    journal = Journal(state, "t")
    for _ in range(3):  # three process lifetimes
        for tick in range(rng.randrange(20, 2 * SHARDS + 10)):
            for _ in range(rng.randrange(0, 30)):
                key = f"sub_{rng.randrange(200):04d}"
                if key in table and rng.random() < 0.2:
                    del table[key]
                    journal.deleted(key)
                else:
                    if key not in table:
                        journal.track(key)
                    table[key] = [tick, rng.randrange(10**6)]
                    journal.changed(key)
            journal.write(lambda k: table[k])
            if rng.random() < 0.5:
                state.flush()
        state.close()
        assert replayed(path) == table
        state = StateStore(path)
        journal = Journal(state, "t")
        restored = {}
        for key, value in journal.replay():
            if value is None:
                restored.pop(key, None)
            else:
                restored[key] = value
        for key in restored:
            journal.track(key)
        assert restored == table
    state.close()


def test_old_journal_rows_are_deleted_after_a_full_cycle(tmp_path):
    state = StateStore(tmp_path / "j.sqlite3")
    journal = Journal(state, "t")
    table = {"sub_a": [1]}
    journal.track("sub_a")
    journal.changed("sub_a")
    for _ in range(3 * SHARDS):
        journal.write(lambda k: table[k])
    state.flush()
    keys = [k for k, _ in state.items("t")]
    assert not [k for k in keys if k.startswith("j")]
    assert len([k for k in keys if k.startswith("s")]) == SHARDS
    state.close()


def test_ledger_record_round_trips_and_keeps_the_last_settled_invoices():
    from exporter.detectors.ledger_record import Sub

    rec = Sub()
    rec.customer, rec.status, rec.currency = "cus_Z9", "active", "jpy"
    rec.period_start, rec.period_end, rec.trial_end = 1_780_000_000, 1_782_592_000, None
    rec.monthly, rec.send_invoice_days, rec.paused = 4333.333, 14, True
    for mark in (5, 6, 6, 7, 8):
        rec.settle(mark)
    assert rec.settled == (6, 7, 8)
    back = Sub.load(orjson.loads(orjson.dumps(rec.dump())))  # as stored in the state file
    assert back is not None
    assert back.view("sub_x") == rec.view("sub_x")
    assert (back.period_end, back.trial_end, back.monthly, back.paused) == (1_782_592_000, None, 4333.333, True)
    assert Sub.load(["not", "a", "record"]) is None
