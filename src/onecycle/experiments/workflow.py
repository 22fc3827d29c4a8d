"""Expand a workflow config (configs/*.yaml) into concrete, validated jobs with fixed paths.

A pure function of the config, used by the Snakefile and by `onecycle report`: the DAG never
holds logic of its own, and aggregation reads explicit lists of result files built here, never
walks folders or parses settings back out of paths (docs/design.md §8). Every job's config
is validated at expansion time, so a typo fails when the DAG is built, naming the key path.

Layout under `results_dir` (predictable: no timestamps, one folder per run):
    data/<dataset>.json                          the verified-data record
    range_test/<experiment>/seed<k>/             one range test (history.csv, bounds.json, metrics.json)
    range_test/<experiment>/bounds.json          the bounds training uses (median over seeds)
    range_test/<experiment>/settings/<variant>/seed<k>/   a bounds study's range-test variant
    train/<experiment>/<group>/seed<k>/          one training run (history.csv, metrics.json, ...)
    tables/<experiment>.{csv,md,tex}  figures/<experiment>_*.{png,pdf}
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from onecycle.experiments.bounds_study import BoundsStudyConfig, study_groups, variant_range_tests
from onecycle.experiments.config import (ConfigError, RangeTestConfig, RunConfig, StrictModel, deep_merge,
                             parse)
from onecycle.data import FOLDER_DATASETS
from onecycle.training.distributed import check_batch_size
from onecycle.experiments.scale import TINY, TinyScale, tiny_job
from onecycle.training.schedule_setup import check_schedule

# Names become folder names and Snakemake wildcard values: keep them shell- and path-safe.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

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


class Comparison(StrictModel):
    """What a comparison figure puts on its axes: dotted config paths, or "group"."""

    x: str                      # e.g. "optim.weight_decay", "data.train_subset", "group"
    hue: str | None = None      # series, e.g. "schedule.policy"


class Claim(StrictModel):
    """One of Smith's claims as a testable statement about an experiment's groups (onecycle.report.claims
    says how each kind is decided).

    - superior: candidate's final accuracy > baseline's + margin_pp (default 0);
    - non_inferior: candidate's > baseline's - margin_pp (required: how close counts as "matches");
    - speedup: per seed, candidate reaches the baseline's final accuracy (within margin_pp,
      required) within 1/k (required) of the baseline's iterations, read off its evaluations;
    - ordering: `groups`, best first, each better than the next by margin_pp (default 0); an
      entry that is a list is a tier of groups claimed equal-ranked (no order among them).
    """

    id: str
    text: str
    source: str                          # paper and table/figure, e.g. "arXiv:1803.09820 Table 2"
    kind: Literal["superior", "non_inferior", "speedup", "ordering"]
    candidate: str | None = None
    baseline: str | None = None
    groups: list[str | list[str]] | None = None
    margin_pp: float | None = Field(default=None, ge=0)
    k: float | None = Field(default=None, gt=1)
    # The verdict the papers' own numbers imply, for groups without a published row (with rows,
    # onecycle.report.claims computes it from configs/reference/published.yaml instead).
    expected: Literal["supported", "contradicted", "inconclusive"] | None = None

    @field_validator("id")
    @classmethod
    def _safe_id(cls, name: str) -> str:
        # Ids are table rows and scorecard rows: one plain word keeps CSV, Markdown and LaTeX safe.
        if not SAFE_NAME.match(name):
            raise ValueError(f"claim id {name!r} must use only letters, digits, '_', '.', '-'")
        return name

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> Claim:
        pair = self.kind != "ordering"
        needs = {"candidate": pair, "baseline": pair, "groups": not pair,
                 "margin_pp": self.kind in ("non_inferior", "speedup"), "k": self.kind == "speedup"}
        allowed = {**needs, "margin_pp": True}
        for key, required in needs.items():
            value = getattr(self, key)
            if required and value is None:
                raise ValueError(f"kind {self.kind!r} needs {key}")
            if value is not None and not allowed[key]:
                raise ValueError(f"kind {self.kind!r} takes no {key}")
        if pair and self.candidate == self.baseline:
            raise ValueError(f"candidate and baseline are the same group {self.candidate!r}")
        if not pair:
            names = self.group_names()
            if len(self.groups) < 2 or len(set(names)) != len(names):
                raise ValueError("ordering needs at least 2 entries in groups, each group named once")
        return self

    def group_names(self) -> list[str]:
        """Every group the claim reads, in its order."""
        if self.groups is None:
            return [self.candidate, self.baseline]
        return [name for entry in self.groups for name in ([entry] if isinstance(entry, str) else entry)]


class ExperimentConfig(StrictModel):
    description: str = ""
    # The paper artifact this experiment replicates, e.g. "arXiv:1803.09820 Table 2, MNIST rows".
    replicates: str = ""
    # Settings shared by every job of the experiment (data, model, optim, train).
    base: dict[str, Any]
    # Range-test settings (the `range_test` block of a RangeTestConfig); None = no range test.
    range_test: dict[str, Any] | None = None
    range_test_seeds: list[int] | None = Field(default=None, min_length=1)
    # Group name -> overrides of `base` (schedule, train, optim ...), one group per setting.
    # Required, unless `bounds_study` makes the groups.
    groups: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Score every range-test rule against training (onecycle.experiments.bounds_study): its grid and rule
    # groups replace `groups`.
    bounds_study: BoundsStudyConfig | None = None
    # Group -> id of the published row (configs/reference/published.yaml) it is compared with.
    published: dict[str, str] = Field(default_factory=dict)
    # Time-to-accuracy: how fast `candidate` reaches `baseline`'s final accuracy.
    baseline: str | None = None
    candidate: str | None = None
    # Final accuracy against the setting this experiment varies, as one figure (e.g. Part 1's
    # weight-decay comparisons, SC's limited-data rows).
    compare: Comparison | None = None
    # GPUs per training job of this experiment, overriding the workflow's `gpus_per_job`.
    # More than 1: data-parallel through torchrun (onecycle.training.distributed); train.batch_size
    # stays the total batch (the papers' TBS = per-GPU batch x GPUs) and must divide by it.
    # Range tests keep `gpus_per_job`: they run in one process.
    gpus: int | None = Field(default=None, ge=0)
    # Small single-GPU jobs (LeNet on MNIST) that may run `jobs_per_gpu` to a device.
    share_gpu: bool = False
    # "same": every seed runs the group's settings. "part1": seed s is Smith's run s % 4 + 1 of
    # x4.sh (PART1_* above): TBS + 4 x (3, 2, 1, 0), the nominal TBS's iterations, and xavier on
    # runs 1 and 3.
    seed_protocol: Literal["same", "part1"] = "same"
    # Smith's claims about these groups, each decided from the runs (onecycle.report.claims).
    claims: list[Claim] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _claims_named(cls, data: Any) -> Any:
        # Parsed here, one by one, so that an error names the claim's id, not its list index.
        if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
            return data
        parsed, seen = [], set()
        for index, raw in enumerate(data["claims"]):
            name = raw.get("id") if isinstance(raw, dict) else None
            where = f"claim {name!r}" if isinstance(name, str) else f"claims[{index}]"
            claim = parse(Claim, raw, where) if isinstance(raw, dict) else None
            if claim is None:
                raise ValueError(f"{where}: expected a mapping")
            if claim.id in seen:
                raise ValueError(f"{where}: a second claim with this id")
            seen.add(claim.id)
            parsed.append(claim)
        return {**data, "claims": parsed}

    @field_validator("range_test_seeds")
    @classmethod
    def _unique_range_test_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        return None if seeds is None else _check_seeds(seeds, "range_test_seeds")

    @field_validator("groups")
    @classmethod
    def _safe_group_names(cls, groups: dict[str, Any]) -> dict[str, Any]:
        for name in groups:
            _check_safe(name, "group")
        return groups

    @model_validator(mode="after")
    def _groups_or_study(self) -> ExperimentConfig:
        if self.bounds_study is None:
            if not self.groups:
                raise ValueError("groups: give at least one group (or a bounds_study, which makes its own)")
            return self
        if self.groups:
            raise ValueError("a bounds_study makes its own groups (one per max_lr_grid point and rule): "
                             "remove 'groups'")
        if self.range_test is None:
            raise ValueError("bounds_study needs a range_test block: the test whose rules it scores")
        for name in self.bounds_study.range_test_variants:
            _check_safe(name, "range_test_variants")
        # Malformed range-test settings or training policy fail here, naming the key.
        study_groups(self.bounds_study, self.range_test)
        variant_range_tests(self.bounds_study, self.range_test)
        return self

    @model_validator(mode="after")
    def _references_exist(self) -> ExperimentConfig:
        groups = self.training_groups()
        for key in ("baseline", "candidate"):
            value = getattr(self, key)
            if value is not None and value not in groups:
                raise ValueError(f"{key} {value!r} is not one of the groups ({', '.join(groups)})")
        for group in self.published:
            if group not in groups:
                raise ValueError(f"published names group {group!r}, which is not one of the groups")
        for claim in self.claims:
            unknown = [name for name in claim.group_names() if name not in self.groups]
            if unknown:
                close = difflib.get_close_matches(unknown[0], list(self.groups), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"claim {claim.id!r}: group {unknown[0]!r}{hint} is not one of the "
                                 f"groups ({', '.join(self.groups)})")
            if claim.expected is not None and all(name in self.published for name in claim.group_names()):
                raise ValueError(f"claim {claim.id!r}: every group has a published row, from which the "
                                 "expected verdict is computed: remove 'expected'")
        return self

    def training_groups(self) -> dict[str, dict[str, Any]]:
        """Group name -> overrides of `base`: `groups`, or those a bounds study makes."""
        if self.bounds_study is None:
            return self.groups
        return study_groups(self.bounds_study, self.range_test)

    def range_test_variants(self) -> dict[str, dict[str, Any]]:
        """A bounds study's range-test variants: name -> the whole range_test block."""
        if self.bounds_study is None:
            return {}
        return variant_range_tests(self.bounds_study, self.range_test)


