"""The dashboards without a Prometheus: generated JSON is committed, valid for Grafana's dashboard model, bound to
the datasource variable, and draws the thresholds the rules alert at. The provisioning files fit docker-compose."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import alert_links, check, generate, operations, overview, queries, sources
from dashboards.variables import DATASOURCE_UID
from exporter.config import build_config
from exporter.rulegen.render import write
from tests.conftest import REPO

UIDS = {"billingwatch-overview", "billingwatch-operations"}
PROVISIONING = REPO / "dashboards" / "provisioning"


def committed() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(generate.JSON_DIR.glob("*.json"))}


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    found = [p for p in check.panels_of(dashboard) if p["title"] == title]
    assert len(found) == 1, f"{dashboard['uid']}: {len(found)} panels titled {title!r}"
    return found[0]


def committed_urls() -> dict[str, str]:
    """alert name -> panel address, resolved against the committed JSON."""
    dashboards = committed()
    return alert_links.panel_urls(
        {
            key: (uid, check.panels_of(dashboards[uid]))
            for key, uid in (("overview", overview.UID), ("operations", operations.UID))
        }
    )


def step_values(p: dict[str, Any]) -> list[float]:
    return [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]


def test_committed_json_is_the_generators_output() -> None:
    files = {p.name: p.read_text() for p in generate.JSON_DIR.glob("*.json")}
    assert files == generate.rendered(), "dashboards/json is stale: run .venv/bin/python -m dashboards.generate"
    assert generate.main(["--check"]) == 0


def test_generate_check_reports_a_stale_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(generate, "JSON_DIR", tmp_path)
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    name = f"{overview.UID}.json"
    (tmp_path / name).write_text((tmp_path / name).read_text().replace('"Alerts firing"', '"Edited in the UI"'))
    assert generate.main(["--check"]) == 1
    assert name in capsys.readouterr().err


def test_dashboards_have_fixed_uids_and_filenames() -> None:
    dashboards = committed()
    assert set(dashboards) == UIDS
    for stem, dash in dashboards.items():
        assert dash["uid"] == stem
        assert dash["id"] is None  # Grafana assigns its own database id when provisioning


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_dashboard_fits_grafanas_model(uid: str) -> None:
    dash = committed()[uid]
    assert check.model_errors(dash, known_uids=UIDS) == []
    assert dash["schemaVersion"] >= 39
    titles = [p["title"] for p in check.panels_of(dash)]
    assert len(titles) == len(set(titles)), "panel titles are unique so that people and links can name a panel"


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_every_query_uses_the_datasource_variable_and_the_scope_variables(uid: str) -> None:
    dash = committed()[uid]
    pairs = check.queries_of(dash)
    assert pairs
    for p, t in pairs:
        assert p["datasource"] == t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        expr = t["expr"]
        # Raw series are narrowed by $job and $instance; recorded series by what they keep (job or currency).
        for name in check.metric_names(expr) - check.PROMETHEUS_SERIES:
            assert "$job" in expr or "$currency" in expr, f"{p['title']}: {name} ignores the variables"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["current"]["value"] == DATASOURCE_UID
    assert {"job", "instance"} <= set(variables)


def test_generate_with_a_users_config_draws_its_thresholds(tmp_path) -> None:
    config = tmp_path / "billingwatch.yml"
    config.write_text("rules:\n  webhook_lag:\n    warning_seconds: 120\n    critical_seconds: 900\n")
    try:
        assert generate.main(["--config", str(config), "--output", str(tmp_path / "json")]) == 0
        config.write_text("rules:\n  webhook_lag:\n    warning_secs: 1\n")
        assert generate.main(["--config", str(config), "--output", str(tmp_path / "bad")]) == 2
    finally:
        sources.use_config(None)
    ops = json.loads((tmp_path / "json" / f"{operations.UID}.json").read_text())
    assert step_values(panel(ops, "Delivery delay")) == [120, 900]
    assert not (tmp_path / "bad").exists()
    assert generate.main(["--check"]) == 0, "the committed JSON is the defaults'"


def test_overview_has_a_currency_variable() -> None:
    variables = {v["name"]: v for v in committed()[overview.UID]["templating"]["list"]}
    assert "stripe_charges_total" in variables["currency"]["query"]
    assert variables["currency"]["allValue"] == ".*"


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_queries_read_only_series_the_exporter_or_the_shipped_rules_define(uid: str) -> None:
    known = check.exporter_series_names() | sources.recorded_names()
    problems = {
        f"{p['title']} {t['refId']}": sorted(bad)
        for p, t in check.queries_of(committed()[uid])
        if (bad := check.unknown_names(t["expr"], known))
    }
    assert problems == {}


def test_panels_use_the_recording_rules_where_the_rules_define_one() -> None:
    dash = committed()[overview.UID]
    rec = queries.recorded()
    recorded = sources.recorded_names()
    for title, name in (
        ("Charge failure ratio", rec.charge_failure_ratio),
        ("Refund ratio", rec.refund_ratio),
        ("Early fraud warning ratio", rec.early_fraud_warning_ratio_day),
        ("Revenue vs baseline", rec.revenue_baseline),
    ):
        assert name in recorded, f"rules/*.yml no longer records {name}"
        assert any(name in t["expr"] for t in panel(dash, title)["targets"]), title
    ratio = panel(dash, "Dispute ratio vs network thresholds")
    assert {t["expr"].split("{")[0] for t in ratio["targets"]} == {rec.dispute_ratio_day, rec.dispute_ratio_month}


def test_units_are_set() -> None:
    dashboards = committed()
    for dash in dashboards.values():
        for p in check.panels_of(dash):
            if p["type"] in ("timeseries", "stat"):
                assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
    ov, ops = dashboards[overview.UID], dashboards[operations.UID]
    for title in ("Charge failure ratio", "Refund ratio", "Dispute ratio vs network thresholds", "Revenue vs baseline"):
        assert panel(ov, title)["fieldConfig"]["defaults"]["unit"] == "percentunit"
    for title in ("Delivery delay", "Last event age", "State flush time"):
        assert panel(ops, title)["fieldConfig"]["defaults"]["unit"] == "s"
    money = [p for p in check.panels_of(ov) if p["title"].startswith(("MRR", "Collected", "Refunded"))]
    assert len(money) == 5
    for p in money:
        units = {
            o["matcher"]["options"]: o["properties"][0]["value"]
            for o in p["fieldConfig"]["overrides"]
            if o["properties"][0]["id"] == "unit"
        }
        assert units["^usd( .*)?$"] == "currencyUSD" and units["^eur( .*)?$"] == "currencyEUR", p["title"]


def _thresholds(cfg: Any) -> dict[tuple[str, str], list[float]]:
    """Expected threshold lines, per (dashboard uid, panel title), from a rules config."""
    return {
        (overview.UID, "Charge failure ratio"): [cfg.charge_failure_spike.min_threshold_ratio],
        (overview.UID, "Refund ratio"): [cfg.refunds.max_refund_ratio],
        (overview.UID, "Dispute ratio vs network thresholds"): [
            cfg.dispute_monthly.warning_ratio,
            cfg.dispute_monthly.mastercard_ratio,
        ],
        (overview.UID, "Early fraud warning ratio"): [],
        (overview.UID, "Revenue vs baseline"): [
            pytest.approx(1 - cfg.revenue_drop.critical_drop_ratio),
            pytest.approx(1 - cfg.revenue_drop.warning_drop_ratio),
        ],
        (operations.UID, "Delivery delay"): [cfg.webhook_lag.warning_seconds, cfg.webhook_lag.critical_seconds],
        (operations.UID, "Last event age"): [sources.seconds(cfg.exporter.silence)],
    }


def test_thresholds_are_the_rules_thresholds_and_drawn() -> None:
    dashboards = committed()
    for (uid, title), expected in _thresholds(sources.rules_config()).items():
        p = panel(dashboards[uid], title)
        assert step_values(p) == expected, title
        assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed", title


def test_thresholds_follow_a_changed_config(monkeypatch) -> None:
    """The generator reads the thresholds; it does not repeat them."""
    cfg = sources.rules_config()
    changed = dataclasses.replace(
        cfg,
        charge_failure_spike=dataclasses.replace(cfg.charge_failure_spike, min_threshold_ratio=0.42, window="2h"),
        webhook_lag=dataclasses.replace(cfg.webhook_lag, warning_seconds=123, critical_seconds=456),
    )
    monkeypatch.setattr(sources, "rules_config", lambda: changed)
    monkeypatch.setattr(queries, "rules_config", lambda: changed)
    for module in (overview, operations):
        monkeypatch.setattr(module, "rules_config", lambda: changed)
    ov, ops = overview.build(), operations.build()
    failure = panel(ov, "Charge failure ratio")
    assert step_values(failure) == [0.42]
    assert failure["targets"][0]["expr"].startswith("currency:stripe_charges_failed:ratio_rate2h{")
    assert step_values(panel(ops, "Delivery delay")) == [123, 456]


# ----------------------------------------------------------------------------------------- the checker itself
def _broken(mutate) -> list[str]:
    dash = copy.deepcopy(committed()[overview.UID])
    mutate(dash)
    return check.model_errors(dash, known_uids=UIDS)


def _first(dash: dict[str, Any], kind: str = "timeseries") -> dict[str, Any]:
    return next(p for p in dash["panels"] if p["type"] == kind)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("uid"), "missing dashboard field 'uid'"),
        (lambda d: d.update(schemaVersion=27), "schemaVersion 27"),
        (lambda d: d["panels"][2].update(id=d["panels"][1]["id"]), "panel ids must be unique"),
        (lambda d: d["panels"][2]["gridPos"].update(x=d["panels"][1]["gridPos"]["x"]), "overlap"),
        (lambda d: d["panels"][2]["gridPos"].update(x=20, w=8), "outside the 24-column grid"),
        (
            lambda d: _first(d)["targets"][0].update(datasource={"type": "prometheus", "uid": "abc123"}),
            "datasource must be",
        ),
        (lambda d: _first(d).update(datasource={"type": "prometheus", "uid": "abc123"}), "datasource must be"),
        (lambda d: _first(d)["targets"][0].update(expr='up{job=~"$cluster"}'), "undefined variable $cluster"),
        (lambda d: _first(d)["fieldConfig"]["defaults"].update(unit="dollars"), "unknown unit 'dollars'"),
        (lambda d: _first(d)["targets"].append(dict(_first(d)["targets"][0])), "refIds must be set and unique"),
        (lambda d: _first(d, "table")["transformations"].append({"id": "pivotMagic"}), "unknown transformation"),
        (lambda d: d["links"][0].update(url="/d/no-such-dashboard"), "unknown dashboard"),
        (lambda d: d["templating"]["list"].pop(0), "exactly one data source variable"),
        (
            lambda d: _first(d)["fieldConfig"]["defaults"]["thresholds"].update(
                steps=[
                    {"color": "green", "value": None},
                    {"color": "red", "value": 0.5},
                    {"color": "orange", "value": 0.1},
                ]
            ),
            "ascending",
        ),
    ],
)
def test_model_check_catches(mutate, message: str) -> None:
    errors = _broken(mutate)
    assert any(message in e for e in errors), errors


def test_metric_names_reads_selectors_not_labels_functions_or_durations() -> None:
    expr = (
        '1000 * (min_over_time(timestamp(billingwatch_anomaly{job=~"$job", currency=~"usd"})[1d:30s]) '
        "or timestamp(billingwatch_anomaly)) / on (currency) group_left (detector) "
        'sum by (le, currency) (rate(stripe_event_delivery_delay_seconds_bucket{outcome="up"}[5m] offset 7d)) '
        "and currency:stripe_charges_failed:ratio_rate1h > 0.15e0 unless absent(up) "
        "or stripe_disputes_total offset $__range"
    )
    assert check.metric_names(expr) == {
        "billingwatch_anomaly",
        "stripe_event_delivery_delay_seconds_bucket",
        "currency:stripe_charges_failed:ratio_rate1h",
        "up",
        "stripe_disputes_total",
    }
    assert check.metric_names('{__name__="stripe_mrr", job="x"}') == {"stripe_mrr"}


# ------------------------------------------------------------------------------------------------ provisioning
def test_datasource_provisioning_has_the_fixed_uid_of_the_variables_default() -> None:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "billingwatch.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["uid"] == DATASOURCE_UID
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    assert ds["jsonData"]["timeInterval"] == "5s"  # the scrape interval docs/CONTRACTS.md fixes


def test_dashboard_provider_loads_the_generated_json_as_docker_compose_mounts_it() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "billingwatch.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    assert mounts[path] == "./dashboards/json"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "./dashboards/provisioning/dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"] == "./dashboards/provisioning/datasources"


# ------------------------------------------------------------------------------------------------- alert links
def test_every_shipped_alert_links_to_an_existing_panel() -> None:
    alerts = set(sources.alert_names())
    assert alerts, "rules/*.yml defines no alert"
    assert set(alert_links.ALERT_PANELS) == alerts, "an alert without a panel, or a panel for an alert gone"
    dashboards = committed()
    keys = {"overview": overview.UID, "operations": operations.UID}
    firing = panel(dashboards[overview.UID], "Firing alerts")["targets"][0]["expr"]
    for alert, (key, title) in alert_links.ALERT_PANELS.items():
        target = alert_links.find_panel(check.panels_of(dashboards[keys[key]]), title)
        url = f"/d/{keys[key]}?viewPanel={target['id']}"
        # The alert's name is in the regex of the label_replace() that sets this url.
        assert re.search(rf'"{re.escape(url)}", "alertname", "[^"]*\b{alert}\b', firing), (alert, url)


def test_dashboard_urls_in_alert_annotations_point_at_the_alerts_panel(tmp_path: Path) -> None:
    """Alerts may carry `dashboard_url` = <Grafana base URL>/d/<uid>?viewPanel=<id>; it must name the alert's panel.
    The defaults configure no Grafana, so the rules are rendered here with one."""
    urls = committed_urls()
    cfg = dataclasses.replace(build_config().rules, grafana_url="http://grafana.example:3000")
    write(cfg, tmp_path)
    linked = [
        (rule["alert"], rule["annotations"]["dashboard_url"])
        for doc in sources.rule_documents(tmp_path)
        for group in doc.get("groups", [])
        for rule in group["rules"]
        if "dashboard_url" in rule.get("annotations", {})
    ]
    assert linked
    for alert, url in linked:
        assert url.endswith(urls[alert]), (alert, url, urls[alert])


def test_alert_panel_table_in_the_docs_is_current() -> None:
    rows = re.findall(
        r"^\| ([A-Za-z, ]+) \| `(/d/[\w-]+\?viewPanel=\d+)` \(", (REPO / "docs" / "dashboards.md").read_text(), re.M
    )
    documented = {alert.strip(): url for alerts, url in rows for alert in alerts.split(",")}
    assert documented == committed_urls()
