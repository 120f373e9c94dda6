"""The ``ray:`` section (Ray Tune) and its scheduler, validated here without Ray: which metric a scheduler may rank
by (never the test split), which trial keys PBT may mutate and over which ranges (docs/ray.md)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, field_validator, model_validator)

from orchestrator.sections.base import Section
from orchestrator.text import did_you_mean, pydantic_problems

#: Per-epoch metrics of the engine a scheduler may rank trials by (each row of metrics.jsonl). Validation
#: metrics are carried over to epochs without evaluation (eval_every > 1) so the metric is in every report.
SCHEDULER_METRICS = ("val_top1", "val_top5", "val_loss", "best_val_top1", "train_loss", "ema_val_top1",
                     "ema_val_top5", "ema_val_loss")

#: Trial keys PBT may change in the middle of a trial. Each either lives in the optimizer/LR schedule (lr,
#: weight_decay: rewritten in the checkpoint, see orchestrator.backends.ray.pbt) or in objects rebuilt from the config at every start
#: (regularisation, augmentation). Anything that changes the weights' shapes, the data or the step count does not.
MUTABLE_KEYS = ("lr", "weight_decay", "label_smoothing", "mixup", "cutmix", "mixup_prob", "reprob",
                "model_kwargs.drop_path_rate", "model_kwargs.drop_rate", "model_kwargs.attn_drop_rate")


def check_metric(name: str) -> str:
    """A scheduler ranks trials by the validation split (carved from the training data), never the test split."""
    if name in SCHEDULER_METRICS:
        return name
    if name.startswith(("test_", "ema_test_", "test/")):
        raise ValueError(f"'{name}' is measured on the test split, which no in-training decision may use (it would "
                         "select on the test set); rank by the validation split instead, e.g. 'val_top1'")
    hint = did_you_mean(name.replace("/", "_"), SCHEDULER_METRICS, cutoff=0.5)
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
            hint = did_you_mean(key, MUTABLE_KEYS)
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
            problems += [f"{key}.{loc}: {message}".rstrip(".: ")
                         for loc, message in pydantic_problems(exc, with_input=False)]
    if problems:
        raise ValueError("; ".join(problems))
    return out


def mutation_bounds(mutations: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(low, high) of every mutated key: the values PBT may ever give it."""
    out = {}
    for key, space in mutations.items():
        out[key] = (min(space), max(space)) if isinstance(space, list) else (space["low"], space["high"])
    return out


class RaySchedulerSection(Section):
    """A Tune trial scheduler (see docs/ray.md). Time is counted in epochs (grace_period, max_t,
    perturbation_interval); ``metric`` is one of the engine's per-epoch metrics."""

    type: Literal["fifo", "asha", "pbt"] = "fifo"
    metric: str = "val_top1"
    mode: Literal["max", "min"] = "max"
    grace_period: PositiveInt = 1
    reduction_factor: float = Field(3.0, gt=1)
    max_t: PositiveInt | None = Field(None, description="ASHA: epochs of a full trial (default: the trials' epochs)")
    perturbation_interval: PositiveInt = 2
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)
    hyperparam_mutations: dict[str, Any] = Field(
        default_factory=dict, description="PBT: trial key -> list of values or {distribution, low, high}")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return check_metric(value)

    @field_validator("hyperparam_mutations")
    @classmethod
    def _mutations(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_mutations(value)

    @model_validator(mode="after")
    def _pbt_only(self) -> "RaySchedulerSection":
        if self.type == "pbt" and not self.hyperparam_mutations:
            raise ValueError("pbt needs hyperparam_mutations (e.g. lr: {distribution: loguniform, low: 1e-4, "
                             "high: 1e-2})")
        if self.type != "pbt" and self.hyperparam_mutations:
            raise ValueError(f"hyperparam_mutations apply to type: pbt only (type is {self.type})")
        return self


class RaySection(Section):
    """Ray Tune: resources per trial (fractional GPUs allowed), concurrency and retries. Without ``address`` the
    sweep starts a private Ray on this machine (``num_cpus``/``num_gpus`` of it, dashboard off, 127.0.0.1)."""

    address: str | None = Field(None, description="an existing cluster ('auto', 'HOST:6379', 'ray://host:10001'); "
                                "none: start one on this machine")
    num_cpus: PositiveInt | None = Field(None, description="local Ray only: CPUs it may use (default: all)")
    num_gpus: NonNegativeInt | None = Field(None, description="local Ray only: GPUs it may use (default: all)")
    dashboard: bool = Field(False, description="local Ray only: serve the dashboard on 127.0.0.1")
    cpus_per_trial: PositiveFloat = 1.0
    gpus_per_trial: NonNegativeFloat = 0.0
    max_concurrent_trials: PositiveInt | None = None
    max_failures: NonNegativeInt = 2
    time_limit_min: PositiveFloat | None = None
    scheduler: RaySchedulerSection = Field(default_factory=RaySchedulerSection)

    @model_validator(mode="after")
    def _local_only(self) -> "RaySection":
        given = [k for k in ("num_cpus", "num_gpus") if getattr(self, k) is not None] + (
            ["dashboard"] if self.dashboard else [])
        if self.address and given:
            raise ValueError(f"{', '.join(given)} size the local Ray the sweep starts; with 'address' the "
                             "cluster has its own resources: remove them")
        if self.num_cpus is not None and self.cpus_per_trial > self.num_cpus:
            raise ValueError(f"cpus_per_trial ({self.cpus_per_trial:g}) exceeds num_cpus ({self.num_cpus}): "
                             "no trial could ever start")
        return self
