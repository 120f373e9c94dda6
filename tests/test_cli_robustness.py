"""The command line at its edges: sweep names are checked at every door, text from trials is shown as written
(rich markup escaped), a stale state file never gets an unrelated process signalled, and a tracking URI that
cannot work is refused before anything is recorded."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.server import free_port
from orchestrator.spec import expand, parse_spec
from orchestrator.status import pid_alive, write_status
from orchestrator.workdir import sweep_context
from orchestrator.tracking import default_tracking_uri
from orchestrator.workdir import write_trials

SWEEP = "name: edge\nbase: {preset: smoke, epochs: 1}\ngrid: {lr: [0.001, 0.002]}\n"


def _recorded_sweep(work: Path):
    spec = parse_spec(SWEEP)
    ctx = sweep_context(spec, work, "local", default_tracking_uri(work))
    ctx.save()
    trials = expand(spec)
    write_trials(ctx, trials)
    return ctx, trials


@pytest.mark.parametrize("command", ["status", "cancel", "resume", "compare"])
@pytest.mark.parametrize("name", ["../../etc", "/tmp/x", "a/b", ""])
def test_a_path_is_not_a_sweep_name_at_any_door(tmp_path: Path, capsys, command: str, name: str):
    assert cli.main([command, name, "--workdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "is not a sweep name" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_failure_text_is_shown_as_written(tmp_path: Path, capsys):
    work = tmp_path / "runs"
    ctx, trials = _recorded_sweep(work)
    reason = "KeyError: '[layer]' in blocks[3]; see [bold]the log[/bold]"
    write_status(ctx.trial_dir(trials[0].id), "failed", error=reason)
    assert cli.main(["status", "edge", "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "'[layer]'" in out and "[bold]the log[/bold]" in out


def test_cancel_never_signals_a_process_a_stale_state_file_names(tmp_path: Path, capsys):
    work = tmp_path / "runs"
    ctx, _ = _recorded_sweep(work)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        from convit.records import write_json

        # what a scheduler that died long ago left, its pid since reused by an unrelated program
        write_json(ctx.sweep_dir / "local.json", {"scheduler_pid": bystander.pid, "scheduler_pid_start": 1,
                                                  "host": __import__("socket").gethostname()})
        assert cli.main(["cancel", "edge", "--workdir", str(work)]) == 0
        assert bystander.poll() is None and pid_alive(bystander.pid)
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()


def test_an_unreachable_tracking_server_is_refused_before_anything_is_recorded(tmp_path: Path, capsys):
    spec = tmp_path / "edge.yaml"
    spec.write_text(SWEEP)
    work = tmp_path / "runs"
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert cli.main(["submit", str(spec), "--workdir", str(work), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"no MLflow server answers at {uri}" in err and "Traceback" not in err
    assert not (work / "sweeps").exists()
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'mlflow.db'}"
    assert cli.main(["submit", str(spec), "--workdir", str(work), "--tracking-uri", missing, "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compare_with_an_unknown_tracking_scheme_is_one_line(tmp_path: Path, capsys):
    assert cli.main(["compare", "edge", "--workdir", str(tmp_path / "runs"), "--tracking-uri", "nosuch://x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nosuch://x" in err and "Traceback" not in err


def test_a_crashed_mlflow_server_is_reported_as_a_crash(tmp_path: Path):
    import os
    import re
    import time

    from orchestrator.server import free_port as port_

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "server", "--port", str(port_()),
                             "--workdir", str(tmp_path / "runs")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        deadline, text = time.time() + 90, ""
        while time.time() < deadline and "Ctrl-C" not in text:
            text += proc.stdout.readline()
        server_pid = int(re.search(r"MLflow server \(pid (\d+)\)", text).group(1))
        os.kill(server_pid, signal.SIGKILL)  # the server dies on its own, not by Ctrl-C
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "exited by itself" in out and "MLflow server stopped" not in out


def test_a_trial_killed_by_a_signal_is_one_stopped_trial_everywhere(tmp_path: Path):
    """SIGKILL to a trial: the live line, the summary, `status` and the exit code all say 'stopped'."""
    import json
    import os

    from convit.records import read_json, read_metrics
    from tests.test_local import cli as run_cli
    from tests.test_local import cli_background, sweep_file, wait_for

    work = tmp_path / "runs"
    spec = sweep_file(tmp_path, "killed", epochs=20, train=96, models="[deit_tiny]")
    submit = cli_background("submit", str(spec), "--workdir", str(work))
    try:
        wait_for(lambda: (work / "sweeps/killed/trials").is_dir() and any(
            read_metrics(d) for d in (work / "sweeps/killed/trials").iterdir()), what="a first epoch")
        (trial_dir,) = list((work / "sweeps/killed/trials").iterdir())
        os.kill(int(read_json(trial_dir / "owner.lock")["pid"]), signal.SIGKILL)
        out, _ = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == 1
    assert "killed by SIGKILL" in out and "0 trial(s) failed, 1 interrupted" in out and "failed " not in out, out
    (status,) = json.loads(run_cli("status", "killed", "--workdir", str(work), "--json").stdout)
    assert status["state"] == "interrupted" and "killed by SIGKILL" in status["detail"]
