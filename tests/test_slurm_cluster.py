"""The local SLURM cluster (slurm/start.sh) works the way the SLURM backend relies on.

Real daemons, real jobs through submitit: a job array returns its results and `sacct` (which submitit reads job
states from) reports every task COMPLETED; a USR2 to a Checkpointable job checkpoints, requeues, and the requeued job
resumes from the checkpointed state. Skipped, with the reason, where no cluster is running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "slurm" / "profiles"
PROFILE_KEYS = {
    "nodes": int,
    "gpus_per_node": int,
    "tasks_per_node": int,
    "cpus_per_task": int,
    "mem_gb": (int, float),
    "timeout_min": int,
    "partition": (str, type(None)),
    "account": (str, type(None)),
    "qos": (str, type(None)),
    "constraint": (str, type(None)),
    "array_parallelism": int,
    "signal_delay_s": int,
    "max_requeues": int,
    "setup": list,
    "additional_parameters": dict,
}

# The job processes cannot import this test module (tests/ is no package): ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def load_profile(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROFILES / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", ["local", "example-gpu-cluster"])
def test_profile_has_every_key_with_its_type(name: str) -> None:
    profile = load_profile(name)
    assert set(profile) == set(PROFILE_KEYS), f"{name}.yaml keys differ from the profile contract"
    for key, expected in PROFILE_KEYS.items():
        value = profile[key]
        assert isinstance(value, expected) and not isinstance(value, bool), f"{name}.yaml: {key}={value!r}"
    assert all(isinstance(line, str) for line in profile["setup"])


# ---------------------------------------------------------------- on the running cluster


def _run(*cmd: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def local_profile() -> dict[str, Any]:
    """The local profile, once the controller is known to answer (skip otherwise)."""
    if shutil.which("sinfo") is None:
        pytest.skip("sinfo not on PATH: install and start the local cluster (slurm/install.sh && slurm/start.sh)")
    try:
        answer = _run("sinfo", "-h", "-o", "%T")
    except subprocess.TimeoutExpired:
        answer = None
    if answer is None or answer.returncode != 0 or not answer.stdout.strip():
        pytest.skip("the SLURM controller does not answer (sinfo failed): start it with slurm/start.sh")
    return load_profile("local")


def _executor(folder: Path, profile: dict[str, Any], timeout_min: int = 5) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=profile["max_requeues"])
    executor.update_parameters(
        timeout_min=timeout_min,
        slurm_partition=profile["partition"],
        cpus_per_task=profile["cpus_per_task"],
        mem_gb=1,
        slurm_array_parallelism=profile["array_parallelism"],
        slurm_signal_delay_s=profile["signal_delay_s"],
    )
    return executor


def _wait(jobs: list[submitit.Job[Any]], timeout_s: float) -> None:
    """Wait for jobs to finish; on timeout cancel them and fail with their state and stderr."""
    deadline = time.monotonic() + timeout_s
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            details = "\n".join(f"{job.job_id}: {job.state}\n{job.stderr() or ''}"[-2000:] for job in jobs)
            for job in jobs:
                job.cancel(check=False)
            pytest.fail(f"jobs not done after {timeout_s}s:\n{details}")
        time.sleep(0.5)


def _sacct_states(job_id: str, duplicates: bool = False) -> dict[str, list[str]]:
    """sacct's states per job id (array tasks as ID_N); with duplicates, every record a requeue left."""
    cmd = ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State"] + (["-D"] if duplicates else [])
    out = _run(*cmd)
    assert out.returncode == 0, f"sacct failed (is slurmdbd up?): {out.stderr}"
    states: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        jid, state = line.split("|")
        states.setdefault(jid, []).append(state.split()[0])
    return states


def _poll(check, timeout_s: float, what: str):
    """Return check()'s first truthy value; sacct lags squeue by a few seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}; last: {value!r}")
        time.sleep(1)


def square_in_slurm(x: int) -> dict[str, Any]:
    """Runs inside an array task: reports what SLURM told the task, so the test sees it really ran there."""
    return {
        "square": x * x,
        "array_task": int(os.environ["SLURM_ARRAY_TASK_ID"]),
        "partition": os.environ["SLURM_JOB_PARTITION"],
    }


@pytest.mark.slurm
def test_job_array_completes_and_sacct_reports_completed(tmp_path: Path, local_profile: dict[str, Any]) -> None:
    executor = _executor(tmp_path / "submitit", local_profile)
    jobs = executor.map_array(square_in_slurm, [2, 3, 4])
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(3)]
    _wait(jobs, timeout_s=120)

    results = [job.result() for job in jobs]
    assert [r["square"] for r in results] == [4, 9, 16]
    assert [r["array_task"] for r in results] == [0, 1, 2]
    assert {r["partition"] for r in results} == {local_profile["partition"]}

    expected = {f"{array_id}_{i}": ["COMPLETED"] for i in range(3)}
    states = _poll(lambda: (s := _sacct_states(array_id)) == expected and s, 30, "sacct to show COMPLETED")
    assert states == expected
    # submitit reads its states from sacct too (a forced call: its cache may predate the jobs' end).
    assert [job.get_info(mode="force").get("State") for job in jobs] == ["COMPLETED"] * 3


class CountSteps(submitit.helpers.Checkpointable):
    """Counts to `total` in short sleeps; checkpoint() (inherited) pickles self, so progress survives a requeue."""

    def __init__(self) -> None:
        self.steps = 0
        self.resumed_from: int | None = None

    def __call__(self, progress_file: str, total: int) -> dict[str, Any]:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if restarts:
            self.resumed_from = self.steps
        while self.steps < total:
            time.sleep(0.5)
            self.steps += 1
            Path(progress_file).write_text(f"{restarts} {self.steps}")
        return {"steps": self.steps, "restarts": restarts, "resumed_from": self.resumed_from}


@pytest.mark.slurm
def test_usr2_checkpoints_requeues_and_resumes(tmp_path: Path, local_profile: dict[str, Any]) -> None:
    progress = tmp_path / "progress"
    job = _executor(tmp_path / "submitit", local_profile).submit(CountSteps(), str(progress), 20)

    def steps_before_signal() -> int:
        text = progress.read_text() if progress.exists() else ""
        restarts, _, steps = text.partition(" ")
        return int(steps) if restarts == "0" and steps.isdigit() and int(steps) >= 3 else 0

    try:
        _poll(steps_before_signal, 60, "the job to make progress")
        signalled = _run("scancel", "--signal=USR2", job.job_id)
        assert signalled.returncode == 0, signalled.stderr
        _wait([job], timeout_s=120)
    finally:
        if not job.done():
            job.cancel(check=False)

    result = job.result()
    assert result["steps"] == 20
    assert result["restarts"] >= 1, "the job was not requeued"
    assert result["resumed_from"] is not None and result["resumed_from"] >= 3, "the checkpointed progress was lost"
    records = _poll(
        lambda: (r := _sacct_states(job.job_id, duplicates=True).get(job.job_id)) and r[-1] == "COMPLETED" and r,
        30,
        "sacct to show COMPLETED",
    )
    assert "REQUEUED" in records, f"sacct shows no requeue: {records}"
