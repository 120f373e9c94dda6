"""MLflow tracking: the only module that imports mlflow.

One parent run per sweep (the sweep file as an artifact, tag ``sweep_id``) and one nested child run per trial
(tag ``trial_id``, all trial params flattened, per-epoch metrics with ``step=epoch``). Trial processes log
themselves, one ``log_batch`` per epoch, through :class:`MlflowReporter`.

Exactly-once metric steps: every batch ends with the metric ``epoch`` (logged in the same ``log_batch``
call, which the SQL store commits in one transaction), so the steps of ``epoch`` in MLflow are exactly the
epochs already logged. A resumed trial first logs every metrics.jsonl epoch missing from that set, then the
new ones; nothing is logged twice, nothing is skipped, whatever point the previous process died at.

Many processes writing one sqlite file can hit "database is locked": every call is retried with jittered
exponential backoff (the write is a single transaction, so a failed attempt wrote nothing).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlparse

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from convit.records import CONFIG_FILE, read_json, read_metrics
from orchestrator.errors import OrchestratorError
from orchestrator.keys import flat
from orchestrator.locks import exclusive
from orchestrator.process_env import tracking_retry_s
from orchestrator.tracking_uri import DB_NAME, check_uri_without_mlflow, default_tracking_uri
from orchestrator.mlflow_views import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG, attention_table_path,
                                       is_per_head as is_per_head_key, metric_name, split_per_head, sweep_note, view_tag)

ARTIFACTS_DIR = "mlartifacts"
EPOCH_METRIC = "epoch"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # MLflow's list of table artifacts (rendered as tables)
LOGGED_TABLES_LIMIT = 60  # table entries kept in that tag (its value is capped at 8,000 characters)
PARAM_VALUE_LIMIT = 6000
BATCH_LIMIT = 100  # params per log_batch (MLflow's limit); metrics are capped at 1000, see _chunks
ENV_TAGS = {"slurm_job_id": ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID"), "slurm_array_task_id": ("SLURM_ARRAY_TASK_ID",),
            "ray_trial_id": ("CONVIT_RAY_TRIAL_ID", "TUNE_TRIAL_ID")}


# ---------------------------------------------------------------------------------------------------- URIs
def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Refuse, with one line saying what is wrong, a tracking URI that cannot work: a server that does not answer,
    a sqlite file in a folder that does not exist (orchestrator.tracking_uri.check_uri_without_mlflow), a scheme
    MLflow has no store for. Called before anything is recorded, so a wrong URI costs an error message, not a
    half-recorded sweep."""
    if check_uri_without_mlflow(uri, timeout_s):
        return
    try:
        MlflowClient(tracking_uri=uri)._tracking_client.store  # noqa: SLF001 - resolves the scheme's store
    except MlflowException as exc:
        raise OrchestratorError(f"tracking URI {uri}: {' '.join(str(exc).split())[:300]}") from None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for a server or another store)."""
    if urlparse(uri).scheme != "sqlite":
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve()


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store go next to the database (never into ./mlruns of whatever directory the
    process runs in); a server decides for itself."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / ARTIFACTS_DIR).resolve().as_uri()


# ------------------------------------------------------------------------------------------------- retries
def _transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text or "sqlite_busy" in text


def retrying(fn: Callable[..., Any], attempts: int = 16, first_delay: float = 0.01) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        delay = first_delay
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - only lock contention is retried
                if attempt == attempts - 1 or not _transient(exc):
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    return call


class _RetryingClient:
    """MlflowClient whose every method retries on sqlite lock contention."""

    def __init__(self, client: MlflowClient):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return retrying(attr) if callable(attr) else attr


# -------------------------------------------------------------------------------------------------- helpers
def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → {'model_kwargs.locality_strength': '1.0', ...} (orchestrator.keys.flat, then each value
    as MLflow wants a param: lists as JSON, the rest str(), cut to MLflow's size)."""
    return {name: (json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value))[:PARAM_VALUE_LIMIT]
            for name, value in flat(data, prefix).items()}


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a metrics dict (MLflow metrics are floats; strings and None are not metrics)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def env_tags() -> dict[str, str]:
    """Scheduler ids found in the environment (SLURM job id, Ray trial id), host name."""
    tags = {"host": socket.gethostname()}
    for tag, names in ENV_TAGS.items():
        for name in names:
            if os.environ.get(name):
                tags[tag] = os.environ[name]
                break
    return tags


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


