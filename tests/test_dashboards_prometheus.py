"""Every dashboard query against a real Prometheus that scrapes a real `billingwatch serve` and loads the shipped
rules (rules/*.yml): accepted by /api/v1/query, naming only series that exist, and returning data after traffic.

One exporter and one Prometheus serve the whole module. Prometheus scrapes every second and the copies of the
shipped rule groups are evaluated every second (the shipped intervals of 5 s to 5 min would only make the test
wait); everything else about the rules is as shipped.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from dashboards import check, queries, sources
from dashboards.generate import JSON_DIR
from exporter import samples
from tests.conftest import REPO, SECRET, require_binary, sign

TEST_VALUES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "job": ".*",
    "instance": ".*",
    "currency": ".*",
    "livemode": ".*",
}
MAX_BODY_BYTES = 4096


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass  # still starting
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Stack:
    prometheus: str
    webhook: str
    metrics: str
    procs: list[subprocess.Popen[bytes]]
    logs: Path
    accepted: int = 0

    def query(self, promql: str) -> dict[str, Any]:
        status, body = _get(f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        doc = json.loads(body)
        doc["http_status"] = status
        return doc

    def post(self, event: dict[str, Any] | bytes, *, secret: str = SECRET) -> int:
        body = event if isinstance(event, bytes) else orjson.dumps(event)
        req = urllib.request.Request(
            self.webhook,
            data=body,
            method="POST",
            headers={"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def exposition(self) -> str:
        return _get(f"{self.metrics}/metrics")[1].decode()


def _fast_rules(dest: Path) -> list[Path]:
    """Copies of the shipped rule files with every group evaluated each second."""
    shipped = sorted((REPO / "rules").glob("*.yml"))
    if not shipped:
        pytest.fail("rules/*.yml is missing: the dashboards are tested against the shipped rules")
    out = []
    for path in shipped:
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            group["interval"] = "1s"
        target = dest / path.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(target)
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("dashboards")
    webhook_port, metrics_port, prom_port = _free_port(), _free_port(), _free_port()
    config = tmp / "billingwatch.yml"
    config.write_text(yaml.safe_dump({"server": {"max_body_bytes": MAX_BODY_BYTES}}))
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    prom_config = tmp / "prometheus.yml"
    prom_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(p) for p in _fast_rules(rules_dir)],
                "scrape_configs": [
                    {
                        # The shipped rules select the exporter's scrape job by name.
                        "job_name": sources.rules_config().job,
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    s = Stack(
        f"http://127.0.0.1:{prom_port}",
        f"http://127.0.0.1:{webhook_port}/webhooks/stripe",
        f"http://127.0.0.1:{metrics_port}",
        [],
        tmp,
    )
    with (tmp / "exporter.log").open("wb") as exporter_log, (tmp / "prometheus.log").open("wb") as prom_log:
        try:
            s.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "exporter",
                        "serve",
                        "--config",
                        str(config),
                        "--listen",
                        f"127.0.0.1:{webhook_port}",
                        "--metrics-listen",
                        f"127.0.0.1:{metrics_port}",
                        "--state",
                        str(tmp / "state.sqlite3"),
                    ],
                    stdout=exporter_log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp,
                    env={**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET},
                )
            )
            s.procs.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={prom_config}",
                        f"--storage.tsdb.path={tmp / 'data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=prom_log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp,
                )
            )
            _wait(lambda: _get(f"{s.metrics}/metrics")[0] == 200, 20, "the exporter")
            _wait(lambda: _get(f"{s.prometheus}/-/ready")[0] == 200, 20, "Prometheus")
            _wait(lambda: s.query("up == 1")["data"]["result"], 20, "the first successful scrape")
            yield s
        except BaseException:
            for name in ("exporter.log", "prometheus.log"):
                sys.stderr.write(f"--- {name}\n{(tmp / name).read_text(errors='replace')[-3000:]}\n")
            raise
        finally:
            for proc in s.procs:
                proc.terminate()
            for proc in s.procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def _traffic_round(s: Stack, round_no: int) -> None:
    """One round of realistic, signed traffic touching every metric the dashboards show."""
    now = int(time.time())
    customer = f"cus_dash_{round_no}"
    events = [
        samples.event("charge.succeeded", samples.charge(amount=4200, currency="usd", customer=customer)),
        samples.event("charge.succeeded", samples.charge(amount=1999, currency="eur", customer=f"{customer}_eu")),
        samples.event("charge.succeeded", samples.charge(amount=5000, currency="jpy", customer=f"{customer}_jp")),
        samples.event(
            "charge.failed",
            samples.charge(
                amount=4200, currency="usd", customer=customer, status="failed", failure_code="card_declined"
            ),
        ),
        samples.event(
            "charge.failed",
            samples.charge(
                amount=900, currency="usd", customer=f"{customer}_b", status="failed", failure_code="insufficient_funds"
            ),
        ),
        samples.event(
            "charge.refunded",
            samples.charge(amount=3000, currency="usd", customer=f"{customer}_r", amount_refunded=3000),
        ),
        samples.event("charge.dispute.created", samples.dispute(charge_id=samples.new_id("ch"))),
        samples.event("radar.early_fraud_warning.created", samples.early_fraud_warning(charge_id=samples.new_id("ch"))),
        samples.event("invoice.paid", samples.invoice(customer=customer, subscription=f"sub_dash_{round_no}")),
        samples.event(
            "invoice.payment_failed",
            samples.invoice(customer=f"{customer}_f", status="open", subscription=f"sub_dash_f{round_no}"),
        ),
        samples.event(
            "customer.subscription.created",
            samples.subscription(customer=customer, subscription_id=f"sub_dash_{round_no}"),
        ),
        # Stripe's own delivery lag: this event was created two minutes before it arrives.
        samples.event(
            "charge.succeeded", samples.charge(amount=1500, currency="usd", customer=f"{customer}_l"), created=now - 120
        ),
    ]
    if round_no == 2:
        # Label values seen for the first time: their series are born at 1 (see test_first_event_...).
        events += [
            samples.event(
                "charge.failed",
                samples.charge(
                    amount=500, currency="usd", customer=f"{customer}_x", status="failed", failure_code="expired_card"
                ),
            ),
            samples.event(
                "charge.dispute.created", samples.dispute(charge_id=samples.new_id("ch"), reason="product_not_received")
            ),
            samples.event(
                "radar.early_fraud_warning.created",
                samples.early_fraud_warning(charge_id=samples.new_id("ch"), fraud_type="card_never_received"),
            ),
        ]
    # The same card charged the same amount twice within a minute: the duplicate_charge detector's case.
    double = samples.charge(amount=7700, currency="usd", customer=f"{customer}_dup", fingerprint="FpDashDouble1")
    second = {**double, "id": samples.new_id("ch")}
    events += [samples.event("charge.succeeded", double), samples.event("charge.succeeded", second)]
    for event in events:
        assert s.post(event) == 200, event["type"]
    s.accepted += len(events)
    assert s.post(events[0]) == 200  # a redelivery: outcome duplicate
    assert s.post(events[1], secret="whsec_wrong_secret_for_dashboards") == 400
    assert s.post(b"{" + b" " * MAX_BODY_BYTES + b"}") == 413


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> Stack:
    """Two rounds of traffic, each scraped before the next, so rates and increases over them are above zero."""
    for round_no in (1, 2):
        _traffic_round(stack, round_no)
        accepted = f'sum(billingwatch_webhook_requests_total{{outcome="accepted"}}) >= {stack.accepted}'
        _wait(lambda q=accepted: stack.query(q)["data"]["result"], 20, f"Prometheus to scrape round {round_no}")
    # Two failed USD charges per round (and one more in round 2); the recording rule counts all five once it has
    # evaluated after the scrape.
    _wait(lambda: traffic_recorded(stack), 20, "the recording rules to see both rounds")
    return stack


def traffic_recorded(stack: Stack) -> bool:
    rec = queries.recorded()
    return bool(stack.query(f'{rec.charge_failure_ratio}{{currency="usd"}}')["data"]["result"]) and bool(
        stack.query('currency:stripe_charges_failed:increase1h{currency="usd"} >= 5')["data"]["result"]
    )


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}


def _all_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title / refId, PromQL with the variables substituted) for every panel query."""
    out = []
    for uid, dash in _dashboards().items():
        for panel, target in check.queries_of(dash):
            out.append((uid, f"{panel['title']} / {target['refId']}", check.substitute(target["expr"], TEST_VALUES)))
    return out


