"""The training budget of one trial, planned exactly once the size of its training subset is known.

A config states its budget in one unit (``epochs``, ``train_images`` or ``train_steps``) and its warm-up
in one unit (``warmup_epochs``, ``warmup_steps`` or ``warmup_fraction``); see convit.config.  Everything
else follows from the number of optimizer steps per epoch:

* ``train_images = I`` trains ceil(I / batch_size) optimizer steps at every data fraction, so trials on
  different fractions get exactly the same number of steps (the paper trains 300/f epochs on a fraction f,
  i.e. a constant image budget, Sec. 4 / Table 2).  The last epoch may be partial.
* ``epochs = E`` trains E full epochs of the subset (E · steps_per_epoch steps).
* The warm-up is in steps too; it never scales with f unless stated in epochs of the subset.

`plan_budget` refuses, with the offending key, what would silently waste a run: an epoch with zero
optimizer steps, a warm-up as long as the whole budget, and periodic evaluation or analysis schedules
that can never fire before the end.  Torch-free: the orchestrator plans every trial for ``--dry-run``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..config import TrialConfig
from .errors import DataError
from .order import steps_per_epoch


@dataclass(frozen=True)
class TrainingPlan:
    """What one trial will do, in optimizer steps (global batches) and samples.

    ``epochs`` counts epochs begun: all have ``steps_per_epoch`` steps except possibly the last, which
    has ``last_epoch_steps``.  ``images`` = total_steps × batch_size (samples seen, repeats included).
    """

    train_size: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def last_epoch_steps(self) -> int:
        return self.total_steps - (self.epochs - 1) * self.steps_per_epoch

    @property
    def images(self) -> int:
        return self.total_steps * self.batch_size

    @property
    def epochs_exact(self) -> float:
        """Budget in epochs of the subset, fractional when the last epoch is partial."""
        return self.total_steps / self.steps_per_epoch

    def steps_in_epoch(self, epoch: int) -> int:
        return self.last_epoch_steps if epoch == self.epochs - 1 else self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epochs": self.epochs, "last_epoch_steps": self.last_epoch_steps,
                "images": self.images}


def plan_budget(cfg: TrialConfig, train_size: int) -> TrainingPlan:
    """The plan of ``cfg`` on a training subset of ``train_size`` images.

    Raises:
        DataError: (with ``.key``, the config key to fix) when an epoch would have no optimizer step, the
            warm-up would cover the whole budget, or a periodic schedule could never fire.
    """
    per_epoch = steps_per_epoch(train_size, cfg.batch_size, cfg.repeated_aug, cfg.repeated_aug_budget)
    if per_epoch == 0:
        samples = steps_per_epoch(train_size, 1, cfg.repeated_aug, cfg.repeated_aug_budget)  # samples per epoch
        shown = f"{samples} samples from {train_size} images" + (
            f", about n/{cfg.repeated_aug} distinct images each shown {cfg.repeated_aug} times under the 'deit' "
            "repeated-augmentation budget" if cfg.repeated_aug > 1 and cfg.repeated_aug_budget == "deit" else "")
        raise DataError(f"batch_size={cfg.batch_size} is larger than an epoch of the training subset ({shown}): "
                        "an epoch would have no optimizer step; lower batch_size (or use more data)", key="batch_size")
    if cfg.train_steps is not None:
        total = cfg.train_steps
    elif cfg.train_images is not None:
        total = math.ceil(cfg.train_images / cfg.batch_size)
    else:
        total = int(cfg.epochs or 0) * per_epoch
    if cfg.warmup_steps is not None:
        warmup, key = cfg.warmup_steps, "warmup_steps"
    elif cfg.warmup_fraction is not None:
        warmup, key = int(round(cfg.warmup_fraction * total)), "warmup_fraction"
    else:
        warmup, key = int(round((cfg.warmup_epochs or 0.0) * per_epoch)), "warmup_epochs"
    plan = TrainingPlan(train_size, cfg.batch_size, per_epoch, total, warmup)
    if warmup >= total and warmup > 0:
        raise DataError(f"the warm-up ({warmup} steps) is not shorter than the whole budget ({total} steps, "
                        f"{plan.epochs_exact:.3g} epochs of {train_size} images): the learning rate would never "
                        "leave warm-up; shorten it (e.g. warmup_fraction: 0.05)", key=key)
    for key, every in (("eval_every", cfg.eval_every), ("analysis_every", cfg.analysis_every)):
        if every > plan.epochs:
            raise DataError(f"{key}={every} but this trial trains {plan.epochs} epoch(s) of {train_size} images: "
                            f"the periodic schedule never fires before the end (the last epoch is always done); "
                            f"set {key}: 0 {'(only at the end)' if key == 'eval_every' else '(off)'} or at most "
                            f"{plan.epochs}", key=key)
    return plan
