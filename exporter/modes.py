"""Stripe's test and live modes, as metric and anomaly labels.

Every business series carries `livemode` so that live and test traffic never mix (docs/CONTRACTS.md). Stripe
sets `livemode` on every event; an event without a boolean one cannot prove it is live money, so business metrics
count it as test ("false") and it can never move a live figure or page anyone.
"""

from __future__ import annotations

from typing import Any


def mode_label(livemode: Any) -> str:
    """"true" for live-mode events only; "false" for test mode and anything that is not a boolean."""
    return "true" if livemode is True else "false"


def anomaly_mode_label(livemode: bool | None) -> str:
    """The `livemode` label of an anomaly: "true" / "false", "" when the detector does not know."""
    if livemode is True:
        return "true"
    if livemode is False:
        return "false"
    return ""
