"""duplicate_charge: two distinct successful charges of one payer, same amount and currency, close in time.

"Close" is measured on the charges' own Stripe `created` times, because events arrive out of order. A charge
counts once however it is seen: redelivered events, `charge.succeeded` then `charge.captured` of an authorised
charge, and any other event naming the same charge id are one charge.

Hot-path cost is one dict lookup and one batched state write per successful charge. In memory each remembered
charge costs only a hash and a time bucket; the full entries (charge ids, times) live in the StateStore and are
read back only when a payer/amount/currency key repeats, which is rare.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from exporter.detectors.board import AnomalyBoard
from exporter.detectors.config import DuplicateChargeConfig
from exporter.detectors.payers import payer_of
from exporter.money import normalize_currency, to_major
from exporter.state import StateStore
from exporter.stripe_shapes import get_int, get_str

NS = "duplicate_charge"
BUCKET_SECONDS = 10
PERSIST_PRUNE_INTERVAL = 60.0
EVENT_TYPES = frozenset(("charge.succeeded", "charge.captured"))


class DuplicateChargeDetector:
    name = "duplicate_charge"

    def __init__(self, board: AnomalyBoard, state: StateStore, config: DuplicateChargeConfig):
        self.board = board
        self.state = state
        self.severity = config.severity
        self.window = config.window_seconds
        self.horizon = config.window_seconds + config.late_arrival_seconds
        # hash(key) -> newest reception bucket holding a charge under that key.
        self._index: dict[int, int] = {}
        # (bucket, [hash, ...]) in reception order, for pruning without scanning the index.
        self._buckets: deque[tuple[int, list[int]]] = deque()
        self._cutoff = float("-inf")
        self._next_persist_prune = 0.0
        board.precreate(self.name)
        self._restore()

    def describe(self) -> dict[str, Any]:
        return {
            "window_seconds": self.window,
            "late_arrival_seconds": self.horizon - self.window,
            "severity": self.severity,
            "reasons": ["same_amount"],
        }

    def on_event(self, event: dict[str, Any], received: float) -> None:
        if event["type"] not in EVENT_TYPES:
            return
        charge = event["data"]["object"]
        if charge.get("status") != "succeeded" or charge.get("paid") is False:
            return
        charge_id = get_str(charge, "id")
        amount = get_int(charge, "amount")
        currency = normalize_currency(charge.get("currency"))
        created = get_int(charge, "created") or get_int(event, "created")
        if charge_id is None or amount is None or amount <= 0 or currency is None or created is None:
            return
        payer, customer = payer_of(charge)
        if payer is None:
            return
        key = f"{payer}|{currency}|{amount}"
        h = hash(key)
        bucket = int(received) // BUCKET_SECONDS
        entry = [charge_id, created, int(received)]
        if h not in self._index:
            self._index[h] = bucket
            self._note(bucket, h)
            self.state.put(NS, key, [entry])
            return
        # Rare path: this payer paid this amount recently (or a hash collided): compare exactly.
        stored = [e for e in (self.state.get(NS, key) or []) if e[2] >= self._cutoff]
        if any(e[0] == charge_id for e in stored):
            return  # the same charge again
        partner = min(
            (e for e in stored if abs(e[1] - created) <= self.window),
            key=lambda e: abs(e[1] - created),
            default=None,
        )
        stored.append(entry)
        self.state.put(NS, key, stored)
        if self._index[h] != bucket:
            self._index[h] = bucket
            self._note(bucket, h)
        if partner is not None:
            self._report(charge, charge_id, created, partner, payer, customer, currency, amount, received)

    def _note(self, bucket: int, h: int) -> None:
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1][1].append(h)
        else:
            self._buckets.append((bucket, [h]))

    def _report(
        self,
        charge: dict[str, Any],
        charge_id: str,
        created: int,
        partner: list[Any],
        payer: str,
        customer: str | None,
        currency: str,
        amount: int,
        received: float,
    ) -> None:
        major = to_major(amount, currency)
        apart = abs(created - partner[1])
        who = customer or f"guest {payer}"
        first, second = sorted(([partner[0], partner[1]], [charge_id, created]), key=lambda e: e[1])
        self.board.raise_anomaly(
            self.name,
            "same_amount",
            at=received,
            severity=self.severity,
            customer=customer,
            currency=currency,
            amount=major,
            summary=f"two successful charges of {major:g} {currency.upper()} for {who}, {apart} s apart",
            details={
                "charge_ids": [first[0], second[0]],
                "charge_created": [first[1], second[1]],
                "seconds_apart": apart,
                "payer": payer,
                "amount_minor": amount,
                "payment_intent": get_str(charge, "payment_intent"),
            },
        )

    def tick(self, now: float) -> None:
        self._cutoff = now - self.horizon
        oldest_kept = int(self._cutoff) // BUCKET_SECONDS
        index = self._index
        while self._buckets and self._buckets[0][0] < oldest_kept:
            bucket, hashes = self._buckets.popleft()
            for h in hashes:
                if index.get(h, bucket + 1) <= bucket:
                    del index[h]
        if now >= self._next_persist_prune:
            self._next_persist_prune = now + PERSIST_PRUNE_INTERVAL
            # Flush on our clock first: prune_namespace compares flush times, which must share the tick's clock.
            self.state.flush(now)
            self.state.prune_namespace(NS, self._cutoff)

    @property
    def remembered(self) -> int:
        return len(self._index)

    def _restore(self) -> None:
        entries: list[tuple[int, int]] = []
        for key, stored in self.state.items(NS):
            if not isinstance(stored, list) or not stored:
                continue
            newest = max(int(e[2]) for e in stored)
            entries.append((newest // BUCKET_SECONDS, hash(key)))
        entries.sort()
        for bucket, h in entries:
            self._index[h] = bucket
            self._note(bucket, h)
