"""The SLURM backend (submitit): ``backend`` (submit, status, cancel), ``job`` (what runs inside an array task),
``cluster`` (squeue/sacct/scancel), ``state`` (the sweep folder's record of arrays), ``snapshot`` (the code copy
every task runs). Only this package imports submitit."""
from __future__ import annotations

from orchestrator.backends.slurm.backend import SlurmBackend

__all__ = ["SlurmBackend"]
