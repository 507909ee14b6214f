"""The README and docs/*.md link only to files that exist and to headings that exist.

Relative links are resolved from the page that holds them; an ``#anchor`` must be the GitHub slug
of a heading of its target page (lower case, punctuation dropped, spaces to hyphens, repeats
numbered). Links inside code blocks and inline code are not links."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def without_code(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def heading_slugs(page: Path) -> set[str]:
    slugs: set[str] = set()
    seen: dict[str, int] = {}
    for line in re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1).lower())
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in heading_slugs(dest)):
            broken.append(f"{target}: no such heading")
    return broken


def test_heading_slugs_follow_github():
    page = ROOT / "docs" / "results.md"
    slugs = heading_slugs(page)
    assert "several-corpora-issue-21" in slugs
    assert "the-runtime-predict-timeline-and-serve-without-torch-2026-12-06" in slugs


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []
