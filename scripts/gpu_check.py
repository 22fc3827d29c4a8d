"""The device check: one short GPU lease (at most about 6 minutes on one H100) that runs the
suite's real paths and measures what users pay for, beside bare loops timed in the same run.

    python scripts/gpu_check.py        (or: make gpu-check)

With CUDA, in order, each step's line ready to paste into an issue note:
1. the tests marked `gpu` (tests/test_cuda.py, the CUDA resume test of tests/test_resume_rng.py);
2. the ops per training iteration on CUDA (tests/benchmarks/test_bench_op_counts.py);
3. each job family's real path (onecycle.experiments.rates): TrainingRun's own epochs,
   evaluation, checkpoint and resume, on data in the real on-disk formats (random pixels):
   - in_memory: SC's ResNet-56 as the paper config trains it (CIFAR-10 format, Caffe's data
     layer and update rule, prototxt multipliers, 8 batch-norm shards, batch 1000);
   - image_folder: ResNet-50 through the folder pipeline as the paper's Imagenette runs
     (Caffe's ImageNet data layer, crop 230, batch 128), JPEG/PNG decoding included;
   each in `deterministic` fp32 (the paper config's mode) and in `fast` (bf16, channels-last,
   TF32, cuDNN autotuning);
4. the anchors: a bare torchvision ResNet-50 loop with bf16 autocast and channels-last, and a
   bare bf16 channels-last CIFAR ResNet-56 loop (stock batch norm, torch SGD), on pre-made
   device batches: what the hardware gives without the suite;
5. LeNet jobs sharing one GPU 1, 2 and 4 ways through onecycle.dag.gpu_slots --per-device.
It writes every family's training and evaluation rate (deterministic fp32, as the paper config
trains) to results/gpu_check/rates.json, which `onecycle plan` reads (onecycle.experiments.rates),
and the printed lines to results/gpu_check/check.txt. Without CUDA it runs steps 3 and 4 at a
tiny scale on the CPU (indicative only) and writes nothing.

Exit status 1 when a step fails, else 0.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # data_fixtures: datasets in the real on-disk formats

from data_fixtures import random_uint8, write_cifar10, write_image_folder  # noqa: E402
from onecycle import io  # noqa: E402
from onecycle.evaluation import evaluate  # noqa: E402
from onecycle.experiments import cost, rates  # noqa: E402
from onecycle.experiments.config import RunConfig, parse  # noqa: E402
from onecycle.models import build_model  # noqa: E402
from onecycle.models.layers import CaffeBatchNorm2d  # noqa: E402
from onecycle.progress import SILENT  # noqa: E402
from onecycle.training import distributed  # noqa: E402
from onecycle.training.run import TrainingRun  # noqa: E402

# Per pytest step, so that a hanging step cannot take the lease.
TEST_TIMEOUT_S, OPS_TIMEOUT_S = 150, 60
NO_TESTS_COLLECTED = 5  # pytest's exit code when no test matched
LOG = Path("results/gpu_check/check.txt")
CLASSES = [f"n{index:08d}" for index in range(10)]


@dataclass(frozen=True)
class Family:
    """One family's measured path: the net, its batch and the synthetic data's size."""
    name: str  # onecycle.experiments.rates.FAMILIES
    arch: str
    batch_size: int
    epochs: int  # the first warms up (cuDNN autotuning, allocator, lazy init); the others are timed
    train_images: int
    test_images: int
    eval_batch_size: int
    batch_norm_shards: int = 1
    image_side: int = 32  # folders: the side of the images written (Caffe squashes to 256)
    crop_size: int | None = None


IN_MEMORY = Family("in_memory", "resnet56", 1000, 4, 5000, 2000, 1000, batch_norm_shards=8)  # SC: 8 x 125
IMAGE_FOLDER = Family("image_folder", "resnet50", 128, 3, 640, 640, 128, image_side=256, crop_size=230)
CPU_FAMILIES = (Family("in_memory", "resnet20", 50, 2, 200, 100, 100, batch_norm_shards=2),
                Family("image_folder", "resnet50", 4, 2, 10, 10, 10, image_side=48, crop_size=32))


def say(line: str, lines: list[str] | None = None) -> None:
    print(line, flush=True)  # flush: the pytest children write to the same stdout
    if lines is not None:
        lines.append(line)


def pytest_step(title: str, args: list[str], timeout_s: int, lines: list[str],
                env: dict[str, str] | None = None) -> int:
    say(f"--- {title}: python -m pytest {' '.join(args)}", lines)
    try:
        code = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=REPO, timeout=timeout_s,
                              env=None if env is None else {**os.environ, **env}).returncode
    except subprocess.TimeoutExpired:
        say(f"{title}: TIMED OUT after {timeout_s} s", lines)
        return 1
    if code == NO_TESTS_COLLECTED:
        say(f"{title}: no tests selected (pytest exit {code}), nothing to run yet", lines)
        return 0
    say(f"{title}: {'passed' if code == 0 else 'FAILED'} (pytest exit {code})", lines)
    return code


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the families' real paths ----------------------------------------------------------------

def write_family_data(family: Family, root: Path) -> dict:
    """Random images in the family's real format under `root`; the run config's `data` block."""
    if family.name == "in_memory":
        per_file = family.train_images // 5  # CIFAR-10's five data_batch files
        train = [(random_uint8((per_file, 3072), seed), [i % 10 for i in range(per_file)]) for seed in range(5)]
        write_cifar10(root, train, (random_uint8((family.test_images, 3072), 99),
                                    [i % 10 for i in range(family.test_images)]))
        return {"dataset": "cifar10", "root": str(root), "augment": "mirror", "normalize": "caffe_mean_image",
                "order": "caffe_lmdb"}
    write_image_folder(root, CLASSES, per_class=family.train_images // len(CLASSES),
                       size=(family.image_side, family.image_side), seed=0)
    return {"dataset": "imagefolder", "root": str(root), "classes": CLASSES, "augment": "mirror",
            "normalize": "caffe_mean_image", "crop_size": family.crop_size, "order": "caffe_lmdb"}


def family_config(family: Family, data: dict, mode: str, device: torch.device) -> RunConfig:
    """The paper config's settings for the family (configs/paper.yaml: SC Table 1's ResNet-56,
    Imagenette's ResNet-50), for `family.epochs` epochs in `mode`."""
    caffe_port = family.arch != "resnet50"
    return parse(RunConfig, {
        "name": f"gpu-check/{family.name}/{mode}", "seed": 0, "data": data,
        "model": {"arch": family.arch, "init": "prototxt" if caffe_port else "xavier"},
        "optim": {"algorithm": "sgd" if caffe_port else "nesterov", "update_rule": "caffe", "momentum": 0.9,
                  "multipliers": "prototxt" if caffe_port else "none", "weight_decay": 1.0e-4},
        "schedule": {"policy": "smith_1cycle", "params": {"variant": "caffe", "base_lr": 0.01, "max_lr": 0.1,
                                                          "stepsize_epochs": family.epochs / 2}},
        "train": {"batch_size": family.batch_size, "epochs": family.epochs, "eval_batch_size": family.eval_batch_size,
                  "batch_norm_shards": family.batch_norm_shards, "mode": mode, "device": device.type},
    })


