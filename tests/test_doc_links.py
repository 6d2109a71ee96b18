"""Every relative link in the repository's Markdown (README, CHANGELOG, docs/, contrib/) names a file that exists
and, with a `#fragment`, a heading of that file: a user following the docs never lands on a 404 or the top of the
wrong page. Anchors are GitHub's: the heading in lower case, punctuation dropped, spaces as hyphens, and `-1`,
`-2` ... for repeats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def markdown_files() -> list[Path]:
    files = [*REPO.glob("*.md"), *REPO.glob("docs/*.md"), *REPO.glob("contrib/**/*.md"), *REPO.glob("rules/*.md")]
    # exporter/runbook.md is a link to docs/runbook.md (packaged); its links are docs/'s.
    return sorted(p for p in files if not p.is_symlink())


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"^#{1,6}\s+(.*)", line):
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            found.add(s if n == 0 else f"{s}-{n}")
        found.update(re.findall(r'<a (?:name|id)="([^"]+)"', line))
    return found


def broken_links(path: Path) -> list[str]:
    out = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part) if file_part else path
        if not dest.exists():
            out.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            out.append(f"{target}: no such heading in {dest.name}")
    return out


def test_the_link_check_sees_the_docs_and_catches_a_broken_link(tmp_path: Path) -> None:
    assert len(markdown_files()) >= 10
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## Step 2: upgrade\n", encoding="utf-8")
    page.write_text(
        "[ok](other.md) [ok](other.md#step-2-upgrade) [web](https://example.com/x) [self](#a-title)\n"
        "# A title\n[gone](missing.md) [bad anchor](other.md#step-3)\n```\n[in code](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["missing.md: no such file", "other.md#step-3: no such heading in other.md"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []
