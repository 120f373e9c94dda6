"""A real ``mlflow server`` over the working folder's store, for the UI and for many concurrent writers.

Started lean (measured in the team notes on the stack): one uvicorn worker and no job runner
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``) — 2 processes and ~0.5 GB instead of 15 and ~3 GB — bound to
127.0.0.1 unless asked otherwise. It runs in its own session and is stopped by its PID (SIGTERM ends the
whole server), never by name.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from convit.exitcodes import EXIT_FAILED, EXIT_OK
from orchestrator.errors import OrchestratorError


@dataclass
class ServerHandle:
    proc: subprocess.Popen[bytes]
    uri: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the server's PID, SIGKILL to its process group if it has not ended in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Refuse, in milliseconds and with the fix, a port something already listens on (another MLflow server
    would even answer our health check while ours dies on the bind). SO_REUSEADDR as uvicorn binds: a port
    left in TIME_WAIT by a server that just stopped is free."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OrchestratorError(f"cannot bind the MLflow server to '{host}' ({exc.strerror}); pass --host "
                                "127.0.0.1 or an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except PermissionError:
            raise OrchestratorError(f"port {port} on {host} needs privileges to bind; pass --port 5000 or another "
                                    "port above 1023") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OrchestratorError(f"port {port} on {host} is in use; pass --port (e.g. --port {port + 1}), or "
                                        "stop what listens there") from None
            raise OrchestratorError(f"cannot bind the MLflow server to {host}:{port} ({exc.strerror or exc}); "
                                    "pass another --host or --port") from None


def start_server(workdir: Path, host: str = "127.0.0.1", port: int = 5000, backend_store_uri: str | None = None,
                 ready_timeout_s: float = 90.0) -> ServerHandle:
    """Start the server and return once /health answers; raises OrchestratorError with its log if it cannot
    (a port in use before anything starts)."""
    port = port or free_port(host)
    check_port(host, port)
    from orchestrator.tracking import ARTIFACTS_DIR, default_tracking_uri  # heavy: mlflow, after the port check

    workdir.mkdir(parents=True, exist_ok=True)
    store = backend_store_uri or default_tracking_uri(workdir)
    log_path = workdir / "mlflow-server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
           "--artifacts-destination", str(workdir / ARTIFACTS_DIR), "--serve-artifacts",
           "--host", host, "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    start = log_path.stat().st_size if log_path.exists() else 0  # this start's lines only, in messages
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=workdir)
    handle = ServerHandle(proc, f"http://{host}:{port}", log_path)
    deadline = time.time() + ready_timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = _tail(log_path, start=start)
            if "address already in use" in tail.lower():  # taken between check_port and the server's bind
                raise OrchestratorError(f"port {port} on {host} is in use; pass --port (e.g. --port {port + 1})")
            raise OrchestratorError(f"mlflow server exited with code {proc.returncode}; the end of its log "
                                    f"({log_path}):\n{tail}")
        if _healthy(handle.uri) and proc.poll() is None:
            return handle
        time.sleep(0.5)
    handle.stop()
    raise OrchestratorError(f"mlflow server did not answer on {handle.uri} within {ready_timeout_s:.0f} s:\n"
                            f"{_tail(log_path, start=start)}")


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _tail(path: Path, lines: int = 15, start: int = 0) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def serve_forever(workdir: Path, host: str = "127.0.0.1", port: int = 5000, backend_store_uri: str | None = None,
                  console: Console | None = None) -> int:
    """The ``convit-sweep server`` command: start, print the URI, wait for Ctrl-C or SIGTERM, stop by PID."""
    console = console or Console()
    handle = start_server(workdir, host, port, backend_store_uri)
    console.print(f"MLflow server (pid {handle.pid}) at [bold]{handle.uri}[/]  ·  log: {handle.log_path}")
    console.print(f"submit against it:  convit-sweep submit FILE --tracking-uri {handle.uri}")
    console.print("Ctrl-C stops it")
    stop = {"now": False}

    def on_term(signum: int, frame: object) -> None:
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while not stop["now"] and handle.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        crashed = handle.proc.poll()  # ended by itself, not by us
        handle.stop()
    if crashed is not None:
        tail = "\n".join(handle.log_path.read_text(errors="replace").splitlines()[-15:]) if handle.log_path.exists() \
            else ""
        console.print(f"[red]the MLflow server exited by itself (exit code {crashed})[/]; the end of its log "
                      f"({handle.log_path}):\n{escape(tail)}", highlight=False)
        return EXIT_FAILED
    console.print("MLflow server stopped")
    return EXIT_OK
