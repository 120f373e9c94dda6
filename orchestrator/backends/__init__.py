"""Backends by name, imported only when asked for: a missing Ray or submitit breaks only its own backend.

Each entry is ``"module:Class"``; a new backend registers here and implements
:class:`orchestrator.backends.base.Backend`.
"""
from __future__ import annotations

import importlib
from typing import Any

from orchestrator.errors import BackendUnavailable

BACKENDS: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "ray": "orchestrator.backends.ray.backend:RayBackend",
    "slurm": "orchestrator.backends.slurm.backend:SlurmBackend",
}


def get_backend(name: str, **kwargs: Any) -> Any:
    """An instance of the backend called ``name``; :class:`BackendUnavailable` says why one cannot load."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend '{name}'; choose from {', '.join(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if missing == module_name:
            raise BackendUnavailable(f"the '{name}' backend is not available in this installation "
                                     f"({module_name} does not exist yet)") from exc
        raise BackendUnavailable(f"the '{name}' backend needs the package '{missing}', which is not installed: "
                                 f"pip install it into this environment") from exc
    except ImportError as exc:
        raise BackendUnavailable(f"the '{name}' backend failed to import: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise BackendUnavailable(f"{module_name} has no {class_name}")
    return cls(**kwargs)
