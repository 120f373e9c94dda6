"""One training run (`run_trial`): the DeiT recipe, exact checkpoint/resume, DDP, per-epoch metrics.

Exactness rests on three things: the data order and each sample's augmentation are pure functions of
(seed, epoch, position) (see convit.data.order); every RNG stream the training step draws from is saved
in the checkpoint (for every rank); and checkpoints are only taken at optimizer-step boundaries.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from .. import analysis, records
from ..config import TrialConfig
from ..data import DataError, EpochBatchSampler, TrainingPlan, TrialData, build_data, check_data, data_geometry
from ..data.registry import open_splits
from ..data.dataset import seeded
from ..models import InitCheckpointError, adapt_state_dict, create_model, load_init_checkpoint, read_state_dict
from . import rng
from .checkpoint import load_latest, save_checkpoint
from .control import Reporter, TrialControl, TrialFailed, TrialInterrupted
from .distributed import DistContext, all_reduce_sum, gather_objects, setup

log = logging.getLogger("convit.engine")
ANALYSIS_IMAGES = 16
CHECKPOINT_FORMAT = 1


def run_trial(config: TrialConfig, out_dir: Path, reporter: Reporter | None = None,
              control: TrialControl | None = None) -> dict[str, float]:
    """Train one trial into ``out_dir`` (resuming from its latest good checkpoint) and return the final
    metrics.  Raises DataError / ConfigMismatch on bad input (before writing anything), TrialBusy when another
    live process is training the same out_dir, CheckpointsUnusable when checkpoints exist but none can be resumed
    from, TrialFailed on a non-finite loss, TrialInterrupted after a requested stop checkpoint."""
    out_dir = Path(out_dir)
    ctx = setup()
    try:
        plan = check_data(config, ctx.world_size)
        if not records.list_checkpoints(out_dir / records.CHECKPOINTS_DIR):  # fresh start: check the weights too
            check_init_checkpoint(config)
        records.check_same_trial(out_dir, config.config_hash())
        owner = records.own_trial(out_dir) if ctx.is_main else contextlib.nullcontext()
        with owner:  # one process trains a trial at a time (rank 0 writes; TrialBusy if another owns it)
            final = records.read_final(out_dir)
            if final is not None:
                return final["metrics"]
            return _Trial(config, plan, out_dir, ctx, reporter, control or TrialControl()).run()
    finally:
        ctx.close()


def check_init_checkpoint(config: TrialConfig) -> None:
    """Refuse, before anything is written, an ``init_checkpoint`` that cannot start this trial's model: a missing
    file, not a state dict, a pickle that would run code, or keys that do not fit (convit.models.finetune lists
    them). Raises DataError (key ``init_checkpoint``), the error kind of a trial's unusable input files.

    Builds the model once on the CPU (under a forked RNG, so the trial's seeded initialisation is untouched) to
    compare keys and shapes; the class count only decides whether the head is re-initialised, never a refusal."""
    if config.init_checkpoint is None:
        return
    splits = open_splits(config)
    kwargs = data_geometry(config, splits).model_kwargs(config)
    with torch.random.fork_rng(devices=[]):
        model = create_model(config.model, num_classes=splits.num_classes, **kwargs)
    try:
        adapt_state_dict(model, read_state_dict(config.init_checkpoint), config.init_checkpoint)
    except InitCheckpointError as err:
        raise DataError(str(err), key="init_checkpoint") from None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn API
    """DataLoader workers ignore stop signals. A signal sent to the whole process group (``kill -TERM -PGID``,
    ``scancel``, a container runtime, Ctrl-C) reaches the workers too; a worker that died of it would end the trial
    with "DataLoader worker killed by signal" instead of the exact checkpoint the main process saves. The main
    process handles the signal and ends its workers itself. They also let go of the trial's ownership lock that
    the fork gave them (records.drop_inherited_ownership), so that one outliving a killed trial never holds it."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    records.drop_inherited_ownership()


def _amp_context(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    if amp == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _peak_mem_mb(device: torch.device) -> float:
    """Peak accelerator memory this epoch on GPU; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Trial:
    """The components of one run and the loop over them; state lives here, not in globals."""

    def __init__(self, cfg: TrialConfig, plan: TrainingPlan, out_dir: Path, ctx: DistContext,
                 reporter: Reporter | None, control: TrialControl):
        self.cfg, self.out_dir, self.ctx, self.reporter, self.control = cfg, out_dir, ctx, reporter, control
        self.res = cfg.resolve(ctx.world_size, ctx.device.type == "cuda")
        self.hash = cfg.config_hash()
        self.ckpt_dir = out_dir / records.CHECKPOINTS_DIR
        self.plan = plan  # planned once by run_trial's data check (it reads the labels)
        self.data: TrialData = build_data(cfg)
        self._build_model()
        self._build_loaders()
        self._build_optim()
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.partial = {"loss_sum": 0.0, "steps": 0, "train_time": 0.0}
        self.metrics: list[dict[str, Any]] = []
        self.best_top1: float | None = None
        self._agreed_stop = False
        self._epoch_train_s = 0.0

    # ------------------------------------------------------------------------------ construction
    def _build_model(self) -> None:
        rng.seed_all(self.cfg.seed)  # identical initial weights on every rank and every (re)start
        self.raw = create_model(self.cfg.model, num_classes=self.data.num_classes,
                                **self.data.geometry.model_kwargs(self.cfg))
        self._load_init_checkpoint()
        self.raw.to(self.ctx.device)
        rng.seed_all(self.cfg.seed + self.ctx.rank)  # per-rank streams for drop path and mixup
        model: nn.Module = self.raw
        if self.ctx.distributed:
            ids = [self.ctx.device] if self.ctx.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.model = torch.compile(model) if self.cfg.compile else model
        self.ema = None
        if self.cfg.ema:
            self.ema = ModelEmaV3(self.raw, decay=self.cfg.ema_decay)

    def _load_init_checkpoint(self) -> None:
        """Start from ``init_checkpoint`` (convit.models.finetune: head re-initialised, embeddings resampled, the rest
        strict). A resumed trial's weights come from its own checkpoint (loaded later, in _resume); the init weights
        are then read only for the untrained-model reference analysis (``init/*``), and a file no longer there
        is not an error."""
        path = self.cfg.init_checkpoint
        if path is None:
            return
        if not records.list_checkpoints(self.ckpt_dir):
            try:
                report = load_init_checkpoint(self.raw, path)
            except InitCheckpointError as err:
                raise DataError(str(err), key="init_checkpoint") from None
            if self.ctx.is_main:
                log.info("initialised from %s: %s", path, report.summary())
            return
        try:
            load_init_checkpoint(self.raw, path)
        except InitCheckpointError as err:
            log.warning("resuming: %s; the init/* reference metrics describe the random initialisation instead", err)

    def _build_loaders(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.sampler = EpochBatchSampler(self.data.subset, cfg.seed, cfg.batch_size, cfg.repeated_aug,
                                         cfg.repeated_aug_budget, ctx.rank, ctx.world_size)
        common = dict(num_workers=cfg.num_workers, pin_memory=ctx.device.type == "cuda",
                      persistent_workers=cfg.num_workers > 0, worker_init_fn=_leave_stop_signals_to_the_trainer)
        # A private generator: creating a loader iterator must not draw from the global torch RNG, or a
        # resumed run (which creates its iterator at a different point) would diverge.
        self.train_loader = DataLoader(self.data.train, batch_sampler=self.sampler,
                                       generator=torch.Generator(), **common)
        self.val_loader = self._eval_loader(self.data.val, common)
        self.test_loader = self._eval_loader(self.data.test, common)
        picks = np.random.default_rng(0).choice(len(self.data.val), min(ANALYSIS_IMAGES, len(self.data.val)),
                                                replace=False)
        self.analysis_images = torch.stack([self.data.val[int(i)][0] for i in np.sort(picks)])

    def _eval_loader(self, dataset: Any, common: dict[str, Any]) -> DataLoader:
        """This rank's share of an evaluation set (sums are all-reduced, so shares may differ by one)."""
        idx = list(range(self.ctx.rank, len(dataset), self.ctx.world_size))
        return DataLoader(dataset, batch_size=self.res.batch_per_rank, sampler=idx, generator=torch.Generator(),
                          **common)

    def _build_optim(self) -> None:
        cfg, res = self.cfg, self.res
        self.trainable = [p for p in self.raw.parameters() if p.requires_grad]
        self.optimizer = create_optimizer_v2(self.raw, opt=cfg.opt, lr=res.lr, weight_decay=cfg.weight_decay,
                                             eps=cfg.opt_eps)
        if self.sampler.steps != self.plan.steps_per_epoch:  # one formula for both, or budgets would drift
            raise RuntimeError(f"sampler has {self.sampler.steps} steps per epoch, plan {self.plan.steps_per_epoch}")
        self.scheduler = CosineLRScheduler(
            self.optimizer, t_initial=self.plan.total_steps, lr_min=cfg.min_lr,
            warmup_t=self.plan.warmup_steps, warmup_lr_init=cfg.warmup_lr, t_in_epochs=False)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type) if res.amp == "fp16" else None
        mixing = (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.mixup_prob > 0
        self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                           switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode,
                           label_smoothing=cfg.label_smoothing, num_classes=self.data.num_classes) if mixing else None
        if mixing:
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif cfg.label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=cfg.label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    # ------------------------------------------------------------------------------ checkpoint state
    def _state(self) -> dict[str, Any]:
        rng_states = gather_objects(rng.capture(), self.ctx)  # collective: every rank calls _state
        return {
            "format": CHECKPOINT_FORMAT, "config_hash": self.hash,
            "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
            "model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_states, "partial": dict(self.partial), "metrics": list(self.metrics),
            "best_val_top1": self.best_top1, "world_size": self.ctx.world_size,
        }

    def _save(self) -> Path | None:
        state = self._state()
        if not self.ctx.is_main:
            return None
        save_checkpoint(self.ckpt_dir, state)
        return self.ckpt_dir

    def _resume(self) -> None:
        state = load_latest(self.ckpt_dir, self.hash)  # CheckpointsUnusable rather than a silent restart
        if state is None:
            if self.ctx.is_main:
                records.rewrite_metrics(self.out_dir, [])
            return
        self.raw.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.partial, self.metrics = dict(state["partial"]), list(state["metrics"])
        self.best_top1 = state["best_val_top1"]
        if len(state["rng"]) != self.ctx.world_size:
            log.warning("resuming a %d-process checkpoint on %d processes: RNG streams are re-derived, the "
                        "result will not be bit-identical", len(state["rng"]), self.ctx.world_size)
        rng.restore(state["rng"][self.ctx.rank % len(state["rng"])])
        if self.ctx.is_main:
            records.rewrite_metrics(self.out_dir, self.metrics)
            log.info("resumed from epoch %d, step %d (of %d epochs; %s)", self.epoch + 1, self.step,
                     self.plan.epochs, self.out_dir)

    def _data_resolved(self) -> dict[str, Any]:
        """What the data decided for this run (native size and channels, the statistics and their source)."""
        geo, stats = self.data.geometry, self.data.stats
        return {"img_size": geo.img_size, "in_chans": geo.in_chans, "norm_mean": list(stats.mean),
                "norm_std": list(stats.std), "norm_source": stats.source}

    # ------------------------------------------------------------------------------ the loop
    def run(self) -> dict[str, float]:
        # Where this start runs, rank by rank (a collective: every rank takes part); config.json keeps the latest
        # start's, the trial runner tags the MLflow run with it.
        rank_hosts = gather_objects(socket.gethostname(), self.ctx)
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            records.write_json(self.out_dir / records.CONFIG_FILE, {
                "config": self.cfg.to_dict(), "config_hash": self.hash,
                "resolved": {**self.res.to_dict(), **self._data_resolved(), "rank_hosts": rank_hosts},
                "plan": self.plan.to_dict(), "subset": self.data.subset_record,
                "steps_per_epoch": self.sampler.steps})
        # Gating and nonlocality of the untrained model (deterministic from the seed): the reference that tells
        # a learnt value from one that never moved.  Taken before a checkpoint is loaded, so also on resume.
        self.init_analysis = {k: v for k, v in self._analysis().items() if k.count("/") == 1} \
            if self.cfg.analysis_every else {}
        self._resume()
        while self.epoch < self.plan.epochs:
            self._run_epoch()
        self.control.saved.set()  # whatever was asked, the final checkpoint holds everything
        final = self._final()
        if self.ctx.is_main:
            records.write_json(self.out_dir / records.FINAL_FILE,
                               {"metrics": final, "subset": self.data.subset_record, "config_hash": self.hash})
        return final

    def _final(self) -> dict[str, float]:
        """The last epoch's row (the test split is evaluated in it), the best validation top-1 and the plan."""
        last = dict(self.metrics[-1]) if self.metrics else {}
        evals = [m for m in self.metrics if "val_top1" in m]
        if evals:
            last.update({k: v for k, v in evals[-1].items() if k.startswith(("val_", "ema_val_"))})
        last["best_val_top1"] = self.best_top1 if self.best_top1 is not None else float("nan")
        last["train_subset_size"] = float(self.data.subset_record["size"])
        last["optimizer_steps"] = float(self.plan.total_steps)
        last["images_seen"] = float(self.plan.images)
        last.update({f"init/{k}": v for k, v in self.init_analysis.items()})
        return {k: float(v) for k, v in last.items()}

    def _run_epoch(self) -> None:
        epoch, t0 = self.epoch, time.perf_counter()
        if self.ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.ctx.device)
        self._train_epoch()
        row: dict[str, Any] = {"epoch": epoch, **self._train_stats()}
        row["images_seen"] = self.global_step * self.cfg.batch_size
        last = epoch + 1 == self.plan.epochs
        if _due(epoch, self.cfg.eval_every, last):
            # Not through DDP: its forward may sync buffers, and val shards can differ by one batch.
            model = self.raw if self.ctx.distributed else self.model
            row.update(self._evaluate(model, self.val_loader, "val"))
            if self.ema is not None:
                row.update(self._evaluate(self.ema.module, self.val_loader, "ema_val"))
            if last or self.cfg.test_every_eval:  # the test split: reported, never used for a decision
                row.update(self._evaluate(model, self.test_loader, "test"))
                if self.ema is not None:
                    row.update(self._evaluate(self.ema.module, self.test_loader, "ema_test"))
            self.best_top1 = max(self.best_top1 or 0.0, row["val_top1"])
        if self.cfg.analysis_every and _due(epoch, self.cfg.analysis_every, last):
            row.update(self._analysis())
        if self.best_top1 is not None:
            row["best_val_top1"] = self.best_top1
        row["peak_mem_mb"] = _peak_mem_mb(self.ctx.device)
        row["epoch_time_s"] = self.partial["train_time"] + (time.perf_counter() - t0 - self._epoch_train_s)
        self.metrics.append(row)
        self.epoch, self.step = epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "steps": 0, "train_time": 0.0}
        due = (epoch + 1) % self.cfg.checkpoint_every == 0 or last
        ckpt = self._save() if due else None
        if self.ctx.is_main:
            records.append_metrics(self.out_dir, row)
            log.info("%s", _epoch_line(row, self.plan.epochs, self.metrics))
            if self.reporter is not None:
                self.reporter.report(epoch, row, ckpt)

    def _train_stats(self) -> dict[str, float]:
        p, steps = self.partial, self.plan.steps_in_epoch(self.epoch)
        images = steps * self.cfg.batch_size
        return {
            "train_loss": p["loss_sum"] / max(1, p["steps"]),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "img_per_s": images / p["train_time"] if p["train_time"] > 0 else float("nan"),
        }

    def _train_epoch(self) -> None:
        self.model.train()
        stop = self.plan.steps_in_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, self.step, stop)
        t_start = time.perf_counter()
        base_time = self.partial["train_time"]
        with _progress(self.out_dir if self.ctx.is_main else None, self.epoch, self.plan.epochs, stop,
                       self.step) as advance:
            for x, y in self.train_loader:
                loss = self._train_step(x, y)
                self.step += 1
                self.partial["loss_sum"] += loss
                self.partial["steps"] += 1
                self.partial["train_time"] = base_time + time.perf_counter() - t_start
                advance(loss)
                if self._agreed_request():
                    self._on_request()
        self._epoch_train_s = time.perf_counter() - t_start

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        dev = self.ctx.device
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        with _amp_context(self.res.amp, dev):
            loss = self.criterion(self.model(x), y)
        value = self._global_loss(loss.detach())
        if not math.isfinite(value):
            raise TrialFailed(f"non-finite training loss ({value}) at epoch {self.epoch}, step {self.step} "
                              f"(lr {self.optimizer.param_groups[0]['lr']:.3g}); lower lr or enable clip_grad")
        self.optimizer.zero_grad(set_to_none=True)
        params = self.trainable
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
            self.optimizer.step()
        self.global_step += 1
        self.scheduler.step_update(self.global_step)
        if self.ema is not None:
            self.ema.update(self.raw, step=self.global_step)
        return value

    def _global_loss(self, loss: torch.Tensor) -> float:
        """The batch loss averaged over ranks (equal shards), so a NaN on one rank stops them all."""
        if not self.ctx.distributed:
            return float(loss.float())
        t = loss.float().reshape(1)
        return float(all_reduce_sum(t, self.ctx)) / self.ctx.world_size

    def _agreed_request(self) -> bool:
        """Whether any rank was asked for a checkpoint (so all ranks take it at the same step)."""
        if not self.ctx.distributed:
            return self.control.pending
        flags = torch.tensor([float(self.control.pending), float(self.control.stop_requested)],
                             device=self.ctx.device)
        all_reduce_sum(flags, self.ctx)
        self._agreed_stop = bool(flags[1] > 0)
        return bool(flags[0] > 0)

    def _on_request(self) -> None:
        stop = self.control.take()
        if self.ctx.distributed:
            stop = stop or self._agreed_stop
        self._save()
        self.control.saved.set()
        if stop:
            raise TrialInterrupted(f"stopped in epoch {self.epoch + 1}, after step {self.step}; checkpoint in {self.ckpt_dir}")

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self, model: nn.Module, loader: DataLoader, prefix: str) -> dict[str, float]:
        model.eval()
        dev, k = self.ctx.device, min(5, self.data.num_classes)
        sums = torch.zeros(4, dtype=torch.float64, device=dev)
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with _amp_context(self.res.amp, dev):
                out = model(x)
            out = out.float()
            top = out.topk(k, dim=1).indices
            hit = top.eq(y[:, None])
            sums += torch.stack([F.cross_entropy(out, y, reduction="sum").double(),
                                 hit[:, 0].sum().double(), hit.any(dim=1).sum().double(),
                                 torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
        all_reduce_sum(sums, self.ctx)
        loss, top1, top5, n = sums.tolist()
        model.train()
        return {f"{prefix}_loss": loss / n, f"{prefix}_top1": 100.0 * top1 / n, f"{prefix}_top5": 100.0 * top5 / n}

    @torch.no_grad()
    def _analysis(self) -> dict[str, float]:
        """Gating and nonlocality on fixed val images (rank 0 only; it draws no training randomness)."""
        if not self.ctx.is_main:
            return {}
        was_training = self.raw.training
        self.raw.eval()
        try:
            with seeded(0):
                found = analysis.attention_metrics(self.raw, self.analysis_images.to(self.ctx.device))
        finally:
            self.raw.train(was_training)
        return {k: float(v) for k, v in found.items()}


def _epoch_line(row: dict[str, Any], epochs: int, rows: list[dict[str, Any]]) -> str:
    """``epoch 3/10 · train_loss 1.234 · val_top1 41.20 % · 12.3 s · ETA 1m26s`` (ETA: the mean epoch time of
    this run so far times the epochs left)."""
    done = int(row["epoch"]) + 1
    parts = [f"epoch {done}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    for key in ("val_top1", "test_top1"):
        if key in row:
            parts.append(f"{key} {row[key]:.2f} %")
    times = [r["epoch_time_s"] for r in rows if math.isfinite(r.get("epoch_time_s", math.nan))]
    parts.append(f"{row['epoch_time_s']:.1f} s")
    if times and done < epochs:
        left = int(round(sum(times) / len(times) * (epochs - done)))
        parts.append(f"ETA {left // 3600}h{left % 3600 // 60:02d}m" if left >= 3600 else
                     f"ETA {left // 60}m{left % 60:02d}s")
    return " · ".join(parts)


def _due(epoch: int, every: int, last: bool) -> bool:
    """Whether a periodic task (every N epochs; 0 = only at the end) runs after ``epoch``."""
    return last or (every > 0 and (epoch + 1) % every == 0)


PROGRESS_EVERY_S = 1.0  # progress.json is rewritten at most this often


@contextlib.contextmanager
def _progress(out_dir: Path | None, epoch: int, epochs: int, total: int, done: int):
    """Where training is inside the epoch, for whoever watches: ``progress.json`` in the trial folder (at most
    once a second; the local backend's live bars read it) and, when stdout is a terminal, a rich progress bar.
    Main rank only (``out_dir`` None elsewhere). Yields ``advance(loss)``, called after every optimizer step."""
    if out_dir is None:
        yield lambda loss: None
        return
    state = {"step": done, "loss_sum": 0.0, "n": 0, "written": 0.0}

    def publish(loss: float) -> None:
        state["step"] += 1
        state["loss_sum"] += loss
        state["n"] += 1
        now = time.monotonic()
        if now - state["written"] >= PROGRESS_EVERY_S or state["step"] >= total:
            state["written"] = now
            records.write_progress(out_dir, epoch, epochs, int(state["step"]), total,
                                   state["loss_sum"] / max(1, state["n"]))

    if not sys.stdout.isatty():
        yield publish
        return
    with Progress(TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("loss {task.fields[loss]:.4f}"), transient=True) as bar:
        task = bar.add_task("train", total=total, completed=done, loss=float("nan"))

        def advance(loss: float) -> None:
            publish(loss)
            bar.update(task, advance=1, loss=loss)
        yield advance
