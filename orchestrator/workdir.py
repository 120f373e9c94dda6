"""The working folder: where a sweep's record, its trials and the embedded MLflow store live.

Layout (docs/ARCHITECTURE.md)::

    runs/mlflow.db                          embedded MLflow store (default tracking URI)
    runs/mlartifacts/                       its artifacts
    runs/sweeps/<name>/sweep.json           the SweepContext (tracking URI, parent run, backend and its options)
    runs/sweeps/<name>/spec.yaml            the sweep file as submitted (+ overrides)
    runs/sweeps/<name>/trials.json          every trial of the sweep (id, name, axes, config)
    runs/sweeps/<name>/trials/<id>/         the engine's out_dir (convit.records), plus trial.json and status.json

Every state file is written atomically (convit.records.write_json), so a reader never sees half a file and a
killed writer never leaves one. Everything a backend needs to run a trial in another process, on another machine
of a shared filesystem, is in these files: nothing is passed through memory. This module is the one writer of
``trial.json``.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convit.records import atomic_write_bytes, read_json, write_json
from orchestrator.errors import OrchestratorError, UnknownSweep
from orchestrator.sections import SECTION_TYPES, LocalSection, Section
from orchestrator.trial import Trial

WORKDIR_ENV = "CONVIT_WORKDIR"
SWEEP_FILE = "sweep.json"
SPEC_FILE = "spec.yaml"
TRIALS_FILE = "trials.json"
TRIAL_FILE = "trial.json"
STATUS_FILE = "status.json"
TRIAL_LOG = "trial.log"  # a local trial process's stdout and stderr
RUN_ID_FILE = "mlflow_run.json"  # the trial's MLflow child run: {run_id, tracking_uri, start_hosts}


def resolve_workdir(arg: str | Path | None = None) -> Path:
    """--workdir, else $CONVIT_WORKDIR, else ./runs; always absolute (trial processes may change directory)."""
    chosen = arg or os.environ.get(WORKDIR_ENV) or "runs"
    return Path(chosen).expanduser().resolve()


def write_text(path: Path, text: str) -> None:
    """Atomic, like write_json (convit.records.atomic_write_bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


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
    """What a trial process needs to know about its sweep; saved as sweep.json in the sweep folder.

    ``options`` is the backend's typed section (LocalSection, RaySection, SlurmSection), validated once when the
    sweep file was read and read back typed from sweep.json (``Section.from_record``: a SLURM profile is not
    read again, so a later edit of it does not change a submitted sweep)."""

    name: str
    workdir: Path
    tracking_uri: str
    experiment: str
    backend: str = "local"
    parent_run_id: str | None = None
    git_commit: str = "unknown"
    axes: list[str] = field(default_factory=list)
    options: Section = field(default_factory=LocalSection)

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
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["workdir"] = str(self.workdir)
        data["options"] = self.options.model_dump(mode="json")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepContext":
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["workdir"] = Path(data["workdir"])
        backend = data.get("backend", "local")
        if backend not in SECTION_TYPES:
            raise OrchestratorError(f"sweep '{data.get('name')}' was recorded for a backend this installation does "
                                    f"not know ('{backend}'; known: {', '.join(SECTION_TYPES)})")
        data["options"] = SECTION_TYPES[backend].from_record(data.get("options") or {})
        return cls(**data)

    def save(self) -> None:
        write_json(self.sweep_dir / SWEEP_FILE, self.to_dict())

    @classmethod
    def load(cls, workdir: Path, name: str) -> "SweepContext":
        data = read_json(sweep_dir(workdir, name) / SWEEP_FILE)
        if data is None:
            raise UnknownSweep(_unknown_sweep_message(workdir, name))
        return cls.from_dict(data)

    @classmethod
    def for_trial_dir(cls, trial_dir: Path) -> "SweepContext":
        """A trial folder lies at <sweep_dir>/trials/<id>: its context is two levels up."""
        data = read_json(trial_dir.parent.parent / SWEEP_FILE)
        if data is None:
            raise UnknownSweep(f"{trial_dir} is not inside a sweep folder (no {SWEEP_FILE} two levels up)")
        return cls.from_dict(data)


def sweep_dir(workdir: Path, name: str) -> Path:
    return workdir / "sweeps" / name


def recorded_tracking_uri(workdir: Path, name: str) -> str | None:
    """The tracking URI a sweep of this name was first submitted with, if any."""
    return (read_json(sweep_dir(workdir, name) / SWEEP_FILE, {}) or {}).get("tracking_uri")


def list_sweeps(workdir: Path) -> list[str]:
    root = workdir / "sweeps"
    return sorted(p.name for p in root.iterdir() if (p / SWEEP_FILE).is_file()) if root.is_dir() else []


def _unknown_sweep_message(workdir: Path, name: str) -> str:
    known = list_sweeps(workdir)
    listing = f"known sweeps: {', '.join(known)}" if known else "no sweep has been submitted there yet"
    return f"no sweep named '{name}' in {workdir} ({listing}); pass --workdir if it was submitted elsewhere"


def write_trial_record(trial_dir: Path, trial: Trial) -> None:
    """trial.json in the trial's folder (once: what a trial process reads to know what to run)."""
    path = trial_dir / TRIAL_FILE
    if not path.exists():
        write_json(path, trial.to_dict())


def read_trial_record(trial_dir: Path) -> Trial | None:
    data = read_json(trial_dir / TRIAL_FILE)
    return Trial.from_dict(data) if data is not None else None


def write_trials(ctx: SweepContext, trials: list[Trial]) -> None:
    write_json(ctx.sweep_dir / TRIALS_FILE, [t.to_dict() for t in trials])
    for trial in trials:
        write_trial_record(ctx.trial_dir(trial.id), trial)


def read_trials(ctx: SweepContext) -> list[Trial]:
    return [Trial.from_dict(d) for d in read_json(ctx.sweep_dir / TRIALS_FILE, []) or []]


def sweep_context(spec: Any, workdir: Path, backend: str, tracking_uri: str) -> SweepContext:
    """The record of a sweep about to be submitted (or previewed by --dry-run) from its validated
    ``orchestrator.spec.SweepSpec``; ``options`` is the backend's typed section of the file. Light: no MLflow."""
    return SweepContext(name=spec.name, workdir=workdir, tracking_uri=tracking_uri,
                        experiment=spec.tracking.experiment or spec.name, backend=backend,
                        git_commit=git_commit(), axes=spec.axis_keys(), options=getattr(spec, backend))
