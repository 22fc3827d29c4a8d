"""Tiny scale (`scale: tiny`, onecycle.experiments.scale): every job of a config runs a handful of iterations,
with its schedule compressed consistently, and the real config is still checked."""

import copy

import pytest
import yaml

from conftest import REPO
from onecycle.experiments.config import ConfigError, RangeTestConfig, RunConfig
from onecycle.experiments.loading import deep_merge
from onecycle.experiments.expansion import expand
from onecycle.experiments.scale import TINY
from onecycle.training.schedule_setup import build_schedule, schedule_iterations_per_epoch

PAPER = REPO / "configs" / "paper.yaml"
TINY_STEPS = TINY.epochs * TINY.iterations_per_epoch  # 2 x 4 = 8


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load(PAPER.read_text())


@pytest.fixture(scope="module")
def tiny_plan(paper):
    return expand({**paper, "scale": "tiny"}, str(PAPER))


def _schedule(job):
    cfg = RunConfig.model_validate(job.config)
    ipe = schedule_iterations_per_epoch(cfg.train, cfg.data.train_subset)
    bounds = {"base_lr": 0.1, "max_lr": 1.0} if job.needs_bounds else None
    return cfg, build_schedule(cfg, ipe, bounds)


def test_every_paper_job_is_tiny_and_goes_elsewhere(paper, tiny_plan):
    real = expand(paper, str(PAPER))
    assert str(tiny_plan.results_dir) == "results/paper-tiny"
    assert tiny_plan.trains.keys() == real.trains.keys() and tiny_plan.range_tests.keys() == real.range_tests.keys()
    for job in tiny_plan.trains.values():
        cfg, (schedule, _) = _schedule(job)
        assert schedule.steps == TINY_STEPS, job.job_id
        assert cfg.train.epochs == TINY.epochs and cfg.train.eval_every_epochs == 1, job.job_id
        # The batch that counts epochs: 8, or 2 images per batch-norm shard (SC's 8 shards: 16),
        # splitting into its shards and GPUs; the LRs scaled by the square root of its ratio.
        epoch_batch = cfg.train.epoch_batch_size or cfg.train.batch_size
        assert epoch_batch == max(TINY.batch_size, 2 * cfg.train.batch_norm_shards), job.job_id
        assert cfg.data.train_subset == TINY.iterations_per_epoch * epoch_batch
        assert epoch_batch % cfg.train.batch_norm_shards == 0 and epoch_batch % max(job.gpus, 1) == 0, job.job_id
        real_cfg = RunConfig.model_validate(real.trains[job.job_id].config)
        lr_scale = (epoch_batch / (real_cfg.train.epoch_batch_size or real_cfg.train.batch_size)) ** 0.5
        for key in ("base_lr", "max_lr"):
            if key in real_cfg.schedule.params:
                assert cfg.schedule.params[key] == pytest.approx(real_cfg.schedule.params[key] * lr_scale,
                                                                 rel=1e-15), (job.job_id, key)
        assert job.out_dir.parts[:2] == ("results", "paper-tiny")
        if cfg.train.caffe_test is not None:
            assert cfg.train.caffe_test.test_iter == 2 and cfg.train.caffe_test.batch <= epoch_batch
    for job in tiny_plan.range_tests.values():
        cfg = RangeTestConfig.model_validate(job.config)
        real_cfg = RangeTestConfig.model_validate(real.range_tests[job.job_id].config)
        assert (cfg.range_test.iterations, cfg.range_test.eval_every, cfg.range_test.eval_subset) == (24, 1, 32)
        lr_scale = (cfg.train.batch_size / real_cfg.train.batch_size) ** 0.5
        assert cfg.range_test.end_lr == pytest.approx(real_cfg.range_test.end_lr * lr_scale, rel=1e-15)
        assert cfg.range_test.momentum_range == real_cfg.range_test.momentum_range, job.job_id


def test_tiny_jobs_run_one_thread_each(paper, tiny_plan):
    # train_threads 4 for the real runs (a GPU node's cores shared by 4 jobs); tiny jobs take one
    # core each, so a 2-core machine runs two at a time (the rules' threads: PLAN.job_threads).
    assert (expand(paper, str(PAPER)).job_threads, tiny_plan.job_threads) == (4, 1)


