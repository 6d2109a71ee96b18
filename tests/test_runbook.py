"""The runbook the private listener serves at /runbook: every alert's runbook_url anchor exists in it, and
`billingwatch rules --runbook-base-url/--grafana-url` set the links that run.sh and docker-compose need."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from exporter import runbook
from exporter.rulegen.promql import dashboard_panels
from tests.conftest import REPO


def _alerts(rules_dir: Path) -> list[dict]:
    return [
        rule
        for path in sorted(rules_dir.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_alert_has_an_anchor_in_the_served_runbook() -> None:
    page = runbook.page()
    alerts = _alerts(REPO / "rules")
    assert alerts
    for rule in alerts:
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert f'<h2 id="{anchor}">{rule["alert"]}</h2>' in page, rule["alert"]


def test_the_served_runbook_has_no_link_that_would_not_resolve() -> None:
    """The page is served alone at /runbook: only absolute links and in-page anchors resolve there."""
    hrefs = re.findall(r'href="([^"]*)"', runbook.page())
    assert all(h.startswith(("http://", "https://", "#")) for h in hrefs), hrefs
    assert "docs/alerting.md" in runbook.page()


def test_the_packaged_runbook_is_docs_runbook_md() -> None:
    """exporter/runbook.md is a link to docs/runbook.md, so a built package carries the current text."""
    assert (REPO / "exporter" / "runbook.md").read_text() == (REPO / "docs" / "runbook.md").read_text()


def test_rules_link_flags_override_the_config(tmp_path: Path) -> None:
    def render(*flags: str) -> list[dict]:
        out = tmp_path / str(len(flags))
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", "rules", "--output", str(out), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return _alerts(out)

    alerts = render("--runbook-base-url=http://127.0.0.1:19847/runbook", "--grafana-url=")
    for rule in alerts:
        assert rule["annotations"]["runbook_url"] == f"http://127.0.0.1:19847/runbook#{rule['alert'].lower()}"
        assert "dashboard_url" not in rule["annotations"]
    # With a Grafana, every alert a panel explains links to it (the map is exporter/panels.py).
    with_grafana = render("--grafana-url=http://127.0.0.1:3000")
    for rule in with_grafana:
        panel = dashboard_panels().get(rule["alert"])
        assert rule["annotations"].get("dashboard_url") == (f"http://127.0.0.1:3000{panel}" if panel else None)
    assert any("dashboard_url" in r["annotations"] for r in with_grafana)
    bad = subprocess.run(
        [sys.executable, "-m", "exporter", "rules", "--output", str(tmp_path / "x"), "--grafana-url=ftp://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "--grafana-url: must be an http(s) URL" in bad.stderr
