"""How many processes a job runs and how its batch splits over them: the torchrun command, the
world size torchrun sets, and the checks on batch sizes (docs/paper_reference.md D6).

Torch-free, unlike onecycle.training.distributed, which runs the processes: the Snakefile and
the config checks import these, and a Snakemake invocation should not pay torch's import.
"""

from __future__ import annotations

import os
import shlex

from onecycle.experiments.config import ConfigError


def launch_command(gpus: int, *args: str) -> list[str]:
    """The command that runs `onecycle ARGS...` on `gpus` devices: torchrun for more than one,
    the plain CLI otherwise."""
    if gpus > 1:
        return ["torchrun", "--standalone", "--nproc_per_node", str(gpus), "-m", "onecycle.cli", *args]
    return ["onecycle", *args]


def launch_prefix(gpus: int, *args: str) -> str:
    """`launch_command` as one shell-quoted string (for Snakemake `shell:` rules)."""
    return shlex.join(launch_command(gpus, *args))


def world_size_from_env() -> int:
    """The number of processes torchrun started for this job (1 without torchrun)."""
    return env_int("WORLD_SIZE", 1)


def env_int(name: str, default: int) -> int:
    """An integer that torchrun sets in the environment ($WORLD_SIZE, $RANK, $LOCAL_RANK), or `default`."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name} = {value!r} is not an integer (set by torchrun)") from None


def check_batch_size(batch_size: int, world_size: int, batch_norm_shards: int = 1) -> None:
    if world_size > 1 and batch_size % world_size:
        raise ConfigError(f"train.batch_size = {batch_size} is not divisible by the {world_size} "
                          f"data-parallel processes: it is the total batch (per-device batch x "
                          f"devices), so pick a multiple of {world_size}")
    if world_size > 1 and batch_norm_shards > 1 and batch_norm_shards % world_size:
        raise ConfigError(f"train.batch_norm_shards = {batch_norm_shards} does not share out over the "
                          f"{world_size} data-parallel processes: it counts the shards of the total "
                          f"batch, so pick a multiple of {world_size}")


def local_batch_norm_shards(batch_norm_shards: int, world_size: int) -> int:
    """Shards of one process's part of the batch: the processes share out the total's."""
    return max(1, batch_norm_shards // world_size)