# -------------------------------------------------------------------------------------------------- tracker
class Tracker:
    """Parent and child runs of sweeps in one tracking store."""

    def __init__(self, uri: str):
        self.uri = uri
        self._tables: dict[str, list[dict[str, str]]] = {}  # run id -> its mlflow.loggedArtifacts, once read
        db = _sqlite_path(uri)
        if db is None:
            self.client = _RetryingClient(MlflowClient(tracking_uri=uri))
            return
        # A fresh store is created (tables, then alembic migrations) when a client first opens it; two processes
        # doing that at once fail ("duplicate column name", "Online migration expected to match one row"). One
        # at a time per store file; afterwards it is only a cheap lock.
        with exclusive(db.with_name(db.name + ".lock"), what="another process creating the MLflow store"):
            self.client = _RetryingClient(MlflowClient(tracking_uri=uri))
            self.client.search_experiments(max_results=1)

    # -- experiments
    def experiment_id(self, name: str, create: bool = True) -> str | None:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        if not create:
            return None
        try:
            return self.client.create_experiment(name, artifact_location=_artifact_root(self.uri),
                                                 tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as exc:  # another process created it first
            if "already exists" not in str(exc).lower() and "unique" not in str(exc).lower():
                raise
            again = self.client.get_experiment_by_name(name)
            assert again is not None
            return again.experiment_id

    def _search(self, experiment_id: str, filter_string: str, max_results: int = 5000) -> list[Any]:
        runs, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY,
                                           max_results=min(max_results, 1000), order_by=["attributes.start_time ASC"],
                                           page_token=token)
            runs += list(page)
            token = page.token
            if not token or len(runs) >= max_results:
                return runs

    # -- the sweep's parent run
    def find_sweep_run(self, experiment: str, sweep_id: str) -> Any | None:
        exp = self.experiment_id(experiment, create=False)
        if exp is None:
            return None
        runs = self._search(exp, f"tags.sweep_id = '{_quote(sweep_id)}' and tags.kind = 'sweep'")
        return runs[-1] if runs else None

    def start_sweep(self, *, experiment: str, sweep_id: str, spec_text: str, axes: list[str], backend: str,
                    git_commit: str, n_trials: int, description: str = "") -> str:
        """The sweep's parent run (reused on resubmission), marked RUNNING, with the sweep file as artifact."""
        exp = self.experiment_id(experiment)
        assert exp is not None
        tags = {"kind": "sweep", "sweep_id": sweep_id, "backend": backend, "git_commit": git_commit,
                "axes": json.dumps(axes), "n_trials": str(n_trials), "host": socket.gethostname(),
                "mlflow.source.git.commit": git_commit}
        found = self.find_sweep_run(experiment, sweep_id)
        if found is None:
            tags[NOTE_TAG] = sweep_note(sweep_id, description, axes, n_trials)
            run_id = self.client.create_run(exp, tags=tags, run_name=sweep_id).info.run_id
        else:  # keep the description: `compare` may have written the results into it
            run_id = found.info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_text(run_id, spec_text, "sweep.yaml")
        self.describe_experiment(exp, sweep_id, run_id, axes, description)
        return run_id

    def describe_experiment(self, experiment_id: str, sweep_id: str, parent_run_id: str, axes: list[str],
                            description: str) -> None:
        """The experiment opens in the model-training view, with the sweep file's description (when the
        experiment has none yet) and a saved view of this sweep (orchestrator.mlflow_views.view_state)."""
        experiment = self.client.get_experiment(experiment_id)
        tags = dict(experiment.tags)
        wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        if description and not tags.get(NOTE_TAG):
            wanted[NOTE_TAG] = description
        key, value = view_tag(sweep_id, parent_run_id, axes)
        wanted[key] = value
        for k, v in wanted.items():
            if tags.get(k) != v:
                self.client.set_experiment_tag(experiment_id, k, v)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # -- the trials' child runs
    def trial_runs(self, experiment: str, sweep_id: str) -> dict[str, Any]:
        """trial id → its child run (the latest if a trial was somehow logged twice)."""
        exp = self.experiment_id(experiment, create=False)
        if exp is None:
            return {}
        runs = self._search(exp, f"tags.sweep_id = '{_quote(sweep_id)}' and tags.kind = 'trial'")
        return {run.data.tags["trial_id"]: run for run in runs if "trial_id" in run.data.tags}

    def finished_trial_ids(self, experiment: str, sweep_id: str) -> set[str]:
        return {tid for tid, run in self.trial_runs(experiment, sweep_id).items() if run.info.status == "FINISHED"}

    def open_trial_run(self, *, experiment: str, sweep_id: str, parent_run_id: str | None, trial_id: str,
                       trial_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
                       known_run_id: str | None = None) -> str:
        """The trial's child run: the one recorded in its folder, else the one tagged with its id, else a new
        one (params are logged once, at creation: MLflow refuses to change them)."""
        run_id = known_run_id if known_run_id and self._run_exists(known_run_id) else None
        if run_id is None:
            existing = self.trial_runs(experiment, sweep_id).get(trial_id)
            run_id = existing.info.run_id if existing is not None else None
        all_tags = {"kind": "trial", "sweep_id": sweep_id, "trial_id": trial_id, **tags}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is None:
            exp = self.experiment_id(experiment)
            assert exp is not None
            run_id = self.client.create_run(exp, tags=all_tags, run_name=trial_name).info.run_id
            items = [Param(k, v) for k, v in flatten(params).items()]
            for i in range(0, len(items), BATCH_LIMIT):
                self.client.log_batch(run_id, params=items[i:i + BATCH_LIMIT])
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
        return run_id

    def log_dataset(self, run_id: str, trial_dir: Path) -> bool:
        """The trial's training data as an MLflow dataset input (the runs table's Dataset column): name,
        fraction, seed, size per class and the digest of the chosen indices, read from the engine's config.json.
        False when the engine has not written it yet. MLflow keeps one input per (dataset, digest, run)."""
        record = read_json(trial_dir / CONFIG_FILE, {}) or {}
        config, subset = record.get("config") or {}, record.get("subset") or {}
        if not config or not subset.get("indices_sha256"):
            return False
        fraction = float(config.get("data_fraction", 1.0))
        name = f"{config.get('dataset', 'data')} {fraction * 100:.3g}%"
        profile = {"data_fraction": fraction, "seed": config.get("seed"), "size": subset.get("size"),
                   "per_class": subset.get("per_class"), "validation": (subset.get("val") or {}).get("size")}
        dataset = Dataset(name=name, digest=str(subset["indices_sha256"])[:36], source_type="local",
                          source=json.dumps({"data_root": config.get("data_root"), "dataset": config.get("dataset")}),
                          profile=json.dumps(profile))
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])
        return True

    def _run_exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def logged_steps(self, run_id: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, EPOCH_METRIC)}

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        """One epoch: its per-head values as a table artifact first (written whole, so a repeat overwrites it),
        then its scalars in one transaction (per chunk of 1000), the ``epoch`` marker last."""
        stamp = _now_ms()
        scalars, table = split_per_head({k: v for k, v in numeric(metrics).items() if k != EPOCH_METRIC})
        if table:
            self.log_table(run_id, table, attention_table_path(epoch))
        items = [Metric(k, v, stamp, int(epoch)) for k, v in scalars.items()]
        items.append(Metric(EPOCH_METRIC, float(epoch), stamp, int(epoch)))
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def log_table(self, run_id: str, table: Mapping[str, Any], artifact_file: str) -> None:
        """A table artifact in MLflow's format (``split`` JSON), replacing any earlier one of that name (MLflow's
        own ``log_table`` appends, which would repeat rows when a resumed trial logs an epoch again); listed in
        the run's ``mlflow.loggedArtifacts`` tag so the UI renders it as a table."""
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(table))
            self.client.log_artifact(run_id, str(path), folder or None)
        if run_id not in self._tables:  # read once per run and process, not at every epoch
            self._tables[run_id] = json.loads(self.client.get_run(run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
        entry = {"path": artifact_file, "type": "table"}
        if entry not in self._tables[run_id]:
            self._tables[run_id] = [*self._tables[run_id], entry][-LOGGED_TABLES_LIMIT:]
            self.set_tags(run_id, {LOGGED_ARTIFACTS_TAG: json.dumps(self._tables[run_id])})

    def log_final(self, run_id: str, final: Mapping[str, Any], epoch_keys: Iterable[str] = (), step: int = 0) -> None:
        """The final metrics that no epoch logged (``init/*`` at step 0, ``optimizer_steps``, tracking overhead…);
        a value an epoch row already has (``test_top1``…) is not repeated under another name."""
        stamp = _now_ms()
        skip = {*epoch_keys, EPOCH_METRIC}  # `epoch` marks logged epochs: never logged outside log_epoch
        values = {k: v for k, v in numeric(final).items() if k not in skip and not is_per_head_key(k)}
        items = [Metric(metric_name(k), v, stamp, 0 if k.startswith("init/") else step) for k, v in values.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def log_values(self, run_id: str, values: Mapping[str, float], step: int) -> None:
        """Metrics outside the epoch rows (e.g. PBT's ``hp/<key>`` at the epoch a mutation applies from)."""
        stamp = _now_ms()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, int(step)) for k, v in values.items()])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_files(self, run_id: str, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            if Path(path).is_file():
                self.client.log_artifact(run_id, str(path), artifact_path)

    # -- reading back (compare)
    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))


