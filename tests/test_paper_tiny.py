"""configs/paper.yaml and configs/paper_imagenet.yaml really run: one job of every distinct
(dataset, architecture, policy, Caffe options, range-test kind, data-parallel) combination
executes at tiny scale on data in the real on-disk formats, then every table and figure of the
config is built (issue 12).

How: the opt-in config (the default one included), with `scale: tiny`, results in a temporary
folder, no GPUs and `skip_checksums` for the fixture copies (data_fixtures.write_fixture_data;
not the official files), goes through the real
Snakefile for workflow_config.json and its data jobs (prepare_data, caffe_cache). The
chosen jobs' spec files are written as the Snakefile writes them (onecycle.dag.run_specs), and the jobs
run through the real CLI (`onecycle.cli.main`, in two long-lived worker processes: one import
of torch per worker instead of one per job, two jobs at a time on the CI's two cores) on them,
with the rules' arguments; `onecycle report` then builds every experiment's tables and figures,
pending where a group did not run. The CPU time of every job is printed.

The ImageNet-size nets (AlexNet, GoogLeNet at their fixed 227/224 inputs; ResNet-50 and
Inception-ResNet-v2 at the smallest crops they take, 64 and 75) are marked `imagenet_size`:
`make test` runs them, at tiny scale with a batch of 2 (4 over 2 data-parallel processes for the
Imagenette nets).
The data-parallel jobs run under torchrun with 2 gloo processes on CPU: with gpus_per_job 0 at
tiny scale an experiment's own `gpus` claims no GPU and launches that many CPU processes
(onecycle.experiments.expansion.job_devices).
"""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import HANG_GUARD_S, REPO
from data_fixtures import write_fixture_data
from onecycle import cli, io
from onecycle.experiments.config import RangeTestConfig, RunConfig
from onecycle.training.processes import launch_command
from onecycle.experiments.expansion import Job, Plan, expand
from onecycle.experiments.loading import load_workflow_file
from onecycle.report.outputs import experiment_outputs
from onecycle.experiments.scale import TINY, TinyScale

pytestmark = pytest.mark.slow

PAPER = REPO / "configs" / "paper_imagenet.yaml"  # configs/paper.yaml and the full-ILSVRC rows
# Too slow for a 2-core CI at their real input sizes: run in their own, marked test.
IMAGENET_SIZE = ("alexnet", "googlenet", "resnet50", "inception_resnet_v2")
# The smallest inputs that still exercise their code: AlexNet and GoogLeNet take only their
# own sides; ResNet-50 runs at 64 (2x2 before its pooling); Inception-ResNet-v2's valid-padded
# stem and reductions need 75 (1x1 at the end).
SMALLEST_CROP = {"resnet50": 64, "inception_resnet_v2": 75}
DDP_PROCESSES = 2
def tiny_paper_config(results: Path) -> dict:
    """configs/paper_imagenet.yaml (with configs/paper.yaml) at tiny scale, on CPU, with fixture
    data; the ImageNet-size nets at the smallest inputs they take, the data-parallel jobs on 2
    processes."""
    config = copy.deepcopy(load_workflow_file(PAPER))
    config.update({"scale": "tiny", "results_dir": str(results), "gpus_per_job": 0,
                   "skip_checksums": ["mnist", "cifar10", "cifar100"]})
    for exp in config["experiments"].values():
        arch = exp["base"]["model"]["arch"]
        if arch in SMALLEST_CROP:
            exp["base"]["data"] = {**exp["base"]["data"], "crop_size": SMALLEST_CROP[arch]}
        if exp.get("gpus"):
            exp["gpus"] = DDP_PROCESSES
    return config


