"""`onecycle`: run one job outside Snakemake through the same code the workflow uses.

    onecycle train --config RUN.yaml --out DIR [--bounds bounds.json] [--threads N]
    onecycle range-test --config RANGE.yaml --out DIR [--threads N]
    onecycle schedule --list | --policy NAME [--set k=v ...] --steps N [--plot F.png]
    onecycle prepare-data --dataset NAME --record FILE [--root DIR] [--no-download] [--no-verify]
    onecycle caffe-mean --dataset NAME --splits JSON --record FILE
    onecycle combine-bounds --out FILE SEED_BOUNDS.json ...
    onecycle report --config WORKFLOW.yaml [--experiment NAME] [--only WHAT]
    onecycle compare-reference --config WORKFLOW.yaml --reference DIR --run DIR
    onecycle config --schema {run,range-test,workflow}
    onecycle plan --config WORKFLOW.yaml [--device-class gpu|cpu] [--tflops X] [--devices N]

Bad input ends with one line `onecycle: error: ...` and exit status 2, before any work starts.
Only argparse is imported until a command runs (torch, pandas and pydantic are not), so that
`onecycle --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from onecycle import io
from onecycle.cli import schedule as cli_schedule
from onecycle.errors import ConfigError, one_line

# The workflow runs every training and range-test job with `train_threads` torch threads
# (onecycle.experiments.workflow.WorkflowConfig, default 1); a job run by hand uses the same by default.
DEFAULT_THREADS = 1


def _train(args: argparse.Namespace) -> int:
    from onecycle.experiments.config import load_run_config
    from onecycle.progress import RunProgress
    from onecycle.training.run import train
    from onecycle.training.schedule_setup import read_bounds_file

    bounds = read_bounds_file(_existing(args.bounds)) if args.bounds else None
    cfg = load_run_config(args.config)
    _set_threads(args.threads)
    with RunProgress(cfg.name) as progress:
        metrics = train(cfg, args.out, bounds=bounds, progress=progress)
    final = metrics["final"]["test_accuracy"]
    why = f" ({metrics['diverged']['reason']})" if metrics["diverged"] else ""
    print(f"{cfg.name}: {metrics['status']}{why}, {metrics['iterations']} iterations, "
          f"final test accuracy {'-' if final is None else f'{100 * final:.2f}%'}", flush=True)
    return 0


def _range_test(args: argparse.Namespace) -> int:
    from onecycle.experiments.config import load_range_test_config
    from onecycle.progress import RunProgress
    from onecycle.training.range_test_job import run_range_test_job

    cfg = load_range_test_config(args.config)
    _set_threads(args.threads)
    with RunProgress(cfg.name) as progress:
        metrics = run_range_test_job(cfg, args.out, progress=progress)
    b = metrics["bounds"]
    stop = metrics["diverged"]
    stopped = f" at iteration {stop['iteration']} ({stop['reason']})" if stop else ""
    found = f"base_lr {b['base_lr']}, max_lr {b['max_lr']}" if b["max_lr"] is not None else f"no bounds: {b['no_bounds']}"
    print(f"{cfg.name}: {metrics['status']}{stopped}; {b['chosen_rule']} -> {found}", flush=True)
    return 0


def _set_threads(threads: int | None) -> None:
    """torch's intra-op threads: --threads, else $OMP_NUM_THREADS (Snakemake sets it to a rule's
    threads), else the workflow's default. Results depend on it in the last bits (the order of
    float sums), so the count is recorded in every result's provenance (torch_threads)."""
    import torch

    if threads is None:
        text = os.environ.get("OMP_NUM_THREADS", "").strip()
        if text and not text.isdigit():
            raise ConfigError(f"$OMP_NUM_THREADS = {text!r} is not a number of threads")
        threads = int(text) if text else DEFAULT_THREADS
    if threads < 1:
        raise ConfigError(f"--threads {threads}: expected 1 or more")
    torch.set_num_threads(threads)


