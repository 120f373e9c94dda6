"""``convit-sweep``: submit sweeps, watch them, stop them, compare their runs, train one config, serve MLflow.

Exit codes (convit.exitcodes, one table for every command of the project): 0 success; 1 some trials failed or
were stopped (Ctrl-C, cancel: each checkpointed first; submitting again resumes them); 2 bad input (nothing was
submitted or logged); 3 is a single trial process interrupted after a checkpoint (convit.train).
"""
from __future__ import annotations

import argparse
import errno
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from convit.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from convit.records import is_finished
from convit.train import main as train_main
from orchestrator.backends import BACKENDS, get_backend
from orchestrator.backends.base import Backend
from orchestrator.errors import BackendUnavailable, OrchestratorError
from orchestrator.keys import leaf_name
from orchestrator.preflight import check_trials_data
from orchestrator.process_env import fail_fast_on_outages
from orchestrator.spec import SweepSpec, load_sweep
from orchestrator.spec.model import MAX_TRIALS, NAME_PATTERN
from orchestrator.status import TrialStatus
from orchestrator.trial import Trial
from orchestrator.workdir import WORKDIR_ENV, SweepContext, resolve_workdir, sweep_dir

if TYPE_CHECKING:
    from orchestrator.submit import SubmitResult

# Output going to a file or a pipe keeps whole lines (rich would wrap at 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

_EPILOG = f"""The working folder defaults to ./runs (or ${WORKDIR_ENV}): runs/mlflow.db is the embedded MLflow
store, runs/sweeps/<name>/ holds each sweep and its trials. See docs/sweeps.md for the sweep file format."""


# -------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convit-sweep", description="Run ConViT/DeiT sweeps from YAML on a local machine, Ray or SLURM, "
        "tracked in MLflow.", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="run a sweep file (only its unfinished trials)",
                       description="Validate a sweep file, expand it into trials and run those not finished yet "
                       "(submitting again resumes interrupted trials and skips finished ones).",
                       epilog="examples:\n  convit-sweep submit sweeps/quickstart.yaml\n"
                       "  convit-sweep submit sweeps/data_fraction.yaml --dry-run seeds=[0] epochs=2\n"
                       "  convit-sweep submit sweeps/gating_init.yaml grid.model_kwargs.local_up_to_layer=[0,3] "
                       "local.max_parallel=2",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="the sweep YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="trial keys set for every trial (epochs=2, model_kwargs.img_size=32), or sweep sections "
                   "(seeds=[0], grid.data_fraction=[0.1,1.0], local.max_parallel=2); values are YAML")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="local", help="where trials run (default: local)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials and what would be submitted; write nothing, log nothing")
    p.add_argument("--max-trials", type=int, default=MAX_TRIALS, metavar="N",
                   help=f"refuse a sweep of more than N trials (default {MAX_TRIALS:,}: a typo must not "
                   "exhaust the machine)")
    _common(p, tracking=True)

    p = sub.add_parser("status", help="state of each trial of a sweep",
                       description="Show each trial's state (pending, running, done, failed, interrupted), its "
                       "epoch and last metrics, read from the working folder and the backend.")
    p.add_argument("sweep", help="sweep name (or its YAML file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)

    p = sub.add_parser("cancel", help="stop a sweep's running trials (they checkpoint first)",
                       description="Stop the running trials of a sweep: each writes an exact checkpoint and exits; "
                       "submitting the sweep again resumes them.")
    p.add_argument("sweep", help="sweep name (or its YAML file)")
    _common(p)

    p = sub.add_parser("resume", help="continue an interrupted Ray sweep (Tuner.restore)",
                       description="Continue a sweep submitted with --backend ray whose driver was stopped or "
                       "killed: Tune restores its experiment; unfinished and errored trials resume from their "
                       "checkpoints. See docs/ray.md.")
    p.add_argument("sweep", help="sweep name (or its YAML file)")
    _common(p)

    p = sub.add_parser("compare", help="table and plots of a sweep's results from MLflow",
                       description="Read a sweep's runs from MLflow, print final metrics grouped by the sweep's "
                       "axes (mean ± std over seeds), write PNG plots and log them to the sweep's parent run.")
    p.add_argument("sweep", help="sweep name (or its YAML file)")
    p.add_argument("--out", type=Path, help="folder for the plots (default: runs/sweeps/<name>/compare)")
    p.add_argument("--experiment", help="MLflow experiment (default: the one the sweep was submitted to)")
    _common(p, tracking=True)

    p = sub.add_parser("train", help="train one config (the engine's CLI: convit.train)", add_help=False,
                       description="Train one trial config; all arguments go to `python -m convit.train` "
                       "(try: convit-sweep train --help).")
    p.add_argument("args", nargs=argparse.REMAINDER, help="CONFIG.yaml [key=value ...] --out DIR")

    p = sub.add_parser("server", help="serve the MLflow UI and API over the working folder's store",
                       description="Start a real `mlflow server` (sqlite backend in the working folder, artifacts "
                       "folder, 127.0.0.1, one worker), print its URI, stop it with Ctrl-C. Point sweeps at it with "
                       "--tracking-uri URI (recommended when many trials log at once).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--backend-store-uri", help="default: sqlite:///<workdir>/mlflow.db")
    p.add_argument("--workdir", type=Path, help=f"working folder (default ./runs or ${WORKDIR_ENV})")
    return parser


def _common(p: argparse.ArgumentParser, tracking: bool = False) -> None:
    p.add_argument("--workdir", type=Path, help=f"working folder (default ./runs or ${WORKDIR_ENV})")
    if tracking:
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the file's tracking.uri, then "
                       "$MLFLOW_TRACKING_URI, then sqlite:///<workdir>/mlflow.db)")


