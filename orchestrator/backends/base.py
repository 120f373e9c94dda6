"""The backend interface: where a sweep's trials run. Backends decide placement only; the engine trains and
:mod:`orchestrator.trial_runner` logs, whatever the backend.

Contract (docs/ARCHITECTURE.md): ``submit(sweep, trials)``, ``status(sweep)``, ``cancel(sweep)``, and for backends
that can continue an interrupted sweep from their own state, ``check_resume``/``resume``. ``trials`` are only
those still to run: :mod:`orchestrator.submit` has already dropped the finished ones (idempotent resubmission is
not each backend's job). A backend declares the type of its section of the sweep file (``section``) and finds
it, typed, in ``sweep.options``. It keeps its own state under ``sweep.sweep_dir`` so that ``status`` and
``cancel`` work from another process, later.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from orchestrator.errors import OrchestratorError
from orchestrator.sections import Section
from orchestrator.status import TrialStatus, trial_status
from orchestrator.trial import Trial
from orchestrator.workdir import SweepContext, read_trials


class Backend(ABC):
    """Where trials run. Subclasses set ``name`` (the --backend value and the MLflow ``backend`` tag) and
    ``section`` (the type of ``sweep.options``)."""

    name: ClassVar[str] = ""
    section: ClassVar[type[Section]] = Section
    #: True when submit() returns only once every trial has ended (local, Ray); False when it hands the
    #: trials to a scheduler and returns (SLURM). The parent run is closed on return only for blocking ones.
    blocking: ClassVar[bool] = True

    def options(self, sweep: SweepContext) -> Section:
        """The sweep's section for this backend, typed (validated once, when the sweep file was read)."""
        if not isinstance(sweep.options, self.section):
            raise OrchestratorError(f"sweep '{sweep.name}' was recorded for the {sweep.backend} backend, not "
                                    f"{self.name}")
        return sweep.options

    def validate(self, sweep: SweepContext, trials: list[Trial]) -> None:
        """Refuse what only this backend can judge (raise OrchestratorError), before anything is recorded:
        called by ``submit`` and ``--dry-run`` ahead of the sweep's parent run. Default: nothing to check."""

    def prepare(self, sweep: SweepContext) -> None:
        """Start what takes time before trials can start (the local backend's warm starter), in the background
        while ``submit`` records the sweep and opens its parent run; called once, after ``validate``, never for a
        dry run. Default: nothing."""

    def release(self) -> None:
        """Undo ``prepare`` when the command ends, whether or not ``submit`` ran. Default: nothing."""

    @abstractmethod
    def submit(self, sweep: SweepContext, trials: list[Trial]) -> None:
        """Run ``trials`` (each through orchestrator.trial_runner) with the resources in ``sweep.options``."""

    def check_resume(self, sweep: SweepContext) -> None:
        """Raise OrchestratorError when ``resume`` cannot continue this sweep (before its parent run reopens).
        Default: this backend resumes by submitting the sweep file again."""
        raise OrchestratorError(f"sweep '{sweep.name}' ran on the {sweep.backend} backend, which resumes by "
                                f"submitting the sweep file again (`resume` continues sweeps of backends that keep "
                                f"their own state, such as Ray's Tune experiment)")

    def resume(self, sweep: SweepContext, trials: list[Trial]) -> None:
        """Continue the unfinished ``trials`` from the backend's own saved state (default: submit them)."""
        self.submit(sweep, trials)

    def status(self, sweep: SweepContext) -> list[TrialStatus]:
        """Each trial's state. The default reads the trial folders, which every backend writes through the
        trial runner; override to add scheduler knowledge (a queued SLURM job, a Ray trial id)."""
        return [trial_status(t, sweep.trial_dir(t.id)) for t in read_trials(sweep)]

    @abstractmethod
    def cancel(self, sweep: SweepContext) -> None:
        """Stop the sweep's running trials (each checkpoints first) and start no more."""
