"""What every backend runs in a trial's process: the engine, logging to MLflow through :class:`MlflowReporter`.

Backends call :func:`run_trial_process` (a Ray trainable or a submitit callable directly, the local backend
through ``python -m orchestrator.trial_runner TRIAL_DIR``). It is safe to call again on the same trial: the
engine resumes from its last checkpoint, the MLflow run is reopened, and the epochs already in metrics.jsonl
but missing from MLflow are logged first, so the run ends with every epoch exactly once.

Exit codes of the command (convit.exitcodes): 0 finished, 1 failed (the reason is in status.json and the MLflow
run), 3 interrupted after a checkpoint (resubmitting resumes it), 2 bad invocation.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Literal, Mapping, Sequence

from convit.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from convit.records import (CONFIG_FILE, FINAL_FILE, METRICS_FILE, TrialBusy, is_finished, own_trial, read_final,
                            read_json, write_json)
from orchestrator.mlflow_views import run_name
from orchestrator.status import write_status
from orchestrator.tracking import MlflowReporter, Tracker, TrialRun, env_tags
from orchestrator.process_env import apply_thread_budget, fail_fast_on_outages
from orchestrator.trial import Trial
from orchestrator.workdir import RUN_ID_FILE, TRIAL_FILE, SweepContext, read_trial_record, write_trial_record



class _Fanout:
    """Several reporters behind the engine's single ``reporter`` argument (MLflow plus, e.g., Ray Tune)."""

    def __init__(self, reporters: Sequence[Any]):
        self.reporters = [r for r in reporters if r is not None]

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        for reporter in self.reporters:
            reporter.report(epoch, metrics, checkpoint_dir)


class _OpeningRun:
    """The trial's :class:`TrialRun`, opened in a background thread while the engine builds the data and the model.

    In a fresh process, opening the run costs 1.5-2.5 s before anything else could happen (MLflow's SQL store
    imports its ORM and migrations, checks the schema, creates the run and logs the params); in the background
    it overlaps the engine's start-up instead, and the first training step comes that much sooner (the SLURM
    and Ray paths start every trial in a fresh process). Whatever needs the run (the first report, an ending)
    waits for it; an error from opening is raised there. Tracking outages are TrialRun's own business."""

    def __init__(self, open_run: Callable[[], TrialRun]):
        self._run: TrialRun | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(open_run,), name="open-mlflow-run", daemon=True)
        self._thread.start()

    def _open(self, open_run: Callable[[], TrialRun]) -> None:
        try:
            self._run = open_run()
        except BaseException as exc:  # noqa: BLE001 - raised again in the trial's own thread
            self._error = exc

    def get(self) -> TrialRun:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._run is not None
        return self._run

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.get().report(epoch, metrics, checkpoint_dir)

    def tag(self, tags: Mapping[str, str]) -> bool:
        return self.get().tag(tags)


class _RankHostsTag:
    """Tags the trial's run with ``rank_hosts``: the host of each rank of this start, in rank order ("node1,node2"
    for a two-node trial; one name for a one-process trial). The engine gathers them and writes them to config.json
    before its first epoch; a requeued trial that lands elsewhere gets the tag of its latest start, and
    slurm_task.json keeps every start's."""

    def __init__(self, run: _OpeningRun, out_dir: Path):
        self.run, self.out_dir, self.tagged = run, out_dir, False

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        if self.tagged:
            return
        hosts = rank_hosts(self.out_dir)
        if hosts:
            self.tagged = self.run.tag({"rank_hosts": ",".join(hosts)})


def rank_hosts(out_dir: Path) -> list[str]:
    """The hosts of the trial's ranks at its latest start (config.json's ``resolved.rank_hosts``), or []."""
    resolved = (read_json(out_dir / CONFIG_FILE, {}) or {}).get("resolved", {})
    return [str(h) for h in resolved.get("rank_hosts", [])]


