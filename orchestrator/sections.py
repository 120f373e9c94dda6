"""Typed sections of a sweep file that configure where trials run and where they are tracked.

Each backend has its own pydantic model so that its owner can extend it without touching the others.
All sections forbid unknown keys (typos are errors with a "did you mean") and are strict about types:
``cpus_per_trial: "2"`` is an error, not a silent conversion.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      field_validator, model_validator)


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
        from orchestrator.backends.ray_schedulers import check_metric

        return check_metric(value)

    @field_validator("hyperparam_mutations")
    @classmethod
    def _mutations(cls, value: dict[str, Any]) -> dict[str, Any]:
        from orchestrator.backends.ray_schedulers import check_mutations

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


class SlurmSection(Section):
    """SLURM through submitit: one job array per sweep, one array task per trial (docs/slurm.md).

    The keys are those of the cluster profiles in ``slurm/profiles/``. ``profile`` names one (or is a path to
    one); keys written here override it, and the defaults below fill what neither sets. The profile is read
    while the sweep file is validated, so the sweep folder records the resolved values. ``time_min`` and
    ``max_num_timeout`` are still accepted as the old names of ``timeout_min`` and ``max_requeues``.
    Names that end up in the batch script are checked here: a newline or a quote there would break it.
    """

    profile: str | None = None
    nodes: PositiveInt = 1
    gpus_per_node: NonNegativeInt = 0
    tasks_per_node: PositiveInt = 1
    cpus_per_task: PositiveInt = 1
    mem_gb: PositiveFloat | None = None
    timeout_min: PositiveInt = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: PositiveInt = 16
    signal_delay_s: PositiveInt = Field(120, description="USR2 this long before the time limit: checkpoint time")
    max_requeues: NonNegativeInt = Field(3, description="time-limit requeues per trial (preemptions always are)")
    setup: list[str] = Field(default_factory=list)
    additional_parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        from orchestrator.backends.slurm_profiles import merge_profile

        return merge_profile(cls, data)

    @field_validator("partition", "account", "qos")
    @classmethod
    def _safe_name(cls, value: str | None, info: Any) -> str | None:
        from orchestrator.backends.slurm_profiles import check_name

        return check_name(value, info.field_name)

    @field_validator("constraint")
    @classmethod
    def _safe_constraint(cls, value: str | None) -> str | None:
        from orchestrator.backends.slurm_profiles import check_constraint

        return check_constraint(value)

    @field_validator("setup")
    @classmethod
    def _one_line_each(cls, value: list[str]) -> list[str]:
        from orchestrator.backends.slurm_profiles import check_setup

        return check_setup(value)

    @field_validator("additional_parameters")
    @classmethod
    def _safe_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        from orchestrator.backends.slurm_profiles import check_parameters

        return check_parameters(value)

    @model_validator(mode="after")
    def _signal_before_limit(self) -> "SlurmSection":
        if self.signal_delay_s >= self.timeout_min * 60:
            raise ValueError(f"signal_delay_s ({self.signal_delay_s}) must be shorter than the time limit "
                             f"(timeout_min {self.timeout_min} = {self.timeout_min * 60} s)")
        return self
