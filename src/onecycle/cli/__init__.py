"""`onecycle`: run one job outside Snakemake through the same code the workflow uses.

    onecycle train --config RUN.yaml --out DIR [--bounds bounds.json] [--threads N]
    onecycle range-test --config RANGE.yaml --out DIR [--threads N]
    onecycle advise --config RUN.yaml --out DIR [--budget F | --budget-iterations N]
    onecycle schedule --list | --policy NAME [--set k=v ...] --steps N [--plot F.png]
    onecycle prepare-data --dataset NAME --record FILE [--root DIR] [--no-download] [--no-verify]
    onecycle caffe-cache --dataset NAME --splits JSON --record FILE
    onecycle combine-bounds --out FILE SEED_BOUNDS.json ...
    onecycle report --config WORKFLOW.yaml [--experiment NAME] [--only WHAT]
    onecycle index [--out results/index.html] WORKFLOW.yaml ...
    onecycle compare-reference --config WORKFLOW.yaml --reference DIR --run DIR
    onecycle config --schema {run,range-test,workflow}
    onecycle plan --config WORKFLOW.yaml [--device-class gpu|cpu] [--tflops X] [--devices N]

Bad input ends with one line `onecycle: error: ...` and exit status 2, before any work starts.
Only argparse is imported until a command runs (torch, pandas and pydantic are not), so that
`onecycle --help` answers at once. `schedule` is the library's command (`pip install onecycle`);
every other one is the replication suite's, and on an install without `onecycle[workflow]` it
says so in one line instead of failing on its first missing import. This module builds the
parser and reports errors; the commands' handlers are in onecycle.cli.commands, `onecycle
schedule` in onecycle.cli.schedule.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from onecycle import io
from onecycle.cli import commands
from onecycle.cli import schedule as cli_schedule
from onecycle.errors import ConfigError, one_line

_THREADS_HELP = (f"torch threads (default: $OMP_NUM_THREADS if set, else {commands.DEFAULT_THREADS}, as the "
                 "workflow's train_threads); recorded in metrics.json as provenance.torch_threads")


_SET_ASIDE_HELP = ("a finished run (or checkpoint) of another config in --out is moved to <out>.stale-<digest> "
                   "instead of refused (the workflow's jobs pass it); a finished run of this config is never redone")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onecycle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # One helper per command, in the order `onecycle --help` lists them.
    for add in (_add_train, _add_range_test, _add_advise, _add_prepare_data, _add_caffe_cache, _add_combine_bounds,
                _add_report, _add_index, _add_compare_reference, _add_config, _add_plan, cli_schedule.register):
        add(sub)
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="one training run",
                       description="Train one run as the workflow's train jobs do. At a terminal a live "
                                   "progress line; otherwise one line per evaluation.")
    p.add_argument("--config", required=True,
                   help="run config, YAML or JSON (see configs/examples/run.yaml, `onecycle config --schema run`)")
    p.add_argument("--out", required=True,
                   help="output folder: config.json, history.csv, train_log.csv, metrics.json; "
                        "a checkpoint there is resumed")
    p.add_argument("--bounds", help="bounds.json from a range test (for schedule.lr_bounds: range_test)")
    p.add_argument("--threads", type=int, metavar="N", help=_THREADS_HELP)
    p.add_argument("--set-aside-stale", action="store_true", help=_SET_ASIDE_HELP)
    p.set_defaults(handler=commands._train)


def _add_range_test(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("range-test", help="one LR range test",
                       description="Run one LR range test as the workflow's range_test jobs do.")
    p.add_argument("--config", required=True,
                   help="range-test config, YAML or JSON: a run config with a range_test block instead "
                        "of schedule (`onecycle config --schema range-test`)")
    p.add_argument("--out", required=True,
                   help="output folder: config.json, history.csv (the curve), bounds.json (every "
                        "heuristic's suggestion and the chosen bounds), metrics.json")
    p.add_argument("--threads", type=int, metavar="N", help=_THREADS_HELP)
    p.add_argument("--set-aside-stale", action="store_true", help=_SET_ASIDE_HELP)
    p.set_defaults(handler=commands._range_test)


def _add_advise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("advise", help="a max LR for a run's 1cycle, checked by range tests and short trainings",
                       description="Run onecycle.advise on a run config's model and data: range tests over "
                                   "several seeds, every rule's suggestion, short 1cycle trainings at them on a "
                                   "held-out part of the training data; write what it tried and run.json, the "
                                   "run config at the max LR that scored best (docs/library.md).")
    p.add_argument("--config", required=True,
                   help="run config, YAML or JSON, as for `onecycle train` (schedule: smith_1cycle), with optional "
                        "range_test and advise blocks (budget, seeds, holdout, grid_points)")
    p.add_argument("--out", required=True, help="output folder: trials.csv, suggestions.csv, advice.json, run.json, "
                                                "advice.png")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=float, metavar="F",
                        help="training iterations advise may spend, as a fraction of the run's "
                             "(overrides advise.budget)")
    budget.add_argument("--budget-iterations", type=int, metavar="N",
                        help="training iterations advise may spend (overrides advise.budget_iterations)")
    p.add_argument("--threads", type=int, metavar="N", help=_THREADS_HELP)
    p.set_defaults(handler=commands._advise)


def _add_prepare_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-data", help="download (if needed) and verify a dataset")
    p.add_argument("--dataset", required=True, help="dataset name, e.g. fashion_mnist, cifar10, imagefolder")
    p.add_argument("--root", help="dataset folder (default: $ONECYCLE_DATA/<dataset> when set, else the dataset's "
                                  "own default: Debian's copy for fashion_mnist when installed, else ./data/<dataset>)")
    p.add_argument("--record", required=True, help="JSON record written once the data is verified")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing dataset")
    p.add_argument("--no-verify", action="store_true",
                   help="accept a copy whose files are not byte-identical to the official ones (re-packed, "
                        "converted): skip the md5 check, read every split instead, record that in --record")
    p.set_defaults(handler=commands._prepare_data)


def _add_caffe_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caffe-cache", help="squash the images of ImageNet-folder splits once into uint8 caches "
                                           "and compute their Caffe mean images")
    p.add_argument("--dataset", required=True, help="imagefolder or imagenet")
    p.add_argument("--splits", required=True, help='JSON list of {"root": ..., "classes": ...}')
    p.add_argument("--record", required=True, help="JSON record written once every cache is built")
    p.set_defaults(handler=commands._caffe_cache)


def _add_combine_bounds(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("combine-bounds", help="median of several range-test seeds' bounds")
    p.add_argument("--out", required=True, help="the combined bounds.json to write")
    p.add_argument("inputs", nargs="+", help="each seed's bounds.json")
    p.set_defaults(handler=commands._combine_bounds)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and figures from stored results (no training)")
    p.add_argument("--config", required=True, help="workflow config, e.g. configs/smoke.yaml")
    p.add_argument("--experiment", help="only this experiment (default: all of the config's)")
    p.add_argument("--only", choices=("runs", "accuracy", "range-test", "comparison", "bounds-study", "claims",
                                      "scorecard", "bounds-summary", "html"),
                   help="only the training tables, the accuracy figure, the range-test figure, the comparison figure, "
                        "a bounds study's regret and settings tables/figures, the claims tables, the suite's "
                        "claims scorecard (all experiments), the bounds studies' summary (all studies), or "
                        "the static report page <results_dir>/report.html (all experiments)")
    p.set_defaults(handler=commands._report)


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="one page of every results folder's answers (results/index.html)",
                       description="Gather the answers (tables/answers.csv, written by `onecycle report`) of "
                                   "each config's results folder onto one offline page.")
    p.add_argument("configs", nargs="+", help="workflow configs, e.g. configs/smoke.yaml configs/sc_mirror.yaml")
    p.add_argument("--out", default="results/index.html", help="the page to write (default: results/index.html)")
    p.set_defaults(handler=commands._index)


def _add_compare_reference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare-reference", help="compare a fresh run of a workflow with reference results",
                       description="Compare two results folders of one workflow at the level that holds "
                                   "across machines: per group the status counts, the mean accuracy within "
                                   "a tolerance from the seed spread and the test set's binomial noise, the "
                                   "verdict; per claim the verdict. Exit status 0 on agreement, 1 otherwise.")
    p.add_argument("--config", required=True, help="workflow config both folders were run from")
    p.add_argument("--reference", required=True, help="reference results folder, e.g. results/smoke")
    p.add_argument("--run", required=True, help="the fresh results folder, e.g. results/smoke-run")
    p.set_defaults(handler=commands._compare_reference)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the JSON Schema of a config file kind",
                       description="Print the JSON Schema (draft 2020-12) generated from the config models.")
    p.add_argument("--schema", required=True, choices=("run", "range-test", "workflow"),
                   help="run: `onecycle train --config`; range-test: `onecycle range-test --config`; "
                        "workflow: configs/*.yaml (Snakemake --configfile)")
    p.set_defaults(handler=commands._config)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="jobs, iterations, images, FLOPs and device-hours of a workflow config")
    p.add_argument("--config", required=True, help="workflow config, e.g. configs/paper.yaml")
    p.add_argument("--device-class", default="gpu", help="gpu (default) or cpu: the default throughput")
    p.add_argument("--tflops", type=float, help="effective TFLOP/s per device for every job, instead of "
                                               "the default or what make gpu-check measured")
    p.add_argument("--calibration", help="make gpu-check's per-family rates (default "
                                         "results/gpu_check/rates.json, when present)")
    p.add_argument("--devices", type=int, default=1, help="devices working at once, for the days estimate")
    p.set_defaults(handler=commands._plan)


# The exit status of a command stopped by Ctrl-C: 128 + SIGINT, as a shell reports it.
INTERRUPTED = 130
# Path options that name a file or folder: an empty one would mean the current folder.
PATH_OPTIONS = ("config", "out", "bounds", "record", "plot", "root", "reference", "run")

# The commands the library alone runs (pyproject.toml's base dependencies); the others are the
# replication suite's.
LIBRARY_COMMANDS = ("schedule",)
# What pyproject.toml's `workflow` extra installs, by import name (pyyaml -> yaml, scikit-learn
# -> sklearn; `plots` brings matplotlib): the suite's commands import from all of them.
WORKFLOW_MODULES = ("yaml", "pydantic", "torchvision", "scipy", "seaborn", "matplotlib", "sklearn", "snakemake",
                    "tqdm")


def missing_modules(names: Sequence[str]) -> list[str]:
    """The top-level modules of `names` that cannot be imported here; finding them imports nothing."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


def _check_extras(command: str) -> None:
    missing = [] if command in LIBRARY_COMMANDS else missing_modules(WORKFLOW_MODULES)
    if missing:
        raise ConfigError(f"`onecycle {command}` is part of the replication suite, which this install lacks "
                          f"(no {', '.join(missing)}): pip install 'onecycle[workflow]'")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for option in PATH_OPTIONS:
            if getattr(args, option, None) is not None and not str(getattr(args, option)).strip():
                raise ConfigError(f"--{option} is empty: name a file or folder")
        _check_extras(args.command)
        return args.handler(args)
    except (ConfigError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
    except OSError as error:  # disk full, permission denied, a folder that is a file...
        message = io.describe_os_error(error)
    except KeyboardInterrupt:
        # Ctrl-C: every file is written atomically, so what is on disk is whole; a training keeps
        # its last checkpoint (written at each epoch end and every checkpoint_every_s).
        resume = (f"; {args.out} keeps its last checkpoint, and the same command resumes from it"
                  if args.command == "train" else "")
        print(f"onecycle: interrupted{resume}", file=sys.stderr)
        return INTERRUPTED
    # One line, and a bounded one: the message may quote a value out of a hostile file.
    print(f"onecycle: error: {one_line(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
