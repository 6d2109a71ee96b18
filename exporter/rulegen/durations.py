"""Prometheus duration strings ("90s", "1h30m", "7d") to seconds and back."""

from __future__ import annotations

import re

# Prometheus' own units; "y" is 365 days and "w" 7 days, exactly as Prometheus reads them.
UNITS: tuple[tuple[str, int], ...] = (
    ("y", 365 * 86400),
    ("w", 7 * 86400),
    ("d", 86400),
    ("h", 3600),
    ("m", 60),
    ("s", 1),
)
_PATTERN = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> int:
    """Seconds in a Prometheus duration; raises ValueError for anything else (milliseconds are not needed here)."""
    match = _PATTERN.match(text or "")
    if not text or not match:
        raise ValueError(f"not a Prometheus duration like 30s, 5m, 1h or 7d: {text!r}")
    return sum(int(part) * size for part, (_, size) in zip(match.groups(), UNITS, strict=True) if part)


def format_duration(seconds: int) -> str:
    """The shortest Prometheus duration for a whole number of seconds, without years or weeks ("8d", "1h30m")."""
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in UNITS[2:]:
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
