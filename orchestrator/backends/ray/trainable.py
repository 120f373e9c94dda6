"""What runs inside a Ray Tune trial: the engine through :func:`orchestrator.trial_runner.run_trial_process`.

A Tune trial's config is ``{"trial_id": <orchestrator trial id>}`` plus, under PBT, the mutated keys. Its
identity (the trial folder, the MLflow child run) is the orchestrator trial it was created for, recorded on its
first start in ``<sweep>/ray/identity/<tune trial id>.json``: PBT copies a better trial's whole config, trial id
included, into a worse one, and the worse one must keep logging into its own run.

Checkpoints: each epoch's engine checkpoint is reported to Tune (a hard link to the file, plus ``meta.json``),
so Tune can restart a trial on another node, or hand it to another trial under PBT. On start, the checkpoint Tune
gives back (``tune.get_checkpoint()``) is installed into the trial folder only when it is newer than what the
folder holds, or when it comes from another trial (a PBT exploit, see :mod:`.pbt`); the engine then resumes
exactly from the folder, as under every backend.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from ray import tune

from convit.data import check_data
from convit.records import (CHECKPOINTS_DIR, CONFIG_FILE, FINAL_FILE, METRICS_FILE, checkpoint_position,
                            checkpoint_record_path, list_checkpoints, read_json, read_metrics, write_json)
from orchestrator.backends.layout import RAY_STOPPED_FILE, ray_dir, ray_identity_file, ray_stops_dir
from orchestrator.backends.ray.pbt import mutated_values, rebase_checkpoint, with_values
from orchestrator.backends.ray.schedulers import EPOCHS_DONE
from orchestrator.sections import RaySection
from orchestrator.status import write_status
from orchestrator.process_env import THREADS_ENV, apply_thread_budget
from orchestrator.tracking import Tracker
from orchestrator.trial import Trial
from orchestrator.trial_runner import run_trial_process
from orchestrator.workdir import RUN_ID_FILE, SWEEP_FILE, SweepContext, read_trials

WORKER_FILE = "ray_worker.json"  # pid, host and Tune trial id of the process running the trial now
STOPPED_FILE = RAY_STOPPED_FILE  # the scheduler ended the trial early (ASHA): a finished trial (backends/layout.py)
PBT_DIR = "pbt"  # archived segments of a trial that PBT moved onto another trial's checkpoint
META_FILE = "meta.json"


# ---------------------------------------------------------------------------------------------- identity
def home_trial_id(sweep_dir: Path, tune_trial_id: str, config_trial_id: str) -> str:
    """The orchestrator trial this Tune trial was created for (its config may since name another one)."""
    path = ray_identity_file(sweep_dir, tune_trial_id)
    known = read_json(path)
    if known is not None:
        return str(known["trial_id"])
    write_json(path, {"trial_id": config_trial_id})
    return config_trial_id


# ---------------------------------------------------------------------------------------------- reporting
def _tune_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numbers without '/' (Tune splits keys on '/'; the per-layer attention metrics stay in MLflow)."""
    out = {}
    for key, value in metrics.items():
        if "/" in key or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