def _variable_selectors() -> list[tuple[str, str, str]]:
    """label_values(selector, label) of each query variable, as a series selector for /api/v1/series."""
    out = []
    for uid, dash in _dashboards().items():
        for var in dash["templating"]["list"]:
            if var.get("type") != "query":
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
            assert m, f"{uid} variable {var['name']}: unexpected query {var['query']!r}"
            out.append((uid, var["name"], check.substitute(m.group(1), TEST_VALUES)))
    return out


def _known(stack: Stack) -> set[str]:
    return check.exporter_series_names(stack.exposition()) | sources.recorded_names()


def _rejected(stack: Stack) -> list[str]:
    queries = _all_queries()
    assert len(queries) > 30
    rejected = []
    for uid, where, promql in queries:
        doc = stack.query(promql)
        if doc.get("status") != "success":
            rejected.append(f"{uid} {where}: {doc.get('error')}\n    {promql}")
    return rejected


def test_every_panel_query_is_accepted(stack: Stack) -> None:
    assert _rejected(stack) == []


def test_every_panel_query_evaluates_with_data(traffic: Stack) -> None:
    """Some errors only exist with data: many-to-many matches, duplicate label sets after label_replace()."""
    assert _rejected(traffic) == []


def test_every_variable_query_is_accepted(stack: Stack) -> None:
    for uid, name, selector in _variable_selectors():
        status, body = _get(f"{stack.prometheus}/api/v1/series?" + urllib.parse.urlencode({"match[]": selector}))
        assert status == 200 and json.loads(body)["status"] == "success", f"{uid} ${name}: {body[:300]!r}"


