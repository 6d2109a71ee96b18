"""The configs every way of running uses are the repository's prometheus.yml and alertmanager.yml, addresses aside.

Also checks docker-compose.yml and the Dockerfile as far as possible without a docker engine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from scripts import stack_config
from scripts.stack_config import REPO, differing_paths
from tests.conftest import require_binary

COMPOSE = REPO / "docker-compose.yml"


def _shipped() -> tuple[dict[str, Any], dict[str, Any]]:
    return stack_config.load(REPO / "prometheus.yml"), stack_config.load(REPO / "alertmanager.yml")


def _address_paths(prom: dict[str, Any], am: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Every key the derivation may change: targets, rule_files, SMTP smarthosts, webhook URLs."""
    prom_paths = {"rule_files"}
    for i, job in enumerate(prom.get("scrape_configs") or []):
        for j, _ in enumerate(job.get("static_configs") or []):
            prom_paths.add(f"scrape_configs[{i}].static_configs[{j}].targets")
    for i, alerting in enumerate((prom.get("alerting") or {}).get("alertmanagers") or []):
        for j, _ in enumerate(alerting.get("static_configs") or []):
            prom_paths.add(f"alerting.alertmanagers[{i}].static_configs[{j}].targets")
    am_paths = {"global.smtp_smarthost", "templates"}  # templates: made absolute for a copy written elsewhere
    for i, receiver in enumerate(am.get("receivers") or []):
        for j, _ in enumerate(receiver.get("email_configs") or []):
            am_paths.add(f"receivers[{i}].email_configs[{j}].smarthost")
        for j, _ in enumerate(receiver.get("webhook_configs") or []):
            am_paths.add(f"receivers[{i}].webhook_configs[{j}].url")
    return prom_paths, am_paths


def test_shipped_configs_use_the_agreed_local_ports() -> None:
    """Derived for the default ports, the configs equal the shipped ones except for the rule file paths."""
    prom, am = _shipped()
    local_prom, local_am = stack_config.local_configs(
        metrics_port=9847, alertmanager_port=9093, smtp_port=1025, webhook_port=5001, rules_dir=REPO / "rules"
    )
    assert differing_paths(prom, local_prom) == {"rule_files"}
    assert differing_paths(am, local_am) == {"templates"}
    assert local_am["templates"] == [str(REPO / "notifications" / "*.tmpl")]


def test_local_configs_change_only_addresses(tmp_path: Path) -> None:
    prom, am = _shipped()
    local_prom, local_am = stack_config.local_configs(
        metrics_port=19847, alertmanager_port=19093, smtp_port=11025, webhook_port=15001, rules_dir=REPO / "rules"
    )
    prom_paths, am_paths = _address_paths(prom, am)
    assert differing_paths(prom, local_prom) <= prom_paths
    assert differing_paths(am, local_am) <= am_paths
    text = yaml.safe_dump(local_prom) + yaml.safe_dump(local_am)
    for port in ("19847", "19093", "11025", "15001"):
        assert port in text


def test_docker_configs_are_current_and_change_only_addresses() -> None:
    for name, text in stack_config.docker_texts().items():
        assert (REPO / "docker" / name).read_text() == text, (
            f"docker/{name} is stale: run `python scripts/stack_config.py docker`"
        )
    prom, am = _shipped()
    docker_prom = stack_config.load(REPO / "docker" / "prometheus.yml")
    docker_am = stack_config.load(REPO / "docker" / "alertmanager.yml")
    prom_paths, am_paths = _address_paths(prom, am)
    assert differing_paths(prom, docker_prom) <= prom_paths
    assert differing_paths(am, docker_am) <= am_paths


def test_derived_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    amtool = require_binary("amtool")
    assert stack_config.main(["local", "--out", str(tmp_path), "--metrics-port", "19847"]) == 0
    for args in (
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        [amtool, "check-config", str(tmp_path / "alertmanager.yml")],
        [amtool, "check-config", str(REPO / "docker" / "alertmanager.yml")],
    ):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------- docker compose


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def test_compose_services_and_mounts() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"exporter", "prometheus", "alertmanager", "grafana", "mailcatcher"} <= set(services)
    for name, service in services.items():
        for source, _ in _bind_mounts(service):
            assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
        assert "image" in service or "build" in service
    # Prometheus and Alertmanager get the derived configs; Prometheus the rules the `rules` service renders into
    # the shared volume (from the same config file as the exporter), after it has finished.
    prom_mounts = dict(_bind_mounts(services["prometheus"]))
    assert prom_mounts["./docker/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "rules:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    assert stack_config.DOCKER["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    rules = services["rules"]
    assert rules["command"][:2] == ["rules", "--output=/rules"] and "rules:/rules" in rules["volumes"]
    assert services["prometheus"]["depends_on"]["rules"]["condition"] == "service_completed_successfully"
    am_mounts = dict(_bind_mounts(services["alertmanager"]))
    assert am_mounts["./docker/alertmanager.yml"] == "/etc/alertmanager/alertmanager.yml"
    # alertmanager.yml's relative `templates:` resolve beside the config file.
    assert stack_config.load(REPO / "docker" / "alertmanager.yml")["templates"] == ["notifications/*.tmpl"]
    assert am_mounts["./notifications"] == "/etc/alertmanager/notifications"
    # Grafana: the dashboards engineer's provisioning, and the JSON where that provisioning looks for it.
    grafana = dict(_bind_mounts(services["grafana"]))
    provider = yaml.safe_load((REPO / "dashboards/provisioning/dashboards/billingwatch.yml").read_text())
    assert grafana["./dashboards/json"] == provider["providers"][0]["options"]["path"]
    datasource = yaml.safe_load((REPO / "dashboards/provisioning/datasources/billingwatch.yml").read_text())
    assert datasource["datasources"][0]["url"] == f"http://prometheus:{_container_port(services['prometheus'])}"


def _container_port(service: dict[str, Any]) -> int:
    """The port a service listens on inside its container, from --web.listen-address or its published ports."""
    for arg in service.get("command", []):
        m = re.fullmatch(r"--web\.listen-address=.*:(\d+)", str(arg))
        if m:
            return int(m.group(1))
    ports = [int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])]
    assert len(ports) == 1, service
    return ports[0]


