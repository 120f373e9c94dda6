"""Submitting and resuming a sweep, independent of the backend: record it in the working folder, open its parent
run, hand the unfinished trials to the backend, close the parent run (blocking backends). Idempotent: submitting
the same sweep again runs only unfinished trials. ``resume`` takes the same path with the backend's ``resume``
(Ray: Tune's restore) instead of its ``submit``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from orchestrator.backends.base import Backend
from orchestrator.errors import OrchestratorError
from orchestrator.lifecycle import FAILED, KILLED, close_sweep, open_sweep, recorded_spec_text, split_finished, sweep_outcome
from orchestrator.spec import SweepSpec
from convit.records import trial_owner
from orchestrator.status import TrialStatus, read_status, write_status
from orchestrator.tracking import Tracker
from orchestrator.tracking_uri import sweep_tracking_uri
from orchestrator.trial import Trial
from orchestrator.workdir import SPEC_FILE, SweepContext, read_trials, write_text, write_trials


@dataclass
class SubmitResult:
    ctx: SweepContext
    submitted: list[Trial] = field(default_factory=list)
    skipped: list[Trial] = field(default_factory=list)  # already finished
    busy: dict[str, dict[str, Any]] = field(default_factory=dict)  # running under another owner: left alone
    caught_up: list[Trial] = field(default_factory=list)  # finished while tracking was down, logged now
    statuses: list[TrialStatus] = field(default_factory=list)

    @property
    def failed(self) -> list[TrialStatus]:
        ids = {t.id for t in self.submitted}
        return [s for s in self.statuses if s.trial_id in ids and s.state == "failed"]

    @property
    def unfinished(self) -> list[TrialStatus]:
        ids = {t.id for t in self.submitted}
        return [s for s in self.statuses if s.trial_id in ids and s.state != "done"]


def tracking_uri_for(spec: SweepSpec, workdir: Path, cli_uri: str | None) -> str:
    """--tracking-uri, the file's tracking.uri, the URI this sweep was first submitted with, $MLFLOW_TRACKING_URI,
    then the embedded store; resubmitting without flags keeps logging where the sweep started (the one rule:
    orchestrator.tracking_uri.sweep_tracking_uri)."""
    return sweep_tracking_uri(workdir, spec.name, cli_uri, spec.tracking.uri)


def submit_sweep(spec: SweepSpec, trials: list[Trial], backend: Backend, ctx: SweepContext) -> SubmitResult:
    """Record the sweep, open its parent run, run what is unfinished, close the parent run (blocking backends)."""
    refuse_a_new_version_while_the_old_runs(ctx, trials)
    tracker = open_sweep(ctx, trials, spec.resolved_text(), spec.description)
    write_text(ctx.sweep_dir / SPEC_FILE, spec.resolved_text())
    write_trials(ctx, trials)
    split = split_finished(ctx, trials, tracker)
    result = SubmitResult(ctx, split.todo, split.done, split.busy, split.caught_up)
    return _run(ctx, backend, tracker, result, backend.submit)


def refuse_a_new_version_while_the_old_runs(ctx: SweepContext, trials: list[Trial]) -> None:
    """The same sweep name with other settings (other trial ids) while trials of the recorded version still run:
    the new version would replace the record those trials belong to (status, cancel and compare would no longer
    see them). Refused, saying what to do."""
    if not ctx.sweep_dir.is_dir():
        return
    new = {t.id for t in trials}
    running = [t.id for t in read_trials(ctx) if t.id not in new and trial_owner(ctx.trial_dir(t.id)) is not None]
    if running:
        raise OrchestratorError(
            f"sweep '{ctx.name}' is still running {len(running)} trial(s) of its recorded version "
            f"({', '.join(running[:3])}{', ...' if len(running) > 3 else ''}), and this submission has other "
            f"settings (other trials); wait for them, or `convit-sweep cancel {ctx.name}` first, or give the changed "
            "sweep another name")


def resume_sweep(ctx: SweepContext, backend: Backend) -> SubmitResult:
    """Continue a submitted sweep where its backend left it (``Backend.resume``), through the same lifecycle."""
    backend.check_resume(ctx)
    trials = read_trials(ctx)
    tracker = open_sweep(ctx, trials, recorded_spec_text(ctx))
    split = split_finished(ctx, trials, tracker)
    result = SubmitResult(ctx, split.todo, split.done, split.busy, split.caught_up)
    return _run(ctx, backend, tracker, result, backend.resume)


def _record_refusal(ctx: SweepContext, tracker: Tracker, trials: list[Trial], exc: Exception) -> None:
    """A submission that failed part-way leaves consistent records: every trial that never started is marked
    failed with the reason (``status`` shows it, a corrected resubmission runs it), and the parent run ends
    FAILED with the reason as a tag. Nothing is left looking pending or RUNNING."""
    reason = " ".join(str(exc).split())[:2000] or type(exc).__name__
    for trial in trials:
        trial_dir = ctx.trial_dir(trial.id)
        if not read_status(trial_dir) and trial_owner(trial_dir) is None:
            write_status(trial_dir, "failed", error=f"not started: the {ctx.backend} backend refused the "
                                                    f"submission: {reason}")
    if ctx.parent_run_id:
        try:
            tracker.set_tags(ctx.parent_run_id, {"submit_error": reason[:5000]})
        except Exception:  # noqa: BLE001 - the reason is on disk already; the run's status matters more
            pass
    close_sweep(ctx, tracker, FAILED)


def _run(ctx: SweepContext, backend: Backend, tracker: Tracker, result: SubmitResult,
         start: Callable[[SweepContext, list[Trial]], None]) -> SubmitResult:
    """Hand the unfinished trials to the backend; a blocking backend's return ends the parent run, unless trials
    of the sweep are still running under another owner (that owner's submission closes it)."""
    if result.submitted:
        try:
            start(ctx, result.submitted)
        except Exception as exc:  # the scheduler refused, or the backend broke: the records must say so
            _record_refusal(ctx, tracker, result.submitted, exc)
            raise
        except BaseException:  # Ctrl-C: a blocking backend has stopped its trials (each checkpointed)
            if backend.blocking:
                close_sweep(ctx, tracker, KILLED)
            raise
    result.statuses = backend.status(ctx)
    if backend.blocking and not result.busy:
        close_sweep(ctx, tracker, sweep_outcome(result.statuses))
        if result.submitted or result.caught_up:
            from orchestrator.compare import report_sweep  # heavy: matplotlib, only once trials have run

            report_sweep(ctx)
    return result
