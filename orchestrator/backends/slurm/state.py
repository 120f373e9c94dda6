"""The SLURM backend's records in the sweep folder: which array task runs which trial, and the sweep's end.

``<sweep>/slurm.json`` lists every job array submitted for the sweep (job id, time, code snapshot, trials) and
maps each trial to its latest array task, so ``status`` and ``cancel`` work from any process, later. submitit's
own files (batch script, pickles, per-task logs) live in ``<sweep>/slurm/logs/``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from submitit.core.utils import JobPaths

from convit.records import read_json, write_json
from orchestrator.workdir import SweepContext

STATE_FILE = "slurm.json"
SLURM_DIR = "slurm"
STDERR_TAIL_LINES = 20


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


def record_settler(ctx: SweepContext, job_id: str, array: str) -> None:
    """The job that settles ``array`` once it has ended (see :mod:`.settle`)."""
    state = read_state(ctx)
    state.setdefault("settlers", []).append({"job_id": job_id, "array": array, "submitted": time.time()})
    write_json(state_path(ctx), state)


def stderr_path(ctx: SweepContext, job_id: str) -> Path:
    """submitit's stderr file of one array task (``123_4``) or job."""
    return JobPaths(logs_dir(ctx), job_id=job_id, task_id=0).stderr


def stderr_tail(ctx: SweepContext, job_id: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The end of the task's stderr, starting at its last traceback when there is one (header kept, middle
    frames elided) so the exception and the frames nearest to it fit in ``lines``."""
    try:
        text = stderr_path(ctx, job_id).read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    heads = [i for i, line in enumerate(kept) if line.startswith("Traceback (most recent call last)")]
    if heads and len(kept) - heads[-1] > lines:
        return "\n".join([kept[heads[-1]], "  ...", *kept[-(lines - 2):]])
    return "\n".join(kept[heads[-1]:] if heads else kept[-lines:])
