"""Short critical sections between processes of one machine or of a shared filesystem: an flock on a file next
to what is protected, released by the kernel if its holder dies. Used where two processes doing the same first
step at once would corrupt or duplicate something (creating a fresh sqlite store, opening a sweep's parent run).
A trial's ownership is a different, long-held lock: convit.records.own_trial."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from convit.records import flock_exclusive
from orchestrator.errors import OrchestratorError


@contextlib.contextmanager
def exclusive(path: Path, timeout_s: float = 120.0, what: str = "") -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block; waits up to ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not flock_exclusive(fd, timeout_s):
            raise OrchestratorError(f"waited {timeout_s:.0f} s for {path} ({what or 'another process'}); is a "
                                    "process stuck holding it?")
        yield
    finally:
        os.close(fd)
