"""The `onecycle` commands' handlers: each takes the parsed arguments, runs one job through the
code the workflow uses and returns the exit status (onecycle.cli builds the parser and reports
errors). Each handler imports what it needs (torch, pandas, pydantic) only once it runs, so
importing this module, and `onecycle --help`, stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from onecycle import io
from onecycle.errors import ConfigError

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
    found = (f"base_lr {b['base_lr']}, max_lr {b['max_lr']}" if b["max_lr"] is not None
             else f"no bounds: {b['no_bounds']}")
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
    from onecycle.experiments.expansion import expand
    from onecycle.experiments.loading import load_mapping
    from onecycle.report.html import write_html_report
    from onecycle.report.build import (write_bounds_study_report, write_bounds_summary, write_claims_table,
                                       write_experiment_report, write_scorecard)
    from onecycle.report.build_figures import (write_accuracy_figure, write_comparison_figure,
                                               write_range_test_figure)

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
        if args.only in (None, "accuracy"):
            written += write_accuracy_figure(plan, name)
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


def _index(args: argparse.Namespace) -> int:
    from onecycle.experiments.expansion import expand
    from onecycle.experiments.loading import load_mapping
    from onecycle.report.index import write_index

    folders = [expand(load_mapping(config), str(config)).results_dir for config in args.configs]
    print(write_index(folders, Path(args.out)))
    return 0


def _compare_reference(args: argparse.Namespace) -> int:
    from onecycle.experiments.config import parse
    from onecycle.experiments.loading import load_mapping
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
    from onecycle.experiments.expansion import expand
    from onecycle.experiments.loading import load_mapping

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