class TuneReporter:
    """The engine's Reporter that forwards each epoch to Tune (after MLflow has it), with the checkpoint.

    Validation metrics are carried over to epochs without evaluation, so a scheduler's metric is always there.
    The last epoch is held back and reported by :meth:`flush` after the engine has written final.json: a
    scheduler's STOP on that report would otherwise end the thread before the trial is recorded as finished.
    """

    def __init__(self, trial_dir: Path, epochs: int, meta: dict[str, Any]):
        self.trial_dir = trial_dir
        self.epochs = epochs
        self.meta = meta
        self.carried: dict[str, float] = {}
        self.pending: dict[str, float] | None = None

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.carried.update(_tune_metrics(metrics))
        payload = {**self.carried, "epoch": float(epoch), EPOCHS_DONE: epoch + 1}
        if epoch + 1 >= self.epochs:
            self.pending = payload
            return
        if checkpoint_dir is None:
            tune.report(payload)
            return
        with self._staged(checkpoint_dir, epoch) as staged:
            tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(staged)))

    def flush(self) -> None:
        if self.pending is not None:
            payload, self.pending = self.pending, None
            tune.report(payload)

    @contextlib.contextmanager
    def _staged(self, checkpoint_dir: Path, epoch: int) -> Iterator[Path]:
        """A folder with the latest engine checkpoint (a hard link: no copy here) and its meta.json."""
        latest = list_checkpoints(checkpoint_dir)[-1]
        staged = self.trial_dir / ".ray_staging"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        try:
            for source in (latest, checkpoint_record_path(latest)):  # the file and its digest record
                if source.exists():
                    try:
                        os.link(source, staged / source.name)
                    except OSError:
                        shutil.copy2(source, staged / source.name)
            write_json(staged / META_FILE, {**self.meta, "file": latest.name, "epoch": epoch})
            yield staged
        finally:
            shutil.rmtree(staged, ignore_errors=True)


# ------------------------------------------------------------------------------------------ checkpoints
def _position(name: str) -> tuple[int, int]:
    """The position a checkpoint resumes at, from its name (convit.records)."""
    return checkpoint_position(Path(name)) or (-1, -1)


def _local_state(trial_dir: Path) -> tuple[str | None, tuple[int, int] | None]:
    config_hash = (read_json(trial_dir / CONFIG_FILE) or {}).get("config_hash")
    found = list_checkpoints(trial_dir / CHECKPOINTS_DIR)
    return config_hash, (_position(found[-1].name) if found else None)


def _archive_segment(trial_dir: Path) -> Path:
    """Move the engine's records of the current segment under pbt/<n>/ (checkpoints are dropped: Tune has
    them), leaving the folder ready for the engine to start the next segment."""
    root = trial_dir / PBT_DIR
    n = len([p for p in root.iterdir() if p.is_dir()]) if root.is_dir() else 0
    target = root / str(n)
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, METRICS_FILE, FINAL_FILE):
        if (trial_dir / name).exists():
            os.replace(trial_dir / name, target / name)
    shutil.rmtree(trial_dir / CHECKPOINTS_DIR, ignore_errors=True)
    return target


