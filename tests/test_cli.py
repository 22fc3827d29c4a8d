"""The `onecycle` command: bad input ends in one line naming the key or file, exit 2, no outputs."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import HANG_GUARD_S, needs_fashion_mnist


def _onecycle(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onecycle.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=HANG_GUARD_S)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onecycle: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("patch, fragments", [
    ({"optim": {"weigth_decay": 1.0e-4}}, ["unknown key 'optim.weigth_decay'", "did you mean 'weight_decay'"]),
    ({"optim": {"weight_decay": "1e-4"}}, ["'optim.weight_decay' = '1e-4'", "write 1.0e-4"]),
    ({"schedule": {"params": {"stepsize": 1000}}}, ["schedule: smith_1cycle", "stepsize"]),
    ({"data": {"dataset": "cifar11"}}, ["unknown dataset 'cifar11'", "cifar10"]),
    ({"train": {"batch_size": 5000}}, ["train.batch_size = 5000 is larger than the 1024 training images"]),
])
@needs_fashion_mnist
def test_bad_run_configs(tiny_run_config, tmp_path, patch, fragments):
    from onecycle.experiments.loading import deep_merge

    config = deep_merge(tiny_run_config, patch)
    if "stepsize" in patch.get("schedule", {}).get("params", {}):
        del config["schedule"]["params"]["stepsize_epochs"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    _assert_one_line_error(_onecycle("train", "--config", path, "--out", out), *fragments)
    assert not (out / "metrics.json").exists() and not (out / "history.csv").exists()


def test_missing_files_are_named(tmp_path):
    _assert_one_line_error(_onecycle("train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "o"),
                           "nope.yaml: config file not found")
    config = tmp_path / "run.yaml"
    config.write_text("name: x\n")
    _assert_one_line_error(_onecycle("train", "--config", config, "--out", tmp_path / "o",
                                     "--bounds", tmp_path / "bounds.json"), "bounds.json: file not found")
    _assert_one_line_error(_onecycle("prepare-data", "--dataset", "mnist", "--root", tmp_path / "m",
                                     "--record", tmp_path / "r.json", "--no-download"), "mnist")
    assert not (tmp_path / "r.json").exists()


def test_report_names_unknown_experiment(tmp_path):
    workflow = yaml.safe_load(open("configs/smoke.yaml"))
    workflow["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(workflow))
    _assert_one_line_error(_onecycle("report", "--config", path, "--experiment", "mnist_lenet"),
                           "no experiment 'mnist_lenet'", "fmnist_lenet")


def test_report_on_no_results_shows_pending(tmp_path):
    workflow = yaml.safe_load(open("configs/smoke.yaml"))
    workflow["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(workflow))
    result = _onecycle("report", "--config", path)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "results" / "tables" / "fmnist_lenet.md").read_text()
    assert table.count("pending") == len(workflow["experiments"]["fmnist_lenet"]["groups"])
    page = (tmp_path / "results" / "report.html").read_text()
    assert "No run has finished yet" in page and page.count("<td>pending</td>") == 8  # 2 range tests, 6 trainings


def test_schedule_command_prints_csv():
    result = _onecycle("schedule", "--policy", "smith_1cycle", "--set", "variant=caffe", "--set", "base_lr=0.08",
                       "--set", "max_lr=0.8", "--set", "stepsize=10", "--steps", "25")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "step,lr,momentum" and len(lines) == 26
    # Smith's Caffe 1cycle reaches 0 at 2*stepsize, then holds base/1000 (docs/paper_reference.md D3).
    assert float(lines[21].split(",")[1]) == 0.0
    assert float(lines[22].split(",")[1]) == pytest.approx(0.08 / 1000)


def test_help_imports_nothing_heavy():
    # `onecycle --help` must answer at once: building the parser imports neither torch nor the
    # data stack (they take seconds on a loaded machine); each command imports what it needs.
    code = ("import sys, onecycle.cli as cli; cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'pydantic', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_option_of_every_command_has_help():
    import argparse

    from onecycle.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "range-test", "compare-reference", "config"} <= set(commands.choices)
    for name, parser in commands.choices.items():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"onecycle {name} {'/'.join(action.option_strings) or action.dest}"
    assert "--config" in _onecycle("range-test", "--help").stdout


def test_schema_describes_the_annotated_example_and_rejects_a_typo():
    import json

    import jsonschema

    from conftest import REPO
    from onecycle.experiments.config import ConfigError, RunConfig, load_run_config, parse

    result = _onecycle("config", "--schema", "run")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    example = yaml.safe_load((REPO / "configs" / "examples" / "run.yaml").read_text())
    jsonschema.validate(example, schema)
    assert load_run_config(REPO / "configs" / "examples" / "run.yaml").model.arch == "lenet"
    # The registries and the models' comments are in it.
    data = schema["$defs"]["DataConfig"]["properties"]
    assert "fashion_mnist" in data["dataset"]["enum"] and "imagefolder" in data["dataset"]["enum"]
    assert "smith_1cycle" in schema["$defs"]["ScheduleConfig"]["properties"]["policy"]["enum"]
    assert "divergence" in schema["$defs"]["TrainConfig"]["properties"]["divergence_factor"]["description"]
    # The schema and the model refuse the same typo.
    typo = {**example, "optim": {**example["optim"], "weigth_decay": 1.0e-4}}
    with pytest.raises(jsonschema.ValidationError, match="weigth_decay"):
        jsonschema.validate(typo, schema)
    with pytest.raises(ConfigError, match="unknown key 'optim.weigth_decay'"):
        parse(RunConfig, typo)
    for kind in ("range-test", "workflow"):
        assert json.loads(_onecycle("config", "--schema", kind).stdout)["type"] == "object"


@needs_fashion_mnist
@pytest.mark.slow
def test_a_run_by_hand_uses_the_workflows_threads_and_gets_its_numbers(tiny_run_config, tmp_path):
    # The workflow's jobs run with OMP_NUM_THREADS = train_threads (default 1) and --threads; a
    # run by hand without either must use the same count, and so give the same bits.
    import json
    import os

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config))
    bare = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    two = min(2, len(os.sched_getaffinity(0)))  # --threads above the cores is refused
    runs = {"by_hand": (bare, []), "workflow": ({**bare, "OMP_NUM_THREADS": "1"}, ["--threads", "1"]),
            "two": (bare, ["--threads", str(two)])}
    for name, (env, flags) in runs.items():
        result = subprocess.run([sys.executable, "-m", "onecycle.cli", "train", "--config", str(path),
                                 "--out", str(tmp_path / name), *flags], env=env, capture_output=True,
                                text=True, timeout=HANG_GUARD_S)
        assert result.returncode == 0, result.stderr
        # Not a terminal: a start line and one line per evaluation, then the result line.
        assert result.stderr.count("test_accuracy") == 2 and "final test accuracy" in result.stdout
    threads = {name: json.loads((tmp_path / name / "metrics.json").read_text())["provenance"]["torch_threads"]
               for name in runs}
    assert threads == {"by_hand": 1, "workflow": 1, "two": two}
    # Same threads, same code, deterministic kernels: the same bits (wall time aside).
    for name in ("history.csv", "train_log.csv"):
        by_hand, workflow = (pd.read_csv(tmp_path / run / name).drop(columns="wall_time_s", errors="ignore")
                             for run in ("by_hand", "workflow"))
        pd.testing.assert_frame_equal(by_hand, workflow, check_exact=True)
