"""The answers a results folder gives, one row per question, for the first screen of its report
and for results/index.html: what was compared, the effect with its interval and n, the verdict,
the scale it holds at, and where the table, figure and runs behind it are.

Read from the files the report wrote (the claims tables, the verdict tables, the regret tables,
the validity gates, and the claims' Holm correction over the folder: onecycle.report.scorecard),
never decided again: an answer and the table it cites cannot disagree. Written as
tables/answers.csv, so that the index page across folders is built from files too.

Three kinds of row: a claim of the config (its one statement of evidence, `evidence` of
tables/<e>_claims.csv, and its verdict after Holm's correction); a bounds study's rules (their
regret against the grid's best with its bounds) or the study's invalid label; and, for an
experiment with neither, what its groups reached (mean, 95 % t interval, n) or that they diverged.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from onecycle import io
from onecycle.experiments.expansion import Plan
from onecycle.report import claims, describe, scorecard
from onecycle.report.outputs import (accuracy_outputs, bounds_study_outputs, claims_outputs, comparison_outputs,
                                     run_outputs)

COLUMNS = ("experiment", "title", "kind", "id", "question", "compared", "effect", "verdict", "paper_verdict",
           "scale", "table", "figure", "runs")
# The verdict cell of a row that states no claim (a group's accuracy): no verdict, said so.
NO_CLAIM = "no claim tested"


def answers_path(results_dir: Path) -> Path:
    return Path(results_dir) / "tables" / "answers.csv"


def write_answers(plan: Plan) -> Path:
    """tables/answers.csv of the folder, from the tables now in it."""
    frame = answers(plan)
    io.write_csv(answers_path(plan.results_dir), frame)
    return answers_path(plan.results_dir)


def read_answers(results_dir: Path) -> pd.DataFrame:
    return pd.read_csv(answers_path(results_dir), keep_default_na=False, dtype=str)


def answers(plan: Plan) -> pd.DataFrame:
    """Every answer of the folder, experiment by experiment, in the config's order."""
    verdicts = _holm_verdicts(plan)
    rows: list[dict[str, str]] = []
    for name, exp in plan.workflow.experiments.items():
        if exp.claims and claims_outputs(plan, name)["claims_csv"].exists():
            rows += _claim_rows(plan, name, verdicts)
        elif exp.bounds_study is not None:
            rows += _rule_rows(plan, name)
        else:
            rows += _group_rows(plan, name)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["title"] = [plan.workflow.experiments[e].replicates or plan.workflow.experiments[e].description
                      for e in frame["experiment"]]
    return frame


def _holm_verdicts(plan: Plan) -> dict[tuple[str, str], str]:
    """(experiment, claim id) -> its verdict after Holm's correction over the folder's claims,
    as the scorecard decides it (an uncorrected "contradicted" may read "inconclusive after Holm")."""
    tables = {name: claims_outputs(plan, name)["claims_csv"] for name, exp in plan.workflow.experiments.items()
              if exp.claims}
    if not tables or not all(path.exists() for path in tables.values()):
        return {}
    alpha = round(1 - plan.workflow.claims_confidence, 10)
    frame = scorecard.holm_corrected(scorecard.collect(plan, tables), alpha)
    return {(row.experiment, row.claim_id): row.verdict for row in frame.itertuples()}


def scale_text(plan: Plan, experiment: str) -> str:
    """"data: ...; net: ..." (the experiment's departures from the paper), or "the paper's scale"."""
    departures = plan.workflow.experiments[experiment].departures
    return "; ".join(f"{aspect}: {text}" for aspect, text in departures.items()) or "the paper's scale"


def _summary(plan: Plan, experiment: str) -> pd.DataFrame:
    path = run_outputs(plan, experiment)["table_csv"]
    if not path.exists():
        return pd.DataFrame(columns=["group"]).set_index("group")
    return pd.read_csv(path, keep_default_na=False, na_values=[""]).set_index("group")


def _policy_and_epochs(job) -> str:
    return f"{describe.policy_name(job.config['schedule']['policy'])}, {job.config['train']['epochs']} epochs"


def _reached(plan: Plan, experiment: str, summary: pd.DataFrame, group: str) -> str:
    """"1cycle, 4 epochs: 86.67 ± 0.41 %" (or "... : diverged in 3 of 3 seeds", "pending"); with
    the iterations where the experiment's groups differ in them at equal epochs (SC's data sizes)."""
    jobs = plan.experiment_trains(experiment)
    job = next(job for job in jobs if job.group == group)
    what = _policy_and_epochs(job)
    if any(other.group != group and _policy_and_epochs(other) == what for other in jobs):
        what += f", {group}"  # two groups alike in policy and epochs (fp32 vs bf16, say): named
    iterations = summary.loc[group, "iterations"] if group in summary.index else math.nan
    if plan.workflow.experiments[experiment].compare is not None and not pd.isna(iterations):
        what += f" ({iterations:,.0f} it)".replace(",", " ")
    if group not in summary.index or summary.loc[group, "n"] == 0:
        return f"{what}: pending"
    row = summary.loc[group]
    if row["n_completed"] == 0:
        return f"{what}: diverged in {row['n_diverged']} of {row['n']} seeds"
    spread = "" if pd.isna(row["accuracy_std"]) else f" ± {row['accuracy_std']:.2f}"
    return f"{what}: {row['accuracy_mean']:.2f}{spread} %"