def _prepare_data(args: argparse.Namespace) -> int:
    from onecycle import data

    verify = not args.no_verify
    root = data.prepare(args.dataset, Path(args.root) if args.root else None, download=not args.no_download,
                        verify=verify)
    record = {"dataset": args.dataset, "root": str(root), "verified": verify}
    if not verify:
        # What the copy is, for the record: its md5s beside the official ones.
        record["checksums_skipped"] = "--no-verify: a copy that need not be byte-identical to the official files"
        record["files"] = data.compare_with_official(args.dataset, root)
        differing = [name for name, file in record["files"].items() if not file["matches"]]
        print(f"{args.dataset}: checksums not verified (--no-verify); "
              f"{len(differing)} of {len(record['files'])} files differ from the official ones")
    io.write_json(args.record, record)
    print(f"{args.dataset}: ready at {root}")
    return 0


def _caffe_mean(args: argparse.Namespace) -> int:
    from onecycle import data
    from onecycle.data import caffe_imagenet

    if args.dataset not in data.FOLDER_DATASETS:
        raise ValueError(f"--dataset {args.dataset!r}: Caffe mean images are for ImageNet folders "
                         f"({', '.join(data.FOLDER_DATASETS)})")
    splits = _split_list(args.splits)
    for split in splits:
        root = Path(split["root"]) if split.get("root") else None
        train = data.load_split(args.dataset, "train", root, class_list=split.get("classes"))
        caffe_imagenet.split_mean_image(train, num_workers=len(os.sched_getaffinity(0)))
        print(f"{args.dataset}: Caffe mean image of the {len(train)} images under {train.split_dir} cached")
    io.write_json(args.record, {"dataset": args.dataset, "splits": splits})
    return 0


def _split_list(text: str) -> list[dict]:
    """--splits as experiments.Plan.caffe_mean_images writes it: a JSON list of {root, classes}."""
    expected = '--splits: expected a JSON list of {"root": ..., "classes": ...} objects'
    try:
        splits = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{expected}; not JSON ({error.msg})") from None
    if not isinstance(splits, list) or not all(
            isinstance(split, dict) and set(split) <= {"root", "classes"} for split in splits):
        raise ValueError(f"{expected}, got {text!r}")
    return splits