def test_part1_runs_keep_their_protocol_at_tiny_scale(tiny_plan):
    # x4.sh's per-GPU batch offsets (+3, +2, +1, +0 on 4 GPUs) on the tiny TBS 8, and one
    # schedule for all four runs counted in the nominal batch (C2).
    runs = [tiny_plan.trains[f"part1_t2_cifar10_wide32/onecycle_50ep/seed{seed}"] for seed in range(4)]
    cfgs = [RunConfig.model_validate(job.config) for job in runs]
    assert [cfg.train.batch_size for cfg in cfgs] == [20, 16, 12, 8]  # 2 per shard of 4: 8
    assert {cfg.train.epoch_batch_size for cfg in cfgs} == {8}
    assert [cfg.model.init for cfg in cfgs] == ["xavier", "prototxt", "xavier", "prototxt"]


def test_schedules_are_the_real_ones_compressed(tiny_plan):
    def params(job_id):
        return _schedule(tiny_plan.trains[job_id])[1][1]

    # Part 1 "Step": drops at 1/2, 3/4, 7/8, 29/32, 15/16 of the run: floor(8 x fraction) =
    # 4, 6, 7, 7, 7, kept strictly increasing (the last two drops fall beyond the 8 steps).
    assert params("part1_t2_cifar10_wide32/step_100ep/seed0")["stepvalue"] == [4, 6, 7, 8, 9]
    # SC PC-LR: x0.1 at 50k and 70k of 80k iterations -> 5 and 7 of 8.
    assert params("sc_t1_resnet56/pc_50k/seed0")["stepvalue"] == [5, 7]
    # SC CLR: one cycle, stepsize 5k of 10k -> 4 of 8; 30k images: 4995 of 9990 -> 4.
    assert params("sc_t1_resnet56/clr_50k/seed0")["stepsize"] == params("sc_t1_resnet56/clr_30k/seed0")["stepsize"] == 4
    # 1cycle "0.1-1/23" over 50 epochs: floor(23/50 x 8) = 3; the Caffe variant's 2 x 3 <= 8.
    assert params("part1_t2_cifar10_wide32/onecycle_50ep/seed3")["stepsize"] == 3
    # Constant LR with cyclical momentum (variant paper, needs 2 x stepsize < steps): 11/25 x 8.
    assert params("part1_t1_cifar3_cm/const_cm_down/seed0")["stepsize"] == 3
    # The as-logged momentum stepsize, 98.2 of 20 epochs: floor(98.2 / 20 x 8) = 39.
    assert params("imagenette_inception_resnet_v2/onecycle_20ep_as_logged/seed0")["momentum_stepsize"] == 39


# The real runs' iterations, by hand: CLR batch 100 on 50k images = 500 it/epoch (140 and 84
# epochs); MNIST TBS 512 = 117 it/epoch (85 epochs).
REAL_STEPS = {"clr_t1_cifar10/exp_70k/seed0": 140 * 500, "clr_t1_cifar10/exp_range_42k/seed0": 84 * 500,
              "part1_t2_mnist_lenet/inv_85ep/seed0": 85 * 117}


@pytest.mark.parametrize("job_id", sorted(REAL_STEPS))
def test_per_iteration_rates_are_compressed_with_the_run(paper, tiny_plan, job_id):
    # Iteration `it` of the tiny run stands for iteration it x S / T of the real one: Caffe's exp
    # (gamma**it), exp_range (gamma**it on the bounds) and inv ((1 + gamma*it)**-power) reach
    # the same LR at the end of both. Float rounding of gamma**(S/T): 1e-9 relative.
    real_job = expand(paper, str(PAPER)).trains[job_id].config
    real = real_job["schedule"]["params"]
    tiny_cfg, (schedule, params) = _schedule(tiny_plan.trains[job_id])
    stretch = REAL_STEPS[job_id] / TINY_STEPS
    base_lr = real["base_lr"] * (tiny_cfg.train.batch_size / real_job["train"]["batch_size"]) ** 0.5
    if tiny_cfg.schedule.policy == "inv":
        assert params["gamma"] == pytest.approx(real["gamma"] * stretch, rel=1e-12)
        for it in range(schedule.steps):
            assert schedule.lr(it) == pytest.approx(
                base_lr * (1 + real["gamma"] * it * stretch) ** -real["power"], rel=1e-9)
    else:
        assert params["gamma"] ** TINY_STEPS == pytest.approx(real["gamma"] ** REAL_STEPS[job_id], rel=1e-9)
    if tiny_cfg.schedule.policy == "exp":
        assert schedule.lr(TINY_STEPS - 1) == pytest.approx(base_lr * real["gamma"] ** (
            (TINY_STEPS - 1) * stretch), rel=1e-9)


