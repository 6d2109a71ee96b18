"""Shared test helpers: Stripe-style signing (our own few lines, not the code under test) and event builders."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The example custom detector lives where users copy it from (examples/detectors); the exporter finds such modules
# on its Python path, and so do the tests.
EXAMPLE_DETECTORS = REPO / "examples" / "detectors"
if str(EXAMPLE_DETECTORS) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DETECTORS))
# Stripe example objects the tests read, kept in the repository (a subset of shared/stripe/fixtures3.json).
STRIPE_FIXTURES = REPO / "tests" / "data" / "stripe_fixtures.json"
SECRET = "whsec_test_primary_0123456789abcdef"
OTHER_SECRET = "whsec_test_rotated_fedcba9876543210"


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def require_binary(name: str) -> str:
    """Path of a binary; a failure under CI=true, a skip elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{name} is not installed (CI=true: a missing binary is a failure)")
    pytest.skip(f"{name} is not installed")


_FIXTURES: dict[str, Any] | None = None


def stripe_fixture(name: str) -> dict[str, Any]:
    """A deep copy of Stripe's example object `name` from tests/data/stripe_fixtures.json (shape only)."""
    global _FIXTURES
    if _FIXTURES is None:
        _FIXTURES = json.loads(STRIPE_FIXTURES.read_text(encoding="utf-8"))["resources"]
    return copy.deepcopy(_FIXTURES[name])


_counter = 0


def make_event(event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None,
               livemode: bool = False) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "id": event_id or f"evt_test_{time.time_ns()}_{_counter}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
