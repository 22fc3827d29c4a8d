"""The static report page: what a researcher reads first, beside the tables it shows.

`onecycle report` (`make figures`, and the workflow's `html_report` rule) writes
<results_dir>/report.html after the tables and figures, from the files just written: it
computes nothing, it arranges. First the answers (onecycle.report.answers: per claim what was
compared, the effect with its interval and n, the verdict and its scale, linked to the table,
figure and runs behind it), then the claims (the suite's scorecard and each experiment's claims
table), then each experiment's verdict table (ours, seeds or CI, published where a group has a
published row, verdict, n, and the schedule with the LR bounds used), its paired comparison and
time to accuracy, then its figures (the PNG inline, the PDF linked), and last the runs
themselves (onecycle.report.html_runs: every verdict links there, each run to its folder, log and
config) and the workflow that made them.

The page is plain HTML and CSS: no script, no font or stylesheet from a CDN, images by relative
path from the same results folder (kept together in git), so it opens offline from a checkout.
Nothing in it depends on the time or machine it was written on: regenerated from the same
results it has the same bytes.
"""

from __future__ import annotations

import hashlib
import html
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from onecycle import io
from onecycle.report import aggregate, claims, scorecard
from onecycle.experiments.expansion import Plan
from onecycle.report.answer_box import answer_box
from onecycle.report.answers import write_answers, read_answers
from onecycle.report.build import LR_FORMAT
from onecycle.report.build_figures import no_accuracy_groups
from onecycle.report.html_runs import runs_section, short_revision, write_wall_times
from onecycle.report.outputs import (SCORECARD_STEM, accuracy_outputs, bounds_study_outputs, bounds_summary_outputs,
                                     claims_outputs, comparison_outputs, range_test_outputs, report_path, run_outputs)
from onecycle.report.tables import display_frame, html_table
from onecycle.report.evidence import COUNTED, STATES, Evidence, config_file, plan_evidence, refresh_command

# A claims table's headers on the page (onecycle.report.claims.DISPLAY_COLUMNS), short enough for the
# table to fit a 1280 px window.
CLAIM_HEADERS = {"claim_id": "claim", "per_seed": "per seed"}

# The report's stylesheet, shared with Snakemake's report (`--report-stylesheet`, see the Makefile).
STYLESHEET = Path(__file__).with_name("report.css")


def write_html_report(plan: Plan) -> Path:
    """<results_dir>/report.html from the tables and figures now in the results folder."""
    out = report_path(plan)
    tiny = " (TINY SCALE: no verdicts)" if plan.workflow.scale == "tiny" else ""
    title = f"onecycle replication report{tiny}: {plan.workflow.results_dir}"
    evidence = plan_evidence(plan)
    write_wall_times(plan, evidence)
    titles = {name: exp.replicates or exp.description for name, exp in plan.workflow.experiments.items()}
    write_answers(plan)
    answers = answer_box(read_answers(plan.results_dir), titles=titles,
                         heading="The answers, at the scale each holds at")
    body = [f"<h1>{_e(title)}</h1>", answers, *_provenance(plan, evidence), _contents(plan),
            _claims_section(plan), _bounds_summary_section(plan),
            *(_experiment_section(plan, name) for name in plan.workflow.experiments),
            runs_section(plan, evidence), _workflow_section(plan)]
    style = STYLESHEET.read_text(encoding="utf-8")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>\n{style}</style>\n</head>\n"
            "<body class=\"onecycle-report\">\n<main>\n"
            + "\n".join(part for part in body if part) + "\n</main>\n</body>\n</html>\n")
    io.write_text(out, page)
    return out


def _e(text: Any) -> str:
    return html.escape(str(text))


def _relative(plan: Plan, path: Path) -> str:
    return path.relative_to(plan.results_dir).as_posix()


# --------------------------------------------------------------------------------------------
# What produced the page
# --------------------------------------------------------------------------------------------

