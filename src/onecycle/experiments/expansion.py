"""Expand a workflow config (configs/*.yaml) into concrete, validated jobs with fixed paths.

A pure function of the config, used by the Snakefile and by `onecycle report`: the DAG never
holds logic of its own, and aggregation reads explicit lists of result files built here, never
walks folders or parses settings back out of paths (docs/design.md §8). Every job's config
is validated at expansion time, so a typo fails when the DAG is built, naming the key path.
The models of the workflow config itself are in onecycle.experiments.workflow.

Layout under `results_dir` (predictable: no timestamps, one folder per run):
    data/<dataset>.json                          the verified-data record
    range_test/<experiment>/seed<k>/             one range test (history.csv, bounds.json, metrics.json)
    range_test/<experiment>/bounds.json          the bounds training uses (median over seeds)
    range_test/<experiment>/settings/<variant>/seed<k>/   a bounds study's range-test variant
    train/<experiment>/<group>/seed<k>/          one training run (history.csv, metrics.json, ...)
    tables/<experiment>.{csv,md,tex}  figures/<experiment>_*.{png,pdf}
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onecycle.data import FOLDER_DATASETS
from onecycle.experiments.config import ConfigError, RangeTestConfig, RunConfig, parse
from onecycle.experiments.identity import spec_digest
from onecycle.experiments.loading import deep_merge
from onecycle.experiments.scale import TINY, TinyScale, tiny_job
from onecycle.experiments.workflow import ExperimentConfig, WorkflowConfig, load_workflow_config
from onecycle.training.processes import check_batch_size
from onecycle.training.schedule_setup import check_schedule

# Jobs one workflow config may expand to, checked before any is validated: configs/paper.yaml
# has 488, and each costs a validation here and a node in Snakemake's DAG, so that a config of
# 10^4 groups x 10^4 seeds (a few kB) is refused instead of expanded for hours.
MAX_JOBS = 50_000

# Part 1's four runs per setting (`seed_protocol: part1`; hyperParam1 Cifar/x4.sh, docs/paper_reference.md
# C2 and D6): 4 GPUs, per-GPU batch BS+3, BS+2, BS+1, BS for runs 1-4 (BS = TBS / 4), and
# runs 1 and 3 with x4.sh's msra -> xavier rewrite of the architecture file.
PART1_GPUS = 4
PART1_PER_GPU_BATCH_OFFSETS = (3, 2, 1, 0)
PART1_XAVIER_RUNS = (0, 2)
# The ports whose prototxt fillers the rewrite touches (docs/models.md, "Initialisation"):
# their msra layers become xavier. cifar3's gaussian fillers are left alone.
PART1_REWRITTEN_ARCHS = ("resnet56_part1", "wide32", "densenet40")


@dataclass(frozen=True)
class Job:
    kind: Literal["range_test", "train"]
    job_id: str                  # "<experiment>/seed<k>" or "<experiment>/<group>/seed<k>"
    experiment: str
    group: str | None
    seed: int
    out_dir: Path
    # Validated, without default values: these are the rule's params, so a new config field with
    # a default (a package upgrade) does not make Snakemake retrain every finished run.
    config: dict[str, Any] = field(hash=False)
    dataset: str = ""
    needs_bounds: bool = False
    # Devices the job claims; more than 1 runs it data-parallel (torchrun, one process each).
    gpus: int = 0
    # Its Snakemake `gpu` resource: gpus x jobs_per_gpu seats, or 1 seat for a sharing job.
    gpu_seats: int = 0
    # Jobs that may share each of its devices (gpu_slots --per-device): jobs_per_gpu if it shares.
    per_device: int = 1
    # A bounds study's range-test variant (range tests only); None for the experiment's own test.
    variant: str | None = None
    # Data-parallel processes (torchrun's nproc_per_node): one per claimed GPU, or at tiny scale
    # on CPU (gpus_per_job 0) as many gloo processes as the experiment's `gpus`.
    processes: int = 1

    @property
    def digest(self) -> str:
        """The run's identity: what its metrics.json must record as `spec_digest`
        (onecycle.experiments.identity, docs/design.md §10d)."""
        return spec_digest(self.config)


@dataclass
class Plan:
    workflow: WorkflowConfig
    results_dir: Path
    range_tests: dict[str, Job]
    trains: dict[str, Job]

    def experiment_trains(self, experiment: str) -> list[Job]:
        return [job for job in self.trains.values() if job.experiment == experiment]

    def experiment_range_tests(self, experiment: str) -> list[Job]:
        """The experiment's own range tests (the ones its bounds come from)."""
        return [job for job in self.range_tests.values() if job.experiment == experiment and job.variant is None]

    def experiment_variant_tests(self, experiment: str) -> dict[str, list[Job]]:
        """A bounds study's range-test variants: name -> its seeds' jobs."""
        variants: dict[str, list[Job]] = {}
        for job in self.range_tests.values():
            if job.experiment == experiment and job.variant is not None:
                variants.setdefault(job.variant, []).append(job)
        return variants

    @property
    def job_threads(self) -> int:
        """Threads (Snakemake `threads`, torch threads) of each training, range-test and data job:
        the config's train_threads, but 1 at tiny scale. A tiny job is mostly one-threaded
        start-up (imports, model build, a few iterations of small batches), so on a 2-core
        machine two jobs side by side finish sooner than one job holding both cores."""
        return 1 if self.workflow.scale == "tiny" else self.workflow.train_threads

    def bounds_studies(self) -> list[str]:
        return [name for name, exp in self.workflow.experiments.items() if exp.bounds_study is not None]

    def bounds_path(self, experiment: str) -> Path:
        return self.results_dir / "range_test" / experiment / "bounds.json"

    def data_record(self, dataset: str, root: str | None = None) -> Path:
        """The data job's record of `dataset` read at `root` (as a config gives it; None for the
        default root): one record per root some job reads, each verified where it is read."""
        return self.results_dir / "data" / f"{data_stem(dataset, root)}.json"

    def data_sources(self) -> dict[str, tuple[str, str | None]]:
        """Record name -> (dataset, root as configured, None for the default) of every data job."""
        sources = {}
        for job in [*self.trains.values(), *self.range_tests.values()]:
            root = job.config["data"].get("root")
            sources[data_stem(job.dataset, root)] = (job.dataset, root)
        return dict(sorted(sources.items()))

    def datasets(self) -> list[str]:
        return sorted({job.dataset for job in [*self.trains.values(), *self.range_tests.values()]})

    def caffe_caches(self, dataset: str) -> list[dict[str, Any]]:
        """The ImageNet folders of `dataset` that some job reads through Caffe's data layer, as
        distinct {"root", "classes"}: a job of their own (rule caffe_cache) squashes their images
        once into the uint8 cache and computes the training split's mean image, with all its
        threads, so no training job waits on it holding GPUs."""
        needed = {}
        for job in [*self.trains.values(), *self.range_tests.values()]:
            if job.dataset == dataset and needs_caffe_cache(job):
                data = job.config["data"]
                split = {"root": data.get("root"), "classes": data.get("classes")}
                needed[json.dumps(split, sort_keys=True)] = split
        return [needed[key] for key in sorted(needed)]

    def caffe_cache_record(self, dataset: str) -> Path:
        return self.results_dir / "data" / f"{dataset}.caffe_cache.json"

    def data_inputs(self, job: Job) -> dict[str, Path]:
        """A job's data dependencies: the verified dataset and, if it needs them, its squashed
        images and mean image."""
        inputs = {"data": self.data_record(job.dataset, job.config["data"].get("root"))}
        if needs_caffe_cache(job):
            inputs["caffe_cache"] = self.caffe_cache_record(job.dataset)
        return inputs


