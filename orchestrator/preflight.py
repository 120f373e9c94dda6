"""Checks that need the filesystem, run before anything is submitted: is every trial's data where it says, and
does its budget fit the subset? A wrong ``data_root`` found here costs one error message (exit 2); found by the
trial, it costs a queued job, a failed MLflow run and a cluster slot.

Only meaningful where the trials will see the same filesystem as the submitting process (the local backend,
SLURM's shared filesystems, a Ray cluster started here). A remote Ray cluster skips it.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from convit.config import TrialConfig
from convit.records import CONFIG_FILE, read_json
from orchestrator.errors import SpecError, SpecIssue
from orchestrator.spec import SweepSpec, locate_trial_key
from orchestrator.trial import Trial

if TYPE_CHECKING:
    from convit.data import TrainingPlan

_PLANS: dict[tuple[str, str | None], "TrainingPlan"] = {}


def _data() -> ModuleType:
    """convit.data: torch-free (its check reads label files with numpy; timm only for a recipe name its tested
    lists do not cover, see convit.data.recipe), yet kept off the paths that read no data (`list`, `--help`)."""
    from convit import data  # heavy: numpy, PIL; only once a trial's data is checked

    return data


def trial_plan(config: TrialConfig) -> "TrainingPlan | None":
    """The engine's training plan of a trial (convit.data.TrainingPlan), memoised; None when its data cannot
    be read here (a remote cluster's filesystem): callers show what they can without it."""
    data = _data()
    key = (config.config_hash(), config.data_root)
    if key not in _PLANS:
        try:
            _PLANS[key] = data.check_data(config)
        except (data.DataError, OSError):
            return None
    return _PLANS[key]


def recorded_plan(trial: Trial, trial_dir: Path) -> dict[str, Any] | None:
    """The plan the engine wrote into the trial's config.json when it (re)started (convit.records: ``plan``, the
    same TrainingPlan as trial_plan's), or None before that or when the folder holds another config."""
    record = read_json(trial_dir / CONFIG_FILE)
    if not isinstance(record, dict) or not isinstance(record.get("plan"), dict):
        return None
    return record["plan"] if record.get("config_hash") == trial.config.config_hash() else None


def planned_epochs(trial: Trial, trial_dir: Path | None = None) -> int | None:
    """The trial's epochs: from its folder's config.json when the engine has written it (no data to read),
    else from its plan (the data check, torch-free)."""
    if trial_dir is not None:
        epochs = (recorded_plan(trial, trial_dir) or {}).get("epochs")
        if isinstance(epochs, int) and not isinstance(epochs, bool):
            return epochs
    plan = trial_plan(trial.config)
    return plan.epochs if plan is not None else None


def check_trials_data(trials: list[Trial], spec: SweepSpec) -> dict[str, "TrainingPlan"]:
    """Every trial's training plan (by trial id), or one SpecError listing every distinct data or budget
    problem at the line that set the key to fix (file:line:key), with the trials it affects."""
    data = _data()
    plans: dict[str, TrainingPlan] = {}
    problems: dict[tuple[SpecIssue, str], list[str]] = {}
    for trial in trials:
        try:
            plans[trial.id] = data.check_data(trial.config)
            data.check_init_checkpoint(trial.config)  # the file exists (its keys are checked as the trial starts)
            _PLANS[(trial.config.config_hash(), trial.config.data_root)] = plans[trial.id]
        except data.DataError as exc:
            where = locate_trial_key(spec, trial, exc.key)
            problems.setdefault((where, str(exc)), []).append(trial.name)
    if problems:
        raise SpecError([SpecIssue(where.file, where.line, where.key,
                                   f"{msg} (trials: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
                         for (where, msg), names in problems.items()])
    return plans
