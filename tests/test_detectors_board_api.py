"""The anomaly board (series cap, TTL, persistence), the private API routes, custom detectors and the config."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest

from exporter import samples
from exporter.config import ConfigError, build_config
from exporter.detectors import catalog
from tests.detectors_support import T0, Harness, anomaly_labels
from tests.ingest_support import make_config, running_exporter


def negative_invoice(i: int, created: int = T0):
    inv = samples.invoice(
        total=-100 - i,
        customer=f"cus_cap{i:03d}",
        subscription=None,
        status="open",
        billing_reason="manual",
        created=created,
        invoice_id=f"in_cap{i:03d}",
    )
    inv["amount_due"] = inv["amount_remaining"] = 0
    return inv


def series_labels(i: int):
    return anomaly_labels(
        "negative_invoice",
        "info",  # a negative total credits the customer's balance: routine
        "negative_total",
        customer=f"cus_cap{i:03d}",
        invoice=f"in_cap{i:03d}",
        currency="usd",
    )


# -- board -------------------------------------------------------------------------------------------------------


def test_series_cap_drops_the_oldest_and_counts_it(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"max_series": 3})
    for i in range(5):
        h.send("invoice.finalized", negative_invoice(i), received=T0 + i)
    assert h.board.active_count == 3
    assert h.value("billingwatch_anomaly_series_dropped_total") == 2
    assert h.value("billingwatch_anomaly", series_labels(0)) is None
    assert h.value("billingwatch_anomaly_amount", series_labels(1)) is None
    assert [h.value("billingwatch_anomaly", series_labels(i)) for i in (2, 3, 4)] == [1, 1, 1]
    # Every anomaly is still counted and listed.
    assert h.total("negative_invoice") == 5
    assert len(h.anomalies()) == 5


def test_series_expire_after_the_ttl_but_stay_listed(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"anomaly_ttl_seconds": 600.0})
    h.send("invoice.finalized", negative_invoice(1), received=T0)
    h.send("invoice.finalized", negative_invoice(2), received=T0 + 300)
    h.tick(T0 + 599)
    assert h.value("billingwatch_anomaly", series_labels(1)) == 1
    h.tick(T0 + 600)
    assert h.value("billingwatch_anomaly", series_labels(1)) is None
    assert h.value("billingwatch_anomaly_amount", series_labels(1)) is None
    assert h.value("billingwatch_anomaly", series_labels(2)) == 1
    h.tick(T0 + 900)
    assert h.board.active_count == 0
    assert h.value("billingwatch_anomaly_series_dropped_total") == 0  # expiry is not a drop
    assert [a["invoice"] for a in h.anomalies()] == ["in_cap002", "in_cap001"]


def test_active_series_and_recent_list_survive_a_restart(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"recent_anomalies": 3})
    for i in range(5):
        h.send("invoice.finalized", negative_invoice(i), received=T0 + i)
    h2 = h.restart()
    assert h2.value("billingwatch_anomaly", series_labels(4)) == 1
    assert [a["invoice"] for a in h2.anomalies()] == ["in_cap004", "in_cap003", "in_cap002"]
    h2.tick(T0 + 3600 + 10)
    assert h2.board.active_count == 0
    h3 = h2.restart()
    assert h3.board.active_count == 0
    assert h3.value("billingwatch_anomaly", series_labels(4)) is None


def test_anomaly_counters_exist_before_the_first_anomaly(tmp_path):
    h = Harness(tmp_path / "s.sqlite3")
    for name in ("duplicate_charge", "negative_invoice", "silent_lapse"):
        assert h.value("billingwatch_anomalies_total", {"detector": name}) == 0
    assert h.value("billingwatch_anomaly_series_dropped_total") == 0


# -- over HTTP ---------------------------------------------------------------------------------------------------


async def test_duplicate_charge_over_http_shows_on_metrics_and_api(tmp_path):
    config = make_config(tmp_path / "s.sqlite3")
    now = int(time.time())
    first = samples.charge(customer="cus_Http01", amount=2500, created=now - 20)
    second = samples.charge(customer="cus_Http01", amount=2500, created=now)
    async with running_exporter(config) as ex:
        assert await ex.post_event(samples.event("charge.succeeded", first)) == 200
        event = samples.event("charge.succeeded", second)
        assert await ex.post_event(event) == 200
        assert await ex.post_event(event) == 200  # Stripe redelivers: still one anomaly
        async with ex.session.get(f"{ex.private}/metrics") as resp:
            text = await resp.text()
        assert (
            'billingwatch_anomaly{currency="usd",customer="cus_Http01",detector="duplicate_charge",invoice="",'
            'livemode="false",reason="same_amount",severity="critical",subscription=""} 1.0' in text
        )
        assert 'billingwatch_anomalies_total{detector="duplicate_charge"} 1.0' in text
        async with ex.session.get(f"{ex.private}/api/v1/anomalies") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["active_series"] == 1
        (found,) = body["anomalies"]
        assert found["details"]["charge_ids"] == [first["id"], second["id"]]
        assert found["customer"] == "cus_Http01" and found["amount"] == 25.0
        # The public listener does not serve the API.
        async with ex.session.get(f"{ex.base}/api/v1/anomalies") as resp:
            assert resp.status == 404


async def test_anomalies_api_newest_first_limit_and_filter(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", detectors={"recent_anomalies": 10})
    async with running_exporter(config) as ex:
        for i in range(4):
            assert await ex.post_event(samples.event("invoice.finalized", negative_invoice(i, int(time.time())))) == 200
        async with ex.session.get(f"{ex.private}/api/v1/anomalies?limit=2") as resp:
            body = await resp.json()
        assert [a["invoice"] for a in body["anomalies"]] == ["in_cap003", "in_cap002"]
        async with ex.session.get(f"{ex.private}/api/v1/anomalies?detector=duplicate_charge") as resp:
            assert (await resp.json())["anomalies"] == []
        for bad in ("0", "11", "x"):
            async with ex.session.get(f"{ex.private}/api/v1/anomalies?limit={bad}") as resp:
                assert resp.status == 400


async def test_detectors_api_lists_all_seven_with_where_they_run_and_their_alert(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", detectors={"duplicate_charge": {"window_seconds": 120}})
    async with running_exporter(config) as ex:
        async with ex.session.get(f"{ex.private}/api/v1/detectors") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with ex.session.get(f"{ex.private}/") as resp:
            landing = await resp.text()
    by_name = {d["name"]: d for d in body["detectors"]}
    assert set(by_name) == set(catalog.ALERT_NAMES)
    assert {n for n, d in by_name.items() if d["runs"] == "in-process"} == {
        "duplicate_charge",
        "negative_invoice",
        "silent_lapse",
    }
    assert {n for n, d in by_name.items() if d["runs"] == "prometheus-rule"} == {
        "charge_failure_spike",
        "fraud_spike",
        "revenue_drop",
        "webhook_lag",
    }
    for name, d in by_name.items():
        assert d["alert"] == catalog.ALERT_NAMES[name]
        assert d["description"]
        # The main alert name is one the shipped rules really define for this detector.
        assert d["alert"] in [a["alert"] for a in d["alerts"]], (name, d["alerts"])
    fraud_alerts = {a["alert"] for a in by_name["fraud_spike"]["alerts"]}
    assert {"BillingWatchDisputeSpike", "BillingWatchEarlyFraudWarningSpike"} <= fraud_alerts
    assert by_name["charge_failure_spike"]["thresholds"]  # read generically from the rules: section
    assert by_name["duplicate_charge"]["thresholds"]["window_seconds"] == 120
    assert by_name["negative_invoice"]["thresholds"]["reversal_threshold"] == 500.0
    assert by_name["silent_lapse"]["thresholds"]["grace_seconds"] == 3 * 86400
    assert "api/v1/anomalies" in landing and "api/v1/detectors" in landing


def test_rule_settings_are_each_rule_detectors_section_with_the_rest_shared():
    rules = build_config({"rules": {"revenue_drop": {"warning_drop_ratio": 0.25}}}).rules
    per, shared = catalog.rule_settings(rules)
    assert set(per) == {"charge_failure_spike", "fraud_spike", "revenue_drop", "webhook_lag"}
    assert per["charge_failure_spike"] == dataclasses.asdict(rules.charge_failure_spike)
    assert per["revenue_drop"]["warning_drop_ratio"] == 0.25
    assert shared["job"] == "billingwatch"
    assert "card_testing" in shared and not set(per) & set(shared)


# -- custom detectors --------------------------------------------------------------------------------------------

CUSTOM = {
    "custom": [
        {
            "name": "big_charge",
            "class": "big_charge:BigChargeDetector",
            "options": {"min_amount": 1000, "currency": "usd"},
        }
    ]
}


def test_custom_detector_from_config_raises_through_the_board(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors=CUSTOM)
    assert h.value("billingwatch_anomalies_total", {"detector": "big_charge"}) == 0
    h.send("charge.succeeded", samples.charge(customer="cus_Big", amount=99_999, created=T0), received=T0)
    big = samples.charge(customer="cus_Big", amount=150_000, created=T0)
    h.send("charge.succeeded", big, received=T0)
    labels = anomaly_labels("big_charge", "info", "big_charge", customer="cus_Big", currency="usd")
    assert h.value("billingwatch_anomaly", labels) == 1
    assert h.value("billingwatch_anomaly_amount", labels) == 1500.0
    (found,) = h.anomalies("big_charge")
    assert found["details"] == {"charge": big["id"]}
    # Once per charge, also across a restart (the detector's own state goes through the StateStore).
    h2 = h.restart()
    h2.send("charge.succeeded", big, received=T0 + 5)
    assert h2.total("big_charge") == 0


async def test_custom_detector_is_listed_by_the_detectors_api(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", detectors=CUSTOM)
    async with running_exporter(config) as ex:
        async with ex.session.get(f"{ex.private}/api/v1/detectors") as resp:
            body = await resp.json()
    (custom,) = [d for d in body["detectors"] if d.get("custom")]
    assert custom["name"] == "big_charge" and custom["runs"] == "in-process"
    assert custom["class"] == "big_charge:BigChargeDetector"
    assert custom["thresholds"] == {"min_amount": 1000.0, "currency": "usd"}
    assert custom["alert"] == catalog.CUSTOM_ALERT_NAME
    assert [a["alert"] for a in custom["alerts"]] == [catalog.CUSTOM_ALERT_NAME]
    assert len(body["detectors"]) == 8


def test_custom_detector_failure_is_contained(tmp_path, monkeypatch):
    h = Harness(tmp_path / "s.sqlite3", detectors=CUSTOM)
    det = h.detector("big_charge")
    monkeypatch.setattr(det, "on_event", lambda event, received: 1 / 0)
    assert h.send("charge.succeeded", samples.charge(amount=150_000, created=T0), received=T0) == "accepted"
    assert h.value("billingwatch_event_processing_errors_total", {"stage": "big_charge"}) == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x1", "class": "no colon here"}, "detectors.custom[0].class"),
        ({"name": "Bad Name", "class": "a.b:C"}, "detectors.custom[0].name"),
        ({"name": "duplicate_charge", "class": "a.b:C"}, "detectors.custom[0].name"),
        ({"name": "x1", "class": "a.b:C", "colour": "red"}, "detectors.custom[0].colour: unknown key"),
        ({"name": "x1", "class": "a.b:C", "options": [1]}, "detectors.custom[0].options"),
    ],
)
def test_custom_detector_config_errors_name_their_location(entry, message):
    with pytest.raises(ConfigError) as err:
        build_config({"detectors": {"custom": [entry]}})
    assert any(e.startswith(message) for e in err.value.errors), err.value.errors


def test_custom_detector_that_cannot_be_imported_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        Harness(tmp_path / "s.sqlite3", detectors={"custom": [{"name": "x1", "class": "tests.nowhere:Nothing"}]})
    assert err.value.errors[0].startswith("detectors.custom[0].class: cannot import")
    # check-config finds it too.
    config_file = tmp_path / "bad.yml"
    config_file.write_text("detectors:\n  custom:\n    - {name: x1, class: 'big_charge:Nope'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(config_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "detectors.custom[0].class: cannot import 'big_charge:Nope'" in result.stderr


def test_custom_detector_whose_factory_fails_is_a_config_error(tmp_path, monkeypatch):
    import big_charge as example

    def broken(context):
        raise RuntimeError("no database here")

    monkeypatch.setattr(example, "Broken", broken, raising=False)
    with pytest.raises(ConfigError) as err:
        Harness(tmp_path / "s.sqlite3", detectors={"custom": [{"name": "x1", "class": example.__name__ + ":Broken"}]})
    assert "RuntimeError: no database here" in err.value.errors[0]


# -- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "location"),
    [
        ({"max_series": 0}, "detectors.max_series"),
        ({"anomaly_ttl_seconds": 0}, "detectors.anomaly_ttl_seconds"),
        ({"duplicate_charge": {"severity": "page"}}, "detectors.duplicate_charge.severity"),
        ({"duplicate_charge": {"window_seconds": 0}}, "detectors.duplicate_charge.window_seconds"),
        (
            {"negative_invoice": {"reversal_threshold_by_currency": {"YEN": 5}}},
            "detectors.negative_invoice.reversal_threshold_by_currency.YEN",
        ),
        ({"subscriptions": {"mrr_statuses": ["active", "happy"]}}, "detectors.subscriptions.mrr_statuses[1]"),
        ({"subscriptions": {"grace": 5}}, "detectors.subscriptions.grace: unknown key"),
    ],
)
def test_detector_config_errors_name_their_location(doc, location):
    with pytest.raises(ConfigError) as err:
        build_config({"detectors": doc})
    assert any(e.startswith(location) for e in err.value.errors), err.value.errors


def test_every_detector_setting_has_a_default():
    config = build_config({})
    assert config.detectors.duplicate_charge.window_seconds == 300
    assert config.detectors.negative_invoice.reversal_threshold == 500.0
    assert config.detectors.subscriptions.grace_seconds == 3 * 86400
    assert config.detectors.max_series == 200 and config.detectors.anomaly_ttl_seconds == 3600.0
    assert config.detectors.custom == []


async def test_duplicate_across_a_real_stop_and_start(tmp_path):
    # The service's own shutdown path (stop: last tick, flush, close) must keep the window and the alert.
    config = make_config(tmp_path / "s.sqlite3")
    now = int(time.time())
    async with running_exporter(config) as ex:
        assert (
            await ex.post_event(samples.event("charge.succeeded", samples.charge(customer="cus_Rst", created=now)))
            == 200
        )
    async with running_exporter(config) as ex:
        second = samples.charge(customer="cus_Rst", created=now + 1)
        assert await ex.post_event(samples.event("charge.succeeded", second)) == 200
        assert ex.value("billingwatch_anomalies_total", {"detector": "duplicate_charge"}) == 1
    async with running_exporter(config) as ex:
        labels = anomaly_labels("duplicate_charge", "critical", "same_amount", customer="cus_Rst", currency="usd")
        assert ex.value("billingwatch_anomaly", labels) == 1  # still active after another restart
        async with ex.session.get(f"{ex.private}/api/v1/anomalies") as resp:
            (found,) = (await resp.json())["anomalies"]
        assert found["details"]["charge_ids"][1] == second["id"]


def test_the_custom_detector_example_works_as_the_docs_write_it(tmp_path):
    """docs/detectors.md's YAML and command, run from elsewhere than the repository (the installed CLI does not
    have the repository on its path), import and build the example detector."""
    from tests.conftest import EXAMPLE_DETECTORS, REPO

    doc = (REPO / "docs" / "detectors.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Writing a custom in-process detector"):]
    yaml_block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    commands = section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    command = next(line for line in commands if "check-config" in line)
    assert command.startswith("PYTHONPATH=examples/detectors .venv/bin/billingwatch check-config billingwatch.yml")
    (tmp_path / "billingwatch.yml").write_text(yaml_block)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    billingwatch = [sys.executable, "-m", "exporter"]
    without = subprocess.run([*billingwatch, "check-config", "billingwatch.yml"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert without.returncode == 1 and "cannot import 'big_charge:BigChargeDetector'" in without.stderr
    env["PYTHONPATH"] = str(EXAMPLE_DETECTORS)
    with_path = subprocess.run([*billingwatch, "check-config", "billingwatch.yml"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=False)  # fmt: skip
    assert with_path.returncode == 0, with_path.stderr


def test_series_cap_drops_routine_info_series_before_a_page(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"max_series": 2})
    for i in range(2):
        h.send("charge.succeeded", samples.charge(customer="cus_Page", amount=4900, created=T0 + i), received=T0 + i)
    page = anomaly_labels("duplicate_charge", "critical", "same_amount", customer="cus_Page", currency="usd")
    for i in range(3):  # three routine credits (info) arrive after the page
        h.send("invoice.finalized", negative_invoice(i), received=T0 + 10 + i)
    assert h.value("billingwatch_anomaly", page) == 1
    assert [h.value("billingwatch_anomaly", series_labels(i)) for i in range(3)] == [None, None, 1]
    assert h.value("billingwatch_anomaly_series_dropped_total") == 2