def _provenance(plan: Plan, evidence: list[Evidence]) -> list[str]:
    lines = []
    copy = plan.results_dir / "workflow_config.json"
    source = config_file(plan)
    config = f"<code>{_e(source)}</code>" if source else "the workflow config"
    if copy.exists():
        digest = hashlib.sha256(copy.read_bytes()).hexdigest()[:12]
        link = f'<a href="{_e(_relative(plan, copy))}">workflow_config.json</a> (sha256 {digest})'
        if source and yaml.safe_load(Path(source).read_text(encoding="utf-8")) != io.read_json(copy):
            config += f", which has changed since these runs were made; they were made with the config copied to {link}"
        else:
            config += f", as expanded for this folder: {link}"
    # The tolerance of "replicated" only where a group has a published row to be replicated.
    mapped = any(exp.published for exp in plan.workflow.experiments.values())
    tolerance = f"; tolerance of 'replicated' {plan.workflow.tolerance_pp:g} pp" if mapped else ""
    lines.append(f"<p class=\"provenance\">Config: {config}. Results folder <code>{_e(plan.workflow.results_dir)}"
                 f"</code>; seeds {_e(', '.join(map(str, plan.workflow.seeds)))}{tolerance}.</p>")
    revisions = Counter(short_revision(_metrics(item)) for item in evidence if item.state in COUNTED)
    if revisions:
        produced = "; ".join(f"<code>{_e(rev)}</code> ({count} job{'s' if count != 1 else ''})"
                             for rev, count in sorted(revisions.items()))
        lines.append(f"<p class=\"provenance\">Runs produced at revision {produced}, as each result's "
                     f"metrics.json records it. This page was regenerated from those stored results by "
                     f"<code>onecycle report</code> (<code>make figures</code>): nothing was retrained.</p>")
    else:
        lines.append("<p class=\"provenance\">No run has finished yet: every table shows pending rows.</p>")
    return lines + _not_counted(plan, evidence)


def _metrics(item: Evidence) -> dict[str, Any]:
    return item.metrics if item.metrics is not None else io.read_json(item.job.out_dir / "metrics.json")


def _not_counted(plan: Plan, evidence: list[Evidence]) -> list[str]:
    """A paragraph saying how many planned runs are stale, broken or missing, and the command
    that refreshes them; none when every planned run counts (onecycle.report.evidence)."""
    counts = Counter(item.state for item in evidence)
    left = [f"{counts[state]} {state}" for state in STATES if state not in ("fresh", "diverged") and counts[state]]
    if not left:
        return []
    return [f'<p class="provenance">Of the {len(evidence)} planned runs, {_e(", ".join(left))}: the tables '
            "count only runs of the configured protocol (a stale run ran another config, named below; a broken "
            f"one has files that disagree). Refresh them with <code>{_e(refresh_command(plan))}</code>; stale "
            "runs are moved to a sibling <code>seed&lt;k&gt;.stale-&lt;digest&gt;</code> folder first, never "
            "deleted.</p>"]


def _contents(plan: Plan) -> str:
    links = ['<a href="#answers">Answers</a>', '<a href="#claims">Claims</a>']
    if plan.bounds_studies():
        links.append('<a href="#bounds-studies">Bounds studies</a>')
    links += [f'<a href="#{_e(name)}">{_e(name)}</a>' for name in plan.workflow.experiments]
    links += ['<a href="#runs">Runs</a>', '<a href="#workflow">Workflow</a>']
    return "<nav class=\"contents\">" + " ".join(links) + "</nav>"


# --------------------------------------------------------------------------------------------
# Claims (onecycle.report.claims, where the config states them)
# --------------------------------------------------------------------------------------------

