"""Writes the dashboards' JSON (what Grafana provisions) from their Python definitions.

    .venv/bin/python -m dashboards.generate          # rewrite dashboards/json/*.json
    .venv/bin/python -m dashboards.generate --check  # exit 1 if the committed JSON is out of date
    .venv/bin/python -m dashboards.generate --config billingwatch.yml --output DIR  # with your thresholds

Run it after changing a dashboard, a threshold in exporter/defaults.yml or the shipped rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dashboards import operations, overview, sources
from exporter.config import ConfigError

JSON_DIR = Path(__file__).resolve().parent / "json"
BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    f"{overview.UID}.json": overview.build,
    f"{operations.UID}.json": operations.build,
}


def render(dashboard: dict[str, Any]) -> str:
    """Stable text: sorted keys and two-space indent, so a diff shows only what changed."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(build()) for name, build in BUILDERS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    parser.add_argument(
        "--config", help="billingwatch.yml whose `rules:` thresholds the panels draw (default: the shipped defaults)"
    )
    parser.add_argument("--output", type=Path, help="directory of the JSON files (default: dashboards/json)")
    args = parser.parse_args(argv)
    try:
        sources.use_config(args.config)
        dashboards = rendered()
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    stale = []
    out_dir = args.output or JSON_DIR
    files = {out_dir / name: text for name, text in dashboards.items()}
    for path, text in files.items():
        name = path.name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python -m dashboards.generate)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
