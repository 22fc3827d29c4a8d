"""`onecycle compare-reference`: does a fresh run of a workflow agree with its reference results?

The smoke results kept in git (results/smoke/) are a reference, not bytes to reproduce: float32
training is not bit-identical across CPUs, thread counts or library versions (vector widths and
threads change the order of float sums), so a fresh run on another machine can never rewrite the
same files. `make smoke` runs into an untracked folder and compares it with the reference at the
level that must hold on any machine, per experiment of the workflow config:

- per group, the status: seeds run, completed and diverged (the table's n, n_completed, n_diverged);
- per group, the mean final test accuracy of the completed seeds, within a tolerance derived
  below from the seed-to-seed spread and the test set's binomial noise;
- per group, the table's verdict column;
- per claim, the verdict in tables/<experiment>_claims.csv, when the reference has that file.

The accuracy tolerance. On another CPU the rounding of float32 sums differs in the last bit, and
training amplifies that chaotically: after a few hundred iterations the trajectory is as far from
the reference's as another seed's would be (data order and initial weights stay the same, which can
only keep the two closer). So each run's final accuracy is treated as an independent draw from the
distribution over seeds, with variance sigma^2, and the difference of an n_ref-seed mean and an
n_run-seed mean has standard error sigma * sqrt(1/n_ref + 1/n_run).

sigma^2 is the pooled seed variance of both folders. With two seeds each estimate has one degree of
freedom and can come out near zero by chance, so sigma is floored by the test set's binomial noise,
sqrt(p (1 - p) / N) at accuracy p on N test images: two networks of equal true accuracy, scored on
the same N images, differ by that much when their errors fall on different images (shared hard
images only make the difference smaller, so the floor errs on the tolerant side).

The tolerance is ACCURACY_Z standard errors: an honest run lands outside it with probability
2 Phi(-4) = 6e-5 per group (normal approximation), while a change of the protocol (another LR,
schedule or update rule, a bug) that moves a group's mean by more than that is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from onecycle import io
from onecycle.errors import ConfigError
from onecycle.experiments.identity import is_set_aside

ACCURACY_Z = 4.0
STATUS_COLUMNS = ("n", "n_completed", "n_diverged")


@dataclass(frozen=True)
class Check:
    """One comparison: `subject` is a group (status, accuracy, verdict) or a claim id (claim)."""
    experiment: str
    subject: str
    check: str
    reference: str
    run: str
    tolerance: str
    agrees: bool


def accuracy_tolerance_pp(reference_std: float, reference_n: int, run_std: float, run_n: int,
                          accuracy_pp: float, test_size: int | None) -> float:
    """ACCURACY_Z standard errors of the difference of the two groups' mean accuracies, in
    percentage points (see the module docstring). NaN when neither a seed spread nor the test
    set size is known."""
    variances, weights = [], []
    for std, n in ((reference_std, reference_n), (run_std, run_n)):
        if n >= 2 and math.isfinite(std):
            variances.append((n - 1) * std ** 2)
            weights.append(n - 1)
    seed_variance = sum(variances) / sum(weights) if weights else math.nan
    p = accuracy_pp / 100
    binomial_variance = 100 ** 2 * p * (1 - p) / test_size if test_size else math.nan
    known = [v for v in (seed_variance, binomial_variance) if math.isfinite(v)]
    if not known or reference_n < 1 or run_n < 1:
        return math.nan
    return ACCURACY_Z * math.sqrt(max(known) * (1 / reference_n + 1 / run_n))


def compare(reference: Path, run: Path, workflow: Mapping[str, Any]) -> list[Check]:
    """Every check of every experiment of `workflow` (a workflow config mapping), reading the
    tables under `reference` and `run` (two results folders of that workflow)."""
    from onecycle.experiments.loading import deep_merge

    checks: list[Check] = []
    for experiment, spec in workflow["experiments"].items():
        reference_table = _read_table(reference / "tables" / f"{experiment}.csv", required=True)
        run_table = _read_table(run / "tables" / f"{experiment}.csv", required=False)
        test_sizes = {group: _test_size(deep_merge(spec.get("base", {}), overrides or {}))
                      for group, overrides in spec.get("groups", {}).items()}
        checks += _group_checks(experiment, reference_table, run_table, test_sizes)
        claims = reference / "tables" / f"{experiment}_claims.csv"
        if claims.exists():
            checks += _claim_checks(experiment, _read_table(claims, required=True),
                                    _read_table(run / "tables" / claims.name, required=False))
    return checks


def _group_checks(experiment: str, reference: pd.DataFrame, run: pd.DataFrame | None,
                  test_sizes: Mapping[str, int | None]) -> list[Check]:
    ref_rows = _rows_by(reference, "group")
    run_rows = _rows_by(run, "group") if run is not None else {}
    checks = []
    for group in [*ref_rows, *(g for g in run_rows if g not in ref_rows)]:
        ref, new = ref_rows.get(group), run_rows.get(group)
        if ref is None or new is None:
            where = "not in the reference" if ref is None else "missing from the run"
            checks.append(Check(experiment, group, "group", "-" if ref is None else "present",
                                "-" if new is None else "present", where, False))
            continue
        ref_status, run_status = (tuple(int(row[c]) for c in STATUS_COLUMNS) for row in (ref, new))
        checks.append(Check(experiment, group, "status", _status_text(ref_status), _status_text(run_status),
                            "equal", ref_status == run_status))
        checks.append(_accuracy_check(experiment, group, ref, new, test_sizes.get(group)))
        checks.append(Check(experiment, group, "verdict", str(ref["verdict"]), str(new["verdict"]), "equal",
                            str(ref["verdict"]) == str(new["verdict"])))
    return checks


def _accuracy_check(experiment: str, group: str, ref: pd.Series, new: pd.Series,
                    test_size: int | None) -> Check:
    ref_mean, run_mean = float(ref["accuracy_mean"]), float(new["accuracy_mean"])
    ref_n, run_n = int(ref["n_completed"]), int(new["n_completed"])
    if ref_n == 0 or run_n == 0:
        # No accuracy on one side: the status check says why; both without one agree.
        return Check(experiment, group, "accuracy", _mean_text(ref_mean, ref_n), _mean_text(run_mean, run_n),
                     "-", ref_n == run_n == 0)
    tolerance = accuracy_tolerance_pp(float(ref["accuracy_std"]), ref_n, float(new["accuracy_std"]), run_n,
                                      (ref_mean + run_mean) / 2, test_size)
    agrees = math.isfinite(tolerance) and abs(run_mean - ref_mean) <= tolerance
    return Check(experiment, group, "accuracy", _mean_text(ref_mean, ref_n), _mean_text(run_mean, run_n),
                 f"±{tolerance:.2f}" if math.isfinite(tolerance) else "unknown", agrees)


def _claim_checks(experiment: str, reference: pd.DataFrame, run: pd.DataFrame | None) -> list[Check]:
    ref_rows = _rows_by(reference, "claim_id")
    run_rows = _rows_by(run, "claim_id") if run is not None else {}
    checks = []
    for claim in [*ref_rows, *(c for c in run_rows if c not in ref_rows)]:
        ref, new = ref_rows.get(claim), run_rows.get(claim)
        ref_verdict = "-" if ref is None else str(ref["verdict"])
        run_verdict = "-" if new is None else str(new["verdict"])
        checks.append(Check(experiment, claim, "claim", ref_verdict, run_verdict, "equal",
                            ref is not None and new is not None and ref_verdict == run_verdict))
    return checks


def _read_table(path: Path, required: bool) -> pd.DataFrame | None:
    if not path.exists():
        if required:
            raise ConfigError(f"{path}: reference table not found")
        return None
    return pd.read_csv(path)


def _rows_by(table: pd.DataFrame, key: str) -> dict[str, pd.Series]:
    if key not in table.columns:
        raise ConfigError(f"a results table lacks the column {key!r}")
    return {str(row[key]): row for _, row in table.iterrows()}


def _test_size(job: Mapping[str, Any]) -> int | None:
    from onecycle.data import DATASETS

    info = DATASETS.get(job.get("data", {}).get("dataset", ""))
    return info.test_size if info is not None else None


def _status_text(status: tuple[int, ...]) -> str:
    n, completed, diverged = status
    return f"{n} run, {completed} completed, {diverged} diverged"


def _mean_text(mean: float, n: int) -> str:
    return f"{mean:.2f} (n={n})" if n else "-"


def provenance_summary(results: Path) -> str:
    """Which revision, CPU and thread count produced a results folder (from its metrics.json)."""
    found: dict[str, set[str]] = {"revision": set(), "cpu": set(), "torch threads": set()}
    for path in sorted((results / "train").rglob("metrics.json")):
        if is_set_aside(path):  # a stale run moved aside (docs/design.md §10d): not of this folder
            continue
        provenance = io.read_json(path).get("provenance", {})
        found["revision"].add(str(provenance.get("git_revision")))
        found["cpu"].add(str(provenance.get("cpu_model") or provenance.get("device_name")))
        found["torch threads"].add(str(provenance.get("torch_threads")))
    if not found["revision"]:
        return "no training results"
    return ", ".join(f"{key} {' / '.join(sorted(values))}" for key, values in found.items())


def format_report(checks: Iterable[Check], reference: Path, run: Path) -> str:
    checks = list(checks)
    header = ("experiment", "group/claim", "check", "reference", "run", "tolerance", "agrees")
    rows = [header] + [(c.experiment, c.subject, c.check, c.reference, c.run, c.tolerance,
                        "yes" if c.agrees else "NO") for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    table = "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                      for row in rows)
    failed = sum(not c.agrees for c in checks)
    lines = [f"reference {reference}: {provenance_summary(reference)}",
             f"run       {run}: {provenance_summary(run)}", "",
             table if checks else "(nothing to compare)", ""]
    if failed:
        lines.append(f"DISAGREEMENT: {failed} of {len(checks)} checks fail (agrees = NO)")
    else:
        lines.append(f"agreement: all {len(checks)} checks hold (status, accuracy within "
                     f"{ACCURACY_Z:g} standard errors, verdicts)")
    return "\n".join(lines)
