"""The trial record: one training run of a sweep, the ground floor every other room of the orchestrator uses.

A trial is its id (a short hash of the resolved config, so the same YAML gives the same ids whatever the key
order, and a trial already run elsewhere is recognised), a readable name, the engine's typed config and the
swept values. It is written to ``trials.json``/``trial.json`` and read back in the trial process, which
therefore needs neither the YAML parser nor the expansion algorithm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convit.config import TrialConfig

ID_LENGTH = 12


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: its id, a readable name, the full config and the swept values."""

    id: str
    name: str
    config: TrialConfig
    axes: dict[str, Any] = field(default_factory=dict)

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "axes": self.axes, "config": self.config_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trial":
        config = TrialConfig.model_validate(data["config"])
        return cls(id=data["id"], name=data["name"], config=config, axes=dict(data.get("axes", {})))


def trial_id(config: TrialConfig) -> str:
    """The engine's config hash (convit.config.TrialConfig.config_hash), shortened to ID_LENGTH hex digits."""
    return config.config_hash()[:ID_LENGTH]
