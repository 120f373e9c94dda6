"""The engine's out_dir contract: the names of what a trial writes there, and how to write and read them.

The one place that knows them: the engine writes through it, whatever inspects a trial folder reads through it.
Torch-free, so a process that only inspects trial folders never imports torch.

    out_dir/config.json      {config, config_hash, resolved, plan, subset, steps_per_epoch}, written at (re)start
    out_dir/metrics.jsonl    one JSON object per epoch (with "epoch"), appended after each epoch
    out_dir/checkpoints/     the two latest checkpoints, ckpt-EEEEE-SSSSSS.pt (named by the position a resumed
                             run starts from), each with a ``.json`` record: its SHA-256, size, position and
                             config hash (written by convit.engine.checkpoint, checked before it is loaded)
    out_dir/final.json       {metrics, subset, config_hash}, written last: the trial is finished
    out_dir/progress.json    where training is inside the current epoch ({epoch, epochs, step, steps, loss,
                             updated}), rewritten at most once a second: live views move within an epoch
    out_dir/owner.lock       an OS lock (flock) held by the one process that trains the trial now, with its pid,
                             host and start time: a second runner is refused, and the kernel frees the lock
                             when the owner dies however it dies

metrics.jsonl is the source of truth for per-epoch metrics.  Each checkpoint carries the metrics of the
epochs it covers, so on resume the file is rewritten from the checkpoint: lines for epochs that will be
re-run are dropped and nothing is duplicated.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

__all__ = [
    "flock_exclusive",
    "pid_alive",
    "DiskFull",
    "process_start",
    "file_sha256",
    "write_checkpoint_record",
    "remove_dead_temp_files",
    "remove_checkpoint",
    "list_checkpoints",
    "checkpoint_record",
    "checkpoint_position",
    "checkpoint_name",
    "CheckpointsUnusable",
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "ConfigMismatch",
    "OWNER_FILE",
    "TrialBusy",
    "FINAL_FILE",
    "METRICS_FILE",
    "append_metrics",
    "atomic_write_bytes",
    "check_same_trial",
    "is_finished",
    "own_trial",
    "read_final",
    "read_json",
    "read_metrics",
    "rewrite_metrics",
    "trial_owner",
    "write_json",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
CHECKPOINTS_DIR = "checkpoints"
OWNER_FILE = "owner.lock"
PROGRESS_FILE = "progress.json"


class ConfigMismatch(ValueError):
    """out_dir holds a different trial (its config hash differs from the one asked for)."""


class CheckpointsUnusable(ValueError):
    """The trial folder holds checkpoints but none can be resumed from (damaged, foreign, or not a folder):
    restarting would throw recorded progress away, which only an explicit request may do."""


class TrialBusy(RuntimeError):
    """Another live process owns the trial (holds ``owner.lock``): running it here too would train it twice."""

    def __init__(self, out_dir: Path, owner: dict[str, Any]):
        self.owner = owner
        since = owner.get("started")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) \
            else ""
        super().__init__(f"{out_dir} is being trained by pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
                         f"{when}; wait for it to end or stop it first (a trial has one owner at a time)")


# ------------------------------------------------------------------------------------------- ownership
_HELD: dict[str, list[int]] = {}  # resolved out_dir -> [lock fd, nesting depth] held by this process


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, /proc/PID/stat field 22): with the pid, an identity that
    a later process reusing the pid does not share. None where /proc is missing or the process is gone."""
    try:
        return int(Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _owner_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": socket.gethostname(),
            "started": time.time(), "command": " ".join(sys.argv)[:500]}


def drop_inherited_ownership() -> None:
    """In a child forked from an owner (a DataLoader worker): close this copy of the ownership lock's descriptor.
    The lock belongs to the open file, which every forked copy keeps open: a worker outliving a SIGKILLed owner
    would otherwise go on holding the trial for it, and a resubmission would wrongly find the trial running.
    Closing a copy does not release the parent's lock (flock(2): only the last descriptor does)."""
    for fd, _ in list(_HELD.values()):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


@contextlib.contextmanager
def own_trial(out_dir: Path, wait_s: float = 2.0) -> Iterator[None]:
    """Hold the trial's ownership lock while the block runs; raise :class:`TrialBusy` when another live process
    holds it (after ``wait_s``, so that a momentary probe by :func:`trial_owner` is not mistaken for an owner).

    Re-entrant within a process (the trial runner holds it, then the engine asks again). The lock is an flock on
    ``out_dir/owner.lock``: the kernel releases it when the owner exits or is killed, so a crashed owner never
    blocks a later run, and nothing has to be cleaned up."""
    out_dir = Path(out_dir)
    key = str(out_dir.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    if not flock_exclusive(fd, wait_s):
        owner = _read_owner(out_dir)
        os.close(fd)
        raise TrialBusy(out_dir, owner)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner_info()).encode(), 0)
        _HELD[key] = [fd, 1]
        yield
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock


def flock_exclusive(fd: int, wait_s: float) -> bool:
    """Take an exclusive flock on ``fd``, retrying for up to ``wait_s`` seconds; False if another holds it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _read_owner(out_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(out_dir) / OWNER_FILE).read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def trial_owner(out_dir: Path) -> dict[str, Any] | None:
    """The live process that owns the trial now ({pid, host, started, command}), or None when nobody does."""
    out_dir = Path(out_dir)
    key = str(out_dir.resolve())
    if key in _HELD:
        return _read_owner(out_dir)
    try:
        fd = os.open(out_dir / OWNER_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_owner(out_dir) or {"pid": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file_object)`` into a temp file next to ``path``, fsync, then rename over ``path``.

    The temp file's name is unique (concurrent writers of one path cannot clobber each other's temp file);
    a crash leaves the old file or the new one, never half a file under ``path``."""
    path = Path(path)
    # Not mkstemp: its files are mode 0600; records get the usual mode (0666 less the umask), like open().
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        if _disk_full(exc, path.parent):  # torch.save reports it as "[enforce fail ...] unexpected pos"
            raise DiskFull(path) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


