"""A fake Stripe API on loopback serving `GET /v1/events` in Stripe's list format, for the real stripe SDK.

It implements what BillingWatch uses, as Stripe documents it: newest first; `limit` (1..100, default 10);
`starting_after` / `ending_before` cursors; `created[gt|gte|lt|lte]` (or a plain `created`); `type` with a `*`
wildcard; `types[]` (up to 20); `delivery_success=false` (events not yet delivered to every endpoint, here those
marked undelivered); `GET /v1/events/<id>`; and `GET` of any object a test put in `objects` (by path, e.g.
`/v1/subscriptions/sub_x`), as thin events need. Requests need `Authorization: Bearer <key>`; a wrong key gets
Stripe's 401 error body.
Tests can make a request fail (`fail_next`) and read back what was requested (`requests`).
"""

from __future__ import annotations

import fnmatch
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "rk_test_billingwatch_readonly_0123456789"


class FakeStripeAPI:
    def __init__(self, events: list[dict[str, Any]] | None = None, *, api_key: str = API_KEY):
        self.api_key = api_key
        self.events: list[dict[str, Any]] = []
        self.undelivered: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, Any]] = {}  # path -> object, for retrieve calls
        # For the next requests, in order: None (answer normally) or (HTTP status, Stripe error type) to fail with.
        self.fail_next: list[tuple[int, str] | None] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for event in events or []:
            self.add(event)

    # -- data -------------------------------------------------------------------------------------------------

    def add(self, event: dict[str, Any], *, delivered: bool = True) -> None:
        with self._lock:
            self.events.append(event)
            # Stripe's order: newest first; ids break ties so that paging is stable.
            self.events.sort(key=lambda e: (e["created"], e["id"]), reverse=True)
            if not delivered:
                self.undelivered.add(event["id"])

    def mark_delivered(self, event_id: str) -> None:
        with self._lock:
            self.undelivered.discard(event_id)

    # -- server -----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeStripeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeStripeAPI:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    # -- the API ----------------------------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        params = parse_qsl(parts.query, keep_blank_values=True)
        with self._lock:
            self.requests.append({"path": parts.path, "params": params, "headers": dict(req.headers)})
            failure = self.fail_next.pop(0) if self.fail_next else None
        if req.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(req, 401, "invalid_request_error", "Invalid API Key provided")
        if failure is not None:
            return self._error(req, failure[0], failure[1], "injected failure")
        if parts.path != "/v1/events":
            with self._lock:
                found = self.objects.get(parts.path)
                if found is None and parts.path.startswith("/v1/events/"):
                    found = next((e for e in self.events if e["id"] == parts.path[len("/v1/events/") :]), None)
            if found is not None:
                return self._send(req, 200, found)
            return self._error(req, 404, "invalid_request_error", f"No such object: {parts.path}")
        try:
            body = self._list(params)
        except ValueError as exc:
            return self._error(req, 400, "invalid_request_error", str(exc))
        self._send(req, 200, body)

    def _list(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        single: dict[str, str] = {}
        types: list[str] = []
        for key, value in params:
            if key == "types[]" or key.startswith("types["):
                types.append(value)
            else:
                single[key] = value
        limit = int(single.get("limit", "10"))
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        if len(types) > 20:
            raise ValueError("types: at most 20")
        with self._lock:
            events = list(self.events)
            undelivered = set(self.undelivered)
        selected = [e for e in events if self._matches(e, single, types, undelivered)]
        if "starting_after" in single:
            ids = [e["id"] for e in selected]
            if single["starting_after"] not in ids:
                # Stripe answers 400 for an unknown cursor object; here the cursor must be one of the listed events.
                all_ids = [e["id"] for e in events]
                if single["starting_after"] not in all_ids:
                    raise ValueError(f"No such event: '{single['starting_after']}'")
                cursor = next(e for e in events if e["id"] == single["starting_after"])
                selected = [e for e in selected if (e["created"], e["id"]) < (cursor["created"], cursor["id"])]
            else:
                selected = selected[ids.index(single["starting_after"]) + 1 :]
        elif "ending_before" in single:
            ids = [e["id"] for e in selected]
            if single["ending_before"] in ids:
                selected = selected[: ids.index(single["ending_before"])][-limit:]
        page = selected[:limit]
        return {"object": "list", "url": "/v1/events", "has_more": len(selected) > limit, "data": page}

    @staticmethod
    def _matches(event: dict[str, Any], single: dict[str, str], types: list[str], undelivered: set[str]) -> bool:
        created = event["created"]
        for op in ("gt", "gte", "lt", "lte"):
            raw = single.get(f"created[{op}]")
            if raw is None:
                continue
            bound = int(raw)
            if (
                (op == "gt" and not created > bound)
                or (op == "gte" and not created >= bound)
                or (op == "lt" and not created < bound)
                or (op == "lte" and not created <= bound)
            ):
                return False
        if "created" in single and created != int(single["created"]):
            return False
        if "type" in single and not fnmatch.fnmatchcase(event["type"], single["type"]):
            return False
        if types and event["type"] not in types:
            return False
        ds = single.get("delivery_success")
        if ds == "false" and event["id"] not in undelivered:
            return False
        if ds == "true" and event["id"] in undelivered:
            return False
        return True

    def _error(self, req: BaseHTTPRequestHandler, status: int, kind: str, message: str) -> None:
        self._send(req, status, {"error": {"type": kind, "message": message}})

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Request-Id", "req_fake")
        req.end_headers()
        req.wfile.write(data)
