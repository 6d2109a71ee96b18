"""Demo helpers for `./scripts/run.sh --demo` (and the docker-compose webhook receiver).

  catcher   a local mail catcher (SMTP, default 127.0.0.1:1025; messages saved as .eml files and shown on a tiny
            web page, default http://127.0.0.1:8025) and the webhook receiver (default 127.0.0.1:5001), which
            match the addresses in alertmanager.yml. Each notification is printed as one line.
  receiver  only the webhook receiver (the docker-compose `webhook-receiver` service).
  traffic   signed demo events to the exporter: ordinary charges and invoices, then a duplicate charge.

Nothing here is part of the exporter; it only stands in for your mail server, your webhook consumer and Stripe.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import html
import json
import os
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from exporter import samples  # noqa: E402 - after making the repository importable when run as a script


def say(line: str) -> None:
    print(f"[demo] {line}", flush=True)


# ------------------------------------------------------------------------------------------------ webhook receiver


def summarize(payload: dict[str, Any]) -> list[str]:
    """One line per alert of an Alertmanager webhook payload (labels only: they name no secret)."""
    lines = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        shown = ", ".join(
            f"{k}={v}" for k, v in labels.items() if k in ("detector", "severity", "customer", "invoice", "currency")
        )
        lines.append(f"{alert.get('status', '?').upper()} {labels.get('alertname', '?')} ({shown})")
    return lines


class Store:
    """What the demo received, on disk under one directory (so it can be looked at after the run too)."""

    def __init__(self, root: Path):
        self.root = root
        self.mail_dir = root / "mail"
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self.webhooks = root / "webhooks.jsonl"

    def add_webhook(self, path: str, payload: dict[str, Any]) -> None:
        with self.webhooks.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"received": time.time(), "path": path, "payload": payload}) + "\n")

    def add_mail(self, raw: bytes) -> Path:
        path = self.mail_dir / f"{time.time_ns()}.eml"
        path.write_bytes(raw)
        return path

    def mails(self) -> list[Path]:
        return sorted(self.mail_dir.glob("*.eml"), reverse=True)

    def webhook_lines(self) -> list[dict[str, Any]]:
        try:
            lines = self.webhooks.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in reversed(lines) if line.strip()]


def receiver_app(store: Store | None) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="not JSON")
        for line in summarize(payload):
            say(f"webhook received: {line}")
        if store is not None:
            store.add_webhook(request.path, payload)
        return web.Response(text="ok")

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", receive)
    return app


# -------------------------------------------------------------------------------------------------- mail catcher


class SmtpHandler:
    def __init__(self, store: Store):
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        self.store.add_mail(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        say(f"email received: to {', '.join(envelope.rcpt_tos)}: {msg['Subject']}")
        return "250 Message accepted for delivery"


def _mail_html(msg: email.message.EmailMessage) -> str:
    body = msg.get_body(preferencelist=("html", "plain"))
    if body is None:
        return ""
    content = body.get_content()
    return content if body.get_content_subtype() == "html" else f"<pre>{html.escape(content)}</pre>"


def mail_ui_app(store: Store) -> web.Application:
    async def index(_: web.Request) -> web.Response:
        rows = []
        for path in store.mails()[:200]:
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            rows.append(
                f"<tr><td>{html.escape(str(msg['Date'] or ''))}</td><td>{html.escape(str(msg['To'] or ''))}</td>"
                f"<td><a href='/mail/{path.name}'>{html.escape(str(msg['Subject'] or '(no subject)'))}</a></td></tr>"
            )
        hooks = []
        for item in store.webhook_lines()[:200]:
            when = time.strftime("%H:%M:%S", time.localtime(item["received"]))
            for line in summarize(item["payload"]):
                hooks.append(f"<li>{when} {html.escape(line)}</li>")
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='5'>"
            "<title>BillingWatch demo inbox</title></head><body style='font-family:sans-serif'>"
            "<h1>BillingWatch demo inbox</h1><p>Refreshes every 5 s. Files: "
            f"{html.escape(str(store.root))}</p><h2>Emails</h2>"
            "<table border='1' cellpadding='4'><tr><th>Date</th><th>To</th><th>Subject</th></tr>"
            + "".join(rows)
            + "</table><h2>Webhook notifications</h2><ul>"
            + "".join(hooks)
            + "</ul></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def show(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = store.mail_dir / name
        if "/" in name or not name.endswith(".eml") or not path.is_file():
            raise web.HTTPNotFound()
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        return web.Response(text=_mail_html(msg), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/mail/{name}", show)
    return app


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_catcher(args: argparse.Namespace) -> None:
    from aiosmtpd.controller import Controller

    store = Store(args.dir)
    smtp = Controller(SmtpHandler(store), hostname=args.host, port=args.smtp_port)
    smtp.start()
    runners = [
        await _serve(receiver_app(store), args.host, args.webhook_port),
        await _serve(mail_ui_app(store), args.host, args.ui_port),
    ]
    say(f"mail catcher: SMTP {args.host}:{args.smtp_port}, inbox http://{args.host}:{args.ui_port}/ ({store.root})")
    say(f"webhook receiver: http://{args.host}:{args.webhook_port}/")
    try:
        await _until_signalled()
    finally:
        smtp.stop()
        for runner in runners:
            await runner.cleanup()


async def run_receiver(args: argparse.Namespace) -> None:
    runner = await _serve(receiver_app(None), args.host, args.webhook_port)
    say(f"webhook receiver: http://{args.host}:{args.webhook_port}/")
    try:
        await _until_signalled()
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------------------------- traffic


def demo_events() -> list[tuple[str, dict[str, Any]]]:
    """(what, event): a few ordinary payments, then the same customer charged twice for the same amount."""
    now = int(time.time())
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (cus, amount, cur) in enumerate(
        [("cus_demo_ada", 2_900, "usd"), ("cus_demo_grace", 4_900, "eur"), ("cus_demo_alan", 990, "usd")]
    ):
        ch = samples.charge(amount=amount, currency=cur, customer=cus, created=now - 60 + i)
        out.append((f"charge.succeeded {cus} {amount / 100:.2f} {cur}", samples.event("charge.succeeded", ch)))
        inv = samples.invoice(total=amount, currency=cur, customer=cus, created=now - 60 + i)
        out.append((f"invoice.paid {cus}", samples.event("invoice.paid", inv)))
    declined = samples.charge(amount=1_500, customer="cus_demo_linus", status="failed", failure_code="card_declined")
    out.append(("charge.failed cus_demo_linus card_declined", samples.event("charge.failed", declined)))
    # A new customer id on every run, so that each demo run produces a new alert and email (a repeat of the same
    # anomaly within the hour is, rightly, not notified again).
    double = f"cus_demo_double_{secrets.token_hex(3)}"
    for n in (1, 2):
        ch = samples.charge(amount=12_000, currency="usd", customer=double)
        out.append(
            (
                f"charge.succeeded {double} 120.00 usd (#{n}: a DUPLICATE charge)",
                samples.event("charge.succeeded", ch),
            )
        )
    return out


def send(url: str, secret: str, event: dict[str, Any]) -> int:
    body = json.dumps(event).encode()
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": samples.sign(body, secret)},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def run_traffic(args: argparse.Namespace) -> int:
    secret = (args.secret or os.environ.get("STRIPE_WEBHOOK_SECRET", "")).split(",")[0].strip()
    if not secret:
        print("demo traffic: no secret (--secret or STRIPE_WEBHOOK_SECRET)", file=sys.stderr)
        return 2
    failures = 0
    for what, event in demo_events():
        status = send(args.url, secret, event)
        failures += status != 200
        say(f"sent {what} -> HTTP {status}")
        time.sleep(args.pause)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("catcher", help="mail catcher (SMTP + inbox page) and webhook receiver")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--smtp-port", type=int, default=int(os.environ.get("DEMO_SMTP_PORT", "1025")))
    p.add_argument("--webhook-port", type=int, default=int(os.environ.get("DEMO_WEBHOOK_PORT", "5001")))
    p.add_argument("--ui-port", type=int, default=int(os.environ.get("DEMO_INBOX_PORT", "8025")))
    p.add_argument("--dir", type=Path, default=REPO / ".data" / "demo")
    p = sub.add_parser("receiver", help="only the webhook receiver (prints each notification)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--webhook-port", type=int, default=int(os.environ.get("DEMO_WEBHOOK_PORT", "5001")))
    p = sub.add_parser("traffic", help="send signed demo events, including a duplicate charge")
    p.add_argument("--url", default="http://127.0.0.1:8000/webhooks/stripe")
    p.add_argument("--secret", help="signing secret (default: the first of STRIPE_WEBHOOK_SECRET)")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between events")
    args = parser.parse_args(argv)
    if args.cmd == "traffic":
        return run_traffic(args)
    runner = run_catcher if args.cmd == "catcher" else run_receiver
    try:
        asyncio.run(runner(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