def combination(plan: Plan, job: Job) -> tuple:
    """What makes a job a different code path: dataset, architecture, policy or range-test kind,
    the Caffe options, bounds from a range test, data parallelism."""
    if job.kind == "range_test":
        cfg = RangeTestConfig.model_validate(job.config)
        spec = cfg.range_test
        kind = ("momentum range test" if spec.start_lr == spec.end_lr else
                f"{spec.ramp} LR ramp{' with momentum ramp' if spec.momentum_range else ''}")
        what = (kind, spec.bounds_rule, spec.policy_kind)
    else:
        cfg = RunConfig.model_validate(job.config)
        what = (cfg.schedule.policy, "bounds from range test" if job.needs_bounds else "configured LRs")
    exp = plan.workflow.experiments[job.experiment]
    caffe = (cfg.optim.update_rule, cfg.optim.multipliers, cfg.data.normalize, cfg.data.augment, cfg.data.order,
             cfg.model.init, cfg.train.batch_norm_shards > 1, cfg.train.caffe_test is not None,
             exp.seed_protocol)
    return (job.kind, cfg.data.dataset, cfg.model.arch, what, caffe, job.processes > 1)


def chosen_jobs(plan: Plan, heavy: bool) -> list[Job]:
    """The first job (seed 0) of every combination, with the ImageNet-size nets or without."""
    chosen: dict[tuple, Job] = {}
    for job in [*plan.range_tests.values(), *plan.trains.values()]:
        if job.seed == 0 and (job.config["model"]["arch"] in IMAGENET_SIZE) == heavy:
            chosen.setdefault(combination(plan, job), job)
    return list(chosen.values())


WORKERS = 2  # the CI machine's cores: jobs run two at a time, in two long-lived processes


