"""Command line for one training run: ``python -m convit.train CONFIG [key=value ...] --out DIR``.

Running it again with the same DIR resumes from the latest good checkpoint.  SIGTERM and SIGUSR2 (what
local runners and SLURM send before killing a job) save an exact checkpoint and exit with code 3.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import ConfigError, TrialConfig, load_config
from .data import DataError, check_data, check_init_checkpoint
from .presets import PRESETS
from .exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .records import (CHECKPOINTS_DIR, CONFIG_FILE, FINAL_FILE, METRICS_FILE, CheckpointsUnusable, DiskFull,
                      TrialBusy, check_same_trial, trial_owner)

_EPILOG = f"""\
CONFIG is a YAML file of TrialConfig keys (it may start from a preset with 'preset: NAME') or a preset
name: {', '.join(sorted(PRESETS))}.  Overrides use dotted keys for nested values and YAML for values:
  python -m convit.train cifar data_fraction=0.1 model_kwargs.locality_strength=0.1 --out runs/x
  python -m convit.train smoke --out /tmp/smoke
The data folder comes from data_root=... or the CONVIT_DATA_ROOT environment variable.
DIR receives {CONFIG_FILE}, {METRICS_FILE}, {CHECKPOINTS_DIR}/ and {FINAL_FILE}; running again on DIR resumes.
Exit codes: 0 done, 1 trial failed (e.g. non-finite loss), 2 bad input (nothing written),
3 stopped by SIGTERM/SIGUSR2 after saving a checkpoint (run again to resume).
See docs/training.md for every key."""


def _parser(prog: str = "python -m convit.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Train one ConViT/DeiT trial (resumable).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG", help="YAML file or preset name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (resumed if present)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def _validate(args: argparse.Namespace) -> TrialConfig:
    """Everything that can be refused before DIR is touched: config, data, an existing different trial."""
    cfg = load_config(args.config, args.overrides)
    plan = check_data(cfg)
    if not (args.out / CHECKPOINTS_DIR).is_dir():  # a fresh start (a resumed run has its own weights)
        check_init_checkpoint(cfg)
    check_same_trial(args.out, cfg.config_hash())
    owner = trial_owner(args.out)
    if owner is not None:
        raise TrialBusy(args.out, owner)
    print(f"budget: {plan.total_steps} optimizer steps of {cfg.batch_size} images ({plan.images:,} images seen) = "
          f"{plan.epochs_exact:.4g} epochs of the {plan.train_size}-image training subset; warm-up "
          f"{plan.warmup_steps} steps", file=sys.stderr)
    return cfg


def _out_problem(out: str) -> str | None:
    """What is wrong with --out DIR, before anything is written: empty, not a folder, or not writable."""
    if not out.strip():
        return "--out is empty; give the folder to train into (it is created, or resumed if it exists)"
    path = Path(out)
    if path.exists() and not path.is_dir():
        return f"--out {out} exists and is not a directory"
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        return f"--out {out}: cannot create or write in {existing or path} (permission denied); choose another folder"
    return None


def _install_signal_handlers(control) -> None:
    """SIGTERM, SIGUSR2 and the first Ctrl-C (SIGINT): an exact checkpoint at the next optimizer step, then
    stop (exit 3). A second Ctrl-C stops at once; the run resumes from the last checkpoint written."""
    def handler(signum, frame):  # noqa: ARG001 - signal API
        if signum == signal.SIGINT and control.stop_requested:
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            print("\nCtrl-C: saving a checkpoint at the next optimizer step, then stopping (Ctrl-C again to stop "
                  "now)", file=sys.stderr, flush=True)
        control.request_checkpoint(stop=True)

    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread: the caller owns signal handling
            return


def main(argv: Sequence[str] | None = None, prog: str = "python -m convit.train",
         reporter: Callable[[TrialConfig, Path], Any] | None = None) -> int:
    """Entry point shared by ``python -m convit.train`` and ``convit-sweep train``; returns the exit code.

    ``reporter(config, out_dir)``, when given, makes the engine's Reporter for the run (``convit-sweep train``
    logs to MLflow through it; the engine itself knows nothing of MLflow) and may return an object with
    ``end(status)`` and ``finish(final)`` to close the tracking run."""
    from .engine import (ConfigMismatch, TrialBusy, TrialControl, TrialFailed,  # heavy: torch
                         TrialInterrupted, run_trial)

    try:
        args = _parser(prog).parse_intermixed_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return int(exc.code or 0)
    problem = _out_problem(args.out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    args.out = Path(args.out)
    try:
        cfg = _validate(args)
    except (ConfigError, DataError, ConfigMismatch, TrialBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        print(json.dumps({"config": cfg.to_dict(), "config_hash": cfg.config_hash(),
                          "resolved": cfg.resolve().to_dict()}, indent=2))
        return EXIT_OK
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("convit").setLevel(logging.INFO)  # the epoch lines (with the ETA) and the resume position
    control = TrialControl()
    _install_signal_handlers(control)
    tracking = reporter(cfg, args.out) if reporter is not None else None
    try:
        final = run_trial(cfg, args.out, reporter=tracking, control=control)
    except TrialFailed as err:
        _end(tracking, "FAILED")
        print(f"trial failed: {err.reason}", file=sys.stderr)
        return EXIT_FAILED
    except (TrialInterrupted, KeyboardInterrupt) as err:
        _end(tracking, "KILLED")
        how = "stopped before a checkpoint" if isinstance(err, KeyboardInterrupt) else f"interrupted: {err}"
        print(f"{how}; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (TrialBusy, ConfigMismatch, CheckpointsUnusable, DataError) as err:  # found once the trial looked at DIR
        _end(tracking, "FAILED")
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = err.strerror if isinstance(err, DiskFull) else \
            f"no space left on device under {args.out} ({err.filename or err.strerror}); free space there, then " \
            "run again to resume"
        print(f"error: {where}", file=sys.stderr)
        return EXIT_FAILED
    if tracking is not None and hasattr(tracking, "finish"):
        tracking.finish(final)
    print(summary_line(final, args.out))
    return EXIT_OK


def summary_line(final: dict[str, float], out: Path) -> str:
    """The result in one line (every number is in final.json)."""
    shown = [f"{k} {final[k]:.2f} %" for k in ("test_top1", "val_top1", "best_val_top1") if k in final]
    if "train_loss" in final:
        shown.append(f"train_loss {final['train_loss']:.4f}")
    return f"done: {' · '.join(shown)} ({int(final.get('optimizer_steps', 0))} optimizer steps); all metrics in " \
           f"{out / FINAL_FILE}"


def _end(tracking: Any, status: str) -> None:
    if tracking is not None and hasattr(tracking, "end"):
        tracking.end(status)


if __name__ == "__main__":
    sys.exit(main())
