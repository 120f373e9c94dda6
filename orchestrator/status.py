"""A trial's state, read from its folder alone (any backend, any process, later): ``final.json`` means done
(convit.records), a held ownership lock means running (``convit.records.trial_owner``: the kernel frees it when
the owner dies, on any host of a shared filesystem), else what the trial runner last wrote to ``status.json``."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from convit.records import (OWNER_FILE, is_finished, pid_alive, process_start, read_json, read_metrics,
                            trial_owner, write_json)
from orchestrator.plans import planned_epochs
from orchestrator.trial import Trial
from orchestrator.workdir import STATUS_FILE

TrialStateName = Literal["pending", "running", "done", "failed", "interrupted"]


@dataclass
class TrialStatus:
    """A trial's state as any backend reports it."""

    trial_id: str
    name: str
    state: TrialStateName
    epoch: int | None = None  # last completed epoch (from metrics.jsonl)
    epochs: int | None = None  # total epochs of the trial
    metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's metrics
    detail: str = ""  # failure reason, pid, job id, ...
    ref: str | None = None  # backend handle: pid, SLURM job id, Ray trial id


def write_status(trial_dir: Path, state: TrialStateName, **extra: Any) -> None:
    write_json(trial_dir / STATUS_FILE, {"state": state, **this_process(), "updated": time.time(), **extra})


def this_process() -> dict[str, Any]:
    """This process's identity for a state file: pid, its start time (so that a later process reusing the pid is
    not mistaken for it) and host."""
    return {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": socket.gethostname()}


def is_recorded_process(record: dict[str, Any], pid_key: str = "pid") -> bool:
    """True when the process a state file names is alive on this host and is the same process (its start time
    matches the one recorded): only then may it be signalled. A stale file naming a pid that another program
    now uses is never acted on."""
    pid = record.get(pid_key)
    if not pid or record.get("host", socket.gethostname()) != socket.gethostname() or not pid_alive(pid):
        return False
    start_key = "pid_start" if pid_key == "pid" else f"{pid_key}_start"
    return record.get(start_key) is not None and process_start(int(pid)) == record.get(start_key)


def read_status(trial_dir: Path) -> dict[str, Any]:
    """What the trial runner last wrote ({} before it started)."""
    return read_json(trial_dir / STATUS_FILE, {}) or {}


def state_from_folder(trial_dir: Path) -> tuple[TrialStateName, str, str | None]:
    """(state, detail, ref) of a trial from its folder alone: final.json = done, a held ownership lock = running,
    else what the runner last wrote (a "running" whose process is gone = interrupted). ``ref`` is the pid."""
    if is_finished(trial_dir):
        return "done", "", None
    info = read_status(trial_dir)
    ref = str(info["pid"]) if info.get("pid") else None
    owner = trial_owner(trial_dir)
    if owner is not None:
        return "running", "", str(owner.get("pid") or ref or "")
    state = info.get("state")
    if state == "running":
        same_host = info.get("host") == socket.gethostname()
        locked_before = (trial_dir / OWNER_FILE).exists()  # its owner held the lock; nobody holds it now
        if locked_before or (same_host and not pid_alive(info.get("pid"))):
            return "interrupted", "process ended without a final state", ref
        return "running", "", ref
    if state in ("failed", "interrupted"):
        return state, str(info.get("error", "")), ref
    if state == "done":  # the runner finished but the engine wrote no final.json: treat as not finished
        return "interrupted", "", ref
    return "pending", "", ref


def trial_status(trial: Trial, trial_dir: Path) -> TrialStatus:
    """Derive a trial's state from its folder alone (:func:`state_from_folder`), with its last epoch's metrics
    and its planned epochs (the plan its config.json records, else the torch-free data check)."""
    rows = read_metrics(trial_dir)
    last = rows[-1] if rows else {}
    state, detail, ref = state_from_folder(trial_dir)
    return TrialStatus(trial.id, trial.name, state, last.get("epoch"), planned_epochs(trial, trial_dir),
                       {k: v for k, v in last.items() if isinstance(v, (int, float)) and k != "epoch"}, detail, ref)