def test_queries_name_only_series_the_exporter_or_the_rules_define(stack: Stack) -> None:
    known = _known(stack)
    problems = [
        f"{uid} {where}: {sorted(bad)}"
        for uid, where, promql in _all_queries()
        if (bad := check.unknown_names(promql, known))
    ]
    problems += [
        f"{uid} ${name}: {sorted(bad)}"
        for uid, name, selector in _variable_selectors()
        if (bad := check.unknown_names(selector, known))
    ]
    assert not problems, "queries naming series nobody defines:\n" + "\n".join(problems)


def test_name_check_flags_a_series_nobody_defines(stack: Stack) -> None:
    known = _known(stack)
    assert check.unknown_names('sum(rate(stripe_revenue_total{job=~".*"}[1m]))', known) == {"stripe_revenue_total"}
    assert check.unknown_names("currency:stripe_no_such_rule:rate1h", known) == {"currency:stripe_no_such_rule:rate1h"}
    assert check.unknown_names('sum by (currency) (rate(stripe_charges_total{currency=~".*"}[1m]))', known) == set()


# Panels (by title prefix) that must show data after the traffic above, and whether their largest value must be
# above zero. Left out: targets that need history a fresh Prometheus cannot have (the revenue baseline needs 8 days)
# and the processing-error panels (their series exist only after an error the traffic does not cause).
MAIN_PANELS: dict[str, dict[str, bool]] = {
    "billingwatch-overview": {
        "Alerts firing": True,
        "Firing alerts": True,
        "Anomalies active": True,
        "Active anomalies": True,
        "Collected (last": True,
        "MRR": True,
        "Collected revenue (rolling": True,
        "MRR by currency": True,
        "Subscriptions by status": True,
        "Refunded (rolling": True,
        "Refund ratio": True,
        "Charge failure ratio": True,
        "Failed charges by code": True,
        "Dispute ratio vs network thresholds": True,
        "Early fraud warning ratio": True,
        "Disputes by reason": True,
        "Early fraud warnings by type": True,
        # Gauges and counters that exist at zero: data, but nothing to count yet.
        "Lapsed subscriptions": False,
        "Lapsed subscriptions over time": False,
    },
    "billingwatch-operations": {
        "Events received": True,
        "Duplicate deliveries": True,
        "Invalid signatures": True,
        "Too large": True,
        "Events per second by type": True,
        "Webhook requests by outcome": True,
        "Delivery delay": True,
        "Last event age": False,
        "Exporter up": True,
        "Label values overflowed": False,
        "Anomaly series dropped": False,
        "State flush time": False,
        "Seen event ids": False,
        "Exporter versions": True,
    },
}


