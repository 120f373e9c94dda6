"""The engine's out_dir contract: the names of what a trial writes there, and how to write and read them.

The one place that knows them: the engine writes through it, whatever inspects a trial folder reads through it.
Torch-free, so a process that only inspects trial folders never imports torch.

    out_dir/config.json      {config, config_hash, resolved, plan, subset, steps_per_epoch}, written at (re)start
    out_dir/metrics.jsonl    one JSON object per epoch (with "epoch"), appended after each epoch
    out_dir/checkpoints/     the two latest checkpoints (convit.engine.checkpoint)
    out_dir/final.json       {metrics, subset, config_hash}, written last: the trial is finished

metrics.jsonl is the source of truth for per-epoch metrics.  Each checkpoint carries the metrics of the
epochs it covers, so on resume the file is rewritten from the checkpoint: lines for epochs that will be
re-run are dropped and nothing is duplicated.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "ConfigMismatch",
    "FINAL_FILE",
    "METRICS_FILE",
    "append_metrics",
    "atomic_write_bytes",
    "check_same_trial",
    "is_finished",
    "read_final",
    "read_json",
    "read_metrics",
    "rewrite_metrics",
    "write_json",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
CHECKPOINTS_DIR = "checkpoints"


class ConfigMismatch(ValueError):
    """out_dir holds a different trial (its config hash differs from the one asked for)."""


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
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Atomic (temp file in the same folder, fsync, rename): a reader sees the old file or the new one.
    Creates the parent folder; values JSON cannot encode (a Path, a datetime) are written as str()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def append_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    with open(Path(out_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(metrics, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_metrics(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_bytes(Path(out_dir) / METRICS_FILE, lambda f: f.write(text.encode()))


# ------------------------------------------------------------------------------------------- reading
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
    """final.json ({metrics, subset, config_hash}), or None while the trial is not finished."""
    final = read_json(Path(out_dir) / FINAL_FILE)
    return final if isinstance(final, dict) else None


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
