"""The schema of a workflow config (configs/*.yaml): strict models of its experiments, their
groups, seeds and range tests, the claims they test and the comparisons they plot.

load_workflow_config validates a whole workflow at once, naming the key path of the first error;
onecycle.experiments.expansion turns the validated config into jobs with fixed paths.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from onecycle.experiments.bounds_study import BoundsStudyConfig, study_groups, variant_range_tests
from onecycle.errors import excerpt
from onecycle.experiments.config import MAX_SEED, StrictModel, parse
from onecycle.io import MAX_NAME_BYTES

# Names become folder names and Snakemake wildcard values: keep them shell- and path-safe.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# What an experiment may say it changed from the paper it replicates (`departures:`), one text
# each; every verdict from it is then shown "at this scale" with the list (docs/design.md §10c).
Departure = Literal["data", "net", "batch", "budget", "lr", "bn", "optimizer", "evaluation", "seeds"]


class Comparison(StrictModel):
    """What a comparison figure puts on its axes: dotted config paths, or "group".

    difference: draw the candidate's series minus the baseline's at each x (paired over seeds,
    with the claims' bounds) instead of each series' accuracy, as SC's limited-data comparison
    reads (CLR - PC-LR against the training images). paper: the published rows drawn beside
    it as context, candidate row id -> baseline row id of configs/reference/published.yaml, each
    pair at its own x (its row's setting of the same name)."""

    x: str                      # e.g. "optim.weight_decay", "data.train_subset", "group"
    hue: str | None = None      # series, e.g. "schedule.policy"
    difference: bool = False
    paper: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _difference_needs_series(self) -> Comparison:
        if self.difference and self.hue is None:
            raise ValueError("difference needs hue: the series the candidate and the baseline belong to")
        if self.paper and not self.difference:
            raise ValueError("paper (published candidate -> baseline pairs) needs difference: true")
        return self


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

    def comparison(self) -> tuple:
        """What the claim compares: two claims with the same comparison are one claim stated twice
        (the same groups, the same metric: final accuracy, or the speed-up to the target)."""
        metric = "speed-up" if self.kind == "speedup" else "final accuracy"
        if self.groups is not None:
            return ("ordering", metric, tuple(tuple(t) if isinstance(t, list) else t for t in self.groups))
        return (self.candidate, self.baseline, metric)

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
    # The accuracy figure's panels, groups drawn together in each (CLR Fig 1: fixed vs
    # triangular2, exp vs exp_range); every group in at least one. Empty: all in one panel.
    accuracy_panels: list[list[str]] = Field(default_factory=list)
    # GPUs per training job of this experiment, overriding the workflow's `gpus_per_job`.
    # More than 1: data-parallel through torchrun (onecycle.training.distributed); train.batch_size
    # stays the total batch (the papers' TBS = per-GPU batch x GPUs) and must divide by it.
    # Range tests keep `gpus_per_job`: they run in one process.
    gpus: int | None = Field(default=None, ge=0)
    # Small single-GPU jobs (LeNet on MNIST) that may run `jobs_per_gpu` to a device.
    share_gpu: bool = False
    # "same": every seed runs the group's settings. "part1": seed s is Smith's run s % 4 + 1 of
    # x4.sh (PART1_* in onecycle.experiments.expansion): TBS + 4 x (3, 2, 1, 0), the nominal TBS's
    # iterations, and xavier on runs 1 and 3.
    seed_protocol: Literal["same", "part1"] = "same"
    # Smith's claims about these groups, each decided from the runs (onecycle.report.claims).
    claims: list[Claim] = Field(default_factory=list)
    # How this experiment departs from the paper's protocol, aspect -> text (e.g. data: "10k
    # Fashion-MNIST images, not CIFAR-10's 50k"). Empty: it runs the paper's scale.
    departures: dict[Departure, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _claims_named(cls, data: Any) -> Any:
        # Parsed here, one by one, so that an error names the claim's id, not its list index.
        if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
            return data
        parsed, seen, compared = [], set(), {}
        for index, raw in enumerate(data["claims"]):
            name = raw.get("id") if isinstance(raw, dict) else None
            where = f"claim {name!r}" if isinstance(name, str) else f"claims[{index}]"
            claim = parse(Claim, raw, where) if isinstance(raw, dict) else None
            if claim is None:
                raise ValueError(f"{where}: expected a mapping")
            if claim.id in seen:
                raise ValueError(f"{where}: a second claim with this id")
            # One comparison is one claim: counted twice it would look like two pieces of evidence
            # (and two tests to correct for) where there is one.
            if claim.comparison() in compared:
                raise ValueError(f"{where}: compares the same groups on the same metric as claim "
                                 f"{compared[claim.comparison()]!r}; one comparison is one claim: keep one")
            seen.add(claim.id)
            compared[claim.comparison()] = claim.id
            parsed.append(claim)
        return {**data, "claims": parsed}

    @field_validator("departures")
    @classmethod
    def _departures_say_something(cls, departures: dict[str, str]) -> dict[str, str]:
        for aspect, text in departures.items():
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"departures.{aspect}: say how it departs from the paper (a non-empty text)")
        return departures

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
        if self.compare is not None and self.compare.difference and (self.candidate is None or self.baseline is None):
            raise ValueError("compare.difference draws candidate minus baseline: set both")
        _check_panels(self.accuracy_panels, groups)
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
        # An empty name, ".", "/" or a folder above them is a folder of the user's own files:
        # tables/, figures/ and data/ would land among them.
        if not results_dir.strip() or "\0" in results_dir:
            raise ValueError("results_dir must name a folder (empty, or holding a NUL character)")
        if set(PurePosixPath(os.path.normpath(results_dir)).parts) <= {".", "..", "/", "//"}:
            raise ValueError(f"results_dir {results_dir!r} is the current folder, the root or a folder above: "
                             "name a folder of its own, e.g. results/my_study")
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
        from onecycle.report.outputs import check_experiment_names

        for name in experiments:
            _check_safe(name, "experiment")
        # Names whose report files would be another's (`fm_claims` beside `fm`), or too long.
        check_experiment_names(list(experiments))
        return experiments


def _check_panels(panels: list[list[str]], groups: dict[str, Any]) -> None:
    if not panels:
        return
    for index, panel in enumerate(panels):
        if not panel or len(set(panel)) != len(panel):
            raise ValueError(f"accuracy_panels[{index}]: name one group or more, each once")
        unknown = [name for name in panel if name not in groups]
        if unknown:
            raise ValueError(f"accuracy_panels[{index}]: {unknown[0]!r} is not one of the groups "
                             f"({', '.join(groups)})")
    # A group in no panel would be missing from the figure, its runs drawn nowhere.
    left_out = [name for name in groups if not any(name in panel for panel in panels)]
    if left_out:
        raise ValueError(f"accuracy_panels: group {left_out[0]!r} is in no panel; draw every group somewhere")


def _check_seeds(seeds: list[int], key: str) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{key} {seeds} repeat a value: two runs would write the same folder")
    wrong = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if wrong:
        raise ValueError(f"{key}: {excerpt(wrong[0])} is outside 0..2^63-1 (a seed is an int64: "
                         "onecycle.experiments.config.MAX_SEED)")
    return seeds


def _check_safe(name: str, what: str) -> None:
    if not SAFE_NAME.match(name):
        raise ValueError(f"{what} name {excerpt(name)} must use only letters, digits, '_', '.', '-' "
                         "(it becomes a folder name)")
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise ValueError(f"{what} name {excerpt(name)} is {len(os.fsencode(name))} bytes; it becomes a folder "
                         f"name, which may have {MAX_NAME_BYTES}")


def load_workflow_config(data: dict[str, Any], source: str = "workflow config") -> WorkflowConfig:
    return parse(WorkflowConfig, data, source)
