"""Typed view of the `poller:` section of the config (defaults in exporter/defaults.yml; the poller itself is
exporter/poller.py) and the Events API list filters its `types` map to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_TYPES = 20  # the Events API's `types` filter takes at most 20
MAX_GROUPS = 10  # list calls per poll (x2): a sanity bound, far above the types BillingWatch reads
# An event type: lower-case dot-separated words; a wildcard replaces the last word (or the whole type) by `*`.
_TYPE_RE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")


@dataclass(frozen=True)
class PollerConfig:
    interval_seconds: float
    settle_seconds: float
    lookback_seconds: float
    ingest_fetched: bool
    max_events_per_poll: int
    api_base: str
    types: list[str]

    def validate(self) -> list[str]:
        errors = []
        if self.interval_seconds < 10:
            errors.append("poller.interval_seconds: must be at least 10 (Stripe rate-limits the API)")
        if self.settle_seconds < 0:
            errors.append("poller.settle_seconds: must not be negative")
        if self.lookback_seconds < 0 or self.lookback_seconds > 30 * 86400:
            errors.append("poller.lookback_seconds: must be between 0 and 2592000 (Stripe keeps 30 days)")
        if self.max_events_per_poll < 100:
            errors.append("poller.max_events_per_poll: must be at least 100")
        seen: set[str] = set()
        for i, name in enumerate(self.types):
            if not isinstance(name, str) or not valid_type(name):
                errors.append(
                    f"poller.types[{i}]: {name!r} is not an event type or a wildcard (`charge.succeeded`, "
                    "`charge.*`, `*`: `*` only as the whole last part)"
                )
            elif name in seen:
                errors.append(f"poller.types[{i}]: {name!r} is listed twice")
            else:
                seen.add(name)
        if not errors and len(type_groups(self.types)) > MAX_GROUPS:
            errors.append(
                f"poller.types: at most {MAX_GROUPS} list calls per poll ({MAX_TYPES} exact types per call, one "
                "call per wildcard)"
            )
        return errors


def valid_type(name: str) -> bool:
    if name == "*":
        return True
    if name.endswith(".*"):
        name = name[:-2]
    return _TYPE_RE.fullmatch(name) is not None


def type_groups(types: list[str]) -> list[dict[str, Any]]:
    """The Events API filters covering `types`: exact names 20 per `types` call, each wildcard its own `type`."""
    if not types or "*" in types:
        return [{}]  # everything: no filter
    wildcards = [t for t in types if t.endswith(".*")]
    exact = [t for t in types if not t.endswith(".*") and not any(t.startswith(w[:-1]) for w in wildcards)]
    groups: list[dict[str, Any]] = [{"type": w} for w in wildcards]
    for i in range(0, len(exact), MAX_TYPES):
        chunk = exact[i : i + MAX_TYPES]
        groups.append({"type": chunk[0]} if len(chunk) == 1 else {"types": chunk})
    return groups