def run_trial_process(trial: Trial, ctx: SweepContext, *, tags: Mapping[str, str] | None = None,
                      control: Any | None = None, reporters: Sequence[Any] = ()) -> dict[str, float]:
    """Run (or resume) one trial of a sweep with MLflow logging; returns the engine's final metrics.

    ``tags`` are extra run tags from the backend (``ray_trial_id``, ``slurm_job_id``, ...); scheduler ids in
    the environment are added automatically. ``control`` is the engine's TrialControl (a backend's signal
    handler asks it for a checkpoint); ``reporters`` receive every epoch after MLflow has logged it.
    Raises the engine's TrialInterrupted / TrialFailed (after recording them) so the backend can react, and
    TrialBusy (recording nothing) when another live process owns the trial.
    """
    out_dir = ctx.trial_dir(trial.id)
    with own_trial(out_dir):  # TrialBusy, before anything is written, when another process runs this trial
        return _run_owned(trial, ctx, out_dir, tags, control, reporters)


def _run_owned(trial: Trial, ctx: SweepContext, out_dir: Path, tags: Mapping[str, str] | None, control: Any,
               reporters: Sequence[Any]) -> dict[str, float]:
    from convit.engine import TrialFailed, TrialInterrupted, run_trial  # heavy: torch

    write_trial_record(out_dir, trial)
    write_status(out_dir, "running")
    fail_fast_on_outages()
    run = _OpeningRun(lambda: TrialRun(Tracker(ctx.tracking_uri), out_dir / METRICS_FILE,
                                       lambda: open_run(trial, ctx, tags, new_start=True), _warn))
    started = time.perf_counter()
    try:
        final = run_trial(trial.config, out_dir, reporter=_Fanout([run, _RankHostsTag(run, out_dir), *reporters]),
                          control=control)
    except TrialInterrupted:
        _end(run, "KILLED")
        write_status(out_dir, "interrupted", error="stopped after a checkpoint; resubmit to resume")
        raise
    except (KeyboardInterrupt, SystemExit):  # stopped at once (a second signal): resumes from the last checkpoint
        write_status(out_dir, "interrupted", error="stopped before a checkpoint; resubmit to resume")
        _end(run, "KILLED")
        raise
    except BaseException as exc:
        reason = exc.reason if isinstance(exc, TrialFailed) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):  # a full disk may refuse this record too: the log keeps the reason
            write_status(out_dir, "failed", error=reason, traceback="".join(traceback.format_exception(exc))[-4000:])
        _end(run, "FAILED", {"failure_reason": reason[:5000]})
        raise
    elapsed = time.perf_counter() - started
    tracked = run.get()
    final_logged = {**final, "tracking_overhead_s": tracked.seconds,
                    "tracking_overhead_frac": tracked.seconds / max(elapsed, 1e-9)}
    logged = tracked.finish(final_logged, [out_dir / n for n in (CONFIG_FILE, FINAL_FILE, TRIAL_FILE)])
    write_status(out_dir, "done", **({} if logged else {"tracking": "pending: submit again to log the run"}))
    return final


def _end(run: _OpeningRun, status: str, tags: Mapping[str, str] | None = None) -> None:
    """End the run of a trial that stopped or failed; a run that could not even be opened is warned about, and
    the trial's own ending (the exception being handled) goes on."""
    try:
        tracked = run.get()
    except Exception as exc:  # noqa: BLE001 - the trial's own error matters more
        _warn(f"warning: the trial's MLflow run could not be opened ({type(exc).__name__}: {exc})")
        return
    tracked.end(status, tags)


def open_run(trial: Trial, ctx: SweepContext, tags: Mapping[str, str] | None = None, *,
             new_start: bool = False) -> str:
    """Open (or reopen) the trial's child run with its tags, and record its id in the trial folder.

    ``new_start``: this process trains the trial (not a catch-up from the submitting host); its host joins the
    ``start_hosts`` tag, the host of each start in order ("node2,node1": a trial retried elsewhere after its node
    was lost), kept in the trial folder's mlflow_run.json between starts."""
    out_dir = ctx.trial_dir(trial.id)
    known = read_json(out_dir / RUN_ID_FILE, {}) or {}
    start_hosts = list(known.get("start_hosts", [])) + ([socket.gethostname()] if new_start else [])
    run_id = Tracker(ctx.tracking_uri).open_trial_run(
        experiment=ctx.experiment, sweep_id=ctx.sweep_id, parent_run_id=ctx.parent_run_id, trial_id=trial.id,
        trial_name=run_name(trial.axes, ctx.name), params=trial.config_dict(),
        tags={**env_tags(), "backend": ctx.backend, "git_commit": ctx.git_commit,
              "mlflow.source.git.commit": ctx.git_commit, **{f"axis.{k}": str(v) for k, v in trial.axes.items()},
              **({"start_hosts": ",".join(start_hosts)[-5000:]} if start_hosts else {}), **dict(tags or {})},
        known_run_id=known.get("run_id"))
    write_json(out_dir / RUN_ID_FILE, {"run_id": run_id, "tracking_uri": ctx.tracking_uri, "start_hosts": start_hosts})
    return run_id


