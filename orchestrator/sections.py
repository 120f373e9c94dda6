"""Typed sections of a sweep file that configure where trials run and where they are tracked.

Each backend has its own pydantic model so that its owner can extend it without touching the others.
All sections forbid unknown keys (typos are errors with a "did you mean") and are strict about types:
``cpus_per_trial: "2"`` is an error, not a silent conversion.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt


class Section(BaseModel):
    """Base of every sweep section: unknown keys and loose types are mistakes, not extensions."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TrackingSection(Section):
    """Where runs are logged. Unset values fall back to --tracking-uri, $MLFLOW_TRACKING_URI, then the embedded
    sqlite store ``<workdir>/mlflow.db``; the experiment defaults to the sweep name."""

    uri: str | None = None
    experiment: str | None = None


class LocalSection(Section):
    """The embedded backend: trials run as processes on this machine, ``max_parallel`` at a time."""

    max_parallel: PositiveInt = 1
    cpus_per_trial: PositiveInt = 1
    gpus_per_trial: NonNegativeInt = 0
    stop_grace_s: PositiveFloat = Field(
        120.0, description="seconds a trial gets after SIGTERM to write its checkpoint before it is killed")


class RaySchedulerSection(Section):
    """A Tune trial scheduler. The Ray backend owns the meaning of these fields."""

    type: Literal["fifo", "asha", "pbt"] = "fifo"
    metric: str = "val/top1"
    mode: Literal["max", "min"] = "max"
    grace_period: PositiveInt = 1
    reduction_factor: float = Field(3.0, gt=1)
    perturbation_interval: PositiveInt = 2
    hyperparam_mutations: dict[str, Any] = Field(default_factory=dict)


class RaySection(Section):
    """Ray Tune: resources per trial (fractional GPUs allowed), concurrency and retries."""

    address: str | None = Field(None, description="an existing cluster ('auto', 'ray://host:port'); none: start one")
    cpus_per_trial: PositiveFloat = 1.0
    gpus_per_trial: NonNegativeFloat = 0.0
    max_concurrent_trials: PositiveInt | None = None
    max_failures: NonNegativeInt = 2
    time_limit_min: PositiveFloat | None = None
    scheduler: RaySchedulerSection = Field(default_factory=RaySchedulerSection)


class SlurmSection(Section):
    """SLURM through submitit: one array job per sweep, one task per trial."""

    partition: str | None = None
    time_min: PositiveInt = 60
    nodes: PositiveInt = 1
    tasks_per_node: PositiveInt = 1
    gpus_per_node: NonNegativeInt = 0
    cpus_per_task: PositiveInt = 1
    mem_gb: PositiveFloat | None = None
    array_parallelism: PositiveInt = 16
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_num_timeout: NonNegativeInt = 3
    signal_delay_s: PositiveInt = 120
    additional_parameters: dict[str, Any] = Field(default_factory=dict)