# ------------------------------------------------------------------------------------------------- reporter
class MlflowReporter:
    """The engine's Reporter: logs each epoch once into the trial's child run.

    metrics.jsonl is the source of truth; :meth:`sync` catches MLflow up with it (on start, and after the
    engine stops) and :meth:`report` logs an epoch the engine just finished. Time spent here is measured, so
    the tracking overhead is a logged number rather than a claim.
    """

    def __init__(self, tracker: Tracker, run_id: str, metrics_file: Path):
        self.tracker = tracker
        self.run_id = run_id
        self.metrics_file = metrics_file
        self.logged = tracker.logged_steps(run_id)
        self.seconds = 0.0
        self.dataset_logged = False

    def epoch_keys(self) -> set[str]:
        """Every metric name metrics.jsonl has in some epoch (log_final does not repeat them)."""
        return {k for row in read_metrics(self.metrics_file.parent) for k in row}

    def _log_dataset(self) -> None:
        if not self.dataset_logged:
            self.dataset_logged = self.tracker.log_dataset(self.run_id, self.metrics_file.parent)

    def sync(self) -> int:
        """Log every metrics.jsonl epoch MLflow lacks; returns how many."""
        with _no_gc_pause():
            start = time.perf_counter()
            count = 0
            for row in read_metrics(self.metrics_file.parent):
                epoch = int(row["epoch"])
                if epoch not in self.logged:
                    self.tracker.log_epoch(self.run_id, epoch, row)
                    self.logged.add(epoch)
                    count += 1
            self._log_dataset()
            self.seconds += time.perf_counter() - start
        return count

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        with _no_gc_pause():
            start = time.perf_counter()
            if int(epoch) not in self.logged:
                self.tracker.log_epoch(self.run_id, int(epoch), metrics)
                self.logged.add(int(epoch))
            self._log_dataset()
            self.seconds += time.perf_counter() - start


