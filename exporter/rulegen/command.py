"""`billingwatch rules [--config FILE] [--output DIR] [--check]`: render the Prometheus rule files."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from exporter.config import ConfigError, load_config
from exporter.rulegen.config import RulesConfig
from exporter.rulegen.render import differences, write

DEFAULT_OUTPUT = "rules"


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=os.environ.get("BILLINGWATCH_CONFIG"),
        help="YAML config file whose `rules:` section sets the thresholds (env BILLINGWATCH_CONFIG; "
        "default: the built-in defaults)",
    )
    p.add_argument(
        "--output", "-o", default=DEFAULT_OUTPUT, help=f"directory for the rule files (default {DEFAULT_OUTPUT})"
    )
    # The setups that run the rules (scripts/run.sh, docker-compose.yml) know the addresses they serve.
    p.add_argument("--runbook-base-url", help="override rules.runbook_base_url (the alerts' runbook_url)")
    p.add_argument("--grafana-url", help='override rules.grafana_url ("" for no dashboard links)')
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file in --output differs from the render (for CI)",
    )


def _run(args: argparse.Namespace) -> int:
    try:
        # The environment only carries exporter settings (secrets, listeners); rules come from the file alone.
        config = load_config(args.config, env={})
        rules = _overridden(config.rules, args)
    except ConfigError as exc:
        print("billingwatch rules: invalid configuration:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    out = Path(args.output)
    if args.check:
        stale = differences(rules, out)
        for name in stale:
            print(f"{out / name}: differs from the render of the config", file=sys.stderr)
        if stale:
            print("run `billingwatch rules` to regenerate", file=sys.stderr)
            return 1
        print(f"{out}: rule files match the config")
        return 0
    changed = write(rules, out)
    for name in changed:
        print(f"wrote {out / name}")
    if not changed:
        print(f"{out}: rule files already up to date")
    return 0


def _overridden(rules: RulesConfig, args: argparse.Namespace) -> RulesConfig:
    changes = {k: v for k in ("runbook_base_url", "grafana_url") if (v := getattr(args, k)) is not None}
    if not changes:
        return rules
    rules = dataclasses.replace(rules, **changes)
    errors = [e for e in rules.validate() if e.split(":")[0] in (f"rules.{k}" for k in changes)]
    if errors:
        raise ConfigError([e.replace("rules.", "--", 1).replace("_", "-") for e in errors])
    return rules


COMMANDS = [("rules", "render the Prometheus rule files from the config's `rules:` section", _args, _run)]
