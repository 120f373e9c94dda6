"""The Ray Tune backend: a sweep's trials as Tune trials, on a private local Ray (default) or a cluster.

Trial identity: the orchestrator has already expanded the sweep (grid, zip, seeded random samples, seeds) into
trials with stable ids (config hashes), which name the trial folders and MLflow child runs and make resubmission
idempotent. Tune therefore grid-searches over those ids (``param_space = {"trial_id": grid_search(ids)}``)
rather than sampling its own search spaces: the same YAML gives the same trials on every backend. The only
values Tune chooses are PBT's mutations.

Layout in the sweep folder: ``ray.json`` (driver pid, Tune experiment path), ``ray/<experiment>/`` (Tune's
storage_path: experiment state and reported checkpoints), ``ray/identity/`` and ``ray/stops/`` (see
:mod:`.trainable` and :mod:`.schedulers`). Each trial folder gets ``ray_worker.json`` (the worker's pid, for status and
tests) and, when a scheduler ended it early, ``ray_stopped.json``.

``submit`` blocks until Tune has finished; ``cancel`` sends SIGINT to the driver, which Tune turns into a clean
stop with its state saved; ``convit-sweep resume SWEEP`` continues an interrupted experiment with
``Tuner.restore`` (unfinished and errored trials resume from their checkpoints).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from rich.console import Console

from convit.config import ConfigError
from convit.records import is_finished, process_start, read_json, write_json
from orchestrator.backends.base import Backend
from orchestrator.backends.layout import ray_dir, ray_stops_dir
from orchestrator.backends.ray.pbt import mutated_values, with_values
from orchestrator.backends.ray.schedulers import asha_rungs, build_scheduler
from orchestrator.backends.ray.session import STATE_FILE, local_ray_pids, ray_session, reap_orphans, wait_dead
from orchestrator.backends.ray.trainable import (CANCEL_FILE, STOPPED_FILE, WORKER_FILE, record_early_stop,
                                                stop_markers, train_trial)
from orchestrator.process_env import cpu_count, visible_gpus
from orchestrator.errors import OrchestratorError
from orchestrator.plans import planned_epochs
from orchestrator.sections.ray import RaySection, mutation_bounds
from orchestrator.status import (TrialStatus, is_recorded_process, pid_alive, read_status, trial_status,
                                 write_status)
from orchestrator.tracking import Tracker
from orchestrator.trial import Trial
from orchestrator.workdir import RUN_ID_FILE, SweepContext, read_trials


def reuse_actors(scheduler: str) -> bool:
    """Whether a Tune worker that finished one trial runs the next (torch, timm and MLflow imported once per
    worker). Not under PBT: there, with reused workers, Tune once restarted a trial that had finished after an
    exploit from an earlier checkpoint with its pre-exploit config (1 run in 5, tests/test_ray_backend.py), so the
    trial folder and MLflow disagreed on the learning rate in effect; each PBT trial gets a fresh worker."""
    return scheduler != "pbt"


class RayBackend(Backend):
    name = "ray"
    section = RaySection
    blocking = True

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    # ---------------------------------------------------------------------------------------- submit
    def options(self, sweep: SweepContext) -> RaySection:
        return super().options(sweep)  # type: ignore[return-value]

    def validate(self, sweep: SweepContext, trials: list[Trial]) -> None:
        opts = self.options(sweep)
        _check_trials(opts, trials)
        if opts.address is None:  # the private Ray this sweep would start: its size is known now
            _check_local_resources(opts)

    def submit(self, sweep: SweepContext, trials: list[Trial]) -> None:
        opts = self.options(sweep)
        _check_trials(opts, trials)
        experiment = f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
        with ray_session(opts, self.console):
            _check_cluster(opts)
            tuner = self._tuner(sweep, opts, trials, experiment)
            self._run(sweep, tuner, str(ray_dir(sweep.sweep_dir) / experiment), opts)

    # ---------------------------------------------------------------------------------------- resume
    def check_resume(self, sweep: SweepContext) -> None:
        state = read_json(sweep.sweep_dir / STATE_FILE, {}) or {}
        if state.get("host") == socket.gethostname() and pid_alive(state.get("driver_pid")):
            raise OrchestratorError(f"sweep '{sweep.name}' is still running (driver pid {state['driver_pid']}); "
                                    f"`convit-sweep cancel {sweep.name}` stops it")

    def resume(self, sweep: SweepContext, trials: list[Trial]) -> None:
        """With Tune's experiment state: Tuner.restore (unfinished and errored trials resume from their
        checkpoints; ASHA rungs and PBT state are kept). Without it (the driver died before Tune saved any), the
        unfinished trials run in a new Tune experiment, each resuming from its own checkpoints."""
        if self.restore(sweep):
            path = (read_json(sweep.sweep_dir / STATE_FILE, {}) or {}).get("experiment_path")
            self.console.print(f"resumed the Tune experiment {path}", highlight=False)
            return
        self.console.print(f"no Tune state to restore: running the {len(trials)} unfinished trial(s) again "
                           "(each resumes from its checkpoints)")
        self.submit(sweep, trials)

    def restore(self, sweep: SweepContext) -> bool:
        """Continue the sweep's last Tune experiment; False when there is none to restore."""
        state = read_json(sweep.sweep_dir / STATE_FILE, {}) or {}
        path = state.get("experiment_path")
        if not path or not tune.Tuner.can_restore(path):
            return False
        opts = self.options(sweep)
        with ray_session(opts, self.console):
            _check_cluster(opts)
            tuner = tune.Tuner.restore(path, trainable=_trainable(sweep, opts), resume_unfinished=True,
                                       resume_errored=True, restart_errored=False)
            self._run(sweep, tuner, path, opts)
        return True

    def _tuner(self, sweep: SweepContext, opts: RaySection, trials: list[Trial], experiment: str) -> Any:
        epochs = max(planned_epochs(t) or t.config.epochs or 1 for t in trials)
        section = opts.scheduler
        scheduler = build_scheduler(section, epochs, ray_stops_dir(sweep.sweep_dir))
        if section.type == "asha":
            self.console.print(f"ray: ASHA on {section.metric} ({section.mode}), rungs at epochs "
                               f"{asha_rungs(section, epochs)}")
        param_space: dict[str, Any] = {"trial_id": tune.grid_search([t.id for t in trials])}
        if section.type == "pbt":
            param_space.update(_initial_values(trials, list(section.hyperparam_mutations)))
        tune_config = tune.TuneConfig(scheduler=scheduler, num_samples=1, reuse_actors=reuse_actors(section.type),
                                      max_concurrent_trials=opts.max_concurrent_trials,
                                      time_budget_s=opts.time_limit_min * 60 if opts.time_limit_min else None,
                                      trial_name_creator=_trial_name, trial_dirname_creator=_trial_name)
        keep = 4 if section.type == "pbt" else 2  # PBT needs the clone source's checkpoint to outlive a report
        run_config = tune.RunConfig(
            name=experiment, storage_path=str(ray_dir(sweep.sweep_dir)),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep), verbose=1)
        return tune.Tuner(_trainable(sweep, opts), param_space=param_space, tune_config=tune_config,
                          run_config=run_config)

    def _run(self, sweep: SweepContext, tuner: Any, experiment_path: str, opts: RaySection) -> None:
        state_path = sweep.sweep_dir / STATE_FILE
        reap_orphans(sweep)
        (ray_dir(sweep.sweep_dir) / CANCEL_FILE).unlink(missing_ok=True)
        write_json(state_path, {"driver_pid": os.getpid(), "driver_pid_start": process_start(os.getpid()),
                                "host": socket.gethostname(), "started": time.time(),
                                "experiment_path": experiment_path, "address": opts.address,
                                "ray_pids": local_ray_pids()})
        try:
            results = tuner.fit()
        finally:
            state = read_json(state_path, {}) or {}
            state.update(driver_pid=None, finished=time.time())
            write_json(state_path, state)
        for result in results:
            if result.error is not None:
                self.console.print(f"[red]ray trial failed[/] {result.config.get('trial_id')}: "
                                   f"{str(result.error).splitlines()[0][:200]}")
        self._settle(sweep)

    def _settle(self, sweep: SweepContext) -> None:
        """Record what the trial processes could not, once their workers are gone (Tune ends a worker without
        waiting for its training thread): trials a scheduler stopped early become finished runs; trials ended
        mid-epoch (a cancel, a time limit) interrupted ones, with their MLflow runs KILLED."""
        stops = stop_markers(sweep.sweep_dir)
        tracker = None
        for trial in read_trials(sweep):
            trial_dir = sweep.trial_dir(trial.id)
            info = read_status(trial_dir)
            if is_finished(trial_dir) or (trial_dir / STOPPED_FILE).exists():
                continue
            if trial.id in stops:
                self._wait_worker(trial_dir, info)
                record_early_stop(sweep, trial_dir, stops[trial.id])
                continue
            if info.get("state") != "running":
                continue
            self._wait_worker(trial_dir, info)
            write_status(trial_dir, "interrupted", error="stopped by Ray before a checkpoint; resume or resubmit")
            run_id = (read_json(trial_dir / RUN_ID_FILE) or {}).get("run_id")
            if run_id:
                tracker = tracker or Tracker(sweep.tracking_uri)
                with contextlib.suppress(Exception):
                    tracker.end_run(run_id, "KILLED")

    @staticmethod
    def _wait_worker(trial_dir: Path, info: dict[str, Any]) -> None:
        worker = read_json(trial_dir / WORKER_FILE, {}) or {}
        if worker.get("host") == socket.gethostname():
            wait_dead(worker.get("pid"), timeout=15)
        if info.get("host") == socket.gethostname() and info.get("pid") != os.getpid():
            wait_dead(info.get("pid"), timeout=15)

    # ---------------------------------------------------------------------------------- status/cancel
    def status(self, sweep: SweepContext) -> list[TrialStatus]:
        state = read_json(sweep.sweep_dir / STATE_FILE, {}) or {}
        driver_alive = state.get("host") == socket.gethostname() and pid_alive(state.get("driver_pid"))
        stops = stop_markers(sweep.sweep_dir)
        out = []
        for trial in read_trials(sweep):
            trial_dir = sweep.trial_dir(trial.id)
            status = trial_status(trial, trial_dir)
            worker = read_json(trial_dir / WORKER_FILE, {}) or {}
            status.ref = worker.get("tune_trial_id") or status.ref
            stopped = read_json(trial_dir / STOPPED_FILE) or stops.get(trial.id)
            if stopped is not None and status.state != "done":
                status.state = "done"
                value = stopped.get("value")
                shown = f"{value:.4g}" if isinstance(value, (int, float)) else "?"
                status.detail = (f"stopped early by {stopped['scheduler']} after {stopped.get('epochs_done')} "
                                 f"epoch(s) ({stopped.get('metric')} {shown})")
            elif status.state == "pending" and driver_alive:
                status.detail = "queued in Tune"
            out.append(status)
        return out

    def cancel(self, sweep: SweepContext, grace_s: float = 120) -> None:
        """Each running trial writes an exact checkpoint and stops (asked through ``ray/cancel.json``, which the
        trial processes watch), then SIGINT to the driver: Tune stops and saves its state, and ``convit-sweep
        resume`` continues. A driver that does not stop within a minute gets SIGTERM, then SIGKILL."""
        state = read_json(sweep.sweep_dir / STATE_FILE, {}) or {}
        pid = state.get("driver_pid")
        if not is_recorded_process(state, "driver_pid"):  # gone, elsewhere, or a stale file's pid reused
            return
        write_json(ray_dir(sweep.sweep_dir) / CANCEL_FILE, {"time": time.time(), "by": os.getpid()})
        deadline = time.time() + grace_s
        while time.time() < deadline and any(s.state == "running" for s in self.status(sweep)):
            time.sleep(0.5)
        for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), sig)
            if wait_dead(pid, wait_s):
                return