class CpuClock:
    """CPU seconds (user + system) per job, with its outcome, for the printed table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, str]] = []

    def add(self, kind: str, what: str, seconds: float, outcome: str = "") -> None:
        self.rows.append((kind, what, seconds, outcome))

    def table(self) -> str:
        lines = [f"{'job kind':<12} {'CPU s':>7}  job  [outcome]"]
        lines += [f"{kind:<12} {seconds:>7.1f}  {what}  {outcome}" for kind, what, seconds, outcome in self.rows]
        lines.append(f"{'total':<12} {sum(row[2] for row in self.rows):>7.1f}")
        return "\n".join(lines)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_job(args: list[str]) -> tuple[int, float]:
    """One `onecycle` command in a pool worker: its exit status and the CPU seconds it took (the
    worker runs one job at a time: its process time, and its DataLoader workers' for folders)."""
    start = time.process_time() + _children_cpu()
    code = cli.main(args)
    return code, time.process_time() + _children_cpu() - start


def fork_children() -> None:
    """Pool initializer: a spawned worker would also spawn its DataLoader workers (each importing
    torch again, ~5 CPU s); `onecycle` run from a shell forks them, and so does this worker."""
    multiprocessing.set_start_method("fork", force=True)


def torchrun_job(command: list[str]) -> tuple[int, float]:
    """A data-parallel job (torchrun and its processes) from a pool worker: status, CPU seconds."""
    start = _children_cpu()
    result = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.returncode, _children_cpu() - start


def snakemake(work: Path, targets: list[Path]) -> float:
    """Builds `targets` with the real Snakefile; returns the CPU seconds it took."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    command = [shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "tiny_paper.yaml"), "--cores", str(WORKERS), *map(str, targets)]
    start = _children_cpu()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-4000:]
    return _children_cpu() - start


def with_range_tests(plan: Plan, jobs: list[Job]) -> list[Job]:
    """`jobs` and the range tests their trainings from bounds need, range tests first."""
    range_tests = {job.job_id: job for job in jobs if job.kind == "range_test"}
    for job in jobs:
        if job.needs_bounds:
            range_tests.update({rt.job_id: rt for rt in plan.experiment_range_tests(job.experiment)})
    return [*range_tests.values(), *(job for job in jobs if job.kind == "train")]


@pytest.fixture(scope="module")
def tiny_paper(tmp_path_factory):
    """The fixture data, the derived config, its two plans (the ImageNet-size nets at batch 2),
    workflow_config.json and every data job through the Snakefile, and a pool of workers."""
    work = tmp_path_factory.mktemp("paper_tiny")
    write_fixture_data(work / "data")
    config = tiny_paper_config(work / "results")
    (work / "tiny_paper.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    plans = {"main": expand(config, "tiny_paper.yaml"),
             # 2 per process for the data-parallel ones: scale.TinyScale.images_per_shard.
             "imagenet_size": expand(config, "tiny_paper.yaml", tiny_scale=TinyScale(batch_size=2))}
    jobs = {name: with_range_tests(plan, chosen_jobs(plan, heavy=name == "imagenet_size"))
            for name, plan in plans.items()}
    data = sorted({path for name, plan in plans.items() for job in jobs[name]
                   for path in plan.data_inputs(job).values()})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ONECYCLE_DATA", str(work / "data"))  # onecycle.data.default_root of every dataset
        env.setenv("OMP_NUM_THREADS", "1")
        seconds = snakemake(work, [plans["main"].results_dir / "workflow_config.json", *data])
        for path in data:
            record = io.read_json(path)
            assert record.get("verified") is not False or record["dataset"] in config["skip_checksums"], record
        context = multiprocessing.get_context("spawn")  # workers import torch once, fresh
        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context, initializer=fork_children) as pool:
            yield work, plans, jobs, pool, ("snakemake", f"workflow_config and {len(data)} data jobs", seconds)


def run_jobs(plan: Plan, jobs: list[Job], pool, clock: CpuClock) -> dict[str, dict]:
    """Range tests, combined bounds and trainings through the CLI on the workflow's spec files,
    two at a time; returns every job's metrics.json."""
    # The Snakefile writes each job's spec.json as `io.json_text(job.config)` (onecycle.dag.run_specs);
    # here the same text, for the plan at either tiny scale (the Snakefile saw the main one only).
    for job in jobs:
        io.write_json(job.out_dir / "spec.json", job.config)
    range_tests = [job for job in jobs if job.kind == "range_test"]
    run_in_pool(plan, [(job, ["range-test", "--config", str(job.out_dir / "spec.json"), "--out", str(job.out_dir)])
                       for job in range_tests], pool, clock)
    for experiment in sorted({job.experiment for job in range_tests}):
        seeds = [str(job.out_dir / "bounds.json") for job in plan.experiment_range_tests(experiment)]
        assert cli.main(["combine-bounds", "--out", str(plan.bounds_path(experiment)), *seeds]) == 0
    trains = []
    for job in (job for job in jobs if job.kind == "train"):
        args = ["train", "--config", str(job.out_dir / "spec.json"), "--out", str(job.out_dir)]
        if job.needs_bounds:
            args += ["--bounds", str(plan.bounds_path(job.experiment))]
        trains.append((job, args))
    run_in_pool(plan, trains, pool, clock)
    return {job.job_id: io.read_json(job.out_dir / "metrics.json") for job in jobs}


def run_in_pool(plan: Plan, commands: list[tuple[Job, list[str]]], pool, clock: CpuClock) -> None:
    futures = [pool.submit(torchrun_job, ddp_command(job, args)) if job.processes > 1 else pool.submit(cli_job, args)
               for job, args in commands]
    for (job, _), future in zip(commands, futures):
        code, seconds = future.result()
        assert code == 0, job.job_id
        metrics = io.read_json(job.out_dir / "metrics.json")
        outcome = (f"[{metrics['status']}; max_lr {metrics['bounds']['max_lr']}]" if job.kind == "range_test"
                   else f"[{metrics['status']}, {metrics['iterations']} it]")
        clock.add(job.kind + (" (DDP)" if job.processes > 1 else ""), _describe(plan, job), seconds, outcome)


def _describe(plan: Plan, job: Job) -> str:
    _, dataset, arch, what, _, ddp = combination(plan, job)
    return f"{job.job_id} ({dataset}, {arch}, {', '.join(what)}{', DDP' if ddp else ''})"


def ddp_command(job: Job, args: list[str]) -> list[str]:
    """The rule's launcher: torchrun, one gloo process per data-parallel process of the job."""
    command = launch_command(job.processes, *args)
    return [sys.executable, "-m", "torch.distributed.run", *command[1:]]  # this interpreter's torchrun


def check_results(plan: Plan, jobs: list[Job], metrics: dict[str, dict]) -> None:
    steps = TINY.epochs * TINY.iterations_per_epoch
    for job in jobs:
        result = metrics[job.job_id]
        assert result["status"] in ("completed", "diverged"), job.job_id
        if job.kind == "train":
            assert result["iterations_planned"] == steps, job.job_id
            if result["status"] == "completed":
                assert result["iterations"] == steps and result["final"]["test_accuracy"] is not None, job.job_id
        else:
            spec = RangeTestConfig.model_validate(job.config).range_test
            if spec.start_lr < spec.end_lr:  # an LR range test gives bounds; a momentum one says why not
                assert result["bounds"]["max_lr"] is not None, (job.job_id, result["bounds"])
            else:
                assert "momentum range test" in result["bounds"]["no_bounds"]


def check_report(plan: Plan, experiments: list[str]) -> None:
    for name in experiments:
        for key, path in experiment_outputs(plan, name).items():
            assert path.is_file(), (name, key)
            if path.suffix == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
            elif path.suffix == ".pdf":
                assert path.read_bytes()[:4] == b"%PDF", path


def test_every_job_kind_of_the_paper_config_runs_at_tiny_scale(tiny_paper, capsys):
    work, plans, jobs, pool, data_row = tiny_paper
    plan, clock = plans["main"], CpuClock()
    clock.add(*data_row)
    chosen = chosen_jobs(plan, heavy=False)
    assert len({combination(plan, job) for job in chosen}) == len(chosen) >= 37  # 28 trainings, 9 range tests
    metrics = run_jobs(plan, jobs["main"], pool, clock)
    check_results(plan, jobs["main"], metrics)
    # Every table and figure of the config, from what ran (the rest pending), as the report rules
    # and `make figures` build them.
    code, seconds = pool.submit(cli_job, ["report", "--config", str(plan.results_dir / "workflow_config.json")]).result()
    assert code == 0
    clock.add("report", f"every table and figure of the {len(plan.workflow.experiments)} experiments", seconds)
    check_report(plan, list(plan.workflow.experiments))
    table = (plan.results_dir / "tables" / "part1_t2_mnist_lenet.csv").read_text()
    assert "pending" in table  # seeds 1-3 never ran
    with capsys.disabled():
        print("\n" + clock.table())


@pytest.mark.imagenet_size
def test_imagenet_size_nets_run_at_their_smallest_inputs(tiny_paper, capsys):
    work, plans, jobs, pool, data_row = tiny_paper
    plan, clock = plans["imagenet_size"], CpuClock()
    clock.add(*data_row)
    assert {job.config["model"]["arch"] for job in jobs["imagenet_size"]} == set(IMAGENET_SIZE)
    assert any(job.processes == DDP_PROCESSES and job.gpus == 0 for job in jobs["imagenet_size"])
    metrics = run_jobs(plan, jobs["imagenet_size"], pool, clock)
    check_results(plan, jobs["imagenet_size"], metrics)
    for job in jobs["imagenet_size"]:  # the data-parallel ones ran as 2 processes
        assert metrics[job.job_id]["provenance"]["world_size"] == job.processes, job.job_id
    experiments = sorted({job.experiment for job in jobs["imagenet_size"]})
    for name in experiments:
        code, seconds = pool.submit(cli_job, ["report", "--config", str(plan.results_dir / "workflow_config.json"),
                                              "--experiment", name]).result()
        assert code == 0
        clock.add("report", name, seconds)
    check_report(plan, experiments)
    with capsys.disabled():
        print("\n" + clock.table())
