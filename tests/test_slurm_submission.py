"""Submission to the real local SLURM is all or nothing: what the scheduler would refuse and can be known in
advance is refused by validation (and by --dry-run) before anything is recorded; a refusal by sbatch itself
leaves consistent records (trials failed with sbatch's reason, the parent run FAILED, nothing pending), and the
corrected resubmission runs the sweep."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orchestrator.tracking import Tracker, default_tracking_uri
from tests.test_local import cli
from tests.test_slurm_backend_cluster import cluster_problem

pytestmark = pytest.mark.slurm
SWEEP = "name: refused\nbase: {preset: smoke, epochs: 1, synthetic_train_size: 64}\nseeds: [0, 1]\n" \
        "slurm: {profile: local}\n"


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> None:
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.mark.parametrize("override, message", [
    ("slurm.mem_gb=100000", "slurm.mem_gb: 100000 GB, but the largest node has"),
    ("slurm.account=nosuch", "slurm.account: no account 'nosuch'"),
])
def test_what_sbatch_would_refuse_is_refused_by_the_dry_run(tmp_path: Path, override: str, message: str):
    spec = tmp_path / "refused.yaml"
    spec.write_text(SWEEP)
    out = cli("submit", str(spec), "--backend", "slurm", "--dry-run", "--workdir", str(tmp_path / "runs"), override)
    assert out.returncode == 2 and message in out.stderr, out.stdout + out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_refused_submission_leaves_consistent_records_and_the_corrected_one_runs(tmp_path: Path):
    spec, work = tmp_path / "refused.yaml", tmp_path / "runs"
    spec.write_text(SWEEP)
    refused = cli("submit", str(spec), "--backend", "slurm", "--workdir", str(work),
                  "slurm.additional_parameters={nodelist: nosuchnode}")
    assert refused.returncode == 2 and "SLURM refused the job array" in refused.stderr, refused.stderr
    status = json.loads(cli("status", "refused", "--workdir", str(work), "--json").stdout)
    assert [s["state"] for s in status] == ["failed", "failed"]
    assert all("refused the submission" in s["detail"] and "Invalid node name" in s["detail"] for s in status)
    tracker = Tracker(default_tracking_uri(work))
    parent = tracker.find_sweep_run("refused", "refused")
    assert parent.info.status == "FAILED" and "Invalid node name" in parent.data.tags["submit_error"]

    again = cli("submit", str(spec), "--backend", "slurm", "--workdir", str(work))
    assert again.returncode == 0, again.stdout + again.stderr
    deadline = time.time() + 300
    while time.time() < deadline:
        states = [s["state"] for s in json.loads(cli("status", "refused", "--workdir", str(work), "--json").stdout)]
        if states == ["done", "done"]:
            break
        time.sleep(2)
    assert states == ["done", "done"]
    assert tracker.find_sweep_run("refused", "refused").info.status == "FINISHED"
