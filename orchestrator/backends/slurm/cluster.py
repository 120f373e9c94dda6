"""Talking to the SLURM controller with its own commands (sinfo, squeue, sacct, scancel).

submitit reads job states through a shared, cached ``sacct`` watcher meant for a process that waits on its
jobs; ``convit-sweep status`` is a fresh process asking once, so it queries directly: ``squeue`` for the live
state (no lag), ``sacct --duplicates`` for finished states and the requeue history (each requeue leaves a
REQUEUED record). Every call has a timeout: a controller that does not answer must not hang the CLI.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from orchestrator.errors import BackendUnavailable, OrchestratorError

COMMANDS = ("sbatch", "srun", "squeue", "sacct", "scancel", "sinfo")
TIMEOUT_S = 15.0
START_HINT = ("start the local test cluster with `sudo bash slurm/start.sh` (docs/slurm.md), or run on a "
              "machine of your SLURM cluster")
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
               "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED", "RESV_DEL_HOLD"}


def run(cmd: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """A SLURM command; BackendUnavailable when it is missing or the controller does not answer in time."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise BackendUnavailable(f"the slurm backend needs `{cmd[0]}`, which is not on PATH; {START_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackendUnavailable(f"the SLURM controller did not answer `{' '.join(cmd)}` within {timeout:.0f} s; "
                                 f"is slurmctld running? {START_HINT}") from exc


def require_cluster(timeout: float = TIMEOUT_S) -> None:
    """SLURM's commands are installed and the controller answers; one error naming what is missing."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise BackendUnavailable(f"the slurm backend needs the SLURM commands {', '.join(missing)}, which are not "
                                 f"on PATH (no SLURM client here); {START_HINT}")
    out = run(["sinfo", "-h", "-o", "%P"], timeout)
    if out.returncode != 0:
        reason = (out.stderr or out.stdout).strip().splitlines()
        raise BackendUnavailable(f"the SLURM controller does not answer (`sinfo`: "
                                 f"{reason[-1] if reason else f'exit {out.returncode}'}); {START_HINT}")


def parse_minutes(text: str) -> float | None:
    """sinfo's time limit (``[D-]HH:MM:SS``, ``MM:SS``, ``UNLIMITED``) in minutes; None = no limit."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "N/A"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    hours, minutes, seconds = parts[-3:]
    return (float(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def partitions() -> dict[str, float | None]:
    """Partition → MaxTime in minutes; the default partition also appears under ''."""
    out = run(["sinfo", "-h", "-o", "%P|%l"])
    found: dict[str, float | None] = {}
    for line in out.stdout.splitlines():
        name, _, limit = line.partition("|")
        minutes = parse_minutes(limit)
        if name.endswith("*"):
            name = name[:-1]
            found[""] = minutes
        found[name] = minutes
    return found


def check_time_limit(partition: str | None, timeout_min: int) -> None:
    """A job asking for more than its partition's MaxTime pends forever: refuse it before submitting."""
    known = partitions()
    names = [p for p in (partition or "").split(",") if p] or [""]
    for name in names:
        if name not in known:
            listing = ", ".join(sorted(k for k in known if k)) or "none"
            raise OrchestratorError(f"slurm.partition: no partition '{name}' on this cluster (partitions: {listing})")
        limit = known[name]
        if limit is not None and timeout_min > limit:
            raise OrchestratorError(f"slurm.timeout_min is {timeout_min} but partition '{name or 'default'}' allows "
                                    f"{limit:g} min: the job would stay pending forever; lower timeout_min "
                                    "(long trials are requeued at the limit and resume)")


def check_memory(mem_gb: float | None) -> None:
    """More memory per node than any node has: sbatch refuses ("Requested node configuration is not available")."""
    if mem_gb is None:
        return
    out = run(["sinfo", "-h", "-o", "%m"])
    sizes = [float(m.rstrip("+")) for m in out.stdout.split() if m.rstrip("+").replace(".", "", 1).isdigit()]
    if sizes and mem_gb * 1024 > max(sizes):
        raise OrchestratorError(f"slurm.mem_gb: {mem_gb:g} GB, but the largest node has {max(sizes) / 1024:.1f} GB")


def check_account(account: str | None) -> None:
    """An account sbatch would refuse ("Invalid account"), when the cluster's accounting can tell."""
    if not account or shutil.which("sacctmgr") is None:
        return
    out = subprocess.run(["sacctmgr", "-n", "-P", "show", "account", "format=account"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        return  # no accounting database: sbatch will judge
    known = {line.strip() for line in out.stdout.splitlines() if line.strip()}
    for name in account.split(","):
        if name not in known:
            raise OrchestratorError(f"slurm.account: no account '{name}' on this cluster (accounts: "
                                    f"{', '.join(sorted(known)) or 'none'})")


@dataclass
class TaskState:
    """One array task as SLURM sees it."""

    job_id: str  # ARRAY_TASK form: 123_4
    state: str = "UNKNOWN"
    reason: str = ""
    exit_code: str = ""
    requeues: int = 0
    history: list[str] = field(default_factory=list)


_PENDING_RANGE = re.compile(r"^(\d+)_\[(.+?)(%\d+)?\]$")


def _expand(job_id: str) -> list[str]:
    """``123_[0-3,5%2]`` → 123_0 … 123_3, 123_5 (how squeue/sacct show pending array tasks)."""
    match = _PENDING_RANGE.match(job_id)
    if not match:
        return [job_id]
    base, ranges = match.group(1), match.group(2)
    ids = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        ids += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return ids


def task_states(array_ids: list[str]) -> dict[str, TaskState]:
    """Every task of these arrays: sacct's history (requeues, final state), then squeue's live state."""
    if not array_ids:
        return {}
    states: dict[str, TaskState] = {}
    joined = ",".join(array_ids)
    acct = run(["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State,ExitCode", "-j", joined])
    if acct.returncode == 0:
        for line in acct.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 3:
                continue
            for job_id in _expand(parts[0]):
                task = states.setdefault(job_id, TaskState(job_id))
                state = parts[1].split()[0] if parts[1] else "UNKNOWN"  # "CANCELLED by 0" → CANCELLED
                task.history.append(state)
                task.state, task.exit_code = state, parts[2]
        for task in states.values():
            task.requeues = task.history.count("REQUEUED") + task.history.count("PREEMPTED")
    for line in _squeue(array_ids, "%i|%T|%r"):
        parts = line.split("|")
        if len(parts) < 3:
            continue
        for job_id in _expand(parts[0]):
            task = states.setdefault(job_id, TaskState(job_id))
            task.state, task.reason = parts[1], parts[2] if parts[2] != "None" else ""
    return states


def _squeue(array_ids: list[str], fmt: str) -> list[str]:
    """squeue's lines for these arrays. ``-j`` fails outright when every id has left the controller's memory
    (MinJobAge), so a failure there means "none queued" once the controller has answered ``--me``."""
    out = run(["squeue", "-h", "-r", "-o", fmt, "-j", ",".join(array_ids)])
    if out.returncode == 0:
        return out.stdout.splitlines()
    mine = run(["squeue", "-h", "-r", "-o", fmt, "--me"])
    if mine.returncode != 0:
        raise BackendUnavailable(f"`squeue` failed: {(mine.stderr or out.stderr).strip()}; {START_HINT}")
    wanted = set(array_ids)
    return [line for line in mine.stdout.splitlines() if line.split("|")[0].split("_")[0] in wanted]


def live_arrays(array_ids: list[str]) -> set[str]:
    """The arrays among these that still have a task queued or running."""
    if not array_ids:
        return set()
    live = set()
    for line in _squeue(array_ids, "%i|%T"):
        job_id, _, state = line.partition("|")
        if state in LIVE_STATES:
            live.add(job_id.split("_")[0])
    return live


def scancel(job_ids: list[str], signal_name: str | None = None) -> None:
    if not job_ids:
        return
    cmd = ["scancel", *([f"--signal={signal_name}"] if signal_name else []), *job_ids]
    out = run(cmd)
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise OrchestratorError(f"`{' '.join(cmd)}` failed: {out.stderr.strip()}")