@pytest.mark.parametrize("job_id, gamma_per_epoch, epochs", [
    ("clr_t1_imagenette_alexnet/exp_60ep/seed0", 0.97529, 60),
    ("clr_t1_imagenette_googlenet/exp_range_24ep/seed0", 0.81858, 24)])
def test_a_rate_per_epoch_keeps_the_runs_whole_decay(tiny_plan, job_id, gamma_per_epoch, epochs):
    # CLR's exp on Imagenette decays by gamma_per_epoch each of its epochs: the tiny run's
    # TINY.epochs fall as far as the real run's (float rounding of the power: 1e-12 relative).
    cfg, (schedule, params) = _schedule(tiny_plan.trains[job_id])
    assert cfg.schedule.params["gamma_per_epoch"] ** TINY.epochs == pytest.approx(gamma_per_epoch ** epochs,
                                                                                   rel=1e-12)
    assert params["gamma"] ** TINY_STEPS == pytest.approx(gamma_per_epoch ** epochs, rel=1e-12)


def test_the_real_config_is_checked_before_it_is_scaled(paper):
    # A stepsize too long for the real run must fail at tiny scale too: tiny runs check the config.
    broken = deep_merge(paper, {"scale": "tiny", "experiments": {"part1_t2_mnist_lenet": {"groups": {
        "onecycle_12ep": {"schedule": {"params": {"stepsize_epochs": 7}}}}}}})
    with pytest.raises(ConfigError, match="onecycle_12ep: schedule: smith_1cycle: stepsize = 819 is too long"):
        expand(broken, str(PAPER))


def test_iteration_keys_need_a_known_epoch_length(paper):
    # Imagenette's size is known only from its folder: its schedules are given in epochs.
    bad = copy.deepcopy({**paper, "scale": "tiny"})
    params = bad["experiments"]["imagenette_resnet50"]["groups"]["step_130ep"]["schedule"]["params"]
    assert params.pop("stepsize_epochs") == 2
    params["stepsize"] = 146
    with pytest.raises(ConfigError, match="step_130ep: tiny scale: schedule.params stepsize count iterations, "
                                          "but imagefolder's epoch length is known only from its folder"):
        expand(bad, str(PAPER))


def test_batches_split_into_shards_and_gpus():
    from onecycle.experiments.scale import tiny_job

    raw = {"data": {"dataset": "cifar10"}, "train": {"batch_size": 1000, "batch_norm_shards": 4, "epochs": 4},
           "schedule": {"policy": "fixed", "params": {"base_lr": 0.1}}}
    assert tiny_job(raw, split_into=1, where="x")["train"]["batch_size"] == 8
    # Two images in each batch-norm shard: 8 shards take 16.
    tiny = tiny_job(deep_merge(raw, {"train": {"batch_norm_shards": 8}}), split_into=1, where="x")
    assert tiny["train"]["batch_size"] == 16 and tiny["data"]["train_subset"] == 4 * 16
    assert tiny["schedule"]["params"]["base_lr"] == pytest.approx(0.1 * (16 / 1000) ** 0.5, rel=1e-15)
    assert tiny_job(deep_merge(raw, {"train": {"batch_norm_shards": 1, "batch_size": 3}}), split_into=2,
                    where="x")["train"]["batch_size"] == 4
    # 3 shards and 4 GPUs: the smallest batch both divide, lcm(3, 4) = 12, holding 2 x 3.
    assert tiny_job(deep_merge(raw, {"train": {"batch_norm_shards": 3}}), split_into=4, where="x")["train"][
        "batch_size"] == 12
