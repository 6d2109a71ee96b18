"""fetch-events against a fake Stripe API with the real stripe SDK; replay and simulate into a running exporter.

The CLI runs in a subprocess (as a user runs it); the exporter is the real Service on loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from exporter import samples
from tests.conftest import REPO, SECRET, make_event
from tests.fake_stripe_api import API_KEY, FakeStripeAPI
from tests.ingest_support import make_config, running_exporter


def _env(api_base: str | None = None, key: str = API_KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env["STRIPE_API_KEY"] = key
    if api_base:
        env["STRIPE_API_BASE"] = api_base
    return env


async def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args, cwd=REPO, env=env or dict(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _events(n: int, *, start: int, step: int = 600) -> list[dict[str, Any]]:
    kinds = ["charge.succeeded", "invoice.paid", "customer.subscription.updated", "invoice.finalized"]
    return [
        make_event(kinds[i % len(kinds)], {"id": f"obj_{i}", "object": "x"}, created=start + i * step,
                   event_id=f"evt_{i:05d}")
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def stripe_api() -> Any:
    # 40 days of events, one every 4 hours: 240 events, of which the last 30 days are 180. The first of those is
    # 30 minutes inside the 30-day boundary, so a test running a little later does not move it.
    now = int(time.time())
    with FakeStripeAPI(_events(240, start=now - 40 * 86400 + 1800, step=4 * 3600)) as api:
        api.now = now  # type: ignore[attr-defined]
        yield api


async def test_fetch_events_pages_newest_first_through_the_sdk(stripe_api: FakeStripeAPI) -> None:
    code, out, err = await _cli("fetch-events", "--since", "30d", env=_env(stripe_api.url))
    assert code == 0, err
    ids = [json.loads(line)["id"] for line in out.splitlines()]
    expected = [e["id"] for e in stripe_api.events if e["created"] >= stripe_api.now - 30 * 86400]  # type: ignore[attr-defined]
    assert len(expected) == 180
    assert ids == expected  # all of the last 30 days, newest first, each once
    pages = [r for r in stripe_api.requests if r["path"] == "/v1/events"]
    assert len(pages) == 2  # 100 + the rest
    first = dict(pages[0]["params"])
    assert first["limit"] == "100" and abs(int(first["created[gte]"]) - (stripe_api.now - 30 * 86400)) < 600  # type: ignore[attr-defined]
    assert dict(pages[1]["params"])["starting_after"] == ids[99]  # the SDK's auto-paging cursor
    assert "fetch-events:" in err and "events written" in err


async def test_fetch_events_filters_by_type(stripe_api: FakeStripeAPI) -> None:
    code, out, err = await _cli("fetch-events", "--since", "30d", "--type", "invoice.*", env=_env(stripe_api.url))
    assert code == 0, err
    types = {json.loads(line)["type"] for line in out.splitlines()}
    assert types == {"invoice.paid", "invoice.finalized"}
    code, out, _ = await _cli(
        "fetch-events", "--since", "30d", "--type", "invoice.paid", "--type", "charge.succeeded",
        env=_env(stripe_api.url),
    )  # fmt: skip
    assert {json.loads(line)["type"] for line in out.splitlines()} == {"invoice.paid", "charge.succeeded"}


async def test_fetch_events_resumes_after_a_failure(stripe_api: FakeStripeAPI, tmp_path: Path) -> None:
    output = tmp_path / "events.jsonl"
    expected = [e["id"] for e in stripe_api.events if e["created"] >= stripe_api.now - 30 * 86400]  # type: ignore[attr-defined]
    # The second page fails with a 400 (not retried by the SDK): the fetch stops after the first 100 events...
    stripe_api.fail_next = [None, (400, "invalid_request_error")]
    code, _, err = await _cli("fetch-events", "--since", "30d", "--output", str(output), env=_env(stripe_api.url))
    assert code == 1 and "Stripe API error" in err
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == expected[:100]
    # ... and the process died while writing the next line.
    with output.open("a") as fh:
        fh.write('{"id": "evt_torn", "obj')
    stripe_api.requests.clear()
    code, _, err = await _cli(
        "fetch-events", "--since", "30d", "--output", str(output), "--resume", env=_env(stripe_api.url)
    )
    assert code == 0, err
    assert f"resuming after {expected[99]}" in err
    assert dict(stripe_api.requests[0]["params"])["starting_after"] == expected[99]
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == expected


async def test_fetch_events_refuses_without_or_with_a_wrong_key(stripe_api: FakeStripeAPI) -> None:
    env = _env(stripe_api.url)
    del env["STRIPE_API_KEY"]
    code, _, err = await _cli("fetch-events", env=env)
    assert code == 2 and "STRIPE_API_KEY" in err
    code, _, err = await _cli("fetch-events", env=_env(stripe_api.url, key="rk_test_wrong"))
    assert code == 1 and "refused the API key" in err and "rk_test_wrong" not in err


def _history(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Ten charges a second apart, two of them delivered twice."""
    now = int(time.time())
    events = []
    for i in range(10):
        ch = samples.charge(amount=1000 + i, customer=f"cus_{i}", created=now - 100 + i, charge_id=f"ch_replay_{i}")
        events.append(samples.event("charge.succeeded", ch, created=now - 100 + i, event_id=f"evt_replay_{i}"))
    lines = [{"received": now - 100 + i + 0.2, "event": e} for i, e in enumerate(events)]
    lines += [{"received": now - 90.5, "event": events[3]}, {"received": now - 90.4, "event": events[7]}]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path, events


