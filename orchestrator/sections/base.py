"""The sections every backend shares: the base of all sections (unknown keys and loose types are mistakes),
``tracking:`` and ``local:`` (the embedded backend)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt


class Section(BaseModel):
    """Base of every sweep section: unknown keys and loose types are mistakes, not extensions."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "Section":
        """The section as recorded in a sweep folder (sweep.json), already validated once at submission."""
        return cls.model_validate(data)


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
