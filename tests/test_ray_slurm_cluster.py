"""Ray across the nodes of a SLURM allocation, for real: slurm/ray-cluster.sbatch on two nodes of the local cluster
(``sudo slurm/start.sh --nodes 2``) starts a Ray head on node1 and a worker on node2; a sweep submitted with
``--backend ray ray.address=<the address the job wrote>`` runs its trials on both nodes (the hosts are in MLflow),
and killing node2's raylet mid-sweep — the node is lost with the trials on it — loses no trial: Tune retries them
on node1 from their checkpoints, and MLflow ends with every step once.

Skipped, with the reason, without a SLURM cluster of two nodes or more."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convit.records import read_json, read_metrics
from orchestrator.server import free_port
from orchestrator.tracking import Tracker, default_tracking_uri
from tests.test_ray_backend import BASE, _stop, cli_env, steps, trial_dirs, wait_for
from tests.test_slurm_backend_cluster import cluster_problem, node_count

pytestmark = [pytest.mark.slurm, pytest.mark.ray]
REPO = Path(__file__).resolve().parents[1]
EPOCHS = 6
SEEDS = 4  # 4 trials of 1 CPU on two nodes of 2 CPUs: two run on each node


def _sbatch_ray_cluster(folder: Path, port: int) -> str:
    """The repository's script as a user runs it, with what the 2-CPU local nodes can give (its defaults ask for
    8 CPUs per node and 4 hours: more than the local partition has)."""
    env = {**os.environ, "CONVIT_PYTHON": sys.executable, "RAY_PORT": str(port)}
    out = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--cpus-per-task=2", "--time=15",
                          f"--chdir={folder}", f"--output={folder}/ray-cluster-%j.log",
                          str(REPO / "slurm" / "ray-cluster.sbatch")],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _raylet_of(node: str) -> int | None:
    """The pid of the raylet the job started on ``node`` (its srun step's environment names the node)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "raylet":
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURMD_NODENAME={node}".encode() in env:
            return int(proc.name)
    return None


def _end_job(job: str) -> None:
    subprocess.run(["scancel", job], capture_output=True, timeout=30)
    deadline = time.time() + 60
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, timeout=30)
        if not out.stdout.strip():
            return
        time.sleep(1)


def test_a_sweep_runs_on_both_nodes_and_losing_one_loses_no_trial(tmp_path: Path):
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    if node_count() < 2:
        pytest.skip("needs a SLURM cluster of two nodes or more (sudo slurm/start.sh --nodes 2)")
    job = _sbatch_ray_cluster(tmp_path, free_port())
    work, log = tmp_path / "runs", tmp_path / "submit.log"
    proc = None
    try:
        address_file = tmp_path / f"ray-cluster-{job}.address"
        started = time.time()
        wait_for(address_file.exists, timeout=180, what=f"the Ray cluster of job {job} (log: {tmp_path})")
        address = address_file.read_text().strip()
        cluster_up_s = time.time() - started
        spec = tmp_path / "rnodes.yaml"
        base = BASE.format(epochs=EPOCHS).replace("synthetic_train_size: 64", "synthetic_train_size: 128")
        spec.write_text("name: rnodes\n" + base + f"seeds: {list(range(SEEDS))}\n"
                        f"ray: {{address: '{address}', cpus_per_trial: 1, max_failures: 2}}\n")
        # The cluster uses token authentication (the script turns it on): the driver must too.
        env = {**cli_env(), "RAY_AUTH_MODE": "token"}
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--backend", "ray",
                                     "--workdir", str(work)], cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

        def placed_and_training_on_node2() -> bool:
            """Every trial placed (its worker wrote ray_worker.json), and one on node2 past its first epoch."""
            dirs = trial_dirs(work, "rnodes").values() if (work / "sweeps/rnodes/trials").is_dir() else []
            workers = [read_json(d / "ray_worker.json") for d in dirs]
            return len(dirs) == SEEDS and all(workers) and any(
                w["host"] == "node2" and read_metrics(d) for w, d in zip(workers, dirs))

        wait_for(placed_and_training_on_node2, timeout=240, what="the trials to be placed", proc=proc)
        on_node2 = {d.name: (read_metrics(d) or [None])[0] for d in trial_dirs(work, "rnodes").values()
                    if read_json(d / "ray_worker.json")["host"] == "node2"}
        raylet = _raylet_of("node2")
        assert raylet is not None, "no raylet found for node2"
        os.kill(raylet, signal.SIGKILL)  # the node is lost, with the trials running on it
        assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    finally:
        if proc is not None:
            _stop(proc)
        _end_job(job)
    print(f"Ray cluster of 2 nodes up {cluster_up_s:.0f} s after sbatch")

    tracker = Tracker(default_tracking_uri(work))
    runs = tracker.trial_runs("rnodes", "rnodes")
    assert len(runs) == SEEDS
    start_hosts = {trial_id: run.data.tags["start_hosts"].split(",") for trial_id, run in runs.items()}
    assert {h for hosts in start_hosts.values() for h in hosts} == {"node1", "node2"}  # both nodes trained
    for trial_id, run in runs.items():
        assert run.info.status == "FINISHED"
        assert steps(tracker, run.info.run_id) == list(range(EPOCHS)), trial_id  # every step once
        if trial_id in on_node2:
            # retried on the node that is left, from its checkpoint: epoch 0 was not trained again
            assert start_hosts[trial_id][0] == "node2" and start_hosts[trial_id][-1] == "node1", start_hosts
            trial_dir = trial_dirs(work, "rnodes")[trial_id]
            assert on_node2[trial_id] is None or read_metrics(trial_dir)[0] == on_node2[trial_id]
            assert run.data.tags["host"] == run.data.tags["rank_hosts"] == "node1"
