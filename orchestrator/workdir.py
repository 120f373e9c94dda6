"""The working folder: where a sweep's trials, their state and the embedded MLflow store live.

Layout (ARCHITECTURE.md §3)::

    runs/mlflow.db                          embedded MLflow store (default tracking URI)
    runs/mlartifacts/                       its artifacts
    runs/sweeps/<name>/sweep.json           the SweepContext (tracking URI, parent run, backend, ...)
    runs/sweeps/<name>/spec.yaml            the sweep file as submitted (+ overrides)
    runs/sweeps/<name>/trials.json          every trial of the sweep (id, name, axes, config)
    runs/sweeps/<name>/trials/<id>/         the engine's out_dir, plus trial.json and status.json

Every state file is written atomically (temp file + rename), so a reader never sees half a file and a killed
writer never leaves one. Everything a backend needs to run a trial in another process, on another machine of
a shared filesystem, is in these files: nothing is passed through memory.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.errors import UnknownSweep

WORKDIR_ENV = "CONVIT_WORKDIR"
TrialStateName = Literal["pending", "running", "done", "failed", "interrupted"]


def resolve_workdir(arg: str | Path | None = None) -> Path:
    """--workdir, else $CONVIT_WORKDIR, else ./runs; always absolute (trial processes may change directory)."""
    chosen = arg or os.environ.get(WORKDIR_ENV) or "runs"
    return Path(chosen).expanduser().resolve()


def write_json(path: Path, data: Any) -> None:
    """Atomic: write a temp file next to the target, fsync, rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def git_commit(repo: Path | None = None) -> str:
    """The commit the code runs from ('unknown' outside a repository or before the first commit)."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


@dataclass
class SweepContext:
    """What a trial process needs to know about its sweep; saved as sweep.json in the sweep folder."""

    name: str
    workdir: Path
    tracking_uri: str
    experiment: str
    backend: str = "local"
    parent_run_id: str | None = None
    git_commit: str = "unknown"
    axes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the backend's section of the sweep file
    spec: Any = field(default=None, repr=False, compare=False)  # the SweepSpec, in the submitting process only

    @property
    def sweep_id(self) -> str:
        """The sweep's identity in MLflow and on disk: its name (unique within a working folder)."""
        return self.name

    @property
    def sweep_dir(self) -> Path:
        return sweep_dir(self.workdir, self.name)

    def trial_dir(self, trial_id: str) -> Path:
        return self.sweep_dir / "trials" / trial_id

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "spec"}
        data["workdir"] = str(self.workdir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepContext":
        data = dict(data)
        data["workdir"] = Path(data["workdir"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self) -> None:
        write_json(self.sweep_dir / "sweep.json", self.to_dict())

    @classmethod
    def load(cls, workdir: Path, name: str) -> "SweepContext":
        data = read_json(sweep_dir(workdir, name) / "sweep.json")
        if data is None:
            raise UnknownSweep(_unknown_sweep_message(workdir, name))
        return cls.from_dict(data)

    @classmethod
    def for_trial_dir(cls, trial_dir: Path) -> "SweepContext":
        """A trial folder lies at <sweep_dir>/trials/<id>: its context is two levels up."""
        data = read_json(trial_dir.parent.parent / "sweep.json")
        if data is None:
            raise UnknownSweep(f"{trial_dir} is not inside a sweep folder (no sweep.json two levels up)")
        return cls.from_dict(data)


def sweep_dir(workdir: Path, name: str) -> Path:
    return workdir / "sweeps" / name


def list_sweeps(workdir: Path) -> list[str]:
    root = workdir / "sweeps"
    return sorted(p.name for p in root.iterdir() if (p / "sweep.json").is_file()) if root.is_dir() else []


def _unknown_sweep_message(workdir: Path, name: str) -> str:
    known = list_sweeps(workdir)
    listing = f"known sweeps: {', '.join(known)}" if known else "no sweep has been submitted there yet"
    return f"no sweep named '{name}' in {workdir} ({listing}); pass --workdir if it was submitted elsewhere"


def write_trials(ctx: SweepContext, trials: list[Any]) -> None:
    write_json(ctx.sweep_dir / "trials.json", [t.to_dict() for t in trials])
    for trial in trials:
        path = ctx.trial_dir(trial.id) / "trial.json"
        if not path.exists():
            write_json(path, trial.to_dict())


def read_trials(ctx: SweepContext) -> list[Any]:
    from orchestrator.expand import Trial

    return [Trial.from_dict(d) for d in read_json(ctx.sweep_dir / "trials.json", [])]


# ------------------------------------------------------------------------------------------------ trial state
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
    write_json(trial_dir / "status.json", {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                                           "updated": time.time(), **extra})


def read_metrics(trial_dir: Path) -> list[dict[str, Any]]:
    """Complete lines of metrics.jsonl (a line being written is ignored, not an error)."""
    path = trial_dir / "metrics.jsonl"
    try:
        text = path.read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def trial_status(trial: Any, trial_dir: Path) -> TrialStatus:
    """Derive a trial's state from its folder alone: final.json = done, else what the runner last wrote."""
    rows = read_metrics(trial_dir)
    last = rows[-1] if rows else {}
    epochs = _total_epochs(trial)
    status = TrialStatus(trial.id, trial.name, "pending", last.get("epoch"), epochs,
                         {k: v for k, v in last.items() if isinstance(v, (int, float)) and k != "epoch"})
    if (trial_dir / "final.json").is_file():
        status.state = "done"
        return status
    info = read_json(trial_dir / "status.json", {}) or {}
    state = info.get("state")
    status.ref = str(info["pid"]) if info.get("pid") else None
    if state == "running":
        same_host = info.get("host") == socket.gethostname()
        if same_host and not pid_alive(info.get("pid")):
            status.state, status.detail = "interrupted", "process ended without a final state"
        else:
            status.state = "running"
    elif state in ("failed", "interrupted"):
        status.state = state
        status.detail = str(info.get("error", ""))
    elif state == "done":  # the runner finished but the engine wrote no final.json: treat as not finished
        status.state = "interrupted"
    return status


def _total_epochs(trial: Any) -> int | None:
    from orchestrator.preflight import planned_epochs

    return planned_epochs(trial)