# ------------------------------------------------------------------------------------------------ helpers
def _trial_name(trial: Any) -> str:
    return str(trial.config.get("trial_id", trial.trial_id))


def _trainable(sweep: SweepContext, opts: RaySection) -> Any:
    resources = {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_trial, sweep_dir=str(sweep.sweep_dir)), resources)


def _initial_values(trials: list[Trial], keys: list[str]) -> dict[str, Any]:
    """PBT needs its mutated keys in each Tune trial's config: each takes its own trial's value."""
    values = {t.id: mutated_values(t.config, keys) for t in trials}
    return {key: tune.sample_from(_ValueOf(values, key)) for key in keys}


class _ValueOf:
    """``spec -> value of key for spec.config.trial_id`` (a class, not a lambda, so it pickles by value)."""

    def __init__(self, values: dict[str, dict[str, Any]], key: str):
        self.values, self.key = values, key

    def __call__(self, spec: Any) -> Any:
        return self.values[spec.config["trial_id"]][self.key]


def _check_trials(opts: RaySection, trials: list[Trial]) -> None:
    """Problems only visible with the trials at hand, reported before Ray starts."""
    section = opts.scheduler
    if section.type in ("asha", "pbt") and section.metric.startswith(("val_", "best_val_", "ema_val_")):
        blind = [t.name for t in trials if t.config.eval_every == 0]
        if blind:
            raise OrchestratorError(f"ray.scheduler ({section.type}) ranks trials by {section.metric} on the validation "
                                    f"split after every epoch, but trial(s) {', '.join(blind[:3])} evaluate only at "
                                    "the end (eval_every: 0); set eval_every: 1 (or a few epochs)")
    if section.type != "pbt":
        return
    problems = []
    for key, (low, high) in mutation_bounds(section.hyperparam_mutations).items():
        unset = [t.name for t in trials if not isinstance(mutated_values(t.config, [key])[key], (int, float))]
        if unset:
            problems.append(f"{key} has no numeric value in trial(s) {', '.join(unset[:3])}: set it in base")
            continue
        if key == "weight_decay" and low <= 0:
            problems.append("weight_decay: PBT cannot turn weight decay off and on within a trial; use low > 0")
        for trial in trials:
            if key == "weight_decay" and trial.config.weight_decay == 0:
                problems.append(f"trial {trial.name} starts with weight_decay 0: PBT cannot mutate it")
                break
            for value in (low, high):
                try:
                    with_values(trial.config, {key: value})
                except ValueError as exc:  # the engine's ConfigError names the key at fault
                    issues = exc.issues if isinstance(exc, ConfigError) else []
                    reason = "; ".join(str(i) for i in issues) or str(exc).splitlines()[0]
                    problems.append(f"{key}={value:g} is invalid for trial {trial.name} ({reason}): narrow the "
                                    "range")
                    break
    if problems:
        raise OrchestratorError("ray.scheduler.hyperparam_mutations: " + "; ".join(dict.fromkeys(problems)))


