"""configs/paper.yaml, the Snakefile's default config: it expands, covers every published MNIST
and CIFAR row and Part 1's and CLR's ImageNet protocols on Imagenette, resolves to the published
settings (docs/paper_reference.md), costs at most TARGET_DEVICE_HOURS, and builds a DAG;
configs/paper_imagenet.yaml adds the full-ILSVRC rows, so that together every published row runs.

Job configs (`Job.config`) omit default values, so settings are read from the validated models
(RunConfig / RangeTestConfig), never from the raw dicts."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import HANG_GUARD_S, REPO
from onecycle.data.caffe_batches import CaffeCachedBatches
from onecycle.experiments.config import RangeTestConfig, RunConfig
from onecycle.data import DATASETS, IMAGENETTE_WNIDS
from onecycle.experiments import cost, rates
from onecycle.experiments.expansion import expand
from onecycle.experiments.loading import load_workflow_file
from onecycle.models import build_model
from onecycle.training.optim import build_optimizer
from onecycle.report import claims
from onecycle.report.published import load_published
from onecycle.range_test import lr_range_test
from onecycle.data.assembly import load_data
from onecycle.training.schedule_setup import build_schedule, schedule_iterations_per_epoch

PAPER = REPO / "configs" / "paper.yaml"
PUBLISHED = REPO / "configs" / "reference" / "published.yaml"
SEEDS = 4  # Part 1's 4 runs per setting (docs/paper_reference.md D6)
# Imagenette v2 training images (fastai/imagenette); `imagefolder` has no fixed train_size.
IMAGENETTE_TRAIN = 9469
# Caffe's test_interval in SC's and Part 1's solvers (docs/paper_reference.md C1, C2).
CAFFE_TEST_INTERVAL = 100

# Groups per experiment; each group runs once per seed.
GROUPS = {
    "part1_t2_cifar10_wide32": 7,
    "part1_t2_cifar10_densenet40": 7,
    "part1_t2_mnist_lenet": 7,
    "part1_t2_cifar100_resnet56": 7,
    "sc_t1_resnet56": 10,
    "sc_t1_max_lr_sweep": 5,
    "sc_t1_stepsize_maf_sweep": 2,
    "sc_batch_size_sweep": 3,
    "part1_t1_cifar3_cm": 10,
    "part1_t1_resnet56_cm": 10,
    "clr_t1_cifar10": 5,
    "clr_t1_imagenette_alexnet": 5,
    "clr_t1_imagenette_googlenet": 4,
    "imagenette_resnet50": 3,
    "imagenette_inception_resnet_v2": 4,
    # Range-test experiments: one curve each, plus one short group trained from its bounds.
    "part1_fig14a_lenet_m0.9": 1,
    "part1_fig14a_lenet_cm0.95-0.8": 1,
    "part1_fig14b_lenet_wd1e-4": 1,
    "part1_fig14b_lenet_wd5e-4": 1,
    "part1_fig14b_lenet_wd1e-3": 1,
    "part1_fig14b_lenet_wd3e-3": 1,
    "part1_fig4a_cifar3_wd1e-4": 1,
    "part1_fig4a_cifar3_wd4e-3": 1,
    "part1_fig4a_cifar3_wd1e-2": 1,
    "part1_fig13a_wide32_wd1e-3": 1,
    "part1_fig13a_wide32_wd1e-4": 1,
    "part1_fig13a_wide32_wd1e-5": 1,
    "part1_fig15a_c100_resnet56_wd1e-4": 1,
    "part1_fig15a_c100_resnet56_wd1e-5": 1,
    "part1_fig15a_c100_resnet56_wd3e-4": 1,
    "sc_fig2b_resnet56_5k": 1,
    "sc_fig2b_resnet56_20k": 1,
    "sc_fig2b_resnet56_100k": 1,
    "part1_fig7a_cifar3_mom0p9": 1,
    "part1_fig7a_cifar3_mom0p7": 1,
    "part1_fig7a_cifar3_mom0p99": 1,
    "part1_fig7b_cifar3_momentum_range_test": 4,   # plus the four short fixed-momentum runs
    "part1_fig13d_densenet40_tbs256": 1,
    "part1_fig13d_densenet40_tbs512": 1,
}
RANGE_TEST_EXPERIMENTS = {name for name in GROUPS if "_fig" in name}
TRAIN_JOBS = SEEDS * sum(GROUPS.values())  # 464
PAPER_IMAGENET = REPO / "configs" / "paper_imagenet.yaml"
# The opt-in config's full-ILSVRC experiments (CLR Table 1's ImageNet rows) and their groups.
ILSVRC_GROUPS = {"clr_t1_imagenet_alexnet": 5, "clr_t1_imagenet_googlenet": 4}
# The budget for the default config (issue 29): ~300 device-hours at the plan's stated
# default throughput (onecycle.experiments.rates.DEVICE_TFLOPS), so a 4-GPU box finishes it in days.
TARGET_DEVICE_HOURS = 300


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(PAPER.read_text())


@pytest.fixture(scope="module")
def plan(raw):
    return expand(raw, str(PAPER))


@pytest.fixture(scope="module")
def plan_imagenet():
    return expand(load_workflow_file(PAPER_IMAGENET), str(PAPER_IMAGENET))


@pytest.fixture(scope="module")
def published_ids():
    return set(load_published(PUBLISHED)["id"])


def _train_size(cfg):
    return cfg.data.train_subset or DATASETS[cfg.data.dataset].train_size or IMAGENETTE_TRAIN


def _run(plan, experiment, group, seed=0):
    """The job's validated RunConfig, its iterations per epoch as its epochs count them (of
    train.epoch_batch_size where set), and its schedule."""
    job = plan.trains[f"{experiment}/{group}/seed{seed}"]
    cfg = RunConfig.model_validate(job.config)
    iters_per_epoch = schedule_iterations_per_epoch(cfg.train, _train_size(cfg))
    bounds = {"base_lr": 0.1, "max_lr": 1.0} if job.needs_bounds else None
    schedule, params = build_schedule(cfg, iters_per_epoch, bounds)
    return cfg, iters_per_epoch, schedule, params


def test_top_level_settings(plan):
    wf = plan.workflow
    assert str(plan.results_dir) == "results/paper"
    assert wf.seeds == [0, 1, 2, 3]
    assert wf.gpus_per_job == 1 and wf.train_threads == 4
    assert wf.tolerance_pp > 0


def test_no_number_was_read_as_a_string(raw):
    # YAML 1.1 reads `1e-4` as a string; numbers must be written `1.0e-4`.
    numeric = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}[{i}]")
        elif isinstance(node, str) and numeric.match(node):
            yield path

    assert list(walk(raw, "")) == []


def test_job_counts_per_experiment(plan):
    assert set(plan.workflow.experiments) == set(GROUPS)
    for name, groups in GROUPS.items():
        assert len(plan.workflow.experiments[name].groups) == groups, name
        assert len(plan.experiment_trains(name)) == groups * SEEDS, name
    assert len(plan.trains) == TRAIN_JOBS == 464
    # One range test per range-test experiment (seed 0), none elsewhere.
    assert {job.experiment for job in plan.range_tests.values()} == RANGE_TEST_EXPERIMENTS
    assert len(plan.range_tests) == len(RANGE_TEST_EXPERIMENTS) == 24
    # Their groups train from the range test's bounds; the momentum range test (Fig 7b) has no LR
    # bounds, so its short runs use fixed settings.
    for name in RANGE_TEST_EXPERIMENTS - {"part1_fig7b_cifar3_momentum_range_test"}:
        assert all(job.needs_bounds for job in plan.experiment_trains(name)), name
    assert not any(job.needs_bounds for job in plan.experiment_trains("part1_fig7b_cifar3_momentum_range_test"))


def _mapped_rows(plan):
    return [row for exp in plan.workflow.experiments.values() for row in exp.published.values()]


def test_every_published_mnist_and_cifar_row_is_mapped_by_default(plan, published_ids):
    mapped = _mapped_rows(plan)
    assert set(mapped) <= published_ids, set(mapped) - published_ids
    assert len(mapped) == len(set(mapped)), "a published row is mapped twice"
    # Every published row but the full-ILSVRC ones, which the opt-in config adds.
    assert published_ids - set(mapped) == {row for row in published_ids if row.startswith("clr_t1_imagenet_")}
    assert len(mapped) == 80 - 9


def test_the_opt_in_config_is_the_default_plus_every_ilsvrc_row(plan, plan_imagenet, published_ids):
    assert plan_imagenet.workflow.experiments.keys() == plan.workflow.experiments.keys() | ILSVRC_GROUPS.keys()
    for name in plan.workflow.experiments:  # the included experiments, unchanged
        assert plan_imagenet.workflow.experiments[name] == plan.workflow.experiments[name], name
    assert (plan_imagenet.results_dir, plan_imagenet.workflow.seeds) == (plan.results_dir, plan.workflow.seeds)
    assert sorted(_mapped_rows(plan_imagenet)) == sorted(published_ids) and len(published_ids) == 80
    for name, groups in ILSVRC_GROUPS.items():
        assert len(plan_imagenet.experiment_trains(name)) == groups * SEEDS, name


def test_the_default_plan_fits_the_budget_and_the_ilsvrc_rows_are_most_of_the_opt_in(plan, plan_imagenet):
    # The stated default rate for every family, not this machine's measured one (results/gpu_check).
    stated = rates.uniform(rates.DEVICE_TFLOPS["gpu"], "the stated default")
    hours = {name: cost.device_hours(costs, stated) for name, costs in cost.experiment_costs(plan_imagenet).items()}
    default = sum(hours[name] for name in plan.workflow.experiments)
    assert default <= TARGET_DEVICE_HOURS
    # The full-ILSVRC rows are what the opt-in adds, and they cost more than the rest together.
    assert sum(hours[name] for name in ILSVRC_GROUPS) > default


def test_every_schedule_builds_at_its_real_length(plan):
    for job in plan.trains.values():
        if job.seed == 0:
            _, _, schedule, _ = _run(plan, job.experiment, job.group)
            assert schedule.steps > 1, job.job_id


def test_mnist_1cycle_12_epochs(plan):
    # A2: MNIST LeNet "0.01-0.1/5", CM 0.95-0.8, WD 5e-4, 12 epochs, TBS 512.
    cfg, ipe, schedule, params = _run(plan, "part1_t2_mnist_lenet", "onecycle_12ep")
    assert cfg.schedule.policy == "smith_1cycle"
    assert cfg.schedule.params["stepsize_epochs"] == 5
    assert ipe == 60000 // 512 == 117 and schedule.steps == 12 * 117
    assert params == {"variant": "caffe", "base_lr": 0.01, "max_lr": 0.1, "stepsize": 5 * 117,
                      "momentum": 0.95, "min_momentum": 0.8, "momentum_second_cycle": True}
    assert cfg.train.batch_size == 512 and cfg.optim.weight_decay == 5.0e-4
    assert cfg.optim.update_rule == "caffe"
    assert schedule.lr(0) == pytest.approx(0.01) and schedule.lr(585) == pytest.approx(0.1)
    assert schedule.momentum(0) == pytest.approx(0.95) and schedule.momentum(585) == pytest.approx(0.8)
    assert schedule.lr(schedule.steps - 1) == pytest.approx(0.01 / 1000)  # Caffe tail (D3)


def test_mnist_inv_baseline(plan):
    # A2 remarks / S12: Caffe lenet_solver, inv gamma 1e-4 power 0.75, momentum 0.9.
    cfg, _, schedule, params = _run(plan, "part1_t2_mnist_lenet", "inv_85ep")
    assert params == {"base_lr": 0.01, "gamma": 1.0e-4, "power": 0.75}
    assert cfg.optim.momentum == 0.9 and cfg.optim.algorithm == "sgd"
    assert schedule.steps == 85 * 117


def test_sc_clr_50k(plan):
    # A3 / C1 clrsolver: triangular 0.1-3, stepsize 5k, 10k it, TBS 1000, BN maf 0.95.
    cfg, ipe, schedule, params = _run(plan, "sc_t1_resnet56", "clr_50k")
    assert ipe == 50000 // 1000 == 50 and cfg.train.epochs == 200 and schedule.steps == 10000
    assert cfg.schedule.policy == "triangular"
    assert params == {"base_lr": 0.1, "max_lr": 3.0, "stepsize": 5000}
    assert schedule.lr(0) == pytest.approx(0.1) and schedule.lr(5000) == pytest.approx(3.0)
    assert cfg.model.arch == "resnet56" and cfg.model.options == {"moving_average_fraction": 0.95}
    assert (cfg.optim.algorithm, cfg.optim.update_rule) == ("sgd", "caffe")
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1.0e-4
    assert (cfg.data.augment, cfg.data.normalize) == ("mirror", "caffe_mean_image")
    assert (cfg.optim.multipliers, cfg.train.batch_norm_shards) == ("prototxt", 8)  # 8 GPUs x 125 (A3)


def test_sc_piecewise_constant_50k(plan):
    # A3 / C1 solver.prototxt: multistep 0.35, x0.1 at 50k and 70k of 80k, BN maf 0.999.
    cfg, _, schedule, params = _run(plan, "sc_t1_resnet56", "pc_50k")
    assert params == {"base_lr": 0.35, "gamma": 0.1, "stepvalue": [50000, 70000]}
    assert schedule.steps == 80000
    assert schedule.lr(49999) == pytest.approx(0.35) and schedule.lr(50000) == pytest.approx(0.035)
    assert schedule.lr(79999) == pytest.approx(0.0035)
    assert cfg.model.options == {"moving_average_fraction": 0.999}


@pytest.mark.parametrize("samples", [40000, 30000, 20000, 10000])
def test_sc_limited_data_keeps_the_iteration_budget(plan, samples):
    k = samples // 1000
    cfg, ipe, clr, params = _run(plan, "sc_t1_resnet56", f"clr_{k}k")
    assert cfg.data.train_subset == samples and ipe == samples // 1000
    # One triangular cycle, ending at base_lr, within 0.1 % of 10k iterations.
    assert clr.steps in (2 * params["stepsize"], 2 * params["stepsize"] + 1)
    assert abs(clr.steps - 10000) <= 10
    cfg, _, pc, params = _run(plan, "sc_t1_resnet56", f"pc_{k}k")
    assert params["stepvalue"] == [50000, 70000] and 80000 <= pc.steps <= 80010
    assert cfg.model.options == {"moving_average_fraction": 0.999}


# Part 1's run 4 of every setting (x4.sh): per-GPU batch BS + 0, i.e. the printed TBS.
PART1_TBS_SEED = 3


def test_part1_step_baseline_fractions(plan):
    # A2 remarks (V-log): multistep gamma 0.316 at 1/2, 3/4, 7/8, 7/8+1/32, 15/16 of training.
    cfg, ipe, schedule, params = _run(plan, "part1_t2_cifar10_wide32", "step_100ep", seed=PART1_TBS_SEED)
    assert ipe == 97 and schedule.steps == 9700
    assert params["base_lr"] == 0.1 and params["gamma"] == 0.316
    for value, fraction in zip(params["stepvalue"], (1 / 2, 3 / 4, 7 / 8, 29 / 32, 15 / 16), strict=True):
        assert abs(value - fraction * schedule.steps) <= 1
    assert (cfg.optim.algorithm, cfg.optim.update_rule, cfg.optim.momentum) == ("nesterov", "caffe", 0.9)


def test_part1_1cycle_rows(plan):
    # A2: WRN "0.1-1/23" 50 epochs, CM 0.95-0.85; DenseNet "0.1-4/22" CM 0.9-0.85 WD 1e-6;
    # C100 "0.09-0.9/45" 100 epochs.
    _, _, _, wrn = _run(plan, "part1_t2_cifar10_wide32", "onecycle_50ep", seed=PART1_TBS_SEED)
    assert (wrn["base_lr"], wrn["max_lr"], wrn["stepsize"]) == (0.1, 1.0, 23 * 97)
    assert (wrn["momentum"], wrn["min_momentum"]) == (0.95, 0.85)
    cfg, _, _, den = _run(plan, "part1_t2_cifar10_densenet40", "onecycle_50ep", seed=PART1_TBS_SEED)
    assert (den["base_lr"], den["max_lr"], den["stepsize"]) == (0.1, 4.0, 22 * 97)
    assert (den["momentum"], den["min_momentum"]) == (0.9, 0.85) and cfg.optim.weight_decay == 1.0e-6
    _, _, _, c100 = _run(plan, "part1_t2_cifar100_resnet56", "onecycle_100ep", seed=PART1_TBS_SEED)
    assert (c100["base_lr"], c100["max_lr"], c100["stepsize"]) == (0.09, 0.9, 45 * 97)
    for name in ("part1_t2_cifar10_wide32", "part1_t2_cifar10_densenet40", "part1_t2_cifar100_resnet56",
                 "part1_t1_cifar3_cm", "part1_t1_resnet56_cm"):
        for job in plan.experiment_trains(name):
            cfg = RunConfig.model_validate(job.config)
            assert (cfg.optim.algorithm, cfg.optim.update_rule) == ("nesterov", "caffe"), job.job_id
            assert cfg.optim.multipliers == "prototxt", job.job_id
            # cifar3.prototxt's data layers have a mean file only; the other nets mirror (D6).
            augment = "none" if name == "part1_t1_cifar3_cm" else "mirror"
            assert (cfg.data.augment, cfg.data.normalize) == (augment, "caffe_mean_image"), job.job_id
            # x4.sh: per-GPU batch BS+3, +2, +1, +0 on 4 GPUs for the 4 seeds (C2, D6).
            tbs = 128 if name == "part1_t1_cifar3_cm" else 512
            assert cfg.train.batch_size == tbs + 4 * (3 - job.seed), job.job_id
            if name != "part1_t1_cifar3_cm":  # 3-layer: no batch norm
                assert cfg.train.batch_norm_shards == 4, job.job_id


def test_part1_table1_constant_lr_rows_are_constant(plan):
    # A1: "0.1 (const)" rows, as S3 states them (the ambiguity is documented in the config).
    for group in ("const_cm_down", "const_cm_up", "const_m85", "const_m90", "const_m95"):
        _, _, schedule, _ = _run(plan, "part1_t1_resnet56_cm", group, seed=PART1_TBS_SEED)
        assert {schedule.lr(it) for it in range(0, schedule.steps, 97)} == {0.1}, group
    _, _, schedule, _ = _run(plan, "part1_t1_resnet56_cm", "const_cm_down", seed=PART1_TBS_SEED)
    assert schedule.momentum(0) == pytest.approx(0.95) and schedule.momentum(41 * 97) == pytest.approx(0.85)
    _, _, schedule, _ = _run(plan, "part1_t1_cifar3_cm", "cyclic_cm_up", seed=PART1_TBS_SEED)
    assert schedule.momentum(0) == pytest.approx(0.90) and schedule.momentum(11 * 390) == pytest.approx(1.0)


def test_clr_table1_settings(plan):
    # A5 (T-1): 0.001-0.006, stepsize 2000, batch 100 -> 500 it/epoch.
    _, ipe, schedule, params = _run(plan, "clr_t1_cifar10", "triangular2_25k")
    assert ipe == 500 and schedule.steps == 25000
    assert params == {"base_lr": 0.001, "max_lr": 0.006, "stepsize": 2000}
    _, _, schedule, _ = _run(plan, "clr_t1_cifar10", "exp_range_42k")
    assert schedule.steps == 42000
    _, _, schedule, _ = _run(plan, "clr_t1_cifar10", "fixed_70k")
    assert schedule.steps == 70000 and schedule.lr(0) == pytest.approx(0.001)
    # "decay" approximation: max_lr at the start, base_lr from stepsize on.
    _, _, schedule, _ = _run(plan, "clr_t1_cifar10", "decay_25k")
    assert schedule.lr(0) == pytest.approx(0.006)
    assert schedule.lr(2000) == pytest.approx(0.001, rel=1e-6) == schedule.lr(24999)


def test_imagenette_protocol_scaled_in_epochs(plan):
    exp = plan.workflow.experiments["imagenette_resnet50"]
    assert exp.published == {}
    cfg, ipe, schedule, params = _run(plan, "imagenette_resnet50", "onecycle_20ep")
    assert ipe == IMAGENETTE_TRAIN // 128 and cfg.train.epochs == 20
    assert (params["base_lr"], params["max_lr"]) == (0.05, 1.0)
    assert params["stepsize"] / schedule.steps == pytest.approx(0.475, abs=0.002)  # 95k of 200k (C2)
    assert cfg.optim.weight_decay == 3.0e-6
    cfg, _, _, params = _run(plan, "imagenette_resnet50", "step_130ep")
    assert params == {"base_lr": 0.1, "gamma": 0.94, "stepsize": 2 * ipe}  # 20k it ~ 2.0 ImageNet epochs
    assert cfg.optim.weight_decay == 1.0e-4
    for job in plan.experiment_trains("imagenette_resnet50"):
        # The prepare_data download's root and Imagenette's 10 classes (both defaults), Caffe's
        # data layer as resnet50.prototxt (crop 230, mirror, mean file; G6).
        assert job.config["data"] == {"dataset": "imagefolder", "normalize": "caffe_mean_image",
                                      "augment": "mirror", "crop_size": 230, "order": "caffe_lmdb"}, job.job_id
        cfg = RunConfig.model_validate(job.config)
        assert (cfg.data.root, cfg.data.classes) == (None, None)
        assert (cfg.train.batch_size, cfg.train.eval_batch_size) == (128, 250)
        assert (cfg.model.arch, cfg.model.init) == ("resnet50", "xavier")


def _fake_imagenette(root, train_per_class, val_per_class):
    from PIL import Image

    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, wnid in enumerate(IMAGENETTE_WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (48, 40), (25 * label, 7 * i, 128)).save(folder / f"{wnid}_{i}.JPEG")


def test_the_imagenet_folders_caches_are_jobs_of_their_own(plan, plan_imagenet):
    # One per folder the Caffe-layer jobs read (G6), squashed and averaged before any of them runs.
    default_split = [{"root": None, "classes": None}]
    assert plan.caffe_caches("imagefolder") == plan_imagenet.caffe_caches("imagenet") == default_split
    assert plan.caffe_caches("imagenet") == plan.caffe_caches("cifar10") == []
    job = plan.trains["imagenette_resnet50/onecycle_20ep/seed0"]
    assert plan.data_inputs(job) == {"data": plan.data_record("imagefolder"),
                                     "caffe_cache": plan.caffe_cache_record("imagefolder")}
    cifar = next(job for job in plan.trains.values() if job.dataset == "cifar10")
    assert plan.data_inputs(cifar) == {"data": plan.data_record("cifar10")}


def test_imagenette_config_loads_through_the_caffe_image_cache(plan, tmp_path, monkeypatch):
    # The experiment's own job config, on a stand-in folder of Imagenette's layout (only `root`
    # changed): load_data squashes the images once into the cache and forms batches from it with
    # Caffe's data layer as resnet50.prototxt sets it (crop 230, mirror, mean file) and
    # Imagenette's 10 classes, and the model gets 10 outputs. No training, no download.
    monkeypatch.delenv("ONECYCLE_MEAN_CACHE", raising=False)
    _fake_imagenette(tmp_path, train_per_class=13, val_per_class=2)
    job = plan.trains["imagenette_resnet50/onecycle_20ep/seed0"]
    raw = {**job.config, "data": {**job.config["data"], "root": str(tmp_path)}}
    cfg = RunConfig.model_validate(raw)
    bundle = load_data(cfg, torch.device("cpu"))
    train, test = bundle.train, bundle.test
    assert isinstance(train, CaffeCachedBatches) and isinstance(test, CaffeCachedBatches)
    assert (bundle.num_classes, bundle.in_channels) == (10, 3)
    assert train.dataset.classes == IMAGENETTE_WNIDS
    assert (train.crop_size, train.train, train.mirror) == (230, True, True)
    assert (test.crop_size, test.train, test.mirror) == (230, False, False)
    assert (len(train.cache), len(test.cache)) == (130, 20)  # every image squashed once, per split
    # The mean of the 130 training images (each one colour, squashed), not of the validation
    # ones (JPEG moves a flat colour by up to a level or so).
    colours = torch.tensor([[25.0 * label, 7.0 * i, 128.0] for label in range(10) for i in range(13)])
    assert torch.allclose(train.mean_image, colours.mean(0).view(3, 1, 1).expand(3, 256, 256), atol=1.0)
    assert len(train) == 130 // 128 == 1  # drop_last, as 9469 // 128 = 73 on Imagenette
    images, labels = next(iter(test.epoch(0)))
    assert images.shape == (20, 3, 230, 230) and sorted(set(labels.tolist())) == list(range(10))
    model = build_model(cfg.model.arch, bundle.num_classes, bundle.in_channels, init=cfg.model.init,
                        **cfg.model.options)
    assert model.fc.out_features == 10
    assert model(images[:2]).shape == (2, 10)


def test_evaluation_spacing_follows_caffes_test_interval(plan):
    # Header "Evaluation spacing": Caffe tested every 100 it (C1, C2); every run evaluates every
    # max(1, floor(100 / iterations per epoch)) epochs, i.e. never sparser than Caffe, and never
    # denser than needed, except that an epoch of 51-100 it is evaluated every epoch.
    for job in plan.trains.values():
        if job.seed == 0:
            cfg, ipe, _, _ = _run(plan, job.experiment, job.group)
            every = cfg.train.eval_every_epochs
            assert every == max(1, CAFFE_TEST_INTERVAL // ipe), (job.job_id, ipe, every)
            assert every * ipe <= max(CAFFE_TEST_INTERVAL, ipe), job.job_id
    # SC Table 1: 100 it at 50k and on the 10k subset (8 000 epochs -> 800 evaluations, the
    # last after the final epoch), 90 it on 30k (2 667 = 3 x 889 epochs).
    expected = {"clr_50k": (50, 2), "pc_50k": (50, 2), "pc_40k": (40, 2), "pc_30k": (30, 3),
                "clr_30k": (30, 3), "pc_20k": (20, 5), "pc_10k": (10, 10), "clr_10k": (10, 10)}
    for group, (ipe_expected, every_expected) in expected.items():
        cfg, ipe, _, _ = _run(plan, "sc_t1_resnet56", group)
        assert (ipe, cfg.train.eval_every_epochs) == (ipe_expected, every_expected), group
    cfg, _, schedule, _ = _run(plan, "sc_t1_resnet56", "pc_10k")
    evaluated = [e for e in range(1, cfg.train.epochs + 1)
                 if e % cfg.train.eval_every_epochs == 0 or e == cfg.train.epochs]
    assert len(evaluated) == 800 and evaluated[-1] * 10 == schedule.steps
    cfg, ipe, _, _ = _run(plan, "sc_t1_resnet56", "pc_30k")
    assert cfg.train.epochs % cfg.train.eval_every_epochs == 0 and cfg.train.epochs // 3 == 889
    # The batch-size sweep: TBS 1536 every 3 epochs (96 it); 512 and 256 every epoch.
    for group, every_expected in (("tbs1536", 3), ("tbs512", 1), ("tbs256", 1)):
        cfg, _, _, _ = _run(plan, "sc_batch_size_sweep", group)
        assert cfg.train.eval_every_epochs == every_expected, group


def _range_test(plan, experiment):
    """The experiment's validated range-test config (seed 0), defaults filled in."""
    return RangeTestConfig.model_validate(plan.range_tests[f"{experiment}/seed0"].config)


