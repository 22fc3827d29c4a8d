"""Every file the suite writes goes through here: atomic, NaN-free JSON, provenance.

A kill at any moment must leave either the old file or the new one, never half of one
(docs/design.md §8): each writer fills a temporary file in the target's own folder, fsyncs
it, then `os.replace`s it over the target (atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onecycle


# atomic_path's temporary files: `.<target name>.<mkstemp's 8 characters>.tmp<target suffix>`.
TEMP_PREFIX, TEMP_MARK = ".", ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>(\.[^.]+)?)$")
# The lock file of a run folder (run_folder).
RUN_LOCK = ".onecycle.lock"
# The longest file name Linux filesystems take (NAME_MAX of ext4, xfs, btrfs, tmpfs).
MAX_NAME_BYTES = 255


def temp_name_bytes(name: str) -> int:
    """Bytes in the name of atomic_path's temporary file for a file called `name` (mkstemp adds
    8 characters), which must fit MAX_NAME_BYTES as well as `name` itself."""
    return len(os.fsencode(f"{TEMP_PREFIX}{name}.{'x' * 8}{TEMP_MARK}{Path(name).suffix}"))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` atomically.

    For writers that insist on a path (torch.save, matplotlib's savefig). The temporary
    file keeps the target's suffix so that format detection by extension still works.
    On error the temporary file is removed and `target` is untouched. An OS error (disk full,
    permission denied) names `target`, never the temporary file, which no user knows.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.",
                                        suffix=f"{TEMP_MARK}{target.suffix}", dir=target.parent)
    except OSError as error:
        raise _naming(error, target) from None
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
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise _naming(error, target) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """The same error (OSError(errno, ...) picks the subclass: PermissionError...) about `path`."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of atomic_path writes that a killed process left in `folder`
    (a SIGKILL during a checkpoint write leaves `.checkpoint.pt.<random>.tmp.pt`). Only names of
    exactly that pattern go; call it only while no other process writes there (run_folder)."""
    removed = []
    for path in Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_MARK}*"):
        match = _TEMP_NAME.match(path.name)
        if match and match["suffix"] == Path(match["target"]).suffix and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def run_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Own one run's output folder while a job writes it: create it, hold its lock (`.onecycle.lock`)
    so that a second process on the same folder stops at once instead of writing one run
    twice, and remove stale temporary files on entry and on a normal exit. The kernel drops
    the lock when its holder dies, even on SIGKILL."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = open(folder / RUN_LOCK, "a+b")
    except OSError as error:
        raise _naming(error, folder) from None
    with lock_file:
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BlockingIOError(errno.EWOULDBLOCK, "another onecycle process is writing this run "
                                  "folder; let it finish (or stop it), then run again", str(folder)) from None
        remove_stale_temp_files(folder)
        yield folder
        remove_stale_temp_files(folder)


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


def describe_os_error(error: OSError) -> str:
    """One line for a user: the path and the cause ("results/x: No space left on device")."""
    if error.strerror is None:
        return str(error)
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    return f"{paths}: {error.strerror}" if paths else error.strerror


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


def json_text(obj: Any) -> str:
    """The text write_json writes: indented JSON, NaN-free, ending in a newline."""
    return json.dumps(_json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    write_text(target, json_text(obj))


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_json_object(path: str | os.PathLike[str], what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The JSON object in `path`, else `error` with one line naming the file and `what` it holds
    (e.g. "metrics file"): not found, unreadable (the reason), or not a JSON object."""
    try:
        value = read_json(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, ValueError) as problem:
        raise error(f"{path}: unreadable {what} ({str(problem) or type(problem).__name__})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: {what} is not a JSON object")
    return value


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
