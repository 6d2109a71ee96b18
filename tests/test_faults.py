"""Faults made for real against the real exporter process (bench/faults.py drives it): SIGKILL, SIGTERM, a full
tmpfs, an immutable state on ext4, a read-only mount at start, corrupt files, an external sqlite3 lock, a second
process. Acknowledged events are never lost nor counted twice; failures are 503s, never 500s or tracebacks."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench import faults
from exporter.state import StateStore
from tests.conftest import REPO, require_binary

NOW = 1_800_000_000


def require_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("mounting a tmpfs or a loop device needs root (CI=true: a failure, never a skip)")
    pytest.skip("needs root (mount)")


def _assert_clean(result: dict) -> None:
    assert result["lost"] == 0, result
    assert result["counted_twice"] == 0, result
    assert result["acknowledged"] == result["events"], result
    assert result["sigterm_exit"] == 0 and result["tracebacks"] == 0, result


def test_sigkill_mid_stream_loses_and_double_counts_nothing(tmp_path):
    result = faults.scenario_kill(tmp_path, events=1500, kills=2)
    _assert_clean(result)
    assert result["lost_at_each_kill"] == [0, 0]
    assert result["answers"].get("200", 0) > result["events"]  # redeliveries happened and were answered


def test_sigterm_mid_stream_exits_zero_and_keeps_every_id(tmp_path):
    result = faults.scenario_sigterm(tmp_path, events=1000)
    _assert_clean(result)
    assert result["first_exit"] == 0


def _assert_storage_episode(result: dict) -> None:
    _assert_clean(result)
    assert result["answers_503"] > 0 and result["unavailable_answers_metric"] >= result["answers_503"]
    assert result["readyz_while_broken"] == 503
    assert result["state_writable_metric"] == 0 and result["write_errors_metric"] > 0
    assert result["error_log_lines"] == 1 and result["recovery_log_lines"] == 1  # once per episode
    assert result["recovered"], result
    assert result["rss_growth_mb_while_broken"] < 30, result


def test_disk_full_answers_503_turns_unready_and_recovers_by_itself(tmp_path):
    require_root()
    _assert_storage_episode(faults.scenario_disk_full(tmp_path, events=500, during=600))


def test_state_made_read_only_at_run_time_answers_503_and_recovers(tmp_path):
    require_root()
    require_binary("chattr")
    require_binary("mkfs.ext4")
    _assert_storage_episode(faults.scenario_read_only(tmp_path, events=500, during=600))


def test_external_sqlite3_lock_never_stalls_the_event_loop(tmp_path):
    require_binary("sqlite3")
    result = faults.scenario_lock(tmp_path, events=500, hold=2.0)
    _assert_clean(result)
    assert result["answers_503"] > 0
    # A webhook waits at most the writer's busy timeout (0.5 s), then gets a 503; the loop never waits.
    assert result["webhook_max_seconds_under_lock"] < 1.5, result
    assert result["healthz_max_seconds_under_lock"] < 0.5, result
    assert result["recovered"]


def test_sigterm_while_the_disk_is_full_exits_cleanly(tmp_path):
    require_root()
    with faults.tmpfs("16m") as mnt:
        exporter = faults.ExporterProcess(mnt / "state.sqlite3", log=tmp_path / "log")
        ledger = faults.Ledger()
        sender = faults.Sender(exporter, ledger)
        exporter.start()
        asyncio.run(sender.run(200))
        faults.fill(mnt)
        stop = asyncio.Event()

        async def until_503() -> None:
            while not ledger.statuses.get(503):
                await asyncio.sleep(0.02)
            stop.set()

        async def traffic() -> None:
            await asyncio.wait_for(asyncio.gather(sender.run(10**9, stop=stop, rate=300), until_503()), 60)

        asyncio.run(traffic())
        assert exporter.terminate() == 0
        log = exporter.log_text()
        assert "Traceback" not in log and "billingwatch stopped" in log
        assert ledger.acked <= faults.ids_on_disk(exporter.state)


# -- the state file at start ----------------------------------------------------------------------------------

def _serve(state: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRIPE_WEBHOOK_SECRET": "whsec_test_start"}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--listen", f"127.0.0.1:{faults.free_port()}",
         "--metrics-listen", f"127.0.0.1:{faults.free_port()}", "--state", str(state)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _refused(state: Path, *needles: str) -> str:
    """The exporter refuses to start: exit 1 and one line naming the path (and `needles`), no traceback."""
    proc = _serve(state)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(state) in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _state_with_ids(path: Path, n: int = 3000) -> list[str]:
    store = StateStore(path)
    ids = [f"evt_start_{i:06d}" for i in range(n)]
    for event_id in ids:
        store.check_and_mark(event_id, NOW)
    store.put("ns", "k", {"v": 1})
    store.close()
    return ids


def test_zero_length_state_is_never_a_silent_fresh_start(tmp_path):
    state = tmp_path / "state.sqlite3"
    state.touch()
    _refused(state, "empty (0 bytes)", "delete it to start afresh")
    assert state.stat().st_size == 0  # left as it was


def test_garbage_text_and_overwritten_files_are_refused_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(random.Random(1).randbytes(64 * 1024))
    _refused(garbage, "not a readable SQLite database", "restore it from a backup")
    text = tmp_path / "config.yml"
    text.write_text("server:\n  listen: 0.0.0.0:8000\n")
    _refused(text, "not a readable SQLite database")
    overwritten = tmp_path / "overwritten.sqlite3"
    _state_with_ids(overwritten)
    with open(overwritten, "r+b") as f:
        f.write(b"\xff" * 4096)  # the header page
    _refused(overwritten, "restore it from a backup")


def test_truncated_state_is_refused(tmp_path):
    state = tmp_path / "state.sqlite3"
    _state_with_ids(state)
    os.truncate(state, state.stat().st_size // 2)
    _refused(state, "restore it from a backup")


def test_a_directory_or_a_foreign_database_is_refused(tmp_path):
    _refused(tmp_path, "is a directory")
    foreign = tmp_path / "other.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    _refused(foreign, "not BillingWatch state")


def _corrupt_a_table_page(state: Path) -> None:
    """Overwrite one leaf page of the seen_events table, leaving its secondary index intact."""
    db = sqlite3.connect(state)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = [row[0] for row in db.execute(
        "SELECT pageno FROM dbstat WHERE name = 'seen_events' AND pagetype = 'leaf' ORDER BY pageno"
    )]
    db.close()
    assert len(pages) > 3
    with open(state, "r+b") as f:
        f.seek((pages[len(pages) // 2] - 1) * page_size)
        f.write(random.Random(2).randbytes(page_size))


def test_corrupt_table_page_behind_an_intact_index_is_found_at_start(tmp_path):
    state = tmp_path / "state.sqlite3"
    _state_with_ids(state)
    _corrupt_a_table_page(state)
    _refused(state, "damaged (quick_check", "restore it from a backup")


def test_corruption_found_while_running_answers_503_never_500(tmp_path):
    state = tmp_path / "state.sqlite3"
    exporter = faults.ExporterProcess(state, log=tmp_path / "log")
    ledger = faults.Ledger()
    sender = faults.Sender(exporter, ledger, redeliver=0.0)
    exporter.start()
    asyncio.run(sender.run(3000))
    assert exporter.terminate() == 0
    exporter.start()  # intact at start
    _corrupt_a_table_page(state)
    asyncio.run(sender.redeliver_all())
    stop = asyncio.Event()

    async def new_events() -> None:
        # New ids: their commits may meet the corrupt page too, and are then retried (503) until stopped.
        async def stopper() -> None:
            while sum(ledger.statuses.values()) < 3000 + 3000 + 200:
                await asyncio.sleep(0.02)
            stop.set()

        await asyncio.wait_for(asyncio.gather(sender.run(200, stop=stop), stopper()), 60)

    asyncio.run(new_events())
    assert ledger.statuses.get(500) is None, ledger.statuses
    assert ledger.statuses.get(503, 0) > 0, ledger.statuses
    assert ledger.lost == set() and ledger.counted_twice == 0
    assert exporter.terminate() in (0, 1)
    assert "Traceback" not in exporter.log_text()


def test_read_only_filesystem_at_start_is_reported_as_such(tmp_path):
    require_root()
    with faults.tmpfs("8m") as mnt:
        state = mnt / "state.sqlite3"
        _state_with_ids(state, 10)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        line = _refused(state, "Read-only file system")
        assert "cannot listen" not in line


# -- one process per state file; permissions --------------------------------------------------------------------

def test_a_second_process_on_the_same_state_is_refused(tmp_path):
    state = tmp_path / "state.sqlite3"
    first = faults.ExporterProcess(state, log=tmp_path / "log")
    first.start()
    try:
        line = _refused(state, "in use by another billingwatch process", f"pid {first.proc.pid}")
        assert f"{state}.lock" in line
        assert first.ready()  # the first one is untouched
    finally:
        assert first.terminate() == 0
    # The lock went with the first process: the file is free again.
    second = faults.ExporterProcess(state, log=tmp_path / "log2")
    second.start()
    assert second.terminate() == 0


def test_state_is_created_private(tmp_path):
    state = tmp_path / "new" / "dir" / "state.sqlite3"
    exporter = faults.ExporterProcess(state, log=tmp_path / "log")
    exporter.start()
    try:
        ledger = faults.Ledger()
        asyncio.run(faults.Sender(exporter, ledger).run(20))
        assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
        for path in (state, Path(f"{state}-wal"), Path(f"{state}.lock")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        assert exporter.terminate() == 0
    assert not list(state.parent.glob("*.new*"))  # the temporary file was renamed into place


def test_fault_script_runs_and_reports_json(tmp_path):
    out = tmp_path / "faults.json"
    proc = subprocess.run([sys.executable, "-m", "bench.faults", "kill", "--events", "600", "--kills", "1",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (result,) = orjson.loads(out.read_bytes())
    assert result["lost"] == 0 and result["counted_twice"] == 0 and result["kills"] == 1
