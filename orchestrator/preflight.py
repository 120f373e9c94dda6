"""Checks that need the filesystem, run before anything is submitted: is every trial's data where it says, and
does its budget fit the subset? A wrong ``data_root`` found here costs one error message (exit 2); found by the
trial, it costs a queued job, a failed MLflow run and a cluster slot.

Only meaningful where the trials will see the same filesystem as the submitting process (the local backend,
SLURM's shared filesystems, a Ray cluster started here). A remote Ray cluster skips it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.errors import SpecError, SpecIssue
from orchestrator.plans import data_module, planned_epochs, remember_plan  # planned_epochs: re-exported
from orchestrator.spec import SweepSpec, locate_trial_key
from orchestrator.trial import Trial

if TYPE_CHECKING:
    from convit.data import TrainingPlan

__all__ = ["check_trials_data", "planned_epochs"]


def check_trials_data(trials: list[Trial], spec: SweepSpec) -> dict[str, "TrainingPlan"]:
    """Every trial's training plan (by trial id), or one SpecError listing every distinct data or budget
    problem at the line that set the key to fix (file:line:key), with the trials it affects."""
    data = data_module()
    plans: dict[str, TrainingPlan] = {}
    problems: dict[tuple[SpecIssue, str], list[str]] = {}
    for trial in trials:
        try:
            plans[trial.id] = data.check_data(trial.config)
            data.check_init_checkpoint(trial.config)  # the file exists (its keys are checked as the trial starts)
            remember_plan(trial.config, plans[trial.id])
        except data.DataError as exc:
            where = locate_trial_key(spec, trial, exc.key)
            problems.setdefault((where, str(exc)), []).append(trial.name)
    if problems:
        raise SpecError([SpecIssue(where.file, where.line, where.key,
                                   f"{msg} (trials: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
                         for (where, msg), names in problems.items()])
    return plans
