"""The SLURM backend's records in the sweep folder: which array task runs which trial, and the sweep's end.

``<sweep>/slurm.json`` lists every job array submitted for the sweep (job id, time, code snapshot, trials) and
maps each trial to its latest array task, so ``status`` and ``cancel`` work from any process, later. submitit's
own files (batch script, pickles, per-task logs) live in ``<sweep>/slurm/logs/``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from convit.records import read_json, write_json
from orchestrator.workdir import SweepContext

STATE_FILE = "slurm.json"
SLURM_DIR = "slurm"


def state_path(ctx: SweepContext) -> Path:
    return ctx.sweep_dir / STATE_FILE


def logs_dir(ctx: SweepContext) -> Path:
    return ctx.sweep_dir / SLURM_DIR / "logs"


def read_state(ctx: SweepContext) -> dict[str, Any]:
    data = read_json(state_path(ctx), {}) or {}
    data.setdefault("arrays", [])
    data.setdefault("tasks", {})
    return data


def record_array(ctx: SweepContext, job_id: str, tasks: dict[str, str], snapshot: Path,
                 options: dict[str, Any]) -> None:
    state = read_state(ctx)
    state["arrays"].append({"job_id": job_id, "submitted": time.time(), "snapshot": str(snapshot),
                            "trials": list(tasks), "options": options})
    state["tasks"].update(tasks)
    write_json(state_path(ctx), state)


def array_ids(ctx: SweepContext) -> list[str]:
    return [str(a["job_id"]) for a in read_state(ctx)["arrays"]]
