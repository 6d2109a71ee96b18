"""duplicate_charge: distinct successful charges of one payer, same amount and currency, within the window."""

from __future__ import annotations

import copy
import logging

import pytest

from exporter import samples
from tests.detectors_support import T0, Harness, anomaly_labels


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path / "state.sqlite3")


def charge(**kw):
    kw.setdefault("customer", "cus_Q4kd81LmZx2a")
    kw.setdefault("amount", 4900)
    kw.setdefault("currency", "usd")
    return samples.charge(**kw)


def test_two_charges_same_customer_amount_currency_within_window_alert(h):
    first = charge(created=T0)
    second = charge(created=T0 + 42)
    assert h.send("charge.succeeded", first, received=T0 + 1) == "accepted"
    assert h.total("duplicate_charge") == 0
    h.send("charge.succeeded", second, received=T0 + 43)
    labels = anomaly_labels("duplicate_charge", "critical", "same_amount", customer="cus_Q4kd81LmZx2a", currency="usd")
    assert h.value("billingwatch_anomaly", labels) == 1
    assert h.value("billingwatch_anomaly_amount", labels) == 49.0
    assert h.total("duplicate_charge") == 1
    (found,) = h.anomalies("duplicate_charge")
    assert found["details"]["charge_ids"] == [first["id"], second["id"]]
    assert found["details"]["seconds_apart"] == 42
    assert found["detected_at"] == T0 + 43


def test_redelivered_event_is_never_a_duplicate(h):
    event = samples.event("charge.succeeded", charge(created=T0), created=T0)
    assert h.send_event(event, received=T0) == "accepted"
    assert h.send_event(copy.deepcopy(event), received=T0 + 5) == "duplicate"
    assert h.total("duplicate_charge") == 0


def test_same_charge_under_another_event_is_one_charge(h):
    # An authorised charge reported succeeded, then captured (a new event id, the same charge id): one charge.
    authorised = charge(created=T0)
    h.send("charge.succeeded", authorised, received=T0)
    h.send("charge.captured", copy.deepcopy(authorised), created=T0 + 120, received=T0 + 120)
    # And a replay through Stripe's "resend" with a fresh event id for the same charge.
    h.send("charge.succeeded", copy.deepcopy(authorised), received=T0 + 130)
    assert h.total("duplicate_charge") == 0


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 4901},
        {"currency": "eur"},
        {"customer": "cus_OtherCustomer01"},
        {"created": T0 + 301},
        {"status": "failed", "failure_code": "card_declined"},
    ],
    ids=["other_amount", "other_currency", "other_customer", "outside_window", "second_failed"],
)
def test_not_a_duplicate(h, change):
    h.send("charge.succeeded", charge(created=T0), received=T0)
    second = charge(**{"created": T0 + 30, **change})
    event_type = "charge.failed" if change.get("status") == "failed" else "charge.succeeded"
    h.send(event_type, second, received=T0 + 400)
    assert h.total("duplicate_charge") == 0
    assert h.anomalies() == []


def test_window_is_measured_on_created_times_not_arrival(h):
    # Exactly at the window edge counts; arrival 9 minutes apart does not matter.
    h.send("charge.succeeded", charge(created=T0), received=T0 + 2)
    h.send("charge.succeeded", charge(created=T0 + 300), received=T0 + 540)
    assert h.total("duplicate_charge") == 1


def test_out_of_order_delivery_still_detects_once(h):
    later, earlier = charge(created=T0 + 90), charge(created=T0)
    h.send("charge.succeeded", later, received=T0 + 91)
    h.send("charge.succeeded", earlier, received=T0 + 95)
    assert h.total("duplicate_charge") == 1
    (found,) = h.anomalies()
    assert found["details"]["charge_ids"] == [earlier["id"], later["id"]]  # ordered by Stripe creation time


def test_third_charge_is_another_anomaly_on_the_same_series(h):
    for i in range(3):
        h.send("charge.succeeded", charge(created=T0 + 20 * i), received=T0 + 20 * i)
    assert h.total("duplicate_charge") == 2
    assert len(h.anomalies()) == 2
    assert h.board.active_count == 1


