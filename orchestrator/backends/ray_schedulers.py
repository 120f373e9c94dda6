"""Tune schedulers from a sweep file's ``ray.scheduler`` section: FIFO (default), ASHA, PBT.

Time is counted in epochs (the result key ``epochs_done``), not in Tune's ``training_iteration``: a trial that
resumes from an engine checkpoint newer than Tune's last report keeps its epoch count right.

This module is imported by :mod:`orchestrator.sections` to validate the section, so it must import without
Ray; Ray is imported inside :func:`build_scheduler` only.
"""
from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

EPOCHS_DONE = "epochs_done"

#: Per-epoch metrics of the engine a scheduler may rank trials by (each row of metrics.jsonl). Validation
#: metrics are carried over to epochs without evaluation (eval_every > 1) so the metric is in every report.
SCHEDULER_METRICS = ("val_top1", "val_top5", "val_loss", "best_val_top1", "train_loss", "ema_val_top1",
                     "ema_val_top5", "ema_val_loss")

#: Trial keys PBT may change in the middle of a trial. Each either lives in the optimizer/LR schedule (lr,
#: weight_decay: rewritten in the checkpoint, see ray_pbt) or in objects rebuilt from the config at every start
#: (regularisation, augmentation). Anything that changes the weights' shapes, the data or the step count does not.
MUTABLE_KEYS = ("lr", "weight_decay", "label_smoothing", "mixup", "cutmix", "mixup_prob", "reprob",
                "model_kwargs.drop_path_rate", "model_kwargs.drop_rate", "model_kwargs.attn_drop_rate")


# ------------------------------------------------------------------------------------------------ validation
def check_metric(name: str) -> str:
    """A scheduler ranks trials by the validation split (carved from the training data), never the test split."""
    if name in SCHEDULER_METRICS:
        return name
    if name.startswith(("test_", "ema_test_", "test/")):
        raise ValueError(f"'{name}' is measured on the test split, which no in-training decision may use (it would "
                         "select on the test set); rank by the validation split instead, e.g. 'val_top1'")
    close = difflib.get_close_matches(name.replace("/", "_"), SCHEDULER_METRICS, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(f"'{name}' is not a per-epoch metric of the engine{hint}; choose from "
                     f"{', '.join(SCHEDULER_METRICS)}")


class Mutation(BaseModel):
    """A continuous PBT search space: perturbed by x0.8/x1.2, resampled from here, clipped to [low, high]."""

    model_config = ConfigDict(extra="forbid", strict=True)

    distribution: Literal["uniform", "loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> "Mutation":
        if not self.low < self.high:
            raise ValueError(f"'low' ({self.low:g}) must be smaller than 'high' ({self.high:g})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("'loguniform' needs 'low' > 0")
        return self


def check_mutations(mutations: dict[str, Any]) -> dict[str, Any]:
    """Normalise ``key: [values]`` / ``key: {distribution, low, high}``; one error listing every problem."""
    problems, out = [], {}
    for key, space in mutations.items():
        if key not in MUTABLE_KEYS:
            close = difflib.get_close_matches(key, MUTABLE_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"'{key}' cannot change in the middle of a trial{hint}; PBT can mutate "
                            f"{', '.join(MUTABLE_KEYS)}")
            continue
        if isinstance(space, list):
            if not space or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in space):
                problems.append(f"{key}: a list of values must be non-empty and numeric (got {space!r})")
            else:
                out[key] = list(space)
            continue
        if not isinstance(space, dict):
            problems.append(f"{key}: give a list of values or {{distribution: uniform|loguniform, low, high}} "
                            f"(got {space!r})")
            continue
        try:
            out[key] = Mutation.model_validate(space).model_dump()
        except ValidationError as exc:
            problems += [f"{key}.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}".rstrip(
                ".: ") for e in exc.errors()]
    if problems:
        raise ValueError("; ".join(problems))
    return out


def mutation_bounds(mutations: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(low, high) of every mutated key: the values PBT may ever give it."""
    out = {}
    for key, space in mutations.items():
        out[key] = (min(space), max(space)) if isinstance(space, list) else (space["low"], space["high"])
    return out


def clip_to_bounds(config: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """PBT's custom explore step: a x1.2 perturbation must not leave the declared range (Tune does not clip)."""
    for key, (low, high) in bounds.items():
        if key in config and isinstance(config[key], (int, float)):
            config[key] = type(config[key])(min(max(config[key], low), high))
    return config


# ------------------------------------------------------------------------------------------------- schedulers
def _stop_marking_asha() -> type:
    """ASHA that, before Tune acts on a STOP decision, writes ``<stop_dir>/<tune trial id>.json``.

    The trial process cannot tell a scheduler's stop from a pause or from the end of the experiment (Tune ends
    the training thread the same way); the marker, written first, lets it record "stopped early" instead of
    "interrupted".
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler

    class StopMarkingASHA(AsyncHyperBandScheduler):
        stop_dir: str = ""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == self.STOP and self.stop_dir:
                from orchestrator.workdir import write_json

                write_json(Path(self.stop_dir) / f"{trial.trial_id}.json", {
                    "scheduler": "asha", "epoch": result.get("epoch"), EPOCHS_DONE: result.get(EPOCHS_DONE),
                    "metric": self.metric, "value": result.get(self.metric)})
            return decision

    # Tune pickles the scheduler with the experiment state (Tuner.restore): make the class findable by name.
    StopMarkingASHA.__module__, StopMarkingASHA.__qualname__ = __name__, "StopMarkingASHA"
    return StopMarkingASHA


@functools.cache
def _asha_class() -> type:
    cls = _stop_marking_asha()
    globals()[cls.__name__] = cls
    return cls


def __getattr__(name: str) -> Any:
    if name == "StopMarkingASHA":
        return _asha_class()
    raise AttributeError(name)


def to_tune_space(space: Any) -> Any:
    from ray import tune

    if isinstance(space, list):
        return list(space)
    if space["distribution"] == "loguniform":
        return tune.loguniform(space["low"], space["high"])
    return tune.uniform(space["low"], space["high"])


def build_scheduler(section: Any, max_epochs: int, stop_dir: Path) -> Any:
    """The Tune scheduler for ``section`` (a RaySchedulerSection); None means Tune's FIFO."""
    if section.type == "fifo":
        return None
    if section.type == "asha":
        cls = _asha_class()
        scheduler = cls(time_attr=EPOCHS_DONE, metric=section.metric, mode=section.mode,
                        grace_period=section.grace_period, reduction_factor=section.reduction_factor,
                        max_t=section.max_t or max_epochs)
        scheduler.stop_dir = str(stop_dir)
        return scheduler
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = section.hyperparam_mutations
    return PopulationBasedTraining(
        time_attr=EPOCHS_DONE, metric=section.metric, mode=section.mode,
        perturbation_interval=section.perturbation_interval, quantile_fraction=section.quantile_fraction,
        resample_probability=section.resample_probability,
        hyperparam_mutations={k: to_tune_space(v) for k, v in mutations.items()},
        custom_explore_fn=functools.partial(clip_to_bounds, bounds=mutation_bounds(mutations)))


def asha_rungs(section: Any, max_epochs: int) -> list[int]:
    """The epochs at which ASHA compares trials (for messages and docs)."""
    max_t = section.max_t or max_epochs
    out, k = [], 0
    while section.grace_period * section.reduction_factor ** k < max_t:
        out.append(int(math.floor(section.grace_period * section.reduction_factor ** k)))
        k += 1
    return out
