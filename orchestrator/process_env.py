"""What our processes run with, set the same way on every backend and door.

* A trial's CPU budget: the BLAS/OpenMP thread counts of the trial's process (environment, set before it starts
  where the backend starts it) and torch's intra-op threads (set in the process, since torch may ignore
  OMP_NUM_THREADS once imported). Without it, two trials on a 2-core machine would each start one thread per core
  and slow each other down.
* MLflow's HTTP retries: a call to a tracking server that is down gives up in seconds instead of MLflow's default
  minutes, so training never waits on tracking (metrics.jsonl keeps every epoch meanwhile) and a command never
  hangs on a server that is down. Values the user set win.
* How often a trial retries a tracking store that stopped answering: every ``$CONVIT_TRACKING_RETRY_S`` seconds
  (default 30), so an outage costs training one short failed call per interval, not one per epoch.
"""
from __future__ import annotations

import math
import os

from orchestrator.errors import OrchestratorError

THREADS_ENV = "CONVIT_NUM_THREADS"
_ENV_NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV)


#: MLflow reads these at each request (mlflow.environment_variables).
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


TRACKING_RETRY_ENV = "CONVIT_TRACKING_RETRY_S"
DEFAULT_TRACKING_RETRY_S = 30.0


def tracking_retry_s() -> float:
    """Seconds between a trial's attempts to reach a tracking store that stopped answering.

    Raises OrchestratorError (naming the variable and what it expects; the CLI exits 2 before anything runs)
    when ``$CONVIT_TRACKING_RETRY_S`` is not a positive number of seconds."""
    raw = os.environ.get(TRACKING_RETRY_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_TRACKING_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise OrchestratorError(f"{TRACKING_RETRY_ENV}={raw!r}: expected a positive number of seconds (default "
                                f"{DEFAULT_TRACKING_RETRY_S:g}); unset it or set e.g. {TRACKING_RETRY_ENV}=10")
    return value


def fail_fast_on_outages() -> None:
    """Short MLflow HTTP retries in this process (and the processes it starts), unless already set."""
    for name, value in HTTP_ENV.items():
        os.environ.setdefault(name, value)


def thread_env(threads: int | str) -> dict[str, str]:
    """Environment for a child process that may use ``threads`` CPUs."""
    return {name: str(threads) for name in _ENV_NAMES}


def apply_thread_budget(threads: int | str | None = None) -> None:
    """Use ``threads`` CPUs in this process (default: $CONVIT_NUM_THREADS, set by the backend; nothing when
    neither is given). Environment variables already set win over ``threads`` for the BLAS libraries."""
    if threads is not None:
        for name, value in thread_env(threads).items():
            os.environ.setdefault(name, value)
    chosen = os.environ.get(THREADS_ENV)
    if chosen:
        import torch  # heavy: only trial processes, which train with torch anyway, call this

        torch.set_num_threads(max(1, int(float(chosen))))


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, as SLURM or taskset set it), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs a trial started from here would see: CUDA_VISIBLE_DEVICES, else what torch counts."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch  # heavy: only asked when a sweep wants GPUs and CUDA_VISIBLE_DEVICES is unset

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch or no driver: no GPUs
        return []
