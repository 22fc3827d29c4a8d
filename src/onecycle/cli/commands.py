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
    # Bounds are part of what a run trained at only when its schedule takes them from range tests.
    if _already_done(args, "train", cfg, bounds if cfg.schedule.lr_bounds == "range_test" else None):
        return 0
    with RunProgress(cfg.name) as progress:
        metrics = train(cfg, args.out, bounds=bounds, progress=progress, set_aside_stale=args.set_aside_stale)
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
    if _already_done(args, "range_test", cfg, None):
        return 0
    with RunProgress(cfg.name) as progress:
        metrics = run_range_test_job(cfg, args.out, progress=progress)
    b = metrics["bounds"]
    stop = metrics["diverged"]
    stopped = f" at iteration {stop['iteration']} ({stop['reason']})" if stop else ""
    found = (f"base_lr {b['base_lr']}, max_lr {b['max_lr']}" if b["max_lr"] is not None
             else f"no bounds: {b['no_bounds']}")
    print(f"{cfg.name}: {metrics['status']}{stopped}; {b['chosen_rule']} -> {found}", flush=True)
    return 0


def _already_done(args: argparse.Namespace, kind: str, cfg, bounds: dict | None) -> bool:
    """--out holds the finished run of this very config: say so, and redo nothing. A finished run
    of another config there is refused, or moved aside with --set-aside-stale
    (onecycle.experiments.identity.check_run_folder). Under torchrun rank 0 alone may move it;
    the other ranks only read, and go on where rank 0 does."""
    from onecycle.experiments.identity import check_run_folder

    main = os.environ.get("RANK", "0") == "0"
    if not main and args.set_aside_stale:
        try:
            done = check_run_folder(args.out, kind, cfg, bounds=bounds)
        except (ConfigError, OSError):  # rank 0 refuses, or is moving it aside: not finished for us
            done = None
    else:
        done = check_run_folder(args.out, kind, cfg, bounds=bounds, set_aside_stale=args.set_aside_stale)
    if done is not None:
        print(f"{cfg.name}: already done in {args.out} ({done['status']}, {done['iterations']} iterations); "
              "nothing retrained", flush=True)
    return done is not None


def _advise(args: argparse.Namespace) -> int:
    from onecycle.experiments.advise_config import load_advise_config
    from onecycle.training.advise_job import run_advise_job

    cfg = load_advise_config(args.config)
    if args.budget is not None or args.budget_iterations is not None:
        spec = cfg.advise.model_copy(update={"budget": args.budget, "budget_iterations": args.budget_iterations})
        cfg = cfg.model_copy(update={"advise": spec})
    _set_threads(args.threads)
    record = run_advise_job(cfg, args.out, log=lambda line: print(line, flush=True))
    print(f"{cfg.name}: max_lr {record['max_lr']:.4g}, base_lr {record['base_lr']:.4g} for {record['total_steps']} "
          f"iterations; cost {record['cost_iterations']} iterations; train it with "
          f"`onecycle train --config {Path(args.out) / 'run.json'} --out DIR`", flush=True)
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
    elif threads > len(os.sched_getaffinity(0)):
        # More threads than cores only time-slice them: a typo (--threads 64 for 4) costs speed.
        # $OMP_NUM_THREADS is left as set: oversubscribing on purpose changes the order of float
        # sums, which `make test-threads` does.
        cores = len(os.sched_getaffinity(0))
        raise ConfigError(f"--threads {threads}: this process may use {cores} core{'s' if cores != 1 else ''} "
                          f"of this machine; give at most {cores}")
    if threads < 1:
        raise ConfigError(f"--threads {threads}: expected 1 or more")
    torch.set_num_threads(threads)


def _prepare_data(args: argparse.Namespace) -> int:
    from onecycle import data

    verify = not args.no_verify
    root = data.prepare(args.dataset, Path(args.root) if args.root else None, download=not args.no_download,
                        verify=verify)
    # The root training reads, by the one rule of docs/running.md ("Where data is read").
    chosen = "--root (data.root)" if args.root else "$ONECYCLE_DATA" if os.environ.get("ONECYCLE_DATA") else "default"
    record = {"dataset": args.dataset, "root": str(root.resolve()), "root_from": chosen, "verified": verify}
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