def install_checkpoint(source: Path, source_id: str, trial_dir: Path, home_id: str, config: Any) -> dict | None:
    """Make the trial folder resume from Tune's checkpoint ``source`` when that is what Tune means.

    Returns a description of the PBT exploit when the checkpoint came from another trial, else None.
    """
    import torch  # heavy: the trial process trains with it anyway

    from convit.engine.checkpoint import save_checkpoint  # heavy: torch

    meta = read_json(source / META_FILE)
    if meta is None:
        return None
    config_hash = config.config_hash()
    installed = read_json(trial_dir / PBT_DIR / "installed.json", {}) or {}
    exploit = meta.get("home") != home_id and installed.get("source") != source_id
    local_hash, local_pos = _local_state(trial_dir)
    if local_hash is None and local_pos is not None:  # installed here, the engine has not started on it yet
        local_hash = installed.get("config_hash")
    if not exploit:
        if local_hash == config_hash and local_pos is not None and local_pos >= _position(meta["file"]):
            return None  # the folder is as new as Tune's copy or newer (same machine, retried trial)
        if meta["config_hash"] == config_hash:
            if local_hash not in (None, config_hash):
                _archive_segment(trial_dir)
            (trial_dir / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
            for name in (meta["file"], checkpoint_record_path(Path(meta["file"])).name):
                if (source / name).exists():
                    shutil.copy2(source / name, trial_dir / CHECKPOINTS_DIR / name)
            return None
    old_config = type(config).model_validate(meta["config"])
    state = torch.load(source / meta["file"], map_location="cpu", weights_only=True)
    previous = read_json(trial_dir / CONFIG_FILE) or {}
    archived = _archive_segment(trial_dir)
    save_checkpoint(trial_dir / CHECKPOINTS_DIR, rebase_checkpoint(state, old_config, config))
    event = {"epoch": int(state["epoch"]), "step": int(state["step"]), "from_trial": meta.get("home"),
             "from_ray_trial": meta.get("tune_trial_id"), "from_config_hash": meta["config_hash"],
             "config_hash": config_hash, "previous_config": previous.get("config"), "archived": str(archived)}
    write_json(archived / "exploit.json", event)
    write_json(trial_dir / PBT_DIR / "installed.json", {"source": source_id, **event})
    return event


# ------------------------------------------------------------------------------------------------ MLflow
def _record_exploit(ctx: SweepContext, trial_dir: Path, event: dict, keys: list[str], config: Any,
                    home_config: Any) -> None:
    """Hyperparameters that changed become metrics ``hp/<key>`` at the epoch they apply from (params are
    immutable in MLflow), and the exploit an event tag ``pbt.exploit.<n>``."""
    run_id = (read_json(trial_dir / RUN_ID_FILE) or {}).get("run_id")
    if not run_id:
        return
    tracker = Tracker(ctx.tracking_uri)
    n = len([p for p in (trial_dir / PBT_DIR).iterdir() if p.is_dir()])
    values = mutated_values(config, keys)
    if n == 1:  # the first change: the starting values at step 0, so the hp/ curves are complete
        tracker.log_values(run_id, {f"hp/{k}": v for k, v in mutated_values(home_config, keys).items()}, step=0)
    tracker.log_values(run_id, {f"hp/{k}": v for k, v in values.items()}, step=event["epoch"])
    summary = {"epoch": event["epoch"], "from_trial": event["from_trial"], "from_ray_trial": event["from_ray_trial"],
               "values": values}
    tracker.set_tags(run_id, {f"pbt.exploit.{n}": json.dumps(summary), "pbt.exploits": str(n)})


def stop_markers(sweep_dir: Path) -> dict[str, dict]:
    """Orchestrator trial id -> the STOP decision a scheduler made for it (see :mod:`.schedulers`)."""
    out = {}
    for path in sorted(ray_stops_dir(sweep_dir).glob("*.json")):
        home = read_json(ray_identity_file(sweep_dir, path.stem))
        marker = read_json(path)
        if home is not None and marker is not None:
            out[str(home["trial_id"])] = {**marker, "tune_trial_id": path.stem}
    return out


def record_early_stop(ctx: SweepContext, trial_dir: Path, marker: dict) -> None:
    """The scheduler ended the trial: a finished run (FINISHED, its best validation top-1 added), tagged.

    Called by the driver once the trial's worker is gone: Tune ends a stopped trial's process without waiting
    for its training thread, so the trial cannot reliably record this itself."""
    rows = read_metrics(trial_dir)
    last_epoch = int(rows[-1]["epoch"]) if rows else -1
    record = {**marker, "last_epoch": last_epoch, "time": time.time()}
    write_json(trial_dir / STOPPED_FILE, record)
    write_status(trial_dir, "interrupted", error=f"stopped early by {marker['scheduler']} after epoch {last_epoch}",
                 stopped_early=True)
    run_id = (read_json(trial_dir / RUN_ID_FILE) or {}).get("run_id")
    if not run_id:
        return
    final: dict[str, float] = {}
    for row in rows:
        final.update({k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    tops = [r["val_top1"] for r in rows if isinstance(r.get("val_top1"), (int, float))]
    final["best_val_top1"] = max(tops) if tops else math.nan
    tracker = Tracker(ctx.tracking_uri)
    tracker.log_final(run_id, final, {k for row in rows for k in row}, step=max(last_epoch, 0))
    tracker.set_tags(run_id, {"early_stopped": marker["scheduler"], "stopped_after_epoch": str(last_epoch)})
    tracker.end_run(run_id, "FINISHED")


# ---------------------------------------------------------------------------------------------- cancelling
CANCEL_FILE = "cancel.json"  # in <sweep>/ray/: written by RayBackend.cancel


def _watch_cancel(sweep_dir: Path, control: Any, started: float) -> threading.Event:
    """Ask the engine for an exact checkpoint and a stop when the sweep is cancelled after this trial started
    (the trial runs in a thread of a Ray worker: no signal can reach it, a file in the shared sweep folder can).
    Set the returned event when the trial ends: the watcher stops with it (a reused worker runs many trials)."""
    path = ray_dir(sweep_dir) / CANCEL_FILE
    ended = threading.Event()

    def watch() -> None:
        while not control.stop_requested and not ended.is_set():
            request = read_json(path)
            if request is not None and request.get("time", 0) > started:
                control.request_checkpoint(stop=True)
                return
            ended.wait(1.0)

    threading.Thread(target=watch, name="convit-cancel-watch", daemon=True).start()
    return ended


def _wait_to_be_stopped(limit_s: float = 600) -> None:
    """After a cancel checkpoint: neither return (Tune would count the trial finished) nor fail (Tune would retry
    it at once): wait for the driver, which the cancel stops next, to end this trial."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        time.sleep(1.0)
    raise RuntimeError("the sweep was cancelled but Tune did not stop this trial; it resumes from its checkpoint")


# ---------------------------------------------------------------------------------------------- the trainable
def train_trial(config: dict[str, Any], sweep_dir: str) -> None:
    """The Tune function trainable (wrapped with tune.with_parameters(sweep_dir=...))."""
    from convit.engine import ConfigMismatch, TrialControl, TrialFailed, TrialInterrupted  # heavy: torch

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch otherwise
    root = Path(sweep_dir)
    ctx = SweepContext.from_dict(read_json(root / SWEEP_FILE))
    tune_id = tune.get_context().get_trial_id()
    trials = {t.id: t for t in read_trials(ctx)}
    home = trials[home_trial_id(root, tune_id, config["trial_id"])]
    mutated = {k: v for k, v in config.items() if k != "trial_id"}
    effective = with_values(trials[config["trial_id"]].config, mutated)
    trial = Trial(home.id, home.name, effective, home.axes)
    trial_dir = ctx.trial_dir(home.id)
    trial_dir.mkdir(parents=True, exist_ok=True)
    _set_threads(ctx)
    write_json(trial_dir / WORKER_FILE, {"pid": os.getpid(), "host": socket.gethostname(), "tune_trial_id": tune_id,
                                          "started": time.time()})
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            event = install_checkpoint(Path(folder), checkpoint.path, trial_dir, home.id, effective)
        if event is not None:
            _record_exploit(ctx, trial_dir, event, sorted(mutated), effective, home.config)
    meta = {"home": home.id, "tune_trial_id": tune_id, "config_hash": effective.config_hash(),
            "config": effective.model_dump(mode="json")}
    reporter = TuneReporter(trial_dir, check_data(effective).epochs, meta)
    control = TrialControl()
    watching = _watch_cancel(root, control, started=time.time())
    try:
        run_trial_process(trial, ctx, tags={"ray_trial_id": tune_id}, control=control, reporters=[reporter])
    except TrialInterrupted:
        _wait_to_be_stopped()
    except (TrialFailed, ConfigMismatch):
        return  # recorded as failed (status.json, MLflow); retrying cannot help, so Tune must not
    finally:
        watching.set()
    reporter.flush()


def _set_threads(ctx: SweepContext) -> None:
    """torch's intra-op threads = the trial's CPU share (Ray sets OMP_NUM_THREADS, torch may ignore it)."""
    opts = ctx.options
    cpus = opts.cpus_per_trial if isinstance(opts, RaySection) else 1.0
    os.environ[THREADS_ENV] = str(max(1, int(cpus)))
    apply_thread_budget()