def log_finished_trial(trial: Trial, ctx: SweepContext, tracker: Tracker) -> None:
    """Log a trial that finished on disk while tracking was down: its run (reopened, or created), every epoch of
    metrics.jsonl it lacks, the final metrics, FINISHED. Raises when tracking is still down."""
    out_dir = ctx.trial_dir(trial.id)
    final = read_final(out_dir) or {}
    run_id = open_run(trial, ctx)
    reporter = MlflowReporter(tracker, run_id, out_dir / METRICS_FILE)
    reporter.sync()
    tracker.log_final(run_id, final.get("metrics", {}), reporter.epoch_keys(), step=max(reporter.logged, default=0))
    tracker.log_files(run_id, [out_dir / n for n in (CONFIG_FILE, FINAL_FILE, TRIAL_FILE)])
    tracker.end_run(run_id, "FINISHED")
    write_status(out_dir, "done")


def record_end_outside_runner(trial: Trial, ctx: SweepContext, state: Literal["failed", "interrupted"],
                              reason: str) -> bool:
    """Record the end of a trial whose process ended where this runner never ran or never got to record it (an
    import failing on a compute node, a node failure, the out-of-memory killer, a hard kill): status.json says
    ``state`` with ``reason``, and the trial's MLflow child run (created if the process never opened it, with
    the epochs of metrics.jsonl it lacks) ends FAILED or KILLED, so the sweep's parent run can close.

    Returns False, recording nothing, when the trial finished or another live process owns it (a resubmission
    already runs it). Raises what the tracking store raises when it is down (status.json is written first)."""
    out_dir = ctx.trial_dir(trial.id)
    try:
        with own_trial(out_dir, wait_s=0.5):
            if is_finished(out_dir):
                return False
            write_status(out_dir, state, error=reason)
            tracker = Tracker(ctx.tracking_uri)
            run_id = open_run(trial, ctx)
            MlflowReporter(tracker, run_id, out_dir / METRICS_FILE).sync()
            if state == "failed":
                tracker.set_tags(run_id, {"failure_reason": reason[:5000]})
            tracker.end_run(run_id, "FAILED" if state == "failed" else "KILLED")
    except TrialBusy:
        return False
    return True


def log_to_stderr() -> None:
    """The engine's lines (an epoch's summary with its ETA, a resume's position) into the trial's log, with time
    stamps; other libraries keep their own levels."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    engine = logging.getLogger("convit")
    engine.addHandler(handler)
    engine.setLevel(logging.INFO)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- command
def _install_stop_handlers(control: Any) -> None:
    """First SIGTERM/SIGINT: checkpoint at the next optimizer step, then stop. A second one: stop now."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if control.stop_requested:
            raise SystemExit(EXIT_INTERRUPTED)
        control.request_checkpoint(stop=True)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.trial_runner",
                                     description="Run one trial of a submitted sweep (used by the backends).")
    parser.add_argument("trial_dir", type=Path, help="runs/sweeps/<sweep>/trials/<trial id>")
    args = parser.parse_args(argv)
    from convit.engine import TrialControl, TrialInterrupted  # heavy: torch

    trial = read_trial_record(args.trial_dir)
    if trial is None:
        print(f"no {TRIAL_FILE} in {args.trial_dir}", file=sys.stderr)
        return EXIT_USAGE
    ctx = SweepContext.for_trial_dir(args.trial_dir.resolve())
    log_to_stderr()
    control = TrialControl()
    _install_stop_handlers(control)
    apply_thread_budget()
    try:
        run_trial_process(trial, ctx, control=control)
    except TrialBusy as exc:
        print(f"not started: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TrialInterrupted:
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - recorded in status.json and MLflow already
        traceback.print_exc()
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
