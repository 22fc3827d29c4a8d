"""Bad config input fails before any work, in one line naming the key path (issue: nothing silent)."""

import json

import pytest

from onecycle import io
from onecycle.experiments.config import ConfigError, RangeTestConfig, RunConfig, load_run_config, parse
from onecycle.experiments.loading import deep_merge, load_mapping, load_workflow_file
from onecycle.experiments.expansion import expand

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


def test_json_written_by_the_workflow_reads_back_with_its_small_numbers(tmp_path):
    # io.write_json writes 1e-06 (json.dumps); YAML 1.1 would read that as the string '1e-06',
    # which failed every job with a weight decay or LR below 1e-4 (issue 12).
    run = _with("optim.weight_decay", 1.0e-6, _with("schedule.params.base_lr", 1.0e-5))
    spec = tmp_path / "spec.json"
    io.write_json(spec, run)
    assert '"weight_decay": 1e-06' in spec.read_text()
    cfg = load_run_config(spec)
    assert (cfg.optim.weight_decay, cfg.schedule.params["base_lr"]) == (1.0e-6, 1.0e-5)
    assert load_mapping(spec) == run


def test_yaml_keeps_snakemakes_reading_of_1e_4_and_json_errors_are_one_line(tmp_path):
    # Snakemake reads a YAML --configfile as YAML 1.1 too: the same file must mean the same to
    # `onecycle`, so `1e-4` stays a string there and the models say how to write it.
    config = tmp_path / "run.yaml"
    config.write_text("optim: {weight_decay: 1e-4}\n")
    assert load_mapping(config) == {"optim": {"weight_decay": "1e-4"}}
    with pytest.raises(ConfigError, match="'optim.weight_decay' = '1e-4'.*write 1.0e-4"):
        parse(RunConfig, deep_merge(VALID_RUN, load_mapping(config)), str(config))
    broken = tmp_path / "spec.json"
    broken.write_text('{"name": "r",\n "seed": }\n')
    with pytest.raises(ConfigError, match="^.*spec.json: line 2 not valid JSON \\(Expecting value\\)$"):
        load_mapping(broken)


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


def test_workflow_config_json_expands_as_its_yaml(tmp_path):
    # The workflow_config rule writes the config through io.write_json; `onecycle report` reads it back.
    small = deep_merge(WORKFLOW, {"experiments": {"exp": {"base": {"optim": {"weight_decay": 1.0e-6}}}}})
    written = tmp_path / "workflow_config.json"
    io.write_json(written, small)
    assert "1e-06" in written.read_text()
    again = expand(load_mapping(written))
    assert again.trains == expand(small).trains
    assert again.trains["exp/inv/seed0"].config["optim"]["weight_decay"] == 1.0e-6


def test_include_puts_another_config_under_this_one(tmp_path):
    # configs/paper_imagenet.yaml's mechanism: the included file's settings, this file's merged over.
    (tmp_path / "configs").mkdir()
    io.write_json(tmp_path / "configs" / "base.json", WORKFLOW)
    exp = WORKFLOW["experiments"]["exp"]
    extra = {"base": exp["base"], "groups": {"only": exp["groups"]["inv"]}}
    (tmp_path / "more.yaml").write_text(
        "include: configs/base.json\nseeds: [3]\nexperiments:\n  extra: " + json.dumps(extra) + "\n")
    merged = load_workflow_file(tmp_path / "more.yaml")
    assert "include" not in merged and merged["seeds"] == [3] and merged["results_dir"] == "out"
    assert list(merged["experiments"]) == ["exp", "extra"]
    assert sorted(expand(merged).trains) == ["exp/inv/seed3", "exp/one/seed3", "extra/only/seed3"]
    # Chained: a file including `more.yaml` gets both.
    (tmp_path / "chain.yaml").write_text("include: more.yaml\ntolerance_pp: 2.0\n")
    assert load_workflow_file(tmp_path / "chain.yaml") == {**merged, "tolerance_pp": 2.0}


@pytest.mark.parametrize("text, message", [
    ("include: missing.yaml\n", r"'include: missing.yaml': .*missing.yaml not found"),
    ("include: [a.yaml]\n", r"'include' must name one config file, a path relative to .*; got \['a.yaml'\]"),
    ("include: me.yaml\n", r"'include: me.yaml' includes itself again \(.*me.yaml -> .*me.yaml\)"),
])
def test_a_bad_include_is_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "me.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_workflow_file(tmp_path / "me.yaml")
    assert str(raised.value).startswith(str(tmp_path / "me.yaml")) and "\n" not in str(raised.value)


def test_without_include_the_workflow_model_refuses_the_key():
    # A config read without resolving its include (load_mapping alone) cannot pass as complete.
    with pytest.raises(ConfigError, match="include"):
        expand({**WORKFLOW, "include": "other.yaml"})


