"""Fault injection against the real exporter process: what was acknowledged must never be forgotten or counted twice.

    python -m bench.faults kill      [--events 20000] [--kills 5]   # SIGKILL mid-stream, restart, redeliver
    python -m bench.faults sigterm   [--events 5000]                # clean stop mid-stream
    python -m bench.faults disk-full                                 # a small tmpfs filled up (root)
    python -m bench.faults read-only                                 # the tmpfs remounted read-only (root)
    python -m bench.faults lock                                      # a sqlite3 shell holding the write lock
    python -m bench.faults all [--json out.json]

Every scenario runs `python -m exporter serve` as a subprocess on loopback with a fresh signing secret, and sends
signed events the way Stripe does: each event until it gets a 2xx (a refused connection, a timeout or a 5xx is
retried after a short back-off), and a share of the acknowledged ones delivered again later (Stripe redelivers
when it saw no answer in time, and sometimes regardless). Per event id it records every answer, so:

- acknowledged: ids that got a 200;
- lost: acknowledged ids that were not in the state file at a check (read with sqlite3 right after each kill, and
  at the end), or that a later delivery found new again;
- counted twice: ids answered "accepted" more than once.

The faults are real: SIGKILL, a tmpfs mounted with `mount -t tmpfs -o size=...` and filled, `mount -o remount,ro`,
the `sqlite3` shell. docs/faults.md has the figures; tests/test_faults.py runs the same scenarios, smaller.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from exporter import samples

REPO = Path(__file__).resolve().parent.parent
WEBHOOK_PATH = "/webhooks/stripe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExporterProcess:
    """`billingwatch serve` as a subprocess on fixed loopback ports (kept across restarts)."""

    def __init__(self, state: Path, *, secret: str | None = None, log: Path | None = None):
        self.state = state
        self.secret = secret or "whsec_fault_" + secrets.token_hex(16)
        self.port = free_port()
        self.metrics_port = free_port()
        self.log = log or Path(tempfile.mkstemp(prefix="billingwatch-faults-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        atexit.register(self.stop_if_running)

    def stop_if_running(self) -> None:
        """Never leave an exporter behind (a failed scenario, an interrupted test)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    @property
    def private(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "STRIPE_WEBHOOK_SECRET": self.secret, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exporter", "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--state", str(self.state),
                 "--log-level", "info"],
                cwd=REPO, env=env, stdout=log, stderr=log,
            )
        self.starts += 1
        return self.proc

    def start(self, timeout: float = 60.0) -> float:
        """Spawn and wait until /readyz answers 200; returns the seconds that took."""
        t0 = time.monotonic()
        self.spawn()
        if not wait_for(lambda: self.ready() or self.exited(), timeout) or self.exited():
            raise RuntimeError(f"exporter did not become ready:\n{self.log_tail()}")
        return time.monotonic() - t0

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.private + path, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, labels: str = "") -> float | None:
        """The value of the sample `name{labels}` (labels as written in the exposition, without braces)."""
        status, text = self.get("/metrics")
        if status != 200:
            return None
        want = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == want:
                return float(value)
        return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def wait_for(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def ids_on_disk(state: Path) -> set[str]:
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT id FROM seen_events")}
    finally:
        db.close()


@dataclass
class Ledger:
    """Every answer per event id, as the sender saw it."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)  # 0: no answer (refused, reset, timeout)
    lost: set[str] = field(default_factory=set)

    def new_event(self, rng: random.Random) -> dict[str, Any]:
        kind = rng.random()
        if kind < 0.6:
            obj = samples.charge(amount=rng.randrange(100, 50_000), currency=rng.choice(("usd", "eur", "gbp")))
            event_type = "charge.succeeded"
        else:
            obj = samples.invoice(total=rng.randrange(500, 20_000))
            event_type = "invoice.paid"
        event = {
            "id": f"evt_fault_{secrets.token_hex(8)}", "object": "event", "api_version": "2025-03-31.basil",
            "created": int(time.time()), "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": event_type,
        }
        self.events[event["id"]] = event
        return event

    def record(self, event_id: str, status: int, outcome: str | None) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status != 200:
            return
        if outcome == "accepted":
            self.accepted[event_id] = self.accepted.get(event_id, 0) + 1
            if event_id in self.acked:
                self.lost.add(event_id)  # acknowledged before, yet taken as new
        self.acked.add(event_id)

    def check_disk(self, state: Path) -> int:
        """Acknowledged ids missing from the state file now; returns how many were newly found missing."""
        missing = self.acked - ids_on_disk(state) - self.lost
        self.lost |= missing
        return len(missing)

    @property
    def counted_twice(self) -> int:
        return sum(1 for n in self.accepted.values() if n > 1)

    def summary(self) -> dict[str, Any]:
        return {
            "events": len(self.events), "acknowledged": len(self.acked), "lost": len(self.lost),
            "counted_twice": self.counted_twice,
            "answers": {str(k): v for k, v in sorted(self.statuses.items())},
        }


class Sender:
    """Stripe-like delivery: each event until a 2xx, redeliveries of some acknowledged ones."""

    def __init__(self, exporter: ExporterProcess, ledger: Ledger, *, seed: int = 1, redeliver: float = 0.1,
                 concurrency: int = 16, retry_delay: float = 0.2):
        self.exporter = exporter
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.redeliver = redeliver
        self.concurrency = concurrency
        self.retry_delay = retry_delay
        self.retries: list[tuple[float, str]] = []  # (due, id)
        self.latencies: list[float] = []

    async def post(self, session: aiohttp.ClientSession, event_id: str) -> tuple[int, str | None]:
        body = orjson.dumps(self.ledger.events[event_id])
        headers = {"Stripe-Signature": samples.sign(body, self.exporter.secret), "Content-Type": "application/json"}
        t0 = time.monotonic()
        try:
            async with session.post(self.exporter.url, data=body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            return 0, None
        self.latencies.append(time.monotonic() - t0)
        outcome = None
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            outcome = orjson.loads(raw).get("outcome")
        return status, outcome

    async def deliver(self, session: aiohttp.ClientSession, event_id: str) -> int:
        status, outcome = await self.post(session, event_id)
        self.ledger.record(event_id, status, outcome)
        if status != 200:
            self.retries.append((time.monotonic() + self.retry_delay, event_id))
        elif self.rng.random() < self.redeliver:
            self.retries.append((time.monotonic() + self.rng.uniform(0.05, 2.0), event_id))
        return status

    def _next_id(self, left: list[int]) -> str | None:
        """A retry that is due, else a new event while `left[0]` > 0, else None."""
        now = time.monotonic()
        for i, (due, event_id) in enumerate(self.retries):
            if due <= now:
                del self.retries[i]
                return event_id
        if left[0] > 0:
            left[0] -= 1
            return self.ledger.new_event(self.rng)["id"]
        return None

    async def run(self, new_events: int, *, stop: asyncio.Event | None = None, rate: float | None = None) -> None:
        """Send `new_events` new events (and every retry due) with `concurrency` workers, `rate` events/s at most;
        until `stop` is set when given, else until every retry is done."""
        left = [new_events]
        timeout = aiohttp.ClientTimeout(total=15)
        interval = self.concurrency / rate if rate else 0.0
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                while not (stop is not None and stop.is_set()):
                    event_id = self._next_id(left)
                    if event_id is None:
                        if not self.retries and stop is None:
                            return
                        await asyncio.sleep(0.02)
                        continue
                    status = await self.deliver(session, event_id)
                    if status == 0:
                        await asyncio.sleep(self.retry_delay)  # the exporter is down: no busy loop
                    elif interval:
                        await asyncio.sleep(interval)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def redeliver_all(self) -> None:
        """Deliver every acknowledged event once more (a duplicate answer each, or it was lost)."""
        async with aiohttp.ClientSession() as session:
            ids = sorted(self.ledger.acked)
            sem = asyncio.Semaphore(self.concurrency)

            async def one(event_id: str) -> None:
                async with sem:
                    status, outcome = await self.post(session, event_id)
                    self.ledger.record(event_id, status, outcome)

            await asyncio.gather(*(one(i) for i in ids))


def _finish(exporter: ExporterProcess, ledger: Ledger, sender: Sender, result: dict[str, Any]) -> dict[str, Any]:
    asyncio.run(sender.run(0))  # retries still due
    asyncio.run(sender.redeliver_all())
    rc = exporter.terminate()
    ledger.check_disk(exporter.state)
    result.update(ledger.summary())
    result["sigterm_exit"] = rc
    result["tracebacks"] = exporter.log_text().count("Traceback")
    return result


def scenario_kill(workdir: Path, *, events: int = 20_000, kills: int = 5, seed: int = 1) -> dict[str, Any]:
    """SIGKILL at random moments mid-stream, check the file, restart, go on; redeliver everything at the end."""
    exporter = ExporterProcess(workdir / "state.sqlite3")
    ledger = Ledger()
    sender = Sender(exporter, ledger, seed=seed)
    rng = random.Random(seed)
    recover: list[float] = []
    lost_at_kill: list[int] = []
    exporter.start()

    async def stream() -> None:
        stop = asyncio.Event()
        per_phase = events // (kills + 1)

        async def killer() -> None:
            for _ in range(kills):
                target = len(ledger.events) + per_phase
                while len(ledger.events) < target:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                await asyncio.to_thread(exporter.kill)
                await asyncio.sleep(0.2)  # answers already on the wire are read by the sender meanwhile
                lost_at_kill.append(ledger.check_disk(exporter.state))
                recover.append(await asyncio.to_thread(exporter.start))
            while len(ledger.events) < events:
                await asyncio.sleep(0.01)
            stop.set()

        await asyncio.gather(sender.run(events, stop=stop), killer())

    asyncio.run(stream())
    result = {"scenario": "SIGKILL mid-stream", "kills": kills, "lost_at_each_kill": lost_at_kill,
              "seconds_to_ready_after_kill": [round(r, 2) for r in recover]}
    return _finish(exporter, ledger, sender, result)


def scenario_sigterm(workdir: Path, *, events: int = 5000, seed: int = 2) -> dict[str, Any]:
    exporter = ExporterProcess(workdir / "state.sqlite3")
    ledger = Ledger()
    sender = Sender(exporter, ledger, seed=seed)
    exporter.start()

    async def stream() -> None:
        stop = asyncio.Event()

        async def stopper() -> None:
            while len(ledger.events) < events // 2:
                await asyncio.sleep(0.01)
            rc = await asyncio.to_thread(exporter.terminate)
            result["first_exit"] = rc
            result["seconds_to_ready"] = round(await asyncio.to_thread(exporter.start), 2)
            while len(ledger.events) < events:
                await asyncio.sleep(0.01)
            stop.set()

        await asyncio.gather(sender.run(events, stop=stop), stopper())

    result: dict[str, Any] = {"scenario": "SIGTERM mid-stream"}
    asyncio.run(stream())
    return _finish(exporter, ledger, sender, result)


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A real, small tmpfs (needs root), unmounted afterwards."""
    mountpoint = Path(tempfile.mkdtemp(prefix="billingwatch-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        shutil.rmtree(mountpoint, ignore_errors=True)


@contextlib.contextmanager
def loop_ext4(size_mb: int) -> Iterator[Path]:
    """A real ext4 filesystem on a loop device (needs root; tmpfs has no chattr), removed afterwards."""
    image = Path(tempfile.mkstemp(prefix="billingwatch-ext4-", suffix=".img")[1])
    mountpoint = Path(tempfile.mkdtemp(prefix="billingwatch-ext4-"))
    os.truncate(image, size_mb << 20)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", device], check=True)
        subprocess.run(["mount", device, str(mountpoint)], check=True)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
        image.unlink(missing_ok=True)
        shutil.rmtree(mountpoint, ignore_errors=True)


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *(str(p) for p in paths if p.exists())], check=True)


def fill(mountpoint: Path) -> Path:
    """Fill the filesystem up to the last byte; returns the filler file."""
    filler = mountpoint / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def _storage_episode(exporter: ExporterProcess, ledger: Ledger, sender: Sender, *, during: int, break_it: Any,
                     mend_it: Any, result: dict[str, Any]) -> None:
    """Traffic while the storage is broken, then mended: 503s, readiness, metric, log, recovery, memory."""

    async def broken() -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            t0 = time.monotonic()
            while not ledger.statuses.get(503):
                await asyncio.sleep(0.01)
            # Until the first 503: a full disk still takes commits that fit in the WAL's allocated space.
            result["seconds_to_first_503"] = round(time.monotonic() - t0, 2)
            while ledger.statuses.get(503, 0) < during:
                await asyncio.sleep(0.05)
            stop.set()

        await asyncio.gather(sender.run(10**9, stop=stop, rate=500), watch())

    rss_before = exporter.rss_mb()
    break_it()
    asyncio.run(broken())
    result["readyz_while_broken"] = exporter.get("/readyz")[0]
    result["state_writable_metric"] = exporter.metric("billingwatch_state_writable")
    result["write_errors_metric"] = exporter.metric("billingwatch_state_write_errors_total")
    result["unavailable_answers_metric"] = exporter.metric("billingwatch_webhook_requests_total",
                                                           'outcome="unavailable"')
    result["rss_growth_mb_while_broken"] = round(exporter.rss_mb() - rss_before, 1)
    result["answers_503"] = ledger.statuses.get(503, 0)
    mend_it()
    t1 = time.monotonic()
    result["recovered"] = wait_for(exporter.ready, 30)
    result["seconds_to_ready_after_mend"] = round(time.monotonic() - t1, 2)
    result["error_log_lines"] = exporter.log_text().count("state cannot be saved")
    wait_for(lambda: "state writable again" in exporter.log_text(), 10)
    result["recovery_log_lines"] = exporter.log_text().count("state writable again")


def scenario_disk_full(workdir: Path, *, events: int = 2000, during: int = 2000, seed: int = 3) -> dict[str, Any]:
    result: dict[str, Any] = {"scenario": "disk full (tmpfs)"}
    with tmpfs("32m") as mnt:
        exporter = ExporterProcess(mnt / "state" / "state.sqlite3", log=workdir / "disk-full.log")
        ledger = Ledger()
        sender = Sender(exporter, ledger, seed=seed)
        exporter.start()
        asyncio.run(sender.run(events))
        filler: list[Path] = []
        _storage_episode(exporter, ledger, sender, during=during, break_it=lambda: filler.append(fill(mnt)),
                         mend_it=lambda: filler[0].unlink(), result=result)
        return _finish(exporter, ledger, sender, result)


def scenario_read_only(workdir: Path, *, events: int = 2000, during: int = 2000, seed: int = 4) -> dict[str, Any]:
    """The state file and its WAL made immutable (chattr +i, on ext4): every write fails as on a filesystem
    that went read-only (a real remount is refused while the exporter holds the files open for writing)."""
    result: dict[str, Any] = {"scenario": "read-only state at run time (chattr +i)"}
    with loop_ext4(64) as mnt:
        exporter = ExporterProcess(mnt / "state.sqlite3", log=workdir / "read-only.log")
        ledger = Ledger()
        sender = Sender(exporter, ledger, seed=seed)
        exporter.start()
        asyncio.run(sender.run(events))
        files = (exporter.state, Path(f"{exporter.state}-wal"))
        _storage_episode(exporter, ledger, sender, during=during, break_it=lambda: chattr("+i", *files),
                         mend_it=lambda: chattr("-i", *files), result=result)
        return _finish(exporter, ledger, sender, result)


def scenario_lock(workdir: Path, *, events: int = 2000, hold: float = 3.0, seed: int = 5) -> dict[str, Any]:
    """A `sqlite3` shell holds the write lock (BEGIN EXCLUSIVE) for `hold` seconds under traffic."""
    exporter = ExporterProcess(workdir / "state.sqlite3")
    ledger = Ledger()
    sender = Sender(exporter, ledger, seed=seed)
    exporter.start()
    asyncio.run(sender.run(events))
    shell = subprocess.Popen([require("sqlite3"), str(exporter.state)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert shell.stdin is not None and shell.stdout is not None
    shell.stdin.write(b"BEGIN EXCLUSIVE;\nINSERT INTO kv VALUES ('x', 'y', x'00', 0);\nSELECT 'locked';\n")
    shell.stdin.flush()
    shell.stdout.readline()
    health: list[float] = []

    async def under_lock() -> None:
        stop = asyncio.Event()

        async def probe() -> None:
            end = time.monotonic() + hold
            async with aiohttp.ClientSession() as session:
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    async with session.get(exporter.private + "/healthz") as resp:
                        await resp.read()
                    health.append(time.monotonic() - t0)
                    await asyncio.sleep(0.05)
            stop.set()

        await asyncio.gather(sender.run(10**9, stop=stop, rate=200), probe())

    n0 = len(sender.latencies)
    asyncio.run(under_lock())
    shell.stdin.write(b"ROLLBACK;\n.quit\n")
    shell.stdin.flush()
    shell.wait(timeout=10)
    lat = sorted(sender.latencies[n0:])
    result: dict[str, Any] = {
        "scenario": f"external lock ({hold:.0f} s BEGIN EXCLUSIVE in a sqlite3 shell)",
        "webhook_max_seconds_under_lock": round(lat[-1], 3) if lat else None,
        "healthz_max_seconds_under_lock": round(max(health), 3),
        "answers_503": ledger.statuses.get(503, 0),
    }
    t1 = time.monotonic()
    result["recovered"] = wait_for(exporter.ready, 30)
    result["seconds_to_ready_after_unlock"] = round(time.monotonic() - t1, 2)
    return _finish(exporter, ledger, sender, result)


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"{binary} is not installed")
    return path


SCENARIOS = {
    "kill": scenario_kill,
    "sigterm": scenario_sigterm,
    "disk-full": scenario_disk_full,
    "read-only": scenario_read_only,
    "lock": scenario_lock,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--events", type=int, help="new events per scenario (default: the scenario's own)")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs in the kill scenario (5)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results = []
    for name in names:
        kwargs: dict[str, Any] = {}
        if args.events:
            kwargs["events"] = args.events
        if name == "kill":
            kwargs["kills"] = args.kills
        with tempfile.TemporaryDirectory(prefix=f"billingwatch-faults-{name}-") as work:
            t0 = time.monotonic()
            result = SCENARIOS[name](Path(work), **kwargs)
            result["seconds"] = round(time.monotonic() - t0, 1)
        print(json.dumps(result))
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    bad = [r["scenario"] for r in results if r["lost"] or r["counted_twice"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