def _claim_rows(plan: Plan, experiment: str, verdicts: dict[tuple[str, str], str]) -> list[dict[str, str]]:
    exp = plan.workflow.experiments[experiment]
    table = pd.read_csv(claims_outputs(plan, experiment)["claims_csv"], keep_default_na=False, dtype=str)
    summary = _summary(plan, experiment)
    rows = []
    for row in table.itertuples():
        groups = [row.candidate, row.baseline] if row.candidate else [g for g in row.groups.split(" > ") if g]
        compared = " vs ".join(_reached(plan, experiment, summary, g) for g in groups if g in exp.groups)
        basis = claims.basis_kind(row.expected_basis)
        paper = (f"{row.expected}" + {"point": " (point values: no test)", "stated": " (stated in the config: no test)"}
                 .get(basis, "")) if row.expected else ""
        rows.append({"experiment": experiment, "kind": "claim", "id": row.claim_id, "question": row.text,
                     "compared": compared, "effect": row.evidence,
                     "verdict": verdicts.get((experiment, row.claim_id), row.verdict), "paper_verdict": paper,
                     "scale": scale_text(plan, experiment), "table": f"#claims-{experiment}",
                     "figure": _figure_for(plan, experiment, groups), "runs": " ".join(groups)})
    return rows


def _figure_for(plan: Plan, experiment: str, groups: list[str]) -> str:
    """The figure that shows a comparison: the accuracy figure for the experiment's own candidate
    and baseline, the comparison figure for the other pairs (SC's smaller data sizes)."""
    exp = plan.workflow.experiments[experiment]
    accuracy = accuracy_outputs(plan, experiment).get("accuracy_png")
    comparison = comparison_outputs(plan, experiment).get("comparison_png")
    own = groups == [exp.candidate, exp.baseline]
    chosen = accuracy if (own or comparison is None) else comparison
    return _relative(plan, chosen) if chosen is not None and chosen.exists() else ""


def _relative(plan: Plan, path: Path) -> str:
    return path.relative_to(plan.results_dir).as_posix()


def _rule_rows(plan: Plan, experiment: str) -> list[dict[str, str]]:
    """A bounds study's rules, each against the grid's best; one invalid row if it failed a gate."""
    outputs = bounds_study_outputs(plan, experiment)
    if not outputs["regret_csv"].exists():
        return []
    regret = pd.read_csv(outputs["regret_csv"], keep_default_na=False, na_values=[""])
    figure = _relative(plan, outputs["regret_figure_png"]) if outputs["regret_figure_png"].exists() else ""
    base = {"experiment": experiment, "scale": scale_text(plan, experiment), "table": f"#regret-{experiment}",
            "figure": figure, "paper_verdict": ""}
    label = next((v for v in regret.get("validity", pd.Series(dtype=object)).dropna() if v), None)
    best = regret.iloc[0] if len(regret) else None
    question = ("Which range-test rule's max_lr trains best, against a grid of max_lr "
                f"(best {best['grid_best_max_lr']:g}: {best['grid_best_accuracy']:.2f} %)?" if best is not None else "")
    if label:
        gate = pd.read_csv(run_outputs(plan, experiment)["validity"], keep_default_na=False, dtype=str)
        failed = gate[gate["passed"] == "False"]
        return [{**base, "kind": "study", "id": experiment, "question": question,
                 "compared": f"{len(regret)} rules", "effect": "; ".join(failed["detail"]), "verdict": label,
                 "runs": "range-test"}]
    rows = []
    for row in regret.itertuples():
        effect = (f"regret {row.regret_pp:+.2f} pp, one-sided 95% bounds [{row.regret_lower_pp:+.2f} pp, "
                  f"{row.regret_upper_pp:+.2f} pp], n = {row.n}, {row.regret_test}"
                  if not math.isnan(row.regret_pp) else f"n = {row.n}, no regret")
        rank = "" if pd.isna(row.rank) else f", rank {int(row.rank)}"
        rows.append({**base, "kind": "rule", "id": row.rule, "question": question,
                     "compared": f"{row.rule} (reads {row.signal}), trained at {row.trained_max_lr:.3g}: "
                                 f"{row.accuracy_mean:.2f} %",
                     "effect": effect, "verdict": f"{row.versus_best}{rank}", "runs": f"rule_{row.rule}"})
    return rows


def _group_rows(plan: Plan, experiment: str) -> list[dict[str, str]]:
    """What each group of an experiment without claims reached: mean [95 % t interval], n."""
    exp = plan.workflow.experiments[experiment]
    summary = _summary(plan, experiment)
    figure = accuracy_outputs(plan, experiment).get("accuracy_png")
    rows = []
    for group in exp.training_groups():
        if group not in summary.index:
            continue
        row = summary.loc[group]
        if row["n_completed"] and not pd.isna(row["accuracy_ci_low"]):
            effect = (f"{row['accuracy_mean']:.2f} %, 95% t interval [{row['accuracy_ci_low']:.2f}, "
                      f"{row['accuracy_ci_high']:.2f}], n = {row['n_completed']}")
        elif row["n_completed"]:
            effect = f"{row['accuracy_mean']:.2f} %, n = {row['n_completed']} ({row['accuracy_by_seed']})"
        else:
            effect = f"n = 0 of {row['n']}: no final accuracy"
        verdict = NO_CLAIM if row["n_completed"] else (row["verdict"] or "pending")
        rows.append({"experiment": experiment, "kind": "result", "id": group,
                     "question": exp.description or exp.replicates,
                     "compared": _reached(plan, experiment, summary, group),
                     "effect": effect, "verdict": verdict, "paper_verdict": "", "scale": scale_text(plan, experiment),
                     "table": f"#{experiment}", "figure": _relative(plan, figure) if figure and figure.exists() else "",
                     "runs": group})
    return rows