def _combine_bounds(args: argparse.Namespace) -> int:
    from onecycle.training.range_test_job import combine_bounds
    from onecycle.training.schedule_setup import read_bounds_file

    combined = combine_bounds([read_bounds_file(_existing(p)) for p in args.inputs])
    io.write_json(args.out, combined)
    found = (f"base_lr {combined['base_lr']}, max_lr {combined['max_lr']}" if combined["max_lr"] is not None
             else f"no bounds: {combined['no_bounds']}")
    print(f"bounds: {found} ({combined['n_seeds_with_bounds']} of {combined['n_seeds']} seeds)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from onecycle.experiments.config import load_mapping
    from onecycle.experiments.workflow import expand
    from onecycle.report.html import write_html_report
    from onecycle.report.build import (write_bounds_study_report, write_bounds_summary, write_claims_table,
                                 write_comparison_figure, write_experiment_report, write_range_test_figure,
                                 write_scorecard)

    plan = expand(load_mapping(args.config), str(args.config))
    names = [args.experiment] if args.experiment else list(plan.workflow.experiments)
    for name in names:
        if name not in plan.workflow.experiments:
            raise ConfigError(f"{args.config}: no experiment {name!r}; "
                              f"valid: {', '.join(plan.workflow.experiments)}")
    written = []
    for name in [] if args.only in ("scorecard", "bounds-summary", "html") else names:
        if args.only in (None, "runs"):
            written += write_experiment_report(plan, name)
        if args.only in (None, "range-test"):
            written += write_range_test_figure(plan, name)
        if args.only in (None, "comparison"):
            written += write_comparison_figure(plan, name)
        if args.only in (None, "bounds-study"):
            written += write_bounds_study_report(plan, name)
        if args.only in (None, "claims"):
            written += write_claims_table(plan, name)
    # The scorecard, the bounds studies' summary (it reads every study's regret table) and the
    # report page span every experiment: with all of them, or on their own (the workflow's
    # claims_scorecard, bounds_study_summary and html_report); the page last, as it shows the rest.
    everything = args.only is None and not args.experiment
    if args.only == "scorecard" or everything:
        written += write_scorecard(plan)
    if args.only == "bounds-summary" or everything:
        written += write_bounds_summary(plan)
    if args.only == "html" or everything:
        written.append(write_html_report(plan))
    for path in written:
        print(path)
    return 0


def _compare_reference(args: argparse.Namespace) -> int:
    from onecycle.experiments.config import load_mapping, parse
    from onecycle.experiments.workflow import WorkflowConfig
    from onecycle.report.reference import compare, format_report

    workflow = load_mapping(args.config)
    parse(WorkflowConfig, workflow, str(args.config))
    reference, run = Path(args.reference), Path(args.run)
    for folder in (reference, run):
        if not folder.is_dir():
            raise ConfigError(f"{folder}: results folder not found")
    checks = compare(reference, run, workflow)
    print(format_report(checks, reference, run))
    return 0 if all(check.agrees for check in checks) else 1


def _config(args: argparse.Namespace) -> int:
    from onecycle.experiments.schema import config_schema

    print(json.dumps(config_schema(args.schema), indent=2))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from onecycle.experiments import cost as cost_plan
    from onecycle.experiments.config import load_mapping
    from onecycle.experiments.workflow import expand

    workflow = expand(load_mapping(args.config), str(args.config))
    if args.devices < 1:
        raise ConfigError(f"--devices {args.devices}: expected at least 1")
    rate = cost_plan.throughput(args.device_class, args.tflops, Path(args.calibration) if args.calibration else None)
    print(cost_plan.format_plan(workflow, rate, str(args.config), args.devices))
    return 0


def _existing(path: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: file not found")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onecycle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    threads_help = (f"torch threads (default: $OMP_NUM_THREADS if set, else {DEFAULT_THREADS}, as the "
                    "workflow's train_threads); recorded in metrics.json as provenance.torch_threads")

    p = sub.add_parser("train", help="one training run",
                       description="Train one run as the workflow's train jobs do. At a terminal a live "
                                   "progress line; otherwise one line per evaluation.")
    p.add_argument("--config", required=True,
                   help="run config, YAML or JSON (see configs/examples/run.yaml, `onecycle config --schema run`)")
    p.add_argument("--out", required=True,
                   help="output folder: config.json, history.csv, train_log.csv, metrics.json; "
                        "a checkpoint there is resumed")
    p.add_argument("--bounds", help="bounds.json from a range test (for schedule.lr_bounds: range_test)")
    p.add_argument("--threads", type=int, metavar="N", help=threads_help)
    p.set_defaults(handler=_train)

    p = sub.add_parser("range-test", help="one LR range test",
                       description="Run one LR range test as the workflow's range_test jobs do.")
    p.add_argument("--config", required=True,
                   help="range-test config, YAML or JSON: a run config with a range_test block instead "
                        "of schedule (`onecycle config --schema range-test`)")
    p.add_argument("--out", required=True,
                   help="output folder: config.json, history.csv (the curve), bounds.json (every "
                        "heuristic's suggestion and the chosen bounds), metrics.json")
    p.add_argument("--threads", type=int, metavar="N", help=threads_help)
    p.set_defaults(handler=_range_test)

    p = sub.add_parser("prepare-data", help="download (if needed) and verify a dataset")
    p.add_argument("--dataset", required=True, help="dataset name, e.g. fashion_mnist, cifar10, imagefolder")
    p.add_argument("--root", help="dataset folder (default: $ONECYCLE_DATA/<dataset>, else ./data/<dataset>)")
    p.add_argument("--record", required=True, help="JSON record written once the data is verified")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing dataset")
    p.add_argument("--no-verify", action="store_true",
                   help="accept a copy whose files are not byte-identical to the official ones (re-packed, "
                        "converted): skip the md5 check, read every split instead, record that in --record")
    p.set_defaults(handler=_prepare_data)

    p = sub.add_parser("caffe-mean", help="compute and cache the Caffe mean images of ImageNet-folder splits")
    p.add_argument("--dataset", required=True, help="imagefolder or imagenet")
    p.add_argument("--splits", required=True, help='JSON list of {"root": ..., "classes": ...}')
    p.add_argument("--record", required=True, help="JSON record written once every mean is cached")
    p.set_defaults(handler=_caffe_mean)

    p = sub.add_parser("combine-bounds", help="median of several range-test seeds' bounds")
    p.add_argument("--out", required=True, help="the combined bounds.json to write")
    p.add_argument("inputs", nargs="+", help="each seed's bounds.json")
    p.set_defaults(handler=_combine_bounds)

    p = sub.add_parser("report", help="tables and figures from stored results (no training)")
    p.add_argument("--config", required=True, help="workflow config, e.g. configs/smoke.yaml")
    p.add_argument("--experiment", help="only this experiment (default: all of the config's)")
    p.add_argument("--only", choices=("runs", "range-test", "comparison", "bounds-study", "claims", "scorecard",
                                      "bounds-summary", "html"),
                   help="only the training tables/figures, the range-test figure, the comparison figure, "
                        "a bounds study's regret and settings tables/figures, the claims tables, the suite's "
                        "claims scorecard (all experiments), the bounds studies' summary (all studies), or "
                        "the static report page <results_dir>/report.html (all experiments)")
    p.set_defaults(handler=_report)

    p = sub.add_parser("compare-reference", help="compare a fresh run of a workflow with reference results",
                       description="Compare two results folders of one workflow at the level that holds "
                                   "across machines: per group the status counts, the mean accuracy within "
                                   "a tolerance from the seed spread and the test set's binomial noise, the "
                                   "verdict; per claim the verdict. Exit status 0 on agreement, 1 otherwise.")
    p.add_argument("--config", required=True, help="workflow config both folders were run from")
    p.add_argument("--reference", required=True, help="reference results folder, e.g. results/smoke")
    p.add_argument("--run", required=True, help="the fresh results folder, e.g. results/smoke-run")
    p.set_defaults(handler=_compare_reference)

    p = sub.add_parser("config", help="print the JSON Schema of a config file kind",
                       description="Print the JSON Schema (draft 2020-12) generated from the config models.")
    p.add_argument("--schema", required=True, choices=("run", "range-test", "workflow"),
                   help="run: `onecycle train --config`; range-test: `onecycle range-test --config`; "
                        "workflow: configs/*.yaml (Snakemake --configfile)")
    p.set_defaults(handler=_config)

    p = sub.add_parser("plan", help="jobs, iterations, images, FLOPs and device-hours of a workflow config")
    p.add_argument("--config", required=True, help="workflow config, e.g. configs/paper.yaml")
    p.add_argument("--device-class", default="gpu", help="gpu (default) or cpu: the default throughput")
    p.add_argument("--tflops", type=float, help="effective TFLOP/s per device, instead of the default or "
                                               "what make gpu-check measured")
    p.add_argument("--calibration", help="make gpu-check's throughput record (default "
                                         "results/gpu_check/throughput.json, when present)")
    p.add_argument("--devices", type=int, default=1, help="devices working at once, for the days estimate")
    p.set_defaults(handler=_plan)

    cli_schedule.register(sub)
    return parser


# Path options that name a file or folder: an empty one would mean the current folder.
PATH_OPTIONS = ("config", "out", "bounds", "record", "plot", "root", "reference", "run")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for option in PATH_OPTIONS:
            if getattr(args, option, None) is not None and not str(getattr(args, option)).strip():
                raise ConfigError(f"--{option} is empty: name a file or folder")
        return args.handler(args)
    except (ConfigError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
    except OSError as error:  # disk full, permission denied, a folder that is a file...
        message = io.describe_os_error(error)
    # One line, and a bounded one: the message may quote a value out of a hostile file.
    print(f"onecycle: error: {one_line(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