def _caffe_cache(args: argparse.Namespace) -> int:
    from onecycle import data
    from onecycle.data.squash_cache import split_mean_image, squash_cache

    if args.dataset not in data.FOLDER_DATASETS:
        raise ValueError(f"--dataset {args.dataset!r}: Caffe's image caches are for ImageNet folders "
                         f"({', '.join(data.FOLDER_DATASETS)})")
    splits = _split_list(args.splits)
    workers = len(os.sched_getaffinity(0))
    caches = []
    for split in splits:
        root = Path(split["root"]) if split.get("root") else None
        for name in ("train", "test"):
            images = data.load_split(args.dataset, name, root, class_list=split.get("classes"))
            cache = squash_cache(images, workers)
            caches.append({**split, "split": name, "images": len(cache), "cache": str(cache.path)})
            print(f"{args.dataset}: {len(cache)} images under {images.split_dir} squashed in {cache.path}",
                  flush=True)
            if name == "train":
                split_mean_image(images, cache)
                print(f"{args.dataset}: Caffe mean image of {images.split_dir} cached", flush=True)
    io.write_json(args.record, {"dataset": args.dataset, "splits": splits, "caches": caches})
    return 0


def _split_list(text: str) -> list[dict]:
    """--splits as experiments.Plan.caffe_caches writes it: a JSON list of {root, classes}."""
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
    from onecycle.bounds import combine_bounds
    from onecycle.training.schedule_setup import read_bounds_file

    _distinct_files(args.inputs, args.out)
    combined = combine_bounds([read_bounds_file(_existing(p)) for p in args.inputs])
    io.write_json(args.out, combined)
    found = (f"base_lr {combined['base_lr']}, max_lr {combined['max_lr']}" if combined["max_lr"] is not None
             else f"no bounds: {combined['no_bounds']}")
    print(f"bounds: {found} ({combined['n_seeds_with_bounds']} of {combined['n_seeds']} seeds)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from onecycle.experiments.expansion import expand
    from onecycle.experiments.loading import load_workflow_file
    from onecycle.report.html import write_html_report
    from onecycle.report.build import (write_bounds_study_report, write_bounds_summary, write_claims_table,
                                       write_experiment_report, write_scorecard)
    from onecycle.report.build_figures import (write_accuracy_figure, write_comparison_figure,
                                               write_range_test_figure)

    plan = expand(load_workflow_file(args.config), str(args.config))
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
    from onecycle.experiments.loading import load_workflow_file
    from onecycle.experiments.workflow import WorkflowConfig
    from onecycle.report.reference import compare, format_report

    workflow = load_workflow_file(args.config)
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
    from onecycle.experiments.loading import load_workflow_file
    from onecycle.experiments.rates import load_rates

    workflow = expand(load_workflow_file(args.config), str(args.config))
    if args.devices < 1:
        raise ConfigError(f"--devices {args.devices}: expected at least 1")
    rates = load_rates(args.device_class, args.tflops, Path(args.calibration) if args.calibration else None)
    print(cost_plan.format_plan(workflow, rates, str(args.config), args.devices))
    return 0


def _distinct_files(inputs: list[str], out: str) -> None:
    """Each input once (a seed's file given twice would count as two seeds), and --out none of them
    (it would overwrite a seed's own bounds): compared as files, so `a.json` and `./a.json` are one."""
    seen: dict[tuple[int, int], str] = {}
    for path in inputs:
        stat = Path(_existing(path)).stat()
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            raise ConfigError(f"{path}: given twice (as {seen[key]} too); each seed's bounds.json once")
        seen[key] = path
    if Path(out).exists() and (Path(out).stat().st_dev, Path(out).stat().st_ino) in seen:
        raise ConfigError(f"--out {out} is one of the inputs; write the combined bounds elsewhere")


def _existing(path: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: file not found")
    return path