# ------------------------------------------------------------------------------------------------ commands
def cmd_submit(args: argparse.Namespace) -> int:
    from orchestrator.submit import make_context, submit_sweep, tracking_uri_for  # heavy: mlflow
    from orchestrator.tracking import check_tracking_uri, default_tracking_uri  # heavy: mlflow

    spec, trials = load_sweep(args.file, args.overrides, max_trials=args.max_trials)
    plans: dict[str, Any] = {}
    if not (args.backend == "ray" and spec.ray.address):  # a remote Ray cluster has its own filesystem
        plans = check_trials_data(trials, spec)
    workdir = resolve_workdir(args.workdir)
    uri = tracking_uri_for(spec, workdir, args.tracking_uri)
    if uri != default_tracking_uri(workdir):  # the embedded store is created where it belongs
        check_tracking_uri(uri)
    ctx = make_context(spec, workdir, args.backend, uri)
    try:
        backend = get_backend(args.backend)
    except BackendUnavailable as exc:
        if not args.dry_run:
            raise
        _print_dry_run(spec, trials, ctx, plans)  # a preview is still useful off the cluster
        err_console.print(f"[yellow]warning:[/] {exc}: a real submission would fail here", highlight=False)
        return EXIT_OK
    backend.validate(ctx, trials)
    if args.dry_run:
        _print_dry_run(spec, trials, ctx, plans)
        return EXIT_OK
    console.print(f"sweep [bold]{spec.name}[/]: {len(trials)} trial(s) on the {args.backend} backend; "
                  f"tracking {uri} (experiment '{ctx.experiment}')")
    result = submit_sweep(spec, trials, backend, ctx)
    return _report(args, ctx, backend, result)


def _report(args: argparse.Namespace, ctx: SweepContext, backend: Backend, result: "SubmitResult") -> int:
    """What submit and resume print once the backend returns, and their exit code. Trials left alone because
    another process runs them are not this submission's to count as stopped."""
    if result.skipped:
        console.print(f"{len(result.skipped)} trial(s) already finished: skipped")
    if result.caught_up:
        console.print(f"{len(result.caught_up)} of them finished while MLflow was not answering: logged now")
    for trial_id, owner in result.busy.items():
        console.print(f"{trial_id} is already running (pid {owner.get('pid', '?')} on {owner.get('host', '?')}): "
                      "left alone", highlight=False)
    if not result.submitted:
        console.print("nothing to run: every trial has finished" if not result.busy else
                      "nothing else to run: the other trials have finished or run elsewhere")
    _print_status(ctx.name, result.statuses)
    uri = ctx.tracking_uri
    ui = (f"   ·   MLflow UI: convit-sweep server{_workdir_flag(args.workdir)}" if uri.startswith("sqlite")
          else f"   ·   MLflow UI: {uri}")
    console.print(f"results: convit-sweep compare {ctx.name}{_workdir_flag(args.workdir)}{ui}", highlight=False)
    if not backend.blocking:
        return EXIT_OK
    if result.unfinished:
        failed = len(result.failed)
        stopped = len(result.unfinished) - failed
        err_console.print(f"[red]{failed} trial(s) failed[/], {stopped} stopped: see `convit-sweep status "
                          f"{ctx.name}`; submitting again reruns or resumes them")
        return EXIT_FAILED
    return EXIT_OK


