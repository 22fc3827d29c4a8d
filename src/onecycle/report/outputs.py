"""Where the report writes: every table, figure and page a plan's report produces, and the names
that would make two of them one file.

The Snakefile declares these paths, `onecycle report` writes them, and the workflow config's
validation refuses experiment names whose files would collide (`check_experiment_names`):
`fm_claims` beside an experiment `fm` would write `tables/fm_claims.csv` twice. Each file is
`<experiment><suffix>.<ext>` under tables/ or figures/, or one of the suite's stems; the
suffixes below are the only place they are spelled, so the check and the paths cannot drift.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from onecycle import io

if TYPE_CHECKING:
    from onecycle.experiments.expansion import Plan

TABLE_EXTENSIONS = ("csv", "md", "tex", "html")
FIGURE_EXTENSIONS = ("png", "pdf")
# Suffixes after an experiment's name: its verdict table, time to accuracy, paired comparison,
# validity gates, accuracy figure, range-test figure, comparison figure, a bounds study's two
# tables and figures, its claims table.
TABLE, TIME_TO_ACCURACY, PAIRED, VALIDITY, ACCURACY = "", "_time_to_accuracy", "_paired", "_validity", "_accuracy"
RANGE_TEST, COMPARISON, REGRET, RANGE_TEST_SETTINGS, CLAIMS = (
    "_range_test", "_comparison", "_regret", "_range_test_settings", "_claims")
EXPERIMENT_SUFFIXES = (TABLE, TIME_TO_ACCURACY, PAIRED, VALIDITY, ACCURACY, RANGE_TEST, COMPARISON, REGRET,
                       RANGE_TEST_SETTINGS, CLAIMS)
# The suite's own files: the claims scorecard and the bounds studies' summary.
SCORECARD_STEM, BOUNDS_SUMMARY_STEM = "claims_scorecard", "bounds_study_summary"
SUITE_STEMS = (SCORECARD_STEM, BOUNDS_SUMMARY_STEM)


def _files(folder: Path, stem: str, extensions: tuple[str, ...], key: str) -> dict[str, Path]:
    return {f"{key}_{ext}": folder / f"{stem}.{ext}" for ext in extensions}


def run_outputs(plan: Plan, experiment: str) -> dict[str, Path]:
    """Files `write_experiment_report` produces (the Snakefile declares these)."""
    tables = plan.results_dir / "tables"
    return {**_files(tables, experiment + TABLE, TABLE_EXTENSIONS, "table"),
            "time_to_accuracy": tables / f"{experiment}{TIME_TO_ACCURACY}.csv",
            "paired": tables / f"{experiment}{PAIRED}.csv",
            "validity": tables / f"{experiment}{VALIDITY}.csv"}


def accuracy_outputs(plan: Plan, experiment: str) -> dict[str, Path]:
    """Files `write_accuracy_figure` produces; none for a bounds study, whose question (which
    max_lr trains best) its regret figure answers: accuracy against iteration of its dozen
    groups answers none."""
    if plan.workflow.experiments[experiment].bounds_study is not None:
        return {}
    return _files(plan.results_dir / "figures", experiment + ACCURACY, FIGURE_EXTENSIONS, "accuracy")


def range_test_outputs(plan: Plan, experiment: str) -> dict[str, Path]:
    """Files `write_range_test_figure` produces; none for an experiment without range tests."""
    if not plan.experiment_range_tests(experiment):
        return {}
    return _files(plan.results_dir / "figures", experiment + RANGE_TEST, FIGURE_EXTENSIONS, "range_test")


def comparison_outputs(plan: Plan, experiment: str) -> dict[str, Path]:
    """Files `write_comparison_figure` produces; none unless the experiment sets `compare`."""
    if plan.workflow.experiments[experiment].compare is None:
        return {}
    return _files(plan.results_dir / "figures", experiment + COMPARISON, FIGURE_EXTENSIONS, "comparison")


def bounds_study_outputs(plan: Plan, experiment: str) -> dict[str, Path]:
    """Files `write_bounds_study_report` produces; none unless the experiment is a bounds study."""
    if plan.workflow.experiments[experiment].bounds_study is None:
        return {}
    tables, figures = plan.results_dir / "tables", plan.results_dir / "figures"
    outputs = {}
    for suffix in (REGRET, RANGE_TEST_SETTINGS):
        name = suffix.removeprefix("_")
        outputs.update(_files(tables, experiment + suffix, TABLE_EXTENSIONS, name))
        outputs.update(_files(figures, experiment + suffix, FIGURE_EXTENSIONS, f"{name}_figure"))
    return outputs


def bounds_summary_outputs(plan: Plan) -> dict[str, Path]:
    """The suite-level summary over the config's bounds studies; none if it has none."""
    if not plan.bounds_studies():
        return {}
    return _files(plan.results_dir / "tables", BOUNDS_SUMMARY_STEM, TABLE_EXTENSIONS, "summary")