class DiskFull(OSError):
    """No space left on the device of a record being written (the previous version of the file is intact)."""

    def __init__(self, path: Path):
        super().__init__(errno.ENOSPC, f"no space left on device under {Path(path).parent} while writing "
                                       f"{Path(path).name}; free space there, then run again to resume")


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


def write_json(path: Path, obj: Any) -> None:
    """Atomic (temp file in the same folder, fsync, rename): a reader sees the old file or the new one.
    Creates the parent folder; values JSON cannot encode (a Path, a datetime) are written as str()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def append_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    path = Path(out_dir) / METRICS_FILE
    try:
        with open(path, "a") as f:
            f.write(json.dumps(metrics, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path) from exc
        raise


def rewrite_metrics(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_bytes(Path(out_dir) / METRICS_FILE, lambda f: f.write(text.encode()))


# ------------------------------------------------------------------------------------------- reading
def write_progress(out_dir: Path, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
    """The position inside the running epoch (best effort: a live view's hint, never a record to resume from)."""
    with contextlib.suppress(OSError):
        write_json(Path(out_dir) / PROGRESS_FILE, {"epoch": epoch, "epochs": epochs, "step": step, "steps": steps,
                                                   "loss": loss if math.isfinite(loss) else None,
                                                   "updated": time.time()})


def read_progress(out_dir: Path) -> dict[str, Any]:
    """progress.json, or {} (not started, or written by an older engine)."""
    try:
        data = json.loads((Path(out_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_json(path: Path, default: Any = None) -> Any:
    """The parsed file, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    """Complete lines of metrics.jsonl, oldest first (a line being written is skipped, not an error)."""
    try:
        text = (Path(out_dir) / METRICS_FILE).read_text()
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


def is_finished(out_dir: Path) -> bool:
    """The engine wrote final.json: the trial ran to its end."""
    return (Path(out_dir) / FINAL_FILE).is_file()


def read_final(out_dir: Path) -> dict[str, Any] | None:
    """final.json ({metrics, subset, config_hash}), or None while the trial is not finished. A damaged one
    (truncated, ``{}``) counts as missing: the run resumes from its last checkpoint and writes it again."""
    final = read_json(Path(out_dir) / FINAL_FILE)
    return final if isinstance(final, dict) and isinstance(final.get("metrics"), dict) else None


# ----------------------------------------------------------------------------------------- checkpoints
_CHECKPOINT = re.compile(r"^ckpt-(\d{5})-(\d{6})\.pt$")
_TEMP = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$|^\..+\.tmp(\d+)$")  # atomic_write_bytes' temp files


def checkpoint_name(epoch: int, step: int) -> str:
    """ckpt-EEEEE-SSSSSS.pt: the epoch a resumed run starts in and the optimizer steps already done in it."""
    return f"ckpt-{epoch:05d}-{step:06d}.pt"


def checkpoint_position(path: Path) -> tuple[int, int] | None:
    """(epoch, step) from a checkpoint's name; None for a name that is not one."""
    found = _CHECKPOINT.match(Path(path).name)
    return (int(found.group(1)), int(found.group(2))) if found else None


def checkpoint_record_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".json")


def checkpoint_record(path: Path) -> dict[str, Any] | None:
    """The record written with a checkpoint ({sha256, bytes, epoch, step, config_hash}), None if missing."""
    record = read_json(checkpoint_record_path(path))
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint_record(path: Path, position: tuple[int, int], config_hash: str) -> None:
    """Record a checkpoint just written: its digest is read back from the disk, so what is checked on resume is
    what was stored."""
    write_json(checkpoint_record_path(path), {"sha256": file_sha256(path), "bytes": Path(path).stat().st_size,
                                              "epoch": position[0], "step": position[1],
                                              "config_hash": config_hash})


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first: by the position their record holds (a file renamed or copied in under a
    later name is not taken for the newest), those without a record (older versions, copies) before them."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    def order(path: Path) -> tuple[bool, tuple[int, int], str]:
        record = checkpoint_record(path)
        if record is not None and isinstance(record.get("epoch"), int) and isinstance(record.get("step"), int):
            return True, (record["epoch"], record["step"]), path.name
        return False, checkpoint_position(path) or (-1, -1), path.name
    return sorted((p for p in ckpt_dir.iterdir() if _CHECKPOINT.match(p.name)), key=order)


def remove_checkpoint(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
    checkpoint_record_path(path).unlink(missing_ok=True)


def remove_dead_temp_files(folder: Path) -> list[Path]:
    """Temporary files left by writers that were killed mid-write (their pid is gone): without this, every kill
    during a checkpoint write leaves one behind and the folder grows without bound."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for path in Path(folder).iterdir():
        found = _TEMP.match(path.name)
        if found and not pid_alive(int(found.group(1) or found.group(2))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def pid_alive(pid: int | None) -> bool:
    """The process exists and is not a zombie (exited, not yet reaped by its parent)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def check_same_trial(out_dir: Path, config_hash: str) -> None:
    """Refuse to resume a different trial into this out_dir."""
    out_dir = Path(out_dir)
    previous = read_json(out_dir / CONFIG_FILE)
    if isinstance(previous, dict) and previous.get("config_hash") != config_hash:
        raise ConfigMismatch(
            f"{out_dir} holds a trial with config hash {previous.get('config_hash')}, but this config hashes to "
            f"{config_hash}: use a new output directory, or the original config "
            f"({out_dir / CONFIG_FILE}) to resume"
        )
