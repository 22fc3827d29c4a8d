"""Paired timing for the benchmarks: each one times a piece of the suite (the subject) against a
bare PyTorch equivalent (the baseline) in the same run and reports the throughput ratio
subject/baseline. No benchmark asserts on a duration (docs/design.md §10); they assert on the
values both sides compute. The session ends with one line per benchmark, ready to paste.

Environment:
  ONECYCLE_BENCH_DEVICE   torch device to benchmark on (default "cpu"; "cuda" on a GPU machine)
  ONECYCLE_BENCH_THREADS  torch CPU threads (default 1, see `device`)

On CPU the clock is this process's CPU time (time.process_time), on CUDA the wall clock. The
CPU machines are shared virtual machines: wall time of the same LeNet round swung between 1.7 s
and 3.7 s while other users' jobs ran, ~1/3 of it time the process was not even scheduled,
which CPU time leaves out. (Their work still slows ours through shared caches, so rounds stay
short and alternate: see `paired`.) On CUDA the work happens on the GPU, outside this
process's CPU time, so only the wall clock sees it.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

DEVICE_ENV = "ONECYCLE_BENCH_DEVICE"
THREADS_ENV = "ONECYCLE_BENCH_THREADS"
RESULTS = pytest.StashKey[list[dict[str, Any]]]()
LINES = pytest.StashKey[list[str]]()  # benchmarks that report counts, not ratios


def bench_device() -> torch.device:
    return torch.device(os.environ.get(DEVICE_ENV, "cpu"))


def bench_timer() -> Callable[[], float]:
    return time.process_time if bench_device().type == "cpu" else time.perf_counter


@pytest.fixture(autouse=True)
def _same_clock(request) -> None:
    # pytest-benchmark reads its timer from the test's `benchmark` marker when it builds the
    # `benchmark` fixture (after autouse fixtures); `paired` times the baseline with the same.
    request.node.add_marker(pytest.mark.benchmark(timer=bench_timer()))


@pytest.fixture(scope="session")
def device():
    chosen = bench_device()
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{DEVICE_ENV}={chosen}, but CUDA is not available on this machine")
    threads = torch.get_num_threads()
    # Other users share the cores of the CPU machines: with several threads one descheduled
    # OpenMP worker stalls every op (the same LeNet loop took 2 s or 16 s with 2 threads),
    # while one thread keeps the paired rounds comparable.
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    yield chosen
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Pair:
    """What the baseline and the subject returned in their last timed round."""
    baseline: Any
    subject: Any


@pytest.fixture
def paired(benchmark, device, request):
    """`paired(baseline=..., subject=..., ...)` times both and records their ratio.

    Both callables must end with a host read of what they computed (e.g. `.tolist()`), so a
    round's time includes the device work it queued.
    """

    def run(*, baseline: Callable[[], Any], subject: Callable[[], Any], labels: tuple[str, str],
            work: int, unit: str, rounds: int, target: float | None = None) -> Pair:
        """`rounds` timed rounds of each, alternating, after one warm-up round of each; `work`
        is how many `unit`s one round processes."""
        if benchmark.disabled:
            pytest.skip("paired benchmarks check the values of their full set of timed rounds; "
                        "run them without --benchmark-disable")
        baseline_times: list[float] = []
        last: dict[str, Any] = {}
        clock = bench_timer()

        def before_subject_round() -> None:
            # pytest-benchmark times one callable per test. Its setup hook runs untimed right
            # before every round, so the baseline runs there, timed by hand: the two alternate
            # and a load spike from other users of the machine hits both alike.
            start = clock()
            last["baseline"] = baseline()
            baseline_times.append(clock() - start)

        subject_result = benchmark.pedantic(subject, setup=before_subject_round, rounds=rounds,
                                            warmup_rounds=1)
        # [0] is the warm-up round's baseline.
        record_ratio(request, benchmark, baseline_times[1:], list(benchmark.stats.stats.data),
                     labels=labels, work=work, unit=unit, clock=clock.__name__, target=target)
        return Pair(last["baseline"], subject_result)

    return run


def record_ratio(request, benchmark, base: list[float], subj: list[float], *, labels: tuple[str, str],
                 work: int, unit: str, clock: str, target: float | None) -> None:
    """Record the paired rounds' times (seconds per round, baseline and subject) and their
    ratio for the session's summary and pytest-benchmark's saved extra_info."""
    # The median of per-round ratios: a slow stretch of the machine affects a round's
    # baseline and subject together, so it cancels within the pair.
    ratios = [b / s for b, s in zip(base, subj, strict=True)]
    q1, ratio, q3 = statistics.quantiles(ratios, n=4)
    info = {
        "device": str(bench_device()), "threads": torch.get_num_threads(), "clock": clock,
        "rounds": len(ratios),
        "baseline": labels[0], "subject": labels[1], "work": work, "unit": unit,
        "baseline_s": base, "subject_s": subj,
        "baseline_per_s": work / statistics.median(base),
        "subject_per_s": work / statistics.median(subj),
        "ratio": ratio, "ratio_q1": q1, "ratio_q3": q3, "target": target,
    }
    benchmark.extra_info.update(info)
    request.config.stash.setdefault(RESULTS, []).append({"name": request.node.name, **info})


def record_line(request, line: str) -> None:
    """A line for the session's summary from a benchmark that counts rather than times."""
    request.config.stash.setdefault(LINES, []).append(line)


def pytest_terminal_summary(terminalreporter, config) -> None:
    lines = config.stash.get(LINES, [])
    if lines:
        terminalreporter.section("onecycle op counts")
        for line in lines:
            terminalreporter.write_line(line)
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    first = results[0]
    terminalreporter.section("onecycle benchmark ratios")
    terminalreporter.write_line(
        f"device {first['device']}, {first['threads']} CPU thread(s), clock {first['clock']}; "
        "ratio = subject/baseline throughput, median [quartiles] of per-round ratios (rounds "
        "alternate)")
    for r in results:
        target = "" if r["target"] is None else f" (target >= {r['target']:g})"
        terminalreporter.write_line(
            f"{r['name']}: ratio {r['ratio']:.3f} [{r['ratio_q1']:.3f}, {r['ratio_q3']:.3f}]"
            f"{target}; {r['subject']} {r['subject_per_s']:,.0f} {r['unit']}/s vs {r['baseline']} "
            f"{r['baseline_per_s']:,.0f} {r['unit']}/s, {r['rounds']} rounds")
