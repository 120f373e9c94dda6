"""Checkpoint files: atomic writes, keep-the-two-latest, and fallback over a corrupt latest.

Files are named ``ckpt-EEEEE-SSSSSS.pt`` by the position a resumed run starts from (epoch to run, optimizer
steps already done in it), so name order is time order.  A write goes to a temporary file, is fsynced
and renamed over: a crash leaves either the old set or the new one, never a half file under a final name.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..records import atomic_write_bytes

log = logging.getLogger("convit.engine")
_NAME = re.compile(r"^ckpt-(\d{5})-(\d{6})\.pt$")
KEEP = 2


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt-{epoch:05d}-{step:06d}.pt"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if _NAME.match(p.name))


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically under its position's name, then drop all but the KEEP latest."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / checkpoint_name(state["epoch"], state["step"])
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    for old in list_checkpoints(ckpt_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_latest(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a corrupt or truncated newer one is skipped with a warning."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "model" not in state:
                raise ValueError("not a trial checkpoint")
            return state
        except Exception as err:  # noqa: BLE001 - any unreadable file means "try the previous one"
            log.warning("checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                        path, type(err).__name__, err)
    return None