def test_skip_checksums_names_datasets_that_have_them():
    assert expand({**WORKFLOW, "skip_checksums": ["mnist", "cifar100"]}).workflow.skip_checksums == ["mnist", "cifar100"]
    with pytest.raises(ConfigError, match="skip_checksums.*'imagenet' has no checksums to skip: give some of "
                                          "cifar10, cifar100, fashion_mnist, mnist"):
        expand({**WORKFLOW, "skip_checksums": ["imagenet"]})


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


@pytest.mark.parametrize(("compare", "without", "message"), [
    ({"x": "data.train_subset", "difference": True}, None, "difference needs hue"),
    ({"x": "data.train_subset", "hue": "schedule.policy", "paper": {"a": "b"}}, None, "paper .* needs difference: true"),
    ({"x": "data.train_subset", "hue": "schedule.policy", "difference": True}, "candidate",
     "compare.difference draws candidate"),
])
def test_a_difference_comparison_needs_its_series_and_pair(compare, without, message):
    # SC's CLR - PC-LR figure: the series (hue) the two groups belong to, and which is which.
    workflow = deep_merge(WORKFLOW, {"experiments": {"exp": {"compare": compare}}})
    workflow["experiments"]["exp"].pop(without, None)
    with pytest.raises(ConfigError, match=message):
        expand(workflow)
@pytest.mark.parametrize("panels, message", [
    ([["one", "inv"], ["one", "nope"]], r"accuracy_panels\[1\]: 'nope' is not one of the groups \(one, inv\)"),
    ([["one"]], "accuracy_panels: group 'inv' is in no panel"),
    ([["one", "inv"], []], r"accuracy_panels\[1\]: name one group or more, each once"),
    ([["one", "one", "inv"]], r"accuracy_panels\[0\]: name one group or more, each once"),
])
def test_accuracy_panels_name_every_group_and_only_groups(panels, message):
    with pytest.raises(ConfigError, match=message):
        expand(deep_merge(WORKFLOW, {"experiments": {"exp": {"accuracy_panels": panels}}}))
    # A group may sit in several panels (CLR's exp_range beside exp and beside fixed).
    plan = expand(deep_merge(WORKFLOW, {"experiments": {"exp": {"accuracy_panels": [["one", "inv"], ["inv"]]}}}))
    assert plan.workflow.experiments["exp"].accuracy_panels == [["one", "inv"], ["inv"]]


def _part1_workflow(arch: str, seeds: list[int]) -> dict:
    base = deep_merge(WORKFLOW["experiments"]["exp"]["base"],
                      {"data": {"dataset": "cifar10"}, "model": {"arch": arch, "init": "prototxt"},
                       "train": {"batch_size": 512, "batch_norm_shards": 4}})
    exp = {"base": base, "seed_protocol": "part1",
           "groups": {"one": {"schedule": VALID_RUN["schedule"]}}}
    return {"results_dir": "out", "seeds": seeds, "experiments": {"exp": exp}}


def test_part1_protocol_varies_batch_and_filler_over_the_four_runs():
    # x4.sh (docs/paper_reference.md C2, D6): per-GPU batch 128+3, +2, +1, +0 on 4 GPUs; the msra ->
    # xavier rewrite on runs 1 and 3; one solver sized from the nominal TBS for all four. Seed s
    # is run s % 4 + 1, wherever it stands in the list: seed 7 is run 4 again.
    plan = expand(_part1_workflow("resnet56_part1", [0, 1, 2, 3, 7]))
    runs = [plan.trains[f"exp/one/seed{seed}"].config for seed in (0, 1, 2, 3, 7)]
    assert [r["train"]["batch_size"] for r in runs] == [524, 520, 516, 512, 512]
    assert {r["train"]["epoch_batch_size"] for r in runs} == {512}
    assert [r["model"]["init"] for r in runs] == ["xavier", "prototxt", "xavier", "prototxt", "prototxt"]
    alone = expand(_part1_workflow("resnet56_part1", [3])).trains["exp/one/seed3"].config
    assert alone == plan.trains["exp/one/seed3"].config
    # cifar3's gaussian fillers are not rewritten: only the batch varies.
    cifar3 = expand(_part1_workflow("cifar3", [0, 1]))
    assert [cifar3.trains[f"exp/one/seed{s}"].config["model"]["init"] for s in (0, 1)] == ["prototxt"] * 2
    same = expand(deep_merge(_part1_workflow("resnet56_part1", [0, 1]), {"experiments": {"exp": {"seed_protocol": "same"}}}))
    assert {same.trains[f"exp/one/seed{s}"].config["train"]["batch_size"] for s in (0, 1)} == {512}