def test_range_tests(plan):
    spec = _range_test(plan, "sc_fig2b_resnet56_20k").range_test
    assert (spec.ramp, spec.start_lr, spec.end_lr, spec.iterations) == ("linear", 0.0, 3.0, 20000)
    assert {_range_test(plan, f"sc_fig2b_resnet56_{n}").range_test.iterations
            for n in ("5k", "20k", "100k")} == {5000, 20000, 100000}
    wds = {_range_test(plan, job.experiment).optim.weight_decay for job in plan.range_tests.values()
           if job.experiment.startswith("part1_fig14b")}
    assert wds == {1.0e-4, 5.0e-4, 1.0e-3, 3.0e-3}
    spec = _range_test(plan, "part1_fig13a_wide32_wd1e-4").range_test
    assert (spec.start_lr, spec.end_lr, spec.iterations) == (0.1, 1.0, 9765)


# "CM 0.95-0.8" in an experiment's description or `replicates`: cyclical momentum, max-min.
CM = re.compile(r"\bCM (0\.\d+)-(0\.\d+)\b")


def test_range_test_momentum_ramps(plan):
    # B1: Part 1 Fig 13a, 14a (CM curve), 14b and 15a ramp the momentum max -> min during the
    # test (clrsolver: momentum stepsize = max_iter, C2); Fig 14a's other curve, Fig 4a and SC
    # Fig 2b hold it constant.
    ramped = {}
    for job in plan.range_tests.values():
        exp = plan.workflow.experiments[job.experiment]
        cfg = _range_test(plan, job.experiment)
        if cfg.range_test.start_lr == cfg.range_test.end_lr:
            continue  # the momentum range test, pinned in its own test below
        match = CM.search(f"{exp.description} {exp.replicates}")
        expected = [float(match[1]), float(match[2])] if match else None
        assert cfg.range_test.momentum_range == expected, job.experiment
        if expected:
            ramped[job.experiment] = expected
            # The ramp starts where optim.momentum stands (the groups' fallback momentum).
            assert cfg.optim.momentum == expected[0], job.experiment
    assert ramped == {
        "part1_fig14a_lenet_cm0.95-0.8": [0.95, 0.8],
        **{f"part1_fig14b_lenet_wd{wd}": [0.95, 0.8] for wd in ("1e-4", "5e-4", "1e-3", "3e-3")},
        **{f"part1_fig13a_wide32_wd{wd}": [0.95, 0.85] for wd in ("1e-3", "1e-4", "1e-5")},
        **{f"part1_fig15a_c100_resnet56_wd{wd}": [0.95, 0.85] for wd in ("1e-4", "1e-5", "3e-4")},
        **{f"part1_fig13d_densenet40_tbs{tbs}": [0.9, 0.85] for tbs in (256, 512)},
    }
    assert _range_test(plan, "part1_fig14a_lenet_m0.9").optim.momentum == 0.9


