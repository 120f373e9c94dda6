"""The door on a sweep that really ran (a 1-epoch smoke sweep through `convit-sweep submit`, real MLflow store):
`list`, a resubmission (nothing to run, the status table with its axis columns), `cancel` with nothing to stop,
and `compare`'s table into a closed pipe."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = """
name: finished
base: {preset: smoke, epochs: 1, synthetic_train_size: 32, synthetic_val_size: 16}
grid:
  model: [convit_tiny, deit_tiny]
seeds: [0]
local: {max_parallel: 2, cpus_per_trial: 1}
"""


def run(*args: str, stdout=subprocess.PIPE, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finished")
    spec = root / "finished.yaml"
    spec.write_text(SMOKE)
    result = run("submit", str(spec), "--workdir", str(root / "runs"))
    assert result.returncode == 0, result.stdout + result.stderr
    return spec, root / "runs"


def test_list_and_resubmission_of_a_finished_sweep(finished):
    spec, work = finished
    (row,) = json.loads(run("list", "--json", "--workdir", str(work)).stdout)
    assert (row["name"], row["backend"], row["trials"], row["done"]) == ("finished", "local", 2, 2)
    again = run("submit", str(spec), "--workdir", str(work))
    assert again.returncode == 0, again.stderr
    assert "2 trial(s) already finished: skipped" in again.stdout
    header = next(line for line in again.stdout.splitlines() if "trial id" in line)
    assert [c.strip() for c in header.strip("┃ \n").split("┃")][:4] == ["trial id", "model", "seed", "state"]


def test_cancel_of_a_finished_sweep_has_nothing_to_stop(finished):
    _, work = finished
    result = run("cancel", "finished", "--workdir", str(work))
    assert result.returncode == 0 and "nothing to stop" in result.stdout and "(2 done)" in result.stdout


def test_compare_into_a_closed_pipe_is_quiet(finished, tmp_path: Path):
    _, work = finished
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run("compare", "finished", "--workdir", str(work), "--out", str(tmp_path / "plots"),
                     stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
