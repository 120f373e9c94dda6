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
from typing import Sequence

from .config import ConfigError, TrialConfig, load_config
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m convit.train", description="Train one ConViT/DeiT trial (resumable).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG", help="YAML file or preset name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (resumed if present)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def _validate(args: argparse.Namespace) -> TrialConfig:
    """Everything that can be refused before DIR is touched: config, data, an existing different trial."""
    from .data import check_data  # heavy: torch (`--help` and bad input are answered without it)

    cfg = load_config(args.config, args.overrides)
    plan = check_data(cfg)
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
    def handler(signum, frame):  # noqa: ARG001 - signal API
        control.request_checkpoint(stop=True)

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread: the caller owns signal handling
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point shared by ``python -m convit.train`` and ``convit-sweep train``; returns the exit code."""
    from .data import DataError  # heavy: torch, see _validate
    from .engine import (ConfigMismatch, TrialBusy, TrialControl, TrialFailed,  # heavy: torch
                         TrialInterrupted, run_trial)

    try:
        args = _parser().parse_intermixed_args(argv)
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    control = TrialControl()
    _install_signal_handlers(control)
    try:
        final = run_trial(cfg, args.out, control=control)
    except TrialFailed as err:
        print(f"trial failed: {err.reason}", file=sys.stderr)
        return EXIT_FAILED
    except TrialInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (TrialBusy, ConfigMismatch, CheckpointsUnusable) as err:  # found once the trial looked at DIR
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
    print(json.dumps(final, indent=2, sort_keys=True))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
