"""The SLURM backend: a sweep is ONE job array submitted through submitit, one array task per trial.

``submit`` resolves the sweep's ``slurm`` section (its cluster profile already merged in by
:class:`~orchestrator.sections.SlurmSection`), checks the cluster, copies the code into the sweep folder
(:mod:`.snapshot`), and submits every unfinished trial as a task of one array with
``submitit.AutoExecutor(cluster="slurm")``; it returns at once (``blocking = False``). Each task runs
:class:`~orchestrator.backends.slurm.job.SlurmTrial`: the engine and MLflow logging through the trial runner,
with exact checkpoints on USR2 (time limit, preemption) and SIGTERM, and requeues through submitit.

``status`` combines the trial folders with SLURM's view (squeue/sacct): queue state, restarts, last metrics and,
for a failed trial, the tail of its stderr. ``cancel`` runs ``scancel`` on the sweep's arrays: queued tasks never
start; running ones get SIGTERM, write an exact checkpoint within SLURM's KillWait and stop, so submitting the
sweep again resumes them.
"""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import submitit
from rich.console import Console
from submitit.slurm.slurm import _make_sbatch_string

from convit.records import read_json
from orchestrator.backends.base import Backend
from orchestrator.backends.slurm.cluster import (TaskState, check_account, check_memory, check_time_limit,
                                                 live_arrays, require_cluster, scancel, task_states)
from orchestrator.backends.slurm.job import TASK_FILE, SlurmTrial
from orchestrator.backends.slurm.settle import FAILED_STATES, SETTLE_TIMEOUT_MIN, ArraySettler
from orchestrator.backends.slurm.snapshot import snapshot_code
from orchestrator.backends.slurm.state import (SLURM_DIR, array_ids, logs_dir, read_state, record_array,
                                               record_settler, stderr_path, stderr_tail)
from orchestrator.errors import OrchestratorError
from orchestrator.lifecycle import KILLED, close_if_all_ended, close_sweep
from orchestrator.sections.slurm import SlurmSection, sbatch_parameters
from orchestrator.status import TrialStatus, trial_status
from orchestrator.tracking import Tracker
from orchestrator.trial import Trial
from orchestrator.workdir import SweepContext, read_trials

CANCEL_WAIT_S = 120.0
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "PREEMPTED"}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED"}


@dataclass
class SlurmPlan:
    """What ``submit`` would hand to sbatch: the batch script and one pickled callable per task."""

    script: str
    tasks: int
    pickle_bytes: int


def resolve_options(sweep: SweepContext) -> SlurmSection:
    """The sweep's section, typed: profile values were merged when the sweep file was validated, and the record
    read back from sweep.json does not read the profile again (SlurmSection.from_record)."""
    if not isinstance(sweep.options, SlurmSection):
        raise OrchestratorError(f"sweep '{sweep.name}' was recorded for the {sweep.backend} backend, not slurm")
    return sweep.options


def _setup_lines(opts: SlurmSection, snapshot: Path | str) -> list[str]:
    """The user's setup lines, then the code snapshot first on PYTHONPATH."""
    snap = shlex.quote(str(snapshot))
    return [*opts.setup, f"export PYTHONPATH={snap}${{PYTHONPATH:+:$PYTHONPATH}}"]


def executor_parameters(sweep: SweepContext, opts: SlurmSection, snapshot: Path | str) -> dict[str, Any]:
    """submitit parameters: the generic ones (AutoExecutor names), then ``slurm_``-prefixed ones."""
    params: dict[str, Any] = {
        "name": f"convit-{sweep.name}", "timeout_min": opts.timeout_min, "nodes": opts.nodes,
        "tasks_per_node": opts.tasks_per_node, "cpus_per_task": opts.cpus_per_task,
        "slurm_array_parallelism": opts.array_parallelism, "slurm_signal_delay_s": opts.signal_delay_s,
        "slurm_setup": _setup_lines(opts, snapshot),
    }
    if opts.nodes * opts.tasks_per_node > 1:  # a DDP rank that dies must not leave the others in a collective
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    if opts.mem_gb is not None:
        params["mem_gb"] = opts.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(opts, key) is not None:
            params[f"slurm_{key}"] = getattr(opts, key)
    extra = sbatch_parameters(opts.additional_parameters)
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def settler_parameters(sweep: SweepContext, opts: SlurmSection, snapshot: Path | str, array: str) -> dict[str, Any]:
    """One CPU for a few minutes, where the array ran (partition, account, qos, the user's extra sbatch lines),
    started by SLURM once every task of ``array`` has ended, whatever their state."""
    params: dict[str, Any] = {
        "name": f"convit-{sweep.name}-settle", "timeout_min": SETTLE_TIMEOUT_MIN, "nodes": 1, "tasks_per_node": 1,
        "cpus_per_task": 1, "slurm_setup": _setup_lines(opts, snapshot),
        "slurm_additional_parameters": {**sbatch_parameters(opts.additional_parameters),
                                        "dependency": f"afterany:{array}"},
    }
    for key in ("partition", "account", "qos"):
        if getattr(opts, key) is not None:
            params[f"slurm_{key}"] = getattr(opts, key)
    return params


