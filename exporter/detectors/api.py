"""Private API routes of the detectors: GET /api/v1/anomalies and GET /api/v1/detectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from exporter.detectors.board import AnomalyBoard
from exporter.landing import iso

DEFAULT_LIMIT = 50


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def anomalies_handler(board: AnomalyBoard, size: int) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(min(DEFAULT_LIMIT, size)))
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= size:
            return _json({"error": f"limit must be an integer from 1 to {size}"}, status=400)
        detector = request.query.get("detector") or None
        items = [
            {**a, "detected_at_iso": iso(a.get("detected_at")), "expires_at_iso": iso(a.get("expires_at"))}
            for a in board.recent(limit, detector)
        ]
        return _json({"active_series": board.active_count, "anomalies": items})

    return handle


def detectors_handler(describe: Callable[[], list[dict[str, Any]]]) -> Callable[[web.Request], Any]:
    async def handle(_: web.Request) -> web.Response:
        return _json({"detectors": describe()})

    return handle