def data_stem(dataset: str, root: str | None) -> str:
    """A data record's name: the dataset's, and for a configured root a digest of it (8 hex
    digits: 2^-32 odds that two roots of one config share a name), a short, safe file name
    whatever the path holds."""
    return dataset if root is None else f"{dataset}-root-{hashlib.sha256(root.encode()).hexdigest()[:8]}"


def needs_caffe_cache(job: Job) -> bool:
    """Caffe's ImageNet data layer (normalize caffe_mean_image on a folder) reads squashed images
    and a mean image."""
    return job.dataset in FOLDER_DATASETS and job.config["data"].get("normalize") == "caffe_mean_image"


def gpu_placement(gpus: int, share_gpu: bool, jobs_per_gpu: int, where: str) -> dict[str, int]:
    """A job's devices, its seats in `--resources gpu=N` and the jobs that may share a device."""
    if share_gpu and jobs_per_gpu > 1 and gpus > 0:
        if gpus != 1:
            raise ConfigError(f"{where}: share_gpu is for single-GPU jobs, but its jobs take {gpus} GPUs")
        return {"gpus": 1, "gpu_seats": 1, "per_device": jobs_per_gpu}
    return {"gpus": gpus, "gpu_seats": gpus * jobs_per_gpu, "per_device": 1}


