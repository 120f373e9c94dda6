"""The end of a SLURM job array, settled by a small job that SLURM starts after it (``--dependency=afterany``).

A trial's task records the trial's end itself: status.json, its MLflow child run, and the sweep's parent run when
it is the last to end (:mod:`.job`). But a task can end where that code never runs: an import failing on the
compute node, a node failure, the out-of-memory killer or a hard kill mid-step, the time limit with no requeue
left. Nothing would record such a trial, its MLflow run would be missing or stay RUNNING, and the sweep's parent
run would stay RUNNING for ever (nobody waits on a SLURM sweep).

The settler runs once every task of its array has ended. For each trial whose latest task is in that array and
whose end was not recorded, it records one from SLURM's final state of the task
(:func:`orchestrator.trial_tracking.record_end_outside_runner`): ``failed`` with the state, exit code and the last
line of the task's stderr, or ``interrupted`` (resumable) for a task cancelled or timed out without a checkpoint
record. Then, when no other array of the sweep is still queued or running, it closes the parent run with the
sweep's outcome (FINISHED, FAILED, or KILLED while trials remain to be resumed).

It needs no torch: one CPU for a few seconds, in the same partition/account as the array.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.backends.slurm.cluster import TaskState, live_arrays, task_states
from orchestrator.backends.slurm.state import array_ids, read_state, stderr_tail
from orchestrator.lifecycle import close_sweep, sweep_outcome
from orchestrator.status import TrialStatus, read_status, trial_status
from orchestrator.tracking import Tracker
from orchestrator.trial import Trial
from orchestrator.trial_tracking import record_end_outside_runner
from orchestrator.workdir import SweepContext, read_trials

#: SLURM end states of a task that mean the trial failed (its runner could not have recorded it).
FAILED_STATES = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
#: End states after which the trial can be resumed from its last checkpoint.
STOPPED_STATES = {"CANCELLED", "TIMEOUT", "PREEMPTED", "COMPLETED"}
#: What the trial runner writes when it records an end itself.
RECORDED = {"done", "failed", "interrupted"}
SETTLE_TIMEOUT_MIN = 10
REPORT_TIMEOUT_S = 300
LAUNCHER_LINES = ("srun:", "slurmstepd:")  # SLURM's own lines after the task's error: not the cause


def unrecorded_end(task: TaskState, recorded: str | None) -> Literal["failed", "interrupted"] | None:
    """What to record for a trial whose task ended in ``task.state`` while its status.json says ``recorded``
    (None: never started): nothing when the runner recorded an end, or the task has not ended."""
    if recorded in RECORDED:
        return None
    if task.state in FAILED_STATES:
        return "failed"
    if task.state in STOPPED_STATES:
        return "interrupted" if recorded == "running" else None
    return None


def end_reason(ctx: SweepContext, task: TaskState, state: str) -> str:
    """One line: what SLURM says, and the last line of the task's stderr (usually the exception)."""
    tail = [line.strip() for line in stderr_tail(ctx, task.job_id).splitlines()
            if line.strip() and not line.startswith(LAUNCHER_LINES)]
    cause = f": {tail[-1][:400]}" if tail else ""
    where = f"SLURM task {task.job_id} ended {task.state} (exit code {task.exit_code or '?'})"
    if state == "failed":
        return f"{where} outside the trial runner{cause}"
    return f"{where} before the trial recorded a checkpoint stop; submit again to resume"


def settle_array(ctx: SweepContext, array: str) -> dict[str, str]:
    """Record the end of every trial of ``array`` that ended unrecorded; close the parent run when no array of
    the sweep is live. Returns {trial id: state recorded}."""
    jobs = read_state(ctx)["tasks"]
    trials = read_trials(ctx)
    mine = {t.id: jobs[t.id] for t in trials if jobs.get(t.id, "").split("_")[0] == array}
    states = task_states([array])
    settled: dict[str, str] = {}
    for trial in trials:
        job = mine.get(trial.id)
        task = states.get(job) if job else None
        if task is None:
            continue
        state = unrecorded_end(task, read_status(ctx.trial_dir(trial.id)).get("state"))
        if state and record_end_outside_runner(trial, ctx, state, end_reason(ctx, task, state)):
            settled[trial.id] = state
    others = [a for a in array_ids(ctx) if a != array]
    if ctx.parent_run_id and not live_arrays(others):
        close_sweep(ctx, Tracker(ctx.tracking_uri), sweep_outcome(_statuses(ctx, trials)))
        report_sweep(ctx)
    return settled


def report_sweep(ctx: SweepContext) -> int:
    """The sweep's summary into its parent run: ``convit-sweep compare`` in a child process (the backends sit
    below compare in the data flow and never import it); its output goes to this job's log."""
    cmd = [sys.executable, "-P", "-m", "orchestrator.cli", "compare", ctx.name, "--workdir", str(ctx.workdir),
           "--out", str(ctx.sweep_dir / "compare")]
    try:
        return subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, timeout=REPORT_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        print(f"convit-slurm: the sweep's summary took over {REPORT_TIMEOUT_S} s; left out", file=sys.stderr)
        return -1


def _statuses(ctx: SweepContext, trials: list[Trial]) -> list[TrialStatus]:
    return [trial_status(t, ctx.trial_dir(t.id)) for t in trials]


@dataclass
class ArraySettler:
    """The callable of the settling job (pickled by submitit; the sweep is read from its folder when it runs)."""

    workdir: str
    sweep: str
    array: str

    def __call__(self) -> dict[str, Any]:
        started = time.time()
        ctx = SweepContext.load(Path(self.workdir), self.sweep)
        settled = settle_array(ctx, self.array)
        for trial_id, state in settled.items():
            print(f"convit-slurm: trial {trial_id} ended unrecorded; recorded as {state}", file=sys.stderr)
        print(f"convit-slurm: array {self.array} settled in {time.time() - started:.1f} s "
              f"({len(settled)} trial(s) recorded here)", file=sys.stderr)
        return settled
