"""duplicate_charge: two distinct captured charges of one payer, same amount and currency, close in time.

"Close" is measured on Stripe's own times, because events arrive out of order: a charge's `created`, or for an
authorisation captured later the capture (the charge.captured event's `created`). Only captured money can be
charged twice: an uncaptured authorisation (`captured: false`) is remembered only once it is captured. A charge
counts once however it is seen: redelivered events, `charge.succeeded` then `charge.captured`, and any other
event naming the same charge id are one charge.

Who paid: the customer id and, in live mode, the card (a hashed fingerprint), so one card paying twice through
two Checkout sessions that each created a customer is one payer. A charge is remembered under each of its names
and matched on either. Test mode knows payers only by customer id (exporter.detectors.payers), and live and test
charges never pair: the mode is part of every key.

Distinct invoices are distinct purchases: two renewals of the same price for one customer are not a duplicate.
A charge's invoice is read from the charge or PaymentIntent (`invoice`, API versions before 2025-03-31.basil) or
learnt from invoice events that name their payment (`charge` / `payment_intent` before basil,
`invoice_payment.paid` since): two charges whose invoices are both known and differ never pair. Since basil a
charge names no invoice and its link comes in a later event, so a pair of automatic charges (the event's
`request.id` is null: Stripe's own billing, e.g. two subscriptions renewing together) whose invoices are not both
known yet is held for INVOICE_LINK_WAIT_SECONDS before it is reported; charges made through the API (a double
click, a retry) are reported at once.

Cost on the hot path: one or two hashes, dict lookups and list appends per captured charge. Memory per remembered
name is about 200 bytes (a 60-bit hash of mode|payer|currency|amount -> a compact bytes record); a customer
paying by card takes two. Persistence writes one StateStore row per tick holding that second's charges, not one
row per charge (SQLite rows are the expensive part of a flush); a restart reads those rows back.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter

from exporter.detectors.base import key_hash
from exporter.detectors.board import AnomalyBoard
from exporter.detectors.config import DuplicateChargeConfig
from exporter.detectors.payers import identities_of
from exporter.money import normalize_currency, to_major
from exporter.state import StateStore
from exporter.stripe_shapes import get_dict, get_int, get_str

# One row per second of charges. Stored as "zz_duplicate_charge" before: renamed at start (state.PREFIXED_NAMESPACES).
NS = "duplicate_charge"
BUCKET_SECONDS = 10
EVENT_TYPES = frozenset(("charge.succeeded", "charge.captured", "payment_intent.succeeded"))
# Events that link a payment (charge or PaymentIntent id) to its invoice.
INVOICE_LINK_TYPES = frozenset(("invoice.paid", "invoice.payment_succeeded", "invoice_payment.paid"))
NONE = "-"
# How long a pair of automatic basil-shaped charges waits for the events naming their invoices (Stripe sends them
# seconds after the charge). Not persisted: a restart within this time forgets the pair.
INVOICE_LINK_WAIT_SECONDS = 30

# (created, received second, charge id, invoice or "-", payment intent or "-")
Entry = tuple[int, int, str, str, str]


def _entries(value: bytes) -> list[Entry]:
    """The charges remembered under one key."""
    out = []
    for line in value.split(b"\n"):
        parts = line.decode().split(" ")
        invoice, intent = (parts[3], parts[4]) if len(parts) == 5 else (NONE, NONE)
        created = int(parts[0])
        out.append((created, created + int(parts[1]), parts[2], invoice, intent))
    return out


def _pack(created: int, received: int, charge_id: str, invoice: str = NONE, intent: str = NONE) -> bytes:
    # The reception as seconds after `created` (usually a digit or two, not ten): ~9 bytes less per charge.
    return f"{created} {received - created} {charge_id} {invoice} {intent}".encode()


def _received(line: bytes) -> int:
    created, after, _ = line.split(b" ", 2)
    return int(created) + int(after)


def _token(value: str | None) -> str:
    """An id safe inside a packed line (Stripe ids have no spaces; anything else is dropped)."""
    return value if value and " " not in value and "\n" not in value else NONE


class DuplicateChargeDetector:
    name = "duplicate_charge"

    def __init__(
        self,
        board: AnomalyBoard,
        state: StateStore,
        config: DuplicateChargeConfig,
        registry: CollectorRegistry | None = None,
    ):
        self.board = board
        self.max_remembered = config.max_remembered_charges
        self.evictions = Counter(
            "billingwatch_duplicate_charge_evictions",
            "Charges forgotten before window_seconds + late_arrival_seconds had passed, because "
            "detectors.duplicate_charge.max_remembered_charges was reached (the window is shorter under such load).",
            registry=registry,
        )
        self.state = state
        self.severity = config.severity
        self.window = config.window_seconds
        self.horizon = config.window_seconds + config.late_arrival_seconds
        # key_hash("mode|payer|currency|amount") -> b"created received-created charge_id invoice intent" lines. A
        # 60-bit hash collision between two keys would merge them; at 10^6 remembered charges its odds are about
        # 10^-6 (60 bits, not 64: 16 bytes less per key, 1.5 MB at the default 100,000).
        self._index: dict[int, bytes] = {}
        # (bucket, [hash, ...]) in reception order, for pruning without scanning the index.
        self._buckets: deque[tuple[int, list[int]]] = deque()
        # Charges seen since the last tick, written as one row at the next tick.
        # Tuples, not lists: a tuple of atomic values drops out of the cyclic GC's young generation after one
        # look, so a second of remembered charges does not lengthen every young collection until it is written.
        self._chunk: list[tuple[str, str, int, int, str, str]] = []
        self._chunk_seq = 0
        # (newest reception time in the row, row key) of the rows on disk, oldest first, to delete them in time.
        self._rows: deque[tuple[int, str]] = deque()
        # charge or PaymentIntent id -> its invoice, learnt from invoice events; newest last, as bounded as the
        # charges (not persisted: a restart forgets at most the links of the last few minutes).
        self._links: OrderedDict[str, str] = OrderedDict()
        # Pairs waiting for their invoices: (due, the arguments of _report), oldest first.
        self._waiting: deque[tuple[float, tuple[Any, ...]]] = deque()
        board.precreate(self.name)
        self._restore()

    def describe(self) -> dict[str, Any]:
        return {
            "window_seconds": self.window,
            "late_arrival_seconds": self.horizon - self.window,
            "max_remembered_charges": self.max_remembered,
            "severity": self.severity,
            "reasons": ["same_amount"],
        }

    def on_event(self, event: dict[str, Any], received: float) -> None:
        event_type = event["type"]
        if event_type in INVOICE_LINK_TYPES:
            self._learn_invoice(event_type, event["data"]["object"])
            return
        if event_type not in EVENT_TYPES:
            return
        charge = event["data"]["object"]
        if charge.get("status") != "succeeded" or charge.get("paid") is False:
            return
        invoice = get_str(charge, "invoice")
        if event_type == "payment_intent.succeeded":
            # The same payment seen from its PaymentIntent (endpoints subscribed to payment_intent.* only). It is
            # identified by its charge, so a payment seen both ways is one charge; the event's time is when it
            # succeeded (the intent's own `created` can be long before, when checkout began).
            charge_id = intent_charge_id(charge)
            intent = get_str(charge, "id")
            amount = get_int(charge, "amount_received") or get_int(charge, "amount")
            created = get_int(event, "created")
        elif event_type == "charge.captured":
            # Captured now, possibly days after the authorisation: the capture is when the money was taken.
            charge_id = get_str(charge, "id")
            intent = get_str(charge, "payment_intent")
            amount = get_int(charge, "amount_captured") or get_int(charge, "amount")
            created = get_int(event, "created") or get_int(charge, "created")
        else:
            if charge.get("captured") is False:
                return  # an authorisation: nothing collected until charge.captured
            charge_id = get_str(charge, "id")
            intent = get_str(charge, "payment_intent")
            amount = get_int(charge, "amount_captured") or get_int(charge, "amount")
            created = get_int(charge, "created") or get_int(event, "created")
        currency = normalize_currency(charge.get("currency"))
        if charge_id is None or amount is None or amount <= 0 or currency is None or created is None:
            return
        livemode = event.get("livemode") is True
        names = identities_of(charge, livemode)
        if not names:
            return
        mode = "live" if livemode else "test"
        invoice = _token(invoice or self._links.get(charge_id) or (self._links.get(intent) if intent else None))
        intent = _token(intent)
        best: tuple[Entry, str] | None = None
        for name in names:
            key = f"{mode}|{name}|{currency}|{amount}"
            found = self._remember(key_hash(key), created, int(received), charge_id, invoice, intent)
            if found is False:
                return  # the same charge again
            self._chunk.append((key, charge_id, created, int(received), invoice, intent))
            if found is not None and (best is None or abs(found[0] - created) < abs(best[0][0] - created)):
                best = (found, name)
        if best is not None:
            report = (charge, charge_id, created, best, get_str(charge, "customer"), currency, amount, livemode)
            if self._may_be_another_invoice(event, charge, best[0], charge_id, intent):
                self._waiting.append((received + INVOICE_LINK_WAIT_SECONDS, report))
            else:
                self._report(*report, at=received)

    def _may_be_another_invoice(
        self, event: dict[str, Any], charge: dict[str, Any], partner: Entry, charge_id: str, intent: str
    ) -> bool:
        """An automatic charge in the basil shape (no `invoice` field) whose pair's invoices are not both known."""
        request = event.get("request")
        automatic = isinstance(request, dict) and request.get("id") is None
        if not automatic or "invoice" in charge:
            return False
        mine = self._links.get(charge_id) or (self._links.get(intent) if intent != NONE else None)
        return mine is None or self._invoice_of(partner) is None

    def _release_waiting(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            _, report = self._waiting.popleft()
            charge, charge_id, _created, (partner, _name), *_ = report
            intent = _token(get_str(charge, "payment_intent") or get_str(charge, "id"))
            mine = self._links.get(charge_id) or (self._links.get(intent) if intent != NONE else None)
            theirs = self._invoice_of(partner)
            if mine is not None and theirs is not None and mine != theirs:
                continue  # two invoices: two purchases
            self._report(*report, at=now)

    def _learn_invoice(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "invoice_payment.paid":
            invoice = get_str(obj, "invoice")
            payments = [get_str(obj, "payment", "charge"), get_str(obj, "payment", "payment_intent")]
        else:
            invoice = get_str(obj, "id")
            payments = [get_str(obj, "charge"), get_str(obj, "payment_intent")]
        if invoice is None:
            return
        for payment in payments:
            if payment:
                self._links[payment] = invoice
                self._links.move_to_end(payment)
        while len(self._links) > self.max_remembered:
            self._links.popitem(last=False)

    def _invoice_of(self, entry: Entry) -> str | None:
        if entry[3] != NONE:
            return entry[3]
        return self._links.get(entry[2]) or (self._links.get(entry[4]) if entry[4] != NONE else None)

    def _remember(
        self, h: int, created: int, received: int, charge_id: str, invoice: str, intent: str
    ) -> Entry | Literal[False] | None:
        """Add a charge under one key; returns the closest earlier charge within the window that may be the same
        purchase, None, or False when this very charge was already remembered."""
        line = _pack(created, received, charge_id, invoice, intent)
        current = self._index.get(h)
        partner = None
        if current is None:
            self._index[h] = line
        else:
            # Rare: this payer paid this amount recently.
            entries = _entries(current)
            if any(e[2] == charge_id for e in entries):
                return False
            mine = None if invoice == NONE else invoice
            close = [
                e
                for e in entries
                if abs(e[0] - created) <= self.window
                and (mine is None or (theirs := self._invoice_of(e)) is None or theirs == mine)
            ]
            partner = min(close, key=lambda e: abs(e[0] - created)) if close else None
            self._index[h] = current + b"\n" + line
        bucket = received // BUCKET_SECONDS
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1][1].append(h)
        else:
            self._buckets.append((bucket, [h]))
        return partner

    def _report(
        self,
        charge: dict[str, Any],
        charge_id: str,
        created: int,
        best: tuple[Entry, str],
        customer: str | None,
        currency: str,
        amount: int,
        livemode: bool,
        *,
        at: float,
    ) -> None:
        partner, name = best
        major = to_major(amount, currency)
        apart = abs(created - partner[0])
        on_card = name.startswith("card:")
        who = f"customer {customer}" if customer else f"guest {name}"
        if on_card and customer:
            who += " (the same card as an earlier charge, possibly under another customer)"
        first, second = sorted(((partner[2], partner[0]), (charge_id, created)), key=lambda e: e[1])
        self.board.raise_anomaly(
            self.name,
            "same_amount",
            at=at,
            severity=self.severity,
            customer=customer,
            currency=currency,
            amount=major,
            livemode=livemode,
            summary=f"two captured charges of {major:g} {currency.upper()} for {who}, {apart} s apart",
            details={
                "charge_ids": [first[0], second[0]],
                "charge_created": [first[1], second[1]],
                "seconds_apart": apart,
                "payer": name,
                "matched_on": "card" if on_card else "customer",
                "amount_minor": amount,
                "payment_intent": get_str(charge, "payment_intent"),
                "invoices": [self._invoice_of(partner), self._links.get(charge_id) or get_str(charge, "invoice")],
            },
        )

    def tick(self, now: float) -> None:
        self._release_waiting(now)
        if self._chunk:
            self._chunk_seq += 1
            row_key = f"{int(now):012d}-{self._chunk_seq}"
            self.state.put(NS, row_key, self._chunk)
            self._rows.append((max(e[3] for e in self._chunk), row_key))
            self._chunk = []
        cutoff = int(now - self.horizon)
        while self._buckets and self._buckets[0][0] < cutoff // BUCKET_SECONDS:
            self._forget_bucket(cutoff)
        # Memory stays bounded whatever the charge rate: past the cap the oldest charges go early.
        while len(self._index) > self.max_remembered and self._buckets:
            before = len(self._index)
            self._forget_bucket((self._buckets[0][0] + 1) * BUCKET_SECONDS)
            self.evictions.inc(before - len(self._index))
        # Rows whose charges are all past the horizon go, through the same batched writes as everything else.
        while self._rows and self._rows[0][0] < cutoff:
            self.state.delete(NS, self._rows.popleft()[1])

    def _forget_bucket(self, cutoff: int) -> None:
        """Drop the oldest bucket's charges received before `cutoff`."""
        _, hashes = self._buckets.popleft()
        index = self._index
        for h in hashes:
            value = index.get(h)
            if value is None:
                continue
            if b"\n" not in value:
                if _received(value) < cutoff:
                    del index[h]
                continue
            kept = [e for e in _entries(value) if e[1] >= cutoff]
            if not kept:
                del index[h]
            else:
                index[h] = b"\n".join(_pack(*e) for e in kept)

    @property
    def remembered(self) -> int:
        return len(self._index)

    def _restore(self) -> None:
        rows = []
        stored = []
        for row_key, chunk in self.state.items(NS):
            if isinstance(chunk, list):
                # Rows of 4 fields were written before invoices and intents were kept.
                entries = [e for e in chunk if isinstance(e, list | tuple) and len(e) in (4, 6)]
                rows.extend(entries)
                stored.append((max((int(e[3]) for e in entries), default=0), row_key))
        self._rows.extend(sorted(stored))
        # Row keys made after a restart must not overwrite restored rows of the same second.
        self._chunk_seq = max((int(k.rsplit("-", 1)[1]) for _, k in stored if "-" in k), default=0)
        rows.sort(key=lambda e: e[3])
        for key, charge_id, created, received, *rest in rows:
            invoice, intent = (str(rest[0]), str(rest[1])) if rest else (NONE, NONE)
            self._remember(key_hash(key), int(created), int(received), str(charge_id), invoice, intent)


def intent_charge_id(intent: dict[str, Any]) -> str | None:
    """The charge of a succeeded PaymentIntent: `latest_charge` (2022-11-15+), else the last of `charges.data`."""
    latest = get_str(intent, "latest_charge")
    if latest:
        return latest
    charges = get_dict(intent, "charges")
    data = charges.get("data") if charges else None
    if isinstance(data, list) and data:
        return get_str(data[-1], "id")
    return None