@contextlib.contextmanager
def _no_gc_pause() -> Iterator[None]:
    """Defer Python's cyclic garbage collection during a tracking call: a full collection of the training
    process's objects (a quarter of a second with a model in memory, measured) would otherwise land inside the
    call and be counted as tracking overhead; it runs at the next allocation after the call instead."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------------------------- outages
class TrialRun:
    """A trial's child run, kept going through tracking outages.

    Every MLflow call goes through :meth:`_attempt`: when the store or server fails, the trial goes on (the
    engine's metrics.jsonl is the source of truth), one warning is printed (the trial log, and the submitting
    process's progress through it), and later calls try again at most every ``retry_s`` seconds (default
    ``$CONVIT_TRACKING_RETRY_S``, else 30 s), so training is not slowed. When tracking answers again, :meth:`sync` logs every epoch it missed, exactly once. A trial that
    ends while tracking is down is still finished on disk; the next submission catches its run up
    (:func:`orchestrator.lifecycle.split_finished`, through :func:`orchestrator.trial_tracking.log_finished_trial`).
    """

    def __init__(self, tracker: Tracker, metrics_file: Path, open_run: Callable[[], str],
                 warn: Callable[[str], None], retry_s: float | None = None):
        self.tracker, self.metrics_file, self._open_run, self._warn = tracker, metrics_file, open_run, warn
        self.retry_s = tracking_retry_s() if retry_s is None else retry_s
        self.reporter: MlflowReporter | None = None
        self.down_since: float | None = None
        self._last_try = -math.inf
        self._attempt(self._open, force=True)

    @property
    def run_id(self) -> str | None:
        return self.reporter.run_id if self.reporter is not None else None

    @property
    def seconds(self) -> float:
        return self.reporter.seconds if self.reporter is not None else 0.0

    def _open(self) -> None:
        if self.reporter is None:
            self.reporter = MlflowReporter(self.tracker, self._open_run(), self.metrics_file)

    def _attempt(self, action: Callable[[], Any], force: bool = False) -> bool:
        now = time.monotonic()
        if self.down_since is not None and not force and now - self._last_try < self.retry_s:
            return False
        self._last_try = now
        try:
            self._open()
            action()
        except Exception as exc:  # noqa: BLE001 - any tracking failure: training goes on
            if self.down_since is None:
                self.down_since = now
                reason = " ".join(str(exc).split())[:300]
                self._warn(f"warning: MLflow at {self.tracker.uri} is not answering ({type(exc).__name__}: "
                           f"{reason}); training goes on, metrics.jsonl keeps every epoch and they are logged when "
                           "it is back")
            return False
        if self.down_since is not None:
            self._warn(f"MLflow at {self.tracker.uri} answers again after {now - self.down_since:.0f} s: "
                       "missed epochs logged")
            self.down_since = None
        return True

    def sync(self, force: bool = False) -> bool:
        """Log every epoch of metrics.jsonl that MLflow lacks (rate-limited while tracking is down)."""
        return self._attempt(lambda: self.reporter.sync(), force=force)  # type: ignore[union-attr]

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        """The engine's Reporter: this epoch, or, after an outage, every epoch MLflow missed (a sync)."""
        if self.down_since is None and self.reporter is not None:
            reporter = self.reporter
            self._attempt(lambda: reporter.report(epoch, metrics, checkpoint_dir))
        else:
            self.sync()

    def tag(self, tags: Mapping[str, str]) -> bool:
        """Set tags on the run (best effort, like every call here); False while tracking is down."""
        return self._attempt(lambda: self.tracker.set_tags(self.reporter.run_id, tags))  # type: ignore[union-attr]

    def finish(self, final: Mapping[str, Any], files: Iterable[Path], patience_s: float = 10.0) -> bool:
        """Everything logged, the run FINISHED; False when tracking stayed down for ``patience_s`` (the next
        submission catches the run up from the trial folder)."""
        def action() -> None:
            assert self.reporter is not None
            self.reporter.sync()
            self.tracker.log_final(self.reporter.run_id, final, self.reporter.epoch_keys(),
                                   step=max(self.reporter.logged, default=0))
            self.tracker.log_files(self.reporter.run_id, files)
            self.tracker.end_run(self.reporter.run_id, "FINISHED")
        deadline = time.monotonic() + patience_s
        while not self._attempt(action, force=True):
            if time.monotonic() >= deadline:
                self._warn("warning: the trial finished but MLflow is still not answering; submitting the sweep "
                           "again logs its run from the trial folder")
                return False
            time.sleep(2.0)
        return True

    def end(self, status: str, tags: Mapping[str, str] | None = None) -> None:
        """Best effort (a stop or a failure): the epochs so far, the tags, the run's end status."""
        def action() -> None:
            assert self.reporter is not None
            self.reporter.sync()
            if tags:
                self.tracker.set_tags(self.reporter.run_id, tags)
            self.tracker.end_run(self.reporter.run_id, status)
        self._attempt(action, force=True)
