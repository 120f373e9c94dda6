"""`convit-sweep server` on a port that is taken fails loudly and at once: exit 2, the reason and the fix on
screen, no URL printed, no second server started. Real listeners bound to 127.0.0.1; servers stopped by PID."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.server import free_port, start_server

REPO = Path(__file__).resolve().parents[1]


def server_cli(port: int, workdir: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "server", "--host", "127.0.0.1", "--port",
                             str(port), "--workdir", str(workdir)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    return result, time.monotonic() - started


def test_a_port_held_by_another_program_is_refused_in_seconds(tmp_path: Path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result, seconds = server_cli(port, tmp_path / "runs")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1 is in use; pass --port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "http://" not in result.stdout  # no URL that does not lead to this server
    assert seconds < 10  # ~0.5 s: refused before mlflow is even imported
    assert not (tmp_path / "runs").exists()  # nothing created for a server that never started


def test_a_port_held_by_a_running_mlflow_server_is_refused(tmp_path: Path):
    """The case of a second `convit-sweep server`: the first one's /health answers on that port, which must not
    be taken for the new server being up."""
    first = start_server(tmp_path / "first", host="127.0.0.1", port=free_port())
    try:
        port = int(first.uri.rsplit(":", 1)[1])
        result, seconds = server_cli(port, tmp_path / "second")
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "http://" not in result.stdout
        assert seconds < 10
        assert not (tmp_path / "second").exists()  # refused before a second server was started
        assert first.proc.poll() is None  # the first server is untouched
    finally:
        first.stop()  # SIGTERM to its PID
    assert first.proc.poll() is not None


def test_the_port_is_free_again_once_a_server_stopped(tmp_path: Path):
    """SO_REUSEADDR as uvicorn binds: a port a stopped server left in TIME_WAIT is not reported as taken."""
    from orchestrator.server import check_port

    port = free_port()
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
        client.close()
    check_port("127.0.0.1", port)  # no error


def test_a_port_out_of_range_or_a_missing_working_folder_is_one_line_and_exit_2(tmp_path: Path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for args, said in ((["--port", "99999"], "99999 is not a port"),
                       (["--workdir", str(tmp_path / "none" / "runs")], "no working folder at")):
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "server", *args], capture_output=True,
                             text=True, timeout=60, env=env)
        assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "none").exists()  # nothing created
