"""CLI subcommands of the history tools: fetch-events, simulate, replay, backtest."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from exporter.config import ConfigError, load_config

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- backtest ------------------------------------------------------------------------------------------------------


def _backtest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help='JSON lines: Stripe events, or {"received": <unix s>, "event": {...}}')
    p.add_argument("--config", "-c", help="billingwatch.yml with your thresholds (default: the shipped defaults)")
    p.add_argument(
        "--rules",
        help="directory of Prometheus rule files (default: the shipped rules/, or rules rendered from --config)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per alert and line instead of a table")
    p.add_argument(
        "--scrape-interval",
        type=float,
        help="seconds between virtual scrapes (default: 15 s, coarser for long histories: at most 45,000 scrapes)",
    )
    p.add_argument("--tail", type=float, default=0.0, help="seconds to keep evaluating after the last event")


def _backtest(args: argparse.Namespace) -> int:
    from exporter.history.backtest import DEFAULT_RULES_DIR, print_table, run_backtest
    from exporter.history.events_file import HistoryFileError
    from exporter.history.prom import PrometheusError

    try:
        config = load_config(args.config, env={})
    except ConfigError as exc:
        _err("billingwatch backtest: invalid configuration:")
        for e in exc.errors:
            _err(f"  {e}")
        return 1
    import logging
    import tempfile

    # Detectors log each anomaly; in a backtest the table is the report, so only errors reach stderr.
    logging.getLogger("billingwatch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="billingwatch-rules-") as rendered:
        if args.rules:
            rules_dir = Path(args.rules)
        elif args.config:
            rules_dir = _render_rules(config, Path(rendered)) or DEFAULT_RULES_DIR
        else:
            rules_dir = DEFAULT_RULES_DIR
        try:
            result = run_backtest(
                args.file,
                config=config,
                rules_dir=rules_dir,
                interval=args.scrape_interval,
                tail_seconds=args.tail,
                log=_err,
            )
        except (HistoryFileError, PrometheusError, FileNotFoundError, ValueError) as exc:
            _err(f"billingwatch backtest: {exc}")
            return 1
    if args.json:
        out = sys.stdout.buffer
        for alert in result.alerts:
            out.write(orjson.dumps(alert.as_dict()) + b"\n")
        out.flush()
    else:
        print_table(result.alerts)
    return 0


def _render_rules(config: object, target: Path) -> Path | None:
    """Rules rendered from the user's config by the rules renderer, when that renderer is available."""
    try:
        from exporter.rulegen.render import write
    except ImportError:
        _err("billingwatch backtest: no rules renderer available; using the shipped rules (thresholds may differ)")
        return None
    write(config.rules, target)  # type: ignore[attr-defined]
    return target


# -- simulate ------------------------------------------------------------------------------------------------------


def _simulate_args(p: argparse.ArgumentParser) -> None:
    from exporter.history.generator import ANOMALIES

    p.add_argument(
        "--url", help="webhook URL to send live, signed traffic to (e.g. http://127.0.0.1:8000/webhooks/stripe)"
    )
    p.add_argument("--secret", help="signing secret (default: the first of STRIPE_WEBHOOK_SECRET)")
    p.add_argument("--rate", type=float, default=5.0, help="live mode: mean events per second (default 5)")
    p.add_argument("--duration", default="60s", help="live mode: how long to send, e.g. 90s, 10m (default 60s)")
    p.add_argument(
        "--anomaly",
        action="append",
        default=[],
        choices=ANOMALIES,
        metavar="NAME",
        help=f"inject an anomaly (repeatable): {', '.join(ANOMALIES)}",
    )
    p.add_argument("--output", "-o", help="history mode: write a history file (JSON lines) instead of sending")
    p.add_argument("--days", type=float, default=10.0, help="history mode: days of history (default 10)")
    p.add_argument("--events-per-day", type=int, default=2000, help="history mode: events a day (default 2000)")
    p.add_argument("--start", type=float, help="history mode: unix time of the first event (default: --days ago)")
    p.add_argument("--manifest", help="history mode: also write the injected anomalies (times, customers) as JSON")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1): the same seed, the same traffic")


def _simulate(args: argparse.Namespace) -> int:
    if args.output:
        return _simulate_history(args)
    if not args.url:
        _err("billingwatch simulate: pass --url to send traffic, or --output FILE to write a history")
        return 2
    from exporter.history.simulate import run_live

    secret = args.secret or (os.environ.get("STRIPE_WEBHOOK_SECRET") or "").split(",")[0].strip()
    if not secret:
        _err("billingwatch simulate: no secret: pass --secret or set STRIPE_WEBHOOK_SECRET")
        return 2
    from exporter.history.rules_eval import parse_duration

    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        _err(f"billingwatch simulate: --duration: {exc}")
        return 2
    return run_live(
        url=args.url, secret=secret, rate=args.rate, duration=duration, anomalies=args.anomaly, seed=args.seed,
        log=_err,
    )  # fmt: skip


def _simulate_history(args: argparse.Namespace) -> int:
    import time

    from exporter.history.generator import HistoryGenerator, history_lines

    start = args.start if args.start is not None else time.time() - args.days * 86400
    try:
        gen = HistoryGenerator(
            start=start, days=args.days, events_per_day=args.events_per_day, anomalies=args.anomaly, seed=args.seed
        )
        pairs = gen.generate()
    except ValueError as exc:
        _err(f"billingwatch simulate: {exc}")
        return 2
    with open(args.output, "wb") as out:
        for line in history_lines(pairs):
            out.write(orjson.dumps(line) + b"\n")
    if args.manifest:
        with open(args.manifest, "wb") as out:
            out.write(orjson.dumps([inj.as_dict() for inj in gen.injections], option=orjson.OPT_INDENT_2))
    unique = len({e["id"] for _, e in pairs})
    _err(f"wrote {len(pairs)} deliveries ({unique} unique events, {len(pairs) - unique} redeliveries) to {args.output}")
    for inj in gen.injections:
        who = " ".join(x for x in (inj.customer, inj.subscription) if x)
        _err(f"  anomaly {inj.name} at {_iso(inj.start)}: {inj.note} {who}".rstrip())
    return 0


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


COMMANDS: list[Command] = [
    (
        "backtest",
        "evaluate the shipped rules and detectors over a history of Stripe events: which alerts would have fired",
        _backtest_args,
        _backtest,
    ),
    (
        "simulate",
        "send realistic signed traffic with injected anomalies, or write a history file",
        _simulate_args,
        _simulate,
    ),
]
