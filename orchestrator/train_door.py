"""``convit-sweep train``: one training run from the command line, logged to MLflow like a sweep's trial.

The engine's own command (``python -m convit.train``, :mod:`convit.train`) knows nothing of MLflow; this door
hands it a reporter: the run goes to the experiment ``train`` of the working folder's store (or
``$MLFLOW_TRACKING_URI``), named after the output folder, with the trial's params, every epoch (from
metrics.jsonl, exactly once across resumes: the run id is kept in the output folder) and the final metrics;
KILLED when stopped (Ctrl-C, SIGTERM), FAILED when the trial fails. Tracking outages never stop training
(:class:`orchestrator.tracking.TrialRun`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from convit.records import CONFIG_FILE, FINAL_FILE, METRICS_FILE, read_json, write_json
from convit.train import main as train_main
from orchestrator.tracking import Tracker, TrialRun, default_tracking_uri, env_tags
from orchestrator.workdir import RUN_ID_FILE, resolve_workdir

EXPERIMENT = "train"
PROG = "convit-sweep train"


class TrainTracking:
    """The engine's Reporter for one ``train`` run, with ``end``/``finish`` for :func:`convit.train.main`."""

    def __init__(self, config: Any, out_dir: Path, uri: str):
        self.config, self.out_dir, self.uri = config, Path(out_dir), uri
        self.run = TrialRun(Tracker(uri), self.out_dir / METRICS_FILE, self._open, _warn)
        if self.run.run_id:
            print(f"MLflow: experiment '{EXPERIMENT}', run '{self.out_dir.name}' ({self.run.run_id}) in {uri}",
                  file=sys.stderr)

    def _open(self) -> str:
        known = (read_json(self.out_dir / RUN_ID_FILE, {}) or {}).get("run_id")
        run_id = Tracker(self.uri).open_trial_run(
            experiment=EXPERIMENT, sweep_id=EXPERIMENT, parent_run_id=None, trial_id=str(self.out_dir.resolve()),
            trial_name=self.out_dir.name, params=self.config.to_dict(),
            tags={**env_tags(), "backend": "train", "out_dir": str(self.out_dir.resolve())}, known_run_id=known)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / RUN_ID_FILE, {"run_id": run_id, "tracking_uri": self.uri})
        return run_id

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.run.report(epoch, metrics, checkpoint_dir)

    def end(self, status: str) -> None:
        self.run.end(status)

    def finish(self, final: Mapping[str, Any]) -> None:
        self.run.finish(final, [self.out_dir / CONFIG_FILE, self.out_dir / FINAL_FILE])


def tracking_uri(workdir: str | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the working folder's embedded store (the one `convit-sweep server` serves)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(resolve_workdir(workdir))


def train(argv: Sequence[str], workdir: str | None = None) -> int:
    """Run :func:`convit.train.main` under this program's name, logging to MLflow."""
    uri = tracking_uri(workdir)
    return train_main(list(argv), prog=PROG, reporter=lambda config, out: TrainTracking(config, out, uri))


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
