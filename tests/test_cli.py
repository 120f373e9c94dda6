"""The `convit-sweep` command: help texts, dry runs that touch nothing, bad input → exit 2 and nothing written,
clear errors for unavailable backends and unknown sweeps, `train` delegating to the engine's CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.backends import BACKENDS

REPO = Path(__file__).resolve().parents[1]
BAD = Path(__file__).parent / "bad_sweeps"
SWEEP = """
name: clidemo
base: {preset: smoke, epochs: 1}
grid:
  model: [convit_tiny, deit_tiny]
  data_fraction: [0.5, 1.0]
seeds: [0, 1]
"""


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    path = tmp_path / "clidemo.yaml"
    path.write_text(SWEEP)
    return path


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("command, text", [
    ("submit", "Validate a sweep file"), ("status", "each trial's state"), ("cancel", "writes an exact checkpoint"),
    ("compare", "mean ± std over seeds"), ("server", "127.0.0.1"),
])
def test_every_subcommand_has_help(command: str, text: str, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert text in " ".join(capsys.readouterr().out.split())


def test_dry_run_lists_trials_and_touches_nothing(sweep: Path, tmp_path: Path, capsys):
    work = tmp_path / "runs"
    code = cli.main(["submit", str(sweep), "--dry-run", "--workdir", str(work), "epochs=2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "8 trial(s)" in out and "would submit 8 trial(s) (0 already finished)" in out
    assert out.count("to run") == 8 and "deit_tiny" in out
    assert not work.exists() and not (REPO / "runs" / "sweeps" / "clidemo").exists()


def test_overrides_shrink_a_sweep_in_a_dry_run(sweep: Path, tmp_path: Path, capsys):
    code = cli.main(["submit", str(sweep), "--dry-run", "--workdir", str(tmp_path / "w"), "seeds=[3]",
                     "grid.data_fraction=[1.0]"])
    out = capsys.readouterr().out
    assert code == 0 and "2 trial(s)" in out and out.count("to run") == 2


def test_bad_sweep_exits_2_with_located_errors_and_writes_nothing(tmp_path: Path):
    work = tmp_path / "runs"
    bad = BAD / "many_problems.yaml"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(bad), "--workdir", str(work)],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert f"{bad}:9: base.epoch: unknown trial key 'epoch' (did you mean 'epochs'?)" in result.stderr
    assert f"{bad}:14: local.cpus_per_trial:" in result.stderr
    assert "Traceback" not in result.stderr
    assert files_under(work) == []


def test_bad_override_exits_2(sweep: Path, tmp_path: Path, capsys):
    code = cli.main(["submit", str(sweep), "--workdir", str(tmp_path / "w"), "epochs=-1"])
    assert code == 2
    assert "<command line>: epochs: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf"])
def test_a_bad_tracking_retry_interval_is_refused_before_anything_runs(value: str, sweep: Path, tmp_path: Path,
                                                                        capsys, monkeypatch):
    monkeypatch.setenv("CONVIT_TRACKING_RETRY_S", value)
    for argv in (["submit", str(sweep), "--workdir", str(tmp_path / "w")],
                 ["train", "smoke", "epochs=1", "--out", str(tmp_path / "w")]):
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2 and f"CONVIT_TRACKING_RETRY_S='{value}': expected a positive number of seconds" in err
        assert not (tmp_path / "w").exists()


def test_the_tracking_retry_interval_reaches_a_trials_run(monkeypatch, tmp_path: Path):
    from orchestrator.tracking import TrialRun

    def never(*_: object) -> str:
        raise ConnectionError("down")

    class Down:
        uri = "http://127.0.0.1:9"

    warnings: list[str] = []
    monkeypatch.setenv("CONVIT_TRACKING_RETRY_S", "2.5")
    run = TrialRun(Down(), tmp_path / "metrics.jsonl", never, warnings.append)  # type: ignore[arg-type]
    assert run.retry_s == 2.5 and run.down_since is not None and "is not answering" in warnings[0]
    monkeypatch.delenv("CONVIT_TRACKING_RETRY_S")
    assert TrialRun(Down(), tmp_path / "metrics.jsonl", never, warnings.append).retry_s == 30.0  # type: ignore[arg-type]


def test_unavailable_backend_is_a_clear_error(sweep: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setitem(BACKENDS, "ray", "orchestrator.backends.not_written_yet:RayBackend")
    code = cli.main(["submit", str(sweep), "--backend", "ray", "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and "the 'ray' backend is not available" in err
    assert not (tmp_path / "w").exists()  # refused before anything was recorded
    monkeypatch.setitem(BACKENDS, "ray", "orchestrator.backends.local:NoSuchClass")
    assert cli.main(["submit", str(sweep), "--backend", "ray", "--workdir", str(tmp_path / "w")]) == 2


def test_unknown_sweep_names_the_known_ones(tmp_path: Path, capsys):
    assert cli.main(["status", "nope", "--workdir", str(tmp_path)]) == 2
    assert "no sweep named 'nope'" in capsys.readouterr().err
    assert cli.main(["compare", "nope", "--workdir", str(tmp_path)]) == 2
    assert cli.main(["cancel", "nope", "--workdir", str(tmp_path)]) == 2


def test_train_delegates_to_the_engine_cli(tmp_path: Path, capsys):
    code = cli.main(["train", "smoke", "epochs=3", "--out", str(tmp_path / "t"), "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["config"]["epochs"] == 3 and printed["config_hash"]
    assert cli.main(["train", "smoke", "epochs=0", "--out", str(tmp_path / "t")]) == 2


def test_server_command_prints_its_uri_and_stops_on_ctrl_c(tmp_path: Path):
    import re
    import signal
    import time
    import urllib.request

    from orchestrator.server import free_port
    from orchestrator.status import pid_alive

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "server", "--port", str(port),
                             "--workdir", str(tmp_path / "runs")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, line = time.time() + 90, ""
        while time.time() < deadline and "Ctrl-C" not in line:
            line += proc.stdout.readline()
        found = re.search(r"MLflow server \(pid (\d+)\) at (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        server_pid, uri = int(found.group(1)), found.group(2)
        assert uri == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, line + proc.stdout.read()  # what it said on the way out (seen once, under load)
        assert not pid_alive(server_pid)
        assert (tmp_path / "runs" / "mlflow.db").is_file()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_status_prints_a_failed_trials_whole_reason_below_the_table(capsys):
    from orchestrator.status import TrialStatus

    reason = "TrialFailed: non-finite loss at epoch 3 step 17 · job 12_3\nstderr (12_3_0_log.err):\n" + "x" * 120
    cli._print_status("demo", [TrialStatus("abc123", "lr=0.1", "failed", detail=reason),
                               TrialStatus("def456", "lr=0.01", "done", detail="ok")])
    out = capsys.readouterr().out
    assert "abc123 (lr=0.1) failed:" in out and "x" * 120 in out  # the stderr tail in full
    assert "def456 (lr=0.01) failed" not in out
    assert "1 done · 1 failed" in out