def part1_run_overrides(seed: int, merged: dict[str, Any], where: str) -> dict[str, Any]:
    """Settings of Smith's run `seed % 4 + 1` of a Part 1 setting (x4.sh; PART1_* above). x4.sh
    writes one solver from the nominal TBS for all four runs, so every run keeps the nominal
    epochs' iterations (train.epoch_batch_size) while it feeds its own batch."""
    run = seed % PART1_GPUS
    batch = merged.get("train", {}).get("batch_size")
    if not isinstance(batch, int) or batch % PART1_GPUS:
        raise ConfigError(f"{where}: seed_protocol 'part1' needs train.batch_size, the total of "
                          f"{PART1_GPUS} per-GPU batches, as a multiple of {PART1_GPUS}; got {batch!r}")
    overrides: dict[str, Any] = {"train": {"batch_size": batch + PART1_GPUS * PART1_PER_GPU_BATCH_OFFSETS[run],
                                           "epoch_batch_size": batch}}
    if run in PART1_XAVIER_RUNS and merged.get("model", {}).get("arch") in PART1_REWRITTEN_ARCHS:
        overrides["model"] = {"init": "xavier"}
    return overrides


def device_overrides(raw: dict[str, Any], gpus: int, where: str, processes: int = 1) -> dict[str, Any]:
    """A job that claims GPUs trains on CUDA: "auto" becomes "cuda", so on a machine without
    CUDA the job fails at once (onecycle.training.device.resolve_device) instead of training for days on
    the CPU; "cpu" with claimed GPUs is a contradiction. Data-parallel processes that claim no
    GPU run on the CPU ("auto" would put them all on one GPU where there is one)."""
    device = raw.get("train", {}).get("device", "auto")
    if gpus == 0 and processes > 1 and device == "auto":
        return {"train": {"device": "cpu"}}
    if gpus == 0 or device == "cuda":
        return {}
    if device == "cpu":
        raise ConfigError(f"{where}: train.device is 'cpu' but its jobs claim {gpus} GPU(s): set "
                          "gpus_per_job (or the experiment's gpus) to 0 for CPU runs")
    return {"train": {"device": "cuda"}}


def expand(data: dict[str, Any], source: str = "workflow config", tiny_scale: TinyScale = TINY) -> Plan:
    """Every job of the workflow, validated; raises ConfigError naming the job and key.

    With `scale: tiny` every job is first validated as configured, then scaled down to
    `tiny_scale` (onecycle.experiments.scale) and validated again: a tiny run checks the real config too.
    Its results go to `<results_dir>-tiny`."""
    workflow = load_workflow_config(data, source)
    _check_job_count(workflow, source)
    tiny = tiny_scale if workflow.scale == "tiny" else None
    results = Path(workflow.results_dir)
    if tiny is not None:
        results = results.with_name(f"{results.name}-tiny")
    range_tests: dict[str, Job] = {}
    trains: dict[str, Job] = {}
    # Experiment by experiment, its range tests before its training runs: the first error found
    # is the one a user reads, so the order is part of the interface.
    for exp_name, exp in workflow.experiments.items():
        if exp.range_test is not None:
            range_tests.update(_range_test_jobs(workflow, exp_name, exp, source, results, tiny))
        trains.update(_train_jobs(workflow, exp_name, exp, source, results, tiny))
    return Plan(workflow, results, range_tests, trains)


def _check_job_count(workflow: WorkflowConfig, source: str) -> None:
    """Refuse a workflow of more than MAX_JOBS jobs, counted before any of them is validated."""
    jobs = sum(len(exp.training_groups()) * len(workflow.seeds)
               + (len(exp.range_test_seeds or [0]) * (1 + len(exp.range_test_variants()))
                  if exp.range_test is not None else 0)
               for exp in workflow.experiments.values())
    if jobs > MAX_JOBS:
        raise ConfigError(f"{source}: {jobs} jobs (groups x seeds), above the {MAX_JOBS} one workflow "
                          "may schedule; split it into several workflow configs")


