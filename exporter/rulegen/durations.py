"""Prometheus duration strings ("90s", "1h30m", "7d", "500ms") to seconds and back: the one parser of them (rule
generation, dashboards and the backtest's reading of rule files all use it)."""

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
# Prometheus' grammar (model.ParseDuration): each unit at most once, largest first, whole numbers only.
_PATTERN = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_seconds(text: str) -> float:
    """Seconds in any Prometheus duration, milliseconds included (rule files and prometheus.yml may use them);
    raises ValueError for anything else. "0" is valid, as in Prometheus."""
    if text == "0":
        return 0.0
    match = _PATTERN.match(text or "")
    if not text or not match:
        raise ValueError(f"not a Prometheus duration like 30s, 5m, 1h or 7d: {text!r}")
    *whole, millis = match.groups()
    seconds = sum(int(part) * size for part, (_, size) in zip(whole, UNITS, strict=True) if part)
    return seconds + int(millis or 0) / 1000


def parse_duration(text: str) -> int:
    """Whole seconds in a Prometheus duration (the generated rules need no milliseconds); raises ValueError for
    anything else."""
    seconds = parse_seconds(text)
    if not seconds.is_integer():
        raise ValueError(f"not a whole number of seconds: {text!r}")
    return int(seconds)


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