def _claims_section(plan: Plan) -> str:
    """The scorecard and each experiment's claims table, every verdict linked to its experiment's
    runs; nothing where the config states no claim (the answers above say what the runs give)."""
    if not any(exp.claims for exp in plan.workflow.experiments.values()):
        return ""
    tables = plan.results_dir / "tables"
    parts = ['<section class="claims" id="claims">', "<h2>Claims: Smith's statements, tested on these runs</h2>"]
    found = False
    scorecard_csv = tables / f"{SCORECARD_STEM}.csv"
    if scorecard_csv.exists():
        found = True
        frame = _read_text_csv(scorecard_csv)
        # Every column but the claim's is a verdict cell ("supported (paper: supported)"), each
        # column one dataset / architecture pair; several experiments can share a pair, so each
        # verdict links to the runs of the experiment that states its claim.
        experiment_of = _claim_experiments(plan)
        columns = [c for c in frame.columns if c != "claim"]
        links = {(i, c): f"#runs-{experiment_of[claim, c]}" for i, claim in enumerate(frame["claim"])
                 for c in columns if (claim, c) in experiment_of}
        parts.append(_table(display_frame(frame), _caption_of(scorecard_csv.with_suffix(".md")),
                            verdict_columns=columns, links=links))
    for name in plan.workflow.experiments:
        path = claims_outputs(plan, name).get("claims_csv")
        if path is not None and path.exists():
            found = True
            parts += _claims_table(name, _read_text_csv(path))
    if scorecard_csv.exists():
        parts.append(_figure(plan, plan.results_dir / "figures" / f"{SCORECARD_STEM}.png", "Claims scorecard"))
    if not found:
        parts.append('<p class="placeholder">No claims tables yet. An experiment\'s '
                     "<code>claims:</code> in the config (1cycle reaches the baseline's accuracy in a fraction "
                     "of its iterations, is better at the same budget, ...) is decided from the runs into "
                     "<code>tables/&lt;experiment&gt;_claims.csv</code> and the suite's "
                     f"<code>tables/{SCORECARD_STEM}.csv</code>; they are shown here.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _claim_experiments(plan: Plan) -> dict[tuple[str, str], str]:
    """(claim id, scorecard column: a pair label, onecycle.report.scorecard.collect) -> the
    experiment that states the claim there."""
    tables = {name: claims_outputs(plan, name)["claims_csv"] for name, exp in plan.workflow.experiments.items()
              if exp.claims}
    if not all(path.exists() for path in tables.values()):
        return {}
    frame = scorecard.collect(plan, tables)
    return dict(zip(zip(frame["claim_id"], frame["pair"]), frame["experiment"]))


def _claims_table(name: str, frame: pd.DataFrame) -> list[str]:
    """One experiment's claims table (its verdicts linked to its runs) and the claims in words."""
    # The columns onecycle.report.claims shows, with an ordering claim's groups where there is one.
    columns = [c for c in claims.DISPLAY_COLUMNS if c in frame.columns]
    if "groups" in frame.columns and "kind" in frame.columns and (frame["kind"] == "ordering").any():
        columns.insert(columns.index("baseline") + 1, "groups")
    display = display_frame(frame[columns]).rename(columns=CLAIM_HEADERS)
    links = {(i, "verdict"): f"#runs-{name}" for i in range(len(display))}
    parts = [f'<h3 id="claims-{_e(name)}">{_e(name)}</h3>',
             _table(display, f"Claims of {name}: one statement of evidence per claim (estimate, one-sided bounds, "
                             "n, test, threshold) and the verdict it decides; expected: the verdict the paper's "
                             "own numbers give", verdict_columns=("verdict",), links=links)]
    if {"claim_id", "text"} <= set(frame.columns):
        statements = "".join(f"<li><b>{_e(r.claim_id)}</b>: {_e(r.text)}"
                             + (f" <i>({_e(r.source)})</i>" if "source" in frame.columns and r.source else "")
                             + "</li>" for r in frame.itertuples())
        parts.append(f"<ul>{statements}</ul>")
    return parts


def _caption_of(markdown: Path) -> str:
    """A written table's caption: the first paragraph of its Markdown version."""
    if not markdown.exists():
        return ""
    return markdown.read_text(encoding="utf-8").split("\n\n")[0].strip()


def _read_text_csv(path: Path) -> pd.DataFrame:
    """A CSV as written: numbers stay numbers (display_frame formats them), empty text cells
    (a `note` with nothing to say) stay empty rather than becoming NaN."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "")
    return frame


# --------------------------------------------------------------------------------------------
# One experiment
# --------------------------------------------------------------------------------------------

def _experiment_section(plan: Plan, name: str) -> str:
    exp = plan.workflow.experiments[name]
    runs = run_outputs(plan, name)
    parts = [f'<section id="{_e(name)}">', f"<h2>{_e(name)}: {_e(exp.replicates or exp.description)}</h2>"]
    if exp.description and exp.replicates:
        parts.append(f"<p>{_e(exp.description)}</p>")
    parts += _validity_parts(plan, name)
    parts.append("<h3>Verdicts</h3>")
    parts.append(_verdict_table(plan, name))
    for key, heading in (("paired", "1cycle minus baseline, seed by seed"),
                         ("time_to_accuracy", "Time to the baseline's accuracy")):
        path = runs[key]
        if path.exists():
            frame = _read_text_csv(path)
            if list(frame.columns) != ["note"]:
                parts.append(f"<h3>{_e(heading)}</h3>")
                # The section names the experiment; the CSV keeps the column.
                shown = frame.drop(columns=["experiment"], errors="ignore")
                parts.append(_table(display_frame(shown), f"tables/{path.name}"))
    parts += _bounds_study_parts(plan, name)
    parts.append("<h3>Figures</h3>")
    parts += _missing_curves(plan, name)
    figures = [(range_test_outputs(plan, name).get("range_test_png"), "LR range test, every seed, with the LRs "
                "training used and each rule's suggestion"),
               (accuracy_outputs(plan, name).get("accuracy_png"), "Test accuracy vs iteration of the comparison this "
                "experiment makes: each group's mean over its seeds with their range, the configured schedules "
                "beneath"),
               (comparison_outputs(plan, name).get("comparison_png"), _comparison_caption(plan, name))]
    parts += [_figure(plan, path, caption) for path, caption in figures if path is not None]
    parts.append("</section>")
    return "\n".join(parts)


def _verdict_table(plan: Plan, name: str) -> str:
    """The experiment's verdict table (as tables/<e>.md shows it), each verdict linked to its group's runs."""
    path = run_outputs(plan, name)["table_csv"]
    if not path.exists():
        return f'<p class="placeholder">{_e(path.name)}: not written yet</p>'
    frame = _read_text_csv(path)
    display = aggregate.summary_display(frame.replace({"": None}))
    links = {(i, "verdict"): f"#runs-{name}-{group}" for i, group in enumerate(frame["group"])}
    return _table(display, _caption_of(path.with_suffix(".md")), links=links)


def _missing_curves(plan: Plan, name: str) -> list[str]:
    """A sentence for each group the accuracy figure cannot draw: no evaluation before it stopped."""
    sentences = []
    for group in no_accuracy_groups(plan, name):
        paths = [job.out_dir / "metrics.json" for job in plan.experiment_trains(name) if job.group == group]
        stops = [io.read_json(path).get("diverged") or {} for path in paths if path.exists()]
        where = ", ".join(f"iteration {s.get('iteration')}"
                          + (f" (LR {s['lr']:.3g})" if s.get("lr") is not None else "") for s in stops if s)
        sentences.append(f'<p class="note">No accuracy curve for <b>{_e(group)}</b>: all {len(stops)} seeds diverged '
                         f"before their first evaluation ({_e(where)}); the figure shows where on its LR schedule "
                         "each stopped.</p>")
    return sentences


def _comparison_caption(plan: Plan, name: str) -> str:
    compare = plan.workflow.experiments[name].compare
    if compare is not None and compare.difference:
        return ("Candidate minus baseline final accuracy at each setting: the paired mean with the claims' one-sided "
                "95 % bounds, and the paper's published point values on the same axes")
    return ("Final accuracy per setting: each series' mean with its interval (95 % t from 3 seeds, else the seeds' "
            "range)")


def _validity_parts(plan: Plan, name: str) -> list[str]:
    """What the experiment's verdicts stand on: its scale (the departures from the paper) and
    its validity gates (onecycle.report.validity), with what would make a failed one pass."""
    exp = plan.workflow.experiments[name]
    parts = ['<section class="validity">']
    if exp.departures:
        listed = "".join(f"<li><b>{_e(aspect)}</b>: {_e(text)}</li>" for aspect, text in exp.departures.items())
        parts.append(f"<p>Every verdict here holds <b>at this scale</b>, which departs from the paper in:</p>"
                     f"<ul>{listed}</ul>")
    path = run_outputs(plan, name)["validity"]
    if path.exists():
        gates = _read_text_csv(path)
        failed = gates[gates["passed"].astype(str) == "False"]
        if len(failed):
            parts.append("<p><b>No verdict</b>: " + "; ".join(_e(d) for d in failed["detail"]) + ". To make it "
                         "valid: " + "; ".join(_e(r) for r in failed["to_make_valid"]) + ".</p>")
        parts.append(_table(display_frame(gates), "Validity gates, checked before any verdict (True: passed; "
                                                  "empty: does not apply or not finished)"))
    parts.append("</section>")
    return parts if len(parts) > 2 else []


def _bounds_study_parts(plan: Plan, name: str) -> list[str]:
    """A bounds study's regret table and figure, then its range-test settings table and figure
    (onecycle.experiments.bounds_study); nothing for another experiment."""
    outputs = bounds_study_outputs(plan, name)
    if not outputs:
        return []
    parts = []
    for key, heading, caption in (
            ("regret", "Range-test rules scored by training at their suggestion",
             "Final accuracy vs max_lr: the grid's seeds and mean, each rule at the max_lr it trained with"),
            ("range_test_settings", "How the range test's own settings move the suggestions",
             "Each rule's suggested max_lr under each range-test setting, seeds' range as a bar")):
        anchor = f' id="regret-{_e(name)}"' if key == "regret" else ""
        parts.append(f"<h3{anchor}>{_e(heading)}</h3>")
        parts.append(_settings_table(outputs[f"{key}_csv"]) if key == "range_test_settings"
                     else _fragment(outputs[f"{key}_html"]))
        parts.append(_figure(plan, outputs[f"{key}_figure_png"], caption))
    return parts


def _settings_table(path: Path) -> str:
    """The range-test settings table, narrow enough for 1280 px: a column per setting ("linear
    2ep", its name split at the underscores) whose "mean ± std" cells may wrap."""
    if not path.exists():
        return f'<p class="placeholder">{_e(path.name)}: not written yet</p>'
    frame = _read_text_csv(path)
    display = display_frame(frame, {c: LR_FORMAT for c in frame.columns if c.endswith("_mean")})
    display = display.rename(columns=lambda c: str(c).replace("_", " "))
    return _table(display, _caption_of(path.with_suffix(".md")), wrap=True)


def _bounds_summary_section(plan: Plan) -> str:
    """The suite-level summary over the config's bounds studies, where it has any."""
    outputs = bounds_summary_outputs(plan)
    if not outputs:
        return ""
    return "\n".join(['<section id="bounds-studies">', "<h2>Bounds studies: which range-test rule to use</h2>",
                      _fragment(outputs["summary_html"]), "</section>"])


def _fragment(table_html: Path) -> str:
    """A table's HTML version (onecycle.report.tables.write_table) as written, or a placeholder until it is."""
    if not table_html.exists():
        return f'<p class="placeholder">{_e(table_html.name)}: not written yet</p>'
    return '<div class="scroll">' + table_html.read_text(encoding="utf-8") + "</div>"


def _figure(plan: Plan, png: Path, caption: str) -> str:
    if not png.exists():
        return f'<p class="placeholder">{_e(png.name)}: not written yet</p>'
    width, height = _png_size(png)
    pdf = png.with_suffix(".pdf")
    download = (f' <a href="{_e(_relative(plan, pdf))}" download>PDF</a>' if pdf.exists() else "")
    return (f'<figure><img src="{_e(_relative(plan, png))}" width="{width}" height="{height}" '
            f'alt="{_e(caption)}"><figcaption>{_e(caption)}. <code>{_e(_relative(plan, png))}</code>'
            f"{download}</figcaption></figure>")


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (bytes 16-24), so the page lays out before
    the images load."""
    header = path.read_bytes()[:24]
    return struct.unpack(">II", header[16:24])


def _table(display: pd.DataFrame, caption: str, **options: Any) -> str:
    """A table that may scroll sideways in its own box rather than widen the page."""
    return '<div class="scroll">' + html_table(display, caption, **options) + "</div>"


# --------------------------------------------------------------------------------------------
# The runs, and the workflow that made them
# --------------------------------------------------------------------------------------------

def _workflow_section(plan: Plan) -> str:
    counts = Counter(job.experiment for job in plan.trains.values())
    ranges = Counter(job.experiment for job in plan.range_tests.values())
    steps = "".join(f"<li><b>{_e(name)}</b>: {ranges.get(name, 0)} range test(s), "
                    f"{counts.get(name, 0)} training run(s) "
                    f"({len(exp.training_groups())} groups x {len(plan.workflow.seeds)} seeds)</li>"
                    for name, exp in plan.workflow.experiments.items())
    return "\n".join([
        '<section id="workflow">', "<h2>Workflow</h2>",
        "<p>The Snakemake DAG behind these results: <code>prepare_data</code> verifies the dataset; "
        "<code>range_test</code> runs each LR range-test seed and <code>combine_bounds</code> takes the median "
        "bounds; <code>train</code> runs every group and seed; <code>report_experiment</code>, "
        "<code>range_test_figure</code> and <code>comparison_figure</code> write the tables and figures, and "
        "<code>html_report</code> this page.</p>",
        f"<ul>{steps}</ul>",
        "<p>Snakemake's own report, with the rule graph and the run statistics of the jobs Snakemake ran in a "
        "checkout: <code>make report</code>.</p>",
        "</section>"])

