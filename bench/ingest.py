"""Ingest benchmark: the real exporter against a minimal aiohttp receiver, under the same load generator.

`python -m bench.ingest` (or `make bench`) runs, in order:
1. the minimal receiver (bench/minimal_receiver.py: HMAC check + JSON parse only): saturation rate, then
   latency at the fixed rate;
2. `billingwatch serve` (its default config, a temp state file, a real signing secret, free loopback ports):
   saturation rate, latency at the fixed rate, then load until `--events` events in total have been accepted,
   its RSS (VmRSS from /proc), and `/metrics` scrape times;
and prints a summary with PASS/FAIL against the targets of issue 2. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench.events import id_prefix

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

# Targets (2-core machine): issue 2 set them with a ratio of 0.5; issue 15 (the simplification onto stock
# prometheus_client types) holds the exporter to 0.45, the floor the tables in docs/benchmark.md are read against.
TARGET_RATIO = 0.45
TARGET_P99_MS = 5.0
TARGET_RSS_MB = 150.0
TARGET_SCRAPE_MS = 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pin(pid: int, cpu: int | None) -> None:
    """Pin a process to one CPU, or with None let it run on any (as in production)."""
    try:
        os.sched_setaffinity(pid, {cpu} if cpu is not None else os.sched_getaffinity(0))
    except OSError:
        pass


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            if http_get(port, path, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready on port {port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextmanager
def running(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            yield proc
        finally:
            stop(proc)


class RssSampler(threading.Thread):
    """(accepted events, RSS MB) every few seconds during the fill: how memory grows with the events."""

    def __init__(self, pid: int, mport: int, every: float = 10.0):
        super().__init__(daemon=True)
        self.pid, self.mport, self.every = pid, mport, every
        self.samples: list[tuple[int, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            try:
                _, body = http_get(self.mport, "/metrics")
                match = re.search(rb'^billingwatch_webhook_requests_total\{outcome="accepted"\} (\S+)$', body, re.M)
                accepted = int(float(match.group(1))) if match else -1
                self.samples.append((accepted, round(status_kb(self.pid, "VmRSS") / 1024, 1)))
            except OSError:
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.secret = "whsec_" + secrets.token_hex(16)
        self.prefix_rng = random.Random()
        two_cores = (os.cpu_count() or 1) >= 2 and not args.no_pin
        # Server on one core, load generator on the other: what is measured is the server alone.
        self.server_cpu = 0 if two_cores else None
        self.loadgen_cpu = 1 if two_cores else None
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.flush_stats: dict[str, Any] = {}

    def say(self, msg: str) -> None:
        if not self.args.json_only:
            print(msg, file=sys.stderr, flush=True)

    def loadgen(self, mode: str, port: int, expect: str, **opts: Any) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "bench.loadgen", mode, "--host", HOST, "--port", str(port)]
        cmd += ["--secret", self.secret, "--id-prefix", id_prefix(self.prefix_rng), "--expect", expect]
        cmd += ["--connections", str(self.args.connections), "--customers", str(self.args.customers)]
        for key, value in opts.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        if mode == "saturate":
            pin(proc.pid, self.loadgen_cpu)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        result: dict[str, Any] = orjson.loads(out)
        if result["errors"]:
            raise RuntimeError(f"{result['errors']} of {result['answered']} answers were not 200/{expect!r}")
        return result

    def saturate(self, port: int, expect: str, pid: int) -> dict[str, Any]:
        a = self.args
        cpu = cpu_seconds(pid)
        sat = self.loadgen("saturate", port, expect, warmup=a.warmup, duration=a.duration)
        # CPU per event barely depends on other load on the machine, unlike the rate: a cross-check.
        sat["server_cpu_us_per_event"] = 1e6 * (cpu_seconds(pid) - cpu) / max(1, sat["sent"])
        return sat

    def run(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both servers run side by side (the one not under load is idle); their saturation rounds alternate so
        that a burst of other load on the machine cannot favour one of them."""
        a = self.args
        mport = free_port()
        mcmd = [sys.executable, "-m", "bench.minimal_receiver", "--host", HOST, "--port", str(mport)]
        mcmd += ["--secret", self.secret]
        port, metrics_port = free_port(), free_port()
        env = dict(self.env, STRIPE_WEBHOOK_SECRET=self.secret)
        for name in ("BILLINGWATCH_CONFIG", "BILLINGWATCH_MODE", "BILLINGWATCH_LOG_LEVEL"):
            env.pop(name, None)
        ecmd = [sys.executable, "-m", "exporter", "serve", "--listen", f"{HOST}:{port}"]
        ecmd += ["--metrics-listen", f"{HOST}:{metrics_port}", "--state", str(self.workdir / "state.sqlite3")]
        ecmd += ["--log-level", "warning"]
        with (
            running(mcmd, self.env, self.workdir / "minimal.log") as mproc,
            running(ecmd, env, self.workdir / "exporter.log") as eproc,
        ):
            pin(mproc.pid, self.server_cpu)
            pin(eproc.pid, self.server_cpu)
            wait_http(mport, "/healthz", mproc, "minimal receiver", self.workdir / "minimal.log")
            wait_http(metrics_port, "/readyz", eproc, "billingwatch serve", self.workdir / "exporter.log")
            rss_start = status_kb(eproc.pid, "VmRSS")
            minimal: dict[str, Any] = {"saturation_rounds": []}
            exp: dict[str, Any] = {"saturation_rounds": []}
            sent = 0
            for n in range(a.rounds):
                for name, side, sport, expect, pid in (
                    ("minimal receiver", minimal, mport, "received", mproc.pid),
                    ("exporter", exp, port, '"accepted"', eproc.pid),
                ):
                    sat = self.saturate(sport, expect, pid)
                    side["saturation_rounds"].append(sat)
                    sent += sat["sent"] if side is exp else 0
                    self.say(
                        f"  round {n + 1}/{a.rounds}, {name}: {sat['rate']:,.0f} events/s at saturation "
                        f"({a.connections} connections), server CPU {sat['server_cpu_us_per_event']:.0f} us/event"
                    )
            for side in (minimal, exp):
                rounds = side["saturation_rounds"]
                # Other load can only slow a round down: the best round is the closest to the server's own speed.
                side["saturation"] = max(rounds, key=lambda r: r["rate"])
                side["saturation_median_rate"] = statistics.median(r["rate"] for r in rounds)
                side["server_cpu_us_per_event_median"] = statistics.median(r["server_cpu_us_per_event"] for r in rounds)
            # Latency at a fixed rate is measured unpinned, as the server would run in production: pinned, a
            # burst of other load on its CPU could not move elsewhere and would show as the server's latency.
            pin(mproc.pid, None)
            pin(eproc.pid, None)
            for name, side, sport, expect in (
                ("minimal receiver", minimal, mport, "received"),
                ("exporter", exp, port, '"accepted"'),
            ):
                paced = self.loadgen(
                    "paced", sport, expect, rate=a.rate, warmup=min(1.0, a.warmup), duration=a.duration
                )
                side["paced"] = paced
                sent += paced["sent"] if side is exp else 0
                self.say(
                    f"  {name} at {a.rate:,.0f} events/s: p50 {paced['p50_ms']:.2f} ms, "
                    f"p99 {paced['p99_ms']:.2f} ms, max {paced['max_ms']:.2f} ms"
                )
            stop(mproc)
            pin(eproc.pid, self.server_cpu)
            remaining = max(0, a.events - sent)
            if remaining:
                self.say(f"  exporter: loading {remaining:,} more events ({a.events:,} in total) ...")
                sampler = RssSampler(eproc.pid, metrics_port)
                sampler.start()
                try:
                    fill = self.loadgen("saturate", port, '"accepted"', count=remaining)
                finally:
                    sampler.stop()
                exp["rss_trajectory"] = sampler.samples
                sent += fill["sent"]
                exp["fill"] = fill
                self.say(f"  ... at {fill['rate']:,.0f} events/s")
            time.sleep(a.settle)  # one state flush and housekeeping round after the load
            exp["events_total"] = sent
            exp["rss_start_mb"] = rss_start / 1024
            exp["rss_mb"] = status_kb(eproc.pid, "VmRSS") / 1024
            exp["rss_peak_mb"] = status_kb(eproc.pid, "VmHWM") / 1024
            self.say(f"  RSS after {sent:,} events: {exp['rss_mb']:.1f} MB (peak {exp['rss_peak_mb']:.1f})")
            exp["scrape"] = self.scrapes(metrics_port)
            exp["accepted_counted"] = self.accepted(metrics_port)
            exp["state"] = self.flush_stats
            self.say(
                f"  state flushes: {exp['state']['flushes']:.0f}, mean {exp['state']['flush_mean_ms']:.1f} ms; "
                f"anomalies raised: {exp['state']['anomalies'] or 'none'}"
            )
            t = time.perf_counter()
            exp["exit_code"] = stop(eproc)
            exp["shutdown_seconds"] = time.perf_counter() - t
            exp["log_tail"] = (self.workdir / "exporter.log").read_text(errors="replace")[-1500:]
        return minimal, exp

    def scrapes(self, mport: int) -> dict[str, Any]:
        times, size = [], 0
        for _ in range(self.args.scrapes):
            t = time.perf_counter()
            status, body = http_get(mport, "/metrics")
            times.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"/metrics answered {status}")
            size = len(body)
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        times.sort()
        out = {
            "p50_ms": 1000 * statistics.median(times),
            "max_ms": 1000 * times[-1],
            "count": len(times),
            "bytes": size,
            "series": series,
        }
        self.say(f"  /metrics: p50 {out['p50_ms']:.1f} ms, max {out['max_ms']:.1f} ms ({series} series, {size} bytes)")
        return out

    def accepted(self, mport: int) -> float:
        _, body = http_get(mport, "/metrics")
        self.flush_stats = flush_stats(body)
        match = re.search(rb'^billingwatch_webhook_requests_total\{outcome="accepted"\} (\S+)$', body, re.M)
        return float(match.group(1)) if match else -1.0


