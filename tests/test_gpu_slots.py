"""GPU slot claims: distinct ids across processes, waiting and timeouts, release on SIGKILL,
sharing, the SLURM step-aside, the exec wrapper, and a real Snakemake run.

No GPUs here: pools are fake ids given through $ONECYCLE_GPU_SLOTS or `pool=`. Claims that
succeed run in child processes, because a claim holds its locks and rewrites
CUDA_VISIBLE_DEVICES for the rest of the process's life.
"""

from __future__ import annotations

import itertools
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import HANG_GUARD_S, REPO
from onecycle.dag import gpu_slots
from onecycle.dag.gpu_slots import GpuSlotError, claim

WORKFLOW = Path(__file__).parent / "workflows" / "gpu_slots" / "Snakefile"

# A child that claims, prints its ids (or the error) and holds the claim until stdin closes.
HOLDER = """
import sys
from onecycle.dag.gpu_slots import GpuSlotError, claim
n, per_device, timeout_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
try:
    print(",".join(claim(n, per_device=per_device, timeout_s=timeout_s)), flush=True)
except GpuSlotError as error:
    print(f"error: {error}", flush=True)
    sys.exit(1)
sys.stdin.read()
"""


@pytest.fixture
def slot_env(tmp_path, monkeypatch):
    """A clean environment with a private lock directory; returns a pool setter."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpu_slots.SLOTS_ENV, gpu_slots.CLAIMED_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(gpu_slots.LOCK_DIR_ENV, str(tmp_path / "locks"))
    return lambda ids: monkeypatch.setenv(gpu_slots.SLOTS_ENV, ids)


@pytest.fixture
def holders():
    """Starts claiming children; kills any still running at the end of the test."""
    started: list[subprocess.Popen] = []

    def start(n: int = 1, per_device: int = 1, timeout_s: float = 0.0) -> subprocess.Popen:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(n), str(per_device), str(timeout_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()
        child.wait()


def first_line(child: subprocess.Popen, timeout_s: float = HANG_GUARD_S) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        assert selector.select(timeout_s), "the claiming child printed nothing"
    return child.stdout.readline().strip()


def release(child: subprocess.Popen) -> None:
    child.stdin.close()
    assert child.wait(timeout=HANG_GUARD_S) == 0


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- distinct ids, waiting, release ---------------------------------------------------

def test_concurrent_claims_get_distinct_ids(slot_env, holders):
    slot_env("0,1,2,3")
    # Started together, so they race for the same first free device.
    children = [holders(timeout_s=10) for _ in range(4)]
    ids = [first_line(child) for child in children]
    assert sorted(ids) == ["0", "1", "2", "3"]


def test_claim_beyond_free_slots_waits_then_times_out(slot_env, holders):
    slot_env("0,1")
    assert first_line(holders(n=2)) == "0,1"
    fds_before = open_fd_count()
    started = time.monotonic()
    with pytest.raises(GpuSlotError, match=r"timed out after 0\.5 s waiting for 1 free GPU slot"):
        claim(1, timeout_s=0.5)
    assert time.monotonic() - started >= 0.5
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert open_fd_count() == fds_before


def test_claim_of_more_gpus_than_the_pool_fails_at_once(slot_env):
    with pytest.raises(GpuSlotError, match="asked for 3 GPUs but the pool has only 2: 0,1"):
        claim(3, pool=["0", "1"])


def test_sigkilled_holder_frees_its_slot_at_once(slot_env, holders):
    slot_env("0")
    holder = holders()
    assert first_line(holder) == "0"
    assert first_line(holders()).startswith("error: timed out")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=HANG_GUARD_S)
    # timeout_s=0: a single attempt, so the slot must be free right after the kill.
    assert first_line(holders()) == "0"


def test_partial_multi_gpu_claim_holds_nothing_while_it_waits(slot_env, holders):
    slot_env("0,1")
    assert first_line(holders()) == "0"
    holders(n=2, timeout_s=20)
    # Device 1 is free, and the waiting two-GPU claim must not sit on it while device 0 is
    # taken: a one-GPU claim gets it within a few of the waiter's retries.
    assert first_line(holders(timeout_s=5)) == "1"


def test_two_gpu_claim_gets_both_once_they_are_free(slot_env, holders):
    slot_env("0,1")
    holder = holders()
    assert first_line(holder) == "0"
    wants_both = holders(n=2, timeout_s=20)
    release(holder)
    assert first_line(wants_both) == "0,1"


# --- sharing a device -----------------------------------------------------------------

def test_per_device_lets_k_jobs_share_a_device(slot_env, holders):
    slot_env("0")
    assert first_line(holders(per_device=2)) == "0"
    assert first_line(holders(per_device=2)) == "0"
    assert first_line(holders(per_device=2)).startswith("error: timed out")


def test_sharing_jobs_fill_a_device_before_the_next(slot_env, holders):
    slot_env("0,1")
    assert [first_line(holders(per_device=2)) for _ in range(3)] == ["0", "0", "1"]


def test_free_seats_leave_whole_devices_for_exclusive_jobs(slot_env, holders):
    # The workflow's seat count (jobs_per_gpu 2, 2 devices = 4 seats): two sharing jobs take 2
    # seats, and the 2 seats Snakemake still sees free are one whole device.
    slot_env("0,1")
    assert [first_line(holders(per_device=2)) for _ in range(2)] == ["0", "0"]
    assert first_line(holders()) == "1"


def test_exclusive_and_sharing_jobs_never_meet_on_a_device(slot_env, holders):
    slot_env("0")
    exclusive = holders()
    assert first_line(exclusive) == "0"
    assert first_line(holders(per_device=4)).startswith("error: timed out")
    release(exclusive)
    assert first_line(holders(per_device=4)) == "0"
    assert first_line(holders()).startswith("error: timed out")


# --- where ids come from, and when nothing is claimed -------------------------------

def test_steps_aside_when_slurm_bound_the_devices(slot_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    lock_dir = tmp_path / "unused"
    assert claim(1, pool=["7"], lock_dir=lock_dir, timeout_s=0) == ["2", "3"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert not lock_dir.exists()


def test_fewer_bound_devices_than_asked_is_an_error(slot_env, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(GpuSlotError, match="asked for 2 GPUs but this job was given 1 .CUDA_VISIBLE_DEVICES='3'"):
        claim(2)


def test_slurm_job_without_bound_devices_still_claims(slot_env, holders, monkeypatch):
    slot_env("5")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert first_line(holders()) == "5"


def test_claiming_no_gpus_changes_nothing(slot_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    lock_dir = tmp_path / "unused"
    assert claim(0, lock_dir=lock_dir) == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert not lock_dir.exists()


def test_inherited_cuda_visible_devices_is_the_pool(slot_env, holders, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert first_line(holders(n=2)) == "4,6"


def test_nvidia_smi_listing_is_the_pool_without_other_hints(slot_env, monkeypatch, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_smi = fake_bin / "nvidia-smi"
    fake_smi.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 (UUID: GPU-aaaa)'\n"
        "echo '  MIG 1g.10gb Device 0: (UUID: MIG-bbbb)'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-cccc)'\n")
    fake_smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    # Asking for one GPU too many makes the error spell out the pool: the two GPUs, not the MIG line.
    with pytest.raises(GpuSlotError, match="asked for 3 GPUs but the pool has only 2: 0,1$"):
        claim(3)


def test_no_pool_anywhere_is_a_clear_error(slot_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GpuSlotError, match="no GPU pool: nvidia-smi is not on PATH; set"):
        claim(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "number of GPUs must be >= 0, got -1"),
        ({"n": 1, "per_device": 0}, "per_device must be >= 1, got 0"),
        ({"n": 1, "timeout_s": -1}, "timeout_s must be >= 0, got -1"),
        ({"n": 1, "pool": ["0", "1", "0"]}, "the pool argument lists GPU ids more than once: 0"),
        ({"n": 1, "pool": []}, "the pool argument lists no GPU ids"),
    ],
)
def test_bad_requests_are_rejected(slot_env, kwargs, message):
    with pytest.raises(GpuSlotError, match=message):
        claim(**kwargs)


def test_empty_slots_variable_is_rejected(slot_env):
    slot_env(" , ")
    with pytest.raises(GpuSlotError, match=r"\$ONECYCLE_GPU_SLOTS lists no GPU ids"):
        claim(1)


def test_claim_after_cuda_initialised_is_refused(slot_env, monkeypatch):
    class FakeCuda:
        @staticmethod
        def is_initialized() -> bool:
            return True

    monkeypatch.setitem(sys.modules, "torch", type("FakeTorch", (), {"cuda": FakeCuda}))
    with pytest.raises(GpuSlotError, match="after CUDA initialised"):
        claim(1, pool=["0"])


# --- the exec wrapper -----------------------------------------------------------------

# The wrapped program: reports its pid and devices, and that a nested claim reuses them.
WRAPPED = """
import os, sys
from onecycle.dag.gpu_slots import claim
print(os.getpid(), os.environ["CUDA_VISIBLE_DEVICES"], ",".join(claim(1, timeout_s=0)), flush=True)
sys.stdin.read()
"""


def test_exec_wrapper_hands_devices_and_locks_to_the_command(slot_env, holders):
    slot_env("0,1")
    assert first_line(holders()) == "0"
    wrapped = subprocess.Popen(
        [sys.executable, "-m", "onecycle.dag.gpu_slots", "-n", "1", "--", sys.executable, "-c", WRAPPED],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid, visible, nested = first_line(wrapped).split()
        assert (int(pid), visible, nested) == (wrapped.pid, "1", "1")  # same pid: exec, not fork
        assert first_line(holders()).startswith("error: timed out")  # the command holds device 1
        release(wrapped)
        assert first_line(holders()) == "1"
    finally:
        wrapped.kill()
        wrapped.wait()


def test_exec_wrapper_reports_a_failed_claim_in_one_line(slot_env, capsys):
    slot_env("0")
    assert gpu_slots.main(["-n", "2", "--", "true"]) == 1
    assert capsys.readouterr().err == (
        "python -m onecycle.dag.gpu_slots: error: asked for 2 GPUs but the pool has only 1: 0\n")


def test_exec_wrapper_reports_a_missing_program(slot_env, tmp_path):
    slot_env("0")
    result = subprocess.run(
        [sys.executable, "-m", "onecycle.dag.gpu_slots", "-n", "1", "--", str(tmp_path / "no-such-program")],
        capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 127
    assert "cannot run" in result.stderr and "No such file or directory" in result.stderr


def test_exec_wrapper_needs_a_command_after_the_separator(slot_env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_slots.main(["-n", "1"])
    assert exit_info.value.code == 2
    assert "give the command after '--'" in capsys.readouterr().err


# --- a real Snakemake run --------------------------------------------------------------

def read_records(out_dir: Path) -> dict[str, list[tuple[float, float, list[str]]]]:
    """Job name -> one (start, end, device ids) per execution."""
    records = {}
    for path in sorted(out_dir.glob("*.tsv")):
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        records[path.stem] = [(float(start), float(end), visible.split(",")) for start, end, visible, _ in rows]
    return records


@pytest.mark.slow
def test_snakemake_jobs_running_together_never_share_a_gpu(slot_env, tmp_path):
    shutil.copy(WORKFLOW, tmp_path / "Snakefile")
    slot_env("0,1")
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2",
         "--workflow-profile", "none", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stderr[-3000:]

    records = read_records(tmp_path / "out")
    assert sorted(records) == ["double"] + [f"single_{i}" for i in range(6)]
    assert all(len(runs) == 1 for runs in records.values())
    assert records["double"][0][2] == ["0", "1"]
    assert all(records[f"single_{i}"][0][2] in (["0"], ["1"]) for i in range(6))
    intervals = [runs[0] for runs in records.values()]
    overlapping = [(a, b) for a, b in itertools.combinations(intervals, 2) if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, "no two jobs ran at the same time, so the run proves nothing"
    assert all(not set(a[2]) & set(b[2]) for a, b in overlapping)


@pytest.mark.slow
def test_snakemake_sharing_jobs_meet_only_each_other_and_at_most_k_to_a_device(slot_env, tmp_path):
    # Seats as the main workflow counts them (jobs_per_gpu 2 on 2 devices: --resources gpu=4).
    shutil.copy(WORKFLOW, tmp_path / "Snakefile")
    slot_env("0,1")
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "8", "--resources", "gpu=4", "--workflow-profile", "none",
         "--config", "single_gpu_jobs=2", "shared_jobs=6", "jobs_per_gpu=2", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stderr[-3000:]

    records = {name: runs[0] for name, runs in read_records(tmp_path / "out").items()}
    assert len(records) == 9 and records["double"][2] == ["0", "1"]
    meetings = [(a, b) for a, b in itertools.combinations(records, 2)
                if records[a][0] < records[b][1] and records[b][0] < records[a][1]
                and set(records[a][2]) & set(records[b][2])]
    assert meetings, "no two jobs shared a device, so sharing was never exercised"
    assert all(a.startswith("shared") and b.startswith("shared") for a, b in meetings), meetings
    # Never three sharing jobs on one device at once: check at every start.
    for name, (start, _, devices) in records.items():
        on_device = [other for other, (s, e, d) in records.items() if s <= start < e and d == devices]
        assert len(on_device) <= 2, (name, on_device)


# --- the main workflow's wiring ---------------------------------------------------------------

def _sharing_config(tmp_path: Path) -> Path:
    """configs/smoke.yaml on GPUs, one seed, as an exclusive and a sharing experiment."""
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    exclusive = smoke["experiments"]["fmnist_lenet"]
    smoke.update({"seeds": [0], "gpus_per_job": 1, "jobs_per_gpu": 2,
                  "experiments": {"exclusive": exclusive, "shared": {**exclusive, "share_gpu": True}}})
    path = tmp_path / "sharing.yaml"
    path.write_text(yaml.safe_dump(smoke))
    return path


def _main_snakemake(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(_sharing_config(tmp_path)), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


@pytest.mark.slow
def test_main_workflow_gives_sharing_jobs_one_seat_and_the_per_device_flag(tmp_path):
    run = _main_snakemake(tmp_path, "-n", "-p", "--cores", "2", "--resources", "gpu=4")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = re.findall(r"rule (train|range_test):\n(?:.*\n)*?    resources: [^\n]*gpu=(\d+)\n(?:.*\n)*?"
                      r"Shell command: python -m onecycle.dag.gpu_slots -n (\d+) --per-device (\d+) -- "
                      r"onecycle [a-z-]+ --config \S*/(exclusive|shared)/", run.stdout)
    assert {(kind, exp) for kind, _, _, _, exp in jobs} == {
        (kind, exp) for kind in ("train", "range_test") for exp in ("exclusive", "shared")}
    for _, seats, gpus, per_device, experiment in jobs:
        expected = ("1", "1", "2") if experiment == "shared" else ("2", "1", "1")
        assert (seats, gpus, per_device) == expected, experiment


@pytest.mark.slow
def test_main_workflow_refuses_sharing_on_a_cluster_before_submitting(tmp_path):
    run = _main_snakemake(tmp_path, "--executor", "slurm", "--jobs", "2")
    assert run.returncode != 0
    assert "jobs_per_gpu = 2 is for one machine" in run.stderr + run.stdout
    # Nothing submitted: the Snakefile's own spec.json files (onecycle.dag.run_specs) are all it left.
    assert {path.name for path in (tmp_path / "results").rglob("*") if path.is_file()} <= {"spec.json"}
