"""End to end with the real servers: signed Stripe events in, email and webhook notifications out.

One stack per module (started once): `billingwatch serve` as a subprocess, real `prometheus` and
`prometheus-alertmanager` with the shipped rules and configs (addresses changed; fast timings, see
tests/e2e/e2e_stack.py), a real SMTP server (aiosmtpd) and a real aiohttp webhook receiver.

Tests share the stack, so each uses its own customer ids and looks only at alerts carrying them. The fault tests
come last and leave every process running again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter import samples
from tests.conftest import SECRET, make_event, require_binary, sign
from tests.e2e.e2e_stack import Stack, http, wait_for
from tests.e2e.rendered_rules import E2E_CONFIG, render_test_rules
from tests.e2e.sinks import MailSink, WebhookSink, alerts_matching

NOTIFY_TIMEOUT = 45.0  # fast mode notifies within ~5 s; generous for a loaded 2-core CI machine


class Env:
    def __init__(self, stack: Stack, mail: MailSink, hook: WebhookSink):
        self.stack = stack
        self.mail = mail
        self.hook = hook

    def post(self, event: dict[str, Any]) -> int:
        return self.stack.post(event, sign)

    def notified(self, timeout: float = NOTIFY_TIMEOUT, status: str = "firing", **labels: str) -> list[dict]:
        """Wait until the webhook receiver got an alert with `labels` and `status`; return all such alerts."""

        def found() -> list[dict]:
            return [a for _, a in alerts_matching(self.hook.notifications, **labels) if a.get("status") == status]

        return wait_for(found, timeout, f"a {status} webhook notification with {labels}", interval=0.2)

    def mailed(self, *needles: str, timeout: float = NOTIFY_TIMEOUT) -> list[Any]:
        """Wait until an email mentions every one of `needles`."""

        def found() -> list[Any]:
            return [m for m in self.mail.mails if all(n in m.text or n in m.subject for n in needles)]

        return wait_for(found, timeout, f"an email mentioning {needles}", interval=0.2)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    workdir = tmp_path_factory.mktemp("e2e")
    rules_dir = render_test_rules(workdir / "rendered-rules")
    mail = MailSink().start()
    hook = WebhookSink().start()
    stack = Stack(
        workdir / "stack",
        secret=SECRET,
        smtp_port=mail.port,
        webhook_base=hook.base,
        fast=True,
        rules_dir=rules_dir,
        exporter_config=E2E_CONFIG,
        prometheus_bin=prometheus,
        alertmanager_bin=alertmanager,
    )
    try:
        stack.start()
        yield Env(stack, mail, hook)
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        hook.stop()
        mail.stop()


def customer(tag: str) -> str:
    return f"cus_e2e{tag}{secrets.token_hex(4)}"


def charge(
    cus: str | None,
    amount: int,
    *,
    currency: str = "usd",
    status: str = "succeeded",
    failure_code: str | None = None,
    fingerprint: str = "Xt5EWLLDS7FJjR1c",
) -> dict[str, Any]:
    event_type = "charge.succeeded" if status == "succeeded" else "charge.failed"
    obj = samples.charge(
        amount=amount,
        currency=currency,
        customer=cus,
        status=status,
        failure_code=failure_code,
        fingerprint=fingerprint,
    )
    event = make_event(event_type, obj)
    # Made through the API (checkout, a retry), not by Stripe's own billing: a double charge is paged at once.
    event["request"] = {"id": samples.new_id("req", 14), "idempotency_key": None}
    return event


def negative_invoice(cus: str, total: int = -12_500) -> dict[str, Any]:
    inv = samples.invoice(total=total, currency="usd", customer=cus, status="open", billing_reason="manual")
    return make_event("invoice.finalized", inv)


# ------------------------------------------------------------------------------------------------ the happy paths


def test_duplicate_charge_notifies_by_email_and_webhook(env: Env) -> None:
    cus = customer("dup")
    assert env.post(charge(cus, 4_999)) == 200
    assert env.post(charge(cus, 4_999)) == 200  # a different charge id, same payer, amount and currency

    alert = env.notified(detector="duplicate_charge", customer=cus)[0]
    assert alert["labels"]["alertname"] == "BillingWatchDuplicateCharge"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["currency"] == "usd"
    assert f"customer {cus}" in alert["annotations"]["description"]
    assert "49.99 USD" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith("#billingwatchduplicatecharge")
    (mail,) = env.mailed(cus, "BillingWatchDuplicateCharge")
    # notifications/billingwatch.tmpl on the real rules' description: what happened, to whom, how much.
    assert f"Duplicate charge: 49.99 USD twice for {cus}" in mail.subject
    assert f"/customers/{cus}" in mail.text and "What to do first:" in mail.text
    # Every link is one this stack serves: the alert's query in Prometheus, Alertmanager, the exporter's runbook.
    st = env.stack
    assert f"Prometheus    {st.prometheus_url}/graph?" in mail.text
    assert f"Alertmanager  {st.alertmanager_url}/#/alerts?receiver=" in mail.text
    for url in (alert["generatorURL"], f"{st.alertmanager_url}/#/alerts"):
        assert http("GET", url)[0] == 200, url
    anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
    status, page = http("GET", f"{st.metrics_url}/runbook")
    assert status == 200 and f'id="{anchor}"'.encode() in page


def test_large_refund_notifies_by_email_and_webhook(env: Env) -> None:
    # Money out: a single refund above the USD threshold (500) is critical.
    cus = customer("refund")
    refunded = samples.charge(amount=90_000, currency="usd", customer=cus, amount_refunded=90_000)
    assert env.post(make_event("charge.refunded", refunded)) == 200

    alert = env.notified(detector="negative_invoice", customer=cus)[0]
    assert alert["labels"]["alertname"] == "BillingWatchNegativeInvoice"
    assert (alert["labels"]["reason"], alert["labels"]["severity"]) == ("large_refund", "critical")
    env.mailed(cus, "negative_invoice", "BillingWatchNegativeInvoice")


def test_negative_invoice_is_a_credit_for_the_record(env: Env) -> None:
    # A negative total credits the customer's balance: no money moves, so it is info (the webhook only).
    cus = customer("neg")
    event = negative_invoice(cus)
    assert env.post(event) == 200

    alert = env.notified(detector="negative_invoice", customer=cus)[0]
    assert alert["labels"]["alertname"] == "BillingWatchNegativeInvoice"
    assert alert["labels"]["severity"] == "info"
    assert alert["labels"]["invoice"] == event["data"]["object"]["id"]
    assert event["data"]["object"]["id"] in alert["annotations"]["description"]


def test_clean_stream_notifies_nobody(env: Env) -> None:
    clean = customer("clean")
    events = [
        charge(clean, 1_000),
        charge(clean, 2_500),  # same payer, a different amount: not a duplicate
        charge(clean, 1_000, currency="eur"),  # same amount, another currency: not a duplicate
        charge(clean, 1_000, status="failed", failure_code="card_declined"),
        make_event("invoice.paid", samples.invoice(total=2_000, customer=clean)),
        make_event("invoice.finalized", samples.invoice(total=0, customer=clean, status="open")),
    ]
    for event in events:
        assert env.post(event) == 200
    assert env.post(events[0]) == 200  # Stripe redelivers: never a duplicate charge

    # A sentinel anomaly sent after the clean stream travels the same pipeline; once its notifications arrive,
    # anything the clean stream had caused would have arrived too.
    sentinel = customer("sentinel")
    assert env.post(charge(sentinel, 777)) == 200
    assert env.post(charge(sentinel, 777)) == 200
    env.notified(detector="duplicate_charge", customer=sentinel)
    env.mailed(sentinel)

    assert alerts_matching(env.hook.notifications, customer=clean) == []
    assert [m.subject for m in env.mail.mails if clean in m.text] == []
    assert env.stack.exporter_metric("billingwatch_anomaly", {"customer": clean}) is None


# ------------------------------------------------------------------------------------------- a rate-based alert


def _alert_names_reading(env: Env, needle: str) -> list[str]:
    """Names of the loaded alerting rules whose expression mentions `needle` (rule names are the rules' business)."""
    from tests.e2e.e2e_stack import get_json

    groups = get_json(f"{env.stack.prometheus_url}/api/v1/rules?type=alert")["data"]["groups"]
    return sorted({r["name"] for g in groups for r in g["rules"] if needle in r["query"]})


def _prom_alerts(env: Env, name: str) -> list[dict[str, Any]]:
    return [a for a in env.stack.prometheus_alerts() if a["labels"].get("alertname") == name]


def test_signature_failure_alert_fires_and_resolves(env: Env) -> None:
    names = _alert_names_reading(env, "invalid_signature")
    assert names, "no loaded alert reads the invalid_signature outcome"
    body = b'{"id": "evt_probe", "type": "charge.succeeded", "data": {"object": {}}}'
    for i in range(12):  # a probe, or a wrong secret: well over the 5-failure minimum
        forged = sign(body, "whsec_not_ours") if i % 2 else "t=1,v1=" + "0" * 64
        assert env.stack.post_raw(body, {"Stripe-Signature": forged, "Content-Type": "application/json"}) == 400

    def firing() -> list[str]:
        return [n for n in names if any(a["state"] == "firing" for a in _prom_alerts(env, n))]

    fired = wait_for(firing, NOTIFY_TIMEOUT, f"one of {names} to fire in Prometheus", interval=0.2)
    name = fired[0]

    def notified(status: str) -> bool:
        hooks = [a for _, a in alerts_matching(env.hook.notifications, alertname=name) if a["status"] == status]
        # The shipped template's text part says "FIRING: <headline>" (or RESOLVED), then "<alertname>, severity ...".
        tag = "FIRING: " if status == "firing" else "RESOLVED: "
        mails = [m for m in env.mail.mails if f"{name}, severity" in m.text and tag in m.text]
        return bool(hooks or mails)

    wait_for(lambda: notified("firing"), NOTIFY_TIMEOUT, f"a firing notification of {name}", interval=0.2)
    # No more failures: once the short test window has passed the alert resolves and that is notified too.
    wait_for(lambda: not _prom_alerts(env, name), 60, f"{name} to resolve in Prometheus", interval=0.5)
    wait_for(lambda: notified("resolved"), NOTIFY_TIMEOUT, f"a resolved notification of {name}", interval=0.2)


# ------------------------------------------------------------------------------------------------------- faults


def _epoch(rfc3339: str) -> float:
    """Alertmanager's startsAt (RFC 3339, nanoseconds, Z) as unix seconds."""
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")


def _alert_in_prometheus(env: Env, **labels: str) -> bool:
    return any(
        a["state"] == "firing" and all(a["labels"].get(k) == v for k, v in labels.items())
        for a in env.stack.prometheus_alerts()
    )


def test_alertmanager_down_when_the_anomaly_happens_still_notifies(env: Env) -> None:
    cus = customer("amdown")
    log_start = env.stack.prometheus.log_size()
    env.stack.alertmanager.stop()
    try:
        assert env.post(charge(cus, 3_000)) == 200
        assert env.post(charge(cus, 3_000)) == 200
        wait_for(
            lambda: _alert_in_prometheus(env, detector="duplicate_charge", customer=cus),
            NOTIFY_TIMEOUT,
            "the duplicate charge alert to fire in Prometheus while Alertmanager is down",
            interval=0.2,
        )
        # Let Prometheus try (and fail) to send it at least once before Alertmanager returns.
        wait_for(
            lambda: "error sending alert" in env.stack.prometheus.log_since(log_start).lower(),
            NOTIFY_TIMEOUT,
            "Prometheus to fail sending to the stopped Alertmanager",
            interval=0.2,
        )
        assert alerts_matching(env.hook.notifications, customer=cus) == []
    finally:
        back = time.time()
        env.stack.start_alertmanager()
    # Prometheus re-sends firing alerts (every resend-delay), so the returning Alertmanager gets it and notifies.
    env.notified(detector="duplicate_charge", customer=cus)
    env.mailed(cus)
    assert min(n.received for n, _ in alerts_matching(env.hook.notifications, customer=cus)) >= back


def test_prometheus_down_ingest_keeps_answering_and_loses_nothing(env: Env) -> None:
    cus = customer("promdown")
    before = env.stack.exporter_metric("stripe_charges_total", {"currency": "jpy"}) or 0.0
    env.stack.prometheus.stop()
    try:
        statuses = [env.post(charge(cus, 1_000 + i, currency="jpy")) for i in range(20)]
        statuses += [env.post(charge(cus, 5_000)), env.post(charge(cus, 5_000))]  # and a duplicate charge
    finally:
        env.stack.start_prometheus()
    assert statuses == [200] * 22
    assert env.stack.exporter_metric("stripe_charges_total", {"currency": "jpy"}) == before + 20

    # Once Prometheus is back it scrapes the counters with every event counted, and the anomaly raised while it
    # was down still becomes a notification.
    wait_for(
        lambda: env.stack.query_value('sum(stripe_charges_total{currency="jpy"})') == before + 20,
        NOTIFY_TIMEOUT,
        "Prometheus to see every charge sent while it was down",
        interval=0.2,
    )
    env.notified(detector="duplicate_charge", customer=cus)


def test_exporter_restart_mid_stream_counts_once_and_does_not_storm(env: Env) -> None:
    cus = customer("restart")
    first_half = [charge(customer("r1"), 500 + i, currency="eur") for i in range(8)] + [charge(cus, 9_900)]
    second_half = [charge(customer("r2"), 700 + i, currency="eur") for i in range(6)] + [charge(cus, 9_900)]
    for event in first_half:
        assert env.post(event) == 200

    stopped = time.time()
    assert env.stack.exporter.stop() == 0  # SIGTERM: finish requests, flush state, exit 0
    # Down long enough for Prometheus to notice (a failed scrape), as in a real restart or deploy.
    wait_for(
        lambda: env.stack.query_value(f'up{{instance="127.0.0.1:{env.stack.metrics_port}"}}') == 0,
        NOTIFY_TIMEOUT,
        "Prometheus to see the exporter down",
        interval=0.2,
    )
    env.stack.start_exporter()
    restarted = time.time()

    # Stripe redelivers what it is not sure we got, interleaved with new events; then one more redelivery.
    stream = [e for pair in zip(first_half, second_half, strict=False) for e in pair] + first_half[len(second_half) :]
    for event in [*stream, second_half[-1]]:
        assert env.post(event) == 200

    metric = env.stack.exporter_metric
    assert metric("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == len(second_half)
    assert metric("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == len(first_half) + 1
    assert metric("stripe_charges_total", {"currency": "eur"}) == len(second_half) - 1
    assert metric("billingwatch_anomalies_total", {"detector": "duplicate_charge"}) == 1  # the window survived

    alerts = env.notified(detector="duplicate_charge", customer=cus)
    # Let the pipeline run a few more cycles; a storm would show up as more alert instances for this customer.
    sentinel = customer("restartsentinel")
    assert env.post(charge(sentinel, 111)) == 200 and env.post(charge(sentinel, 111)) == 200
    env.notified(detector="duplicate_charge", customer=sentinel)
    alerts = [a for _, a in alerts_matching(env.hook.notifications, customer=cus)]
    assert {a["startsAt"] for a in alerts if a["status"] == "firing"} == {alerts[0]["startsAt"]}
    assert [a for a in alerts if a["status"] == "resolved"] == []
    assert all(n.received >= restarted for n, _ in alerts_matching(env.hook.notifications, customer=cus))
    # The restart itself notifies nobody: the anomalies raised before it neither resolve nor start again. (An
    # earlier test's alert may still be notified late under its first startsAt: that is no new episode.)
    others = [
        (a["labels"].get("customer"), a["status"], a["startsAt"])
        for n in env.hook.notifications
        if n.received >= stopped
        for a in n.alerts
        if a["labels"].get("customer") not in (cus, sentinel)
        and (a["status"] == "resolved" or _epoch(a["startsAt"]) >= stopped)
    ]
    assert others == []
