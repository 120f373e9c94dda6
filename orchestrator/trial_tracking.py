"""A trial's MLflow child run: opened (or reopened) by the trial's process, caught up after a tracking outage,
or ended for a trial whose process never could.

Split from :mod:`orchestrator.trial_runner` so that a trial process imports MLflow only when it opens its run
(in a background thread, after the engine), not before its first training step.
"""
from __future__ import annotations

from typing import Callable, Literal, Mapping

from convit.records import (CONFIG_FILE, FINAL_FILE, METRICS_FILE, TrialBusy, is_finished, own_trial, read_final,
                            read_json, write_json)
from orchestrator.mlflow_views import run_name
from orchestrator.status import write_status
from orchestrator.tracking import MlflowReporter, Tracker, TrialRun, env_tags
from orchestrator.trial import Trial
from orchestrator.workdir import RUN_ID_FILE, TRIAL_FILE, SweepContext


def start_trial_run(trial: Trial, ctx: SweepContext, tags: Mapping[str, str] | None,
                    warn: Callable[[str], None]) -> TrialRun:
    """The run of a trial this process trains now, kept going through tracking outages by :class:`TrialRun`."""
    out_dir = ctx.trial_dir(trial.id)
    return TrialRun(Tracker(ctx.tracking_uri), out_dir / METRICS_FILE, lambda: open_run(trial, ctx, tags), warn)


def open_run(trial: Trial, ctx: SweepContext, tags: Mapping[str, str] | None = None) -> str:
    """Open (or reopen) the trial's child run with its tags, and record its id in the trial folder.

    The ``start_hosts`` tag is the host of each start in order ("node2,node1": a trial retried elsewhere after its
    node was lost), as the trial folder's mlflow_run.json keeps them: each start records its host there before it
    trains (:func:`orchestrator.trial_runner.record_start`), so a start lost before its run opened still counts."""
    out_dir = ctx.trial_dir(trial.id)
    known = read_json(out_dir / RUN_ID_FILE, {}) or {}
    start_hosts = list(known.get("start_hosts", []))
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
