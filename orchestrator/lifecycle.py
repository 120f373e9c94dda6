"""The sweep's lifecycle in MLflow, the same on every backend and for ``resume``: open the sweep's parent run,
drop the trials that already finished, close the parent run with the sweep's status.

A trial counts as finished when its folder has the engine's final.json (convit.records) or its MLflow child run
(found by trial id) is FINISHED, so a sweep whose working folder was lost, but whose tracking server remembers
it, is not rerun either. Blocking backends (local, Ray) close the parent run when ``submit`` returns; SLURM's
tasks close it when the last trial ends (:func:`close_if_all_ended`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from convit.records import is_finished, read_json, trial_owner
from orchestrator.locks import exclusive
from orchestrator.status import TrialStatus, read_status
from orchestrator.tracking import Tracker
from orchestrator.trial import Trial
from orchestrator.trial_tracking import log_finished_trial
from orchestrator.workdir import SPEC_FILE, TRIALS_FILE, SweepContext

SWEEP_LOCK = ".sweep.lock"  # in the sweep folder
#: MLflow run status of a sweep from the states of its trials.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


def open_sweep(ctx: SweepContext, trials: list[Trial], spec_text: str, description: str = "") -> Tracker:
    """Open (or reopen, on resubmission) the sweep's parent run, record its id in sweep.json. Two submissions
    of the same sweep at once find or create one parent run between them (a lock in the sweep folder)."""
    tracker = Tracker(ctx.tracking_uri)
    with exclusive(ctx.sweep_dir / SWEEP_LOCK, what="another submission of this sweep opening its parent run"):
        ctx.parent_run_id = tracker.start_sweep(
            experiment=ctx.experiment, sweep_id=ctx.sweep_id, spec_text=spec_text, axes=ctx.axes,
            backend=ctx.backend, git_commit=ctx.git_commit, n_trials=len(trials), description=description)
        ctx.save()
    return tracker


def recorded_spec_text(ctx: SweepContext) -> str:
    """The sweep file as it was submitted (spec.yaml in the sweep folder)."""
    path = ctx.sweep_dir / SPEC_FILE
    return path.read_text() if path.exists() else ""


def finished_on_disk(ctx: SweepContext, trials: list[Trial]) -> set[str]:
    return {t.id for t in trials if is_finished(ctx.trial_dir(t.id))}


@dataclass
class Split:
    """A sweep's trials at submission: to run, already finished, or owned by a live process (left alone)."""

    todo: list[Trial]
    done: list[Trial]
    busy: dict[str, dict[str, Any]]  # trial id -> its owner {pid, host, started, command}
    caught_up: list[Trial]  # finished while tracking was down: logged to MLflow now from their folders


def split_finished(ctx: SweepContext, trials: list[Trial], tracker: Tracker) -> Split:
    """Finished on disk or in MLflow; running under another owner (a second submit of the same sweep, or trials
    that outlived a killed scheduler: each trial has one owner, see convit.records.own_trial); the rest."""
    on_disk = finished_on_disk(ctx, trials)
    in_mlflow = tracker.finished_trial_ids(ctx.experiment, ctx.sweep_id)
    done = on_disk | in_mlflow
    busy = {t.id: owner for t in trials if t.id not in done
            for owner in [trial_owner(ctx.trial_dir(t.id))] if owner is not None}
    caught_up = [t for t in trials if t.id in on_disk - in_mlflow]
    for trial in caught_up:
        log_finished_trial(trial, ctx, tracker)
    return Split([t for t in trials if t.id not in done and t.id not in busy],
                 [t for t in trials if t.id in done], busy, caught_up)


def sweep_outcome(statuses: list[TrialStatus]) -> str:
    """FINISHED when every trial is done, FAILED when one failed, else KILLED (stopped, to be resumed)."""
    states = {s.state for s in statuses}
    return FINISHED if states <= {"done"} else (FAILED if "failed" in states else KILLED)


def close_sweep(ctx: SweepContext, tracker: Tracker, status: str) -> None:
    """End the parent run with ``status``; when tracking does not answer, say so (the next submission of the
    sweep reopens and closes it) instead of failing a sweep whose trials ran."""
    if not ctx.parent_run_id:
        return
    try:
        tracker.end_run(ctx.parent_run_id, status)
    except Exception as exc:  # noqa: BLE001 - tracking down at the very end: the trials' results are on disk
        print(f"warning: could not close the sweep's MLflow run ({type(exc).__name__}: {' '.join(str(exc).split())[:200]});"
              " submitting the sweep again closes it", file=sys.stderr)


def _ended(ctx: SweepContext, trial_id: str) -> str | None:
    """'done' or 'failed' when the trial has ended for good, else None (queued, running, stopped)."""
    if is_finished(ctx.trial_dir(trial_id)):
        return "done"
    return "failed" if read_status(ctx.trial_dir(trial_id)).get("state") == "failed" else None


def close_if_all_ended(ctx: SweepContext) -> str | None:
    """End the parent run once every trial has ended (FINISHED, or FAILED if one failed), for backends whose
    submit returns before the trials end: any trial process may call it; ending a run twice is harmless, so two
    trials ending together need no lock."""
    if not ctx.parent_run_id:
        return None
    ids = [t["id"] for t in read_json(ctx.sweep_dir / TRIALS_FILE, []) or []]
    ends = [_ended(ctx, i) for i in ids]
    if not ids or None in ends:
        return None
    status = FINISHED if all(e == "done" for e in ends) else FAILED
    Tracker(ctx.tracking_uri).end_run(ctx.parent_run_id, status)
    return status