def _panel(dashboard: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [p for p in check.panels_of(dashboard) if p["title"] == prefix] or [
        p for p in check.panels_of(dashboard) if p["title"].startswith(prefix)
    ]
    assert len(found) == 1, f"{dashboard['uid']}: {len(found)} panels titled {prefix!r}..."
    return found[0]


def _largest(doc: dict[str, Any]) -> float:
    return max(float(r["value"][1]) for r in doc["data"]["result"])


def test_main_panels_return_data_after_traffic(traffic: Stack) -> None:
    dashboards = _dashboards()
    recorded = queries.recorded()
    # Records that need history a fresh Prometheus has not got: the seasonal revenue baseline (weeks), and the
    # 30-day dispute ratio, summed from daily points at UTC midnights (none before the first midnight).
    needs_history = (recorded.revenue_baseline, recorded.dispute_ratio_month)
    pending = {
        (uid, f"{title} / {t['refId']}"): (check.substitute(t["expr"], TEST_VALUES), positive)
        for uid, panels in MAIN_PANELS.items()
        for title, positive in panels.items()
        for t in _panel(dashboards[uid], title)["targets"]
        if not any(name in t["expr"] for name in needs_history)
    }
    assert len(pending) > 30
    problems: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + 20  # scrapes and rule evaluations on a busy machine may lag a little
    while pending:
        problems = {}
        for key, (expr, positive) in pending.items():
            doc = traffic.query(expr)
            assert doc["status"] == "success", (key, doc)
            if not doc["data"]["result"]:
                problems[key] = f"no data: {expr}"
            elif positive and _largest(doc) <= 0:
                problems[key] = f"zero: {expr} -> {doc['data']['result']}"
        pending = {k: v for k, v in pending.items() if k in problems}
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not problems, "panels without data after traffic:\n" + "\n".join(f"{k}: {v}" for k, v in problems.items())


def test_anomaly_table_shows_the_duplicate_charge(traffic: Stack) -> None:
    """The anomaly table's three queries (gauge, amount, since) all find the duplicate charge of the traffic."""
    panel = _panel(_dashboards()["billingwatch-overview"], "Active anomalies")
    gauge_expr, amount_expr, since_expr = (check.substitute(t["expr"], TEST_VALUES) for t in panel["targets"])
    dup = _wait(
        lambda: [
            r for r in traffic.query(gauge_expr)["data"]["result"] if r["metric"].get("detector") == "duplicate_charge"
        ],
        10,
        "the duplicate_charge anomaly",
    )
    amount = traffic.query(amount_expr)["data"]["result"]
    since = traffic.query(since_expr)["data"]["result"]
    assert "__name__" not in dup[0]["metric"], "the merge transformation needs the metric name dropped"
    assert any(float(r["value"][1]) == pytest.approx(77.0) for r in amount if r["metric"] == dup[0]["metric"])
    started = [float(r["value"][1]) / 1000 for r in since if r["metric"] == dup[0]["metric"]]
    assert started and time.time() - 120 < started[0] <= time.time()


def test_firing_alerts_table_links_the_duplicate_charge_alert_to_the_anomaly_panel(traffic: Stack) -> None:
    overview = _dashboards()["billingwatch-overview"]
    panel = _panel(overview, "Firing alerts")
    expr = check.substitute(panel["targets"][0]["expr"], TEST_VALUES)

    def firing() -> list[dict[str, Any]]:
        result = traffic.query(expr)["data"]["result"]
        return [r for r in result if r["metric"]["alertname"] == "BillingWatchDuplicateCharge"]

    # The anomaly alerts' group runs every second here; give it a few evaluations after the scrape.
    dup = _wait(firing, 10, "BillingWatchDuplicateCharge to fire")
    anomalies = _panel(overview, "Active anomalies")
    assert dup[0]["metric"]["panel_url"] == f"/d/billingwatch-overview?viewPanel={anomalies['id']}"
    assert time.time() - 120 < float(dup[0]["value"][1]) / 1000 <= time.time()  # the Since column, in ms


@pytest.mark.parametrize(
    ("title", "label", "value"),
    [
        ("Failed charges by code", "failure_code", "expired_card"),
        ("Disputes by reason", "reason", "product_not_received"),
        ("Early fraud warnings by type", "fraud_type", "card_never_received"),
    ],
)
def test_first_event_of_a_new_label_value_is_counted(traffic: Stack, title: str, label: str, value: str) -> None:
    """A series born at 1 (a dispute reason never seen before) shows as 1, not as the 0 plain increase() gives."""
    panel = _panel(_dashboards()["billingwatch-overview"], title)
    result = traffic.query(check.substitute(panel["targets"][0]["expr"], TEST_VALUES))["data"]["result"]
    assert [float(r["value"][1]) for r in result if r["metric"].get(label) == value] == [1.0], result
