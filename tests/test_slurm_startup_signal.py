"""A preemption that reaches a SLURM task while it is still starting (importing the job, before submitit has
installed its handler) used to kill the task unrequeued: the trial was lost. The snapshot's sitecustomize now
catches the signal at interpreter start and the job acts on it once its handlers exist: requeued, resumed, every
MLflow step once. The real local SLURM; the signal is sent the moment the task's interpreter catches it."""
from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from convit.records import read_json
from orchestrator.status import read_status
from orchestrator.tracking import Tracker, default_tracking_uri
from tests.test_local import cli, steps
from tests.test_slurm_backend_cluster import cluster_problem

pytestmark = pytest.mark.slurm


def _task_pids(job: str) -> list[int]:
    """The pids of the array's srun step tasks (not the batch shell nor srun itself, which catch USR2 to forward it),
    from /proc: `scontrol listpids` asks only the slurmd of the node it runs on, and a task may be on another node
    of a several-node local cluster (all of them share this machine's process table)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except OSError:
            continue
        if env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID")) == job and "SLURM_STEP_ID" in env \
                and env.get("SLURM_STEP_ID") != "batch":
            pids.append(int(proc.name))
    return pids


def _catching_usr2(job: str) -> bool:
    """True once a task process of ``job`` catches USR2 (the snapshot's sitecustomize has run: /proc's SigCgt).
    Before that — the few milliseconds from fork to the interpreter reading sitecustomize — nothing in the task
    can keep the signal (docs/slurm.md says so); sending it then would test SLURM's timing, not this mechanism."""
    for pid in _task_pids(job):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        caught = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.MULTILINE)
        if caught and int(caught.group(1), 16) >> (signal.SIGUSR2 - 1) & 1:
            return True
    return False


EARLY = ("import os, signal, sys, time\n"
         "time.sleep(1.5)  # the job still importing: no handler of its own yet\n"
         "got = []\n"
         "signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))\n"
         "from orchestrator.backends.slurm.job import redeliver_early_signals\n"
         "print(redeliver_early_signals(), got)\n")


@pytest.mark.parametrize("with_snapshot", [True, False])
def test_a_signal_during_interpreter_start_up_is_kept_for_the_job(tmp_path: Path, with_snapshot: bool):
    """The mechanism, deterministically: USR2 sent while the process is still 'importing'. Without the
    snapshot's sitecustomize the process dies of it (what lost trials); with it the job receives it later."""
    import os
    import signal
    import sys

    from orchestrator.backends.slurm.snapshot import snapshot_code

    repo = Path(__file__).resolve().parents[1]
    path = str(snapshot_code(tmp_path / "snap")) if with_snapshot else str(repo)
    proc = subprocess.Popen([sys.executable, "-c", EARLY], env={**os.environ, "PYTHONPATH": path,
                                                                "SLURM_JOB_ID": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=60)
    if with_snapshot:
        assert proc.returncode == 0, err
        assert out.strip() == f"[{int(signal.SIGUSR2)}] [{int(signal.SIGUSR2)}]"
    else:
        assert proc.returncode == -signal.SIGUSR2


def test_a_preemption_during_start_up_requeues_instead_of_killing(tmp_path: Path):
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    spec, work = tmp_path / "early.yaml", tmp_path / "runs"
    spec.write_text("name: early\nbase: {preset: smoke, epochs: 2, synthetic_train_size: 64}\nseeds: [0]\n"
                    "slurm: {profile: local}\n")
    out = cli("submit", str(spec), "--backend", "slurm", "--workdir", str(work))
    assert out.returncode == 0, out.stdout + out.stderr
    job = re.search(r"SLURM job array (\d+)", out.stdout + out.stderr).group(1)
    deadline = time.time() + 120
    while time.time() < deadline and not _catching_usr2(job):
        time.sleep(0.01)
    assert _catching_usr2(job), "the task never started"
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    (trial_dir,) = list((work / "sweeps" / "early" / "trials").iterdir())
    # status "done" is written after the MLflow run has ended (final.json, by the engine, comes before it)
    deadline = time.time() + 300
    while time.time() < deadline and read_status(trial_dir).get("state") != "done":
        time.sleep(1)
    assert (trial_dir / "final.json").exists() and read_status(trial_dir)["state"] == "done", "the trial was lost"
    starts = read_json(trial_dir / "slurm_task.json")["starts"]
    logs = "".join(p.read_text(errors="replace") for p in (work / "sweeps" / "early" / "slurm" / "logs").glob("*"))
    # requeued: after the trial began (a second start), or before (submitit's log, or ours for a start-up signal)
    assert len(starts) >= 2 or "Requeued job" in logs or "arrived during start-up" in logs, logs[-2000:]
    tracker = Tracker(default_tracking_uri(work))
    (run,) = tracker.trial_runs("early", "early").values()
    assert run.info.status == "FINISHED" and steps(tracker, run.info.run_id, "epoch") == [0, 1]
