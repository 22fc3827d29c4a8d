"""Writing tables: CSV rounded to what was measured, and the same table as Markdown, LaTeX and HTML.

A table is written once, by `write_table`, in every format a reader needs: the CSV keeps every
column (floats rounded by `rounded_for_csv`, so no float noise), the Markdown, LaTeX (booktabs,
as wide as the text) and HTML versions show its display, text cells that `display_frame` formats
per column ("mean ± std" in the papers' style).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from onecycle import io

# Decimals of the numbers written to CSV: what was measured, without float noise
# (85.08500000000001). Accuracies are counts over a test set, in steps of 100/N pp (0.01 pp for
# 10k images, 0.002 pp for 50k); 3 decimals keep every step, a mean of 2 seeds exactly, and the
# std and differences to a tenth of a 10k set's step.
PERCENT_DECIMALS = 3
# Means over seeds of whole epochs and iterations (x.5 for two seeds); speed-up ratios.
COUNT_DECIMALS = 2
RATIO_DECIMALS = 3
# Wall-clock seconds: timer and machine noise between runs is far above 0.1 s.
SECONDS_DECIMALS = 1
# Anything else (learning rates, p-values, exact fractions 2/2**n): significant digits.
OTHER_SIGNIFICANT_DIGITS = 6


def rounded_for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its float columns rounded to what was measured (the *_DECIMALS above):
    percent columns (accuracy, *_pp, differences, CI bounds) to PERCENT_DECIMALS, epochs,
    iterations and speed-ups to COUNT/RATIO_DECIMALS, seconds to SECONDS_DECIMALS, anything
    else to OTHER_SIGNIFICANT_DIGITS significant digits."""
    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_float_dtype(out[column]):
            continue
        name = str(column)
        if "accuracy" in name or name.endswith("_pp") or name in ("mean_diff", "ci_low", "ci_high"):
            out[column] = out[column].round(PERCENT_DECIMALS)
        elif name in ("epochs", "iterations", "baseline_iterations"):
            out[column] = out[column].round(COUNT_DECIMALS)
        elif name == "speedup":
            out[column] = out[column].round(RATIO_DECIMALS)
        elif name.endswith("_s"):
            out[column] = out[column].round(SECONDS_DECIMALS)
        else:
            out[column] = out[column].map(lambda v: float(f"{v:.{OTHER_SIGNIFICANT_DIGITS}g}")
                                          if math.isfinite(v) else v)
    return out


# --------------------------------------------------------------------------------------------
# Writing tables
# --------------------------------------------------------------------------------------------

def write_table(frame: pd.DataFrame, stem: Path, *, caption: str = "",
                formats: Mapping[str, str] | None = None, display_columns: Sequence[str] | None = None,
                display: pd.DataFrame | None = None, latex_columns: Sequence[str] | None = None) -> None:
    """Write `frame` as <stem>.csv (every column, rounded by `rounded_for_csv`), and its display
    as <stem>.md (pipe table), <stem>.tex (booktabs, as wide as the text; only `latex_columns`
    of the display if given, so that it fits a page) and <stem>.html (a table element, for the
    reports). The display is `display` if given, else `display_frame` of `display_columns` (all
    by default): a column `X_std` merged into `X` or `X_mean` as "mean ± std" (the papers'
    style), numbers rounded per column (`formats`: column -> format spec where the default would
    not do, e.g. ".3g" for LRs)."""
    stem = Path(stem)
    frame = rounded_for_csv(frame)
    io.write_csv(stem.parent / f"{stem.name}.csv", frame)
    if display is None:
        display = display_frame(frame if display_columns is None else frame[list(display_columns)], formats)
    io.write_text(stem.parent / f"{stem.name}.md", _markdown(display, caption))
    # The display may leave a LaTeX column out (the paper's, where no group has a published row).
    latex = display if latex_columns is None else display[[c for c in latex_columns if c in display.columns]]
    io.write_text(stem.parent / f"{stem.name}.tex", _latex(latex, caption))
    io.write_text(stem.parent / f"{stem.name}.html", html_table(display, caption))