def _range_test_jobs(workflow: WorkflowConfig, exp_name: str, exp: ExperimentConfig, source: str, results: Path,
                     tiny: TinyScale | None) -> dict[str, Job]:
    """An experiment's range tests: its own, then a bounds study's variants, each seed by seed."""
    exp_where = f"{source}: experiments.{exp_name}"
    placement = gpu_placement(workflow.gpus_per_job, exp.share_gpu, workflow.jobs_per_gpu, exp_where)
    settings = {None: exp.range_test, **exp.range_test_variants()}
    jobs: dict[str, Job] = {}
    for variant, spec in settings.items():
        prefix = exp_name if variant is None else f"{exp_name}/settings/{variant}"
        where = f"{exp_where} (range test{'' if variant is None else ' variant ' + variant})"
        for seed in exp.range_test_seeds or workflow.seeds[:1]:
            job_id = f"{prefix}/seed{seed}"
            merged = deep_merge(exp.base, {"name": job_id, "experiment": exp_name, "seed": seed,
                                           "range_test": spec})
            cfg = _range_test_config(merged, placement["gpus"], where)
            if tiny is not None:
                scaled = tiny_job(merged, split_into=1, where=where, tiny=tiny)
                cfg = _range_test_config(scaled, placement["gpus"], where)
            jobs[job_id] = Job("range_test", job_id, exp_name, None, seed, results / "range_test" / job_id,
                               cfg.model_dump(mode="json", exclude_defaults=True), cfg.data.dataset,
                               **placement, variant=variant)
    return jobs


def job_devices(workflow: WorkflowConfig, exp: ExperimentConfig, tiny: TinyScale | None) -> tuple[int, int]:
    """(GPUs an experiment's training job claims, its data-parallel processes). At tiny scale,
    gpus_per_job 0 (a CPU check of the machine) holds for every experiment, those with `gpus`
    of their own too: they claim none and run their data-parallel launch as CPU processes."""
    gpus = workflow.gpus_per_job if exp.gpus is None else exp.gpus
    if tiny is not None and workflow.gpus_per_job == 0:
        return 0, max(gpus, 1)
    return gpus, max(gpus, 1)


def _train_jobs(workflow: WorkflowConfig, exp_name: str, exp: ExperimentConfig, source: str, results: Path,
                tiny: TinyScale | None) -> dict[str, Job]:
    """An experiment's training runs, group by group, each seed by seed."""
    gpus, processes = job_devices(workflow, exp, tiny)
    placement = gpu_placement(gpus, exp.share_gpu, workflow.jobs_per_gpu, f"{source}: experiments.{exp_name}")
    jobs: dict[str, Job] = {}
    for group, overrides in exp.training_groups().items():
        for seed in workflow.seeds:
            job_id = f"{exp_name}/{group}/seed{seed}"
            where = f"{source}: experiments.{exp_name}.groups.{group}"
            merged = deep_merge(exp.base, overrides)
            ids = {"name": job_id, "experiment": exp_name, "group": group, "seed": seed}
            cfg = _run_config(merged, exp, seed, ids, processes, placement["gpus"], where)
            if tiny is not None:
                protocol_batch = PART1_GPUS if exp.seed_protocol == "part1" else 1
                scaled = tiny_job(merged, split_into=math.lcm(processes, protocol_batch), where=where, tiny=tiny)
                cfg = _run_config(scaled, exp, seed, ids, processes, placement["gpus"], where)
            needs_bounds = cfg.schedule.lr_bounds == "range_test"
            if needs_bounds and exp.range_test is None:
                raise ConfigError(f"{where}: schedule.lr_bounds is 'range_test' but the experiment has no "
                                  "range_test block")
            jobs[job_id] = Job("train", job_id, exp_name, group, seed, results / "train" / job_id,
                               cfg.model_dump(mode="json", exclude_defaults=True), cfg.data.dataset,
                               needs_bounds, **placement, processes=processes)
    return jobs


def _range_test_config(merged: dict[str, Any], gpus: int, where: str) -> RangeTestConfig:
    raw = deep_merge(merged, device_overrides(merged, gpus, where))
    return parse(RangeTestConfig, raw, where)


def _run_config(merged: dict[str, Any], exp: ExperimentConfig, seed: int, ids: dict[str, Any], processes: int,
                claimed_gpus: int, where: str) -> RunConfig:
    """A training job's validated config: the group's settings, Smith's run protocol, the device."""
    raw = merged
    if exp.seed_protocol == "part1":
        raw = deep_merge(raw, part1_run_overrides(seed, raw, where))
    raw = deep_merge(raw, device_overrides(raw, claimed_gpus, where, processes))
    cfg = parse(RunConfig, deep_merge(raw, ids), where)
    try:
        check_schedule(cfg)
        check_batch_size(cfg.train.batch_size, processes, cfg.train.batch_norm_shards)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return cfg