@dataclass(frozen=True)
class FamilyRates:
    train_images_per_s: float
    eval_images_per_s: float
    checkpoint_s: float
    resumed: bool  # a new run resumed from the checkpoint with the same iteration and weights


def measure_family(family: Family, cfg: RunConfig, out: Path, device: torch.device) -> FamilyRates:
    """TrainingRun's own phases, timed: epochs after the first, evaluations of the whole test
    set after the first, a checkpoint, and a resume from it in a new run."""
    run = TrainingRun(cfg, out, None, distributed.Context(), device, SILENT)
    run.resume()
    run.net.train()
    run.train_epoch(0, 0)
    sync(device)
    start = time.perf_counter()
    for epoch in range(1, family.epochs):
        run.train_epoch(epoch, 0)
    sync(device)
    train_s = time.perf_counter() - start
    trained = (family.epochs - 1) * run.iters_per_epoch * family.batch_size
    evaluate(run.model, run.test_batches.epoch(0))
    start = time.perf_counter()
    evaluate(run.model, run.test_batches.epoch(0))  # reads the device once, at its end
    eval_s = time.perf_counter() - start
    start = time.perf_counter()
    run.save_checkpoint()
    checkpoint_s = time.perf_counter() - start
    again = TrainingRun(cfg, out, None, distributed.Context(), device, SILENT)
    again.resume()
    resumed = again.it == run.it and all(torch.equal(a, b) for a, b in
                                         zip(again.model.state_dict().values(), run.model.state_dict().values()))
    return FamilyRates(trained / train_s, family.test_images / eval_s, checkpoint_s, resumed)


def family_line(family: Family, mode: str, measured: FamilyRates, device: torch.device) -> str:
    precision = "fp32" if mode == "deterministic" else "bf16 + channels_last + TF32"
    return (f"{family.name}: {family.arch}, batch {family.batch_size}, {family.batch_norm_shards} BN shard(s), "
            f"{mode} ({precision}) on {device.type}: train {measured.train_images_per_s:,.0f} img/s, "
            f"evaluate {measured.eval_images_per_s:,.0f} img/s, checkpoint {measured.checkpoint_s:.2f} s, "
            f"resume {'exact' if measured.resumed else 'FAILED'}")