class WorkflowConfig(StrictModel):
    results_dir: str
    seeds: list[int] = Field(min_length=1)
    # Replication verdict band in percentage points on top of both runs' spread (onecycle.report.stats.verdict).
    tolerance_pp: float = Field(default=0.5, ge=0)
    # Snakemake `threads` for training jobs (it sets OMP_NUM_THREADS to this, default 1).
    train_threads: int = Field(default=1, gt=0)
    # GPUs per training job (0 on CPU-only runs such as the smoke replication).
    gpus_per_job: int = Field(default=0, ge=0)
    # Jobs of `share_gpu` experiments that may run together on one GPU (onecycle.dag.gpu_slots
    # --per-device). One machine only: `--resources gpu=N` then counts seats, N = GPUs x
    # jobs_per_gpu, and every other GPU job takes all jobs_per_gpu seats of its devices. A
    # cluster gives each job its own GPUs; the Snakefile refuses jobs_per_gpu > 1 there.
    jobs_per_gpu: int = Field(default=1, ge=1)
    # Confidence of each one-sided bound behind a claim's verdict (onecycle.report.claims).
    claims_confidence: float = Field(default=0.95, gt=0.5, lt=1)
    # Datasets whose copy the user vouches for without the official md5s (a re-packed or
    # converted MNIST or CIFAR): their prepare_data job runs `onecycle prepare-data --no-verify`,
    # and the data record says the checksums were skipped and how the files differ.
    skip_checksums: list[str] = Field(default_factory=list)
    # "tiny": every job runs a handful of iterations, into <results_dir>-tiny (onecycle.experiments.scale):
    # `snakemake --cores 2 --config scale=tiny` checks a machine and its data before the real run.
    scale: Literal["full", "tiny"] = "full"
    experiments: dict[str, ExperimentConfig] = Field(min_length=1)

    @field_validator("results_dir")
    @classmethod
    def _a_folder_name(cls, results_dir: str) -> str:
        # An empty name is the current folder: outputs would land among the user's files.
        if not results_dir.strip() or "\0" in results_dir:
            raise ValueError("results_dir must name a folder (empty, or holding a NUL character)")
        return results_dir

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        return _check_seeds(seeds, "seeds")

    @field_validator("skip_checksums")
    @classmethod
    def _datasets_with_checksums(cls, names: list[str]) -> list[str]:
        from onecycle.data import SOURCES

        checked = sorted(name for name, source in SOURCES.items() if source.contents)
        for name in names:
            if name not in checked:
                raise ValueError(f"{name!r} has no checksums to skip: give some of {', '.join(checked)}")
        return names

    @field_validator("experiments")
    @classmethod
    def _safe_experiment_names(cls, experiments: dict[str, Any]) -> dict[str, Any]:
        for name in experiments:
            _check_safe(name, "experiment")
        return experiments