def _check_local_resources(opts: RaySection) -> None:
    """The private Ray gets ``num_cpus``/``num_gpus`` or this machine's: a trial asking for more could never
    start (Tune would wait for ever); refused before anything is recorded, and by --dry-run."""
    cpus = opts.num_cpus if opts.num_cpus is not None else cpu_count()
    gpus = opts.num_gpus if opts.num_gpus is not None else (len(visible_gpus()) if opts.gpus_per_trial else 0)
    if opts.cpus_per_trial > cpus or opts.gpus_per_trial > gpus:
        raise OrchestratorError(f"ray: a trial asks for {opts.cpus_per_trial:g} CPU(s) and {opts.gpus_per_trial:g} "
                                f"GPU(s) but the local Ray would have {cpus} CPU(s) and {gpus} GPU(s); lower "
                                "ray.cpus_per_trial/gpus_per_trial (e.g. ray.cpus_per_trial=1 "
                                "ray.gpus_per_trial=0 here) or give ray.address of a bigger cluster")


def _check_cluster(opts: RaySection) -> None:
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if opts.cpus_per_trial > cpus or opts.gpus_per_trial > gpus:
        raise OrchestratorError(f"a trial asks for {opts.cpus_per_trial:g} CPU(s) and {opts.gpus_per_trial:g} GPU(s) "
                                f"but the Ray cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s) in all: lower "
                                "ray.cpus_per_trial/gpus_per_trial or use a bigger cluster")
