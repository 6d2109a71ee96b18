"""Churn signals: subscription cancellations, counted once each, for the churn_spike rules.

`stripe_subscription_cancellations_total{kind, livemode}`:
- kind="canceled": a subscription ended. Stripe sends `customer.subscription.deleted` when it does, and often a
  `customer.subscription.updated` with `status` moving to canceled for the same cancellation; both are distinct
  events (deduplication by event id cannot merge them), so the subscription id is remembered for a week and the
  cancellation counts once whichever arrives first.
- kind="scheduled": a cancellation was scheduled (`cancel_at_period_end` turning true, or `cancel_at` being set,
  per the event's `previous_attributes`): churn announced before the period ends. Undoing and scheduling again
  counts again: each is a customer deciding to leave.
- kind="ended_as_scheduled": a subscription ended as it was scheduled to (it still carries `cancel_at_period_end`
  or `cancel_at`): the decision was counted as `scheduled` when it was made. Kept apart so that the churn rules,
  which read canceled + scheduled, do not count one decision twice; and because scheduled ends all fall on the
  billing anchor (a renewal-day business ends dozens of subscriptions that morning, decided over a month).
- kind="payment_failed": a subscription ended because it was not paid, not because anyone decided to leave:
  Stripe's `cancellation_details.reason` is `payment_failed` (the retries of a renewal gave up) or
  `payment_disputed`, or the status is `incomplete_expired` (the first payment never succeeded: never a customer).
  Kept apart because this involuntary churn follows renewal failures by days: a renewal-day business loses a
  batch of subscriptions a few days after every anchor day, which a weekly baseline cannot know, and the failed
  renewals themselves are charge_failure_spike's business (off-session scope).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from exporter.metrics import Metrics, budgeted
from exporter.state import StateStore
from exporter.stripe_shapes import get_str

CANCELED_NS = "churn_canceled"
# Stripe sends the deleted and the updated event of one cancellation within seconds and retries for 3 days.
CANCELED_RETENTION_SECONDS = 7 * 86400
KINDS = ("canceled", "scheduled", "ended_as_scheduled", "payment_failed")
# cancellation_details.reason of a subscription that ended unpaid (Stripe's values: cancellation_requested,
# payment_disputed, payment_failed).
UNPAID_REASONS = ("payment_failed", "payment_disputed")


def _mode(obj: dict[str, Any]) -> str:
    live = obj.get("livemode")
    return "true" if live is True else "false" if live is False else ""


def _ended_kind(obj: dict[str, Any]) -> str:
    details = obj.get("cancellation_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if reason in UNPAID_REASONS or obj.get("status") == "incomplete_expired":
        return "payment_failed"
    if obj.get("cancel_at_period_end") is True or obj.get("cancel_at") is not None:
        return "ended_as_scheduled"
    return "canceled"


class ChurnSignals:
    def __init__(self, metrics: Metrics, state: StateStore):
        self.state = state
        counter = budgeted(
            Counter,
            "stripe_subscription_cancellations",
            "Subscription cancellations by kind (canceled: ended, counted once; scheduled: cancel_at_period_end "
            "or cancel_at newly set; ended_as_scheduled: ended as scheduled, already counted as scheduled; "
            "payment_failed: ended unpaid) and "
            "Stripe mode.",
            ["kind", "livemode"],
            registry=metrics.registry,
        )
        for kind in KINDS:
            for mode in ("true", "false"):
                counter.labels(kind, mode)
        self._count = counter.labels

    def apply(self, event_type: str, obj: dict[str, Any], previous: Any) -> None:
        if event_type not in ("customer.subscription.deleted", "customer.subscription.updated"):
            return
        sub_id = get_str(obj, "id")
        if sub_id is None:
            return
        previous = previous if isinstance(previous, dict) else {}
        if event_type == "customer.subscription.deleted" or (
            obj.get("status") == "canceled" and "status" in previous and previous["status"] != "canceled"
        ):
            if self.state.get(CANCELED_NS, sub_id) is None:
                self.state.put(CANCELED_NS, sub_id, 1)
                self._count(_ended_kind(obj), _mode(obj)).inc()
            return
        scheduled = (obj.get("cancel_at_period_end") is True and previous.get("cancel_at_period_end") is False) or (
            obj.get("cancel_at") is not None and "cancel_at" in previous and previous["cancel_at"] is None
        )
        if scheduled:
            self._count("scheduled", _mode(obj)).inc()
