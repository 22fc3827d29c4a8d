"""`onecycle schedule`: list the schedule policies, or print one as CSV and optionally plot it.

    onecycle schedule --list
    onecycle schedule --policy smith_1cycle --set variant=caffe --set base_lr=0.08 \\
        --set max_lr=0.8 --set stepsize=4003 --steps 9277 [--plot lr.png]

The main cli.py calls `register(subparsers)` and then `args.handler(args)` for the exit code.
The library's own command: it runs on `pip install onecycle` alone (values of --set read as
JSON when PyYAML, which comes with onecycle[workflow], is missing); --plot needs onecycle[plots].
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecycle.io import atomic_path

if TYPE_CHECKING:  # torch: imported by the functions that need it, so `--help` stays fast
    from onecycle.schedules import Schedule


# Steps --plot draws: a 7-inch figure at 100 dpi has 700 columns of pixels, so a million points
# already overplot each other 1400-fold, and matplotlib holds each one in memory.
MAX_PLOT_STEPS = 1_000_000
# Lines per write of the streamed CSV: a few hundred kB, few system calls, little memory.
CSV_CHUNK_LINES = 10_000


class _UsageError(ValueError):
    """A mistake on the command line, reported as one `onecycle: error:` line."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedule", help="list LR/momentum schedule policies, or print one as CSV",
        description="Print a schedule as CSV (step,lr,momentum; momentum empty when the policy "
                    "sets none), or list every policy with its parameters.")
    parser.add_argument("--list", action="store_true", help="list every policy, its parameters and source")
    parser.add_argument("--policy", help="policy name (see --list)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a policy parameter, read as YAML (0.1, [1, 2], true); repeatable")
    parser.add_argument("--steps", type=int, help="number of iterations")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw lr and momentum vs step into this PNG")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onecycle.schedules import make_schedule  # torch: only once the command runs

    try:
        if args.list:
            if args.policy is not None:
                raise _UsageError("give either --list or --policy, not both")
            sys.stdout.write(policy_listing())
            return 0
        schedule = make_schedule(*_schedule_request(args), **parse_settings(args.settings))
        if args.plot is not None:
            plot_schedule(schedule, args.plot)
        write_csv(schedule)
        return 0
    except ValueError as error:  # _UsageError and the schedule's own parameter checks
        print(f"onecycle: error: {error}", file=sys.stderr)
        return 2


def _schedule_request(args: argparse.Namespace) -> tuple[str, int]:
    if args.policy is None:
        raise _UsageError("give --policy NAME (see --list)")
    if args.steps is None:
        raise _UsageError("--policy needs --steps N (the number of iterations)")
    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        raise _UsageError(f"--plot needs a .png file name, got {args.plot!r}")
    if args.plot is not None and args.steps > MAX_PLOT_STEPS:
        raise _UsageError(f"--plot draws at most {MAX_PLOT_STEPS} steps, not {args.steps}: leave out --plot to "
                          "stream the CSV alone")
    return args.policy, args.steps


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`key=value` items -> parameters. Values are YAML; strings that read as numbers become
    numbers, since YAML 1.1 reads `1e-4` (no dot) as a string and users type it that way."""
    params: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _UsageError(f"--set expects KEY=VALUE, got {item!r}")
        if key in params:
            raise _UsageError(f"--set {key} given twice")
        params[key] = _numbers_from_strings(_read_value(key, text))
    return params


def _read_value(key: str, text: str) -> Any:
    """One --set value as YAML; without PyYAML (a library-only install) as JSON, YAML's subset
    for numbers, lists, true and false, a bare word staying a string (caffe, cos)."""
    try:
        import yaml
    except ModuleNotFoundError:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text.strip()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise _UsageError(f"--set {key}: {text!r} is not a valid YAML value") from None


def _numbers_from_strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_numbers_from_strings(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def policy_listing() -> str:
    from onecycle.schedules import POLICIES

    lines = []
    for info in POLICIES.values():
        params = ", ".join(f"{name}={default!r}" for name, default in info.params.items())
        lines += [f"{info.name}: {info.description}", f"    params: {params}", f"    source: {info.source}"]
    return "\n".join(lines) + "\n"


def schedule_csv(schedule: Schedule) -> Iterator[str]:
    """The CSV, line by line: a run of 10^9 steps streams in constant memory."""
    yield "step,lr,momentum\n"
    # repr() is the shortest text that reads back to the same float: the CSV is exact.
    for it in range(schedule.steps):
        momentum = schedule.momentum(it)
        yield f"{it},{schedule.lr(it)!r},{'' if momentum is None else repr(momentum)}\n"


def write_csv(schedule: Schedule) -> None:
    """schedule_csv to stdout, CSV_CHUNK_LINES lines per write; a reader that stops early
    (`| head`) ends it quietly, as it ends `seq`."""
    lines = schedule_csv(schedule)
    try:
        while chunk := "".join(itertools.islice(lines, CSV_CHUNK_LINES)):
            sys.stdout.write(chunk)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python's advice (docs "signal", SIGPIPE): point stdout at devnull, so the flush at
        # exit does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def plot_schedule(schedule: Schedule, target: str) -> None:
    """lr (top) and momentum (bottom) vs step, written atomically as a PNG."""
    try:
        from matplotlib.figure import Figure  # Agg rendering without pyplot's global state
    except ModuleNotFoundError:
        raise _UsageError("--plot needs matplotlib: pip install 'onecycle[plots]'") from None

    steps = range(schedule.steps)
    momenta = [schedule.momentum(it) for it in steps]
    fig = Figure(figsize=(7, 5), layout="constrained")
    lr_ax, momentum_ax = fig.subplots(2, 1, sharex=True)
    lr_ax.plot(steps, [schedule.lr(it) for it in steps])
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title(f"{schedule.name}, {schedule.steps} steps")
    if any(m is None for m in momenta):
        momentum_ax.text(0.5, 0.5, "this policy sets no momentum", ha="center", va="center",
                         transform=momentum_ax.transAxes)
    else:
        momentum_ax.plot(steps, momenta)
    momentum_ax.set_ylabel("momentum")
    momentum_ax.set_xlabel("step (iteration)")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