# --- anchors: bare loops on pre-made device batches ------------------------------------------

def with_stock_batch_norm(model: nn.Module) -> nn.Module:
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, CaffeBatchNorm2d):
                setattr(parent, name, nn.BatchNorm2d(child.num_features))
    return model


def bare_rate(model: nn.Module, batch: int, side: int, iterations: int, device: torch.device) -> float:
    """Images/s of the loop anyone writes: bf16 autocast, channels-last, torch SGD, one batch of
    random images already on the device, the loss read once at the end."""
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(max(2, iterations // 4)):
        step()
    sync(device)
    start = time.perf_counter()
    losses = [step() for _ in range(iterations)]
    torch.stack(losses).tolist()
    return iterations * batch / (time.perf_counter() - start)


def anchor_lines(scale: float, device: torch.device) -> tuple[list[str], dict[str, float]]:
    """The two anchors; `scale` shrinks batches and iterations for a CPU run."""
    import torchvision

    def size(n: int) -> int:
        return max(2, int(n * scale))

    torch.manual_seed(0)
    resnet50 = bare_rate(torchvision.models.resnet50(num_classes=10), size(128), 224 if scale == 1 else 64,
                         size(30), device)
    cifar = bare_rate(with_stock_batch_norm(build_model("resnet56", 10)), size(1000), 32, size(30), device)
    rates_seen = {"bare_resnet50_bf16_channels_last": resnet50, "bare_resnet56_bf16_channels_last": cifar}
    return [f"anchor: bare torchvision resnet50, bf16 autocast + channels_last, batch {size(128)}: "
            f"{resnet50:,.0f} img/s",
            f"anchor: bare resnet56 (stock BN, torch SGD), bf16 + channels_last, batch {size(1000)}: "
            f"{cifar:,.0f} img/s"], rates_seen


# --- the record `onecycle plan` reads --------------------------------------------------------

def rates_record(measured: dict[tuple[str, str], tuple[Family, FamilyRates]], anchors: dict[str, float],
                 device_name: str) -> dict:
    """Each family's rates in TFLOP/s as onecycle.experiments.cost counts FLOPs (images/s x the
    model's FLOPs per image): deterministic fp32, as the paper config trains; `fast` beside."""
    families = {}
    for (name, mode), (family, result) in measured.items():
        side = family.crop_size or family.image_side
        train_flops, eval_flops = cost.model_flops(family.arch, "{}", 3, side, 10)
        entry = families.setdefault(name, {})
        if mode == "deterministic":
            entry.update({"train_tflops": result.train_images_per_s * train_flops / 1e12,
                          "eval_tflops": result.eval_images_per_s * eval_flops / 1e12,
                          "train_images_per_s": result.train_images_per_s,
                          "eval_images_per_s": result.eval_images_per_s,
                          "measured_with": f"{family.arch}, batch {family.batch_size}, deterministic fp32"})
        else:
            entry["fast_train_images_per_s"] = result.train_images_per_s
    return {"device_class": "gpu", "device": device_name, "families": families, "anchors_images_per_s": anchors,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
            "git_revision": io.git_revision()}


def families_step(families: tuple[Family, ...], modes: tuple[str, ...], device: torch.device,
                  lines: list[str]) -> tuple[dict, int]:
    """Every family in every mode: its line, and the measurements; failures counted."""
    measured, failures = {}, 0
    with tempfile.TemporaryDirectory() as scratch:
        for family in families:
            data = write_family_data(family, Path(scratch) / family.name)
            for mode in modes:
                try:
                    cfg = family_config(family, data, mode, device)
                    result = measure_family(family, cfg, Path(scratch) / f"{family.name}-{mode}", device)
                except Exception as error:  # a failing path is the check's finding, not its end
                    say(f"{family.name} {mode}: FAILED ({type(error).__name__}: {error})", lines)
                    failures += 1
                    continue
                measured[family.name, mode] = (family, result)
                failures += not result.resumed
                say(family_line(family, mode, result, device), lines)
    return measured, failures


# --- LeNet jobs sharing one GPU ---------------------------------------------------------------

SHARING = (1, 2, 4)
SHARING_STARTUP_S, SHARING_WINDOW_S = 15.0, 6.0
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


def sharing_throughput() -> str:
    """LeNet images/s summed over k concurrent jobs on GPU 0, each claimed through the real exec
    wrapper (gpu_slots --per-device k), for every k in SHARING, with the gain over 1."""
    rates_seen = {}
    with tempfile.TemporaryDirectory() as lock_dir:
        env = {**os.environ, "ONECYCLE_GPU_SLOTS": "0", "ONECYCLE_GPU_LOCK_DIR": lock_dir}
        for k in SHARING:
            start = time.time() + SHARING_STARTUP_S
            jobs = [subprocess.Popen([sys.executable, "-m", "onecycle.dag.gpu_slots", "-n", "1", "--per-device",
                                      str(k), "--", sys.executable, "-c", SHARING_JOB, str(start),
                                      str(SHARING_WINDOW_S)], env=env, stdout=subprocess.PIPE, text=True)
                    for _ in range(k)]
            outputs = [job.communicate(timeout=SHARING_STARTUP_S + SHARING_WINDOW_S + 60)[0] for job in jobs]
            rates_seen[k] = sum(float(out.strip().splitlines()[-1]) for out in outputs)
    parts = [f"{k} per GPU {rate:,.0f} img/s ({rate / rates_seen[1]:.2f}x)" for k, rate in rates_seen.items()]
    return f"sharing: lenet, batch 512, caffe rule, {SHARING_WINDOW_S:.0f} s window: " + "; ".join(parts)


# --- the check --------------------------------------------------------------------------------

def cpu_check(lines: list[str]) -> int:
    """No CUDA: the families and anchors at a tiny scale on the CPU, one thread; nothing written."""
    torch.set_num_threads(1)  # as the CPU benchmarks (tests/benchmarks/conftest.py)
    say("CUDA is not available: the families and anchors at a tiny scale on CPU (indicative only); "
        "no gpu tests, no rates written", lines)
    _, failures = families_step(CPU_FAMILIES, ("deterministic",), torch.device("cpu"), lines)
    for line in anchor_lines(0.02, torch.device("cpu"))[0]:
        say(line, lines)
    return failures


def cuda_check(lines: list[str]) -> int:
    device = torch.device("cuda")
    failures = pytest_step("gpu tests", ["-m", "gpu", "-q", "-p", "no:randomly"], TEST_TIMEOUT_S, lines) != 0
    failures += pytest_step("ops per iteration on cuda",
                            ["tests/benchmarks/test_bench_op_counts.py", "--benchmark-only", "-q", "-p", "no:randomly"],
                            OPS_TIMEOUT_S, lines, env={"ONECYCLE_BENCH_DEVICE": "cuda"}) != 0
    measured, family_failures = families_step((IN_MEMORY, IMAGE_FOLDER), ("deterministic", "fast"), device, lines)
    failures += family_failures
    anchors, anchor_rates = anchor_lines(1.0, device)
    for line in anchors:
        say(line, lines)
    for family, anchor in ((IN_MEMORY, "bare_resnet56_bf16_channels_last"),
                           (IMAGE_FOLDER, "bare_resnet50_bf16_channels_last")):
        if (family.name, "fast") in measured:
            fast = measured[family.name, "fast"][1].train_images_per_s
            say(f"{family.name} fast / its anchor: {fast / anchor_rates[anchor]:.3f}", lines)
    record = rates_record(measured, anchor_rates, torch.cuda.get_device_name(0))
    io.write_json(REPO / rates.RATES_FILE, record)
    say(f"rates for onecycle plan written to {rates.RATES_FILE}: " + ", ".join(
        f"{name} {entry['train_tflops']:.2f} / {entry['eval_tflops']:.2f} TFLOP/s (train / evaluate)"
        for name, entry in record["families"].items() if "train_tflops" in entry), lines)
    try:
        say(sharing_throughput(), lines)
    except (subprocess.SubprocessError, ValueError, IndexError) as error:
        say(f"sharing: FAILED ({error})", lines)
        failures += 1
    return failures


def main() -> int:
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    accelerator = "no CUDA device"
    if cuda:
        memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
        accelerator = f"{torch.cuda.get_device_name(0)} ({memory_gib:.0f} GiB), CUDA {torch.version.cuda}"
    lines: list[str] = []
    say(f"onecycle gpu-check {time.strftime('%Y-%m-%d %H:%M:%S')}: python {platform.python_version()}, "
        f"torch {torch.__version__}, {accelerator}, {os.cpu_count()} CPUs, git {io.git_revision()}", lines)
    failures = cuda_check(lines) if cuda else cpu_check(lines)
    say(f"gpu-check: {'all steps passed' if not failures else f'{failures} step(s) FAILED'} in "
        f"{time.perf_counter() - started:.0f} s", lines)
    if cuda:
        with contextlib.suppress(OSError):
            io.write_text(REPO / LOG, "\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