def test_guest_charges_match_on_card_fingerprint_which_is_never_exposed(h, caplog):
    # Live mode: a card is a payer there (test mode knows payers by customer id only, see test_detectors_modes).
    fingerprint = "Gx7pQ2mN9vK4tR1s"
    caplog.set_level(logging.WARNING, logger="billingwatch")
    live = {"customer": None, "livemode": True}
    h.send("charge.succeeded", charge(fingerprint=fingerprint, created=T0, **live), received=T0)
    h.send("charge.succeeded", charge(fingerprint="Zz0OtherCard0000", created=T0 + 5, **live), received=T0 + 5)
    assert h.total("duplicate_charge") == 0
    h.send("charge.succeeded", charge(fingerprint=fingerprint, created=T0 + 10, **live), received=T0 + 10)
    assert h.total("duplicate_charge") == 1
    labels = anomaly_labels("duplicate_charge", "critical", "same_amount", currency="usd", livemode="true")
    assert h.value("billingwatch_anomaly", labels) == 1
    (found,) = h.anomalies()
    assert found["details"]["payer"].startswith("card:")
    assert fingerprint not in repr(found)
    records = [r for r in caplog.records if r.getMessage() == "anomaly detected"]
    assert len(records) == 1
    assert fingerprint not in repr(records[0].__dict__)
    assert records[0].fields["detector"] == "duplicate_charge"


def test_zero_decimal_currency_amount_in_major_units(h):
    h.send("charge.succeeded", charge(amount=5000, currency="jpy", created=T0), received=T0)
    h.send("charge.succeeded", charge(amount=5000, currency="jpy", created=T0 + 3), received=T0 + 3)
    labels = anomaly_labels("duplicate_charge", "critical", "same_amount", customer="cus_Q4kd81LmZx2a", currency="jpy")
    assert h.value("billingwatch_anomaly_amount", labels) == 5000.0


def test_three_decimal_currency_amount_in_major_units(h):
    h.send("charge.succeeded", charge(amount=12_345, currency="kwd", created=T0), received=T0)
    h.send("charge.succeeded", charge(amount=12_345, currency="kwd", created=T0 + 3), received=T0 + 3)
    labels = anomaly_labels("duplicate_charge", "critical", "same_amount", customer="cus_Q4kd81LmZx2a", currency="kwd")
    assert h.value("billingwatch_anomaly_amount", labels) == pytest.approx(12.345)


def test_window_state_survives_a_restart(h):
    h.send("charge.succeeded", charge(created=T0), received=T0)
    h2 = h.restart()
    h2.send("charge.succeeded", charge(created=T0 + 60), received=T0 + 60)
    assert h2.total("duplicate_charge") == 1
    # The same charge id after a restart is still the same charge.
    h3 = h2.restart()
    (found,) = h3.anomalies()
    again = charge(created=T0 + 60, charge_id=found["details"]["charge_ids"][1])
    h3.send("charge.succeeded", again, received=T0 + 70)
    assert h3.total("duplicate_charge") == 0  # counters start at 0 in a new process: nothing new was found
    assert len(h3.anomalies()) == 1


def test_memory_is_pruned_after_window_plus_late_arrival(h):
    det = h.detector("duplicate_charge")
    for i in range(50):
        h.send("charge.succeeded", charge(customer=f"cus_prune{i:04d}", created=T0 + i), received=T0 + i)
    assert det.remembered == 50
    h.tick(T0 + 50)  # the service flushes every second
    h.tick(T0 + 300 + 600 + 100)
    assert det.remembered == 0
    # Forgotten on disk too: a restart brings nothing back.
    h.tick(T0 + 300 + 600 + 200)
    h2 = h.restart()
    assert h2.detector("duplicate_charge").remembered == 0


def test_window_is_configurable(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"duplicate_charge": {"window_seconds": 30}})
    h.send("charge.succeeded", charge(created=T0), received=T0)
    h.send("charge.succeeded", charge(created=T0 + 31), received=T0 + 31)
    assert h.total("duplicate_charge") == 0
    h.send("charge.succeeded", charge(created=T0 + 50), received=T0 + 50)
    assert h.total("duplicate_charge") == 1


