"""The real stack for end-to-end runs: exporter, Prometheus and Alertmanager as subprocesses on loopback ports.

Used by the e2e tests and by bench/e2e_latency.py. Nothing here is a mock: each part is the real binary (or the
real `billingwatch serve`), talking over real sockets; the test process only starts, stops and observes them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from scripts.stack_config import derive_alertmanager, derive_prometheus

REPO = Path(__file__).resolve().parents[2]
VENV_BILLINGWATCH = REPO / ".venv" / "bin" / "billingwatch"
T = TypeVar("T")


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a server still starting refuses connections: keep polling
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    status, body = http("GET", url)
    if status != 200:
        raise RuntimeError(f"GET {url} -> {status}")
    return json.loads(body)


class Proc:
    """One child process with its output in a log file, started and stopped on demand (restartable)."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is already running"
        log = self.log_path.open("ab")
        log.write(f"\n=== start {' '.join(self.argv)}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.log_path.parent,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _fast_note(lines: list[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


# ---------------------------------------------------------------------------------------------- config derivation
# The e2e configs are the shipped files with addresses replaced. `fast=True` additionally shortens the timing keys
# listed in FAST_* below (and says so in the derived file's header); the latency benchmark uses fast=False.

FAST_PROMETHEUS_SECONDS = "1s"
FAST_ALERTMANAGER = {"group_wait": "1s", "group_interval": "1s"}


def fast_prometheus(cfg: dict[str, Any]) -> dict[str, Any]:
    """Test-only: scrape and evaluate every second (the rule groups' own intervals are shortened separately)."""
    for section in [cfg.setdefault("global", {}), *cfg.get("scrape_configs", [])]:
        for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
            if key in section or section is cfg["global"]:
                section[key] = FAST_PROMETHEUS_SECONDS
    return cfg


def fast_alertmanager(route: dict[str, Any], root: bool = True) -> None:
    """Test-only: group_wait/group_interval of 1 s on the root route and on each child route that sets its own."""
    for key, value in FAST_ALERTMANAGER.items():
        if root or key in route:
            route[key] = value
    for child in route.get("routes", []) or []:
        fast_alertmanager(child, root=False)


def write_yaml(path: Path, doc: dict[str, Any], header: list[str]) -> Path:
    path.write_text(_fast_note(header) + yaml.safe_dump(doc, sort_keys=False))
    return path


def shorten_rule_intervals(doc: dict[str, Any], interval: str) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    for group in out.get("groups", []):
        group["interval"] = interval
    return out


# ---------------------------------------------------------------------------------------------------------- stack


class Stack:
    """Exporter + Prometheus + Alertmanager wired to an SMTP server and a webhook receiver the caller runs."""

    def __init__(
        self,
        workdir: Path,
        *,
        secret: str,
        smtp_port: int,
        webhook_base: str,
        fast: bool = True,
        rules_dir: Path | None = None,
        exporter_config: Path | None = None,
        prometheus_yml: Path | None = None,
        alertmanager_yml: Path | None = None,
        prometheus_bin: str = "prometheus",
        alertmanager_bin: str = "prometheus-alertmanager",
    ):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.fast = fast
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        self.webhook_url = f"http://127.0.0.1:{self.webhook_port}/webhooks/stripe"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.prometheus_url = f"http://127.0.0.1:{self.prometheus_port}"
        self.alertmanager_url = f"http://127.0.0.1:{self.alertmanager_port}"

        rules_dir = rules_dir or REPO / "rules"
        rule_files = self._prepare_rules(rules_dir)
        prom_cfg = derive_prometheus(
            yaml.safe_load((prometheus_yml or REPO / "prometheus.yml").read_text()),
            exporter=f"127.0.0.1:{self.metrics_port}",
            alertmanager=f"127.0.0.1:{self.alertmanager_port}",
            rule_files=rule_files,
        )
        if fast:
            prom_cfg = fast_prometheus(prom_cfg)
        header = ["Derived from the repository's prometheus.yml by tests/e2e/e2e_stack.py: addresses and rule paths"]
        if fast:
            header.append(
                f"changed; fast mode also sets scrape/evaluation intervals and rule groups to "
                f"{FAST_PROMETHEUS_SECONDS} so the e2e suite runs in minutes."
            )
        self.prometheus_yml = write_yaml(self.dir / "prometheus.yml", prom_cfg, header)
        am_cfg = derive_alertmanager(
            yaml.safe_load((alertmanager_yml or REPO / "alertmanager.yml").read_text()),
            smtp=f"127.0.0.1:{smtp_port}",
            webhook_origin=webhook_base,
        )
        if fast:
            fast_alertmanager(am_cfg.setdefault("route", {}))
        header = [
            "Derived from the repository's alertmanager.yml by tests/e2e/e2e_stack.py: the SMTP smarthost and",
            "the webhook URLs' host:port changed.",
        ]
        if fast:
            header.append(
                f"Fast mode also sets every route's {', '.join(f'{k}={v}' for k, v in FAST_ALERTMANAGER.items())}"
                " (a later alert of an already-notified group is sent after group_interval)."
            )
        self.alertmanager_yml = write_yaml(self.dir / "alertmanager.yml", am_cfg, header)

        env = {**os.environ, "STRIPE_WEBHOOK_SECRET": secret}
        env.pop("BILLINGWATCH_CONFIG", None)
        exporter_argv = [
            str(VENV_BILLINGWATCH) if VENV_BILLINGWATCH.exists() else shutil.which("billingwatch") or "billingwatch",
            "serve",
            "--listen",
            f"127.0.0.1:{self.webhook_port}",
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--state",
            str(self.dir / "state.sqlite3"),
        ]
        if exporter_config is not None:
            exporter_argv += ["--config", str(exporter_config)]
        self.exporter = Proc("exporter", exporter_argv, self.dir, env)
        prom_argv = [
            prometheus_bin,
            f"--config.file={self.prometheus_yml}",
            f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            # As run.sh does: the alerts' generatorURL (the "Prometheus" link in notifications) is this server.
            f"--web.external-url={self.prometheus_url}/",
        ]
        if fast:
            # Prometheus re-sends firing alerts to Alertmanager every resend-delay (default 1m): the Alertmanager
            # outage test would wait a minute for it. Shortened for the e2e suite only.
            prom_argv.append("--rules.alert.resend-delay=1s")
        self.prometheus = Proc("prometheus", prom_argv, self.dir)
        self.alertmanager = Proc(
            "alertmanager",
            [
                alertmanager_bin,
                f"--config.file={self.alertmanager_yml}",
                f"--storage.path={self.dir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                f"--web.external-url={self.alertmanager_url}/",
                "--cluster.listen-address=",
            ],
            self.dir,
        )

    def _prepare_rules(self, rules_dir: Path) -> list[str]:
        out_dir = self.dir / "rules"
        out_dir.mkdir(exist_ok=True)
        files = []
        for src in sorted(rules_dir.glob("*.yml")):
            doc = yaml.safe_load(src.read_text())
            if not isinstance(doc, dict) or "groups" not in doc:
                continue
            if self.fast:
                doc = shorten_rule_intervals(doc, FAST_PROMETHEUS_SECONDS)
            dst = out_dir / src.name
            dst.write_text(yaml.safe_dump(doc, sort_keys=False))
            files.append(str(dst))
        return files

    # ---------------------------------------------------------------------------------------------- lifecycle
    def start_exporter(self) -> None:
        self.exporter.start()
        wait_for(lambda: http("GET", f"{self.metrics_url}/readyz")[0] == 200, 20, "the exporter to be ready")

    def start_prometheus(self) -> None:
        self.prometheus.start()
        wait_for(lambda: http("GET", f"{self.prometheus_url}/-/ready")[0] == 200, 30, "Prometheus to be ready")

    def start_alertmanager(self) -> None:
        self.alertmanager.start()
        wait_for(lambda: http("GET", f"{self.alertmanager_url}/-/ready")[0] == 200, 30, "Alertmanager to be ready")

    def start(self) -> Stack:
        self.exporter.start()
        self.prometheus.start()
        self.alertmanager.start()
        try:
            self.start_wait()
        except Exception:
            self.stop()
            raise
        return self

    def start_wait(self) -> None:
        wait_for(lambda: http("GET", f"{self.metrics_url}/readyz")[0] == 200, 20, "the exporter to be ready")
        wait_for(lambda: http("GET", f"{self.prometheus_url}/-/ready")[0] == 200, 30, "Prometheus to be ready")
        wait_for(lambda: http("GET", f"{self.alertmanager_url}/-/ready")[0] == 200, 30, "Alertmanager to be ready")
        wait_for(self.exporter_scraped, 30, "Prometheus to scrape the exporter")

    def stop(self) -> None:
        for proc in (self.exporter, self.prometheus, self.alertmanager):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.log_tail()}" for p in (self.exporter, self.prometheus, self.alertmanager)
        )

    # ---------------------------------------------------------------------------------------------- traffic
    def post(self, event: dict[str, Any], sign: Callable[[bytes, str], str], secret: str | None = None) -> int:
        body = json.dumps(event).encode()
        status, _ = http(
            "POST",
            self.webhook_url,
            body,
            {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret or self.secret)},
        )
        return status

    def post_raw(self, body: bytes, headers: dict[str, str]) -> int:
        return http("POST", self.webhook_url, body, headers)[0]

    # ---------------------------------------------------------------------------------------------- observing
    def exporter_metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A sample's value from the exporter's own /metrics (None when the series is absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        _, body = http("GET", f"{self.metrics_url}/metrics")
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return sample.value
        return None

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        data = get_json(url)
        return data["data"]["result"]

    def query_value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def exporter_scraped(self) -> bool:
        result = self.query(f'up{{instance="127.0.0.1:{self.metrics_port}"}}')
        return bool(result) and result[0]["value"][1] == "1"

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        return get_json(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"]

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        return get_json(f"{self.alertmanager_url}/api/v2/alerts")


def main(argv: Sequence[str]) -> int:  # pragma: no cover - a manual helper: python tests/e2e/e2e_stack.py DIR
    import tempfile

    workdir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="bw-stack-"))
    stack = Stack(workdir, secret="whsec_manual", smtp_port=1025, webhook_base="http://127.0.0.1:5001")
    stack.start()
    print(stack.webhook_url, stack.metrics_url, stack.prometheus_url, stack.alertmanager_url, flush=True)
    try:
        signal.pause()
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
