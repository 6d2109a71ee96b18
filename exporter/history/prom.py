"""The real Prometheus engine for backtests: promtool backfills blocks, a private `prometheus` answers queries.

The Prometheus process listens on a free loopback port, scrapes nothing and loads no rules; it only serves
`/api/v1/query_range` over the backfilled TSDB. Its lookback delta is set just under the backtest's scrape
interval: every series present at a scrape has a sample at that exact instant, so queries on the scrape grid see
exactly the series of the latest scrape, and a series that vanished (an expired anomaly gauge) vanishes from
queries at the next scrape, as a staleness marker would make it in a live Prometheus.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

# Prometheus refuses query_range requests of more than 11,000 points per series.
MAX_POINTS = 10_000


class PrometheusError(Exception):
    pass


def find_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise PrometheusError(f"{name} not found on PATH: the backtest needs Prometheus's own {name} (2.x)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backfill_openmetrics(om_file: Path, data_dir: Path, block_seconds: float) -> None:
    """Import an OpenMetrics file into `data_dir` as TSDB blocks.

    One block per `block_seconds` (hidden promtool flag --max-block-duration): promtool re-reads the whole file
    once per block window, so the default 2 h blocks would mean hundreds of passes over a month of history.
    """
    hours = max(2, int(block_seconds // 3600) + 1)
    with tempfile.TemporaryDirectory(prefix="bw-blocks-") as tmp:
        proc = subprocess.run(
            [
                find_binary("promtool"),
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                f"--max-block-duration={hours}h",
                str(om_file),
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise PrometheusError(f"promtool backfill failed: {proc.stderr.strip()[-2000:]}")
        data_dir.mkdir(parents=True, exist_ok=True)
        for block in Path(tmp).iterdir():
            if block.is_dir():
                shutil.move(str(block), data_dir / block.name)


class PrometheusProcess:
    """`prometheus` serving queries over `data_dir`; restart() picks up blocks added since start()."""

    def __init__(self, data_dir: Path, workdir: Path, *, lookback_seconds: float):
        self.data_dir = data_dir
        self.workdir = workdir
        self.lookback_ms = max(1, int(lookback_seconds * 1000))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\n", encoding="utf-8")
        self.port = free_port()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                find_binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Retention is measured from the newest block, so any long value keeps the whole history.
                "--storage.tsdb.retention.time=100y",
                f"--query.lookback-delta={self.lookback_ms}ms",
                "--query.max-samples=200000000",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise PrometheusError(f"prometheus did not become ready: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Matrix result of `expr` on the grid start, start+step, ... <= end, in chunks Prometheus accepts."""
        out: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        chunk = step * MAX_POINTS
        t = start
        while t <= end:
            t_end = min(end, t + chunk - step)
            for series in self._query_range_once(expr, t, t_end, step):
                key = tuple(sorted(series["metric"].items()))
                if key in out:
                    out[key]["values"].extend(series["values"])
                else:
                    out[key] = series
            t = t_end + step
        return list(out.values())

    def _query_range_once(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        body = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step}).encode()
        req = urllib.request.Request(f"{self.url}/api/v1/query_range", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                doc = orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"query failed ({exc.code}): {detail[:500]}\n  query: {expr}") from exc
        if doc.get("status") != "success":
            raise PrometheusError(f"query failed: {doc.get('error')}\n  query: {expr}")
        data = doc["data"]
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"unexpected result type {data.get('resultType')} for {expr}")
        return data["result"]
