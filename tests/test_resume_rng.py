"""A resumed run draws the random numbers the uninterrupted run draws: its dropout masks come
from the generators the checkpoint saved (the CPU's, and the run's CUDA device's), so a run
stopped between epochs and resumed equals the one that never stopped, bit for bit.

DenseNet-40 has dropout after every convolution (docs/models.md); on the 8x8 digits it trains
in seconds. The run stops as its second epoch begins (after the first epoch's checkpoint) and
is resumed in the same process, where the generators have moved on since the checkpoint: only
restoring them gives the uninterrupted run's masks, which the control without restoring shows.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from onecycle.experiments.config import RunConfig, parse
from onecycle.training import checkpoints
from onecycle.training.run import TrainingRun, train

pytestmark = [pytest.mark.slow, pytest.mark.numerics]


class _Stopped(Exception):
    """The run's process ends here (as if killed after its last checkpoint)."""


def _dropout_run(device: str) -> RunConfig:
    return parse(RunConfig, {
        "name": "resume-rng", "seed": 3,
        "data": {"dataset": "digits", "train_subset": 256},
        "model": {"arch": "densenet40"},
        "optim": {"update_rule": "caffe", "momentum": 0.9, "weight_decay": 1.0e-4},
        "schedule": {"policy": "fixed", "params": {"base_lr": 0.05}},
        "train": {"batch_size": 64, "epochs": 3, "eval_batch_size": 360, "log_every": 1, "device": device},
    })


def _stop_at_second_epoch(monkeypatch) -> None:
    original = TrainingRun.train_epoch

    def train_epoch(self, epoch, skip):
        if epoch == 1:
            raise _Stopped
        return original(self, epoch, skip)

    monkeypatch.setattr(TrainingRun, "train_epoch", train_epoch)


def _stopped_and_resumed(cfg: RunConfig, out, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        _stop_at_second_epoch(patch)
        with pytest.raises(_Stopped):
            train(cfg, out)
    assert (out / checkpoints.CHECKPOINT).exists()
    torch.rand(1000)  # the process's generators move on, as a new process's would differ
    if torch.cuda.is_available():
        torch.cuda.manual_seed(12345)
    train(cfg, out)


def _logs(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    columns = ["epoch", "iteration", "train_loss", "test_loss", "test_accuracy"]
    return pd.read_csv(out / "history.csv")[columns], pd.read_csv(out / "train_log.csv")


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]),
])
def test_resumed_run_equals_the_uninterrupted_run(tmp_path, monkeypatch, device):
    cfg = _dropout_run(device)
    train(cfg, tmp_path / "whole")
    _stopped_and_resumed(cfg, tmp_path / "resumed", monkeypatch)
    for whole, resumed in zip(_logs(tmp_path / "whole"), _logs(tmp_path / "resumed"), strict=True):
        pd.testing.assert_frame_equal(whole, resumed, check_exact=True)

    # The control: the same resume without putting the generators back draws other masks.
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: None)
    _stopped_and_resumed(cfg, tmp_path / "control", monkeypatch)
    whole_log, control_log = _logs(tmp_path / "whole")[1], _logs(tmp_path / "control")[1]
    first_resumed = whole_log.epoch > 1
    assert whole_log[~first_resumed].equals(control_log[~first_resumed])
    assert not whole_log.train_loss[first_resumed].equals(control_log.train_loss[first_resumed])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_of_a_cuda_run_holds_its_device_generator(tmp_path, monkeypatch):
    cfg = _dropout_run("cuda")
    with monkeypatch.context() as patch:
        _stop_at_second_epoch(patch)
        with pytest.raises(_Stopped):
            train(cfg, tmp_path)
    state = torch.load(tmp_path / checkpoints.CHECKPOINT, weights_only=True)
    assert state["rng_cuda"].dtype == torch.uint8 and state["rng_cuda"].numel() > 0
