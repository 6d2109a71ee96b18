"""Structured logging: one line per record, JSON by default. Callers pass only safe, bounded fields."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

log = logging.getLogger("billingwatch")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # Type and place only: exception messages can quote payload values (customer ids, emails).
            out["error"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                out["where"] = f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
        return orjson.dumps(out, default=str).decode()


class TextFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        data = orjson.loads(super().format(record))
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(data.pop("ts")))
        level = data.pop("level").upper()
        msg = data.pop("msg")
        rest = " ".join(f"{k}={v}" for k, v in data.items())
        return f"{ts} {level} {msg} {rest}".rstrip()


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
    # aiohttp's own records (e.g. a malformed HTTP request) go through the same one-line formatter, which keeps
    # the exception type and drops its message; its access log would print every request, so it stays quiet.
    aiohttp_log = logging.getLogger("aiohttp")
    aiohttp_log.handlers[:] = [handler]
    aiohttp_log.setLevel(logging.WARNING)
    aiohttp_log.propagate = False


def event(level: int, msg: str, **fields: Any) -> None:
    """Log `msg` with structured fields (never pass payloads, secrets, emails or card data)."""
    if log.isEnabledFor(level):
        log.log(level, msg, extra={"fields": fields})


def error(msg: str, **fields: Any) -> None:
    if log.isEnabledFor(logging.ERROR):
        log.error(msg, exc_info=True, extra={"fields": fields})


class RateLimited:
    """Lets one record through per `interval` seconds; `allow()` then says how many were held back before it."""

    __slots__ = ("_clock", "_held", "_interval", "_next")

    def __init__(self, interval: float, clock: Any = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._held = 0

    def allow(self) -> int | None:
        """None: stay quiet. An int: log now, mentioning that many suppressed records."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return None
        self._next = now + self._interval
        held, self._held = self._held, 0
        return held
