"""The training engine: one trial = one resumable training run (`run_trial`).

Backends (local, Ray Tune, SLURM) call `run_trial` and talk to it only through a `Reporter` (per-epoch
metrics) and a `TrialControl` (checkpoint / stop on demand).  See docs/training.md.
"""

from .control import ConfigMismatch, Reporter, TrialBusy, TrialControl, TrialFailed, TrialInterrupted
from .trial import run_trial

__all__ = ["ConfigMismatch", "Reporter", "TrialBusy", "TrialControl", "TrialFailed", "TrialInterrupted", "run_trial"]
