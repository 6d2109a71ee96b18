"""GET /runbook on the private listener: docs/runbook.md as HTML, one anchor per alert.

Every alert's runbook_url is `rules.runbook_base_url` + `#` + the alert name in lower case; the default base URL
is this page on the private listener's default address, so the link in a notification works in the setup that
sent it (run.sh, docker compose) without a repository host. The Markdown ships inside the package
(exporter/runbook.md is a link to docs/runbook.md, resolved when the package is built).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

from aiohttp import web

PATH = "/runbook"
_RELATIVE_LINK = re.compile(r'<a href="(?!https?:|#)([^"]+)">(.*?)</a>')

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BillingWatch runbook</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .2rem}} h2{{border-top:1px solid #ddd;padding-top:1rem}}
:target{{background:#fff6d5}}</style></head>
<body>{body}</body></html>
"""


@functools.cache
def page() -> str:
    """The rendered runbook (headings get ids the way GitHub makes anchors: `## BillingWatchX` -> #billingwatchx)."""
    try:
        text = resources.files("exporter").joinpath("runbook.md").read_text(encoding="utf-8")
    except OSError:
        return _PAGE.format(body="<p>The runbook is not part of this installation: see docs/runbook.md.</p>")
    # Imported here, on the first request for the page: the markdown package and the XML parser it brings cost
    # ~0.8 MB of RSS in every serving process, most of which never renders the runbook (issue 15).
    import markdown

    body = markdown.markdown(text, extensions=["toc", "tables", "fenced_code"], output_format="html")
    # Links to the other docs (alerting.md) are relative to docs/, which is not served: name the file instead.
    body = _RELATIVE_LINK.sub(r"\2 (docs/\1)", body)
    return _PAGE.format(body=body)


async def _handle(_: web.Request) -> web.Response:
    return web.Response(text=page(), content_type="text/html")


def routes() -> list[tuple[str, str, Any, str]]:
    """(method, path, handler, description) for web.private_app's extra_routes."""
    return [("GET", PATH, _handle, "what to do for each alert (the alerts' runbook_url)")]
