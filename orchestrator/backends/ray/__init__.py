"""The Ray Tune backend: ``backend`` (submit, resume, status, cancel), ``session`` (a private local Ray or a
cluster), ``trainable`` (what runs inside a Tune trial), ``schedulers`` (FIFO, ASHA, PBT), ``pbt`` (moving a
checkpoint onto new hyperparameters). Only this package imports ray."""
from __future__ import annotations

from orchestrator.backends.ray.backend import RayBackend

__all__ = ["RayBackend"]
