"""The GPU checks, in under 5 minutes on one GPU, printed as plain lines to paste in an issue note.

    python scripts/gpu_check.py        (or: make gpu-check)

With CUDA: the tests marked `gpu`, the benchmarks on CUDA (ONECYCLE_BENCH_DEVICE=cuda), a
short CIFAR-shaped throughput run: resnet56 on synthetic 3x32x32 uint8 images, batch 512,
fp32 and bf16 autocast + channels_last, bare loop vs the suite, and the suite again with Caffe's
semantics (mean image, prototxt multipliers, batch norm in 4 shards); then LeNet jobs sharing
one GPU 1, 2 and 4 ways through onecycle.dag.gpu_slots --per-device (issue: small jobs per device).
The Caffe-semantics run is timed in deterministic mode, as the paper config trains, and its
rate, in FLOP/s as `onecycle plan` counts them, is written to results/gpu_check/throughput.json:
plan then estimates device-hours for this machine's GPUs. Without CUDA it says so, runs the
throughput run with LeNet for a few iterations on CPU, and exits 0 (no calibration written).

Exit status 1 when a pytest step fails or times out, else 0.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tempfile

import torch
from torch import nn

from onecycle import io
from onecycle.experiments import cost as plan
from onecycle.experiments.config import OptimConfig
from onecycle.data import ArrayDataset, Batches, CaffeTransform
from onecycle.models import build_model
from onecycle.models.layers import set_batch_norm_shards
from onecycle.training.optim import build_optimizer
from onecycle.schedules import make_schedule
from onecycle.training.device import set_mode
from onecycle.training.run import train_step

REPO = Path(__file__).resolve().parents[1]
# Per pytest step, so the whole check stays within its 5 minutes even when a step hangs.
TEST_TIMEOUT_S, BENCH_TIMEOUT_S = 90, 150
NO_TESTS_COLLECTED = 5  # pytest's exit code when no test matched


@dataclass(frozen=True)
class Shape:
    arch: str
    channels: int
    side: int
    batch_size: int
    iterations: int  # timed, per side
    warmup: int  # untimed iterations first: cuDNN autotuning, allocator, lazy init


CIFAR = Shape("resnet56", 3, 32, 512, 50, 10)
CPU_FALLBACK = Shape("lenet", 1, 28, 128, 20, 3)
THROUGHPUT_LEGEND = ("throughput: bare = torch SGD at a fixed lr on pre-made device batches; suite = "
                     "Batches(pad_crop_mirror) + train_step + smith_1cycle; (suite/bare)")
# Part 1's CIFAR runs: 4 GPUs' batch norm on one device (train.batch_norm_shards).
CAFFE_SHARDS = 4
# Jobs per GPU to measure, and each round's timing: every process waits until a common start
# time (after CUDA has initialised everywhere), then counts images over the same window.
SHARING = (1, 2, 4)
SHARING_STARTUP_S, SHARING_WINDOW_S = 20.0, 8.0
SHARING_JOB = """
import sys, time, torch
from onecycle.experiments.config import OptimConfig
from onecycle.models import build_model
from onecycle.training.optim import build_optimizer
from onecycle.schedules import make_schedule
from onecycle.training.run import train_step
start, window = float(sys.argv[1]), float(sys.argv[2])
device = torch.device("cuda")
torch.manual_seed(0)
x = torch.randn(512, 1, 28, 28, device=device)
y = torch.randint(0, 10, (512,), device=device)
model = build_model("lenet", 10).to(device)
schedule = make_schedule("fixed", steps=10**9, base_lr=0.01)
optimizer = build_optimizer(model, OptimConfig(update_rule="caffe", momentum=0.9), lr=0.01)
it = 0
while time.time() < start:
    train_step(model, optimizer, schedule, it, x, y); it += 1
torch.cuda.synchronize()
images = 0
while time.time() < start + window:
    train_step(model, optimizer, schedule, it, x, y); it += 1; images += 512
