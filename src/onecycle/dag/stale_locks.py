"""Snakemake's directory lock after a kill: removed when no Snakemake run is alive here.

Snakemake writes `.snakemake/locks/*.lock` when a run starts and deletes them when it ends. A
SIGKILL (OOM killer, lost session, `kill -9`) ends it without deleting them, and every later run
of the one recovery command the README gives (`snakemake ... --rerun-incomplete`) then stops with
a LockException until someone runs `snakemake --unlock` by hand. Those files cannot say whether
their writer is alive: they hold file names, not a process id.

So every Snakemake process that runs this workflow also holds an flock on `.snakemake/
onecycle.alive.lock`, shared, for as long as it lives; the kernel drops it when the process dies,
even on SIGKILL. A new run that can take that flock exclusively knows that no run of this
workflow is alive in the folder, so the Snakemake locks it finds are stale: it deletes them,
then holds its shared flock like the others. When the exclusive flock is refused, some run is
alive and its locks stay: Snakemake's own LockException then stands, as it should.

Limit: a Snakemake run of another Snakefile (or of this one before this module existed) in the
same folder does not hold the flock, so its locks would be taken for stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import BinaryIO

LIVENESS_LOCK = "onecycle.alive.lock"

# The open lock file of this process: its flock lasts as long as the file stays open.
_held: list[BinaryIO] = []


def clear_stale_locks(persistence_dir: str | os.PathLike[str] = ".snakemake") -> list[Path]:
    """Hold this process's liveness flock in `persistence_dir` (Snakemake's `.snakemake`); if no
    other run of the workflow is alive there, delete Snakemake's lock files first. Returns the
    lock files deleted."""
    folder = Path(persistence_dir)
    folder.mkdir(exist_ok=True)
    if _held:  # the Snakefile was read twice in one process: the flock is held already
        return []
    handle = open(folder / LIVENESS_LOCK, "a+b")
    _held.append(handle)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # a run is alive: its locks are real
        return []
    stale = sorted((folder / "locks").glob("*.lock"))
    for path in stale:
        path.unlink(missing_ok=True)
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # from now on, later runs see this one alive
    return stale
