"""``convit-sweep list``: the sweeps of a working folder, read from their folders alone (sweep.json, trials.json,
each trial folder), in milliseconds: no backend, no MLflow, no torch.

A trial's state here is :func:`orchestrator.status.state_from_folder`'s, the derivation ``status`` uses too (same
vocabulary, from the trial folder alone), without the epoch plan and metrics ``status`` adds. ``status`` also
adds what only the backend knows (a queued SLURM task, a Ray trial stopped early by ASHA); ``list`` knows the
latter from the marker the Ray driver writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from convit.records import CHECKPOINTS_DIR, FINAL_FILE, METRICS_FILE, is_finished, read_json
from orchestrator.backends.layout import RAY_STOPPED_FILE, ray_identity_file, ray_stops_dir
from orchestrator.status import state_from_folder
from orchestrator.workdir import STATUS_FILE, SWEEP_FILE, TRIALS_FILE, list_sweeps, sweep_dir

#: The trial states, in the order tables show them (orchestrator.status.TrialStateName).
STATES = ("done", "running", "failed", "interrupted", "pending")


def ray_early_stops(folder: Path) -> set[str]:
    """Trial ids the Ray driver recorded as stopped early by its scheduler (ray/stops/<tune id>.json, mapped
    to our trial ids by ray/identity/<tune id>.json; backends/ray/trainable.py stop_markers)."""
    stops = ray_stops_dir(folder)
    if not stops.is_dir():
        return set()
    out = set()
    for path in stops.glob("*.json"):
        home = read_json(ray_identity_file(folder, path.stem))
        if isinstance(home, dict) and home.get("trial_id"):
            out.add(str(home["trial_id"]))
    return out


def folder_state(trial_dir: Path, stopped_early: bool = False) -> tuple[str, str]:
    """(state, detail) of a trial from its folder alone: status.state_from_folder, plus the Ray backend's
    "stopped early by its scheduler = done"."""
    if (stopped_early or (trial_dir / RAY_STOPPED_FILE).is_file()) and not is_finished(trial_dir):
        return "done", "stopped early by the scheduler"
    state, detail, _ = state_from_folder(trial_dir)
    return state, detail


@dataclass
class SweepRow:
    name: str
    backend: str
    trials: int
    counts: dict[str, int] = field(default_factory=dict)
    last_activity: float | None = None  # seconds since the epoch: the newest file of the sweep or its trials
    problem: str = ""  # a sweep folder that cannot be read

    def to_dict(self) -> dict[str, Any]:
        when = self.last_activity
        return {"name": self.name, "backend": self.backend, "trials": self.trials,
                **{state: self.counts.get(state, 0) for state in STATES},
                "last_activity": None if when is None else datetime.fromtimestamp(when).astimezone().isoformat(
                    timespec="seconds"),
                "last_activity_unix": when, **({"problem": self.problem} if self.problem else {})}


def _newest(*paths: Path) -> float | None:
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=None)


def sweep_row(workdir: Path, name: str) -> SweepRow:
    """One sweep's row: backend, trial state counts, last activity."""
    folder = sweep_dir(workdir, name)
    record = read_json(folder / SWEEP_FILE, {}) or {}
    row = SweepRow(name, str(record.get("backend", "?")), 0, dict.fromkeys(STATES, 0))
    trials = read_json(folder / TRIALS_FILE, []) or []
    if not isinstance(trials, list):
        trials, row.problem = [], f"{TRIALS_FILE} is not a list"
    newest = [_newest(folder / SWEEP_FILE, folder / TRIALS_FILE)]
    early = ray_early_stops(folder) if row.backend == "ray" else set()
    for entry in trials:
        trial_id = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        if not trial_id or "/" in trial_id or trial_id in (".", ".."):
            continue
        trial_dir = folder / "trials" / trial_id
        state, _ = folder_state(trial_dir, trial_id in early)
        row.counts[state] += 1
        row.trials += 1
        newest.append(_newest(trial_dir / STATUS_FILE, trial_dir / METRICS_FILE, trial_dir / FINAL_FILE,
                              trial_dir / CHECKPOINTS_DIR))
    row.last_activity = max((t for t in newest if t is not None), default=None)
    return row


def sweep_rows(workdir: Path) -> list[SweepRow]:
    """Every sweep of the working folder, most recently active first."""
    rows = [sweep_row(workdir, name) for name in list_sweeps(workdir)]
    return sorted(rows, key=lambda r: (-(r.last_activity or 0), r.name))


def ago(when: float | None, now: float | None = None) -> str:
    """'2026-12-05 20:11 (3 min ago)'."""
    if when is None:
        return ""
    seconds = max(0.0, (now if now is not None else datetime.now().timestamp()) - when)
    if seconds < 90:
        rel = f"{seconds:.0f} s ago"
    elif seconds < 90 * 60:
        rel = f"{seconds / 60:.0f} min ago"
    elif seconds < 36 * 3600:
        rel = f"{seconds / 3600:.0f} h ago"
    else:
        rel = f"{seconds / 86400:.0f} days ago"
    return f"{datetime.fromtimestamp(when):%Y-%m-%d %H:%M} ({rel})"


__all__ = ["STATES", "SweepRow", "ago", "folder_state", "sweep_row", "sweep_rows"]
