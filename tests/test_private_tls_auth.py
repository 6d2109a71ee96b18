"""TLS and basic auth on the private listener with an exporter-toolkit web config (`--web.config.file`): a real
Prometheus scrapes the real `billingwatch serve` over HTTPS with basic auth, curl and aiohttp check the answers,
and a bad file stops the start with a one-line error."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml

from bench.slow_clients import ExporterProcess, free_port
from tests.conftest import require_binary

USER, PASSWORD = "prometheus", "correct horse battery staple"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    openssl = require_binary("openssl")
    cert, key = tmp / "server.crt", tmp / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def _web_config(tmp: Path) -> Path:
    _self_signed(tmp)
    path = tmp / "web.yml"
    # Relative file names are read relative to the web config file, as exporter-toolkit does. Cost 4 keeps the
    # test fast; real files use 10 or more.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS12"},
        "basic_auth_users": {USER: hashed},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
    }))
    return path


@pytest.fixture
def secured(tmp_path):
    web = _web_config(tmp_path)
    ex = ExporterProcess(tmp_path, args=("--web.config.file", str(web)))
    ex.start()
    yield ex
    ex.stop()


def _curl(url: str, *args: str) -> tuple[int, str]:
    curl = require_binary("curl")
    out = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", *args, url],
                         capture_output=True, text=True)
    return int(out.stdout or 0), out.stderr


def test_curl_needs_tls_and_the_right_password(secured, tmp_path):
    url = f"https://127.0.0.1:{secured.metrics_port}/metrics"
    cacert = ("--cacert", str(tmp_path / "server.crt"))
    assert _curl(url, *cacert, "-u", f"{USER}:{PASSWORD}")[0] == 200
    assert _curl(url, *cacert)[0] == 401
    assert _curl(url, *cacert, "-u", f"{USER}:wrong")[0] == 401
    assert _curl(url, *cacert, "-u", f"nobody:{PASSWORD}")[0] == 401
    # The API with customer ids is behind the same door.
    assert _curl(f"https://127.0.0.1:{secured.metrics_port}/api/v1/anomalies", *cacert)[0] == 401
    # Plain HTTP gets no answer, and an unknown certificate is refused by the client.
    assert _curl(f"http://127.0.0.1:{secured.metrics_port}/metrics", "-u", f"{USER}:{PASSWORD}")[0] != 200
    assert _curl(url, "-u", f"{USER}:{PASSWORD}")[0] == 0
    # The public webhook listener is untouched: plain HTTP, no auth.
    assert _curl(f"http://127.0.0.1:{secured.port}/healthz")[0] == 200


async def test_aiohttp_scrape_over_tls_with_basic_auth(secured, tmp_path):
    ctx = ssl.create_default_context(cafile=str(tmp_path / "server.crt"))
    url = f"https://127.0.0.1:{secured.metrics_port}/metrics"
    async with aiohttp.ClientSession() as session:
        auth = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}
        async with session.get(url, ssl=ctx, headers=auth) as resp:
            text = await resp.text()
            assert resp.status == 200
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "billingwatch_build_info" in text
        async with session.get(url, ssl=ctx) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Basic")


def test_a_real_prometheus_scrapes_over_tls_with_basic_auth(secured, tmp_path):
    prometheus = require_binary("prometheus")
    port = free_port()
    target = f"127.0.0.1:{secured.metrics_port}"

    def job(name: str, scheme: str, password: str) -> dict:
        return {"job_name": name, "scheme": scheme, "static_configs": [{"targets": [target]}],
                "tls_config": {"ca_file": str(tmp_path / "server.crt")},
                "basic_auth": {"username": USER, "password": password}}

    cfg = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
           "scrape_configs": [job("billingwatch", "https", PASSWORD), job("wrong_password", "https", "nope"),
                              job("plain_http", "http", PASSWORD)]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def targets() -> dict[str, dict]:
            url = f"http://127.0.0.1:{port}/api/v1/targets"
            with urllib.request.urlopen(url, timeout=5) as resp:
                active = json.load(resp)["data"]["activeTargets"]
            return {t["labels"]["job"]: t for t in active}

        deadline = time.monotonic() + 60
        state: dict[str, dict] = {}
        while time.monotonic() < deadline:
            try:
                state = targets()
            except OSError:
                state = {}
            if len(state) == 3 and all(t["health"] != "unknown" for t in state.values()):
                break
            time.sleep(0.2)
        assert state["billingwatch"]["health"] == "up", state["billingwatch"]
        assert state["wrong_password"]["health"] == "down" and "401" in state["wrong_password"]["lastError"]
        assert state["plain_http"]["health"] == "down"
        query = urllib.parse.urlencode({"query": 'billingwatch_build_info{job="billingwatch"}'})
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=5) as resp:
                result = json.load(resp)["data"]["result"]
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert result and result[0]["value"][1] == "1"
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}}, "cannot load cert_file"),
        ({"basic_auth_users": {"prometheus": "plaintext-password"}}, "expected a bcrypt hash"),
        ({"tls_server_confg": {}}, "tls_server_confg: unknown key"),
        ({"tls_server_config": {"cert_file": "server.crt"}}, "cert_file and key_file are both required"),
    ],
)
def test_a_bad_web_config_stops_the_start_with_a_one_line_reason(tmp_path, doc, message):
    _self_signed(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump(doc))
    ex = ExporterProcess(tmp_path, args=("--web.config.file", str(web)))
    with pytest.raises(RuntimeError) as failure:
        ex.start()
    assert ex.proc is not None and ex.proc.returncode == 1
    assert message in str(failure.value) and "Traceback" not in str(failure.value)


def test_check_config_reads_the_web_config_file_too(tmp_path):
    web = _web_config(tmp_path)
    good = tmp_path / "good.yml"
    good.write_text(yaml.safe_dump({"server": {"web_config_file": str(web)}}))
    bad_web = tmp_path / "bad-web.yml"
    bad_web.write_text(yaml.safe_dump({"basic_auth_users": {USER: PASSWORD}}))
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"server": {"web_config_file": str(bad_web)}}))
    from exporter.cli import main

    assert main(["check-config", str(good)]) == 0
    assert main(["check-config", str(bad)]) == 1
