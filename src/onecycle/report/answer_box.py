"""The answer box: a results folder's answers (onecycle.report.answers) as the HTML a reader sees
first, on its report page and, for every committed folder, on results/index.html.

One table per experiment: the question in plain words, what was compared (each side's accuracy),
the effect with its interval and n (the one statement of evidence the verdict rests on), the
verdict (linking to the runs behind it) with the paper's beside it, and links to the table and
the figure; the scale the verdicts hold at beneath. Rows that ask the same question (a bounds
study's rules) share one question cell.
"""

from __future__ import annotations

import html
import re

import pandas as pd


def verdict_class(verdict: str) -> str:
    """"v-supported" of "supported at this scale", "v-within-noise" of "within noise, rank 1",
    "v-invalid" of "invalid: <reason>": the words before a colon, comma, bracket, "at this scale"
    or "after Holm", for the stylesheet (the same rule as onecycle.report.tables.html_table)."""
    word = re.split(r" \(|:|,| at this scale| after holm", str(verdict).lower())[0]
    return "v-" + re.sub(r"[^a-z0-9]+", "-", word).strip("-")


def answer_box(frame: pd.DataFrame, *, page: str = "", titles: dict[str, str] | None = None,
               heading: str = "The answers", anchor: str = "answers") -> str:
    """The answers as HTML. page: the report page the in-page links (#claims-..., #runs-...) and
    file links (figures/...) are relative to, "" for the page itself, "smoke/report.html" from
    results/index.html. titles: experiment -> what it replicates, shown beside its name. heading:
    the box's title (HTML, escaped by the caller); anchor: its id."""
    folder = page.rsplit("/", 1)[0] + "/" if "/" in page else ""
    titles = dict(titles or {})
    parts = [f'<section class="answers" id="{html.escape(anchor)}">\n<h2>{heading}</h2>']
    for experiment, rows in frame.groupby("experiment", sort=False):
        title = titles.get(experiment) or (rows["title"].iloc[0] if "title" in rows else "")
        parts.append(f'<h3>{html.escape(experiment)}{f" <span>{html.escape(title)}</span>" if title else ""}</h3>')
        parts.append(_table(rows, page, folder))
        parts.append(f'<p class="scale"><b>At this scale:</b> {html.escape(rows["scale"].iloc[0])}</p>')
    if frame.empty:
        parts.append('<p class="placeholder">No answers yet: no claim, bounds study or finished group.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _table(rows: pd.DataFrame, page: str, folder: str) -> str:
    lines = ['<table class="answers">', "<thead><tr><th>question</th><th>compared</th>"
             "<th>effect: estimate, interval, n, test</th><th>verdict</th><th>behind it</th></tr></thead>", "<tbody>"]
    questions = rows["question"].tolist()
    for i, row in enumerate(rows.itertuples()):
        cells = []
        if i == 0 or questions[i] != questions[i - 1]:
            span = 1
            while i + span < len(questions) and questions[i + span] == questions[i]:
                span += 1
            label = f"<b>{html.escape(row.id)}</b>: " if row.kind == "claim" else ""
            rowspan = f' rowspan="{span}"' if span > 1 else ""
            cells.append(f'<td class="question"{rowspan}>{label}{html.escape(row.question)}</td>')
        cells.append(f"<td>{html.escape(row.compared)}</td>")
        cells.append(f'<td class="effect">{html.escape(row.effect)}</td>')
        paper = f'<div class="paper">paper: {html.escape(row.paper_verdict)}</div>' if row.paper_verdict else ""
        runs = f"{page}#runs-{row.experiment}"
        cells.append(f'<td class="verdict {verdict_class(row.verdict)}"><a href="{html.escape(runs)}">'
                     f"{html.escape(row.verdict)}</a>{paper}</td>")
        cells.append(f'<td class="links">{_links(row, page, folder)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _links(row, page: str, folder: str) -> str:
    """table · figure · runs: one link per group behind the answer."""
    links = [f'<a href="{html.escape(page + row.table)}">table</a>'] if row.table else []
    if row.figure:
        links.append(f'<a href="{html.escape(folder + row.figure)}">figure</a>')
    groups = [g for g in row.runs.split() if g]
    if groups:
        named = ", ".join(f'<a href="{html.escape(f"{page}#runs-{row.experiment}-{g}")}">{html.escape(g)}</a>'
                          for g in groups)
        links.append(f"runs: {named}")
    return " · ".join(links)