def _targets(prom: dict[str, Any]) -> tuple[list[str], list[str]]:
    scrape = [t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    alerting = [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    return scrape, alerting


def test_compose_addresses_agree_with_the_derived_configs() -> None:
    services = _compose()["services"]
    prom = stack_config.load(REPO / "docker" / "prometheus.yml")
    am = stack_config.load(REPO / "docker" / "alertmanager.yml")
    scrape, alerting = _targets(prom)
    assert "exporter:9847" in scrape
    assert alerting == ["alertmanager:9093"]
    assert _container_port(services["alertmanager"]) == 9093
    assert _container_port(services["prometheus"]) == 9090
    # The exporter's private listener (Dockerfile ENV) is where Prometheus scrapes and what compose publishes.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "BILLINGWATCH_METRICS_LISTEN=0.0.0.0:9847" in dockerfile
    assert any(str(p).endswith(":9847") for p in services["exporter"]["ports"])
    assert any(str(p).endswith(":8000") for p in services["exporter"]["ports"])
    # Alertmanager's SMTP smarthosts and webhook URLs name compose services on the ports they listen on.
    smarthosts = {am.get("global", {}).get("smtp_smarthost")} | {
        e["smarthost"] for r in am["receivers"] for e in r.get("email_configs") or [] if "smarthost" in e
    }
    assert smarthosts - {None} == {"mailcatcher:1025"}  # Mailpit's SMTP port
    urls = {w["url"] for r in am["receivers"] for w in r.get("webhook_configs") or []}
    assert urls and all(u.startswith("http://webhook-receiver:5001/") for u in urls)
    receiver = services["webhook-receiver"]["entrypoint"]
    assert receiver[receiver.index("--webhook-port") + 1] == "5001"


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK .*?CMD (.*?)$", text, re.M | re.S)
    # The public listener's /healthz: plain HTTP even when the private one has TLS and basic auth on.
    assert health and "http://127.0.0.1:8000/healthz" in health.group(1)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "*" in ignored and "!exporter/" in ignored  # an allow-list: no .venv, .data or .git in the context


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    # Debian's docker-compose (scripts/test.sh installs it): a config check needs no docker engine.
    return [require_binary("docker-compose")]


def _compose_config(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return yaml.safe_load(proc.stdout)


def test_docker_compose_config_validates_without_any_secret() -> None:
    """`docker compose down` (or `config`, `logs`) interpolates the file like `up`: it must not need the secret.
    The exporter itself refuses to start without one."""
    assert ":?" not in COMPOSE.read_text()
    services = _compose_config({})["services"]
    env = services["exporter"]["environment"]
    assert env["STRIPE_WEBHOOK_SECRET_FILE"] == "/run/secrets/stripe_webhook_secret"
    assert env["STRIPE_API_KEY_FILE"] == "/run/secrets/stripe_api_key"
    assert env["BILLINGWATCH_CONFIG"] == "/etc/billingwatch/billingwatch.yml"


def test_docker_compose_passes_secrets_files_and_config_through(tmp_path: Path) -> None:
    secret = tmp_path / "webhook_secret"
    secret.write_text("whsec_from_a_file\n")
    config = tmp_path / "billingwatch.yml"
    config.write_text("stripe:\n  mode: live\n")
    doc = _compose_config(
        {
            "STRIPE_WEBHOOK_SECRET_FILE": str(secret),
            "STRIPE_API_KEY": "rk_test_passed_through",
            "BILLINGWATCH_CONFIG_FILE": str(config),
        }
    )
    assert doc["secrets"]["stripe_webhook_secret"]["file"] == str(secret)
    assert doc["secrets"]["stripe_api_key"]["file"] == str(REPO / "docker" / "no-secret")
    assert (REPO / "docker" / "no-secret").read_text() == ""  # read by the exporter as "not set"
    services = doc["services"]
    assert services["exporter"]["environment"]["STRIPE_API_KEY"] == "rk_test_passed_through"
    for name in ("exporter", "rules"):  # custom detectors' modules: on PYTHONPATH in both (docs/detectors.md)
        assert services[name]["environment"]["PYTHONPATH"] == "/etc/billingwatch/detectors"
        assert any(
            str(REPO / "docker" / "detectors") in str(v) and "/etc/billingwatch/detectors" in str(v)
            for v in services[name]["volumes"]
        ), name
    for name in ("exporter", "rules"):  # the exporter and the rules read the same file
        assert any(
            str(config) in str(v) and "/etc/billingwatch/billingwatch.yml" in str(v) for v in services[name]["volumes"]
        ), name


def test_compose_healthchecks_grace_period_and_external_urls() -> None:
    services = _compose()["services"]
    for name, path in (
        ("prometheus", ":9090/-/ready"),
        ("alertmanager", ":9093/-/ready"),
        ("grafana", ":3000/api/health"),
    ):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[-1] == f"http://127.0.0.1{path}", name
    # The exporter's SIGTERM path (in-flight requests, then the state flush) outlasts Docker's default 10 s.
    assert services["exporter"]["stop_grace_period"] == "30s"
    assert "--web.external-url=http://127.0.0.1:${PROMETHEUS_PORT:-9090}/" in services["prometheus"]["command"]
    assert "--web.external-url=http://127.0.0.1:${ALERTMANAGER_PORT:-9093}/" in services["alertmanager"]["command"]
    assert "--grafana-url=${BILLINGWATCH_GRAFANA_URL:-http://127.0.0.1:3000}" in services["rules"]["command"]
    # The generated Alertmanager config keeps the receiver examples' comments.
    docker_am = (REPO / "docker" / "alertmanager.yml").read_text()
    for example in ("# slack_configs:", "# discord_configs:", "# pagerduty_configs:", "contrib/alertmanager/"):
        assert example in docker_am


def test_e2e_configs_differ_from_the_shipped_ones_only_where_documented(tmp_path: Path) -> None:
    """The e2e stack's configs: addresses, plus in fast mode only the timing keys its file header names."""
    from tests.e2e.e2e_stack import FAST_ALERTMANAGER, Stack

    prom, am = _shipped()
    prom_paths, am_paths = _address_paths(prom, am)
    for fast in (False, True):
        stack = Stack(
            tmp_path / f"fast-{fast}", secret="whsec_x", smtp_port=1, webhook_base="http://127.0.0.1:2", fast=fast
        )
        derived_prom = yaml.safe_load(stack.prometheus_yml.read_text())
        derived_am = yaml.safe_load(stack.alertmanager_yml.read_text())
        prom_diff = differing_paths(prom, derived_prom) - prom_paths
        am_diff = differing_paths(am, derived_am) - am_paths
        if not fast:
            assert prom_diff == set() and am_diff == set()
            continue
        assert all(
            p.rsplit(".", 1)[-1] in ("scrape_interval", "scrape_timeout", "evaluation_interval") for p in prom_diff
        )
        assert all(p.rsplit(".", 1)[-1] in FAST_ALERTMANAGER for p in am_diff)
        header = stack.alertmanager_yml.read_text().split("\n\n")[0]
        assert all(f"{key}=" in header for key in FAST_ALERTMANAGER)


def test_compose_rules_service_command_renders_working_links(tmp_path: Path) -> None:
    """The `rules` service's command, as compose interpolates it, run with this checkout's billingwatch: it renders
    every rule file with the runbook on the published private listener and the compose Grafana's panels."""
    rules = _compose_config({})["services"]["rules"]
    argv = [a.replace("--output=/rules", f"--output={tmp_path}") for a in rules["command"]]
    env = {"PATH": "/usr/bin:/bin", "BILLINGWATCH_CONFIG": str(REPO / "docker" / "billingwatch.yml")}
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "billingwatch"), *argv], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    docs = [yaml.safe_load(p.read_text()) for p in sorted(tmp_path.glob("*.yml"))]
    annotations = [r["annotations"] for d in docs for g in d["groups"] for r in g["rules"] if "alert" in r]
    assert {p.name for p in tmp_path.glob("*.yml")} == {p.name for p in (REPO / "rules").glob("*.yml")}
    assert all(a["runbook_url"].startswith("http://127.0.0.1:9847/runbook#") for a in annotations)
    assert any(a.get("dashboard_url", "").startswith("http://127.0.0.1:3000/d/") for a in annotations)


def test_the_image_carries_the_runbook_it_serves() -> None:
    """exporter/runbook.md links to docs/runbook.md: the build context and the Dockerfile must bring that file."""
    link = REPO / "exporter" / "runbook.md"
    assert link.is_symlink() and str(link.readlink()) == "../docs/runbook.md"
    assert "!docs/runbook.md" in (REPO / ".dockerignore").read_text().split()
    assert re.search(r"^COPY docs/runbook\.md \./docs/runbook\.md$", (REPO / "Dockerfile").read_text(), re.M)
