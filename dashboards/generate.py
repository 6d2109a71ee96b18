"""Writes the dashboards' JSON (what Grafana provisions) from their Python definitions.

    .venv/bin/python -m dashboards.generate          # rewrite dashboards/json/*.json
    .venv/bin/python -m dashboards.generate --check  # exit 1 if the committed JSON is out of date

Run it after changing a dashboard, a threshold in exporter/defaults.yml or the shipped rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dashboards import operations, overview

JSON_DIR = Path(__file__).resolve().parent / "json"
BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    f"{overview.UID}.json": overview.build,
    f"{operations.UID}.json": operations.build,
}
# alert name -> panel path, read by the rule renderer for each alert's dashboard_url annotation (it ships in the
# exporter package, which must not need this directory).
PANELS_FILE = JSON_DIR.parent.parent / "exporter" / "rulegen" / "panels.json"


def render(dashboard: dict[str, Any]) -> str:
    """Stable text: sorted keys and two-space indent, so a diff shows only what changed."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(build()) for name, build in BUILDERS.items()}


def rendered_panels(dashboards: dict[str, str]) -> str:
    from dashboards import alert_links, check

    built = {uid: json.loads(dashboards[f"{uid}.json"]) for uid in (overview.UID, operations.UID)}
    urls = alert_links.panel_urls(
        {key: (uid, check.panels_of(built[uid])) for key, uid in (("overview", overview.UID),
                                                                   ("operations", operations.UID))}
    )
    return json.dumps(urls, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    args = parser.parse_args(argv)
    stale = []
    dashboards = rendered()
    files = {JSON_DIR / name: text for name, text in dashboards.items()}
    files[PANELS_FILE] = rendered_panels(dashboards)
    for path, text in files.items():
        name = path.name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(JSON_DIR.parent.parent)}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python -m dashboards.generate)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
