"""Checks that need the filesystem, run before anything is submitted: is every trial's data where it says, and
does its budget fit the subset? A wrong ``data_root`` found here costs one error message (exit 2); found by the
trial, it costs a queued job, a failed MLflow run and a cluster slot.

Only meaningful where the trials will see the same filesystem as the submitting process (the local backend,
SLURM's shared filesystems, a Ray cluster started here). A remote Ray cluster skips it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from convit.config import TrialConfig
from orchestrator.errors import SpecError, SpecIssue
from orchestrator.spec import SweepSpec, locate_trial_key
from orchestrator.trial import Trial

if TYPE_CHECKING:
    from convit.data import TrainingPlan

_PLANS: dict[tuple[str, str | None], "TrainingPlan"] = {}


def _check_data(config: TrialConfig) -> "TrainingPlan":
    from convit.data import check_data  # heavy: convit.data imports torch; only needed once data is read

    return check_data(config)


def trial_plan(config: TrialConfig) -> "TrainingPlan | None":
    """The engine's training plan of a trial (convit.data.TrainingPlan), memoised; None when its data cannot
    be read here (a remote cluster's filesystem): callers show what they can without it."""
    from convit.data import DataError  # heavy: torch (see _check_data)

    key = (config.config_hash(), config.data_root)
    if key not in _PLANS:
        try:
            _PLANS[key] = _check_data(config)
        except (DataError, OSError):
            return None
    return _PLANS[key]


def planned_epochs(trial: Trial) -> int | None:
    plan = trial_plan(trial.config)
    return plan.epochs if plan is not None else None


def check_trials_data(trials: list[Trial], spec: SweepSpec) -> dict[str, "TrainingPlan"]:
    """Every trial's training plan (by trial id), or one SpecError listing every distinct data or budget
    problem at the line that set the key to fix (file:line:key), with the trials it affects."""
    from convit.data import DataError  # heavy: torch (see _check_data)

    plans: dict[str, TrainingPlan] = {}
    problems: dict[tuple[SpecIssue, str], list[str]] = {}
    for trial in trials:
        try:
            plans[trial.id] = _check_data(trial.config)
            _PLANS[(trial.config.config_hash(), trial.config.data_root)] = plans[trial.id]
        except DataError as exc:
            where = locate_trial_key(spec, trial, exc.key)
            problems.setdefault((where, str(exc)), []).append(trial.name)
    if problems:
        raise SpecError([SpecIssue(where.file, where.line, where.key,
                                   f"{msg} (trials: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
                         for (where, msg), names in problems.items()])
    return plans
