"""The shipped alertmanager.yml, run by a real Alertmanager with only its addresses changed, delivers each severity
where docs/alerting.md says: critical by email and webhook, warning by email only, info by webhook only, a critical
alert mutes the warning of the same detector about the same subject, an all-currency alert mutes the same alert per
currency (at its severity or below), Stripe test-mode alerts take the non-paging
"test-mode" receiver, and the Watchdog reaches neither email nor webhook. The emails use
notifications/billingwatch.tmpl: a subject that says what happened, to whom, how much, and a body whose links are
the sending setup's. A real SMTP server (aiosmtpd) and a real HTTP receiver catch the notifications.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from scripts.stack_config import derive_alertmanager, load
from tests.alertmanager_support import (
    Alertmanager,
    HttpCatcher,
    Mail,
    Mailbox,
    free_port,
    running_alertmanager,
    wait_for,
)
from tests.conftest import REPO

PROMETHEUS = "http://prometheus.test:9090"  # only a string in the alerts' generatorURL


@dataclass
class Stack:
    am: Alertmanager
    mailbox: Mailbox
    hooks: HttpCatcher

    def post(self, alerts: list[dict[str, str]]) -> None:
        self.am.post([_alert(labels) for labels in alerts])

    def webhook_alerts(self) -> list[dict[str, str]]:
        return [a["labels"] for p in self.hooks.on("/alerts") for a in p["alerts"] if a["status"] == "firing"]

    def mails_for(self, customer: str) -> list[Mail]:
        return [m for m in self.mailbox.messages if customer in m.subject + m.text]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hooks = HttpCatcher()
    # Only the addresses change (and the template path, made absolute): routes, timings, receivers, templates and
    # inhibition are the shipped ones.
    cfg = derive_alertmanager(
        load(REPO / "alertmanager.yml"), smtp=f"127.0.0.1:{smtp.port}", webhook_origin=hooks.url
    )
    try:
        with running_alertmanager(cfg, tmp_path_factory.mktemp("alertmanager")) as am:
            yield Stack(am, mailbox, hooks)
    finally:
        hooks.stop()
        smtp.stop()


def _alert(labels: dict[str, str]) -> dict[str, Any]:
    """An alert as Prometheus sends it, with the annotations the shipped anomaly rules render."""
    customer = labels.get("customer", "")
    descriptions = {
        "BillingWatchDuplicateCharge": f"customer {customer} has two successful charges of 49.99 USD within the "
        "duplicate-charge window (reason same_amount). /api/v1/anomalies on the exporter lists both charge ids.",
        "BillingWatchNegativeInvoice": f"Invoice {labels.get('invoice')} of customer {customer}: negative_total, "
        "amount -125.00 USD.",
        "BillingWatchSilentLapse": f"Subscription {labels.get('subscription')} of customer {customer} is active but "
        "unpaid (no_payment); amount involved: 49.00 USD.",
    }
    name = labels["alertname"]
    return {
        "labels": labels,
        "annotations": {
            "summary": "test",
            "description": descriptions.get(name, "something happened"),
            "runbook_url": f"http://127.0.0.1:9847/runbook#{name.lower()}",
        },
        "generatorURL": f"{PROMETHEUS}/graph?g0.expr=billingwatch_anomaly",
    }


def _anomaly(alertname: str, severity: str, detector: str, customer: str, **extra: str) -> dict[str, str]:
    return {
        "alertname": alertname,
        "severity": severity,
        "detector": detector,
        "customer": customer,
        "job": "billingwatch",
        "livemode": "true",
        **extra,
    }


def test_severities_reach_the_documented_receivers_and_critical_inhibits_warning(stack: Stack) -> None:
    stack.post(
        [
            _anomaly("BillingWatchDuplicateCharge", "critical", "duplicate_charge", "cus_crit", currency="usd"),
            _anomaly("BillingWatchNegativeInvoice", "warning", "negative_invoice", "cus_warn", invoice="in_1"),
            _anomaly("BillingWatchCustomAnomaly", "info", "vip_refund", "cus_info"),
            _anomaly("BillingWatchSilentLapse", "critical", "silent_lapse", "cus_inh", subscription="sub_1"),
            _anomaly("BillingWatchSilentLapse", "warning", "silent_lapse", "cus_inh", subscription="sub_1"),
        ]
    )
    started = time.monotonic()

    mails_for = stack.mails_for

    def hooks_for(customer: str) -> list[dict[str, str]]:
        return [a for a in stack.webhook_alerts() if a.get("customer") == customer]

    expected_mail = ("cus_crit", "cus_warn", "cus_inh")
    expected_hooks = ("cus_crit", "cus_info", "cus_inh")
    while time.monotonic() - started < 30:
        if all(mails_for(c) for c in expected_mail) and all(hooks_for(c) for c in expected_hooks):
            break
        time.sleep(0.2)
    first = time.monotonic() - started
    # The anomaly routes' group_wait is 5 s: everything arrives well within the 15 s budget.
    assert first < 12, f"notifications took {first:.1f}s"
    time.sleep(2)  # let anything that should not come have the chance to arrive

    for customer in expected_mail:
        assert len(mails_for(customer)) == 1, (customer, stack.mailbox.messages)
    for customer in expected_hooks:
        assert hooks_for(customer), customer
    assert mails_for("cus_info") == [], "info must not be emailed"
    assert hooks_for("cus_warn") == [], "warning must not go to the webhook"
    # The warning about the same subscription was inhibited by the critical one: one email (checked above, it
    # would be two otherwise) and only the critical alert on the webhook.
    assert [a["severity"] for a in hooks_for("cus_inh")] == ["critical"]
    # Labels travel intact: the webhook names the detector and customer.
    (crit,) = hooks_for("cus_crit")
    assert crit["detector"] == "duplicate_charge" and crit["currency"] == "usd"


def test_email_says_what_happened_to_whom_how_much_with_working_links(stack: Stack) -> None:
    stack.post([_anomaly("BillingWatchDuplicateCharge", "critical", "duplicate_charge", "cus_tmpl", currency="usd")])
    (mail,) = wait_for(lambda: stack.mails_for("cus_tmpl"), 30, "the duplicate charge email")
    assert mail.subject == "Duplicate charge: 49.99 USD twice for cus_tmpl"
    text = mail.text
    assert text.startswith("FIRING: Duplicate charge: 49.99 USD twice for cus_tmpl\n")
    assert "BillingWatchDuplicateCharge, severity critical, live mode, since " in text
    assert "customer cus_tmpl has two successful charges of 49.99 USD" in text  # the description
    assert "What to do first: Open the customer in the Stripe Dashboard" in text
    # Links: the live Stripe Dashboard, the runbook annotation, the alert's source and the Alertmanager that sent it.
    assert "Customer      cus_tmpl  https://dashboard.stripe.com/customers/cus_tmpl\n" in text
    assert "dashboard.stripe.com/test" not in text
    assert "Runbook       http://127.0.0.1:9847/runbook#billingwatchduplicatecharge\n" in text
    assert f"Prometheus    {PROMETHEUS}/graph?g0.expr=billingwatch_anomaly\n" in text
    assert f"Alertmanager  {stack.am.url}/#/alerts?receiver=email-and-webhook" in text
    assert "\nGrafana " not in text  # no dashboard_url annotation, no line
    assert '<a href="https://dashboard.stripe.com/customers/cus_tmpl">cus_tmpl</a>' in mail.html
    assert f'<a href="{stack.am.url}/#/alerts?receiver=email-and-webhook">' in mail.html


def test_test_mode_alerts_take_the_non_paging_route_with_test_dashboard_links(stack: Stack) -> None:
    stack.post(
        [
            _anomaly("BillingWatchNegativeInvoice", "critical", "negative_invoice", "cus_tm", invoice="in_tm1",
                     livemode="false", currency="usd", reason="negative_total"),
            _anomaly("BillingWatchSilentLapse", "warning", "silent_lapse", "cus_tmlapse", subscription="sub_tm1",
                     livemode="false", currency="usd"),
        ]
    )
    (invoice,) = wait_for(lambda: stack.mails_for("cus_tm "), 30, "the test-mode negative invoice email")
    assert invoice.subject == "[test mode] Negative invoice in_tm1: -125.00 USD for cus_tm"
    assert "severity critical, TEST MODE" in invoice.text
    assert "Invoice       in_tm1  https://dashboard.stripe.com/test/invoices/in_tm1\n" in invoice.text
    assert "Customer      cus_tm  https://dashboard.stripe.com/test/customers/cus_tm\n" in invoice.text
    # The non-paging receiver sent it (where a pager is never added), not the critical one.
    assert f"{stack.am.url}/#/alerts?receiver=test-mode" in invoice.text
    (lapse,) = wait_for(lambda: stack.mails_for("cus_tmlapse"), 30, "the test-mode silent lapse email")
    assert lapse.subject == "[test mode] Unpaid active subscription sub_tm1: 49.00 USD for cus_tmlapse"
    assert "https://dashboard.stripe.com/test/subscriptions/sub_tm1" in lapse.text
    # Test mode also reaches the webhook (the demo shows both), warnings included.
    wait_for(
        lambda: {"cus_tm", "cus_tmlapse"} <= {a.get("customer") for a in stack.webhook_alerts()},
        30,
        "both test-mode alerts on the webhook",
    )


def test_watchdog_goes_to_its_own_receiver_never_to_email_or_webhook(stack: Stack) -> None:
    stack.post(
        [
            {"alertname": "BillingWatchWatchdog", "severity": "info", "detector": "watchdog", "job": "billingwatch"},
            # A marker on the info route: once it is delivered (5 s group_wait), a misrouted Watchdog (0 s) would be.
            _anomaly("BillingWatchCustomAnomaly", "info", "vip_refund", "cus_marker", livemode="true"),
        ]
    )
    wait_for(lambda: any(a.get("customer") == "cus_marker" for a in stack.webhook_alerts()), 30, "the marker")
    with urllib.request.urlopen(f"{stack.am.url}/api/v2/alerts?filter=alertname%3D%22BillingWatchWatchdog%22") as r:
        (watchdog,) = json.loads(r.read())
    assert [r["name"] for r in watchdog["receivers"]] == ["watchdog"]
    assert not [a for a in stack.webhook_alerts() if a["alertname"] == "BillingWatchWatchdog"]
    assert not [m for m in stack.mailbox.messages if "Watchdog" in m.subject + m.text]


def _inhibited(am: Alertmanager) -> dict[tuple[str, ...], bool]:
    """(alertname, currency, severity, livemode) -> whether the real Alertmanager mutes it by inhibition now."""
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5) as resp:
        alerts = json.loads(resp.read())
    keys = ("alertname", "currency", "severity", "livemode")
    return {tuple(a["labels"].get(k, "") for k in keys): bool(a["status"]["inhibitedBy"]) for a in alerts}


def test_an_all_currency_alert_mutes_the_same_alert_per_currency_at_its_severity_or_below(stack: Stack) -> None:
    """A total outage fails every currency: the all-currency failure spike is the one notification, not one per
    currency; a per-currency critical still pages under an all-currency warning; the off-session (dunning) view
    mutes nothing per currency."""

    def rate(name: str, severity: str, livemode: str = "true", **extra: str) -> dict[str, str]:
        detector = "revenue_drop" if name == "BillingWatchRevenueDrop" else "charge_failure_spike"
        return {"alertname": name, "severity": severity, "detector": detector, "job": "billingwatch",
                "livemode": livemode, **extra}

    failure, revenue = "BillingWatchChargeFailureSpike", "BillingWatchRevenueDrop"
    stack.post(
        [
            rate(failure, "warning", session="on"),
            rate(failure, "warning", currency="usd"),
            rate(revenue, "warning"),
            rate(revenue, "warning", currency="eur"),
            rate(revenue, "critical", currency="usd"),
            # Test mode: only the off-session view fires (critical here, so that the severity rule gives a control).
            rate(failure, "critical", "false", session="off"),
            rate(failure, "warning", "false", currency="eur"),
            rate("BillingWatchCardTesting", "warning", "false"),
        ]
    )
    muted = {
        (failure, "usd", "warning", "true"): True,
        (revenue, "eur", "warning", "true"): True,
        ("BillingWatchCardTesting", "", "warning", "false"): True,  # the critical mutes its detector's warning
    }
    # Inhibition is computed from the sources Alertmanager has taken in: wait for the muted ones (which proves the
    # sources of every case below were taken in), then read the rest from the same answer.
    def settled() -> dict[tuple[str, ...], bool] | None:
        status = _inhibited(stack.am)
        return status if all(status.get(k) for k in muted) else None

    status = wait_for(settled, 30, "the inhibited alerts")
    assert status[(failure, "", "warning", "true")] is False
    assert status[(revenue, "", "warning", "true")] is False
    assert status[(revenue, "usd", "critical", "true")] is False, "a per-currency critical must still page"
    assert status[(failure, "eur", "warning", "false")] is False, "the off-session view must not mute a currency"
    assert status[(failure, "", "critical", "false")] is False