def _check_seeds(seeds: list[int], key: str) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{key} {seeds} repeat a value: two runs would write the same folder")
    if any(s < 0 for s in seeds):
        raise ValueError(f"{key} must be >= 0, got {seeds}")
    return seeds


def _check_safe(name: str, what: str) -> None:
    if not SAFE_NAME.match(name):
        raise ValueError(f"{what} name {name!r} must use only letters, digits, '_', '.', '-' "
                         "(it becomes a folder name)")


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

    def bounds_studies(self) -> list[str]:
        return [name for name, exp in self.workflow.experiments.items() if exp.bounds_study is not None]

    def bounds_path(self, experiment: str) -> Path:
        return self.results_dir / "range_test" / experiment / "bounds.json"

    def data_record(self, dataset: str) -> Path:
        return self.results_dir / "data" / f"{dataset}.json"

    def datasets(self) -> list[str]:
        return sorted({job.dataset for job in [*self.trains.values(), *self.range_tests.values()]})

    def caffe_mean_images(self, dataset: str) -> list[dict[str, Any]]:
        """The training splits of ImageNet folder `dataset` whose Caffe mean image some job needs,
        as distinct {"root", "classes"}: a job of their own (rule caffe_mean_image) computes each
        once with all its threads, so no training job waits on it holding GPUs."""
        needed = {}
        for job in [*self.trains.values(), *self.range_tests.values()]:
            if job.dataset == dataset and needs_caffe_mean(job):
                data = job.config["data"]
                split = {"root": data.get("root"), "classes": data.get("classes")}
                needed[json.dumps(split, sort_keys=True)] = split
        return [needed[key] for key in sorted(needed)]

    def caffe_mean_record(self, dataset: str) -> Path:
        return self.results_dir / "data" / f"{dataset}.caffe_mean.json"

    def data_inputs(self, job: Job) -> dict[str, Path]:
        """A job's data dependencies: the verified dataset and, if it needs one, its mean image."""
        inputs = {"data": self.data_record(job.dataset)}
        if needs_caffe_mean(job):
            inputs["caffe_mean"] = self.caffe_mean_record(job.dataset)
        return inputs


