"""Ray for one submit or resume: a private local instance on 127.0.0.1 (its processes recorded, so that what a
killed driver leaves behind is reaped next time), or an existing cluster at ``ray.address``."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import ray
from rich.console import Console

from convit.records import read_json
from orchestrator.process_env import cpu_count
from orchestrator.errors import OrchestratorError
from orchestrator.sections import RaySection
from orchestrator.status import pid_alive
from orchestrator.workdir import SweepContext

STATE_FILE = "ray.json"  # in the sweep folder: driver pid and host, Tune experiment path, the private Ray's pids
#: Set for the driver and every worker: no TensorBoard/CSV/JSON loggers in the driver (they import torch there,
#: +0.8 GB) and no chdir into Tune's trial folder (relative data paths keep working).
# TUNE_FUNCTION_THREAD_TIMEOUT_S: with reused actors (reuse_actors=True), Tune waits this long for the previous
# trial's thread to end before starting the next trial in the same worker, and fails the *next* trial if it has
# not (Tune's default: 2 s). A trial stopped by ASHA ends its MLflow run and its loader workers on the way out,
# which takes longer than that on a busy machine. (PBT trials do not reuse workers: backend.reuse_actors.)
RAY_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0",
           "TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # checkpoints go through the filesystem, not the object store


def wait_dead(pid: Any, timeout: float) -> bool:
    deadline = time.time() + timeout
    while pid and pid_alive(int(pid)):
        if time.time() > deadline:
            return False
        time.sleep(0.2)
    return True


@contextlib.contextmanager
def ray_session(opts: RaySection, console: Console | None = None) -> Iterator[None]:
    """Ray for one submit: a private local instance on 127.0.0.1 (shut down afterwards), or the cluster at
    ``opts.address``; a Ray already initialised in this process (a notebook, a test) is used as it is."""
    os.environ.update(RAY_ENV)
    # Tune's ResultGrid looks for the result files of the loggers we switch off, and warns for each trial.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

    if ray.is_initialized():
        yield
        return
    runtime_env = {"env_vars": {**RAY_ENV, **_forwarded_env()}}
    common = dict(runtime_env=runtime_env, log_to_driver=True, logging_level="WARNING")
    try:
        if opts.address:
            ray.init(address=opts.address, **common)
        else:
            ray.init(address="local", num_cpus=opts.num_cpus or cpu_count(), num_gpus=opts.num_gpus,
                     include_dashboard=opts.dashboard, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {opts.address}" if opts.address else "a local Ray"
        hint = ""
        if opts.address and os.environ.get("RAY_AUTH_MODE") != "token":
            hint = ("; if the cluster uses token authentication (slurm/ray-cluster.sbatch turns it on), export "
                    "RAY_AUTH_MODE=token here, with the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
        raise OrchestratorError(f"could not start or reach {where}: {exc}{hint}") from exc
    if not opts.address:
        _remember_local_ray()
    try:
        yield
    finally:
        ray.shutdown()
        for pid in _LOCAL_RAY_PIDS:  # shutdown returns before the processes are gone: do not leave them behind
            wait_dead(pid, timeout=10)
        _LOCAL_RAY_PIDS.clear()


_LOCAL_RAY_PIDS: list[int] = []


def local_ray_pids() -> list[int]:
    """The processes of the private Ray this process started (empty for a cluster)."""
    return list(_LOCAL_RAY_PIDS)


def _remember_local_ray() -> None:
    """The pids of the private Ray's processes (head services, raylet and the agents it started), kept in
    ray.json: a driver killed with SIGKILL leaves the agents running, and the next submit/resume reaps them."""
    try:
        node = ray._private.worker._global_node  # noqa: SLF001 - the only handle on the local node's processes
        pids = [info.process.pid for infos in node.all_processes.values() for info in infos if info.process]
    except AttributeError:
        return
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) in pids and _is_ray_process(int(stat.parent.name)):
            children.append(int(stat.parent.name))
    _LOCAL_RAY_PIDS[:] = sorted(set(pids + children))


def _is_ray_process(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return cmd.startswith("ray::") or "/ray/" in cmd


def reap_orphans(sweep: SweepContext) -> list[int]:
    """Kill what is left of the private Ray of a driver that died without shutting it down (by recorded pid,
    only processes that are still Ray's)."""
    state = read_json(sweep.sweep_dir / STATE_FILE, {}) or {}
    if state.get("host") != socket.gethostname() or pid_alive(state.get("driver_pid")):
        return []
    killed = [pid for pid in state.get("ray_pids", []) if pid_alive(pid) and _is_ray_process(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return killed


def _forwarded_env() -> dict[str, str]:
    """Settings the trial processes need from the submitting shell (absolute, since workers may run elsewhere)."""
    out = {}
    for name in ("CONVIT_DATA_ROOT", "MLFLOW_TRACKING_URI"):
        if os.environ.get(name):
            value = os.environ[name]
            out[name] = str(Path(value).resolve()) if name == "CONVIT_DATA_ROOT" else value
    return out

