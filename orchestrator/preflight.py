"""Checks that need the filesystem, run before anything is submitted: is every trial's data where it says, and
does its batch fit the subset? A wrong ``data_root`` found here costs one error message (exit 2); found by the
trial, it costs a queued job, a failed MLflow run and a cluster slot.

Only meaningful where the trials will see the same filesystem as the submitting process (the local backend,
SLURM's shared filesystems, a Ray cluster started here). A remote Ray cluster skips it.
"""
from __future__ import annotations

from typing import Any

from orchestrator.errors import SpecError, SpecIssue


def _data_key(cfg: Any) -> tuple:
    """Trials that agree on these fields pass or fail the data check together: check each group once."""
    return (cfg.dataset, cfg.data_root, cfg.num_classes, cfg.data_fraction, cfg.batch_size, cfg.mixup, cfg.cutmix,
            cfg.mixup_prob, cfg.synthetic_train_size)


def check_trials_data(trials: list[Any], file: str) -> None:
    """Raise one SpecError listing every distinct data problem (with the trials it affects)."""
    from convit.data import check_data
    from convit.data.errors import DataError

    verdicts: dict[tuple, str | None] = {}
    problems: dict[str, list[str]] = {}
    for trial in trials:
        key = _data_key(trial.config)
        if key not in verdicts:
            try:
                check_data(trial.config)
                verdicts[key] = None
            except DataError as exc:
                verdicts[key] = str(exc)
        if verdicts[key]:
            problems.setdefault(verdicts[key], []).append(trial.name)
    if problems:
        raise SpecError([SpecIssue(file, None, "data", f"{msg} (trials: {', '.join(names[:3])}"
                                                       f"{', ...' if len(names) > 3 else ''})")
                         for msg, names in problems.items()])