def needs_caffe_mean(job: Job) -> bool:
    """Caffe's ImageNet data layer (normalize caffe_mean_image on a folder) reads a mean image."""
    return job.dataset in FOLDER_DATASETS and job.config["data"].get("normalize") == "caffe_mean_image"


def load_workflow_config(data: dict[str, Any], source: str = "workflow config") -> WorkflowConfig:
    return parse(WorkflowConfig, data, source)


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


def device_overrides(raw: dict[str, Any], gpus: int, where: str) -> dict[str, Any]:
    """A job that claims GPUs trains on CUDA: "auto" becomes "cuda", so on a machine without
    CUDA the job fails at once (onecycle.training.device.resolve_device) instead of training for days on
    the CPU; "cpu" with claimed GPUs is a contradiction."""
    device = raw.get("train", {}).get("device", "auto")
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
    jobs = sum(len(exp.training_groups()) * len(workflow.seeds)
               + (len(exp.range_test_seeds or [0]) * (1 + len(exp.range_test_variants()))
                  if exp.range_test is not None else 0)
               for exp in workflow.experiments.values())
    if jobs > MAX_JOBS:
        raise ConfigError(f"{source}: {jobs} jobs (groups x seeds), above the {MAX_JOBS} one workflow "
                          "may schedule; split it into several workflow configs")
    tiny = workflow.scale == "tiny"
    results = Path(workflow.results_dir)
    if tiny:
        results = results.with_name(f"{results.name}-tiny")
    range_tests: dict[str, Job] = {}
    trains: dict[str, Job] = {}
    for exp_name, exp in workflow.experiments.items():
        exp_where = f"{source}: experiments.{exp_name}"
        if exp.range_test is not None:
            placement = gpu_placement(workflow.gpus_per_job, exp.share_gpu, workflow.jobs_per_gpu, exp_where)
            settings = {None: exp.range_test, **exp.range_test_variants()}
            for variant, spec in settings.items():
                prefix = exp_name if variant is None else f"{exp_name}/settings/{variant}"
                where = f"{exp_where} (range test{'' if variant is None else ' variant ' + variant})"
                for seed in exp.range_test_seeds or workflow.seeds[:1]:
                    job_id = f"{prefix}/seed{seed}"
                    merged = deep_merge(exp.base, {"name": job_id, "experiment": exp_name, "seed": seed,
                                                   "range_test": spec})
                    cfg = _range_test_config(merged, placement["gpus"], where)
                    if tiny:
                        scaled = tiny_job(merged, split_into=1, where=where, tiny=tiny_scale)
                        cfg = _range_test_config(scaled, placement["gpus"], where)
                    range_tests[job_id] = Job("range_test", job_id, exp_name, None, seed,
                                              results / "range_test" / job_id,
                                              cfg.model_dump(mode="json", exclude_defaults=True), cfg.data.dataset,
                                              **placement, variant=variant)
        gpus = workflow.gpus_per_job if exp.gpus is None else exp.gpus
        placement = gpu_placement(gpus, exp.share_gpu, workflow.jobs_per_gpu, exp_where)
        for group, overrides in exp.training_groups().items():
            for seed in workflow.seeds:
                job_id = f"{exp_name}/{group}/seed{seed}"
                where = f"{source}: experiments.{exp_name}.groups.{group}"
                merged = deep_merge(exp.base, overrides)
                ids = {"name": job_id, "experiment": exp_name, "group": group, "seed": seed}
                cfg = _run_config(merged, exp, seed, ids, gpus, placement["gpus"], where)
                if tiny:
                    protocol_batch = PART1_GPUS if exp.seed_protocol == "part1" else 1
                    scaled = tiny_job(merged, split_into=math.lcm(max(gpus, 1), protocol_batch), where=where,
                                      tiny=tiny_scale)
                    cfg = _run_config(scaled, exp, seed, ids, gpus, placement["gpus"], where)
                needs_bounds = cfg.schedule.lr_bounds == "range_test"
                if needs_bounds and exp.range_test is None:
                    raise ConfigError(f"{source}: experiments.{exp_name}.groups.{group}: schedule.lr_bounds "
                                      "is 'range_test' but the experiment has no range_test block")
                trains[job_id] = Job("train", job_id, exp_name, group, seed, results / "train" / job_id,
                                     cfg.model_dump(mode="json", exclude_defaults=True), cfg.data.dataset,
                                     needs_bounds, **placement)
    return Plan(workflow, results, range_tests, trains)


def _range_test_config(merged: dict[str, Any], gpus: int, where: str) -> RangeTestConfig:
    raw = deep_merge(merged, device_overrides(merged, gpus, where))
    return parse(RangeTestConfig, raw, where)


def _run_config(merged: dict[str, Any], exp: ExperimentConfig, seed: int, ids: dict[str, Any], gpus: int,
                claimed_gpus: int, where: str) -> RunConfig:
    """A training job's validated config: the group's settings, Smith's run protocol, the device."""
    raw = merged
    if exp.seed_protocol == "part1":
        raw = deep_merge(raw, part1_run_overrides(seed, raw, where))
    raw = deep_merge(raw, device_overrides(raw, claimed_gpus, where))
    cfg = parse(RunConfig, deep_merge(raw, ids), where)
    try:
        check_schedule(cfg)
        check_batch_size(cfg.train.batch_size, gpus, cfg.train.batch_norm_shards)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return cfg
