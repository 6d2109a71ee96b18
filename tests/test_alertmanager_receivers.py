"""The receiver examples in contrib/alertmanager/ pass Debian's amtool 0.25, and the Slack, Discord, PagerDuty,
Telegram and Webex examples, added to the shipped alertmanager.yml, deliver end to end: a real Alertmanager posts to
loopback HTTP receivers that check each service's payload shape (Slack's `attachments` with title and text,
Discord's `embeds`, PagerDuty's Events API v2 body, Telegram's sendMessage, Webex's roomId and markdown) and that
the billingwatch.chat templates filled them. The Watchdog example pings a loopback "dead man's switch"."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.stack_config import derive_alertmanager, load
from tests.alertmanager_support import HttpCatcher, running_alertmanager, wait_for
from tests.conftest import REPO, require_binary

CONTRIB = REPO / "contrib" / "alertmanager"


def _amtool(path: Path) -> subprocess.CompletedProcess[str]:
    amtool = require_binary("amtool")
    return subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30)


def test_receiver_examples_pass_amtool_0_25() -> None:
    result = _amtool(CONTRIB / "receivers.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    names = {r["name"] for r in load(CONTRIB / "receivers.yml")["receivers"]}
    assert {"slack", "discord", "pagerduty", "telegram", "webex", "webhook", "watchdog"} <= names
    # The templates the examples use parse (amtool loads them) and exist.
    assert "1 templates" in result.stdout


def test_msteams_example_needs_0_26_and_nothing_else(tmp_path: Path) -> None:
    """Alertmanager 0.25 refuses the Teams example only for msteams_configs (added in 0.26)."""
    result = _amtool(CONTRIB / "receivers-msteams.yml")
    assert result.returncode != 0
    problems = [line.strip() for line in (result.stdout + result.stderr).splitlines() if "field " in line]
    assert problems and all("field msteams_configs not found" in line for line in problems), problems
    doc = load(CONTRIB / "receivers-msteams.yml")
    for receiver in doc["receivers"]:
        receiver.pop("msteams_configs")
    doc["templates"] = [str(CONTRIB / t) for t in doc["templates"]]
    stripped = tmp_path / "without-msteams.yml"
    stripped.write_text(json.dumps(doc))
    assert _amtool(stripped).returncode == 0


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, HttpCatcher]]:
    work = tmp_path_factory.mktemp("chat")
    catcher = HttpCatcher()
    examples = {r["name"]: r for r in load(CONTRIB / "receivers.yml")["receivers"]}
    (slack,) = examples["slack"]["slack_configs"]
    (discord,) = examples["discord"]["discord_configs"]
    (pagerduty,) = examples["pagerduty"]["pagerduty_configs"]
    (telegram,) = examples["telegram"]["telegram_configs"]
    (webex,) = examples["webex"]["webex_configs"]
    (ping,) = examples["watchdog"]["webhook_configs"]
    # The examples' own forms: secrets in files where they use files; only the services' addresses change.
    url_file = work / "slack_webhook_url"
    url_file.write_text(f"{catcher.url}/slack")
    slack["api_url_file"] = str(url_file)
    discord["webhook_url"] = f"{catcher.url}/discord"
    key_file = work / "pagerduty_routing_key"
    key_file.write_text("R0UT1NGKEY0123456789abcdefabcdef")
    pagerduty["routing_key_file"] = str(key_file)
    pagerduty["url"] = f"{catcher.url}/pagerduty"
    telegram["api_url"] = f"{catcher.url}/telegram"
    token_file = work / "webex_bot_token"
    token_file.write_text("webex-bot-token")
    webex["http_config"]["authorization"]["credentials_file"] = str(token_file)
    webex["api_url"] = f"{catcher.url}/webex"
    ping["url"] = f"{catcher.url}/ping/check-uuid"
    cfg = derive_alertmanager(load(REPO / "alertmanager.yml"), smtp="127.0.0.1:1", webhook_origin=catcher.url)
    for receiver in cfg["receivers"]:
        if receiver["name"] == "email-and-webhook":
            del receiver["email_configs"]  # nothing listens on the SMTP port; the chat integrations are the subject
            receiver.update(
                slack_configs=[slack],
                discord_configs=[discord],
                pagerduty_configs=[pagerduty],
                telegram_configs=[telegram],
                webex_configs=[webex],
            )
        if receiver["name"] == "watchdog":
            receiver["webhook_configs"] = [ping]  # docs/alerting.md, "Watchdog": the dead man's switch's ping URL
    try:
        with running_alertmanager(cfg, work) as am:
            yield am, catcher
    finally:
        catcher.stop()


def _post_duplicate_charge(am: Any, customer: str) -> None:
    am.post(
        [
            {
                "labels": {
                    "alertname": "BillingWatchDuplicateCharge",
                    "severity": "critical",
                    "detector": "duplicate_charge",
                    "customer": customer,
                    "currency": "usd",
                    "livemode": "true",
                    "job": "billingwatch",
                },
                "annotations": {
                    "summary": "A payer was charged the same amount twice within minutes.",
                    "description": f"customer {customer} has two successful charges of 120.00 USD within the "
                    "duplicate-charge window (reason same_amount).",
                    "runbook_url": "http://127.0.0.1:9847/runbook#billingwatchduplicatecharge",
                },
            }
        ]
    )


def _mentioning(bodies: list[dict[str, Any]], needle: str) -> list[dict[str, Any]]:
    return [b for b in bodies if needle in json.dumps(b)]


def test_slack_and_discord_receive_their_own_payload_shapes(chat: tuple[Any, HttpCatcher]) -> None:
    am, catcher = chat
    _post_duplicate_charge(am, "cus_chat")
    title = "Duplicate charge: 120.00 USD twice for cus_chat"

    (slack,) = wait_for(lambda: _mentioning(catcher.on("/slack"), "cus_chat"), 30, "the Slack notification")
    assert slack["channel"] == "#billing-alerts"
    (attachment,) = slack["attachments"]
    assert attachment["title"] == title
    assert attachment["color"] == "danger"  # firing
    assert "customer cus_chat has two successful charges of 120.00 USD" in attachment["text"]
    assert "Customer: https://dashboard.stripe.com/customers/cus_chat" in attachment["text"]
    assert "Runbook: http://127.0.0.1:9847/runbook#billingwatchduplicatecharge" in attachment["text"]
    assert f"Alertmanager: {am.url}/#/alerts?receiver=email-and-webhook" in attachment["text"]

    (discord,) = wait_for(lambda: _mentioning(catcher.on("/discord"), "cus_chat"), 30, "the Discord notification")
    (embed,) = discord["embeds"]
    assert embed["title"] == title
    assert isinstance(embed["color"], int)
    assert "What to do first: Open the customer in the Stripe Dashboard" in embed["description"]
    assert "Customer: https://dashboard.stripe.com/customers/cus_chat" in embed["description"]
    # The shipped webhook receiver got the same alert (the examples add to a receiver, they replace nothing).
    wait_for(
        lambda: any(a["labels"]["customer"] == "cus_chat" for p in catcher.on("/alerts") for a in p["alerts"]),
        30,
        "the webhook notification",
    )


def test_pagerduty_telegram_and_webex_examples_deliver(chat: tuple[Any, HttpCatcher]) -> None:
    am, catcher = chat
    _post_duplicate_charge(am, "cus_pager")
    title = "Duplicate charge: 120.00 USD twice for cus_pager"
    (event,) = wait_for(lambda: _mentioning(catcher.on("/pagerduty"), "cus_pager"), 30, "the PagerDuty event")
    assert event["routing_key"] == "R0UT1NGKEY0123456789abcdefabcdef"  # read from the routing_key_file
    assert event["event_action"] == "trigger"
    assert event["payload"]["summary"] == title and event["payload"]["severity"] == "critical"
    telegram = "/telegram/bot123456789:replace-with-your-bot-token/sendMessage"
    (message,) = wait_for(lambda: _mentioning(catcher.on(telegram), "cus_pager"), 30, "the Telegram message")
    assert str(message["chat_id"]) == "-1001234567890"
    assert message["text"].startswith(title + "\n") and "What to do first:" in message["text"]
    (post,) = wait_for(lambda: _mentioning(catcher.on("/webex"), "cus_pager"), 30, "the Webex message")
    assert post["roomId"] == "replace-with-the-room-id" and post["markdown"].startswith(title)


def test_watchdog_example_pings_the_dead_mans_switch(chat: tuple[Any, HttpCatcher]) -> None:
    am, catcher = chat
    am.post([{"labels": {"alertname": "BillingWatchWatchdog", "severity": "info", "detector": "watchdog"}}])
    (ping,) = wait_for(lambda: catcher.on("/ping/check-uuid"), 30, "the Watchdog's ping")
    assert [a["labels"]["alertname"] for a in ping["alerts"]] == ["BillingWatchWatchdog"]
    # Nothing else got it: not the webhook, not a chat or pager.
    others = [p for p in catcher.posts if p.path != "/ping/check-uuid"]
    assert not [p for p in others if "Watchdog" in json.dumps(p.body)]
