"""The backend interface: where a sweep's trials run. Backends decide placement only; the engine trains and
:mod:`orchestrator.trial_runner` logs, whatever the backend.

Contract (ARCHITECTURE.md §3): ``submit(sweep, trials)``, ``status(sweep)``, ``cancel(sweep)``.
``trials`` are only those still to run: the CLI has already dropped the finished ones (idempotent resubmission
is not each backend's job). A backend keeps its own state under ``sweep.sweep_dir`` so that ``status`` and
``cancel`` work from another process, later.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from orchestrator.workdir import SweepContext, TrialStatus, read_trials, trial_status


class Backend(ABC):
    """Where trials run. Subclasses set ``name`` (the --backend value and the MLflow ``backend`` tag)."""

    name: ClassVar[str] = ""
    #: True when submit() returns only once every trial has ended (local, Ray); False when it hands the
    #: trials to a scheduler and returns (SLURM). The CLI closes the sweep's parent run only for blocking ones.
    blocking: ClassVar[bool] = True

    def validate(self, sweep: SweepContext, trials: list[Any]) -> None:
        """Refuse what only this backend can judge (raise OrchestratorError), before anything is recorded:
        called by ``submit`` and ``--dry-run`` ahead of the sweep's parent run. Default: nothing to check."""

    @abstractmethod
    def submit(self, sweep: SweepContext, trials: list[Any]) -> None:
        """Run ``trials`` (each through orchestrator.trial_runner) with the resources in ``sweep.options``."""

    def status(self, sweep: SweepContext) -> list[TrialStatus]:
        """Each trial's state. The default reads the trial folders, which every backend writes through the
        trial runner; override to add scheduler knowledge (a queued SLURM job, a Ray trial id)."""
        return [trial_status(t, sweep.trial_dir(t.id)) for t in read_trials(sweep)]

    @abstractmethod
    def cancel(self, sweep: SweepContext) -> None:
        """Stop the sweep's running trials (each checkpoints first) and start no more."""