def flush_stats(metrics_text: bytes) -> dict[str, Any]:
    """Periodic state flushes (written from a worker thread) and anomalies raised, from the exporter's metrics."""

    def value(pattern: bytes) -> float:
        match = re.search(rb"^" + pattern + rb" (\S+)$", metrics_text, re.M)
        return float(match.group(1)) if match else 0.0

    count = value(rb"billingwatch_state_flush_seconds_count")
    total = value(rb"billingwatch_state_flush_seconds_sum")
    over_10ms = count - value(rb'billingwatch_state_flush_seconds_bucket\{le="0.01"\}')
    anomalies = {
        m.group(1).decode(): float(m.group(2))
        for m in re.finditer(rb'^billingwatch_anomalies_total\{detector="([^"]*)"\} (\S+)$', metrics_text, re.M)
    }
    return {
        "flushes": count,
        "flush_mean_ms": 1000 * total / count if count else 0.0,
        "flushes_over_10ms": over_10ms,
        "anomalies": anomalies,
    }


def summary(minimal: dict[str, Any], exp: dict[str, Any], quick: bool) -> tuple[list[tuple[str, ...]], bool]:
    ratio = exp["saturation"]["rate"] / minimal["saturation"]["rate"]
    cpu_ratio = minimal["server_cpu_us_per_event_median"] / exp["server_cpu_us_per_event_median"]
    rows = [
        (
            "events/s at saturation, exporter",
            f"{exp['saturation']['rate']:,.0f}",
            f"(best of {len(exp['saturation_rounds'])}; median {exp['saturation_median_rate']:,.0f})",
            "",
        ),
        (
            "events/s at saturation, minimal receiver",
            f"{minimal['saturation']['rate']:,.0f}",
            f"(best of {len(minimal['saturation_rounds'])}; median {minimal['saturation_median_rate']:,.0f})",
            "",
        ),
        (
            "server CPU per event, exporter / minimal",
            f"{exp['server_cpu_us_per_event_median']:.0f} / {minimal['server_cpu_us_per_event_median']:.0f} us",
            f"(median; CPU ratio {cpu_ratio:.2f})",
            "",
        ),
        ("ratio exporter / minimal", f"{ratio:.2f}", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        (
            f"p50 latency at {exp['paced']['rate']:,.0f} events/s",
            f"{exp['paced']['p50_ms']:.2f} ms",
            f"(minimal {minimal['paced']['p50_ms']:.2f} ms)",
            "",
        ),
        (
            f"p99 latency at {exp['paced']['rate']:,.0f} events/s",
            f"{exp['paced']['p99_ms']:.2f} ms",
            f"<= {TARGET_P99_MS:g} ms (minimal {minimal['paced']['p99_ms']:.2f} ms)",
            exp["paced"]["p99_ms"] <= TARGET_P99_MS,
        ),
        (
            f"RSS after {exp['events_total']:,} events",
            f"{exp['rss_mb']:.1f} MB",
            f"<= {TARGET_RSS_MB:g} MB (peak {exp['rss_peak_mb']:.1f}, at start {exp['rss_start_mb']:.1f})",
            exp["rss_mb"] <= TARGET_RSS_MB,
        ),
        (
            f"/metrics scrape time ({exp['scrape']['count']} scrapes)",
            f"p50 {exp['scrape']['p50_ms']:.1f} / max {exp['scrape']['max_ms']:.1f} ms",
            f"<= {TARGET_SCRAPE_MS:g} ms",
            exp["scrape"]["max_ms"] <= TARGET_SCRAPE_MS,
        ),
    ]
    table = [(name, value, target, "" if ok == "" else ("PASS" if ok else "FAIL")) for name, value, target, ok in rows]
    all_ok = all(r[3] != "FAIL" for r in table)
    return table, all_ok


def render(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    head = ("measure", "value", "target", "result")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description="BillingWatch ingest benchmark")
    p.add_argument("--quick", action="store_true", help="smoke run: short phases and few events (not meaningful)")
    p.add_argument("--events", type=int, help="events sent to the exporter in total before RSS is read (1,000,000)")
    p.add_argument("--rate", type=float, default=2000.0, help="fixed rate of the latency phase, events/s (2000)")
    p.add_argument("--duration", type=float, help="seconds measured per saturation/latency phase (10)")
    p.add_argument("--warmup", type=float, help="seconds of load before each measurement (2)")
    p.add_argument("--rounds", type=int, help="alternating saturation rounds per server; the best counts (3)")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections of the load generator (16)")
    p.add_argument("--customers", type=int, default=50_000, help="distinct customers in the traffic (50,000)")
    p.add_argument("--scrapes", type=int, default=20, help="/metrics scrapes after the load (20)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the load and the RSS reading (2)")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to separate cores")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    quick = args.quick
    args.events = args.events if args.events is not None else (300 if quick else 1_000_000)
    args.duration = args.duration if args.duration is not None else (0.5 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if quick else 2.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
    if quick:
        args.scrapes = min(args.scrapes, 5)
        args.settle = min(args.settle, 1.2)
        args.rate = min(args.rate, 200.0) if args.rate == 2000.0 else args.rate
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="billingwatch-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        load = os.getloadavg()
        minimal, exp = bench.run()
    table, all_ok = summary(minimal, exp, args.quick)
    valid = exp["accepted_counted"] == exp["events_total"] and exp["exit_code"] == 0
    report = {
        "quick": args.quick,
        "started": started,
        "seconds": time.time() - started,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "pinned": bench.server_cpu is not None,
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
        "minimal": minimal,
        "exporter": exp,
        "ratio": exp["saturation"]["rate"] / minimal["saturation"]["rate"],
        "targets_met": all_ok,
        "valid": valid,
        "table": table,
    }
    if args.json:
        Path(args.json).write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if args.json_only:
        print(orjson.dumps(report).decode())
    else:
        print()
        if args.quick:
            print("QUICK RUN: a smoke test of the benchmark itself; these figures are not meaningful.")
        print(render(table))
        print(
            f"\nmean body {exp['saturation']['mean_body_bytes']:.0f} bytes; load average before "
            f"{load[0]:.2f}, after {report['loadavg_after'][0]:.2f}; server and load generator "
            f"{'pinned to separate cores' if report['pinned'] else 'not pinned'}; {report['seconds']:.0f} s in total."
        )
        if not valid:
            print(
                f"INVALID RUN: the exporter counted {exp['accepted_counted']:.0f} accepted events of "
                f"{exp['events_total']} sent, exit code {exp['exit_code']}.\n{exp['log_tail']}"
            )
    if not valid:
        return 2
    return 1 if args.strict and not all_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
