"""configs/sc_mirror.yaml, the super-convergence mirror: its protocol, and a tiny copy of it
whose jobs run through the CLI on real Fashion-MNIST and whose report states its claims, so that
the config cannot rot. (tests/test_workflow.py runs the Snakemake DAG itself.)"""

import copy
import json

import pandas as pd
import pytest
import yaml

from conftest import REPO, needs_fashion_mnist
from onecycle import cli, io
from onecycle.experiments.config import RangeTestConfig, RunConfig, parse
from onecycle.experiments.expansion import expand
from onecycle.report import claims

CONFIG = REPO / "configs" / "sc_mirror.yaml"
MAIN, LITERAL, LENET = "sc_mirror_resnet20", "sc_mirror_resnet20_literal_maf", "sc_mirror_lenet"


def _mirror() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def _iterations(job) -> int:
    train, data = job.config["train"], job.config["data"]
    return train["epochs"] * (data["train_subset"] // train["batch_size"])


def _jobs(plan, experiment, group):
    return [job for job in plan.experiment_trains(experiment) if job.group == group]


def test_mirror_runs_sc_protocol_at_every_data_size():
    plan = expand(_mirror(), str(CONFIG))
    assert len(plan.workflow.seeds) >= 3
    exp = plan.workflow.experiments[MAIN]
    full = exp.base["data"]["train_subset"]
    sizes = {}
    for job in plan.experiment_trains(MAIN):
        sizes.setdefault(job.config["data"]["train_subset"], {})[job.config["schedule"]["policy"]] = job
    # SC Table 1: the full set and limited-data rows; here 1, 1/2, 1/4, 1/8 of the subset.
    assert sorted(sizes) == [full // 8, full // 4, full // 2, full]
    for size, by_policy in sizes.items():
        clr, pc = by_policy["triangular"], by_policy["multistep"]
        clr_steps, pc_steps = _iterations(clr), _iterations(pc)
        # SC's CLR: one cycle 0.1 -> 3 -> 0.1 that ends with the run (no tail), BN maf 0.95.
        assert clr.config["schedule"]["params"] == {"base_lr": 0.1, "max_lr": 3.0, "stepsize": clr_steps // 2}
        assert clr_steps % 2 == 0
        # SC's PC-LR: 0.35, x0.1 at 5/8 and 7/8 of the run, at least 4x CLR's iterations.
        params = pc.config["schedule"]["params"]
        assert (params["base_lr"], params["gamma"]) == (0.35, 0.1)
        assert [8 * step for step in params["stepvalue"]] == [5 * pc_steps, 7 * pc_steps]
        assert pc_steps >= 4 * clr_steps
        # Both policies run the same iterations at every size, as SC's rows do.
        assert (clr_steps, pc_steps) == (_iterations(sizes[full]["triangular"]), _iterations(sizes[full]["multistep"]))
        for job in (clr, pc):
            run = parse(RunConfig, job.config)
            assert (run.model.arch, run.model.init, run.model.options) == (
                "resnet20", "prototxt", {"moving_average_fraction": 0.95})
            # SC's optimizer: plain momentum SGD 0.9, WD 1e-4, Caffe's rule and multipliers (C1, D6).
            assert (run.optim.algorithm, run.optim.momentum, run.optim.weight_decay) == ("sgd", 0.9, 1.0e-4)
            assert (run.optim.update_rule, run.optim.multipliers) == ("caffe", "prototxt")
            assert (run.data.augment, run.data.normalize, run.train.batch_size) == ("mirror", "caffe_mean_image", 125)
    (literal,) = {job.group for job in plan.experiment_trains(LITERAL)}
    literal_job = _jobs(plan, LITERAL, literal)[0]
    assert literal_job.config["model"]["options"] == {"moving_average_fraction": 0.999}
    assert literal_job.config["schedule"] == sizes[full]["multistep"].config["schedule"]


def test_lenet_range_test_shares_the_resnet_ramp():
    plan = expand(_mirror(), str(CONFIG))
    resnet, lenet = (parse(RangeTestConfig, plan.experiment_range_tests(name)[0].config) for name in (MAIN, LENET))
    # SC Fig 2b's ramp (lrRangeSolver: linear from 0 to 3, C1), the same for both nets.
    ramp = ("ramp", "start_lr", "end_lr", "iterations")
    assert [getattr(resnet.range_test, k) for k in ramp] == [getattr(lenet.range_test, k) for k in ramp]
    assert (resnet.range_test.ramp, resnet.range_test.start_lr, resnet.range_test.end_lr) == ("linear", 0.0, 3.0)
    assert resnet.train.batch_size == lenet.train.batch_size
    assert resnet.data.train_subset == lenet.data.train_subset
    assert resnet.optim == lenet.optim
    assert (resnet.model.arch, lenet.model.arch) == ("resnet20", "lenet")


# ---------------------------------------------------------------------------------------------
# The tiny mirror: every group scaled down, one short job of each kind run
# ---------------------------------------------------------------------------------------------

TINY_SUBSET = 250          # 2 iterations per epoch at batch 125
ITERATION_SCALE = 100      # 400 CLR iterations -> 4 (stepsize 2), 1 600 PC-LR -> 16 (drops at 10, 14)
RANGE_TEST_ITERATIONS = 8


def _scale_group(group: dict, base: dict, tiny_ipe: int) -> dict:
    """The group at TINY_SUBSET images and 1/ITERATION_SCALE of its iterations: its schedule's
    iteration-valued parameters shrink by the same factor, so the cycle and the drops keep their
    place in the run. Evaluated once, after the last epoch (the full 10k test set each time);
    the LR logged at every iteration."""
    merged = {**base.get("data", {}), **group.get("data", {})}
    train = {**base["train"], **group["train"]}
    steps = train["epochs"] * (merged["train_subset"] // train["batch_size"])
    assert steps % (ITERATION_SCALE * tiny_ipe) == 0, "the tiny run must be whole epochs"
    epochs = steps // ITERATION_SCALE // tiny_ipe
    tiny = copy.deepcopy(group)
    tiny["data"] = {"train_subset": TINY_SUBSET}
    tiny["train"] = {"epochs": epochs, "eval_every_epochs": epochs, "log_every": 1}
    params = tiny["schedule"]["params"]
    for key in ("stepsize", "stepvalue"):
        if key in params:
            values = params[key] if isinstance(params[key], list) else [params[key]]
            assert all(v % ITERATION_SCALE == 0 for v in values)
            scaled = [v // ITERATION_SCALE for v in values]
            params[key] = scaled if isinstance(params[key], list) else scaled[0]
    return tiny


def tiny_mirror(mirror: dict, results_dir: str) -> dict:
    """configs/sc_mirror.yaml at a few iterations, one seed, every group and claim kept;
    every range test 8 iterations, scored on 250 test images."""
    tiny = copy.deepcopy(mirror)
    tiny.update(results_dir=results_dir, seeds=[0])
    for exp in tiny["experiments"].values():
        tiny_ipe = TINY_SUBSET // exp["base"]["train"]["batch_size"]
        exp["groups"] = {name: _scale_group(group, exp["base"], tiny_ipe) for name, group in exp["groups"].items()}
        # A new mapping: the YAML anchors share one `data` mapping between the experiments.
        exp["base"] = {**exp["base"], "data": {**exp["base"]["data"], "train_subset": TINY_SUBSET}}
        if "range_test" in exp:
            exp["range_test_seeds"] = [0]
            exp["range_test"] = {**exp["range_test"], "iterations": RANGE_TEST_ITERATIONS, "eval_subset": 250,
                                 "eval_every": min(exp["range_test"]["eval_every"], 4)}
    return tiny


def test_tiny_mirror_keeps_the_protocol():
    tiny = expand(tiny_mirror(_mirror(), "results/tiny"))
    for group in ("clr_10k", "clr_5k", "clr_2.5k", "clr_1.25k"):
        (clr,) = _jobs(tiny, MAIN, group)
        assert _iterations(clr) == 4 and clr.config["schedule"]["params"]["stepsize"] == 2
    for group in ("pc_10k", "pc_5k", "pc_2.5k", "pc_1.25k"):
        (pc,) = _jobs(tiny, MAIN, group)
        assert _iterations(pc) == 16 and pc.config["schedule"]["params"]["stepvalue"] == [10, 14]


def _lr_trace(out_dir) -> list[float]:
    log = pd.read_csv(out_dir / "train_log.csv")
    assert list(log.iteration) == list(range(len(log)))   # log_every 1: every iteration
    return list(log.lr)


@pytest.mark.slow
@needs_fashion_mnist
def test_tiny_mirror_jobs_and_report(tmp_path):
    """One job of each kind through `onecycle train` / `range-test` / `report`, as the DAG runs
    them: ResNet-20 CLR and PC-LR at 10k's settings, LeNet's CLR cycle, both range tests. The
    other groups (the limited-data rows, the literal maf: the same kinds of job) stay unrun, as
    in a mirror still under way."""
    results = tmp_path / "sc_tiny"
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_mirror(_mirror(), str(results))))
    plan = expand(yaml.safe_load(config_path.read_text()), str(config_path))
    chosen = [("train", job) for name, group in ((MAIN, "clr_10k"), (MAIN, "pc_10k"), (LENET, "clr_10k"))
              for job in _jobs(plan, name, group)]
    chosen += [("range-test", job) for name in (MAIN, LENET) for job in plan.experiment_range_tests(name)]
    for command, job in chosen:
        spec = tmp_path / "specs" / job.job_id / "spec.json"
        io.write_json(spec, job.config)
        assert cli.main([command, "--config", str(spec), "--out", str(job.out_dir), "--threads", "1"]) == 0

    def run(experiment, group):
        return results / "train" / experiment / group / "seed0"

    # The tiny cycle climbs to LR 3 in 2 iterations (SC's in 5 000) and may blow up; a blow-up
    # must be recorded (status, reason, no accuracy), never crash the job or lose the LR trace.
    # SC's CLR, Caffe `triangular` by hand: 0.1 + 2.9 * (1 - |it / 2 - 1|) at iterations 0..3.
    clr_trace = _lr_trace(run(MAIN, "clr_10k"))
    assert clr_trace == pytest.approx([0.1, 1.55, 3.0, 1.55][:len(clr_trace)]) and len(clr_trace) >= 3
    # SC's PC-LR, Caffe `multistep`: 0.35, x0.1 from iteration 10 and again from 14.
    pc_trace = _lr_trace(run(MAIN, "pc_10k"))
    assert pc_trace == pytest.approx(([0.35] * 10 + [0.035] * 4 + [0.0035] * 2)[:len(pc_trace)])
    for experiment, group in ((MAIN, "clr_10k"), (MAIN, "pc_10k"), (LENET, "clr_10k")):
        metrics = json.loads((run(experiment, group) / "metrics.json").read_text())
        accuracy = metrics["final"]["test_accuracy"]
        if metrics["status"] == "diverged":
            assert metrics["diverged"]["reason"] and accuracy is None
        else:
            assert metrics["status"] == "completed" and metrics["iterations"] == metrics["iterations_planned"]
            # Scored on all 10 000 test images: accuracy is a multiple of 1/10 000.
            assert 0.0 <= accuracy <= 1.0 and round(accuracy * 10_000) == pytest.approx(accuracy * 10_000)
    # SC Fig 2b's ramp (lrRangeSolver): 3 * it / 8 for both nets, up to where a net diverged.
    for experiment in (MAIN, LENET):
        history = pd.read_csv(results / "range_test" / experiment / "seed0" / "history.csv")
        assert list(history.iteration) == list(range(len(history)))
        assert list(history.lr) == pytest.approx([3.0 * it / RANGE_TEST_ITERATIONS for it in history.iteration])

    assert cli.main(["report", "--config", str(config_path)]) == 0
    # Every configured group has a row (SC Table 1's layout); the unrun ones say "pending".
    table = pd.read_csv(results / "tables" / f"{MAIN}.csv").set_index("group")
    assert sorted(table.index) == sorted(_mirror()["experiments"][MAIN]["groups"])
    for group, row in table.iterrows():
        if group in ("clr_10k", "pc_10k"):
            assert row.n == 1
        else:
            assert row.n == 0 and row.verdict == "pending"
    assert (results / "tables" / f"{MAIN}_time_to_accuracy.csv").exists()
    for figure in (f"{MAIN}_accuracy", f"{MAIN}_range_test", f"{MAIN}_comparison", f"{LENET}_range_test"):
        assert (results / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every claim of the config has a row. The limited-data groups did not run: "pending", never
    # a win or a loss. One seed per group gives no confidence bound: never "supported"; a run or
    # range test of a handful of iterations that stayed at chance makes the verdict "invalid".
    verdicts = pd.read_csv(results / "tables" / f"{MAIN}_claims.csv").set_index("claim_id")
    claim_ids = [claim["id"] for claim in _mirror()["experiments"][MAIN]["claims"]]
    assert list(verdicts.index) == claim_ids
    for claim_id, row in verdicts.iterrows():
        if claim_id.endswith("_10k"):   # run, one seed each; at this size a run may stay at chance
            assert claims.bare_verdict(row.verdict) in ("inconclusive", "diverged", "invalid")
        else:
            assert row.verdict == "pending" and "seed0" in row.pending_runs
        assert row.expected == "supported"   # SC's own numbers, as the config states (A3)
