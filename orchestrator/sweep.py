"""Submitting a sweep, independent of the backend: record it in the working folder and in MLflow, drop the
trials that already finished, hand the rest to the backend, close the parent run.

Idempotent: submitting the same sweep again runs only unfinished trials. A trial counts as finished when its
folder has the engine's final.json or its MLflow child run (found by trial id) is FINISHED — so a sweep whose
working folder was lost, but whose tracking server remembers it, is not rerun either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.workdir import (SweepContext, TrialStatus, git_commit, read_json, sweep_dir, write_text,
                                  write_trials)


@dataclass
class SubmitResult:
    ctx: SweepContext
    submitted: list[Any] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)  # already finished
    statuses: list[TrialStatus] = field(default_factory=list)

    @property
    def failed(self) -> list[TrialStatus]:
        ids = {t.id for t in self.submitted}
        return [s for s in self.statuses if s.trial_id in ids and s.state == "failed"]

    @property
    def unfinished(self) -> list[TrialStatus]:
        ids = {t.id for t in self.submitted}
        return [s for s in self.statuses if s.trial_id in ids and s.state != "done"]


def tracking_uri_for(spec: Any, workdir: Path, cli_uri: str | None) -> str:
    """--tracking-uri, the file's tracking.uri, the URI this sweep was first submitted with, $MLFLOW_TRACKING_URI,
    then the embedded store; resubmitting without flags keeps logging where the sweep started."""
    from orchestrator.tracking import resolve_tracking_uri

    recorded = (read_json(sweep_dir(workdir, spec.name) / "sweep.json", {}) or {}).get("tracking_uri")
    return resolve_tracking_uri(workdir, cli_uri, spec.tracking.uri or recorded)


def make_context(spec: Any, workdir: Path, backend: str, tracking_uri: str) -> SweepContext:
    options = getattr(spec, backend).model_dump() if hasattr(spec, backend) else {}
    return SweepContext(name=spec.name, workdir=workdir, tracking_uri=tracking_uri,
                        experiment=spec.tracking.experiment or spec.name, backend=backend,
                        git_commit=git_commit(), axes=spec.axis_keys(), options=options, spec=spec)


def finished_on_disk(ctx: SweepContext, trials: list[Any]) -> set[str]:
    return {t.id for t in trials if (ctx.trial_dir(t.id) / "final.json").is_file()}


def submit_sweep(spec: Any, trials: list[Any], backend: Any, ctx: SweepContext) -> SubmitResult:
    """Record the sweep, open its parent run, run what is unfinished, close the parent run (blocking backends)."""
    from orchestrator.tracking import Tracker

    tracker = Tracker(ctx.tracking_uri)
    ctx.parent_run_id = tracker.start_sweep(
        experiment=ctx.experiment, sweep_id=ctx.sweep_id, spec_text=spec.resolved_text(), axes=ctx.axes,
        backend=ctx.backend, git_commit=ctx.git_commit, n_trials=len(trials), description=spec.description)
    ctx.save()
    write_text(ctx.sweep_dir / "spec.yaml", spec.resolved_text())
    write_trials(ctx, trials)
    done = finished_on_disk(ctx, trials) | tracker.finished_trial_ids(ctx.experiment, ctx.sweep_id)
    result = SubmitResult(ctx, [t for t in trials if t.id not in done], [t for t in trials if t.id in done])
    if result.submitted:
        try:
            backend.submit(ctx, result.submitted)
        except BaseException:
            if backend.blocking:
                tracker.end_run(ctx.parent_run_id, "KILLED")
            raise
    result.statuses = backend.status(ctx)
    if backend.blocking:
        states = {s.state for s in result.statuses}
        status = "FINISHED" if states <= {"done"} else ("FAILED" if "failed" in states else "KILLED")
        tracker.end_run(ctx.parent_run_id, status)
    return result
