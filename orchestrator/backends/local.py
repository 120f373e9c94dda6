"""The local backend (the default): trials run on this machine as separate processes, N at a time.

Each trial is a process running ``orchestrator.trial_runner`` on its folder, in its own session (so a Ctrl-C in
the terminal reaches only this scheduler, which then stops the trials cleanly), with its CPU budget applied to
torch's threads (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``CONVIT_NUM_THREADS``) and its GPUs pinned with
``CUDA_VISIBLE_DEVICES``. Trials are forked from a warm starter that imported torch, timm and MLflow once
(:mod:`.warm_start`: about 1 s from a free slot to the next trial's first step instead of 7-13 s); when it is
unavailable a trial starts cold, as ``python -m orchestrator.trial_runner TRIAL_DIR``. ``submit`` blocks and shows progress; ``cancel`` (from any shell) sends SIGTERM to
the scheduler, which forwards it to its trials: each writes an exact checkpoint and exits, and the next
``submit`` of the same sweep resumes them.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from convit.exitcodes import EXIT_INTERRUPTED, EXIT_OK
from convit.records import (CHECKPOINTS_DIR, checkpoint_position, list_checkpoints, process_start, read_json, read_metrics, read_progress,
                            trial_owner, write_json)
from orchestrator.backends.base import Backend
from orchestrator.backends.warm_start import WarmStarter, WarmTrial
from orchestrator.errors import OrchestratorError
from orchestrator.plans import planned_epochs
from orchestrator.sections import LocalSection
from orchestrator.status import (TrialStatus, is_recorded_process, pid_alive, read_status, trial_status,
                                 write_status)
from orchestrator.process_env import cpu_count, thread_env, visible_gpus
from orchestrator.trial import Trial
from orchestrator.workdir import TRIAL_LOG, SweepContext, read_trials, write_trial_record

STATE_FILE = "local.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class _Running:
    trial: Trial
    proc: subprocess.Popen[bytes] | WarmTrial
    gpus: list[str]
    log: Any
    task: TaskID | None = None
    started: float = field(default_factory=time.time)


class LocalBackend(Backend):
    name = "local"
    section = LocalSection
    blocking = True

    def __init__(self, console: Console | None = None, poll_s: float = 0.5):
        self.console = console or Console(stderr=True)
        self.poll_s = poll_s
        self._stop_requested = False
        self._starter: WarmStarter | None = None
        self._cold = False  # the starter failed: later trials start as fresh processes

    # ---------------------------------------------------------------------------------------------- submit
    def options(self, sweep: SweepContext) -> LocalSection:
        return super().options(sweep)  # type: ignore[return-value]

    def validate(self, sweep: SweepContext, trials: list[Trial]) -> None:
        """GPUs this machine does not show are refused before anything is recorded (and by --dry-run)."""
        opts = self.options(sweep)
        if opts.gpus_per_trial:
            gpus = visible_gpus()
            if len(gpus) < opts.gpus_per_trial:
                raise OrchestratorError(f"local.gpus_per_trial: {opts.gpus_per_trial}, but this machine shows "
                                        f"{len(gpus)} GPU(s); lower it or run elsewhere")

    def prepare(self, sweep: SweepContext) -> None:
        """Start the warm starter now: it imports torch, timm and MLflow while the sweep is being recorded."""
        if self._starter is None:
            self._starter = WarmStarter(trial_env(self.options(sweep).cpus_per_trial, []))

    def release(self) -> None:
        """Stop the warm starter if ``submit`` did not run (every trial finished already, or recording failed)."""
        if self._starter is not None:
            self._starter.close()
            self._starter = None
        self._cold = False

    def submit(self, sweep: SweepContext, trials: list[Trial]) -> None:
        opts = self.options(sweep)
        self.prepare(sweep)
        try:
            self._schedule(sweep, trials, opts)
        finally:
            self.release()

    def _schedule(self, sweep: SweepContext, trials: list[Trial], opts: LocalSection) -> None:
        slots, gpu_pool = self._capacity(opts)
        state_path = sweep.sweep_dir / STATE_FILE
        write_json(state_path, {"scheduler_pid": os.getpid(), "scheduler_pid_start": process_start(os.getpid()),
                                "host": socket.gethostname(), "started": time.time()})
        previous = self._trap_sigterm()
        queue: deque[Trial] = deque(trials)
        running: dict[str, _Running] = {}
        counts = {"done": 0, "failed": 0, "interrupted": 0}
        try:
            with self._progress() as progress:
                overall = progress.add_task(self._summary(sweep, counts, running, queue), total=len(trials),
                                            info="")
                try:
                    while (queue or running) and not self._stop_requested:
                        while queue and len(running) < slots and len(gpu_pool) >= opts.gpus_per_trial:
                            if not self._start(sweep, queue[0], opts, gpu_pool, running, progress):
                                break  # stopping while the warm starter was still importing
                            queue.popleft()
                        self._reap(sweep, running, gpu_pool, counts, progress)
                        self._refresh(sweep, running, progress)
                        progress.update(overall, completed=counts["done"] + counts["failed"],
                                        description=self._summary(sweep, counts, running, queue))
                        time.sleep(self.poll_s)
                except KeyboardInterrupt:
                    self._stop_requested = True
                if self._stop_requested and running:
                    progress.console.print(f"stopping {len(running)} running trial(s): each writes a checkpoint "
                                           "first (Ctrl-C again to kill them now)")
                    self._stop_all(running, opts.stop_grace_s)
                    self._reap(sweep, running, gpu_pool, counts, progress)
                progress.update(overall, completed=counts["done"] + counts["failed"],
                                description=self._summary(sweep, counts, running, queue))
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            state_path.unlink(missing_ok=True)

    def _trap_sigterm(self) -> Any:
        """`cancel` sends SIGTERM to this process; outside the main thread the embedding program owns signals."""
        try:
            return signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:
            return None

    def _capacity(self, opts: LocalSection) -> tuple[int, list[str]]:
        cpus = cpu_count()
        slots = max(1, min(opts.max_parallel, cpus // opts.cpus_per_trial or 1))
        if slots < opts.max_parallel:
            self.console.print(f"[yellow]local: {cpus} CPU(s) allow {slots} trial(s) of {opts.cpus_per_trial} "
                               f"CPU(s) at a time (max_parallel is {opts.max_parallel})[/]")
        gpus = visible_gpus() if opts.gpus_per_trial else []
        if opts.gpus_per_trial:
            if len(gpus) < opts.gpus_per_trial:
                raise OrchestratorError(f"local.gpus_per_trial is {opts.gpus_per_trial} but this machine shows "
                                        f"{len(gpus)} GPU(s); lower it or run elsewhere")
            slots = min(slots, len(gpus) // opts.gpus_per_trial)
        return slots, gpus

    def _start(self, sweep: SweepContext, trial: Trial, opts: LocalSection, gpu_pool: list[str],
               running: dict[str, _Running], progress: Progress) -> bool:
        """Start ``trial``; False (nothing started) when a stop came while waiting for the warm starter."""
        starter = None if self._cold else self._starter
        if starter is not None and not starter.wait_ready(should_stop=lambda: self._stop_requested):
            if self._stop_requested:
                return False
        trial_dir = sweep.trial_dir(trial.id)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_trial_record(trial_dir, trial)
        gpus = [gpu_pool.pop(0) for _ in range(opts.gpus_per_trial)]
        env = trial_env(opts.cpus_per_trial, gpus)
        log_path = trial_dir / TRIAL_LOG
        proc: subprocess.Popen[bytes] | WarmTrial | None = None
        if starter is not None:
            proc = starter.start(trial_dir, env, log_path)
            if proc is None:  # the trials it started run on; release() closes it once they have ended
                progress.console.print(f"[yellow]local: trials start cold from here on ({escape(starter.reason)})[/]")
                self._cold = True
        log = None
        if proc is None:
            log = open(log_path, "ab")
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator.trial_runner", str(trial_dir)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        entry = _Running(trial, proc, gpus, log)
        completed, info = live_position(trial_dir)
        entry.task = progress.add_task(f"  {escape(trial.name)}", total=planned_epochs(trial), completed=completed,
                                       info=info)
        running[trial.id] = entry
        resumed = resume_position(trial_dir)
        progress.console.print(f"started     {trial.id}  {escape(trial.name)}  (pid {proc.pid}"
                               f"{'; ' + resumed if resumed else ''})")
        return True

    def _reap(self, sweep: SweepContext, running: dict[str, _Running], gpu_pool: list[str], counts: dict[str, int],
              progress: Progress) -> None:
        for trial_id, entry in list(running.items()):
            code = entry.proc.poll()
            if code is None:
                continue
            if entry.log is not None:
                entry.log.close()
            gpu_pool.extend(entry.gpus)
            if entry.task is not None:
                progress.remove_task(entry.task)
            del running[trial_id]
            minutes = (time.time() - entry.started) / 60
            if code == EXIT_OK:
                counts["done"] += 1
                progress.console.print(f"[green]done[/]        {trial_id}  {escape(entry.trial.name)}  ({minutes:.1f} min)")
            elif code == EXIT_INTERRUPTED or self._stop_requested:
                counts["interrupted"] += 1
                progress.console.print(f"[yellow]interrupted[/] {trial_id}  {escape(entry.trial.name)}  (resubmit to resume)")
            elif code < 0:  # killed by a signal: it could not say so itself; it resumes like a stopped one
                counts["interrupted"] += 1
                how = f"killed by {signal.Signals(-code).name}"
                write_status(sweep.trial_dir(trial_id), "interrupted", error=f"{how}; resubmit to resume from its "
                                                                              "last checkpoint")
                progress.console.print(f"[yellow]interrupted[/] {trial_id}  {escape(entry.trial.name)}  ({how}; "
                                       "resubmit to resume)")
            else:
                counts["failed"] += 1
                reason = read_status(sweep.trial_dir(trial_id)).get("error") or f"exit {code}"
                progress.console.print(f"[red]failed[/]      {trial_id}  {escape(entry.trial.name)}: {escape(reason)}  "
                                       f"(log: {sweep.trial_dir(trial_id) / TRIAL_LOG})")

    def _refresh(self, sweep: SweepContext, running: dict[str, _Running], progress: Progress) -> None:
        for entry in running.values():
            if entry.task is not None:
                completed, info = live_position(sweep.trial_dir(entry.trial.id))
                progress.update(entry.task, completed=completed, info=info)

    def _stop_all(self, running: dict[str, _Running], grace_s: float) -> None:
        for entry in running.values():
            if entry.proc.poll() is None:  # an ended trial's pid may already belong to another process
                _signal(entry.proc.pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        try:
            while time.time() < deadline and any(e.proc.poll() is None for e in running.values()):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        for entry in running.values():
            if entry.proc.poll() is None:
                _signal(entry.proc.pid, signal.SIGKILL)
                entry.proc.wait()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def _progress(self) -> Progress:
        """One bar for the sweep (trials ended), one per running trial (epochs, moving within an epoch)."""
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[info]}"), console=self.console, transient=False)

    @staticmethod
    def _summary(sweep: SweepContext, counts: dict[str, int], running: dict[str, Any], queue: deque[Trial]) -> str:
        parts = [f"[green]{counts['done']} done[/]", f"{len(running)} running", f"{len(queue)} queued"]
        if counts["failed"]:
            parts.append(f"[red]{counts['failed']} failed[/]")
        if counts["interrupted"]:
            parts.append(f"[yellow]{counts['interrupted']} interrupted[/]")
        return f"[bold]{sweep.name}[/]: " + " · ".join(parts)

    # ---------------------------------------------------------------------------------------- status/cancel
    def status(self, sweep: SweepContext) -> list[TrialStatus]:
        statuses = [trial_status(t, sweep.trial_dir(t.id)) for t in read_trials(sweep)]
        if is_recorded_process(read_json(sweep.sweep_dir / STATE_FILE, {}) or {}, "scheduler_pid"):
            for s in statuses:
                if s.state == "pending":
                    s.detail = "queued"
        return statuses

    def cancel(self, sweep: SweepContext) -> None:
        """SIGTERM to the scheduler (it stops its trials, each after a checkpoint); trials left without a live
        scheduler get the SIGTERM directly. Returns once they have all exited."""
        state = read_json(sweep.sweep_dir / STATE_FILE, {}) or {}
        # running trials' pids come from their ownership locks: a held lock is a live runner of this trial
        folders = sorted((sweep.sweep_dir / "trials").glob("*/")) if (sweep.sweep_dir / "trials").is_dir() else []
        owners = [trial_owner(folder) for folder in folders]  # every trial folder, earlier versions' included
        pids = [int(o["pid"]) for o in owners if o and o.get("pid") and o.get("host") == socket.gethostname()]
        if is_recorded_process(state, "scheduler_pid"):  # never a stale file's pid, now another program's
            _signal(int(state["scheduler_pid"]), signal.SIGTERM)
            targets = [int(state["scheduler_pid"]), *pids]
        else:
            for pid in pids:
                _signal(pid, signal.SIGTERM)
            targets = pids
        grace = self.options(sweep).stop_grace_s + 10
        deadline = time.time() + grace
        while time.time() < deadline and any(pid_alive(p) for p in targets):
            time.sleep(0.2)
        for pid in targets:
            if pid_alive(pid):
                _signal(pid, signal.SIGKILL)


def trial_env(cpus: int, gpus: list[str]) -> dict[str, str]:
    """A trial process's environment: this one's, with its thread budget, its GPUs and this checkout importable."""
    env = dict(os.environ)
    env.update({**thread_env(cpus), "CUDA_VISIBLE_DEVICES": ",".join(gpus), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)})
    return env


def live_position(trial_dir: Path) -> tuple[float, str]:
    """(epochs done, fractional within the running epoch; "loss … · top-1 … · ETA …") from the trial's folder:
    metrics.jsonl for the finished epochs, progress.json for the running one."""
    rows = read_metrics(trial_dir)
    done = len(rows)
    now = read_progress(trial_dir)
    fraction = 0.0
    if now.get("epoch") == done and now.get("steps"):
        fraction = min(1.0, float(now.get("step", 0)) / float(now["steps"]))
    parts = []
    if now.get("loss") is not None and now.get("epoch") == done:
        parts.append(f"loss {now['loss']:.3f}")
    elif rows:
        parts.append(f"loss {rows[-1].get('train_loss', math.nan):.3f}")
    top1 = next((r[k] for r in reversed(rows) for k in ("val_top1", "test_top1") if k in r), None)
    if top1 is not None:
        parts.append(f"top-1 {top1:.1f} %")
    times = [r["epoch_time_s"] for r in rows if isinstance(r.get("epoch_time_s"), (int, float))]
    epochs = now.get("epochs")
    if times and epochs:
        left = max(0.0, (epochs - done - fraction) * sum(times) / len(times))
        parts.append(f"ETA {int(left // 60)}m{int(left % 60):02d}s")
    return done + fraction, " · ".join(parts)


def resume_position(trial_dir: Path) -> str:
    """"resumes from epoch N, step K" when the trial has a checkpoint to resume from, else ""."""
    saved = list_checkpoints(trial_dir / CHECKPOINTS_DIR)
    if not saved:
        return ""
    position = checkpoint_position(saved[-1])
    return f"resumes from epoch {position[0] + 1}, step {position[1]}" if position else "resumes from a checkpoint"


def _signal(pid: int, sig: int) -> None:
    """Signal a trial's whole process group (the runner leads its own session: its DataLoader workers get the
    signal as they would from a container runtime or SLURM, and ignore it, leaving the stop to the runner; a
    SIGKILL leaves no orphaned worker); a process that leads no group, the scheduler, is signalled alone."""
    try:
        if os.getpgid(pid) == pid and pid != os.getpgrp():
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass

