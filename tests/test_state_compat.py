"""A state file written by an earlier version loads: seen ids, and the ledger's journal of array-packed records."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import orjson

from exporter.config import load_config
from exporter.service import Service
from exporter.state import StateStore

DATA = Path(__file__).parent / "data"
T0 = 1_780_000_000  # the times tests/data/make_state_b3f67e2.py wrote


def _service(path: Path) -> Service:
    return Service(load_config(
        None, env={}, overrides={"stripe": {"webhook_secrets": ["whsec_x"]}, "state": {"path": str(path)}}
    ))


def test_state_written_by_b3f67e2_loads_and_is_written_back_in_the_new_form(tmp_path):
    path = tmp_path / "state.sqlite3"
    shutil.copy(DATA / "state-b3f67e2.sqlite3", path)
    service = _service(path)
    assert all(service.state.check_and_mark(f"evt_compat_{n:03d}", T0 + 20) for n in range(1, 6))
    ledger = service.detector_set.by_name["silent_lapse"]
    assert set(ledger.subs) == {"sub_live", "sub_test", "sub_gone"}
    live, test, gone = ledger.subs["sub_live"], ledger.subs["sub_test"], ledger.subs["sub_gone"]
    assert (live.customer, live.status, live.currency, live.livemode, live.monthly) == ("cus_live", "active", "usd",
                                                                                       1, 3000.0)  # fmt: skip
    assert live.snap_kind == 1 and live.period_start == T0 and live.period_end == T0 + 30 * 86400
    assert (test.currency, test.livemode, test.last_payment > 0, test.paid_through > 0) == ("eur", 0, True, True)
    assert gone.status == "canceled"
    registry = service.metrics.registry
    assert registry.get_sample_value("stripe_subscriptions", {"status": "active", "livemode": "true"}) == 1
    assert registry.get_sample_value("stripe_mrr", {"currency": "usd", "livemode": "true"}) == 30.0
    views = {k: rec.view(k) for k, rec in ledger.subs.items()}
    # The journal's rows were rewritten at start as one row per record, in the new form (and are gone); it all
    # reads back the same.
    service.state.close()
    db = sqlite3.connect(path)
    stored = {k: orjson.loads(v) for k, v in db.execute("SELECT key, value FROM kv WHERE ns = 'ledger'")}
    db.close()
    assert set(stored) == {"sub_live", "sub_test", "sub_gone"}
    assert all(len(r) > 7 and not isinstance(r[-1], str) for r in stored.values())
    again = _service(path)
    ledger = again.detector_set.by_name["silent_lapse"]
    assert {k: rec.view(k) for k, rec in ledger.subs.items()} == views
    again.state.close()


def test_rows_of_the_zz_prefixed_namespaces_are_renamed_at_start(tmp_path):
    path = tmp_path / "state.sqlite3"
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO kv (ns, key, value, updated) VALUES (?, ?, ?, ?)", [
        ("zz_duplicate_charge", "000001780000000-1", orjson.dumps([["k", "ch_1", T0, T0, "-", "-"]]), T0),
        ("zz_ledger", "j000000000000001", orjson.dumps([]), T0),
        ("poller", "zz_ledger", orjson.dumps(1), T0),
    ])
    db.commit()
    db.close()
    state = StateStore(path)
    assert dict(state.items("duplicate_charge")) == {"000001780000000-1": [["k", "ch_1", T0, T0, "-", "-"]]}
    assert dict(state.items("ledger")) == {"j000000000000001": []}
    assert dict(state.items("poller")) == {"zz_ledger": 1}
    assert not list(state.items("zz_duplicate_charge")) and not list(state.items("zz_ledger"))
    state.close()
