"""Validate `onecycle advise` on the LeNet bounds study (results/bounds_study/, docs/bounds_studies.md).

For each budget: run `onecycle advise` on configs/examples/advise_lenet.yaml (the study's data,
model, optimizer, 4-epoch 1cycle and range test), then train the study's own protocol at the
max LR it picked, over the study's seeds (its grid runs' spec.json with that max LR: 10 000
images, the full 10k test set), and score the pick's regret against the study's grid as
onecycle.report.bounds_study does (a diverged run scores chance). Writes
results/advise/fmnist_lenet_validation.{csv,md} beside each advise run's folder.

    OMP_NUM_THREADS=1 python scripts/advise_validation.py --budgets 5 10
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from onecycle import io
from onecycle.report import stats

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "results" / "bounds_study"
GRID = STUDY / "train" / "fmnist_lenet_bounds"
REGRET = STUDY / "tables" / "fmnist_lenet_bounds_regret.csv"
CONFIG = REPO / "configs" / "examples" / "advise_lenet.yaml"
OUT = REPO / "results" / "advise"
SEEDS = (0, 1, 2)
CHANCE = 10.0  # % on Fashion-MNIST's ten classes: what a diverged run scores (report/bounds_study.py)
# The study's grid point whose spec.json the pick's runs copy; any point's would do (only the LRs differ).
TEMPLATE = "lr_0.1"


def onecycle(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "onecycle.cli", *argv, "--threads", "1"], check=True, cwd=REPO)


def advise(budget: float) -> tuple[Path, dict]:
    folder = OUT / f"fmnist_lenet_budget{budget:g}"
    if not (folder / "advice.json").is_file():
        onecycle("advise", "--config", str(CONFIG), "--out", str(folder), "--budget", f"{budget:g}")
    return folder, io.read_json(folder / "advice.json")


def score_pick(folder: Path, max_lr: float) -> list[float]:
    """The study's training at `max_lr` (base max/10) for each seed: final full-test-set accuracy
    in %, chance for a diverged run."""
    scores = []
    for seed in SEEDS:
        spec = io.read_json(GRID / TEMPLATE / f"seed{seed}" / "spec.json")
        spec["name"], spec["group"] = f"fmnist_lenet_bounds/advise/seed{seed}", "advise"
        spec["schedule"]["params"].update(max_lr=max_lr, base_lr=max_lr / 10)
        run = folder / "check" / f"seed{seed}"
        io.write_json(folder / "check" / f"seed{seed}.json", spec)
        if not (run / "metrics.json").is_file():
            onecycle("train", "--config", str(folder / "check" / f"seed{seed}.json"), "--out", str(run))
        metrics = io.read_json(run / "metrics.json")
        scores.append(100 * metrics["final"]["test_accuracy"] if metrics["status"] == "completed" else CHANCE)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[5.0, 10.0],
                        help="advise budgets, as fractions of the real training's iterations")
    args = parser.parse_args()
    regret = pd.read_csv(REGRET)
    best = float(regret["grid_best_accuracy"].iloc[0])
    rows = []
    for budget in args.budgets:
        folder, record = advise(budget)
        mean, std, n = stats.mean_std(score_pick(folder, record["max_lr"]))
        rows.append({"method": f"advise, budget {budget:g} x the training", "max_lr": record["max_lr"],
                     "accuracy_mean": mean, "accuracy_std": std, "n": n, "regret_pp": best - mean,
                     "cost_iterations": record["cost_iterations"], "trial_iterations": record["trial_iterations"]})
    # A rule costs the study's range tests: the iterations they ran before they diverged.
    tests = sum(io.read_json(STUDY / "range_test" / "fmnist_lenet_bounds" / f"seed{seed}" / "metrics.json")
                ["iterations"] for seed in SEEDS)
    for rule in regret.itertuples():
        rows.append({"method": f"rule {rule.rule} (the study's median of 3 range tests)",
                     "max_lr": rule.trained_max_lr, "accuracy_mean": rule.accuracy_mean,
                     "accuracy_std": rule.accuracy_std, "n": rule.n, "regret_pp": rule.regret_pp,
                     "cost_iterations": tests, "trial_iterations": 0})
    table = pd.DataFrame(rows)
    io.write_csv(OUT / "fmnist_lenet_validation.csv", table)
    io.write_text(OUT / "fmnist_lenet_validation.md", _markdown(table, best))
    print(table.to_string(index=False))


def _markdown(table: pd.DataFrame, best: float) -> str:
    lines = [f"Grid best: {best:.2f} % (max LR {pd.read_csv(REGRET)['grid_best_max_lr'].iloc[0]:g}); "
             "regret = grid best - accuracy, in pp; accuracy over seeds 0-2 on the full 10k test set.", "",
             "| method | max LR | accuracy (%) | regret (pp) | cost (iterations) |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(f"| {row.method} | {row.max_lr:.3g} | {row.accuracy_mean:.2f} ± {row.accuracy_std:.2f} | "
                     f"{row.regret_pp:.2f} | {row.cost_iterations} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
