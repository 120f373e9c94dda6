"""What runs inside a SLURM array task: one trial, as a submitit ``Checkpointable``.

submitit handles USR2 (sent ``signal_delay_s`` before the time limit, or by ``scancel --signal=USR2`` on
preemption) in the main thread by calling :meth:`SlurmTrial.checkpoint`, then requeues the job with what that
returns. For the checkpoint to be *exact* (mid-epoch, not the last epoch's), training runs in a worker thread
while the main thread only waits: ``checkpoint()`` asks the engine for a checkpoint at the next optimizer step
(:class:`convit.engine.TrialControl`), waits for it (bounded, so submitit still has time to requeue), and hands
back a fresh ``SlurmTrial`` for the same trial folder. The requeued task resumes from that checkpoint, and the
trial runner reopens the same MLflow run.

SIGTERM (``scancel``, ``scontrol requeue``, preemption without USR2) also asks for a checkpoint and stops; the
task then lingers until SLURM kills it or a USR2 arrives, so a SIGTERM that precedes a USR2 still requeues.

SLURM delivers the time-limit USR2 on its own ~30 s cycle, and after a requeue it sometimes does not deliver it
at all (observed on Slurm 22.05): the task would then reach its limit and end TIMEOUT, never requeued. So each
task also arms a backstop: if no USR2 has come ``signal_delay_s / 2`` before its end time (``squeue %e``), it
sends the USR2 to itself and submitit's usual checkpoint-and-requeue path runs.

Multi-task trials (nodes × tasks_per_node > 1) get RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from
submitit's TorchDistributedEnvironment; only rank 0 logs to MLflow and writes the trial folder.

This module is imported inside the job (from the code snapshot) and by the submitting process, so torch (the
engine) is imported only where a task needs it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from convit.records import CHECKPOINTS_DIR, list_checkpoints, read_json, write_json
from orchestrator.process_env import apply_thread_budget
from orchestrator.trial import Trial
from orchestrator.trial_runner import rank_hosts, run_trial_process
from orchestrator.workdir import SweepContext, read_trial_record

TASK_FILE = "slurm_task.json"  # in the trial folder: one entry per start of the trial's array task
LINGER_S = 120.0  # after a SIGTERM-stop, how long to wait for SLURM's kill (or a USR2) before giving up


def process_start_time() -> float:
    """When this process started (epoch seconds), from /proc; the import time where /proc is missing."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


def checkpoint_budget_s(signal_delay_s: float, seconds_left: float | None = None) -> float:
    """How long checkpoint() may wait for the engine: most of the signal delay, leaving submitit ~10 s (at
    least a quarter of the delay) to dump its pickle and call ``scontrol requeue`` before the hard kill; less
    when the job's end is known to be closer."""
    budget = min(signal_delay_s * 0.75, signal_delay_s - 10.0)
    if seconds_left is not None:
        budget = min(budget, seconds_left - 10.0)
    return max(1.0, budget)


def job_end_time(timeout_min: float, started: float) -> float:
    """When SLURM will stop this job: its EndTime from squeue, else process start + the time limit."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        try:
            out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                                 timeout=15)
            return datetime.fromisoformat(out.stdout.strip()).timestamp()
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return started + timeout_min * 60


def redeliver_early_signals() -> list[int]:
    """Send this process the stop signals the snapshot's sitecustomize caught while the job was still being
    imported: with submitit's and our handlers installed, a USR2 now checkpoints (nothing has run: a fresh
    start) and requeues, a SIGTERM stops; before, the same signal killed the task and the trial was lost."""
    early = sys.modules.get("sitecustomize")
    pending = list(dict.fromkeys(getattr(early, "PENDING", [])))
    if pending:
        getattr(early, "PENDING").clear()
        _log(f"signal(s) {', '.join(signal.Signals(s).name for s in pending)} arrived during start-up: acting on "
             "them now")
    for signum in pending:
        os.kill(os.getpid(), signum)
    return pending


def preempt_signal() -> signal.Signals:
    """submitit's checkpoint signal (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


