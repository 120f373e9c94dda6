"""A tracking server outage never costs a trial: training goes on (metrics.jsonl is the source of truth), one
warning says so, and MLflow is caught up with every epoch exactly once, during the trial when the server comes
back (tests/test_postgres_tracking.py: the database stopped, then the server killed, 30 s each, mid-trial), or, here, by the next submission
when it comes back after the trial ended. A real `mlflow server`, stopped and started again by PID on the same
port and store."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from convit.records import read_json, read_metrics
from orchestrator.server import ServerHandle, free_port, start_server
from orchestrator.tracking import Tracker
from tests.test_local import SMOKE, cli, cli_background, steps, wait_for

pytestmark = pytest.mark.slow


def _sweep(tmp_path: Path, name: str, epochs: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMOKE.format(name=name, epochs=epochs, train=96, models="[deit_tiny]", workers=0)
                    .replace("base:\n", "base:\n  analysis_every: 0\n"))
    return path


def _stop(server: ServerHandle, port: int) -> None:
    server.stop()
    def closed() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) != 0
    wait_for(closed, timeout=30, what="the server's port to close")


def _trial_dir(work: Path, name: str) -> Path:
    (found,) = list((work / "sweeps" / name / "trials").glob("*"))
    return found


def test_a_trial_that_ends_while_the_server_is_down_is_logged_by_the_next_submission(tmp_path: Path):
    port = free_port()
    server = start_server(tmp_path / "server", port=port)
    work, spec = tmp_path / "runs", _sweep(tmp_path, "late", epochs=4)
    submit = cli_background("submit", str(spec), "--workdir", str(work), "--tracking-uri", server.uri)
    try:
        wait_for(lambda: (work / "sweeps/late/trials").is_dir() and read_metrics(_trial_dir(work, "late")),
                 timeout=180, what="a first epoch")
        _stop(server, port)
        out, _ = submit.communicate(timeout=300)
    finally:
        if submit.poll() is None:
            submit.kill()
    trial_dir = _trial_dir(work, "late")
    assert submit.returncode == 0, out  # the trial finished: tracking being down is not a failure
    assert (trial_dir / "final.json").exists() and "is not answering" in (trial_dir / "trial.log").read_text()
    assert "Traceback" not in out
    server = start_server(tmp_path / "server", port=port)
    try:
        again = cli("submit", str(spec), "--workdir", str(work))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "finished while MLflow was not answering: logged now" in again.stdout, again.stdout
        tracker = Tracker(server.uri)
        (run,) = tracker.trial_runs("late", "late").values()
        assert run.info.status == "FINISHED"
        assert steps(tracker, run.info.run_id, "epoch") == list(range(4))
        assert "test_top1" in run.data.metrics
        assert read_json(trial_dir / "status.json")["state"] == "done"
        assert tracker.find_sweep_run("late", "late").info.status == "FINISHED"
    finally:
        server.stop()
