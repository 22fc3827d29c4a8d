"""The `onecycle` command: bad input ends in one line naming the key or file, exit 2, no outputs."""

import subprocess
import sys

import pytest
import yaml

from conftest import needs_fashion_mnist


def _onecycle(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onecycle.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


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
    from onecycle.config import deep_merge

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
