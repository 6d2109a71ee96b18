"""The `billingwatch` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from exporter import __version__
from exporter.config import ConfigError, load_config
from exporter.logs import setup_logging

DEFAULT_TRIGGER_URL = "http://127.0.0.1:8000/webhooks/stripe"

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=os.environ.get("BILLINGWATCH_CONFIG"),
        help="YAML config file (env BILLINGWATCH_CONFIG); every option has a default without one",
    )


def _serve_args(p: argparse.ArgumentParser) -> None:
    _add_config_flag(p)
    p.add_argument(
        "--listen", help="webhook listener HOST:PORT (env BILLINGWATCH_LISTEN; default 0.0.0.0:8000)"
    )
    p.add_argument(
        "--metrics-listen",
        help="private listener HOST:PORT for /metrics and the API "
        "(env BILLINGWATCH_METRICS_LISTEN; default 127.0.0.1:9847)",
    )
    p.add_argument(
        "--state", help="SQLite state file (env BILLINGWATCH_STATE; default billingwatch-state.sqlite3)"
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="env BILLINGWATCH_LOG_LEVEL; default info",
    )
    p.add_argument(
        "--mode",
        choices=("any", "live", "test"),
        help="which Stripe mode's events count (env BILLINGWATCH_MODE; default any)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        help="TLS and basic auth for the private listener, Prometheus exporter-toolkit format "
        "(env BILLINGWATCH_WEB_CONFIG_FILE; default none)",
    )


def _serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pairs = [
        ("listen", ("server", "listen")),
        ("metrics_listen", ("server", "metrics_listen")),
        ("state", ("state", "path")),
        ("log_level", ("log", "level")),
        ("mode", ("stripe", "mode")),
        ("web_config_file", ("server", "web_config_file")),
    ]
    for attr, (section, key) in pairs:
        value = getattr(args, attr, None)
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, overrides=_serve_overrides(args))
    except ConfigError as exc:
        return _config_failure(exc)
    if not config.stripe.webhook_secrets:
        print(
            "billingwatch: no webhook signing secret configured, refusing to start.\n"
            "  Set STRIPE_WEBHOOK_SECRET=whsec_... (comma-separated for several), STRIPE_WEBHOOK_SECRET_FILE=PATH, or\n"
            "  stripe.webhook_secrets in the config file. `stripe listen` prints the secret for local forwarding;\n"
            "  the Stripe dashboard shows an endpoint's secret under Developers > Webhooks.",
            file=sys.stderr,
        )
        return 2
    setup_logging(config.log.level, config.log.format)
    from exporter.service import serve_forever

    try:
        import uvloop  # faster event loop where available

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    from exporter.state import StateError

    try:
        runner(serve_forever(config))
    except ConfigError as exc:  # the web config file (TLS certificates, users) is read as the service starts
        return _config_failure(exc)
    except StateError as exc:
        print(f"billingwatch: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"billingwatch: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _config_failure(exc: ConfigError) -> int:
    print("billingwatch: invalid configuration:", file=sys.stderr)
    for err in exc.errors:
        print(f"  {err}", file=sys.stderr)
    return 1


def _check_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="YAML config file to validate")


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, env={})
        from exporter.webconfig import load_web_config

        load_web_config(config.server.web_config_file)  # certificates and users, as serve reads them
    except ConfigError as exc:
        return _config_failure(exc)
    secrets = len(config.stripe.webhook_secrets)
    note = "" if secrets else " (no webhook secret in the file: serve needs STRIPE_WEBHOOK_SECRET)"
    print(f"{args.file}: OK{note}")
    return 0


def _trigger_args(p: argparse.ArgumentParser) -> None:
    from exporter.samples import TRIGGER_TYPES

    p.add_argument("type", metavar="TYPE", help=f"event type, one of: {', '.join(TRIGGER_TYPES)}")
    p.add_argument("--url", default=DEFAULT_TRIGGER_URL, help=f"webhook URL (default {DEFAULT_TRIGGER_URL})")
    p.add_argument("--secret", help="signing secret (default: the first of STRIPE_WEBHOOK_SECRET)")
    p.add_argument("--livemode", action="store_true", help="mark the event as live mode (default: test mode)")


def _trigger(args: argparse.Namespace) -> int:
    from exporter.samples import sign, trigger_event

    secret = args.secret or (os.environ.get("STRIPE_WEBHOOK_SECRET") or "").split(",")[0].strip()
    if not secret:
        print("billingwatch trigger: no secret: pass --secret or set STRIPE_WEBHOOK_SECRET", file=sys.stderr)
        return 2
    try:
        event = trigger_event(args.type, livemode=args.livemode)
    except ValueError as exc:
        print(f"billingwatch trigger: {exc}", file=sys.stderr)
        return 2
    body = orjson.dumps(event)
    req = urllib.request.Request(
        args.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign(body, secret),
            "User-Agent": f"billingwatch-trigger/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"billingwatch trigger: cannot reach {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr
        )
        return 1
    print(f"{args.type} {event['id']} -> HTTP {status} {text.strip()}")
    return 0 if status == 200 else 1


COMMANDS: list[Command] = [
    ("serve", "run the exporter (webhook listener and private metrics listener)", _serve_args, _serve),
    (
        "check-config",
        "validate a YAML config file; exit 0 if valid, 1 if not",
        _check_config_args,
        _check_config,
    ),
    ("trigger", "send one realistic, correctly signed test event", _trigger_args, _trigger),
]


def _extra_commands() -> list[Command]:
    """Commands that live in their own modules, imported lazily so `serve` starts fast."""
    found: list[Command] = []
    for module_name in ("exporter.rulegen.command", "exporter.history.command", "exporter.history.evaluate"):
        try:
            module = __import__(module_name, fromlist=["COMMANDS"])
        except ModuleNotFoundError as exc:
            if not exc.name or not module_name.startswith(exc.name):
                raise
            continue
        found.extend(module.COMMANDS)
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(
        prog="billingwatch", description="Prometheus-native Stripe billing monitor"
    )
    parser.add_argument("--version", action="version", version=f"billingwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}
    for name, help_text, add_args, handler in COMMANDS + _extra_commands():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        handlers[name] = handler
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        # Ctrl-C during a long replay, simulate or backtest: a one-line note, not a traceback. 130 = 128 + SIGINT,
        # what shells report for a command stopped that way. The command's own cleanup (temporary files, the
        # backtest's Prometheus) has run on the way here; leaving without the interpreter's teardown keeps objects
        # the interrupt left half-built (an event loop being created) from printing their own tracebacks.
        print(f"\nbillingwatch {args.command}: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


if __name__ == "__main__":
    raise SystemExit(main())