def test_fig14a_momentum_ramp_reaches_the_optimizer(plan):
    # The YAML list goes through RangeTestSpec, the experiment's own optimizer (Caffe rule,
    # Nesterov) and lr_range_test: momentum falls linearly 0.95 -> 0.8 over the test. A 20-
    # iteration stand-in for the 10 000-iteration test, on a toy problem.
    cfg = _range_test(plan, "part1_fig14a_lenet_cm0.95-0.8")
    spec = cfg.range_test
    assert spec.momentum_range == [0.95, 0.8]
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    batches = [(x[i:i + 16], (x[i:i + 16, 0] > 0).long()) for i in range(0, 64, 16)]
    model = torch.nn.Linear(8, 2)
    # The toy model is no Caffe port: the experiment's optimizer without its prototxt multipliers.
    assert cfg.optim.multipliers == "prototxt"
    optimizer = build_optimizer(model, cfg.optim.model_copy(update={"multipliers": "none"}), lr=spec.start_lr)
    assert (cfg.optim.algorithm, cfg.optim.update_rule) == ("nesterov", "caffe")
    iterations = 20
    result = lr_range_test(model, batches, optimizer, start_lr=spec.start_lr, end_lr=spec.end_lr,
                           iterations=iterations, ramp=spec.ramp, momentum_range=spec.momentum_range)
    expected = [0.95 + (0.8 - 0.95) * it / iterations for it in range(iterations)]
    assert result.history.momentum.tolist() == pytest.approx(expected)
    assert result.history.lr.iloc[0] == pytest.approx(0.001)


