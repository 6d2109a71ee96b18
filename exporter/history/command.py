"""CLI subcommands of the history tools: fetch-events, simulate, replay, backtest."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from exporter.config import Config, ConfigError, load_config

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_config_or_report(path: str | None, command: str) -> Config | None:
    """The config (defaults without a file), or None after printing why it is invalid."""
    try:
        return load_config(path, env={})
    except ConfigError as exc:
        _err(f"billingwatch {command}: invalid configuration:")
        for e in exc.errors:
            _err(f"  {e}")
        return None


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
        help="seconds between virtual scrapes (default: 15 s, coarser for long histories: at most 25,000 scrapes)",
    )
    p.add_argument("--tail", type=float, default=0.0, help="seconds to keep evaluating after the last event")


def _backtest(args: argparse.Namespace) -> int:
    from exporter.history.backtest import DEFAULT_RULES_DIR, print_table, run_backtest
    from exporter.history.events_file import HistoryFileError
    from exporter.history.prom import PrometheusError

    if args.scrape_interval is not None and not 1 <= args.scrape_interval <= 3600:
        _err("billingwatch backtest: --scrape-interval must be between 1 and 3600 seconds")
        return 2
    config = load_config_or_report(args.config, "backtest")
    if config is None:
        return 1
    import logging
    import tempfile

    # Detectors log each anomaly; in a backtest the table is the report, so only errors reach stderr.
    logging.getLogger("billingwatch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="billingwatch-rules-") as rendered:
        if args.rules:
            rules_dir = Path(args.rules)
        elif args.config or not DEFAULT_RULES_DIR.is_dir():
            # The user's thresholds, or (installed without the repository's rules/) the defaults, rendered.
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
    p.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="live mode: events per second, averaged over a day; the diurnal curve makes the actual rate "
        "0.4x to 1.6x of it by time of day (default 5)",
    )
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
    p.add_argument(
        "--seed",
        type=int,
        help="random seed: the same seed, the same traffic (default: 1 for --output; a new one for every live run, "
        "so that a second run sends new ids, customers and charges rather than redeliveries of the first)",
    )
    p.add_argument(
        "--scenario",
        help="history mode: write an evaluation-corpus scenario instead (`billingwatch evaluate --list`); "
        "--manifest then gets its labels",
    )


def _simulate(args: argparse.Namespace) -> int:
    if args.output:
        return _simulate_history(args)
    if not args.url:
        _err("billingwatch simulate: pass --url to send traffic, or --output FILE to write a history")
        return 2
    from exporter.history.simulate import run_live

    secret = _secret(args)
    if not secret:
        _err("billingwatch simulate: no secret: pass --secret or set STRIPE_WEBHOOK_SECRET")
        return 2
    from exporter.rulegen.durations import parse_seconds

    try:
        duration = parse_seconds(args.duration)
    except ValueError as exc:
        _err(f"billingwatch simulate: --duration: {exc}")
        return 2
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    return run_live(
        url=args.url, secret=secret, rate=args.rate, duration=duration, anomalies=args.anomaly, seed=seed,
        log=_err,
    )  # fmt: skip


def _simulate_history(args: argparse.Namespace) -> int:
    from exporter.history.generator import HistoryGenerator, history_lines

    start = args.start if args.start is not None else time.time() - args.days * 86400
    try:
        if args.scenario:
            return _simulate_scenario(args)
        gen = HistoryGenerator(
            start=start, days=args.days, events_per_day=args.events_per_day, anomalies=args.anomaly,
            seed=1 if args.seed is None else args.seed,
        )  # fmt: skip
        _err(f"simulate: generating {args.days:g} days at {args.events_per_day} events a day ...")
        pairs = gen.generate()
    except ValueError as exc:
        _err(f"billingwatch simulate: {exc}")
        return 2
    _err(f"simulate: writing {len(pairs)} deliveries to {args.output} ...")
    next_report = time.monotonic() + 5.0
    with open(args.output, "wb") as out:
        for n, line in enumerate(history_lines(pairs), 1):
            out.write(orjson.dumps(line) + b"\n")
            if n % 4096 == 0 and time.monotonic() >= next_report:
                next_report = time.monotonic() + 5.0
                _err(f"  {n}/{len(pairs)} ({n / len(pairs):.0%})")
    if args.manifest:
        with open(args.manifest, "wb") as out:
            out.write(orjson.dumps([inj.as_dict() for inj in gen.injections], option=orjson.OPT_INDENT_2))
    unique = len({e["id"] for _, e in pairs})
    _err(f"wrote {len(pairs)} deliveries ({unique} unique events, {len(pairs) - unique} redeliveries) to {args.output}")
    for inj in gen.injections:
        who = " ".join(x for x in (inj.customer, inj.subscription) if x)
        _err(f"  anomaly {inj.name} at {_iso(inj.start)}: {inj.note} {who}".rstrip())
    return 0


def _simulate_scenario(args: argparse.Namespace) -> int:
    from exporter.history.corpus import BY_NAME
    from exporter.history.generator import history_lines

    if args.scenario not in BY_NAME:
        raise ValueError(f"unknown scenario {args.scenario!r}; choose from {', '.join(BY_NAME)}")
    pairs, labels = BY_NAME[args.scenario].generate()
    with open(args.output, "wb") as out:
        for line in history_lines(pairs):
            out.write(orjson.dumps(line) + b"\n")
    if args.manifest:
        with open(args.manifest, "wb") as out:
            out.write(orjson.dumps([lb.as_dict() for lb in labels], option=orjson.OPT_INDENT_2))
    _err(f"wrote {len(pairs)} deliveries of scenario {args.scenario} to {args.output}")
    for lb in labels:
        _err(f"  {lb.kind} at {_iso(lb.start)}: {lb.note}")
    return 0


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- replay --------------------------------------------------------------------------------------------------------


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help='JSON lines: Stripe events, or {"received": <unix s>, "event": {...}}')
    p.add_argument("--url", required=True, help="webhook URL, e.g. http://127.0.0.1:8000/webhooks/stripe")
    p.add_argument("--secret", help="signing secret (default: the first of STRIPE_WEBHOOK_SECRET)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=float,
        help="replay the recorded gaps this many times faster (default: fast enough to finish within 10 minutes; "
        "1 is real time)",
    )
    pace.add_argument("--max", action="store_true", help="send back to back, as fast as the exporter answers")
    p.add_argument(
        "--rebase",
        action="store_true",
        help="shift event `created` times so the history ends now (otherwise the exporter sees their real age)",
    )
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at most (default 16)")


def _replay(args: argparse.Namespace) -> int:
    from exporter.history.events_file import HistoryFileError
    from exporter.history.replay import run_replay

    secret = _secret(args)
    if not secret:
        _err("billingwatch replay: no secret: pass --secret or set STRIPE_WEBHOOK_SECRET")
        return 2
    if args.speed is not None and args.speed <= 0:
        _err("billingwatch replay: --speed must be positive")
        return 2
    try:
        return run_replay(
            args.file, url=args.url, secret=secret, speed=args.speed, as_fast_as_possible=args.max,
            rebase=args.rebase, concurrency=max(1, args.concurrency), log=_err,
        )  # fmt: skip
    except HistoryFileError as exc:
        _err(f"billingwatch replay: {exc}")
        return 1


def _secret(args: argparse.Namespace) -> str:
    return args.secret or (os.environ.get("STRIPE_WEBHOOK_SECRET") or "").split(",")[0].strip()


# -- fetch-events --------------------------------------------------------------------------------------------------


def _fetch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", default="30d", help="how far back: 30d, 12h or a unix timestamp (default 30d)")
    p.add_argument(
        "--type",
        action="append",
        default=[],
        dest="types",
        metavar="TYPE",
        help="only this event type (repeatable, up to 20; one type may be a wildcard such as invoice.*)",
    )
    p.add_argument("--output", "-o", help="write to this file instead of stdout (needed for --resume)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted fetch: append to --output after the last event it holds",
    )
    p.add_argument(
        "--api-base",
        default=os.environ.get("STRIPE_API_BASE"),
        help="Stripe API base URL (env STRIPE_API_BASE; default Stripe's own; for tests and proxies)",
    )


def _fetch(args: argparse.Namespace) -> int:
    import stripe

    from exporter.history.fetch import drop_partial_line, fetch_events, last_event_id, make_client, parse_since

    api_key = os.environ.get("STRIPE_API_KEY", "").strip()
    if not api_key:
        _err("billingwatch fetch-events: set STRIPE_API_KEY (a restricted key with read access to Events is enough)")
        return 2
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        _err(f"billingwatch fetch-events: {exc}")
        return 2
    if len(args.types) > 20:
        _err("billingwatch fetch-events: at most 20 --type values (a Stripe API limit)")
        return 2
    starting_after = None
    if args.resume:
        if not args.output:
            _err("billingwatch fetch-events: --resume needs --output FILE")
            return 2
        drop_partial_line(Path(args.output))
        starting_after = last_event_id(Path(args.output))
        if starting_after:
            _err(f"fetch-events: resuming after {starting_after}")
    client = make_client(api_key, args.api_base)
    _err(f"fetch-events: listing events created since {_iso(since)}")
    try:
        if args.output:
            with open(args.output, "ab" if args.resume else "wb") as out:
                fetch_events(client, out, since=since, types=args.types, starting_after=starting_after, log=_err)
        else:
            fetch_events(client, sys.stdout.buffer, since=since, types=args.types, log=_err)
    except stripe.AuthenticationError:
        _err("billingwatch fetch-events: Stripe refused the API key (401)")
        return 1
    except stripe.PermissionError:
        _err("billingwatch fetch-events: the API key may not read events (403): grant Events: read")
        return 1
    except stripe.StripeError as exc:
        _err(f"billingwatch fetch-events: Stripe API error: {exc.user_message or type(exc).__name__}")
        return 1
    return 0


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
    ("replay", "re-send recorded events to a running exporter, freshly signed", _replay_args, _replay),
    (
        "fetch-events",
        "list your Stripe events (last 30 days) as JSON lines, for backtests; needs STRIPE_API_KEY",
        _fetch_args,
        _fetch,
    ),
]
