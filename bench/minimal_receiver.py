"""The baseline: the least an aiohttp webhook receiver can do. It checks the Stripe HMAC (v1 scheme, 300 s
tolerance) and parses the JSON body, nothing else: no dedupe, no metrics, no state.

Run as its own process, on uvloop like `billingwatch serve`: `python -m bench.minimal_receiver --port 0 --secret S`
prints `listening on PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import signal
import sys
import time

import orjson
from aiohttp import web

TOLERANCE_SECONDS = 300


def make_app(secret: str) -> web.Application:
    key = secret.encode()

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("Stripe-Signature", "")
        timestamp, signatures = None, []
        for item in header.split(","):
            name, _, value = item.partition("=")
            if name == "t":
                timestamp = value
            elif name == "v1":
                signatures.append(value)
        if timestamp is None or not timestamp.isdigit() or int(timestamp) < time.time() - TOLERANCE_SECONDS:
            return web.Response(status=400, text="bad signature")
        expected = hmac.digest(key, timestamp.encode() + b"." + body, "sha256").hex()
        if not any(hmac.compare_digest(expected, s) for s in signatures):
            return web.Response(status=400, text="bad signature")
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="bad json")
        if not isinstance(event, dict):
            return web.Response(status=400, text="bad json")
        return web.Response(body=b'{"received":true}', content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/webhooks/stripe", webhook)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, secret: str) -> None:
    runner = web.AppRunner(make_app(secret), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.minimal_receiver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--secret", required=True)
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, args.secret))
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
