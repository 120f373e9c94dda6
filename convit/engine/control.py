"""How the outside world talks to a running trial: the reporter callback, the checkpoint/stop hook, and
the exceptions that end a trial early."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..records import ConfigMismatch, TrialBusy  # re-exported: defined torch-free

__all__ = ["ConfigMismatch", "Reporter", "TrialBusy", "TrialControl", "TrialFailed", "TrialInterrupted"]


class TrialFailed(RuntimeError):
    """The trial cannot go on (e.g. a non-finite loss); ``reason`` says why.  Not retried by resuming."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class TrialInterrupted(RuntimeError):
    """Raised after an exact checkpoint was saved on a ``request_checkpoint(stop=True)``; the trial can be
    resumed by calling run_trial again on the same out_dir."""


@runtime_checkable
class Reporter(Protocol):
    """Receives each epoch's metrics on rank 0, after that epoch's metrics.jsonl line (and checkpoint,
    when one is due: ``checkpoint_dir`` is None otherwise) are durably written.  After a resume, epochs
    already reported may be reported again with identical values: skipping them is the reporter's job."""

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None: ...


class TrialControl:
    """Checkpoint-on-demand hook, safe to call from any thread or a signal handler.

    `request_checkpoint` only assigns attributes (no locks), so a signal handler cannot deadlock against
    the training thread.  The engine polls `pending` at every optimizer step, saves an exact mid-epoch
    checkpoint, sets `saved`, and raises TrialInterrupted if a stop was asked for.
    """

    def __init__(self) -> None:
        self._pending = False
        self._stop = False
        self.saved = threading.Event()

    def request_checkpoint(self, stop: bool = False) -> None:
        if stop:
            self._stop = True
        self._pending = True

    @property
    def pending(self) -> bool:
        return self._pending

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def take(self) -> bool:
        """Acknowledge the pending request (engine side); returns whether to stop afterwards."""
        self._pending = False
        return self._stop
