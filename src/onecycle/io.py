"""Every file the suite writes goes through here: atomic, NaN-free JSON, provenance.

A kill at any moment must leave either the old file or the new one, never half of one
(docs/design.md §8): each writer fills a temporary file in the target's own folder, fsyncs
it, then `os.replace`s it over the target (atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onecycle


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` atomically.

    For writers that insist on a path (torch.save, matplotlib's savefig). The temporary
    file keeps the target's suffix so that format detection by extension still works.
    On error the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; results are meant to be shared, so honour the umask as open() would.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an flock on `lock_path` (created if need be): concurrent jobs take turns. The kernel
    drops it when the holder dies, even on SIGKILL. The file is never deleted: deleting lock
    files races with a waiter that has it open."""
    with open(lock_path, "a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None: JSON has no NaN, and a diverged loss must still be
    recorded somewhere readable (the `diverged` block says what happened)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    write_text(target, text + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_csv(target: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    write_text(target, buffer.getvalue())


# Outputs, not code: the workflow rewrites the results kept in git (results/smoke/...) as it
# runs, which must not mark the code that produces them as modified.
RESULTS_PATHSPEC = ":(top,exclude)results"


def git_revision(start: str | os.PathLike[str] | None = None) -> str | None:
    """The checkout's commit (with '-dirty' if tracked files outside results/ have uncommitted
    changes), or None outside git.

    Snakemake does not track code changes between runs, so every result records this.
    """
    cwd = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                RESULTS_PATHSPEC], cwd=cwd, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows. Float32 training
    is not bit-identical across CPUs (vector widths, summation order), so every result names
    the CPU that produced it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str, seed: int | None) -> dict[str, Any]:
    """What produced a result: recorded in every metrics.json."""
    import torch  # deferred: keep `import onecycle.io` light for the workflow's local rules

    return {
        "package_version": onecycle.__version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu_model(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "seed": seed,
    }
