"""What a backend leaves in a sweep folder that rooms outside it read: ``convit-sweep list`` tells a Ray trial
stopped early by its scheduler from these files without importing the Ray backend (so without Ray). Names only,
no reader: torch-, ray- and mlflow-free. The Ray backend writes them (backends/ray/trainable.py, schedulers.py).

    <sweep>/ray/                       Tune's storage_path: experiment state, reported checkpoints
    <sweep>/ray/identity/<tune id>.json  the orchestrator trial a Tune trial was created for ({"trial_id"})
    <sweep>/ray/stops/<tune id>.json     a scheduler's STOP decision for a Tune trial
    <trial>/ray_stopped.json           the driver's record that the scheduler ended the trial: a finished trial
"""
from __future__ import annotations

from pathlib import Path

RAY_DIR = "ray"
RAY_IDENTITY_DIR = "identity"
RAY_STOPS_DIR = "stops"
RAY_STOPPED_FILE = "ray_stopped.json"


def ray_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / RAY_DIR


def ray_identity_file(sweep_dir: Path, tune_trial_id: str) -> Path:
    return ray_dir(sweep_dir) / RAY_IDENTITY_DIR / f"{tune_trial_id}.json"


def ray_stops_dir(sweep_dir: Path) -> Path:
    return ray_dir(sweep_dir) / RAY_STOPS_DIR
