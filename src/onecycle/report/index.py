"""results/index.html: every committed results folder's answers on one page.

Built from files only: each folder's tables/answers.csv (onecycle.report.answers, written by
`onecycle report` with its report page), never from text typed here, so the page across studies
says what the folders' own tables say. `onecycle index CONFIG...` writes it; `make figures` runs
it after rebuilding every committed folder. Offline and deterministic, as the report pages are.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from onecycle import io
from onecycle.errors import ConfigError
from onecycle.report.answer_box import answer_box
from onecycle.report.answers import answers_path, read_answers
from onecycle.report.html import STYLESHEET

TITLE = "onecycle: what the committed results answer"


def write_index(folders: Sequence[Path], out: Path) -> Path:
    """`out` (results/index.html): one answer box per folder, in the order given, each linked to
    the folder's report page; a folder without tables/answers.csv is a ConfigError naming it."""
    out = Path(out)
    sections = []
    for folder in map(Path, folders):
        if not answers_path(folder).exists():
            raise ConfigError(f"{answers_path(folder)}: not written yet (onecycle report --config ... writes it)")
        page = Path(os.path.relpath(folder / "report.html", out.parent)).as_posix()
        name = html.escape(folder.name)
        heading = f'{html.escape(folder.as_posix())} · <a href="{html.escape(page)}">report</a>'
        sections.append(answer_box(read_answers(folder), page=page, heading=heading, anchor=f"answers-{name}"))
    intro = ("<p>Each results folder kept in git answers the papers' claims at its own scale. Below, every answer "
             "of every folder, as its report page gives it first: what was compared, the effect with its "
             "interval and n, the verdict (linked to the runs behind it) and the scale it holds at. Gathered by "
             "<code>onecycle index</code> (<code>make figures</code>) from each folder's "
             "<code>tables/answers.csv</code>.</p>")
    style = STYLESHEET.read_text(encoding="utf-8")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(TITLE)}</title>\n<style>\n{style}</style>\n</head>\n"
            "<body class=\"onecycle-report\">\n<main>\n"
            f"<h1>{html.escape(TITLE)}</h1>\n" + "\n".join(sections) + f"\n{intro}\n</main>\n</body>\n</html>\n")
    io.write_text(out, page)
    return out
