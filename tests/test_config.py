"""Bad config input fails before any work, in one line naming the key path (issue: nothing silent)."""

import pytest

from onecycle.config import ConfigError, RangeTestConfig, RunConfig, deep_merge, load_run_config, parse
from onecycle.experiments import expand

VALID_RUN = {
    "name": "r", "seed": 0,
    "data": {"dataset": "digits"},
    "model": {"arch": "lenet"},
    "optim": {"weight_decay": 5.0e-4},
    "schedule": {"policy": "smith_1cycle", "params": {"base_lr": 0.01, "max_lr": 0.1, "stepsize": 10}},
    "train": {"batch_size": 32, "epochs": 2},
}


def _with(path, value, base=VALID_RUN):
    keys = path.split(".")
    patch = value
    for key in reversed(keys):
        patch = {key: patch}
    return deep_merge(base, patch)


def test_valid_run_config_parses():
    cfg = parse(RunConfig, VALID_RUN)
    assert cfg.optim.weight_decay == 5e-4 and cfg.train.epochs == 2


@pytest.mark.parametrize("path, value, expected", [
    ("optim.weight_decay", "1e-4", "'optim.weight_decay' = '1e-4'.*write 1.0e-4"),
    ("optim.momentum", 1.0, "'optim.momentum' = 1.0: Input should be less than 1"),
    ("optim.weight_decay", -1.0, "'optim.weight_decay' = -1.0"),
    ("train.batch_size", 0, "'train.batch_size' = 0"),
    ("data.dataset", "fashion-mnist", "unknown dataset 'fashion-mnist' \\(did you mean 'fashion_mnist'\\?\\)"),
    ("model.arch", "resnet57", "unknown arch 'resnet57' \\(did you mean 'resnet5[06]'\\?\\)"),
    ("schedule.policy", "one_cycle", "unknown policy 'one_cycle'.*valid:"),
    ("data.train_subset", -5, "'data.train_subset' = -5"),
])
def test_bad_values_name_the_key(path, value, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        parse(RunConfig, _with(path, value), "run.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("run.yaml: ")


def test_unknown_key_gets_a_close_match():
    with pytest.raises(ConfigError, match="unknown key 'optim.weigth_decay' \\(did you mean 'weight_decay'\\?\\)"):
        parse(RunConfig, _with("optim.weigth_decay", 1e-4))


def test_missing_key_and_missing_epochs():
    data = {k: v for k, v in VALID_RUN.items() if k != "model"}
    with pytest.raises(ConfigError, match="missing required key 'model'"):
        parse(RunConfig, data)
    with pytest.raises(ConfigError, match="train.epochs is required"):
        parse(RunConfig, _with("train", {"batch_size": 32}, {**VALID_RUN, "train": {}}))


def test_range_test_ramp_checks():
    base = {k: v for k, v in VALID_RUN.items() if k != "schedule"}
    good = {**base, "range_test": {"start_lr": 0.0, "end_lr": 0.3, "iterations": 100}}
    assert parse(RangeTestConfig, good).range_test.ramp == "linear"
    with pytest.raises(ConfigError, match="^config: range_test: end_lr \\(0.3\\) must be above start_lr \\(0.5\\)$"):
        parse(RangeTestConfig, _with("range_test.start_lr", 0.5, good))
    with pytest.raises(ConfigError, match="start_lr must be > 0 for an exponential ramp"):
        parse(RangeTestConfig, _with("range_test.ramp", "exponential", good))


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: line .* not valid YAML"):
        load_run_config(broken)


WORKFLOW = {
    "results_dir": "out",
    "seeds": [0, 1],
    "experiments": {
        "exp": {
            "base": {k: v for k, v in VALID_RUN.items() if k not in ("name", "seed", "schedule")},
            "range_test": {"start_lr": 0.0, "end_lr": 0.3, "iterations": 50},
            "groups": {
                "one": {"schedule": {**VALID_RUN["schedule"], "lr_bounds": "range_test"}},
                "inv": {"schedule": {"policy": "inv", "params": {"base_lr": 0.01, "gamma": 1.0e-4, "power": 0.75}},
                        "train": {"epochs": 4}},
            },
            "baseline": "inv", "candidate": "one",
        }
    },
}


def test_expand_builds_every_job_with_predictable_paths():
    plan = expand(WORKFLOW)
    assert sorted(plan.trains) == ["exp/inv/seed0", "exp/inv/seed1", "exp/one/seed0", "exp/one/seed1"]
    assert list(plan.range_tests) == ["exp/seed0"]
    job = plan.trains["exp/inv/seed1"]
    assert str(job.out_dir) == "out/train/exp/inv/seed1"
    assert job.config["train"]["epochs"] == 4 and job.config["seed"] == 1 and job.config["group"] == "inv"
    assert plan.trains["exp/one/seed0"].needs_bounds and not job.needs_bounds
    assert plan.datasets() == ["digits"]


def test_expand_errors_name_experiment_and_group():
    bad = deep_merge(WORKFLOW, {"experiments": {"exp": {"groups": {"inv": {"optim": {"momentum": 2.0}}}}}})
    with pytest.raises(ConfigError, match="experiments.exp.groups.inv: 'optim.momentum' = 2.0"):
        expand(bad)
    with pytest.raises(ConfigError, match="seeds .* repeat a value"):
        expand({**WORKFLOW, "seeds": [0, 0]})
    with pytest.raises(ConfigError, match="group name 'a b;rm' must use only"):
        expand(deep_merge(WORKFLOW, {"experiments": {"exp": {"groups": {"a b;rm": {}}}}}))
    no_range = deep_merge(WORKFLOW, {"experiments": {"exp": {"range_test": None}}})
    with pytest.raises(ConfigError, match="lr_bounds is 'range_test' but the experiment has no range_test"):
        expand(no_range)
    too_long = deep_merge(WORKFLOW, {"experiments": {"exp": {"groups": {"one": {"schedule": {"params": {"stepsize": 1000}}}}}}})
    with pytest.raises(ConfigError, match="experiments.exp.groups.one: schedule: smith_1cycle: stepsize = 1000 is too long"):
        expand(too_long)
    with pytest.raises(ConfigError, match="baseline 'nope' is not one of the groups"):
        expand(deep_merge(WORKFLOW, {"experiments": {"exp": {"baseline": "nope"}}}))