async def test_replay_resigns_and_delivers_in_order_with_dedupe(tmp_path: Path) -> None:
    path, _ = _history(tmp_path)
    async with running_exporter(make_config(tmp_path / "state.sqlite3")) as exp:
        code, _, err = await _cli("replay", str(path), "--url", exp.webhook_url, "--secret", SECRET, "--max")
        assert code == 0, err
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 10
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == 2
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "invalid_signature"}) == 0
        assert exp.value("stripe_charges_total", {"currency": "usd"}) == 10
        # Replaying the same file again changes no business metric.
        code, _, err = await _cli("replay", str(path), "--url", exp.webhook_url, "--secret", SECRET, "--max")
        assert code == 0, err
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == 14
        assert exp.value("stripe_charges_total", {"currency": "usd"}) == 10


async def test_replay_keeps_recorded_gaps_at_the_given_speed(tmp_path: Path) -> None:
    path, _ = _history(tmp_path)  # spans 9.8 s
    async with running_exporter(make_config(tmp_path / "state.sqlite3")) as exp:
        t0 = time.monotonic()
        code, _, err = await _cli("replay", str(path), "--url", exp.webhook_url, "--secret", SECRET, "--speed", "5")
        elapsed = time.monotonic() - t0
        assert code == 0, err
        assert 1.9 <= elapsed < 8  # 9.8 s / 5, plus interpreter start-up
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 10
        # A wrong secret is refused by the exporter and reported as a failure.
        code, _, err = await _cli("replay", str(path), "--url", exp.webhook_url, "--secret", "whsec_wrong", "--max")
        assert code == 1 and "400:12" in err


async def test_replay_rebase_moves_old_events_to_now(tmp_path: Path) -> None:
    old = int(time.time()) - 2 * 86400
    path = tmp_path / "old.jsonl"
    path.write_text(
        "".join(
            json.dumps(samples.event("charge.succeeded", samples.charge(created=old + i), created=old + i)) + "\n"
            for i in range(5)
        )
    )
    async with running_exporter(make_config(tmp_path / "state.sqlite3")) as exp:
        code, _, err = await _cli(
            "replay", str(path), "--url", exp.webhook_url, "--secret", SECRET, "--max", "--rebase"
        )
        assert code == 0, err
        # Rebased: the newest event was "created" just now, so every delay is small.
        assert exp.value("stripe_event_delivery_delay_seconds_bucket", {"le": "60.0"}) == 5
    async with running_exporter(make_config(tmp_path / "state2.sqlite3")) as exp:
        code, _, err = await _cli("replay", str(path), "--url", exp.webhook_url, "--secret", SECRET, "--max")
        assert code == 0, err
        # As recorded: two days old, beyond the largest bucket.
        assert exp.value("stripe_event_delivery_delay_seconds_bucket", {"le": "21600.0"}) == 0
        assert exp.value("stripe_event_delivery_delay_seconds_count") == 5