def _job_stats(output):
    """{rule: count} from Snakemake's "Job stats" table."""
    lines = output[output.index("Job stats:"):].splitlines()[3:]
    stats = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        stats[parts[0]] = int(parts[1])
    return stats


# (config file or None for the Snakefile's default, extra training jobs, datasets, Caffe caches)
DRY_RUNS = {"default": (None, {}, 4, 1),   # cifar10, cifar100, mnist, imagefolder; Imagenette's cache (G6)
            "opt-in": (PAPER_IMAGENET, ILSVRC_GROUPS, 5, 2)}  # and imagenet, ILSVRC's cache


@pytest.mark.slow
@pytest.mark.parametrize("which", DRY_RUNS)
def test_snakemake_dry_run_of_the_paper_configs(which):
    configfile, extra, datasets, caches = DRY_RUNS[which]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    snakemake = shutil.which("snakemake", path=env["PATH"])
    # The Snakefile's default configfile is relative to the working directory, so this runs in
    # the repository. --forceall: every job counts whatever results/paper already holds;
    # --nolock: never contends with a real run there.
    command = [snakemake, "-n", "--forceall", "--nolock", "--cores", "all", "--resources", "gpu=4",
               *(["--configfile", str(configfile)] if configfile else [])]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    output = result.stdout + result.stderr
    if configfile is None:
        assert "configs/paper.yaml" in output
    stats = _job_stats(output)
    # No job writes a spec.json: the Snakefile does, in-process (onecycle.dag.run_specs).
    trains = TRAIN_JOBS + SEEDS * sum(extra.values())
    assert stats["train"] == trains and "job_spec" not in stats
    assert stats["range_test"] == stats["combine_bounds"] == len(RANGE_TEST_EXPERIMENTS)
    assert stats["report_experiment"] == len(GROUPS) + len(extra)
    assert stats["prepare_data"] == datasets
    assert stats["caffe_cache"] == caches
    assert stats["total"] == sum(count for rule, count in stats.items() if rule != "total")


