"""Give each GPU job its own devices, because Snakemake counts GPUs but never says which ones.

`snakemake --resources gpu=N` only caps how many GPU units run at once; every job still sees
every device, so concurrent jobs pile onto GPU 0 (snakemake#281). Here each job claims ids
itself: every device has a lock file in a node-local directory, and a job holds a
non-blocking `fcntl.flock` on it for as long as the process lives. The kernel drops a flock
when its holder exits for any reason, SIGKILL and OOM kills included, so lock files never go
stale and need no clean-up.

Two forms:

* an exec wrapper for `shell:` rules; the training process itself then holds the locks:
  `python -m onecycle.dag.gpu_slots -n {resources.gpu} -- python train.py ...`
* a call at the top of a Python job, before anything initialises CUDA:
  `claim(snakemake.resources.gpu)`, then `import torch`.

Sharing (`per_device=k`, for small jobs such as LeNet on MNIST): a sharing job holds one of
k "seat" files of a device plus a *shared* flock on the device file; an exclusive job
(k=1) holds an *exclusive* flock on the device file. So exclusive and sharing jobs never meet
on a device, whatever mix of rules a workflow runs. Sharing jobs that ask for different k
meet at most max(k) to a device. Sharing jobs fill the first device with a free seat, so the
devices they leave are whole for exclusive jobs.

Limits: the lock directory must be on local disk (flock over NFS is unreliable); the pool
should match `--resources gpu=N` (a smaller pool makes jobs wait, never share); this
coordinates processes on one host only, and steps aside where a cluster scheduler has bound
devices already.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

SLOTS_ENV = "ONECYCLE_GPU_SLOTS"
LOCK_DIR_ENV = "ONECYCLE_GPU_LOCK_DIR"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
# Set to the claimed ids together with CUDA_VISIBLE_DEVICES, so that a nested claim (a
# wrapped program that claims again, or a second call) reuses them instead of waiting on
# locks its own process holds.
CLAIMED_ENV = "ONECYCLE_GPU_CLAIMED"

# Backoff between attempts while other jobs hold the slots: short at first, because under
# Snakemake a slot is usually freed by a job that is just exiting; capped so a long wait
# costs little CPU.
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0

# The lock descriptors of this process's claim. Closing one would free its device, so they
# stay open until the process exits.
_held_fds: list[int] = []


class GpuSlotError(RuntimeError):
    """A claim that cannot be made; the message is one line, meant for the user."""


def claim(
    n: int,
    *,
    pool: Sequence[str] | None = None,
    lock_dir: Path | None = None,
    per_device: int = 1,
    timeout_s: float = 3600.0,
) -> list[str]:
    """Claim `n` distinct device ids, export them as CUDA_VISIBLE_DEVICES, and return them.

    The pool of ids is `pool`, else $ONECYCLE_GPU_SLOTS (comma list), else the inherited
    CUDA_VISIBLE_DEVICES, else one id per GPU that `nvidia-smi -L` lists. Lock files live in
    `lock_dir`, else $ONECYCLE_GPU_LOCK_DIR, else /tmp/onecycle-gpu-slots-<uid>.
    `per_device=k` lets k claims share a device. Waits (with backoff) while other processes
    hold the slots, and raises GpuSlotError after `timeout_s`. Claims nothing and returns
    the bound ids when devices are bound already (a SLURM job with CUDA_VISIBLE_DEVICES, or
    an earlier claim of this process or its exec wrapper); fewer than `n` of them is an
    error. `n == 0` returns [] untouched.
    """
    _check_request(n, per_device, timeout_s)
    if n == 0:
        return []
    bound = _already_bound_ids()
    if bound is not None:
        if len(bound) < n:
            raise GpuSlotError(f"asked for {n} GPUs but this job was given {len(bound)} "
                               f"(CUDA_VISIBLE_DEVICES={os.environ[VISIBLE_ENV]!r})")
        return bound
    _refuse_after_cuda_init()
    ids = _resolve_pool(pool)
    if n > len(ids):
        raise GpuSlotError(f"asked for {n} GPUs but the pool has only {len(ids)}: {','.join(ids)}")
    fds, claimed = _claim_with_backoff(n, ids, _lock_directory(lock_dir), per_device, timeout_s)
    _held_fds.extend(fds)
    os.environ[VISIBLE_ENV] = os.environ[CLAIMED_ENV] = ",".join(claimed)
    return claimed


def _check_request(n: int, per_device: int, timeout_s: float) -> None:
    if n < 0:
        raise GpuSlotError(f"number of GPUs must be >= 0, got {n}")
    if per_device < 1:
        raise GpuSlotError(f"per_device must be >= 1, got {per_device}")
    if timeout_s < 0:
        raise GpuSlotError(f"timeout_s must be >= 0, got {timeout_s}")


def _already_bound_ids() -> list[str] | None:
    visible = os.environ.get(VISIBLE_ENV)
    if visible is None:
        return None
    if os.environ.get("SLURM_JOB_ID") or os.environ.get(CLAIMED_ENV) == visible:
        return _split_ids(visible)
    return None


def _refuse_after_cuda_init() -> None:
    # CUDA reads CUDA_VISIBLE_DEVICES once, when it initialises; a later claim would lock
    # one device while the process runs on another. Look without importing torch.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise GpuSlotError("claim() ran after CUDA initialised, so CUDA_VISIBLE_DEVICES "
                           "would be ignored: claim before any torch.cuda call")


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def resolve_pool() -> list[str]:
    """The device ids jobs claim from here ($ONECYCLE_GPU_SLOTS, CUDA_VISIBLE_DEVICES or
    nvidia-smi); GpuSlotError, one line, where there are none."""
    return _resolve_pool(None)


def _resolve_pool(pool: Sequence[str] | None) -> list[str]:
    if pool is not None:
        ids = _split_ids(pool) if isinstance(pool, str) else [str(item).strip() for item in pool]
        return _checked_pool(ids, "the pool argument")
    for name in (SLOTS_ENV, VISIBLE_ENV):
        if name in os.environ:
            return _checked_pool(_split_ids(os.environ[name]), f"${name}")
    return _nvidia_smi_pool()


def _checked_pool(ids: list[str], source: str) -> list[str]:
    if not ids or "" in ids:
        raise GpuSlotError(f"{source} lists no GPU ids")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise GpuSlotError(f"{source} lists GPU ids more than once: {','.join(duplicates)}")
    return ids


def _nvidia_smi_pool() -> list[str]:
    hint = f"set ${SLOTS_ENV} (for example 0,1,2,3) or $CUDA_VISIBLE_DEVICES"
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise GpuSlotError(f"no GPU pool: nvidia-smi is not on PATH; {hint}")
    try:
        listing = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GpuSlotError(f"no GPU pool: `nvidia-smi -L` failed ({error}); {hint}") from None
    # MIG instances are listed as indented "MIG ..." lines under their GPU; count GPUs only.
    count = sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
    if listing.returncode != 0 or count == 0:
        said = (listing.stderr or listing.stdout).strip().splitlines()
        raise GpuSlotError(f"no GPU pool: `nvidia-smi -L` listed no GPUs "
                           f"({said[0] if said else f'exit {listing.returncode}'}); {hint}")
    return [str(index) for index in range(count)]


def _lock_directory(lock_dir: Path | None) -> Path:
    # Not tempfile.gettempdir(): Snakemake points TMPDIR at resources.tmpdir, which can
    # differ between jobs, and jobs must all meet in one directory.
    default = Path(f"/tmp/onecycle-gpu-slots-{os.getuid()}")
    directory = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or default)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise GpuSlotError(f"cannot create the GPU lock directory {directory}: {error.strerror}") from None
    return directory


def _claim_with_backoff(
    n: int, ids: list[str], directory: Path, per_device: int, timeout_s: float
) -> tuple[list[int], list[str]]:
    deadline = time.monotonic() + timeout_s
    backoff = _FIRST_BACKOFF_S
    while True:
        got = _try_claim_once(n, ids, directory, per_device)
        if got is not None:
            return got
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GpuSlotError(
                f"timed out after {timeout_s:g} s waiting for {n} free GPU slot(s) of pool "
                f"{','.join(ids)} in {directory}: other processes hold them "
                f"(does --resources gpu=N match the pool?)")
        # Jitter keeps two multi-GPU claimers from retrying in lockstep, each forever
        # grabbing the device the other one needs.
        time.sleep(min(remaining, backoff * random.uniform(0.5, 1.5)))
        backoff = min(2 * backoff, _MAX_BACKOFF_S)


def _try_claim_once(
    n: int, ids: list[str], directory: Path, per_device: int
) -> tuple[list[int], list[str]] | None:
    fds: list[int] = []
    claimed: list[str] = []
    # Every seat of a device before the next device (first fit): sharing jobs fill devices,
    # so the devices left free are whole. The workflow counts a device as per_device seats of
    # `--resources gpu=N` (onecycle.experiments.expansion.gpu_placement); spreading k sharing jobs over k
    # devices would leave seats free that no exclusive job can use.
    for device_id in ids:
        for seat in range(per_device):
            device_fds = _try_device(directory, device_id, seat, per_device)
            if device_fds:
                fds += device_fds
                claimed.append(device_id)
                break
        if len(claimed) == n:
            return fds, claimed
    # A partial claim lets go of everything before waiting: holding some devices while
    # waiting for others could deadlock two multi-GPU jobs.
    for fd in fds:
        os.close(fd)
    return None


def _try_device(directory: Path, device_id: str, seat: int, per_device: int) -> list[int]:
    # quote(): ids may be MIG UUIDs with '/' in them.
    stem = directory / quote(device_id, safe="")
    device_lock = stem.with_name(stem.name + ".lock")
    if per_device == 1:
        fd = _try_flock(device_lock, fcntl.LOCK_EX)
        return [] if fd is None else [fd]
    seat_fd = _try_flock(stem.with_name(f"{stem.name}.seat{seat}.lock"), fcntl.LOCK_EX)
    if seat_fd is None:
        return []
    shared_fd = _try_flock(device_lock, fcntl.LOCK_SH)
    if shared_fd is None:
        os.close(seat_fd)
        return []
    return [seat_fd, shared_fd]


def _try_flock(path: Path, mode: int) -> int | None:
    # Read-only and no symlinks: a lock file is never written, and one planted as a link
    # elsewhere must not be followed.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise GpuSlotError(f"cannot open GPU lock file {path}: {error.strerror}") from None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m onecycle.dag.gpu_slots -n N [--per-device K] [--timeout S] -- CMD [ARGS...]`.

    Claims N devices, then replaces itself with CMD (same pid), which inherits the lock
    descriptors and CUDA_VISIBLE_DEVICES: the locks last exactly as long as CMD runs.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m onecycle.dag.gpu_slots",
        description="Claim distinct GPUs for a command, then exec it.")
    parser.add_argument("-n", "--gpus", type=int, required=True, help="number of GPUs to claim")
    parser.add_argument("--per-device", type=int, default=1, help="jobs that may share one GPU")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for free GPUs")
    if "--" not in args or args.index("--") == len(args) - 1:
        parser.error("give the command after '--', e.g. -n 1 -- python train.py")
    split = args.index("--")
    options, command = parser.parse_args(args[:split]), args[split + 1:]
    try:
        claim(options.gpus, per_device=options.per_device, timeout_s=options.timeout)
    except GpuSlotError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    for fd in _held_fds:
        os.set_inheritable(fd, True)
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"{parser.prog}: error: cannot run {command[0]!r}: {error.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