async def test_simulate_sends_realistic_signed_traffic_with_live_anomalies(tmp_path: Path) -> None:
    async with running_exporter(make_config(tmp_path / "state.sqlite3")) as exp:
        code, _, err = await _cli(
            "simulate", "--url", exp.webhook_url, "--secret", SECRET, "--rate", "40", "--duration", "6s",
            "--anomaly", "duplicate_charge", "--anomaly", "negative_invoice", "--seed", "3",
        )  # fmt: skip
        assert code == 0, err
        # Volume follows the time of day; what simulate says it sent is what the exporter took.
        planned = int(re.search(r"simulate: (\d+) deliveries", err).group(1))  # type: ignore[union-attr]
        assert planned > 60
        accepted = exp.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) or 0
        duplicate = exp.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) or 0
        assert accepted + duplicate == planned and accepted > 0.9 * planned
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "invalid_signature"}) == 0
        assert exp.value("stripe_events_total", {"type": "invoice.paid"}) or 0 > 0
        dup_customer = re.search(r"anomaly duplicate_charge .* (cus_dupcharge\w+)", err).group(1)  # type: ignore[union-attr]
        neg_customer = re.search(r"anomaly negative_invoice .* (cus_negative\w+)", err).group(1)  # type: ignore[union-attr]
        found = {
            (s.labels["detector"], s.labels["customer"])
            for metric in exp.service.metrics.registry.collect()
            if metric.name == "billingwatch_anomaly"
            for s in metric.samples
            if s.value == 1
        }
        assert ("duplicate_charge", dup_customer) in found
        assert ("negative_invoice", neg_customer) in found
        assert "simulate: done." in err and "by type:" in err


async def test_replay_explains_a_wrong_secret(tmp_path: Path) -> None:
    path, _ = _history(tmp_path)
    async with running_exporter(make_config(tmp_path / "state.sqlite3")) as exp:
        code, _, err = await _cli("replay", str(path), "--url", exp.webhook_url, "--secret", "whsec_wrong", "--max")
    assert code == 1
    assert "answers: invalid_signature 12" in err
    assert "hint: every delivery was refused as invalid_signature" in err


DEFAULT_SIGINT_THEN_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


async def test_replay_defaults_to_a_pace_that_ends_within_ten_minutes_and_ctrl_c_is_one_line(tmp_path: Path) -> None:
    now = int(time.time())
    path = tmp_path / "two-days.jsonl"
    path.write_text("".join(
        json.dumps({"received": now - 2 * 86400 + i * 43200, "event": samples.event(
            "charge.succeeded", samples.charge(created=now - 2 * 86400 + i * 43200), event_id=f"evt_pace_{i}")}) + "\n"
        for i in range(5)  # one event every 12 hours: two days in all
    ))  # fmt: skip
    # Started with SIGINT at its default: a suite run as a background job of a script has SIGINT ignored, a child
    # inherits that, and an ignored Ctrl-C is respected (and a shell's `trap - INT` cannot undo it).
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DEFAULT_SIGINT_THEN_EXEC, "-m", "exporter", "replay", str(path),
        "--url", "http://127.0.0.1:9/webhooks/stripe", "--secret", SECRET, cwd=REPO, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    first = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    assert "5 events spanning 172800 s" in first and "at 288x (about 600 s)" in first, first
    proc.send_signal(signal.SIGINT)
    rest = (await asyncio.wait_for(proc.stderr.read(), 60)).decode()
    code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 130 and "billingwatch replay: interrupted" in rest and "Traceback" not in rest, (code, rest)


async def test_simulate_twice_sends_new_events_not_redeliveries_of_the_first_run(tmp_path: Path) -> None:
    async with running_exporter(make_config(tmp_path / "state.sqlite3")) as exp:
        planned_redeliveries = 0
        for _ in range(2):
            code, _, err = await _cli(
                "simulate", "--url", exp.webhook_url, "--secret", SECRET, "--rate", "30", "--duration", "3s"
            )
            assert code == 0, err
            planned_redeliveries += int(re.search(r"and (\d+) planned redeliveries", err).group(1))  # type: ignore[union-attr]
            assert "answers: accepted" in err
        # Every duplicate is one the generator planned: the second run reused no id of the first ...
        assert exp.value("billingwatch_webhook_requests_total", {"outcome": "duplicate"}) == planned_redeliveries
        # ... and no customer and amount either, so nothing looks like a double charge.
        assert exp.value("billingwatch_anomalies_total", {"detector": "duplicate_charge"}) == 0