torch.cuda.synchronize()
print(images / (time.time() - start))
"""


def say(line: str) -> None:
    print(line, flush=True)  # flush: the pytest children write to the same stdout


def pytest_step(title: str, args: list[str], timeout_s: int, env: dict[str, str] | None = None) -> int:
    say(f"--- {title}: python -m pytest {' '.join(args)}")
    try:
        code = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=REPO, timeout=timeout_s,
                              env=None if env is None else {**os.environ, **env}).returncode
    except subprocess.TimeoutExpired:
        say(f"{title}: TIMED OUT after {timeout_s} s")
        return 1
    if code == NO_TESTS_COLLECTED:
        say(f"{title}: no tests selected (pytest exit {code}), nothing to run yet")
        return 0
    say(f"{title}: {'passed' if code == 0 else 'FAILED'} (pytest exit {code})")
    return code


def bare_step(model: nn.Module, optimizer: torch.optim.Optimizer):
    def step(it: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def suite_step(model: nn.Module, optimizer: torch.optim.Optimizer, schedule):
    def step(it: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return train_step(model, optimizer, schedule, it, x, y)
    return step


def timed_run(step, batches, warmup: int, device: torch.device) -> tuple[float, float]:
    """Images/s over `batches` after `warmup` untimed iterations, and the last loss. `step(it,
    x, y)` returns the loss tensor; the losses are read once at the end, which syncs."""
    batches = iter(batches)
    for it in range(warmup):
        step(it, *next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, images, losses = time.perf_counter(), 0, []
    for it, (x, y) in enumerate(batches, start=warmup):
        losses.append(step(it, x, y))
        images += len(y)
    values = torch.stack(losses).tolist()
    return images / (time.perf_counter() - start), values[-1]


def throughput(shape: Shape, device: torch.device, *, bf16: bool, channels_last: bool,
               caffe: bool = False) -> tuple[str, dict[str, float]]:
    """One line: images/s of the bare loop and of the suite (both update rules); and those rates.

    Bare: torch SGD at a fixed lr on pre-made batches already on the device (and already
    channels_last when asked). Suite: `Batches` (pad_crop_mirror) feeding `train_step` with
    Smith's 1cycle, the optimizer from `build_optimizer`. `train_step` has no autocast of its
    own, so bf16 wraps whole iterations on every side alike. `caffe`: the suite feeds Caffe's
    data layer (mean image, mirror), applies the prototxt multipliers and normalises batch norm
    in CAFFE_SHARDS shards, as the paper config's Part 1 runs do.
    """
    count = (shape.warmup + shape.iterations) * shape.batch_size
    generator = torch.Generator().manual_seed(0)
    dataset = ArrayDataset(
        torch.randint(0, 256, (count, shape.channels, shape.side, shape.side), generator=generator,
                      dtype=torch.uint8),
        torch.randint(0, 10, (count,), generator=generator), 10)
    normalise = ({"caffe": CaffeTransform(mean_image=dataset.mean_image())} if caffe
                 else {"mean": dataset.channel_mean(), "std": dataset.channel_std()})
    batches = Batches(dataset, shape.batch_size, shuffle=True, drop_last=True,
                      augment="mirror" if caffe else "pad_crop_mirror", seed=0, device=device, **normalise)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    premade = [(x.contiguous(memory_format=memory_format), y) for x, y in batches.epoch(0)]
    torch.manual_seed(0)
    start_model = build_model(shape.arch, 10).to(device, memory_format=memory_format)
    steps = shape.warmup + shape.iterations
    schedule = make_schedule("smith_1cycle", steps, variant="caffe", base_lr=0.01, max_lr=0.05,
                             stepsize=steps // 2, momentum=0.95, min_momentum=0.85)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    results = {}
    with autocast:
        model = copy.deepcopy(start_model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        results["bare"] = timed_run(bare_step(model, optimizer), premade, shape.warmup, device)
        for rule in ("caffe",) if caffe else ("pytorch", "caffe"):
            model = copy.deepcopy(start_model)
            if caffe:
                set_batch_norm_shards(model, CAFFE_SHARDS)
            config = OptimConfig(update_rule=rule, momentum=0.9, weight_decay=5e-4,
                                 multipliers="prototxt" if caffe else "none")
            optimizer = build_optimizer(model, config, lr=schedule.lr(0))
            results[f"suite {rule} rule"] = timed_run(suite_step(model, optimizer, schedule),
                                                      batches.epoch(1), shape.warmup, device)
    bare_rate = results["bare"][0]
    mode = (("bf16 autocast" if bf16 else "fp32") + (" + channels_last" if channels_last else "")
            + (f" + Caffe semantics (mean image, multipliers, {CAFFE_SHARDS} BN shards)" if caffe else ""))
    parts = [f"bare {bare_rate:,.0f} img/s"] + [f"{name} {rate:,.0f} img/s ({rate / bare_rate:.3f})"
                                                 for name, (rate, _) in results.items() if name != "bare"]
    losses = ", ".join(f"{loss:.3f}" for _, loss in results.values())
    line = (f"throughput {shape.arch} on {device.type}, batch {shape.batch_size}, {shape.iterations} "
            f"timed iterations, {mode}: {'; '.join(parts)}; last losses {losses}")
    return line, {name: rate for name, (rate, _) in results.items()}


def write_calibration(shape: Shape, images_per_s: float, device_name: str, what: str) -> str:
    """The effective training rate `onecycle plan` uses for this machine's GPUs (onecycle.experiments.cost.
    CALIBRATION): images/s x the model's forward+backward FLOPs per image, counted as plan counts."""
    train_flops, _ = plan.model_flops(shape.arch, "{}", shape.channels, shape.side, 10)
    record = {"device_class": "gpu", "device": device_name, "what": what,
              "arch": shape.arch, "batch_size": shape.batch_size, "images_per_s": images_per_s,
              "train_flops_per_image": train_flops, "tflops": images_per_s * train_flops / 1e12,
              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
              "git_revision": io.git_revision()}
    path = REPO / plan.CALIBRATION
    io.write_json(path, record)
    return (f"calibration: {record['tflops']:.2f} TFLOP/s effective ({images_per_s:,.0f} img/s x "
            f"{train_flops / 1e9:.3f} GFLOP per image), written to {path} for onecycle plan")


