"""Checkpoint files: atomic writes with a digest, keep-the-two-latest, and a resume that never trusts a damaged,
foreign or misnamed file and never silently throws recorded progress away.

Names and records are the trial folder's contract (``convit.records``): ``ckpt-EEEEE-SSSSSS.pt`` by the position a
resumed run starts from (epoch to run, optimizer steps already done in it), each with a ``.json`` record (SHA-256
of the bytes on disk, size, position, config hash). A write goes to a temporary file, is fsynced and renamed over:
a crash leaves either the old set or the new one, never a half file under a final name; the temporary files of
writers killed mid-write are removed at the next save or resume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..records import (METRICS_FILE, CheckpointsUnusable, atomic_write_bytes, checkpoint_name, checkpoint_position,
                       checkpoint_record, file_sha256, list_checkpoints, remove_checkpoint, remove_dead_temp_files,
                       write_checkpoint_record)

__all__ = ["KEEP", "checkpoint_name", "list_checkpoints", "load_latest", "save_checkpoint"]

log = logging.getLogger("convit.engine")
KEEP = 2


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically under its position's name with its record, then drop all but the KEEP
    latest (and what killed writers left behind)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    position = (int(state["epoch"]), int(state["step"]))
    path = ckpt_dir / checkpoint_name(*position)
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    write_checkpoint_record(path, position, str(state.get("config_hash", "")))
    for old in list_checkpoints(ckpt_dir)[:-KEEP]:
        remove_checkpoint(old)
    remove_dead_temp_files(ckpt_dir)
    return path


def load_latest(ckpt_dir: Path, config_hash: str | None = None) -> dict[str, Any] | None:
    """The newest checkpoint that is intact and this trial's; None when there is none at all.

    A damaged file (its digest or size differs from its record, or it does not load), a foreign one (another
    config's hash) or a misnamed one (its content is at another position than its name says) is skipped with a
    warning naming it, and the previous one is used. When checkpoints exist but none can be used, raises
    :class:`CheckpointsUnusable` instead of restarting from scratch over the recorded progress."""
    ckpt_dir = Path(ckpt_dir)
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise CheckpointsUnusable(f"{ckpt_dir} is a file, not the trial's checkpoint folder; move it away, or use "
                                  "a new output folder")
    remove_dead_temp_files(ckpt_dir)
    found = list_checkpoints(ckpt_dir)
    problems = []
    for path in reversed(found):
        try:
            return _load(path, config_hash)
        except Exception as err:  # noqa: BLE001 - any unusable file means "try the previous one"
            problems.append(f"{path.name}: {err}")
            log.warning("checkpoint %s is unreadable (%s); falling back to the previous one", path, err)
    if found:
        raise CheckpointsUnusable(
            f"none of the {len(found)} checkpoint(s) in {ckpt_dir} can be resumed from ({'; '.join(problems)}); "
            f"nothing was changed. To restart the trial from scratch, remove {ckpt_dir} and "
            f"{ckpt_dir.parent / METRICS_FILE} (or train into a new folder)")
    return None


def _load(path: Path, config_hash: str | None) -> dict[str, Any]:
    record = checkpoint_record(path)
    if record is not None:
        size = path.stat().st_size
        if record.get("bytes") != size or record["sha256"] != file_sha256(path):
            raise ValueError(f"damaged: its bytes differ from the digest recorded when it was written "
                             f"({size} bytes, recorded {record.get('bytes')})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError("not a trial checkpoint")
    if config_hash is not None and state.get("config_hash") != config_hash:
        raise ValueError(f"foreign: it belongs to config {state.get('config_hash')}, not {config_hash}")
    if checkpoint_position(path) != (int(state["epoch"]), int(state["step"])):
        raise ValueError(f"misnamed: it holds epoch {state['epoch']} step {state['step']}")
    return state