def claims_outputs(plan: Plan, experiment: str) -> dict[str, Path]:
    """Files `write_claims_table` produces; none for an experiment without claims."""
    if not plan.workflow.experiments[experiment].claims:
        return {}
    return _files(plan.results_dir / "tables", experiment + CLAIMS, TABLE_EXTENSIONS, "claims")


def experiment_outputs(plan: Plan, experiment: str) -> dict[str, Path]:
    return {**run_outputs(plan, experiment), **accuracy_outputs(plan, experiment), **range_test_outputs(plan, experiment),
            **comparison_outputs(plan, experiment), **bounds_study_outputs(plan, experiment),
            **claims_outputs(plan, experiment)}


def scorecard_outputs(results_dir: Path) -> dict[str, Path]:
    """The claims scorecard's table and figure (onecycle.report.scorecard)."""
    tables, figures = Path(results_dir) / "tables", Path(results_dir) / "figures"
    return {**_files(tables, SCORECARD_STEM, TABLE_EXTENSIONS, "scorecard"),
            **_files(figures, SCORECARD_STEM, FIGURE_EXTENSIONS, "scorecard")}


def suite_outputs(plan: Plan) -> dict[str, Path]:
    """Files `write_scorecard` produces; none when no experiment has claims."""
    if not any(exp.claims for exp in plan.workflow.experiments.values()):
        return {}
    return scorecard_outputs(plan.results_dir)


def report_path(plan: Plan) -> Path:
    """The static report page (onecycle.report.html)."""
    return plan.results_dir / "report.html"


def check_experiment_names(names: list[str]) -> None:
    """Refuse experiment names whose report files would be another's (a ValueError naming both),
    or too long for a file name once a suffix and atomic_path's temporary name are added."""
    owners: dict[str, str] = {stem: "the suite's own" for stem in SUITE_STEMS}
    for name in names:
        longest = max((f"{name}{suffix}.{ext}" for suffix in EXPERIMENT_SUFFIXES
                       for ext in (*TABLE_EXTENSIONS, *FIGURE_EXTENSIONS)), key=io.temp_name_bytes)
        if io.temp_name_bytes(longest) > io.MAX_NAME_BYTES:
            raise ValueError(f"experiment name {name[:40]!r}... is {len(os.fsencode(name))} bytes: its file "
                             f"{longest[-30:]!r} would pass the {io.MAX_NAME_BYTES} bytes a file name may have")
        for suffix in EXPERIMENT_SUFFIXES:
            owner = owners.setdefault(name + suffix, name)
            if owner != name:
                whose = owner if owner.startswith("the suite") else f"experiment {owner!r}'s"
                raise ValueError(f"experiment {name!r}: its report files {name + suffix}.* would be {whose} "
                                 f"too; rename it (no name may be another's plus one of "
                                 f"{', '.join(s for s in EXPERIMENT_SUFFIXES if s)})")