def test_part1_protocol_needs_a_batch_of_four_gpus():
    bad = deep_merge(_part1_workflow("cifar3", [0]), {"experiments": {"exp": {"base": {"train": {
        "batch_size": 510, "batch_norm_shards": 1}}}}})
    with pytest.raises(ConfigError, match="groups.one: seed_protocol 'part1' needs train.batch_size, the total of 4 "
                                          "per-GPU batches, as a multiple of 4; got 510"):
        expand(bad)


def test_gpu_seats_and_sharing():
    sharing = deep_merge(WORKFLOW, {"gpus_per_job": 1, "jobs_per_gpu": 4, "experiments": {"exp": {"share_gpu": True}}})
    plan = expand(sharing)
    job, test = plan.trains["exp/one/seed0"], plan.range_tests["exp/seed0"]
    assert (job.gpus, job.gpu_seats, job.per_device) == (1, 1, 4)
    assert (test.gpus, test.gpu_seats, test.per_device) == (1, 1, 4)
    # Not sharing: a whole device, i.e. all of its jobs_per_gpu seats.
    exclusive = expand(deep_merge(sharing, {"experiments": {"exp": {"share_gpu": False}}})).trains["exp/one/seed0"]
    assert (exclusive.gpus, exclusive.gpu_seats, exclusive.per_device) == (1, 4, 1)
    default = expand(deep_merge(WORKFLOW, {"gpus_per_job": 1})).trains["exp/one/seed0"]
    assert (default.gpus, default.gpu_seats, default.per_device) == (1, 1, 1)
    with pytest.raises(ConfigError, match="experiments.exp: share_gpu is for single-GPU jobs, but its jobs take 2 GPUs"):
        expand(deep_merge(sharing, {"experiments": {"exp": {"gpus": 2}}}))


@pytest.mark.parametrize(("patch", "message"), [
    ({"model": {"arch": "resnet50", "init": "prototxt"}}, "model.init 'prototxt' needs a Caffe port; 'resnet50'"),
    ({"model": {"arch": "resnet50"}, "optim": {"multipliers": "prototxt"}},
     "optim.multipliers 'prototxt' needs a Caffe port; 'resnet50' has no prototxt multipliers"),
    ({"model": {"arch": "inception_resnet_v2"}, "train": {"batch_norm_shards": 2}},
     "train.batch_norm_shards > 1 needs Caffe's batch norm .* 'inception_resnet_v2' uses torch's"),
    ({"data": {"classes": "al"}}, "'data.classes' = 'al': classes is a list of WordNet ids, or 'all'"),
    ({"data": {"classes": ["n01440764"]}}, "data: classes is for imagefolder only, not 'digits'"),
    ({"data": {"dataset": "imagenet", "augment": "mirror"}}, "data: imagenet with normalize 'mean_std' takes torchvision's ImageNet presets"),
    ({"data": {"dataset": "cifar10", "normalize": "caffe_mean_image", "augment": "pad_crop_mirror"}},
     "normalize 'caffe_mean_image' goes with augment 'none' or 'mirror'"),
    ({"train": {"batch_size": 30, "batch_norm_shards": 4}}, "batch_size 30 does not split into batch_norm_shards = 4"),
    ({"data": {"dataset": "imagenet"}, "model": {"arch": "alexnet"},
      "train": {"caffe_test": {"test_iter": 10, "batch": 50}}}, "train.caffe_test is for in-memory datasets; imagenet"),
])
def test_caffe_options_that_cannot_apply_fail_before_any_work(patch, message):
    with pytest.raises(ConfigError, match=message):
        parse(RunConfig, deep_merge(VALID_RUN, patch), "c.yaml")


def test_gpu_jobs_train_on_cuda_or_fail_at_once():
    # A job that claims a GPU must not fall back to days on the CPU where CUDA is missing:
    # "auto" becomes "cuda", which onecycle.training.run refuses at start without CUDA.
    gpu = expand(deep_merge(WORKFLOW, {"gpus_per_job": 1}))
    assert gpu.trains["exp/one/seed0"].config["train"]["device"] == "cuda"
    assert gpu.range_tests["exp/seed0"].config["train"]["device"] == "cuda"
    cpu = expand(WORKFLOW)
    assert "device" not in cpu.trains["exp/one/seed0"].config["train"]  # "auto", the default
    with pytest.raises(ConfigError, match="groups.one: train.device is 'cpu' but its jobs claim 1 GPU"):
        expand(deep_merge(WORKFLOW, {"gpus_per_job": 1, "experiments": {"exp": {
            "range_test": None, "groups": {"one": {"schedule": VALID_RUN["schedule"], "train": {"device": "cpu"}}}}}}))
