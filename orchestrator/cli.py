"""``convit-sweep``: submit sweeps, watch them, stop them, compare their runs, train one config, serve MLflow.

Exit codes (convit.exitcodes, one table for every command of the project): 0 success; 1 some trials failed or
were stopped (Ctrl-C, cancel: each checkpointed first; submitting again resumes them); 2 bad input (nothing was
submitted or logged); 3 is a single trial process interrupted after a checkpoint (convit.train); 141 the reader
of the output went away (`| head`).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from convit.exitcodes import EXIT_CLOSED_PIPE, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from orchestrator.backends import BACKENDS, get_backend
from orchestrator.backends.base import Backend
from orchestrator import data_door
from orchestrator.completion import script as completion_script
from orchestrator.errors import BackendUnavailable, OrchestratorError, SpecError, SpecIssue
from orchestrator.keys import leaf_name
from orchestrator.mlflow_views import where_to_look
from orchestrator.listing import STATES, ago, folder_state, sweep_rows
from orchestrator.preflight import check_trials_data
from orchestrator.process_env import fail_fast_on_outages, tracking_retry_s
from orchestrator.spec import SweepSpec, load_sweep
from orchestrator.spec.marks import COMMAND_LINE
from orchestrator.spec.model import MAX_TRIALS, NAME_PATTERN, SECTIONS
from orchestrator.status import TrialStatus
from orchestrator.trial import Trial
from orchestrator.tracking_uri import check_uri_without_mlflow, default_tracking_uri, sweep_tracking_uri
from orchestrator.workdir import WORKDIR_ENV, SweepContext, read_trials, resolve_workdir, sweep_context, sweep_dir

if TYPE_CHECKING:
    from orchestrator.submit import SubmitResult


class _Console(Console):
    """rich's console, whose closed pipe reaches main() (exit 141, quietly) instead of rich's SystemExit(1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


# Output going to a file or a pipe keeps whole lines (rich would wrap at 80 columns there).
console = _Console(width=None if sys.stdout.isatty() else 160)
err_console = _Console(stderr=True, width=None if sys.stderr.isatty() else 160)
#: The trial states (orchestrator.status.TrialStateName), one colour each, in every table.
STATE_COLORS = {"done": "green", "failed": "red", "running": "cyan", "interrupted": "yellow", "pending": "dim"}

_EPILOG = f"""The working folder defaults to ./runs (or ${WORKDIR_ENV}): runs/mlflow.db is the embedded MLflow
store, runs/sweeps/<name>/ holds each sweep and its trials. See docs/sweeps.md for the sweep file format."""


# -------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convit-sweep", description="Run ConViT/DeiT sweeps from YAML on a local machine, Ray or SLURM, "
        "tracked in MLflow.", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the version (and of torch, timm, mlflow, ray) "
                        "and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="run a sweep file (only its unfinished trials)",
                       description="Validate a sweep file, expand it into trials and run those not finished yet "
                       "(submitting again resumes interrupted trials and skips finished ones).",
                       epilog="examples:\n  convit-sweep submit sweeps/quickstart.yaml\n"
                       "  convit-sweep submit sweeps/data_fraction.yaml --dry-run seeds=[0] epochs=2\n"
                       "  convit-sweep submit sweeps/gating_init.yaml grid.model_kwargs.local_up_to_layer=[0,3] "
                       "local.max_parallel=2\n"
                       "  convit-sweep submit sweeps/quickstart.yaml --show-config 1   # trial #1's config as YAML",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="the sweep YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="trial keys set for every trial (epochs=2, model_kwargs.img_size=32), or sweep sections "
                   "(seeds=[0], grid.data_fraction=[0.1,1.0], local.max_parallel=2); values are YAML")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="local", help="where trials run (default: local)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials and what would be submitted; write nothing, log nothing")
    p.add_argument("--show-config", metavar="TRIAL",
                   help="print one trial's fully resolved config as YAML (TRIAL: its index in the --dry-run "
                   "listing, its id or its name) and exit; nothing is checked against the data, written or logged")
    p.add_argument("--max-trials", type=int, default=MAX_TRIALS, metavar="N",
                   help=f"refuse a sweep of more than N trials (default {MAX_TRIALS:,}: a typo must not "
                   "exhaust the machine)")
    _common(p, tracking=True)

    p = sub.add_parser("status", help="state of each trial of a sweep",
                       description="Show each trial's state (pending, running, done, failed, interrupted), its "
                       "swept values, epoch and last metrics, read from the working folder and the backend.")
    p.add_argument("sweep", help="sweep name (or its YAML file)")
    p.add_argument("--json", action="store_true", help="machine-readable output (the table's rows)")
    _common(p)

    p = sub.add_parser("list", help="the sweeps of the working folder, with their trials' states",
                       description="One row per sweep of the working folder: backend, how many trials are done, "
                       "running, failed, interrupted or pending, and the last activity (the newest file of the "
                       "sweep). Read from the folders alone, in a fraction of a second; `status SWEEP` adds what "
                       "the backend knows.")
    p.add_argument("--json", action="store_true", help="machine-readable output (the table's rows)")
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

    p = sub.add_parser("train", help="train one config, logged to MLflow (experiment 'train')", add_help=False,
                       description="Train one trial config (the engine's arguments; try: convit-sweep train "
                       "--help), logged to the experiment 'train' of the working folder's MLflow store.")
    p.add_argument("args", nargs=argparse.REMAINDER, help="CONFIG.yaml [key=value ...] --out DIR")

    p = sub.add_parser("server", help="serve the MLflow UI and API over the working folder's store",
                       description="Start a real `mlflow server` (sqlite backend in the working folder, artifacts "
                       "folder, 127.0.0.1, one worker), print its URI, stop it with Ctrl-C. Point sweeps at it with "
                       "--tracking-uri URI (recommended when many trials log at once).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=5000, help="port, 1-65535 (default 5000)")
    p.add_argument("--backend-store-uri", help="default: sqlite:///<workdir>/mlflow.db")
    p.add_argument("--workdir", type=Path, help=f"working folder (default ./runs or ${WORKDIR_ENV})")

    data_door.add_parser(sub)

    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Print a completion script for COMMAND names, options, sweep files and the "
                       "sweep names of the working folder.",
                       epilog='install:\n  bash: eval "$(convit-sweep completion bash)"   # in ~/.bashrc\n'
                       '  zsh:  eval "$(convit-sweep completion zsh)"    # in ~/.zshrc, after compinit',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    return parser


class _Version(argparse.Action):
    """``--version``: this package's version and its main dependencies', read from the installed metadata
    (importing torch or mlflow to ask them would take seconds)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:  # noqa: A002
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    def of(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    deps = [f"{name} {v}" for name in ("torch", "torchvision", "timm", "mlflow", "ray", "submitit")
            if (v := of(name))]
    return (f"convit-sweep {of('convit-sweep') or 'unknown (not installed)'} ({', '.join(deps)}; "
            f"Python {sys.version.split()[0]})")


def _common(p: argparse.ArgumentParser, tracking: bool = False) -> None:
    p.add_argument("--workdir", type=Path, help=f"working folder (default ./runs or ${WORKDIR_ENV})")
    if tracking:
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the file's tracking.uri, then "
                       "$MLFLOW_TRACKING_URI, then sqlite:///<workdir>/mlflow.db)")


# ------------------------------------------------------------------------------------------------ commands
def cmd_submit(args: argparse.Namespace) -> int:
    """A dry run and --show-config never import mlflow (orchestrator.tracking_uri decides where a sweep logs)."""
    with _hydra_hints(args.overrides):
        spec, trials = load_sweep(args.file, args.overrides, max_trials=args.max_trials)
        if args.show_config is not None:
            return _show_config(spec, trials, args.show_config)
        plans: dict[str, Any] = {}
        if not (args.backend == "ray" and spec.ray.address):  # a remote Ray cluster has its own filesystem
            plans = check_trials_data(trials, spec)
    workdir = resolve_workdir(args.workdir)
    uri = sweep_tracking_uri(workdir, spec.name, args.tracking_uri, spec.tracking.uri)
    if uri != default_tracking_uri(workdir) and not check_uri_without_mlflow(uri):  # other schemes: MLflow judges
        from orchestrator.tracking import check_tracking_uri  # heavy: mlflow, for schemes other than http/sqlite

        check_tracking_uri(uri)
    ctx = sweep_context(spec, workdir, args.backend, uri)  # light: a dry run never imports mlflow
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
    backend.prepare(ctx)  # e.g. the local backend's warm starter imports torch while the sweep is recorded
    try:
        from orchestrator.submit import submit_sweep  # heavy: mlflow

        console.print(f"sweep [bold]{spec.name}[/]: {len(trials)} trial(s) on the {args.backend} backend; "
                      f"tracking {uri} (experiment '{ctx.experiment}')")
        result = submit_sweep(spec, trials, backend, ctx)
    finally:
        backend.release()
    return _report(args, ctx, backend, result)


def hydra_hint(text: str) -> str | None:
    """The fix for a Hydra-style multirun override (``lr=1e-3,1e-4``), None for anything else: here a list of
    values to sweep is an axis, ``grid.lr=[1e-3,1e-4]``."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or "," not in raw or raw[:1] in "[{'\"":
        return None
    parts = [part.strip() for part in raw.split(",")]
    if not all(parts):
        return None
    values = f"[{','.join(parts)}]"
    head = key.partition(".")[0]
    if head in ("grid", "random", "zip") or key == "seeds":
        return f"{text} is Hydra's multirun syntax; here a list is written in brackets: {key}={values}"
    if head in SECTIONS and head != "base":
        return (f"{text}: {key} takes one value (a comma list is Hydra's multirun syntax); give one, e.g. "
                f"{key}={parts[0]}")
    name = key.removeprefix("base.")
    return (f"{text} is Hydra's multirun syntax; to sweep {name}, make it an axis: grid.{name}={values} "
            "(quote it in zsh)")


@contextlib.contextmanager
def _hydra_hints(overrides: Sequence[str]) -> Iterator[None]:
    """Around loading a sweep: a problem caused by a Hydra-style override (``lr=1e-3,1e-4``, which reads as the
    string '1e-3,1e-4') is reported as its fix (``grid.lr=[1e-3,1e-4]``), one line when it is the only problem.
    Only overrides the sweep rejects get the hint: a comma in a value that is valid (a path) is left alone."""
    hints: dict[str, str] = {}
    for text in overrides:
        hint = hydra_hint(text)
        if hint:
            key = text.partition("=")[0].strip().removeprefix("base.")
            hints[key] = hints[f"base.{key}"] = hint
    try:
        yield
    except SpecError as exc:
        issues = [SpecIssue(i.file, i.line, i.key, hints[i.key]) if i.file == COMMAND_LINE and i.key in hints
                  else i for i in exc.issues]
        hinted = [i for i in issues if i.file == COMMAND_LINE and i.key in hints]
        if not hinted:
            raise
        if len(issues) == len(hinted):
            raise OrchestratorError("; ".join(dict.fromkeys(i.message for i in hinted))) from None
        raise SpecError(issues) from None


def pick_trial(trials: list[Trial], which: str, sweep: str) -> tuple[int, Trial]:
    """A trial by its index in the --dry-run listing, its id (or a unique prefix of it) or its name."""
    which = which.strip()
    for i, trial in enumerate(trials):
        if which in (trial.id, trial.name):
            return i, trial
    if which.isdigit() and int(which) < len(trials):
        return int(which), trials[int(which)]
    matches = [(i, t) for i, t in enumerate(trials) if len(which) >= 4 and t.id.startswith(which)]
    if len(matches) == 1:
        return matches[0]
    first = trials[0]
    raise OrchestratorError(f"no trial '{which[:100]}' in sweep {sweep} ({len(trials)} trial(s)); give its index "
                            f"0-{len(trials) - 1}, its id (e.g. {first.id}) or its name (e.g. {first.name}): "
                            "--dry-run lists them")


def _show_config(spec: SweepSpec, trials: list[Trial], which: str) -> int:
    """The trial's whole config as YAML (a file `convit-sweep train` accepts), derived values as comments."""
    index, trial = pick_trial(trials, which, spec.name)
    config = trial.config
    derived = ", ".join(f"{k}={_fmt(v)}" for k, v in config.resolve().to_dict().items())
    axes = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.axes.items()) or "none"
    print(f"# sweep {spec.name}, trial #{index} of {len(trials)}: {trial.id} ({trial.name})\n"
          f"# swept values: {axes}\n# derived on 1 process: {derived}\n# config hash: {config.config_hash()}")
    print(yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None, width=120), end="")
    return EXIT_OK


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
    _print_status(ctx.name, result.statuses, ctx.axes, _axis_values(ctx))
    console.print(f"results: convit-sweep compare {ctx.name}{_workdir_flag(args.workdir)}", highlight=False)
    _print_links(ctx.tracking_uri, ctx.experiment, ctx.parent_run_id, ctx.name, args.workdir)
    if not backend.blocking:
        return EXIT_OK
    if result.unfinished:
        failed = len(result.failed)
        stopped = len(result.unfinished) - failed
        err_console.print(f"[red]{failed} trial(s) failed[/], {stopped} interrupted: see `convit-sweep status "
                          f"{ctx.name}`; submitting again reruns or resumes them")
        return EXIT_FAILED
    return EXIT_OK


def _print_links(uri: str, experiment: str, parent_run_id: str | None, sweep: str, workdir: Path | None) -> None:
    """Where the sweep is in MLflow's UI (orchestrator.mlflow_views.where_to_look); silent if tracking is down."""
    from orchestrator.tracking import Tracker  # heavy: mlflow (loaded already by whoever calls this)

    try:
        experiment_id = Tracker(uri).experiment_id(experiment, create=False)
    except Exception:  # noqa: BLE001 - links are a courtesy; the results are on disk
        return
    for line in where_to_look(uri, experiment_id, parent_run_id, sweep,
                              f"convit-sweep server{_workdir_flag(workdir)}"):
        console.print(line, highlight=False, soft_wrap=True)


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
    states = {t.id: folder_state(ctx.trial_dir(t.id))[0] for t in trials}  # the vocabulary of `status`
    done = {t.id for t in trials if states[t.id] == "done"}
    budget_columns = ("train images", "epochs", "steps", "images seen", "warm-up steps")
    for name in budget_columns if plans else ():
        table.add_column(name, justify="right")
    table.add_column("state")
    table.add_column("submit would")
    actions = {"done": "skip", "running": "leave alone"}  # pending, interrupted (resumed), failed (rerun): run
    for i, trial in enumerate(trials):
        budget = _budget_cells(plans.get(trial.id)) if plans else []
        state = states[trial.id]
        table.add_row(str(i), trial.id, *(_fmt(trial.axes.get(k)) for k in axes), *budget,
                      f"[{STATE_COLORS[state]}]{state}[/]", actions.get(state, "to run"))
    console.print(table)
    options = ", ".join(f"{k}={v}" for k, v in ctx.options.model_dump().items())
    running = sum(1 for state in states.values() if state == "running")
    busy = f", {running} running: left alone" if running else ""
    console.print(f"would submit {len(trials) - len(done) - running} trial(s) ({len(done)} already finished{busy}) "
                  f"to the [bold]{ctx.backend}[/] backend ({options})")
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
    axes = _axis_values(ctx)
    if args.json:
        print(json.dumps([_status_row(s, ctx.axes, axes.get(s.trial_id, {})) for s in statuses], indent=2,
                         default=str))
    else:
        _print_status(ctx.name, statuses, ctx.axes, axes)
    return EXIT_OK


def _axis_values(ctx: SweepContext) -> dict[str, dict[str, Any]]:
    """Trial id -> its swept values, from trials.json."""
    return {t.id: t.axes for t in read_trials(ctx)}


def _status_row(s: TrialStatus, axis_keys: list[str], axes: dict[str, Any]) -> dict[str, Any]:
    """One trial as `status --json` gives it: the table's columns (axes, state, epochs done of planned, val top-1,
    detail) by name, then the rest of what the backend reported."""
    row = {"trial_id": s.trial_id, "name": s.name, "axes": {k: axes.get(k) for k in axis_keys}, "state": s.state,
           "epochs_done": _epochs_done(s), "epochs": s.epochs, "val_top1": _val_top1(s), "detail": s.detail,
           "epoch": s.epoch, "metrics": s.metrics, "ref": s.ref}
    return {**row, **{k: v for k, v in vars(s).items() if k not in row}}  # a backend's extras: `slurm`, `ray`


def _epochs_done(s: TrialStatus) -> int | None:
    return None if s.epoch is None else int(s.epoch) + 1  # metrics.jsonl numbers epochs from 0


def _val_top1(s: TrialStatus) -> float | None:
    return next((s.metrics[k] for k in ("val/top1", "val_top1", "top1") if k in s.metrics), None)


def _axis_columns(table: Table, axis_keys: list[str]) -> None:
    """A column per swept axis, named by its last part unless two axes share it (as the dry run names them)."""
    leaves = [leaf_name(k) for k in axis_keys]
    for key, leaf in zip(axis_keys, leaves):
        table.add_column(escape(leaf if leaves.count(leaf) == 1 else key))


def _print_status(name: str, statuses: list[TrialStatus], axis_keys: Sequence[str] = (),
                  axes: dict[str, dict[str, Any]] | None = None) -> None:
    table = Table(title=f"sweep {name}")
    table.add_column("trial id")
    axis_keys, axes = list(axis_keys), axes or {}
    if axis_keys:
        _axis_columns(table, axis_keys)
    else:
        table.add_column("name")
    for col in ("state", "epochs", "val top-1", "detail"):
        table.add_column(col)
    for s in statuses:
        done = _epochs_done(s)
        epoch = "" if done is None else f"{done}/{s.epochs}" if s.epochs else str(done)
        top1 = _val_top1(s)
        values = axes.get(s.trial_id, {})
        who = [escape(_fmt(values.get(k))) for k in axis_keys] if axis_keys else [escape(s.name)]
        table.add_row(s.trial_id, *who, f"[{STATE_COLORS.get(s.state, 'white')}]{s.state}[/]", epoch,
                      "" if top1 is None else f"{top1:.2f}", escape((s.detail.splitlines() or [""])[0][:80]))
    console.print(table)
    for s in statuses:  # the table cuts details short; a failure's whole reason (and stderr tail) is below it
        if s.state == "failed" and (len(s.detail) > 80 or "\n" in s.detail):
            console.print(f"[red]{s.trial_id} ({escape(s.name)}) failed:[/]\n{escape(s.detail)}", highlight=False)
    console.print(_counts(statuses))


def _counts(statuses: list[TrialStatus]) -> str:
    """'2 done · 1 failed': how many trials are in each state, in the order of STATES."""
    counts = {state: sum(1 for s in statuses if s.state == state) for state in STATES}
    return " · ".join(f"{n} {state}" for state, n in counts.items() if n) or "no trials"


def cmd_cancel(args: argparse.Namespace) -> int:
    """The backend's cancel runs whatever the trials' states (it also stops a scheduler between trials, or tasks
    still queued); the message says what there was to stop."""
    ctx = _load_context(args)
    backend = _backend_for(ctx)
    statuses = backend.status(ctx)
    running = [s for s in statuses if s.state == "running"]
    queued = [s for s in statuses if s.state == "pending" and ("queued" in s.detail or "waiting" in s.detail)]
    backend.cancel(ctx)
    if not running and not queued:
        console.print(f"nothing to stop: no trial of sweep {ctx.name} is running or queued ({_counts(statuses)})")
        return EXIT_OK
    left = f", {len(queued)} queued trial(s) will not start" if queued else ""
    console.print(f"cancelled sweep {ctx.name}: {len(running)} running trial(s) stopped{left}; "
                  f"`convit-sweep submit` of the same file resumes them")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    workdir = resolve_workdir(args.workdir)
    rows = sweep_rows(workdir)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return EXIT_OK
    if not rows:
        console.print(f"no sweep in {workdir}: `convit-sweep submit FILE` runs one (or pass --workdir)",
                      highlight=False)
        return EXIT_OK
    table = Table(title=f"sweeps in {escape(str(workdir))}")
    for col in ("sweep", "backend", "trials", *STATES, "last activity"):
        table.add_column(col, justify="right" if col in STATES or col == "trials" else "left")
    for r in rows:
        counts = [f"[{STATE_COLORS[state]}]{r.counts[state]}[/]" if r.counts[state] else "0" for state in STATES]
        table.add_row(escape(r.name), r.backend, str(r.trials), *counts, ago(r.last_activity) or escape(r.problem))
    console.print(table)
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    print(completion_script(args.shell, build_parser()), end="")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.compare import compare  # heavy: mlflow, matplotlib
    from orchestrator.tracking import check_tracking_uri  # heavy: mlflow

    workdir = resolve_workdir(args.workdir)
    name = _sweep_name(args.sweep)
    trial_ids: list[str] | None = None
    try:
        ctx = SweepContext.load(workdir, name)
        uri, experiment = ctx.tracking_uri, ctx.experiment
        trial_ids = [t.id for t in read_trials(ctx)]  # the sweep as it is now, not its earlier versions
    except OrchestratorError:
        if not args.tracking_uri:
            raise
        uri, experiment = args.tracking_uri, name
    out = args.out or sweep_dir(workdir, name) / "compare"
    check_tracking_uri(args.tracking_uri or uri)
    result = compare(name, tracking_uri=args.tracking_uri or uri, experiment=args.experiment or experiment,
                     out_dir=out, console=console, trial_ids=trial_ids)
    _print_links(args.tracking_uri or uri, args.experiment or experiment, result.parent_run_id, name, args.workdir)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from orchestrator.train_door import train  # heavy: mlflow (the engine's torch comes later)

    return int(train(list(args.args)) or 0)


def _port(text: str) -> int:
    """argparse type of --port: an integer 1-65535 (a bigger one reached uvicorn and ended in a traceback)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: give 1-65535 (e.g. --port 5000)")
    return port


def cmd_server(args: argparse.Namespace) -> int:
    from orchestrator.server import serve_forever  # heavy: mlflow

    workdir = resolve_workdir(args.workdir)
    if args.backend_store_uri is None and not workdir.is_dir() and not workdir.parent.is_dir():  # a mistyped path
        raise OrchestratorError(f"no working folder at {workdir}, nor its parent folder: nothing to serve; pass "
                                "--workdir of an existing working folder (or of a new one inside an existing folder)")
    return serve_forever(workdir, host=args.host, port=args.port, backend_store_uri=args.backend_store_uri,
                         console=console)


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a sweep from its backend's own saved state (Ray: Tune's experiment), through the same lifecycle
    as submit (orchestrator.submit.resume_sweep)."""
    from orchestrator.submit import resume_sweep  # heavy: mlflow

    ctx = _load_context(args)
    backend = get_backend(ctx.backend, console=console)
    return _report(args, ctx, backend, resume_sweep(ctx, backend))


def cmd_data(args: argparse.Namespace) -> int:
    return data_door.cmd_data(args, console)


COMMANDS = {"data": cmd_data, "submit": cmd_submit, "status": cmd_status, "cancel": cmd_cancel, "compare": cmd_compare,
            "train": cmd_train, "server": cmd_server, "resume": cmd_resume, "list": cmd_list,
            "completion": cmd_completion}


def _usage_error(exc: OrchestratorError) -> int:
    err_console.print("[red]error:[/]", escape(str(exc)), highlight=False, soft_wrap=True)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fail_fast_on_outages()  # a tracking server that is down fails a call in seconds, not minutes
    try:
        tracking_retry_s()  # a bad $CONVIT_TRACKING_RETRY_S is refused here, by every command, `train` included
    except OrchestratorError as exc:
        return _usage_error(exc)
    if argv[:1] == ["train"]:  # everything after 'train' belongs to the engine's parser, --help included
        return cmd_train(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("submit", "data") and extra and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]  # key=value given after options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that went away is found here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except OrchestratorError as exc:
        return _usage_error(exc)
    except KeyboardInterrupt:  # a stopped sweep is 1, as after the local backend's Ctrl-C (convit.exitcodes)
        err_console.print("interrupted; submitting the sweep again resumes it")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - only a full disk is turned into a message; the rest propagates
        if not _disk_full(exc):
            raise
        err_console.print("[red]error:[/] no space left on device", escape(_reason(exc)),
                          "- free space there, then submit again (finished work is kept)", highlight=False)
        return EXIT_FAILED


def _closed_pipe() -> int:
    """stdout's reader went away (`convit-sweep status X --json | head -1`): stop quietly, as `cat` does. What
    is still buffered would fail again at exit, so stdout is pointed at /dev/null first."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_PIPE


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