def _workdir_flag(workdir: Path | None) -> str:
    return f" --workdir {workdir}" if workdir else ""


def _print_dry_run(spec: SweepSpec, trials: list[Trial], ctx: SweepContext, plans: dict[str, Any]) -> None:
    axes = spec.axis_keys()
    table = Table(title=f"sweep {spec.name}: {len(trials)} trial(s)")
    table.add_column("#", justify="right")
    table.add_column("trial id")
    leaves = [leaf_name(k) for k in axes]
    for key, leaf in zip(axes, leaves):
        table.add_column(leaf if leaves.count(leaf) == 1 else key)
    done = {t.id for t in trials if is_finished(ctx.trial_dir(t.id))}
    budget_columns = ("train images", "epochs", "steps", "images seen", "warm-up steps")
    for name in budget_columns if plans else ():
        table.add_column(name, justify="right")
    table.add_column("state")
    for i, trial in enumerate(trials):
        budget = _budget_cells(plans.get(trial.id)) if plans else []
        table.add_row(str(i), trial.id, *(_fmt(trial.axes.get(k)) for k in axes), *budget,
                      "finished" if trial.id in done else "to run")
    console.print(table)
    options = ", ".join(f"{k}={v}" for k, v in ctx.options.model_dump().items())
    console.print(f"would submit {len(trials) - len(done)} trial(s) ({len(done)} already finished) to the "
                  f"[bold]{ctx.backend}[/] backend ({options})")
    console.print(f"working folder: {ctx.sweep_dir}\ntracking: {ctx.tracking_uri} (experiment '{ctx.experiment}')")
    console.print("dry run: nothing was written or logged")


def _budget_cells(plan: Any) -> list[str]:
    """Train images, epochs, optimizer steps, images seen, warm-up steps of one trial's plan."""
    if plan is None:
        return [""] * 5
    epochs = plan.epochs_exact
    return [str(plan.train_size), f"{epochs:.0f}" if epochs == int(epochs) else f"{epochs:.1f}",
            str(plan.total_steps), f"{plan.images:,}", str(plan.warmup_steps)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _sweep_name(arg: str) -> str:
    """A sweep is named by its name, or by its YAML file (whose name: is read without validating the rest)."""
    path = Path(arg)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise OrchestratorError(f"{path}: invalid YAML: {exc}") from exc
        name = str(data.get("name") or path.stem) if isinstance(data, dict) else path.stem
    else:
        name = arg
    if not re.fullmatch(NAME_PATTERN, name):  # the pattern submit enforces: no path can escape the working folder
        raise OrchestratorError(f"'{name[:100]}' is not a sweep name (letters, digits, '_', '.', '-', starting with "
                                "a letter or digit); give a sweep's name or its YAML file")
    return name


def _load_context(args: argparse.Namespace) -> SweepContext:
    return SweepContext.load(resolve_workdir(args.workdir), _sweep_name(args.sweep))


def _backend_for(ctx: SweepContext, **kwargs: Any) -> Backend:
    try:
        return get_backend(ctx.backend, **kwargs)
    except BackendUnavailable as exc:
        reason = str(exc)
        err_console.print(f"[yellow]{escape(reason)}; showing what the working folder knows[/]")

        class _FolderOnly(Backend):
            def submit(self, sweep: SweepContext, trials: list[Trial]) -> None:
                raise OrchestratorError(reason)

            def cancel(self, sweep: SweepContext) -> None:
                raise OrchestratorError(reason)

        return _FolderOnly()


def cmd_status(args: argparse.Namespace) -> int:
    ctx = _load_context(args)
    statuses = _backend_for(ctx).status(ctx)
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2, default=str))
    else:
        _print_status(ctx.name, statuses)
    return EXIT_OK


