"""The repository stands alone (docs/design.md §10b).

A reader of a clone has only what git tracks: every page a file cites under docs/ must exist,
every section it cites (`docs/paper_reference.md D3`, `docs/design.md §8`,
`docs/snakemake_notes.md B.2`) must be a heading of that page, and no file may cite a path
outside the repository (the team's notebook, or this machine's absolute paths). The published
numbers the replication compares against (configs/reference/published.yaml) must stand, with
the same confidence tag, in the section of docs/paper_reference.md their `table` column names,
so the data and the page it claims to transcribe cannot drift apart. No training runs here.
"""

from __future__ import annotations

import math
import re
import subprocess
from functools import cache

import pytest
from conftest import REPO

from onecycle.report.published import CONFIDENCE_TAGS, load_published

DOCS = REPO / "docs"

# Paths that exist only on the machine the project was written on. Built from pieces so that
# this file does not match its own patterns.
OUTSIDE_PATH = re.compile("|".join([
    re.escape("shared" + "/"),   # the team notebook (its reference/ and design notes)
    re.escape("/" + "work/"),    # absolute paths of the authors' machine
]))

# A section id as cited after a page name: "§8", "§10a" (design, peers), "B.2" (snakemake
# notes), "D3", "S12" (paper reference), "G5" (Caffe semantics). Never followed by a word
# character, so "C100" or "TAB1a" are not ids.
SECTION_ID = r"(?:§\s?\d+[a-z]?|[A-Z]\.\d+|[A-Z]\d{1,2})(?!\w)"
ID_SEPARATOR = r"\s*(?:,|/|\+|-|–|\band\b)\s*"
CITATION = re.compile(rf"docs/(?P<page>[\w.-]+?)\.md`*,?\s+(?P<ids>{SECTION_ID}(?:{ID_SEPARATOR}{SECTION_ID})*)")
# docs/models.md, "Initialisation": a section cited by its title.
TITLE_CITATION = re.compile(r'docs/(?P<page>[\w.-]+?)\.md`*,\s*"(?P<title>[^"]+)"')
PAGE_CITATION = re.compile(r"docs/(?P<page>[\w.-]+?)\.md")
# The id a heading starts with: "### D3. 1cycle policy", "## 10a. Claims", "### B.2 Snakemake's
# SLURM executor", "## C. Executor plugins", "### 6.1 DeepOBS".
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.+?)\s*$", re.M)
HEADING_ID = re.compile(r"^(?P<id>[A-Z]\.\d+|[A-Z]\d{1,2}|\d+(?:\.\d+|[a-z])?|[A-Z])[.:]?(?:\s|$)")
# A citation may go on on the next line ("docs/paper_reference.md\n# C2 and D6"), after the
# marker that continues a comment.
CONTINUED = re.compile(r"^\s*(?:#+|//|\*)?\s*")

# Where configs cite sections without naming the page (configs/paper.yaml's header: "Every
# number cites a section of docs/paper_reference.md"), and the notes of docs/caffe_semantics.md.
BARE_REFERENCE_ID = re.compile(r"\b(?:[A-E]\d{1,2}|S\d{1,2})\b")
BARE_CAFFE_NOTE = re.compile(r"\bG\d\b")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
MEAN_PM_STD = re.compile(r"(\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?)")