def display_frame(frame: pd.DataFrame, formats: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The frame as text cells: each `X_std` merged into its `X_mean` (or `X`) column as
    "mean ± std", numbers formatted per column (or as `formats` names them), missing values empty."""
    formats = dict(formats or {})
    std_of = {}  # mean column -> its std column
    for column in frame.columns:
        if column.endswith("_std"):
            base = column[: -len("_std")]
            partner = next((c for c in (f"{base}_mean", base) if c in frame.columns), None)
            if partner is not None:
                std_of[partner] = column
    out = {}
    for column in frame.columns:
        if column in std_of.values():
            continue
        if column not in std_of:
            out[column] = _format_column(frame[column], formats.get(column))
            continue
        # Mean and std share the mean's format, so "99.25 ± 0.03" reads as one value.
        spec = formats.get(column) or _number_format(frame[column])
        means = [_format_number(v, spec) for v in frame[column]]
        stds = [_format_number(v, spec) for v in frame[std_of[column]]]
        name = column[: -len("_mean")] if column.endswith("_mean") else column
        out[name] = [f"{m} ± {s}" if m and s else m for m, s in zip(means, stds)]
    return pd.DataFrame(out, index=frame.index)


def _number_format(values: pd.Series) -> str:
    """A format spec for one numeric column: integers as such, small numbers (learning rates,
    weight decays, p-values) to 3 significant digits, anything else (accuracies in percent,
    seconds) to 2 decimals."""
    numeric = pd.to_numeric(values, errors="coerce").dropna()
    if numeric.empty or (numeric == numeric.round()).all():
        return ".0f"
    if (numeric.abs() < 0.01).all():
        return ".3g"
    return ".2f"


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _format_number(value: Any, spec: str) -> str:
    return "" if _is_missing(value) else format(float(value), spec)


def _format_column(values: pd.Series, spec: str | None = None) -> list[str]:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return ["" if _is_missing(v) else str(v) for v in values]
    spec = spec or _number_format(values)
    return [_format_number(v, spec) for v in values]


# A display cell that is a number (1.5, -0.02, 1e-05), "mean ± std", a list of seeds' values
# ("80.86, 81.54"), an interval ("[80.86, 81.54]") or a count ("1 of 2").
_NUMBER = r"[+-]?\d[\d.]*(?:e[+-]?\d+)?"
_NUMBER_CELL = re.compile(rf"^{_NUMBER}( ± {_NUMBER})?$|^{_NUMBER}(, {_NUMBER})+$|^\[{_NUMBER}, {_NUMBER}\]$"
                          r"|^\d+ of \d+$")


def _numeric_display_columns(display: pd.DataFrame) -> set[str]:
    """Columns whose non-empty cells are all numbers (right-aligned in LaTeX and HTML, at their
    natural width); an empty column (no published number yet) counts, so it takes no more room
    than its header."""
    return {c for c in display.columns if all(_NUMBER_CELL.match(str(v)) for v in display[c] if v != "")}


def _markdown(display: pd.DataFrame, caption: str) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [caption, ""] if caption else []
    lines.append(line(display.columns))
    lines.append("|" + "|".join("---" for _ in display.columns) + "|")
    lines.extend(line(row) for row in display.itertuples(index=False))
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  # A line may break after an underscore: group names are long single words.
                  "_": r"\_\allowbreak{}",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--", "—": "---", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(display: pd.DataFrame, caption: str) -> str:
    """A booktabs table exactly as wide as the text (tabularx): numbers right-aligned at their
    natural width, text columns sharing the rest and wrapping, so no table runs off the page
    and nothing is scaled (no \\resizebox)."""
    numeric = _numeric_display_columns(display)
    text_column = r">{\raggedright\arraybackslash}X"
    align = " ".join("r" if c in numeric else text_column for c in display.columns)
    # tabularx needs at least one X column; an all-number table keeps its natural width.
    environment = "tabularx" if len(numeric) < len(display.columns) else "tabular"
    width = "{\\linewidth}" if environment == "tabularx" else ""
    # Footnote size and 4 pt column gaps (booktabs' default 6 pt) leave the wrapping text
    # columns room for a word of a group name.
    lines = [r"% Generated by onecycle.report.tables.write_table; needs \usepackage{booktabs,tabularx}.",
             r"\begin{table}[htbp]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{4pt}"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    header = [_latex_header(c) if c in numeric else _latex_escape(c) for c in display.columns]
    lines += [rf"\begin{{{environment}}}{width}{{@{{}}{align}@{{}}}}", r"\toprule",
              " & ".join(header) + r" \\", r"\midrule"]
    lines.extend(" & ".join(_latex_cell(value, column in numeric) for column, value in zip(display.columns, row))
                 + r" \\" for row in display.itertuples(index=False))
    lines += [r"\bottomrule", rf"\end{{{environment}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _latex_cell(value: Any, number: bool) -> str:
    # A number's minus sign is a minus ($-$), not a hyphen.
    text = _latex_escape(value)
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", text) if number else text


def _latex_header(text: str) -> str:
    """A number column's header stacked one word per line ("difference / (pp)"), so that it is no
    wider than its numbers."""
    words = str(text).split()
    if len(words) < 2:
        return _latex_escape(text)
    return r"\begin{tabular}[b]{@{}r@{}}" + r"\\".join(_latex_escape(w) for w in words) + r"\end{tabular}"


def html_table(display: pd.DataFrame, caption: str = "",
               verdict_columns: Sequence[str] = ("verdict", "expected"),
               links: Mapping[tuple[int, str], str] | None = None, wrap: bool = False) -> str:
    """The display as one HTML table element (escaped; no script, no external resource), for the
    static report and Snakemake's. Number columns carry class "num"; a cell of `verdict_columns`
    carries "verdict" and its verdict (the words before any bracket, colon, "at this scale" or
    "after Holm") as a class, e.g.
    "v-not-replicated", so a stylesheet can colour it. links: (row position, column) -> href of
    that cell's text (the report page links each verdict to the runs behind it). wrap: let "mean ±
    std" cells break at their spaces (class "wrap"), for a table of many such columns."""
    numeric = _numeric_display_columns(display)
    links = dict(links or {})

    def cell(tag: str, column: str, value: Any, row: int = -1) -> str:
        classes = ["num"] if column in numeric else []
        if tag == "td" and column in verdict_columns and value:
            # The verdict word: "contradicted" of "contradicted at this scale (paper: ...)".
            verdict = re.split(r" \(|:| at this scale| after holm", str(value).lower())[0]
            classes += ["verdict", "v-" + re.sub(r"[^a-z0-9]+", "-", verdict).strip("-")]
        attribute = f' class="{" ".join(classes)}"' if classes else ""
        text = html.escape(str(value))
        if (row, column) in links and value != "":
            text = f'<a href="{html.escape(links[row, column])}">{text}</a>'
        return f"<{tag}{attribute}>{text}</{tag}>"

    lines = [f'<table class="onecycle-table{" wrap" if wrap else ""}">']
    if caption:
        lines.append(f"<caption>{html.escape(caption)}</caption>")
    lines.append("<thead><tr>" + "".join(cell("th", c, c) for c in display.columns) + "</tr></thead>")
    lines.append("<tbody>")
    lines.extend("<tr>" + "".join(cell("td", c, v, i) for c, v in zip(display.columns, row)) + "</tr>"
                 for i, row in enumerate(display.itertuples(index=False)))
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines) + "\n"