def sharing_throughput() -> str:
    """One line: LeNet images/s summed over k concurrent jobs on GPU 0, each claimed through the
    real exec wrapper (gpu_slots --per-device k), for every k in SHARING, with the gain over 1."""
    rates = {}
    with tempfile.TemporaryDirectory() as lock_dir:
        env = {**os.environ, "ONECYCLE_GPU_SLOTS": "0", "ONECYCLE_GPU_LOCK_DIR": lock_dir}
        for k in SHARING:
            start = time.time() + SHARING_STARTUP_S
            jobs = [subprocess.Popen([sys.executable, "-m", "onecycle.dag.gpu_slots", "-n", "1", "--per-device",
                                      str(k), "--", sys.executable, "-c", SHARING_JOB, str(start),
                                      str(SHARING_WINDOW_S)], env=env, stdout=subprocess.PIPE, text=True)
                    for _ in range(k)]
            outputs = [job.communicate(timeout=SHARING_STARTUP_S + SHARING_WINDOW_S + 60)[0] for job in jobs]
            rates[k] = sum(float(out.strip().splitlines()[-1]) for out in outputs)
    parts = [f"{k} per GPU {rate:,.0f} img/s ({rate / rates[1]:.2f}x)" for k, rate in rates.items()]
    return f"sharing: lenet, batch 512, caffe rule, {SHARING_WINDOW_S:.0f} s window: " + "; ".join(parts)


def main() -> int:
    cuda = torch.cuda.is_available()
    if not cuda:
        # One thread, as the CPU benchmarks use (tests/benchmarks/conftest.py): on shared CPU
        # machines several threads make the same loop's time swing several-fold.
        torch.set_num_threads(1)
    accelerator = "no CUDA device"
    if cuda:
        memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
        accelerator = f"{torch.cuda.get_device_name(0)} ({memory_gib:.0f} GiB), CUDA {torch.version.cuda}"
    say(f"onecycle gpu-check {time.strftime('%Y-%m-%d %H:%M:%S')}: python {platform.python_version()}, "
        f"torch {torch.__version__}, {accelerator}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads")
    if not cuda:
        say("CUDA is not available: skipping the gpu-marked tests, the CUDA benchmarks and the "
            f"resnet56 run; a short {CPU_FALLBACK.arch} run on CPU instead (indicative only)")
        say(THROUGHPUT_LEGEND)
        say(throughput(CPU_FALLBACK, torch.device("cpu"), bf16=False, channels_last=False)[0])
        return 0
    failures = 0
    failures += pytest_step("gpu tests", ["-m", "gpu", "-q", "-p", "no:randomly"], TEST_TIMEOUT_S) != 0
    failures += pytest_step("benchmarks on cuda",
                            ["tests/benchmarks", "--benchmark-only", "-q", "-p", "no:randomly",
                             "--benchmark-columns=median,iqr,rounds"],
                            BENCH_TIMEOUT_S, env={"ONECYCLE_BENCH_DEVICE": "cuda"}) != 0
    device = torch.device("cuda")
    say(THROUGHPUT_LEGEND)
    for bf16, channels_last in ((False, False), (True, True)):
        say(throughput(CIFAR, device, bf16=bf16, channels_last=channels_last)[0])
    # As the paper config trains (train.mode deterministic: no TF32, no cuDNN autotuning), so
    # that the calibration of `onecycle plan` is the rate its runs will see.
    set_mode("deterministic", device)
    line, rates = throughput(CIFAR, device, bf16=False, channels_last=False, caffe=True)
    say(line + " (deterministic mode)")
    say(write_calibration(CIFAR, rates["suite caffe rule"], torch.cuda.get_device_name(0),
                          "resnet56 fp32, Caffe semantics, deterministic mode (scripts/gpu_check.py)"))
    try:
        say(sharing_throughput())
    except (subprocess.SubprocessError, ValueError, IndexError) as error:
        say(f"sharing: FAILED ({error})")
        failures += 1
    say(f"gpu-check: {'all steps passed' if not failures else f'{failures} step(s) FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
