"""The documentation keeps one home per figure: what the README and the configs quote, the docs hold.

- The README stays under 10,000 bytes, and every figure of its results table (the cells outside the
  command column) stands in docs/benchmarks.md, where its machine and command are given.
- Every figure a config's comment quotes (a number with its unit: img/s, ms, s, minutes, mIoU, %,
  GB, MB, ×) stands, with that unit, in the README or a docs/ page.
- Every docs/ page stays under 25,000 bytes and starts, under its title, with a summary of at most three
  lines and a contents list of links to its own sections, each of which exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
UNIT_FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?(?:img/s|ms\b|s\b|minutes|min\b|mIoU|%|GB|MB|×)")


def _numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


def _results_table(readme: str) -> list[list[str]]:
    """The README's "## Results" table as rows of cells (header and rule left out)."""
    section = readme.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "the README's Results section has no table"
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readme_is_short():
    assert (ROOT / "README.md").stat().st_size <= 10_000


def test_every_figure_of_the_readme_results_stands_in_the_benchmarks_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    benchmarks = _numbers((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
    missing = []
    for cells in _results_table(readme):
        for cell in cells:
            figures = re.sub(r"`[^`]*`", "", cell)  # commands and file names are not figures
            figures = re.sub(r"\[[^\]]*\]\([^)]*\)", "", figures)  # nor links
            missing += [(cells[0], n) for n in _numbers(figures) if n not in benchmarks]
    assert not missing, f"README figures that docs/benchmarks.md does not hold: {missing}"


def test_the_configs_comments_quote_only_figures_the_docs_hold():
    docs = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8")
                  + "".join(page.read_text(encoding="utf-8") for page in DOCS))
    missing = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            comment = line.split("#", 1)[1] if "#" in line else ""
            missing += [f"{path.relative_to(ROOT)}:{number}: {f}" for f in UNIT_FIGURE.findall(comment)
                        if f not in docs and f.replace(" ", "") not in docs]
    assert not missing, f"figures in config comments that no page holds: {missing}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_each_page_is_under_25_kb_and_opens_with_a_summary_and_its_contents(page):
    text = page.read_text(encoding="utf-8")
    assert len(text.encode()) <= 25_000, f"{page.name}: {len(text.encode())} bytes"
    lines = text.splitlines()
    assert lines[0].startswith("# "), f"{page.name}: no title"
    body = [line for line in lines[1:] if line.strip()]
    summary = []
    for line in body:
        if line.startswith(("Contents", "- [", "## ")):
            break
        summary.append(line)
    assert 1 <= len(summary) <= 3, f"{page.name}: the summary under the title has {len(summary)} lines"
    contents_start = lines.index(body[len(summary)])
    contents = []
    for line in lines[contents_start:]:
        if line.startswith("## "):
            break
        contents.append(line)
    links = re.findall(r"\]\(#([^)]+)\)", "\n".join(contents))
    assert len(links) >= 2, f"{page.name}: no contents list under the summary"
    anchors = {_anchor(line[3:]) for line in lines if line.startswith(("## ", "### "))}
    assert set(links) <= anchors, f"{page.name}: contents links without a section: {set(links) - anchors}"


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS], ids=lambda p: p.name)
def test_no_page_keeps_a_placeholder(page):
    """A figure left to fill in (a line that is one upper-case token, or ⟨name⟩) never ships."""
    lines = page.read_text(encoding="utf-8").splitlines()
    left = [line for line in lines if re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", line.strip()) or "⟨" in line]
    assert not left, f"{page.name}: placeholders {left}"


def test_links_between_pages_reach_a_section_that_exists():
    pages = {page.name: page for page in DOCS}
    anchors = {name: {_anchor(line.lstrip("#")) for line in page.read_text(encoding="utf-8").splitlines()
                      if line.startswith("#")} for name, page in pages.items()}
    broken = []
    for source in [ROOT / "README.md", *DOCS]:
        for target, anchor in re.findall(r"\]\((?:docs/)?([a-z_]+\.md)#([^)]+)\)", source.read_text(encoding="utf-8")):
            if target in anchors and anchor not in anchors[target]:
                broken.append(f"{source.name} -> {target}#{anchor}")
    assert not broken, f"links to sections that do not exist: {broken}"
