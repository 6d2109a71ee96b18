"""What a metric accepts from a validly signed event: values no real Stripe object can have are left out of the
metrics (and counted in billingwatch_values_rejected_total{field}); the event itself is still counted.

A signature proves who sent an event, not that its numbers are sane: a test-mode fixture, a bug on the sending
side or a leaked secret can deliver an amount of 2^63-1 or a `created` of 1e18. A counter increased by such a value
is ruined until the exporter restarts (rates and sums are meaningless, float precision is gone for every later
increment), and a `created` far in the future pins stripe_last_event_created_timestamp_seconds for ever.
"""

from __future__ import annotations

# Stripe documents amounts of up to eight digits in the currency's minor unit (99,999,999: USD 999,999.99) for
# charges, payment intents and invoices. Larger values cannot come from a real payment.
MAX_AMOUNT_MINOR_UNITS = 99_999_999
# Stripe's API went live in 2011; nothing it sends was created before 2010-01-01.
MIN_CREATED = 1_262_304_000
# Clocks differ; a day ahead of ours is already absurd.
MAX_CREATED_AHEAD_SECONDS = 86_400.0
# Stripe retries a delivery for up to three days and the Dashboard resends events of the last 30 days.
MAX_DELIVERY_DELAY_SECONDS = 31 * 86_400.0

# Delivery delay buckets from 1 s to 6 h: Stripe delivers in seconds when healthy and retries with back-off
# for up to three days when not; the 10-minute lag threshold sits between two buckets (300 and 600 / 900).
DELAY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
# (Here, not in exporter/metrics.py, because the rule generator checks the lag thresholds against these bounds
# and must not import the runtime metrics.)

FIELDS = ("amount", "created", "delivery_delay")


def sane_amount(amount: int) -> bool:
    return 0 <= amount <= MAX_AMOUNT_MINOR_UNITS


def sane_created(created: float, received: float) -> bool:
    return MIN_CREATED <= created <= received + MAX_CREATED_AHEAD_SECONDS
