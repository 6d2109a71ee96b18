"""aiohttp's own error lines, counted and rate-limited.

aiohttp answers a request it cannot parse (bad request line, oversized header, broken chunk framing) with 400 by
itself, before any handler of ours runs, and logs "Error handling request from <address>" with a traceback: an
unauthenticated scanner can write thousands of ERROR lines a minute. A logging filter is the one public hook on
that path: it counts each such request and lets one line a minute through, saying how many were held back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from exporter.logs import RateLimited

AIOHTTP_SERVER_LOGGER = "aiohttp.server"
LOG_INTERVAL_SECONDS = 60.0
_MALFORMED_PREFIX = "Error handling request"


class AiohttpServerFilter(logging.Filter):
    def __init__(self, on_malformed: Callable[[], None], interval: float = LOG_INTERVAL_SECONDS):
        super().__init__()
        self._on_malformed = on_malformed
        self._malformed = RateLimited(interval)
        self._other = RateLimited(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        malformed = isinstance(record.msg, str) and record.msg.startswith(_MALFORMED_PREFIX)
        if malformed:
            self._on_malformed()
        elif record.levelno < logging.WARNING:
            return False  # the logger is opened to DEBUG only for the malformed lines (see install())
        held = (self._malformed if malformed else self._other).allow()
        if held is None:
            return False
        if malformed:
            # A client's mistake, not ours: a warning, whatever level aiohttp chose.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = (
                "malformed HTTP request answered 400 by the HTTP server (all are counted in "
                "billingwatch_http_malformed_requests_total); this one from %s"
            )
        # At most one line per interval and kind: how many were held back since the previous one.
        record.fields = {"suppressed_since_last": held}
        return True


def install(on_malformed: Callable[[], None]) -> Callable[[], None]:
    """Attach the filter to aiohttp's server logger; returns the function that removes it again.

    aiohttp logs non-HTTP bytes on a fresh connection (TLS to the plain port, binary probes) at DEBUG, the rest at
    ERROR: the logger is opened to DEBUG so that both are counted; the filter drops other DEBUG/INFO records."""
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    flt = AiohttpServerFilter(on_malformed)
    previous = logger.level
    logger.addFilter(flt)
    logger.setLevel(logging.DEBUG)

    def remove() -> None:
        logger.removeFilter(flt)
        logger.setLevel(previous)

    return remove
