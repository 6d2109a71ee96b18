"""Signature verification over real HTTP: valid, rotated, stale, future, tampered, missing, malformed."""

from __future__ import annotations

import time

import orjson
import pytest

from exporter import samples
from tests.conftest import OTHER_SECRET, SECRET, make_event, sign
from tests.ingest_support import make_config, running_exporter


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "state.sqlite3", stripe={"webhook_secrets": [SECRET, OTHER_SECRET]})


def _charge_event():
    return make_event("charge.succeeded", samples.charge(amount=1500, currency="usd", customer="cus_sig"))


async def test_valid_signature_is_accepted_and_counted(config):
    async with running_exporter(config) as ex:
        assert await ex.post_event(_charge_event()) == 200
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 1
        assert ex.value("stripe_charge_amount_total", {"currency": "usd"}) == 15.0


async def test_any_configured_secret_matches_for_rotation(config):
    async with running_exporter(config) as ex:
        assert await ex.post_event(_charge_event(), secret=OTHER_SECRET) == 200
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 1


async def test_header_with_old_and_new_signature_passes(tmp_path):
    # During rotation Stripe sends one v1 per secret; only the new secret is configured here.
    config = make_config(tmp_path / "s.sqlite3", stripe={"webhook_secrets": [OTHER_SECRET]})
    body = orjson.dumps(_charge_event())
    ts = int(time.time())
    old = sign(body, SECRET, ts).split(",")[1]
    new = sign(body, OTHER_SECRET, ts).split(",")[1]
    async with running_exporter(config) as ex:
        status, _ = await ex.post_raw(body, {"Stripe-Signature": f"t={ts},{old},{new}"})
        assert status == 200


# Contract 2 (docs/CONTRACTS.md): headers that are not Stripe signatures at all, matching signatures past the
# tolerance, and well-formed fresh signatures made with no configured secret are three different outcomes.
EXPECTED_OUTCOME = {
    "stale": "stale_signature",
    "missing": "missing_signature",
    "garbled": "missing_signature",
    "no_v1": "missing_signature",
    "v0_only": "missing_signature",
    "empty": "missing_signature",
}


@pytest.mark.parametrize(
    "case",
    ["wrong_secret", "stale", "tampered", "missing", "garbled", "no_v1", "v0_only", "empty", "non_ascii"],
)
async def test_bad_signatures_are_400_and_change_no_business_metric(config, case):
    event = _charge_event()
    body = orjson.dumps(event)
    now = int(time.time())
    headers = {
        "wrong_secret": {"Stripe-Signature": sign(body, "whsec_not_ours")},
        "stale": {"Stripe-Signature": sign(body, SECRET, now - 301)},
        "tampered": {"Stripe-Signature": sign(body, SECRET)},
        "missing": {},
        "garbled": {"Stripe-Signature": "t=notanumber,v1=zz"},
        "no_v1": {"Stripe-Signature": f"t={now}"},
        "v0_only": {"Stripe-Signature": sign(body, SECRET).replace("v1=", "v0=")},
        "empty": {"Stripe-Signature": ""},
        "non_ascii": {"Stripe-Signature": f"t={now},v1=\u00e9\u00e9"},
    }[case]
    if case == "tampered":
        body = body.replace(b'"amount":1500', b'"amount":9500')
    async with running_exporter(config) as ex:
        status, data = await ex.post_raw(body, headers)
        assert status == 400
        assert "signature" in data["error"]
        expected = EXPECTED_OUTCOME.get(case, "invalid_signature")
        for outcome in ("missing_signature", "stale_signature", "invalid_signature"):
            assert ex.value("billingwatch_webhook_requests_total", {"outcome": outcome}) == (
                1 if outcome == expected else 0
            ), outcome
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "accepted"}) == 0
        assert ex.value("stripe_charges_total", {"currency": "usd"}) is None
        assert ex.value("stripe_events_total", {"type": "charge.succeeded"}) is None


async def test_future_timestamp_is_accepted_like_stripe_sdk(config):
    # Stripe only refuses timestamps older than the tolerance; clocks running ahead must not drop events.
    async with running_exporter(config) as ex:
        assert await ex.post_event(_charge_event(), timestamp=int(time.time()) + 120) == 200


async def test_tolerance_is_configurable(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", stripe={"tolerance_seconds": 30})
    async with running_exporter(config) as ex:
        assert await ex.post_event(_charge_event(), timestamp=int(time.time()) - 60) == 400
        assert await ex.post_event(_charge_event(), timestamp=int(time.time()) - 10) == 200


async def test_stale_is_told_apart_from_wrong_secret_with_several_secrets(config, caplog):
    """A receiver clock 301 s ahead: the signature matches the second secret, so it is stale, not invalid; the
    log line gives the measured age. A stale signature made with an unknown secret stays invalid_signature."""
    clock_ahead = 301
    event = _charge_event()
    body = orjson.dumps(event)
    async with running_exporter(config, clock=lambda: time.time() + clock_ahead) as ex:
        status, data = await ex.post_raw(body, {"Stripe-Signature": sign(body, OTHER_SECRET)})
        assert status == 400 and "clock" in data["error"]
        status, _ = await ex.post_raw(body, {"Stripe-Signature": sign(body, "whsec_unknown")})
        assert status == 400
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "stale_signature"}) == 1
        assert ex.value("billingwatch_webhook_requests_total", {"outcome": "invalid_signature"}) == 1
        # Within the tolerance on the skewed clock, the same secret is accepted.
        assert await ex.post_event(event, secret=OTHER_SECRET, timestamp=int(time.time()) + clock_ahead) == 200
    ages = [r.fields["age_seconds"] for r in caplog.records if getattr(r, "fields", {}).get("age_seconds")]
    assert len(ages) == 1 and clock_ahead <= ages[0] < clock_ahead + 5


async def test_every_signature_outcome_exists_at_zero_before_any_request(config):
    async with running_exporter(config) as ex:
        for outcome in ("missing_signature", "stale_signature", "invalid_signature"):
            assert ex.value("billingwatch_webhook_requests_total", {"outcome": outcome}) == 0


@pytest.mark.parametrize("tolerance", [0, -1])
def test_non_positive_tolerance_is_refused_by_config_validation(tmp_path, tolerance):
    from exporter.config import ConfigError

    with pytest.raises(ConfigError, match="tolerance_seconds"):
        make_config(tmp_path / "s.sqlite3", stripe={"tolerance_seconds": tolerance})