@cache
def tracked_text_files() -> dict[str, str]:
    """Path -> text of every file git tracks, as it is in the working tree (binary files left out)."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    texts = {}
    for name in listing.stdout.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():  # deleted in the working tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


@cache
def headings(page: str) -> list[tuple[int, str, int]]:
    """(level, text, offset) of every Markdown heading of docs/<page>.md."""
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    # Fenced code blocks hold comments such as "# a comment", not headings.
    text = re.sub(r"^```.*?^```", lambda m: " " * len(m.group(0)), text, flags=re.M | re.S)
    return [(len(m["level"]), m["text"], m.start()) for m in HEADING.finditer(text)]


@cache
def section_ids(page: str) -> frozenset[str]:
    ids = [m["id"] for _, text, _ in headings(page) if (m := HEADING_ID.match(text))]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"docs/{page}.md: section ids used by two headings: {duplicates}"
    return frozenset(ids)


@cache
def section_text(page: str, section: str) -> str:
    """The text under the heading whose id is `section`, up to the next heading of its level or above."""
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    found = [(level, start) for level, heading, start in headings(page)
             if (m := HEADING_ID.match(heading)) and m["id"] == section]
    assert found, f"docs/{page}.md has no section {section}"
    level, start = found[0]
    ends = [offset for lvl, _, offset in headings(page) if offset > start and lvl <= level]
    return text[start:ends[0] if ends else len(text)]


def expand_ids(ids: str) -> list[str]:
    """'C1/C2' -> [C1, C2]; 'B.1-B.3' -> [B.1, B.2, B.3]; '§6 and §11' -> [6, 11]."""
    tokens = re.split(f"({ID_SEPARATOR})", ids)
    names = [token.replace("§", "").strip() for token in tokens[::2]]
    separators = [token.strip() for token in tokens[1::2]]
    expanded = [names[0]]
    for separator, name in zip(separators, names[1:], strict=True):
        low, high = re.fullmatch(r"(\D*)(\d+)", expanded[-1]), re.fullmatch(r"(\D*)(\d+)", name)
        if separator in ("-", "–") and low and high and low[1] == high[1]:
            expanded += [f"{low[1]}{k}" for k in range(int(low[2]) + 1, int(high[2]))]
        expanded.append(name)
    return expanded


def citations() -> list[tuple[str, int, str, list[str]]]:
    """(file, line, page, section ids) of every `docs/<page>.md <ids>` citation in tracked files."""
    found = []
    for name, text in tracked_text_files().items():
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            following = CONTINUED.sub("", lines[number]) if number < len(lines) else ""
            found += [(name, number, m["page"], expand_ids(m["ids"]))
                      for m in CITATION.finditer(f"{line} {following}") if m.start() < len(line)]
    return found


def test_the_outside_path_pattern_catches_a_returning_citation():
    # The guard below must be able to fail: these are the citations this repository once had.
    for citation in ("see " + "shared" + "/reference/paper_tables.md A2",
                     "../" + "shared" + "/DESIGN.md §8",
                     "/" + "work/main/.venv/bin/python"):
        assert OUTSIDE_PATH.search(citation), citation


def test_no_tracked_file_cites_a_path_outside_the_repository():
    offenders = [f"{name}:{line_of(text, m.start())}: {m.group(0)!r}"
                 for name, text in tracked_text_files().items()
                 for m in OUTSIDE_PATH.finditer(text)]
    assert not offenders, ("paths outside the repository (cite a docs/ page instead):\n"
                           + "\n".join(offenders))


def test_every_cited_docs_page_exists():
    missing = [f"{name}:{line_of(text, m.start())}: docs/{m['page']}.md"
               for name, text in tracked_text_files().items()
               for m in PAGE_CITATION.finditer(text)
               if not (DOCS / f"{m['page']}.md").is_file()]
    assert not missing, "cited pages that do not exist:\n" + "\n".join(missing)


def test_links_between_docs_pages_resolve():
    broken = [f"docs/{path.name}: {target}"
              for path in sorted(DOCS.glob("*.md"))
              for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
              if "://" not in target and not (path.parent / target).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_the_citation_parser_reads_lists_and_ranges():
    # The forms the repository uses, and a citation of a section that does not exist.
    text = ("(docs/paper_reference.md C1/C2), `docs/paper_reference.md` D3, "
            "docs/paper_reference.md A3 + C1: and docs/design.md §6 and §11; "
            "docs/snakemake_notes.md B.1-B.3. " + "docs/paper_reference" + ".md D9 "
            "docs/paper_reference.md C100 docs/paper_reference.md A2 remarks")
    parsed = [(m["page"], expand_ids(m["ids"])) for m in CITATION.finditer(text)]
    assert parsed == [("paper_reference", ["C1", "C2"]), ("paper_reference", ["D3"]),
                      ("paper_reference", ["A3", "C1"]), ("design", ["6", "11"]),
                      ("snakemake_notes", ["B.1", "B.2", "B.3"]), ("paper_reference", ["D9"]),
                      ("paper_reference", ["A2"])]
    assert "D9" not in section_ids("paper_reference")


def test_every_cited_section_is_a_heading_of_its_page():
    found = citations()
    # The repository cites sections of at least these pages; an empty scan would pass vacuously.
    assert {page for _, _, page, _ in found} >= {"paper_reference", "design", "peers", "snakemake_notes"}
    missing = [f"{name}:{line}: docs/{page}.md section {section}"
               for name, line, page, ids in found if (DOCS / f"{page}.md").is_file()
               for section in ids if section not in section_ids(page)]
    assert not missing, "cited sections that are not headings of their page:\n" + "\n".join(missing)


def test_sections_cited_by_title_exist():
    found = [(name, line_of(text, m.start()), m["page"], m["title"])
             for name, text in tracked_text_files().items()
             for m in TITLE_CITATION.finditer(text)]
    missing = [f"{name}:{line}: docs/{page}.md, {title!r}" for name, line, page, title in found
               if not any(text.startswith(title) for _, text, _ in headings(page))]
    assert not missing, "cited section titles that are not headings:\n" + "\n".join(missing)


def test_section_ids_the_configs_use_exist():
    # configs/ cite paper-reference sections ("(D6)", "A3/A8") and Caffe notes ("G5") without
    # repeating the page name; each must still name a section a reader can find.
    missing = []
    for name, text in tracked_text_files().items():
        if not name.startswith("configs/"):
            continue
        for pattern, page in ((BARE_REFERENCE_ID, "paper_reference"), (BARE_CAFFE_NOTE, "caffe_semantics")):
            missing += [f"{name}:{line_of(text, m.start())}: {m.group(0)} (docs/{page}.md)"
                        for m in pattern.finditer(text) if m.group(0) not in section_ids(page)]
    assert not missing, "section ids in configs/ without a heading:\n" + "\n".join(missing)


def test_every_confidence_tag_is_defined():
    tags_section = (DOCS / "paper_reference.md").read_text(encoding="utf-8").split("## Confidence tags", 1)
    assert len(tags_section) == 2, "docs/paper_reference.md lost its 'Confidence tags' section"
    table = tags_section[1].split("\n## ", 1)[0]
    for tag in (*CONFIDENCE_TAGS, "NF"):
        assert re.search(rf"^\|\s*\*\*{re.escape(tag)}\*\*\s*\|\s*\S", table, re.M), tag


def has_tag(line: str, tag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(tag)}(?![\w-])", line) is not None


def same_percent(printed: str, value: float) -> bool:
    # Published numbers have at most two decimals: 89.8 in the page is 89.80 in the data.
    return round(float(printed), 2) == round(value, 2)


def test_every_published_row_stands_in_its_section_with_its_tag():
    published = load_published()
    assert len(published) > 0
    unmatched = []
    for row in published.itertuples():
        rows = [line for line in section_text("paper_reference", row.table).splitlines()
                if line.startswith("|") and has_tag(line, row.confidence)]
        if not math.isnan(row.std):  # a std was published: "mean ± std" on the row
            ok = any(same_percent(mean, row.accuracy) and same_percent(std, row.std)
                     for line in rows for mean, std in MEAN_PM_STD.findall(line))
            printed = f"{row.accuracy} ± {row.std}"
        else:
            ok = any(same_percent(number, row.accuracy) for line in rows for number in NUMBER.findall(line))
            printed = f"{row.accuracy}"
        if not ok:
            unmatched.append(f"{row.id}: {printed} ({row.confidence}) not in docs/paper_reference.md {row.table}")
    assert not unmatched, "\n".join(unmatched)


def test_the_authors_logs_of_published_rows_are_in_a8():
    logs = section_text("paper_reference", "A8")
    numbers = NUMBER.findall(logs)
    published = load_published()
    with_logs = published[published["authors_log"].notna()]
    assert len(with_logs) > 0
    missing = [f"{row.id}: {row.authors_log}" for row in with_logs.itertuples()
               if not any(same_percent(n, row.authors_log) for n in numbers)]
    assert not missing, "authors' log values not in docs/paper_reference.md A8:\n" + "\n".join(missing)
