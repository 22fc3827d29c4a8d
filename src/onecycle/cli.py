"""`onecycle`: run one job outside Snakemake through the same code the workflow uses.

    onecycle train --config RUN.yaml --out DIR [--bounds bounds.json]
    onecycle range-test --config RANGE.yaml --out DIR
    onecycle schedule --list | --policy NAME [--set k=v ...] --steps N [--plot F.png]
    onecycle prepare-data --dataset NAME --record FILE [--root DIR] [--no-download]
    onecycle caffe-mean --dataset NAME --splits JSON --record FILE
    onecycle combine-bounds --out FILE SEED_BOUNDS.json ...
    onecycle report --config WORKFLOW.yaml [--experiment NAME]

Bad input ends with one line `onecycle: error: ...` and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from onecycle import cli_schedule, io
from onecycle.config import ConfigError, load_mapping


def _train(args: argparse.Namespace) -> int:
    from onecycle.config import load_run_config
    from onecycle.train import train

    bounds = io.read_json(_existing(args.bounds)) if args.bounds else None
    cfg = load_run_config(args.config)
    metrics = train(cfg, args.out, bounds=bounds)
    final = metrics["final"]["test_accuracy"]
    print(f"{cfg.name}: {metrics['status']}, {metrics['iterations']} iterations, "
          f"final test accuracy {'-' if final is None else f'{100 * final:.2f}%'}")
    return 0


def _range_test(args: argparse.Namespace) -> int:
    from onecycle.config import load_range_test_config
    from onecycle.range_test import run_range_test_job

    cfg = load_range_test_config(args.config)
    metrics = run_range_test_job(cfg, args.out)
    b = metrics["bounds"]
    print(f"{cfg.name}: {metrics['status']}; {b['chosen_rule']} -> base_lr {b['base_lr']}, max_lr {b['max_lr']}")
    return 0


def _prepare_data(args: argparse.Namespace) -> int:
    from onecycle import data

    root = data.prepare(args.dataset, Path(args.root) if args.root else None, download=not args.no_download)
    io.write_json(args.record, {"dataset": args.dataset, "root": str(root), "verified": True})
    print(f"{args.dataset}: ready at {root}")
    return 0


def _caffe_mean(args: argparse.Namespace) -> int:
    from onecycle import caffe_imagenet, data

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
    from onecycle.range_test import combine_bounds

    combined = combine_bounds([io.read_json(_existing(p)) for p in args.inputs])
    io.write_json(args.out, combined)
    print(f"bounds: base_lr {combined['base_lr']}, max_lr {combined['max_lr']} "
          f"({combined['n_seeds_with_bounds']} of {combined['n_seeds']} seeds)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from onecycle.experiments import expand
    from onecycle.report import (write_bounds_study_report, write_bounds_summary, write_comparison_figure,
                                 write_experiment_report, write_range_test_figure)

    plan = expand(load_mapping(args.config), str(args.config))
    names = [args.experiment] if args.experiment else list(plan.workflow.experiments)
    for name in names:
        if name not in plan.workflow.experiments:
            raise ConfigError(f"{args.config}: no experiment {name!r}; "
                              f"valid: {', '.join(plan.workflow.experiments)}")
        written = []
        if args.only in (None, "runs"):
            written += write_experiment_report(plan, name)
        if args.only in (None, "range-test"):
            written += write_range_test_figure(plan, name)
        if args.only in (None, "comparison"):
            written += write_comparison_figure(plan, name)
        if args.only in (None, "bounds-study"):
            written += write_bounds_study_report(plan, name)
        for path in written:
            print(path)
    # The suite-level summary reads every study's regret table: after them, for the whole config.
    if args.only == "bounds-summary" or (args.only is None and not args.experiment):
        for path in write_bounds_summary(plan):
            print(path)
    return 0


def _existing(path: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: file not found")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onecycle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="one training run")
    p.add_argument("--config", required=True, help="run config (YAML or JSON)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--bounds", help="bounds.json from a range test (for schedule.lr_bounds: range_test)")
    p.set_defaults(handler=_train)

    p = sub.add_parser("range-test", help="one LR range test")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_range_test)

    p = sub.add_parser("prepare-data", help="download (if needed) and verify a dataset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root")
    p.add_argument("--record", required=True, help="JSON record written once the data is verified")
    p.add_argument("--no-download", action="store_true")
    p.set_defaults(handler=_prepare_data)

    p = sub.add_parser("caffe-mean", help="compute and cache the Caffe mean images of ImageNet-folder splits")
    p.add_argument("--dataset", required=True)
    p.add_argument("--splits", required=True, help='JSON list of {"root": ..., "classes": ...}')
    p.add_argument("--record", required=True, help="JSON record written once every mean is cached")
    p.set_defaults(handler=_caffe_mean)

    p = sub.add_parser("combine-bounds", help="median of several range-test seeds' bounds")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(handler=_combine_bounds)

    p = sub.add_parser("report", help="tables and figures from stored results (no training)")
    p.add_argument("--config", required=True, help="workflow config, e.g. configs/smoke.yaml")
    p.add_argument("--experiment")
    p.add_argument("--only", choices=("runs", "range-test", "comparison", "bounds-study", "bounds-summary"),
                   help="only the training tables/figures, the range-test figure, the comparison figure, "
                        "a bounds study's regret and settings tables/figures, or the bounds studies' summary")
    p.set_defaults(handler=_report)

    cli_schedule.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"onecycle: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
