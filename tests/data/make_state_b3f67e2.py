"""Writes tests/data/state-b3f67e2.sqlite3: a state file as commit b3f67e2 wrote it (array-packed ledger records,
journal and shard rows), for tests/test_state_compat.py. Run with that commit's code on the path:
`git archive b3f67e2 | tar -x -C /tmp/old && PYTHONPATH=/tmp/old python tests/data/make_state_b3f67e2.py OUT`."""

from __future__ import annotations

import sys

from exporter import samples
from exporter.config import load_config
from exporter.service import Service

T0 = 1_780_000_000


def event(n: int, event_type: str, obj: dict, livemode: bool) -> dict:
    return {"id": f"evt_compat_{n:03d}", "object": "event", "api_version": "2025-03-31.basil", "created": T0 + n,
            "data": {"object": obj}, "livemode": livemode, "type": event_type}


def main(out: str) -> None:
    config = load_config(None, env={}, overrides={"stripe": {"webhook_secrets": ["whsec_x"]}, "state": {"path": out}})
    service = Service(config)
    events = [
        event(1, "customer.subscription.created", samples.subscription(
            customer="cus_live", subscription_id="sub_live", unit_amount=2000, created=T0, livemode=True), True),
        event(2, "customer.subscription.created", samples.subscription(
            customer="cus_test", subscription_id="sub_test", unit_amount=5000, currency="eur", created=T0), False),
        event(3, "invoice.paid", samples.invoice(
            customer="cus_test", subscription="sub_test", total=5000, currency="eur", created=T0 + 3,
            invoice_id="in_paid"), False),
        event(4, "customer.subscription.deleted", samples.subscription(
            customer="cus_gone", subscription_id="sub_gone", status="canceled", created=T0), False),
    ]
    for e in events:
        assert service.ingestor.ingest(e, T0 + 10) == "accepted"
    service.ingestor.tick(T0 + 11)  # a journal row of the changes, and shard 0
    service.state.flush(T0 + 11)
    late = samples.subscription(customer="cus_live", subscription_id="sub_live", unit_amount=3000, created=T0,
                                livemode=True)
    assert service.ingestor.ingest(event(5, "customer.subscription.updated", late, True), T0 + 12) == "accepted"
    for i in range(300):  # past a whole cycle of shard snapshots, then one more journal row
        service.ingestor.tick(T0 + 13 + i)
    service.state.close()


if __name__ == "__main__":
    main(sys.argv[1])
