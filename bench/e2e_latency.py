"""POST-to-notification latency with the shipped configs: how long after the second charge of a duplicate the
webhook notification arrives. Target: <= 15 s (docs/CONTRACTS.md, "Alert latency").

Runs the real stack (tests/e2e/e2e_stack.py) with the shipped prometheus.yml, alertmanager.yml and rules/ (only
addresses changed, NO shortened intervals), a real aiosmtpd SMTP server and a real aiohttp webhook receiver.

Each repetition starts a fresh stack and waits a random part of the scrape interval before posting, so the charge
lands at a random point of the scrape and evaluation cycles. Afterwards, on the last stack, a duplicate charge of
another customer measures a stack that has already notified (alertmanager.yml groups by customer, so it opens a
group of its own; were it to join a notified group, Alertmanager would wait for the route's group_interval).

    .venv/bin/python -m bench.e2e_latency [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from exporter import samples  # noqa: E402
from tests.e2e.e2e_stack import Stack, wait_for  # noqa: E402
from tests.e2e.sinks import MailSink, WebhookSink, alerts_matching  # noqa: E402

SECRET = "whsec_bench_e2e_latency"
TARGET_SECONDS = 15.0
SCRAPE_INTERVAL_SECONDS = 5.0  # the shipped prometheus.yml's (docs/CONTRACTS.md)


def _duplicate(stack: Stack, customer: str) -> float:
    """Post two charges of the same payer and amount; return the time just before the second POST."""
    first = samples.event("charge.succeeded", samples.charge(amount=4_200, customer=customer))
    second = samples.event("charge.succeeded", samples.charge(amount=4_200, customer=customer))
    assert stack.post(first, samples.sign) == 200
    t0 = time.time()
    assert stack.post(second, samples.sign) == 200
    return t0


def _notified_at(hook: WebhookSink, customer: str, timeout: float) -> tuple[float, float]:
    """(when the first notification for `customer` arrived, when Prometheus saw the alert become active)."""

    def arrived() -> tuple[float, float] | None:
        hits = alerts_matching(hook.notifications, customer=customer)
        if not hits:
            return None
        note, alert = min(hits, key=lambda hit: hit[0].received)
        return note.received, _rfc3339(alert["startsAt"])

    return wait_for(arrived, timeout, f"the webhook notification for {customer}", interval=0.05)


def _rfc3339(value: str) -> float:
    # Alertmanager sends nanoseconds; datetime keeps microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    stamp = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC).timestamp()
    return stamp + float(f"0.{frac or 0}"[:8])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one notification after this")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random POST phase")
    parser.add_argument("--skip-joined-group", action="store_true", help="skip the second duplicate on the last stack")
    args = parser.parse_args(argv)

    mail = MailSink().start()
    hook = WebhookSink().start()
    latencies: list[float] = []
    rng = random.Random(args.seed)
    joined: float | None = None
    workdir = Path(tempfile.mkdtemp(prefix="bw-e2e-latency-"))
    try:
        for run in range(args.runs):
            stack = Stack(workdir / f"run{run}", secret=SECRET, smtp_port=mail.port, webhook_base=hook.base, fast=False)
            stack.start()
            try:
                customer = f"cus_latency_{run}_{time.time_ns()}"
                # Stack.start() returns right after the first scrape; a real charge arrives at any point of the
                # scrape and evaluation cycles, so wait a random part of the scrape interval first.
                time.sleep(rng.uniform(0.0, SCRAPE_INTERVAL_SECONDS))
                t0 = _duplicate(stack, customer)
                notified, active = _notified_at(hook, customer, args.timeout)
                latency = notified - t0
                latencies.append(latency)
                print(
                    f"run {run + 1}/{args.runs}: {latency:.2f} s (alert active in Prometheus after "
                    f"{active - t0:.2f} s, then Alertmanager {notified - active:.2f} s)",
                    flush=True,
                )
                if run == args.runs - 1 and not args.skip_joined_group:
                    customer = f"cus_latency_joined_{time.time_ns()}"
                    t0 = _duplicate(stack, customer)
                    joined = _notified_at(hook, customer, max(args.timeout, 400.0))[0] - t0
            finally:
                stack.stop()
    finally:
        hook.stop()
        mail.stop()

    print(f"POST of the second charge -> webhook notification, shipped intervals, {len(latencies)} runs:")
    print(
        f"  min {min(latencies):.2f} s   median {statistics.median(latencies):.2f} s   "
        f"max {max(latencies):.2f} s   (target <= {TARGET_SECONDS:.0f} s)"
    )
    if joined is not None:
        print(f"  another customer's duplicate on the stack that already notified: {joined:.2f} s")
    return 0 if max(latencies) <= TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