def python_command() -> str:
    """The job's interpreter: this one, with -P so the job's working directory cannot shadow the snapshot."""
    return f"{shlex.quote(sys.executable)} -P"


class SlurmBackend(Backend):
    name = "slurm"
    section = SlurmSection
    blocking = False

    def __init__(self, console: Console | None = None, check: bool = True):
        self.console = console or Console(stderr=True)
        self.check = check
        if check:
            require_cluster()

    # ---------------------------------------------------------------------------------------------- submit
    def validate(self, sweep: SweepContext, trials: list[Trial]) -> None:
        """What sbatch would refuse, or accept into a job that can never start, reported before anything is
        recorded (and by --dry-run): an unknown partition or account, a time limit above the partition's."""
        if not self.check:
            return
        opts = resolve_options(sweep)
        check_time_limit(opts.partition, opts.timeout_min)
        check_account(opts.account)
        check_memory(opts.mem_gb)

    def make_executor(self, sweep: SweepContext, opts: SlurmSection, snapshot: Path | str) -> Any:
        executor = submitit.AutoExecutor(folder=logs_dir(sweep), cluster="slurm",
                                         slurm_max_num_timeout=opts.max_requeues, slurm_python=python_command())
        executor.update_parameters(**executor_parameters(sweep, opts, snapshot))
        return executor

    def submit(self, sweep: SweepContext, trials: list[Trial]) -> None:
        opts = resolve_options(sweep)
        check_time_limit(opts.partition, opts.timeout_min)
        busy = self._queued_or_running(sweep)
        todo = [t for t in trials if t.id not in busy]
        if len(todo) < len(trials):
            self.console.print(f"{len(trials) - len(todo)} trial(s) still queued or running in SLURM: left alone")
        if not todo:
            return
        snapshot = snapshot_code(sweep.sweep_dir / SLURM_DIR)
        executor = self.make_executor(sweep, opts, snapshot)
        callables = [self._callable(sweep, opts, t) for t in todo]
        try:
            with executor.batch():
                jobs = [executor.submit(fn) for fn in callables]
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal, with its message
            raise OrchestratorError(f"SLURM refused the job array: {str(exc).strip()}") from exc
        tasks = {t.id: job.job_id for t, job in zip(todo, jobs)}
        array = jobs[0].job_id.split("_")[0]
        record_array(sweep, array, tasks, snapshot, opts.model_dump(mode="json"))
        self.console.print(f"submitted {len(todo)} trial(s) as SLURM job array {array} "
                           f"(at most {min(len(todo), opts.array_parallelism)} at once, {opts.timeout_min} min "
                           f"per job, up to {opts.max_requeues} time-limit requeues); logs: {logs_dir(sweep)}")
        self._submit_settler(sweep, opts, snapshot, array)

    def _submit_settler(self, sweep: SweepContext, opts: SlurmSection, snapshot: Path, array: str) -> None:
        """The job that records the end of trials whose task ended outside the trial runner and closes the
        parent run, once the whole array has ended (:mod:`.settle`). Its refusal does not undo the array."""
        executor = submitit.AutoExecutor(folder=logs_dir(sweep), cluster="slurm", slurm_max_num_timeout=0,
                                         slurm_python=python_command())
        params = settler_parameters(sweep, opts, snapshot, array)
        executor.update_parameters(**params)
        try:
            job = executor.submit(ArraySettler(str(sweep.workdir), sweep.name, array))
        except Exception as exc:  # noqa: BLE001 - the array runs; only the end of unrecorded failures is at stake
            self.console.print(f"warning: SLURM refused the job that settles array {array} after it ends "
                               f"({' '.join(str(exc).split())[:300]}); a task that fails outside its trial runner "
                               "is then shown by `convit-sweep status` but not recorded in MLflow", markup=False)
            return
        record_settler(sweep, job.job_id, array)

    def plan(self, sweep: SweepContext, trials: list[Trial]) -> SlurmPlan:
        """A dry run of ``submit``: the batch script and the pickled callables, nothing written or submitted.
        Needs no cluster (the script is rendered by submitit's own generator)."""
        opts = resolve_options(sweep)
        executor_params = executor_parameters(sweep, opts, sweep.sweep_dir / SLURM_DIR / "code-<hash>")
        sbatch: dict[str, Any] = {"job_name": executor_params.pop("name"), "time": opts.timeout_min,
                                  "nodes": opts.nodes, "ntasks_per_node": opts.tasks_per_node,
                                  "cpus_per_task": opts.cpus_per_task}
        if "gpus_per_node" in executor_params:
            sbatch["gpus_per_node"] = executor_params.pop("gpus_per_node")
        if "mem_gb" in executor_params:
            mem = executor_params.pop("mem_gb")
            sbatch["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
        sbatch.update({k.removeprefix("slurm_"): v for k, v in executor_params.items() if k.startswith("slurm_")})
        command = f"{python_command()} -u -m submitit.core._submit {shlex.quote(str(logs_dir(sweep)))}"
        script = _make_sbatch_string(command=command, folder=logs_dir(sweep), map_count=len(trials), **sbatch)
        size = sum(len(cloudpickle.dumps(self._callable(sweep, opts, t))) for t in trials)
        return SlurmPlan(script=script, tasks=len(trials), pickle_bytes=size)

    @staticmethod
    def _callable(sweep: SweepContext, opts: SlurmSection, trial: Trial) -> SlurmTrial:
        return SlurmTrial(str(sweep.trial_dir(trial.id)), opts.signal_delay_s, opts.timeout_min)

    def _queued_or_running(self, sweep: SweepContext) -> set[str]:
        """Trials whose latest array task is still queued or running (resubmitting them would run them twice)."""
        state = read_state(sweep)
        live = live_arrays(array_ids(sweep))
        if not live:
            return set()
        tasks = task_states(sorted(live))
        return {tid for tid, job in state["tasks"].items()
                if job.split("_")[0] in live and tasks.get(job, TaskState(job)).state in (_QUEUED | _RUNNING)}

    # ---------------------------------------------------------------------------------------------- status
    def status(self, sweep: SweepContext) -> list[TrialStatus]:
        statuses = [trial_status(t, sweep.trial_dir(t.id)) for t in read_trials(sweep)]
        jobs = read_state(sweep)["tasks"]
        if not jobs:
            return statuses
        slurm = task_states(array_ids(sweep))
        for status in statuses:
            job_id = jobs.get(status.trial_id)
            if job_id:
                self._merge(sweep, status, slurm.get(job_id) or TaskState(job_id))
        return statuses

    def _merge(self, sweep: SweepContext, status: TrialStatus, task: TaskState) -> None:
        """The trial folder says what the trial did; SLURM says where its task is. Folder 'done'/'failed' win."""
        trial_dir = sweep.trial_dir(status.trial_id)
        starts = (read_json(trial_dir / TASK_FILE, {}) or {}).get("starts", [])
        restarts = max(task.requeues, max((s.get("restart_count", 0) for s in starts), default=0))
        status.ref = task.job_id
        info: dict[str, Any] = {"job_id": task.job_id, "state": task.state, "reason": task.reason,
                                "exit_code": task.exit_code, "restarts": restarts,
                                "stderr": str(stderr_path(sweep, task.job_id))}
        where = f"job {task.job_id} {task.state}" + (f" ({task.reason})" if task.reason else "")
        where += f" · {restarts} restart{'s' if restarts != 1 else ''}" if restarts else ""
        if status.state == "done":
            status.detail = where
        elif status.state == "failed" or task.state in FAILED_STATES:
            reason = status.detail or f"SLURM {task.state} (exit code {task.exit_code or '?'})"
            tail = stderr_tail(sweep, task.job_id)
            info["stderr_tail"] = tail
            status.state = "failed"
            status.detail = f"{reason} · {where}" + (f"\nstderr ({info['stderr']}):\n{tail}" if tail else "")
        elif task.state in _QUEUED:
            status.state = "pending"
            status.detail = (f"requeued, waiting · {where}" if restarts or starts else f"queued · {where}")
        elif task.state in _RUNNING:
            status.state = "running"
            status.detail = where
        elif task.state == "CANCELLED":
            status.state = "interrupted" if starts else "pending"
            status.detail = (f"cancelled{' after a checkpoint' if starts else ' before it started'}; submit again "
                             f"to {'resume' if starts else 'run'} it · {where}")
        elif task.state == "TIMEOUT":
            status.state = "interrupted"
            status.detail = (f"time limit reached and no requeue left (max_requeues); submit again to resume · "
                             f"{where}")
        elif task.state == "COMPLETED" and status.state in ("running", "pending"):
            status.state = "interrupted"
            status.detail = f"the task ended without a final state · {where}"
        else:
            status.detail = f"{status.detail} · {where}" if status.detail else where
        status.slurm = info  # type: ignore[attr-defined]  # extra, shown by `status --json`

    # ---------------------------------------------------------------------------------------------- cancel
    def cancel(self, sweep: SweepContext) -> None:
        """scancel every live array of the sweep and wait until SLURM has ended them; running trials checkpoint
        on the SIGTERM first (within KillWait). The parent run is marked KILLED unless every trial ended."""
        live = sorted(live_arrays(array_ids(sweep)))
        if live:
            scancel(live)
            deadline = time.time() + CANCEL_WAIT_S
            while time.time() < deadline and live_arrays(live):
                time.sleep(1.0)
            if live_arrays(live):
                raise OrchestratorError(f"SLURM job(s) {', '.join(live)} still not ended {CANCEL_WAIT_S:.0f} s after "
                                        "scancel; check `squeue`")
        if sweep.parent_run_id and close_if_all_ended(sweep) is None:
            close_sweep(sweep, Tracker(sweep.tracking_uri), KILLED)
