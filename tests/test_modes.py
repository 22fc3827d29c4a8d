"""train.mode: what `deterministic` and `fast` set (CUDA's switches are plain flags, so they are
checked here without a GPU), the speed options `fast` turns on, and range tests that take their
run's mode, precision and memory format."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import needs_fashion_mnist
from data_fixtures import random_uint8, write_cifar10
from onecycle.experiments.config import ConfigError, RangeTestConfig, RunConfig, TrainConfig, parse
from onecycle.experiments.loading import deep_merge
from onecycle.training import device as device_module
from onecycle.training import range_test_job
from onecycle.training.device import CUBLAS_WORKSPACE, explain_mode_errors, set_mode
from onecycle.training.run import train

CUDA = torch.device("cuda")  # a device object: nothing runs on it


@pytest.fixture
def restore_global_switches(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE, raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[2:]


def test_deterministic_mode_sets_what_cuda_needs(restore_global_switches):
    set_mode("fast", CUDA)
    set_mode("deterministic", CUDA)
    assert device_module.os.environ[CUBLAS_WORKSPACE] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()  # an op without one stops the run
    assert not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_fast_mode_turns_on_autotuning_and_tf32(restore_global_switches):
    set_mode("deterministic", CUDA)
    set_mode("fast", CUDA)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_a_non_deterministic_cublas_workspace_is_refused(restore_global_switches, monkeypatch):
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":0:0")
    with pytest.raises(ConfigError, match=r"CUBLAS_WORKSPACE_CONFIG = ':0:0' makes cuBLAS non-deterministic"):
        set_mode("deterministic", CUDA)


def test_an_op_without_a_deterministic_implementation_is_a_one_line_error(restore_global_switches):
    message = ("adaptive_max_pool2d_backward_cuda does not have a deterministic implementation, but you set "
               "'torch.use_deterministic_algorithms(True)'. You can turn off determinism ...")
    with pytest.raises(ConfigError, match=r"^train.mode 'deterministic': adaptive_max_pool2d_backward_cuda has no "
                                          r"deterministic implementation .* train.mode 'fast'$"):
        with explain_mode_errors("deterministic"):
            raise RuntimeError(message)
    with pytest.raises(RuntimeError, match="deterministic implementation"), explain_mode_errors("fast"):
        raise RuntimeError(message)


def test_fast_mode_turns_on_bf16_and_channels_last_unless_set():
    fast = parse(TrainConfig, {"batch_size": 8, "mode": "fast"})
    assert (fast.precision, fast.channels_last, fast.compile) == ("bf16", True, False)
    chosen = parse(TrainConfig, {"batch_size": 8, "mode": "fast", "precision": "fp32", "channels_last": False})
    assert (chosen.precision, chosen.channels_last) == ("fp32", False)
    default = parse(TrainConfig, {"batch_size": 8})
    assert (default.mode, default.precision, default.channels_last) == ("deterministic", "fp32", False)
    # A job's spec (the config minus its defaults) is unchanged for the default mode.
    assert default.model_dump(exclude_defaults=True) == {"batch_size": 8}


def test_range_test_takes_its_runs_mode_precision_and_memory_format(tmp_path, monkeypatch):
    seen = {}

    def fake_range_test(model, train_batches, optimizer, **kwargs):
        seen["autocast"] = kwargs["autocast_dtype"]
        seen["model"] = all(_channels_last(m.weight) for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                            and m.in_channels > 1)
        seen["batch"] = _channels_last(next(iter(train_batches))[0])
        raise _Seen

    monkeypatch.setattr(range_test_job, "lr_range_test", fake_range_test)
    monkeypatch.setattr(range_test_job, "set_mode", lambda mode, device: seen.setdefault("set_mode", mode))
    write_cifar10(tmp_path / "cifar", [(random_uint8((8, 3072), seed), list(range(8))) for seed in range(5)],
                  (random_uint8((8, 3072), 9), list(range(8))))
    cfg = parse(RangeTestConfig, {
        "name": "rt", "seed": 0, "data": {"dataset": "cifar10", "root": str(tmp_path / "cifar")},
        "model": {"arch": "resnet20"},
        "optim": {"momentum": 0.9}, "train": {"batch_size": 8, "mode": "fast"},
        "range_test": {"start_lr": 0.01, "end_lr": 1.0, "iterations": 5, "eval_subset": 8}})
    with pytest.raises(_Seen):
        range_test_job.run_range_test_job(cfg, tmp_path / "out")
    assert seen == {"set_mode": "fast", "autocast": torch.bfloat16, "model": True, "batch": True}


class _Seen(Exception):
    pass


def _channels_last(tensor: torch.Tensor) -> bool:
    """Laid out channels-last, and not also contiguous (as a tensor with one channel is both)."""
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


@pytest.mark.slow
@needs_fashion_mnist
def test_compiled_step_trains_as_the_eager_one(tiny_run_config, tmp_path):
    cfg = deep_merge(tiny_run_config, {"data": {"train_subset": 256}, "train": {"log_every": 1}})
    train(parse(RunConfig, cfg), tmp_path / "eager")
    compiled = train(parse(RunConfig, deep_merge(cfg, {"train": {"compile": True}})), tmp_path / "compiled")
    assert compiled["status"] == "completed" and compiled["config"]["train"]["compile"] is True
    first = [pd.read_csv(tmp_path / name / "train_log.csv").train_loss[0] for name in ("eager", "compiled")]
    # The first loss comes before any update: one LeNet forward pass, whose dot products sum
    # 25 + 500 + 800 + 500 float32 terms along the way in whatever order the compiled kernels
    # take: 1 825 x 2^-24 = 1.1e-4 relative at worst.
    assert first[1] == pytest.approx(first[0], rel=2e-4)


def test_range_test_under_bf16_autocast_computes_in_bf16():
    from onecycle.range_test import lr_range_test

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 32, generator=generator), torch.randint(0, 4, (16,), generator=generator))
               for _ in range(4)]
    first_losses = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = torch.nn.Linear(32, 4)
        result = lr_range_test(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), start_lr=0.01,
                               end_lr=0.1, iterations=4, autocast_dtype=dtype)
        first_losses[dtype] = result.history.train_loss.iloc[0]
    # The same weights and batch: only the matrix product's precision differs. bf16 rounds x
    # (|x| < 4.5 in these 512 seeded draws) and w (|w| <= 1/sqrt(32), Linear's init) to 8
    # significant bits, 2^-9 each, so each of the 32 products moves by at most 4.5 / sqrt(32) x
    # 2^-8 and a logit by 32 times that, 0.1; the cross-entropy, whose gradient in the logits
    # sums to at most 2 in magnitude, by at most 0.2.
    assert first_losses[torch.bfloat16] != first_losses[None]
    assert first_losses[torch.bfloat16] == pytest.approx(first_losses[None], abs=0.2)
