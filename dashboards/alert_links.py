"""Which panel explains each alert of the shipped rules, and the PromQL that attaches that panel's address to the
alert's row in the overview's "Firing alerts" table (clicking the alert name opens the panel).

Prometheus alerts cannot carry a Grafana panel id by themselves, and a table cannot look values up, so the query
adds a `panel_url` label with one label_replace() per entry of exporter/panels.py (the table the rules' links
read too). tests/test_dashboards.py checks that every alert of rules/*.yml has an entry and that every entry names
an existing alert and panel.
"""

from __future__ import annotations

from typing import Any

from exporter import panels

# alert name -> (dashboard key, panel title or title prefix), from the table the rules read too. Keys: "overview",
# "operations".
KEYS = {panels.OVERVIEW: "overview", panels.OPERATIONS: "operations"}
ALERT_PANELS: dict[str, tuple[str, str]] = {
    alert: (KEYS[uid], title) for alert, (uid, _, title) in panels.ALERT_PANELS.items()
}
LABEL = "panel_url"


def find_panel(panels: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """The one panel titled `title`, or else the one whose title starts with it (titles that name a window)."""
    found = [p for p in panels if p["title"] == title] or [p for p in panels if p["title"].startswith(title)]
    if len(found) != 1:
        raise LookupError(f"{len(found)} panels titled {title!r}")
    return found[0]


def panel_urls(dashboards: dict[str, tuple[str, list[dict[str, Any]]]]) -> dict[str, str]:
    """alert name -> `/d/<uid>?viewPanel=<id>`, from {key: (uid, panels)}."""
    out = {}
    for alert, (key, title) in ALERT_PANELS.items():
        uid, panels = dashboards[key]
        out[alert] = f"/d/{uid}?viewPanel={find_panel(panels, title)['id']}"
    return out


def checked_panel_urls(dashboards: dict[str, tuple[str, list[dict[str, Any]]]]) -> dict[str, str]:
    """panel_urls(), which must be the addresses exporter/panels.py gives the rules (else a LookupError)."""
    urls = panel_urls(dashboards)
    moved = {alert: url for alert, url in urls.items() if url != panels.panel_path(alert)}
    if moved:
        raise LookupError(f"update exporter/panels.py: the dashboards place these alerts' panels at {moved}")
    return urls


def with_panel_urls(expr: str, urls: dict[str, str]) -> str:
    """`expr` with a panel_url label on every series whose alertname has a panel (others are left as they are)."""
    by_url: dict[str, list[str]] = {}
    for alert, url in urls.items():
        by_url.setdefault(url, []).append(alert)
    for url, alerts in sorted(by_url.items()):
        expr = f'label_replace({expr}, "{LABEL}", "{url}", "alertname", "{"|".join(sorted(alerts))}")'
    return expr
