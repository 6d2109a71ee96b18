"""The in-memory filter in front of the seen-id table: never a false "new", rotation by retention span, and the
store still answers from SQLite for ids the filter cannot rule out."""

from __future__ import annotations

import sqlite3

from exporter.seen_filter import SeenFilter
from exporter.state import StateStore

DAY = 86400.0
T0 = 1_800_000_000.0


def test_every_added_id_may_be_contained_and_new_ids_mostly_are_not():
    f = SeenFilter(4 * DAY)
    added = [f"evt_{i:08d}" for i in range(50_000)]
    for i, event_id in enumerate(added):
        f.add(event_id, T0 + i / 100)
    assert all(f.may_contain(e) for e in added)  # no false negatives, ever
    fresh = [f"evt_new_{i:08d}" for i in range(50_000)]
    false_positives = sum(f.may_contain(e) for e in fresh)
    # 2^25 bits, 3 probes, 50k ids: expected rate about 1e-4 (5 of 50k); a broken hash would be near 100 %.
    assert false_positives < 100


def test_check_and_add_reports_the_state_before_adding():
    f = SeenFilter(DAY)
    assert f.check_and_add("evt_a", T0) is False
    assert f.check_and_add("evt_a", T0 + 1) is True
    assert f.may_contain("evt_a")


def test_ids_stay_covered_for_at_least_one_span_then_go():
    f = SeenFilter(DAY)
    f.add("evt_first", T0)
    f.add("evt_late_in_generation", T0 + DAY - 1)
    f.add("evt_next", T0 + DAY)  # rotates: the first generation becomes the previous one
    assert f.may_contain("evt_first") and f.may_contain("evt_late_in_generation")
    f.add("evt_after", T0 + 2 * DAY)  # rotates again: the first generation is cleared
    assert not f.may_contain("evt_first")
    assert f.may_contain("evt_next") and f.may_contain("evt_after")


def test_a_gap_of_two_spans_clears_both_generations():
    f = SeenFilter(DAY)
    f.add("evt_a", T0)
    f.add("evt_b", T0 + 0.5 * DAY)
    f.add("evt_c", T0 + 3 * DAY)
    assert not f.may_contain("evt_a") and not f.may_contain("evt_b")
    assert f.may_contain("evt_c")


def test_store_fills_the_filter_from_disk_on_open(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = StateStore(path)
    for i in range(1000):
        store.check_and_mark(f"evt_{i}", T0 + i)
    store.close()
    reopened = StateStore(path)
    assert reopened.loaded_ids == 1000
    assert all(reopened.check_and_mark(f"evt_{i}", T0 + 2000) for i in range(1000))
    assert reopened.db_lookups == 1000  # each redelivery was confirmed by SQLite, not by the filter alone
    assert reopened.check_and_mark("evt_new", T0 + 2000) is False
    reopened.close()


def test_ids_written_by_another_process_are_not_missed_after_reopen(tmp_path):
    # The filter is built at open time: an id present in the table at open is always found.
    path = tmp_path / "s.sqlite3"
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO seen_events (id, received) VALUES ('evt_outside', ?)", (int(T0),))
    db.commit()
    db.close()
    store = StateStore(path)
    assert store.seen("evt_outside")
    assert store.check_and_mark("evt_outside", T0 + 1) is True
    assert not store.seen("evt_never")
    store.close()


def test_new_ids_skip_the_database_read(tmp_path):
    store = StateStore(tmp_path / "s.sqlite3")
    for i in range(10_000):
        assert store.check_and_mark(f"evt_{i}", T0) is False
        if i % 1000 == 999:
            store.flush(T0)
    assert store.db_lookups < 10  # false positives only
    store.close()


def test_check_and_add_answers_like_may_contain_then_add_across_rotations():
    import random

    rng = random.Random(5)
    fast, reference = SeenFilter(100.0), SeenFilter(100.0)
    now = T0
    pool = [f"evt_{i}" for i in range(3000)]
    for _ in range(20_000):
        now += rng.choice((0.0, 0.01, 0.5, 7.0))
        item = rng.choice(pool)
        expected = reference.may_contain(item)
        reference.add(item, now)
        assert fast.check_and_add(item, now) is expected
    assert now - T0 > 500  # several rotations happened


async def test_db_lookups_are_exposed_and_count_redeliveries(tmp_path):
    from exporter import samples
    from tests.conftest import make_event
    from tests.ingest_support import make_config, running_exporter

    config = make_config(tmp_path / "s.sqlite3")
    event = make_event("charge.succeeded", samples.charge())
    async with running_exporter(config) as ex:
        assert ex.value("billingwatch_state_seen_db_lookups_total") == 0
        assert await ex.post_event(event) == 200
        # The first delivery was answered once its id was committed (never a lookup: the filter said "new"); each
        # redelivery after that finds it "maybe" in the filter and reads SQLite: one lookup per redelivery.
        assert ex.value("billingwatch_state_seen_db_lookups_total") == 0
        for _ in range(3):
            assert await ex.post_event(event) == 200
        assert ex.value("billingwatch_state_seen_db_lookups_total") == 3
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == 3