def _print_status(name: str, statuses: list[TrialStatus]) -> None:
    table = Table(title=f"sweep {name}")
    for col in ("trial id", "name", "state", "epochs", "val top-1", "detail"):
        table.add_column(col)
    colors = {"done": "green", "failed": "red", "running": "cyan", "interrupted": "yellow", "pending": "dim"}
    for s in statuses:
        done = None if s.epoch is None else int(s.epoch) + 1  # epochs are numbered from 0
        epoch = "" if done is None else f"{done}/{s.epochs}" if s.epochs else str(done)
        top1 = next((s.metrics[k] for k in ("val/top1", "val_top1", "top1") if k in s.metrics), None)
        table.add_row(s.trial_id, escape(s.name), f"[{colors.get(s.state, 'white')}]{s.state}[/]", epoch,
                      "" if top1 is None else f"{top1:.2f}", escape((s.detail.splitlines() or [""])[0][:80]))
    console.print(table)
    for s in statuses:  # the table cuts details short; a failure's whole reason (and stderr tail) is below it
        if s.state == "failed" and (len(s.detail) > 80 or "\n" in s.detail):
            console.print(f"[red]{s.trial_id} ({escape(s.name)}) failed:[/]\n{escape(s.detail)}", highlight=False)
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    console.print(" · ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials")


def cmd_cancel(args: argparse.Namespace) -> int:
    ctx = _load_context(args)
    backend = _backend_for(ctx)
    running = [s for s in backend.status(ctx) if s.state == "running"]
    backend.cancel(ctx)
    console.print(f"cancelled sweep {ctx.name}: {len(running)} running trial(s) stopped; "
                  f"`convit-sweep submit` of the same file resumes them")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.compare import compare  # heavy: mlflow, matplotlib
    from orchestrator.tracking import check_tracking_uri  # heavy: mlflow

    workdir = resolve_workdir(args.workdir)
    name = _sweep_name(args.sweep)
    try:
        ctx = SweepContext.load(workdir, name)
        uri, experiment = ctx.tracking_uri, ctx.experiment
    except OrchestratorError:
        if not args.tracking_uri:
            raise
        uri, experiment = args.tracking_uri, name
    out = args.out or sweep_dir(workdir, name) / "compare"
    check_tracking_uri(args.tracking_uri or uri)
    compare(name, tracking_uri=args.tracking_uri or uri, experiment=args.experiment or experiment, out_dir=out,
            console=console)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    return int(train_main(list(args.args)) or 0)


def cmd_server(args: argparse.Namespace) -> int:
    from orchestrator.server import serve_forever  # heavy: mlflow

    return serve_forever(resolve_workdir(args.workdir), host=args.host, port=args.port,
                         backend_store_uri=args.backend_store_uri, console=console)


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a sweep from its backend's own saved state (Ray: Tune's experiment), through the same lifecycle
    as submit (orchestrator.submit.resume_sweep)."""
    from orchestrator.submit import resume_sweep  # heavy: mlflow

    ctx = _load_context(args)
    backend = get_backend(ctx.backend, console=console)
    return _report(args, ctx, backend, resume_sweep(ctx, backend))


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "cancel": cmd_cancel, "compare": cmd_compare,
            "train": cmd_train, "server": cmd_server, "resume": cmd_resume}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fail_fast_on_outages()  # a tracking server that is down fails a call in seconds, not minutes
    if argv[:1] == ["train"]:  # everything after 'train' belongs to the engine's parser, --help included
        return cmd_train(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "submit" and extra and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]  # key=value given after options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except OrchestratorError as exc:
        err_console.print("[red]error:[/]", escape(str(exc)), highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err_console.print("interrupted; submitting the sweep again resumes it")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - only a full disk is turned into a message; the rest propagates
        if not _disk_full(exc):
            raise
        err_console.print("[red]error:[/] no space left on device", escape(_reason(exc)),
                          "- free space there, then submit again (finished work is kept)", highlight=False)
        return EXIT_FAILED


def _disk_full(exc: BaseException | None) -> bool:
    """A full disk anywhere in the exception chain (an OSError, or sqlite's "database or disk is full")."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(exc) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return "(" + " ".join(text.split())[:300] + ")"


if __name__ == "__main__":
    sys.exit(main())