def test_disabled_detector_finds_nothing(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"duplicate_charge": {"enabled": False}})
    h.send("charge.succeeded", charge(created=T0), received=T0)
    h.send("charge.succeeded", charge(created=T0 + 1), received=T0 + 1)
    assert "duplicate_charge" not in h.service.detector_set.by_name
    assert h.anomalies() == []


def test_memory_is_capped_oldest_first_and_counted(tmp_path):
    h = Harness(tmp_path / "s.sqlite3", detectors={"duplicate_charge": {"max_remembered_charges": 100}})
    det = h.detector("duplicate_charge")
    for i in range(250):  # 250 charges over 25 s: 10 s buckets of 100 each
        h.send("charge.succeeded", charge(customer=f"cus_cap{i:04d}", created=T0 + i // 10), received=T0 + i // 10)
    h.tick(T0 + 26)
    assert det.remembered <= 100
    assert h.value("billingwatch_duplicate_charge_evictions_total") == 250 - det.remembered
    # The newest charges are still matched.
    h.send("charge.succeeded", charge(customer="cus_cap0249", created=T0 + 30), received=T0 + 30)
    assert h.total("duplicate_charge") == 1
    # The evicted ones are not.
    h.send("charge.succeeded", charge(customer="cus_cap0000", created=T0 + 30), received=T0 + 30)
    assert h.total("duplicate_charge") == 1


def intent(ch: dict, *, latest_charge: bool = True) -> dict:
    """The PaymentIntent of a succeeded charge, in the current shape or (latest_charge=False) the pre-2022 one."""
    pi = {"id": ch["payment_intent"], "object": "payment_intent", "amount": ch["amount"],
          "amount_received": ch["amount"], "currency": ch["currency"], "customer": ch["customer"],
          "created": ch["created"] - 600, "status": "succeeded", "livemode": False}
    if latest_charge:
        pi["latest_charge"] = ch["id"]
    else:
        pi["charges"] = {"object": "list", "data": [ch], "has_more": False}
    return pi


@pytest.mark.parametrize("latest_charge", [True, False])
def test_payment_intent_only_endpoint_still_detects_duplicates(h, latest_charge):
    first, second = charge(created=T0), charge(created=T0 + 30)
    h.send("payment_intent.succeeded", intent(first, latest_charge=latest_charge), created=T0, received=T0)
    h.send("payment_intent.succeeded", intent(second, latest_charge=latest_charge), created=T0 + 30,
           received=T0 + 31)
    assert h.total("duplicate_charge") == 1
    (found,) = h.anomalies("duplicate_charge")
    assert found["details"]["charge_ids"] == [first["id"], second["id"]]


def test_payment_seen_as_charge_and_payment_intent_is_one_charge(h):
    # One payment per customer, each delivered as charge.succeeded and payment_intent.succeeded (either order).
    a, b = charge(created=T0), charge(created=T0, customer="cus_other0000001")
    h.send("payment_intent.succeeded", intent(a), created=T0, received=T0)
    h.send("charge.succeeded", a, created=T0, received=T0 + 1)
    h.send("charge.succeeded", b, created=T0, received=T0 + 2)
    h.send("payment_intent.succeeded", intent(b), created=T0, received=T0 + 3)
    assert h.total("duplicate_charge") == 0
    # A second payment of the same amount by the first customer, seen both ways, is one duplicate.
    again = charge(created=T0 + 60)
    h.send("charge.succeeded", again, created=T0 + 60, received=T0 + 61)
    h.send("payment_intent.succeeded", intent(again), created=T0 + 60, received=T0 + 62)
    assert h.total("duplicate_charge") == 1


def test_payment_intent_without_a_charge_id_is_ignored(h):
    for i in range(2):
        pi = intent(charge(created=T0 + i))
        del pi["latest_charge"]
        h.send("payment_intent.succeeded", pi, created=T0 + i, received=T0 + i)
    assert h.total("duplicate_charge") == 0