def _log(message: str) -> None:
    print(f"convit-slurm [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class _Runtime:
    """The live state of one execution; never pickled (checkpoint() hands back a fresh SlurmTrial)."""

    control: Any
    worker: threading.Thread | None = None
    result: Any = None
    error: BaseException | None = None
    sigterm: bool = False
    usr2: bool = False  # checkpoint() was called (by SLURM's USR2, a preemption, or the backstop)
    first_step: float | None = None
    end: float | None = None  # when SLURM will stop the job
    finished: threading.Event = field(default_factory=threading.Event)


class SlurmTrial(Checkpointable):
    """The callable of one array task: run (or resume) the trial whose folder is ``trial_dir``.

    Only the folder path travels in the pickle: the trial, its sweep context and its checkpoints are read from
    the folder when the task starts, so a requeued task picks up whatever the previous one saved.
    """

    def __init__(self, trial_dir: str, signal_delay_s: float = 120.0, timeout_min: float = 60.0):
        self.trial_dir = str(trial_dir)
        self.signal_delay_s = float(signal_delay_s)
        self.timeout_min = float(timeout_min)
        self._runtime: _Runtime | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"trial_dir": self.trial_dir, "signal_delay_s": self.signal_delay_s, "timeout_min": self.timeout_min}

    def _fresh(self) -> "SlurmTrial":
        return type(self)(self.trial_dir, self.signal_delay_s, self.timeout_min)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime = None

    # -------------------------------------------------------------------------------------------- the task
    def __call__(self) -> dict[str, float]:
        started = process_start_time()
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=True)
        apply_thread_budget(os.environ.get("SLURM_CPUS_PER_TASK"))  # the CPUs SLURM gave this task
        rank = env.global_rank
        runtime = _Runtime(control=_make_control(self))
        self._runtime = runtime
        signal.signal(signal.SIGTERM, self._on_sigterm)
        redeliver_early_signals()  # a preemption during start-up: requeued now that submitit can handle it
        if rank == 0:
            self._record_start(env, started)
        target = self._rank0_target() if rank == 0 else self._worker_target()
        runtime.worker = threading.Thread(target=self._capture(target), name="convit-trial", daemon=True)
        runtime.worker.start()
        if rank == 0:
            runtime.end = job_end_time(self.timeout_min, started)
            threading.Thread(target=self._backstop, name="convit-usr2-backstop", daemon=True).start()
        recorded = rank != 0
        while runtime.worker.is_alive():
            runtime.worker.join(0.5)  # short joins: the main thread stays free for signal handlers
            if not recorded and runtime.first_step is not None:
                recorded = self._record_first_step(started)
        if runtime.error is not None:
            self._finish_error(runtime.error, rank)
        _ignore_late_signals()
        if rank == 0:
            self._maybe_close_sweep()
        return runtime.result

    def _rank0_target(self) -> Callable[[], Any]:
        trial_dir = Path(self.trial_dir)
        trial = _read_trial(trial_dir)
        ctx = SweepContext.for_trial_dir(trial_dir)
        tags = {"slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT", "0")}
        assert self._runtime is not None
        control = self._runtime.control
        return lambda: run_trial_process(trial, ctx, tags=tags, control=control)

    def _worker_target(self) -> Callable[[], Any]:
        """Ranks > 0 train without MLflow; the engine writes nothing on them."""
        from convit.engine import run_trial  # heavy: torch, in the task only

        trial_dir = Path(self.trial_dir)
        trial = _read_trial(trial_dir)
        assert self._runtime is not None
        control = self._runtime.control
        return lambda: run_trial(trial.config, trial_dir, control=control)

    def _capture(self, target: Callable[[], Any]) -> Callable[[], None]:
        runtime = self._runtime
        assert runtime is not None

        def run() -> None:
            try:
                runtime.result = target()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                runtime.error = exc
            finally:
                runtime.finished.set()
        return run

    def _backstop(self) -> None:
        """Send ourselves the USR2 SLURM should have sent, if it has not come by ``signal_delay_s / 2`` before
        the end (see the module docstring)."""
        runtime = self._runtime
        if runtime is None or runtime.end is None:
            return
        fire_at = runtime.end - self.signal_delay_s / 2
        if runtime.finished.wait(max(0.0, fire_at - time.time())) or runtime.usr2:
            return
        _log(f"no {preempt_signal().name} from SLURM {runtime.end - time.time():.0f} s before the time limit: "
             "sending it to this task to checkpoint and requeue")
        os.kill(os.getpid(), preempt_signal())

    def _finish_error(self, error: BaseException, rank: int) -> None:
        """A stop after SIGTERM waits for SLURM (kill, or the USR2 of a preemption); anything else fails."""
        from convit.engine import TrialInterrupted  # heavy: torch, in the task only

        runtime = self._runtime
        assert runtime is not None
        if isinstance(error, TrialInterrupted):
            why = "SIGTERM" if runtime.sigterm else "a stop request"
            _log(f"rank {rank}: checkpoint saved after {why}; waiting for SLURM to end or requeue the task")
            deadline = time.time() + LINGER_S
            while time.time() < deadline:
                time.sleep(0.5)  # USR2 → submitit's handler → checkpoint() → requeue + exit, from here
        elif rank == 0:
            self._maybe_close_sweep()
        raise error

    # ----------------------------------------------------------------------------------------- signals
    def _on_sigterm(self, signum: int, frame: Any) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        if not runtime.sigterm:
            _log("SIGTERM: saving an exact checkpoint at the next optimizer step, then stopping")
        runtime.sigterm = True
        runtime.control.request_checkpoint(stop=True)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit (main thread, USR2 handler) before it requeues: save exactly, then hand back the
        trial to run next. Never raises: a late checkpoint only means resuming from an earlier one."""
        runtime = self._runtime
        fresh = DelayedSubmission(self._fresh())
        if runtime is None or runtime.worker is None or not runtime.worker.is_alive():
            return fresh
        runtime.usr2 = True
        start = time.time()
        budget = checkpoint_budget_s(self.signal_delay_s, None if runtime.end is None else runtime.end - start)
        runtime.control.request_checkpoint(stop=True)
        if runtime.control.saved.wait(budget):
            _log(f"USR2: exact checkpoint saved in {time.time() - start:.1f} s")
        else:
            _log(f"USR2: no checkpoint within {budget:.0f} s (the engine checks between optimizer steps); the "
                 "requeued task resumes from the last saved one")
        runtime.worker.join(max(0.0, budget - (time.time() - start)))  # let the runner close the MLflow run
        return fresh

    # ---------------------------------------------------------------------------------------- records
    def _record_start(self, env: Any, started: float) -> None:
        path = Path(self.trial_dir) / TASK_FILE
        record = read_json(path, {}) or {}
        starts = list(record.get("starts", []))
        saved = list_checkpoints(Path(self.trial_dir) / CHECKPOINTS_DIR)
        starts.append({"job_id": env.job_id, "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                       "host": socket.gethostname(), "process_start": started, "call": time.time(),
                       "code": str(Path(__file__).resolve().parents[3]), "num_tasks": env.num_tasks,
                       "resume_from": saved[-1].name if saved else None})
        write_json(path, {**record, "starts": starts})

    def _record_first_step(self, started: float) -> bool:
        runtime = self._runtime
        if runtime is None or runtime.first_step is None:
            return False
        path = Path(self.trial_dir) / TASK_FILE
        record = read_json(path, {}) or {}
        if record.get("starts"):
            record["starts"][-1]["first_step"] = runtime.first_step
            record["starts"][-1]["first_step_after_s"] = runtime.first_step - started
            record["starts"][-1]["rank_hosts"] = rank_hosts(Path(self.trial_dir))  # written before the first step
            write_json(path, record)
        return True

    def _maybe_close_sweep(self) -> None:
        """The last trial to end closes the sweep's parent MLflow run (nobody waits on a SLURM sweep)."""
        from orchestrator.lifecycle import close_if_all_ended  # heavy: mlflow, kept off the task's first step

        try:
            close_if_all_ended(SweepContext.for_trial_dir(Path(self.trial_dir)))
        except Exception:  # noqa: BLE001 - bookkeeping must not turn a finished trial into a failed task
            _log("could not update the sweep's parent run:\n" + traceback.format_exc())


def _ignore_late_signals() -> None:
    """The trial has finished: a USR2 or SIGTERM now (the time limit, a cancel) must neither requeue it nor kill
    the process while submitit writes the result. Python resets its own handlers to the default (terminate) at
    interpreter exit, so a late USR2 would otherwise end a finished trial's task as FAILED; SIG_IGN stays."""
    for sig in (preempt_signal(), signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _read_trial(trial_dir: Path) -> Trial:
    trial = read_trial_record(trial_dir)
    if trial is None:
        raise FileNotFoundError(f"no trial record in {trial_dir}")
    return trial


def _make_control(owner: SlurmTrial) -> Any:
    """The engine's TrialControl, noting when the engine first polls it: the end of the first optimizer step
    (what the benchmark reports as a task's start-up overhead)."""
    from convit.engine import TrialControl  # heavy: torch, in the task only

    class _Control(TrialControl):
        @property
        def pending(self) -> bool:
            runtime = owner._runtime
            if runtime is not None and runtime.first_step is None:
                runtime.first_step = time.time()
            return super().pending

    return _Control()
