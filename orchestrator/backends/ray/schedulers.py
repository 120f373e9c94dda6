"""Tune schedulers from a sweep file's ``ray.scheduler`` section: FIFO (default), ASHA, PBT.

Time is counted in epochs (the result key ``epochs_done``), not in Tune's ``training_iteration``: a trial that
resumes from an engine checkpoint newer than Tune's last report keeps its epoch count right. The section itself
is validated without Ray by :mod:`orchestrator.sections.ray`.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining

from convit.records import write_json
from orchestrator.sections.ray import RaySchedulerSection, mutation_bounds

EPOCHS_DONE = "epochs_done"


def clip_to_bounds(config: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """PBT's custom explore step: a x1.2 perturbation must not leave the declared range (Tune does not clip)."""
    for key, (low, high) in bounds.items():
        if key in config and isinstance(config[key], (int, float)):
            config[key] = type(config[key])(min(max(config[key], low), high))
    return config


class StopMarkingASHA(AsyncHyperBandScheduler):
    """ASHA that, before Tune acts on a STOP decision, writes ``<stop_dir>/<tune trial id>.json``.

    The trial process cannot tell a scheduler's stop from a pause or from the end of the experiment (Tune ends
    the training thread the same way); the marker, written first, lets it record "stopped early" instead of
    "interrupted". A module-level class, so Tune can pickle it with the experiment state (Tuner.restore).
    """

    stop_dir: str = ""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.STOP and self.stop_dir:
            write_json(Path(self.stop_dir) / f"{trial.trial_id}.json", {
                "scheduler": "asha", "epoch": result.get("epoch"), EPOCHS_DONE: result.get(EPOCHS_DONE),
                "metric": self.metric, "value": result.get(self.metric)})
        return decision


def to_tune_space(space: Any) -> Any:
    if isinstance(space, list):
        return list(space)
    if space["distribution"] == "loguniform":
        return tune.loguniform(space["low"], space["high"])
    return tune.uniform(space["low"], space["high"])


def build_scheduler(section: RaySchedulerSection, max_epochs: int, stop_dir: Path) -> Any:
    """The Tune scheduler for ``section``; None means Tune's FIFO."""
    if section.type == "fifo":
        return None
    if section.type == "asha":
        scheduler = StopMarkingASHA(time_attr=EPOCHS_DONE, metric=section.metric, mode=section.mode,
                                    grace_period=section.grace_period, reduction_factor=section.reduction_factor,
                                    max_t=section.max_t or max_epochs)
        scheduler.stop_dir = str(stop_dir)
        return scheduler
    mutations = section.hyperparam_mutations
    return PopulationBasedTraining(
        time_attr=EPOCHS_DONE, metric=section.metric, mode=section.mode,
        perturbation_interval=section.perturbation_interval, quantile_fraction=section.quantile_fraction,
        resample_probability=section.resample_probability,
        hyperparam_mutations={k: to_tune_space(v) for k, v in mutations.items()},
        custom_explore_fn=functools.partial(clip_to_bounds, bounds=mutation_bounds(mutations)))


def asha_rungs(section: RaySchedulerSection, max_epochs: int) -> list[int]:
    """The epochs at which ASHA compares trials (for messages and docs)."""
    max_t = section.max_t or max_epochs
    out, k = [], 0
    while section.grace_period * section.reduction_factor ** k < max_t:
        out.append(int(math.floor(section.grace_period * section.reduction_factor ** k)))
        k += 1
    return out
