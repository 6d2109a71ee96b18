"""stripe_subscription_cancellations_total through the real Ingestor: each cancellation counted once, scheduled
cancellations from previous_attributes, by Stripe mode."""

from __future__ import annotations

import time

import pytest

from exporter import samples
from exporter.churn_signals import CANCELED_NS
from exporter.ingest import Ingestor
from exporter.metrics import Metrics
from exporter.state import StateStore
from tests.conftest import make_event

NAME = "stripe_subscription_cancellations_total"


@pytest.fixture
def ingest():
    state = StateStore(":memory:")
    ingestor = Ingestor(Metrics(), state)
    yield ingestor
    state.close()


def count(ingestor: Ingestor, kind: str, livemode: str = "false") -> float | None:
    return ingestor.metrics.registry.get_sample_value(NAME, {"kind": kind, "livemode": livemode})


def send(ingestor: Ingestor, event_type: str, obj: dict, previous: dict | None = None, livemode: bool = False) -> None:
    event = make_event(event_type, obj, livemode=livemode)
    if previous is not None:
        event["data"]["previous_attributes"] = previous
    assert ingestor.ingest(event, time.time()) == "accepted"


def test_series_exist_at_zero_for_every_kind_and_mode(ingest: Ingestor) -> None:
    for kind in ("canceled", "scheduled", "ended_as_scheduled", "payment_failed"):
        for mode in ("true", "false"):
            assert count(ingest, kind, mode) == 0


def test_a_cancellation_seen_as_updated_and_deleted_counts_once(ingest: Ingestor) -> None:
    sub = samples.subscription(status="canceled")
    send(ingest, "customer.subscription.updated", sub, previous={"status": "active"})
    send(ingest, "customer.subscription.deleted", sub)
    assert count(ingest, "canceled") == 1
    other = samples.subscription(status="canceled")
    send(ingest, "customer.subscription.deleted", other)  # deleted first this time
    send(ingest, "customer.subscription.updated", other, previous={"status": "past_due"})
    assert count(ingest, "canceled") == 2
    assert ingest.state.get(CANCELED_NS, other["id"]) is not None


def test_a_redelivered_event_is_not_counted_again(ingest: Ingestor) -> None:
    event = make_event("customer.subscription.deleted", samples.subscription(status="canceled"))
    assert ingest.ingest(event, time.time()) == "accepted"
    assert ingest.ingest(event, time.time()) == "duplicate"
    assert count(ingest, "canceled") == 1


def test_scheduled_cancellations_come_from_previous_attributes(ingest: Ingestor) -> None:
    sub = samples.subscription(livemode=True)
    sub["cancel_at_period_end"] = True
    send(ingest, "customer.subscription.updated", sub, previous={"cancel_at_period_end": False}, livemode=True)
    # Another field changing on a subscription already scheduled to cancel is not a new decision.
    send(ingest, "customer.subscription.updated", sub, previous={"metadata": {}}, livemode=True)
    later = samples.subscription(livemode=True)
    later["cancel_at"] = int(time.time()) + 86400
    send(ingest, "customer.subscription.updated", later, previous={"cancel_at": None}, livemode=True)
    assert count(ingest, "scheduled", "true") == 2
    assert count(ingest, "scheduled", "false") == 0
    assert count(ingest, "canceled", "true") == 0


def test_a_scheduled_cancellation_is_one_decision_when_it_is_made_and_ends(ingest: Ingestor) -> None:
    sub = samples.subscription(livemode=True)
    sub["cancel_at_period_end"] = True
    send(ingest, "customer.subscription.updated", sub, previous={"cancel_at_period_end": False}, livemode=True)
    ended = {**sub, "status": "canceled"}  # the period ends: Stripe deletes it, still marked cancel_at_period_end
    send(ingest, "customer.subscription.deleted", ended, livemode=True)
    assert count(ingest, "scheduled", "true") == 1
    assert count(ingest, "ended_as_scheduled", "true") == 1
    assert count(ingest, "canceled", "true") == 0


def test_a_subscription_ended_unpaid_is_not_a_decision_to_leave(ingest: Ingestor) -> None:
    # Smart Retries gave up on a renewal (Stripe sets cancellation_details.reason), and a first payment that never
    # succeeded (incomplete_expired): involuntary, counted apart from the decisions the churn rules read.
    dunned = samples.subscription(status="canceled")
    dunned["cancellation_details"] = {"comment": None, "feedback": None, "reason": "payment_failed"}
    send(ingest, "customer.subscription.deleted", dunned)
    send(ingest, "customer.subscription.updated", dunned, previous={"status": "past_due"})
    send(ingest, "customer.subscription.deleted", samples.subscription(status="incomplete_expired"))
    asked = samples.subscription(status="canceled")
    asked["cancellation_details"] = {"comment": None, "feedback": "too_expensive", "reason": "cancellation_requested"}
    send(ingest, "customer.subscription.deleted", asked)
    assert count(ingest, "payment_failed") == 2
    assert count(ingest, "canceled") == 1


def test_updates_that_are_not_cancellations_count_nothing(ingest: Ingestor) -> None:
    sub = samples.subscription(status="past_due")
    send(ingest, "customer.subscription.updated", sub, previous={"status": "active"})
    resumed = samples.subscription()
    send(ingest, "customer.subscription.updated", resumed, previous={"cancel_at_period_end": True})
    send(ingest, "customer.subscription.updated", {"object": "subscription"}, previous="junk")  # type: ignore[arg-type]
    send(ingest, "customer.subscription.updated", samples.subscription(status="canceled"), previous=None)
    assert count(ingest, "canceled") == 0
    assert count(ingest, "scheduled") == 0
    registry = ingest.metrics.registry
    errors = registry.get_sample_value("billingwatch_event_processing_errors_total", {"stage": "metrics"})
    assert errors is None
