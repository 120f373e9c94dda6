"""What every backend runs in a trial's process: the engine, logging to MLflow (:mod:`orchestrator.trial_tracking`).

Backends call :func:`run_trial_process` (a Ray trainable or a submitit callable directly, the local backend
through ``python -m orchestrator.trial_runner TRIAL_DIR``). It is safe to call again on the same trial: the
engine resumes from its last checkpoint, the MLflow run is reopened, and the epochs already in metrics.jsonl
but missing from MLflow are logged first, so the run ends with every epoch exactly once.

Exit codes of the command (convit.exitcodes): 0 finished, 1 failed (the reason is in status.json and the MLflow
run), 3 interrupted after a checkpoint (resubmitting resumes it), 2 bad invocation.

MLflow is imported only in the thread that opens the trial's run, once the engine is imported: a fresh trial
process (SLURM, Ray, a cold local start) reaches its first training step without paying for it first.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from convit.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from convit.records import CONFIG_FILE, FINAL_FILE, TrialBusy, own_trial, read_json, write_json
from orchestrator.status import write_status
from orchestrator.process_env import apply_thread_budget, fail_fast_on_outages
from orchestrator.trial import Trial
from orchestrator.workdir import RUN_ID_FILE, TRIAL_FILE, SweepContext, read_trial_record, write_trial_record

if TYPE_CHECKING:
    from orchestrator.tracking import TrialRun



class _Fanout:
    """Several reporters behind the engine's single ``reporter`` argument (MLflow plus, e.g., Ray Tune)."""

    def __init__(self, reporters: Sequence[Any]):
        self.reporters = [r for r in reporters if r is not None]

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        for reporter in self.reporters:
            reporter.report(epoch, metrics, checkpoint_dir)


#: Held while a trial's MLflow run opens in the background. A fork (a DataLoader worker) waits for it: the child
#: would otherwise inherit locks the opening thread holds mid-way (a module being imported, a stream being
#: written) and could hang on them. Reentrant, so a fork from the opening thread itself cannot deadlock.
_OPENING = threading.RLock()
os.register_at_fork(before=_OPENING.acquire, after_in_parent=_OPENING.release, after_in_child=_OPENING.release)


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
            with _OPENING:
                self._run = open_run()
        except BaseException as exc:  # noqa: BLE001 - raised again in the trial's own thread
            self._error = exc

    def get(self, timeout_s: float | None = None) -> TrialRun:
        """The run, once open; TimeoutError if it is still opening after ``timeout_s``."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the MLflow run is still opening after {timeout_s} s")
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


def record_start(out_dir: Path) -> None:
    """This host joins the trial's ``start_hosts`` (mlflow_run.json) before training, not when the MLflow run
    opens in the background: a start lost on its node before that still shows in the run's tag."""
    known = read_json(out_dir / RUN_ID_FILE, {}) or {}
    write_json(out_dir / RUN_ID_FILE, {**known, "start_hosts": [*known.get("start_hosts", []), socket.gethostname()]})


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
    record_start(out_dir)
    run = _OpeningRun(lambda: _open_trial_run(trial, ctx, tags))
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
        _end(run, "KILLED", wait_s=2)  # "at once": a run still opening is caught up by the next submission
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


def _open_trial_run(trial: Trial, ctx: SweepContext, tags: Mapping[str, str] | None) -> TrialRun:
    """Runs in _OpeningRun's thread: MLflow is imported there, after the engine, not before the first step."""
    from orchestrator.trial_tracking import start_trial_run  # heavy: mlflow

    return start_trial_run(trial, ctx, tags, _warn)


def _end(run: _OpeningRun, status: str, tags: Mapping[str, str] | None = None, wait_s: float | None = None) -> None:
    """End the run of a trial that stopped or failed; a run that could not even be opened (or is still opening
    after ``wait_s``) is warned about, and the trial's own ending (the exception being handled) goes on."""
    try:
        tracked = run.get(wait_s)
    except Exception as exc:  # noqa: BLE001 - the trial's own error matters more
        _warn(f"warning: the trial's MLflow run could not be opened ({type(exc).__name__}: {exc})")
        return
    tracked.end(status, tags)


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