def test_fig7b_momentum_range_test_and_short_runs(plan):
    # Part 1 Fig 7b (B1): LR 0.01 held, momentum 0.7 -> 1, WD 4e-3, TBS 548, 10k iterations;
    # then the short fixed-momentum runs at 0.99 / 0.97 / 0.95 / 0.9 (D2).
    cfg = _range_test(plan, "part1_fig7b_cifar3_momentum_range_test")
    spec = cfg.range_test
    assert (spec.start_lr, spec.end_lr, spec.momentum_range, spec.iterations) == (0.01, 0.01, [0.7, 1.0], 10000)
    assert (cfg.optim.weight_decay, cfg.train.batch_size) == (4e-3, 548)
    momenta = sorted(job.config["schedule"]["params"]["momentum"]
                     for job in plan.experiment_trains("part1_fig7b_cifar3_momentum_range_test")
                     if job.seed == 0)
    assert momenta == [0.9, 0.95, 0.97, 0.99]


def test_part1_four_runs_vary_batch_and_filler_as_x4_sh(plan):
    # C2 / D6: runs 1-4 at per-GPU 131, 130, 129, 128 on 4 GPUs; msra -> xavier on runs 1 and 3.
    # x4.sh writes one solver from the nominal TBS 512 for all four: the same iterations and
    # stepsize, though the larger batches pass over the data in fewer iterations.
    runs = [_run(plan, "part1_t2_cifar10_wide32", "onecycle_50ep", seed=seed) for seed in range(4)]
    assert [cfg.train.batch_size for cfg, *_ in runs] == [524, 520, 516, 512]
    assert [cfg.model.init for cfg, *_ in runs] == ["xavier", "prototxt", "xavier", "prototxt"]
    assert [50000 // cfg.train.batch_size for cfg, *_ in runs] == [95, 96, 96, 97]  # data passes
    assert {ipe for _, ipe, *_ in runs} == {97}
    assert {schedule.steps for _, _, schedule, _ in runs} == {50 * 97}
    assert {params["stepsize"] for *_, params in runs} == {23 * 97}
    # cifar3's gaussian fillers are untouched by the rewrite; only the batch varies.
    c3 = [_run(plan, "part1_t1_cifar3_cm", "cyclic_m95", seed=seed)[0] for seed in range(4)]
    assert [cfg.train.batch_size for cfg in c3] == [140, 136, 132, 128]
    assert {cfg.model.init for cfg in c3} == {"prototxt"}


def test_caffe_data_layers_and_multipliers_per_experiment_family(plan):
    # Header "Caffe's semantics": the data layer of each prototxt (D6, S12) and its multipliers.
    for job in plan.trains.values():
        cfg = RunConfig.model_validate(job.config)
        arch, data = cfg.model.arch, cfg.data
        assert data.order == "caffe_lmdb", job.job_id  # G7: Caffe's data layer reads its LMDB in order
        if data.dataset in ("imagefolder", "imagenet"):  # bvlc_* train_val, resnet50.prototxt (G6)
            assert (data.normalize, data.augment) == ("caffe_mean_image", "mirror"), job.job_id
            assert data.crop_size == {"resnet50": 230, "inception_resnet_v2": 230}.get(arch), job.job_id
            continue
        expected = {"lenet": "caffe_scale"}.get(arch, "caffe_mean_image")
        assert data.normalize == expected, job.job_id
        assert cfg.optim.multipliers == "prototxt", job.job_id
        if arch == "cifar3":
            assert data.augment == "none", job.job_id
        if arch in ("resnet56", "resnet20", "resnet110"):  # SC: 8 GPUs
            assert cfg.train.batch_norm_shards == 8, job.job_id


def test_clr_imagenet_rows(plan_imagenet):
    plan = plan_imagenet
    # The CLR paper §4.2: AlexNet batch 256 (bvlc_alexnet), GoogLeNet batch 128; stepsize 30k.
    cfg, ipe, schedule, params = _run(plan, "clr_t1_imagenet_alexnet", "triangular2_400k")
    assert ipe == 1_281_167 // 256 == 5004 and schedule.steps == 80 * 5004 == 400_320
    assert params == {"base_lr": 0.01, "max_lr": 0.015, "stepsize": 30000}
    assert (cfg.model.arch, cfg.model.init, cfg.optim.multipliers) == ("alexnet", "prototxt", "prototxt")
    assert (cfg.optim.weight_decay, cfg.optim.momentum, cfg.optim.algorithm) == (5.0e-4, 0.9, "sgd")
    _, _, schedule, _ = _run(plan, "clr_t1_imagenet_alexnet", "fixed_400k")
    assert schedule.lr(99_999) == pytest.approx(0.01) and schedule.lr(100_000) == pytest.approx(0.001)
    _, _, schedule, params = _run(plan, "clr_t1_imagenet_alexnet", "exp_range_300k")
    assert schedule.steps == 60 * 5004 and params["decay"] == "bounds"
    # Both bounds decay: at the end of the first cycle the LR is base x gamma^it (§3.1 text).
    assert schedule.lr(60_000) == pytest.approx(0.006 * 0.999995 ** 60_000)
    assert {_run(plan, "clr_t1_imagenet_alexnet", g)[2].steps for g in ("exp_300k", "exp_460k")} == {
        60 * 5004, 92 * 5004}
    cfg, ipe, schedule, params = _run(plan, "clr_t1_imagenet_googlenet", "exp_range_240k")
    assert ipe == 1_281_167 // 128 == 10_009 and schedule.steps == 24 * 10_009
    assert (params["base_lr"], params["max_lr"], params["gamma"]) == (0.01, 0.026, 0.99998)
    assert (cfg.model.arch, cfg.train.batch_size, cfg.optim.weight_decay) == ("googlenet", 128, 2.0e-4)
    for job in [*plan.experiment_trains("clr_t1_imagenet_alexnet"), *plan.experiment_trains("clr_t1_imagenet_googlenet")]:
        # bvlc_alexnet / bvlc_googlenet train_val: mirror, crops of the nets' own sides (G6).
        assert job.config["data"] == {"dataset": "imagenet", "normalize": "caffe_mean_image",
                                      "augment": "mirror", "order": "caffe_lmdb"}, job.job_id


def test_clr_imagenet_rows_scaled_to_imagenette_in_epochs(plan):
    # The same solvers in epochs (header of the CLR Imagenette block): ILSVRC's 5 004 (AlexNet,
    # batch 256) and 10 009 (GoogLeNet, batch 128) it/epoch become Imagenette's 36 and 73.
    cfg, ipe, schedule, params = _run(plan, "clr_t1_imagenette_alexnet", "triangular2_80ep")
    assert ipe == IMAGENETTE_TRAIN // 256 == 36 and schedule.steps == 80 * 36
    assert params == {"base_lr": 0.01, "max_lr": 0.015, "stepsize": 6 * 36}  # 30k it = 6.0 ILSVRC epochs
    assert (cfg.model.arch, cfg.model.init, cfg.optim.multipliers) == ("alexnet", "prototxt", "prototxt")
    assert (cfg.optim.weight_decay, cfg.optim.momentum, cfg.optim.algorithm) == (5.0e-4, 0.9, "sgd")
    _, _, schedule, _ = _run(plan, "clr_t1_imagenette_alexnet", "fixed_80ep")  # x0.1 every 100k it = 20 epochs
    assert schedule.lr(20 * 36 - 1) == pytest.approx(0.01) and schedule.lr(20 * 36) == pytest.approx(0.001)
    # exp: per epoch the factor 0.999995 gave over an ILSVRC epoch (0.999995 ** 5004 = 0.97529).
    assert 0.999995 ** 5004 == pytest.approx(0.97529, abs=5e-6)  # rounded to 5 digits in the config
    _, _, schedule, params = _run(plan, "clr_t1_imagenette_alexnet", "exp_60ep")
    assert schedule.steps == 60 * 36 and schedule.lr(30 * 36) == pytest.approx(0.01 * 0.97529 ** 30)
    _, _, schedule, params = _run(plan, "clr_t1_imagenette_alexnet", "exp_range_60ep")
    assert params["decay"] == "bounds" and params["stepsize"] == 6 * 36
    assert schedule.lr(12 * 36) == pytest.approx(0.006 * 0.97529 ** 12)  # a cycle's end: base x gamma^it
    assert _run(plan, "clr_t1_imagenette_alexnet", "exp_92ep")[2].steps == 92 * 36
    cfg, ipe, schedule, params = _run(plan, "clr_t1_imagenette_googlenet", "exp_range_24ep")
    assert ipe == IMAGENETTE_TRAIN // 128 == 73 and schedule.steps == 24 * 73
    assert 0.99998 ** 10009 == pytest.approx(0.81858, abs=5e-6)
    assert (params["base_lr"], params["max_lr"], params["stepsize"]) == (0.01, 0.026, 3 * 73)
    assert schedule.lr(6 * 73) == pytest.approx(0.01 * 0.81858 ** 6)
    assert (cfg.model.arch, cfg.train.batch_size, cfg.optim.weight_decay) == ("googlenet", 128, 2.0e-4)
    for name in ("clr_t1_imagenette_alexnet", "clr_t1_imagenette_googlenet"):
        assert plan.workflow.experiments[name].published == {}
        for job in plan.experiment_trains(name):
            assert job.config["data"] == {"dataset": "imagefolder", "normalize": "caffe_mean_image",
                                          "augment": "mirror", "order": "caffe_lmdb"}, job.job_id


def test_imagenette_clr_claims_carry_the_verdicts_of_the_ilsvrc_rows(plan, plan_imagenet):
    # No Imagenette row is published: each claim states the verdict ILSVRC's published numbers
    # give, which the opt-in config computes from configs/reference/published.yaml.
    published = load_published(PUBLISHED)
    for net in ("alexnet", "googlenet"):
        scaled = plan.workflow.experiments[f"clr_t1_imagenette_{net}"]
        full = plan_imagenet.workflow.experiments[f"clr_t1_imagenet_{net}"]
        assert [c.id for c in scaled.claims] == [c.id for c in full.claims], net
        for mine, theirs in zip(scaled.claims, full.claims):
            assert mine.expected == claims.expected_verdict(theirs, full, published)[0], (net, mine.id)
            assert (mine.kind, mine.k, mine.margin_pp) == (theirs.kind, theirs.k, theirs.margin_pp)


def test_imagenette_inception_resnet_v2_scaled_in_epochs(plan):
    # Part 1 §5.5 / C2 inception solvers: 1cycle 0.05-1.0, stepsize 108k of 220k it (49 %), TBS
    # 112 on 4 GPUs; the logged solvers' momentum stepsize 1 080 000 (A8) in the as_logged group.
    cfg, ipe, schedule, params = _run(plan, "imagenette_inception_resnet_v2", "onecycle_20ep")
    assert ipe == IMAGENETTE_TRAIN // 112 == 84 and schedule.steps == 20 * 84
    assert params["stepsize"] / schedule.steps == pytest.approx(108 / 220, abs=0.01)
    assert schedule.momentum(params["stepsize"]) == pytest.approx(0.85)
    _, _, logged, params = _run(plan, "imagenette_inception_resnet_v2", "onecycle_20ep_as_logged")
    # 1 080 000 of 220k it, i.e. 98.2 of the 20 epochs: momentum barely moves (0.95 -> ~0.93).
    assert 0.92 < min(logged.momentum(it) for it in range(logged.steps)) < 0.94
    assert plan.workflow.experiments["imagenette_inception_resnet_v2"].gpus == 4
    assert (cfg.model.arch, cfg.train.batch_size) == ("inception_resnet_v2", 112)


def test_lenet_jobs_share_a_gpu_when_the_machine_allows(raw):
    # share_gpu on the LeNet experiments; the default jobs_per_gpu 1 keeps one job per GPU.
    sharing = expand({**raw, "jobs_per_gpu": 4}, str(PAPER))
    for job in [*sharing.trains.values(), *sharing.range_tests.values()]:
        lenet = job.config["model"]["arch"] == "lenet"  # a required key: in every job config
        placement = (job.gpus, job.gpu_seats, job.per_device)
        if lenet:
            assert placement == (1, 1, 4), job.job_id
        else:
            assert placement == (job.gpus, 4 * job.gpus, 1), job.job_id
    default = expand(raw, str(PAPER)).trains["part1_t2_mnist_lenet/onecycle_12ep/seed0"]
    assert (default.gpus, default.gpu_seats, default.per_device) == (1, 1, 1)


def test_caffe_test_samples_as_each_prototxt_and_solver_had_them(plan):
    # D6 / A3: test_iter 200 x test batch 32 (Part 1 ResNets, WRN), 37 (DenseNet), 100 (3-layer),
    # 125 (SC); the hyperParam1 ResNet/WRN/DenseNet TEST layers mirror, cifar3's and SC's do not.
    expected = {"part1_t2_cifar10_wide32": (200, 32, True), "part1_t2_cifar100_resnet56": (200, 32, True),
                "part1_t1_resnet56_cm": (200, 32, True), "part1_t2_cifar10_densenet40": (200, 37, True),
                "part1_t1_cifar3_cm": (200, 100, False), "sc_t1_resnet56": (200, 125, False),
                "sc_t1_max_lr_sweep": (200, 125, False), "sc_batch_size_sweep": (200, 125, False)}
    for name, (test_iter, batch, mirror) in expected.items():
        for job in plan.experiment_trains(name):
            spec = RunConfig.model_validate(job.config).train.caffe_test
            assert (spec.test_iter, spec.batch, spec.mirror) == (test_iter, batch, mirror), job.job_id
    # Caffe's LeNet and cifar10_full solvers test 100 x 100 = the whole 10k set: nothing to add.
    for name in ("part1_t2_mnist_lenet", "clr_t1_cifar10"):
        assert all(RunConfig.model_validate(j.config).train.caffe_test is None for j in plan.experiment_trains(name))
