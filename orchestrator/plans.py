"""A trial's training plan (convit.data.TrainingPlan: epochs, steps, subset sizes): the one the engine recorded in
its folder's config.json, else the data check's, memoised. Kept apart from the preflight (which locates problems in
the sweep file, so needs the sweep language) because trial processes read it too: ``status.py`` and the trial
runner must not load the YAML parser to count a trial's epochs."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from convit.config import TrialConfig
from convit.records import CONFIG_FILE, read_json
from orchestrator.trial import Trial

if TYPE_CHECKING:
    from convit.data import TrainingPlan

_PLANS: dict[tuple[str, str | None], "TrainingPlan"] = {}


def data_module() -> ModuleType:
    """convit.data: torch-free (its check reads label files with numpy; timm only for a recipe name its tested
    lists do not cover, see convit.data.recipe), yet kept off the paths that read no data (`list`, `--help`)."""
    from convit import data  # heavy: numpy, PIL; only once a trial's data is checked

    return data


def remember_plan(config: TrialConfig, plan: "TrainingPlan") -> None:
    """Memoise a plan computed elsewhere (the preflight's check of every trial), so trial_plan need not redo it."""
    _PLANS[(config.config_hash(), config.data_root)] = plan


def trial_plan(config: TrialConfig) -> "TrainingPlan | None":
    """The engine's training plan of a trial (convit.data.TrainingPlan), memoised; None when its data cannot
    be read here (a remote cluster's filesystem): callers show what they can without it."""
    data = data_module()
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
