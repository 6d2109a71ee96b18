"""CPU cost of the exporter's per-event work without the network: signature check, JSON parse, shape check and
`Ingestor.ingest` (dedupe, accounting, detectors) with the default config, on the benchmark's events.

`python -m bench.profile_ingest [--events N] [--profile]` prints microseconds of CPU per event (process time,
so it is less disturbed by other load than a rate would be) and, with --profile, cProfile's top entries. Used
to find and check optimisations of the hot path; `bench.ingest` remains the measurement of record.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hmac
import logging
import pstats
import tempfile
import time

import orjson

from bench.events import RequestFactory, id_prefix
from exporter.config import load_config
from exporter.service import Service
from exporter.web import SignatureVerifier


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    p.add_argument("--top", type=int, default=30)
    p.add_argument(
        "--acknowledged", type=int, metavar="N", default=0,
        help="as the server answers: N concurrent deliveries on an event loop, each waiting for its id's commit",
    )
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)  # anomaly log lines: counted below instead
    secret = "whsec_profile_0123456789"
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            None, env={}, overrides={"stripe": {"webhook_secrets": [secret]}, "state": {"path": f"{tmp}/s.sqlite3"}}
        )
        service = Service(config)
        ingestor = service.ingestor
        verifier = SignatureVerifier([secret], 300)
        factory = RequestFactory(secret, "127.0.0.1", 8000, id_prefix=id_prefix())
        now = int(time.time())
        key = secret.encode()
        bodies = [factory.body(i, now) for i in range(args.events)]
        headers = [f"t={now},v1={hmac.digest(key, b'%d.' % now + b, 'sha256').hex()}" for b in bodies]
        gc.collect()

        def run() -> float:
            t = time.process_time()
            last_flush = time.monotonic()
            for body, header in zip(bodies, headers, strict=True):
                if not verifier.verify(body, header):
                    raise SystemExit("signature rejected")
                event = orjson.loads(body)
                ingestor.ingest(event, time.time())
                if time.monotonic() - last_flush >= 1.0:  # what housekeeping does once a second
                    last_flush = time.monotonic()
                    ingestor.tick(time.time())
                    service.state.flush()
            return time.process_time() - t

        async def run_acknowledged() -> float:
            # Like the webhook handler: answered once the id is committed (group commit in the writer thread),
            # with the housekeeping's tick and key/value flush once a second.
            todo = iter(zip(bodies, headers, strict=True))
            t = time.process_time()

            async def delivery() -> None:
                for body, header in todo:
                    if not verifier.verify(body, header):
                        raise SystemExit("signature rejected")
                    await ingestor.ingest_acknowledged(orjson.loads(body), time.time())

            async def housekeeping() -> None:
                while True:
                    await asyncio.sleep(1.0)
                    ingestor.tick(time.time())
                    await service.state.flush_in_background(time.time())

            chores = asyncio.create_task(housekeeping())
            await asyncio.gather(*(delivery() for _ in range(args.acknowledged)))
            chores.cancel()
            return time.process_time() - t

        def measured() -> float:
            if not args.acknowledged:
                return run()
            import uvloop  # as `billingwatch serve` runs

            return uvloop.run(run_acknowledged())

        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            cpu = measured()
            prof.disable()
        else:
            cpu = measured()
        service.state.close()
        anomalies = {
            s.labels.get("detector", ""): s.value
            for metric in service.metrics.registry.collect()
            if metric.name == "billingwatch_anomalies"
            for s in metric.samples
            if s.name.endswith("_total") and s.value
        }
        print(
            f"{1e6 * cpu / args.events:.1f} us CPU per event ({args.events} events, default config"
            f"{f', {args.acknowledged} concurrent acknowledged deliveries' if args.acknowledged else ''}); "
            f"anomalies: {anomalies or 'none'}"
        )
        if args.profile:
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
