"""Warm trial starts for the local backend: import torch, timm and MLflow once, fork each trial from there.

A cold trial process spends 6-9 s importing torch, timm, torchvision and MLflow's SQL store before its first
training step, and 1.5-2.5 s tearing them down after its last; on a sweep of short trials that is most of each
trial's life. The local scheduler therefore starts one *warm starter* per ``submit``: a process
(``python -m orchestrator.backends.warm_start``) that imports what a trial imports and then waits. For each
trial it forks a child that becomes exactly what a cold start would be:

- its own session and process group (``os.setsid``): signals from the terminal or the scheduler reach the
  trial and its DataLoader workers only, as with ``start_new_session``;
- its own environment (thread budget, ``CUDA_VISIBLE_DEVICES``), set before anything reads it: the starter
  imports torch but runs no operator, so no OpenMP/BLAS thread pool and no CUDA context exists at the fork
  (it checks that it runs no Python thread and no CUDA context, and refuses to serve otherwise);
- stdout and stderr to the trial's log, stdin from /dev/null;
- ``orchestrator.trial_runner.main`` with the trial's folder, the same entry point as a cold start; its
  exit code is the process's (atexit handlers run, the interpreter's teardown is skipped).

A crash in one trial takes only that child down. If the starter itself dies, the trials it started run on (they
are not its threads), the scheduler learns their end from their pid and the status.json each trial writes, and
starts the remaining trials cold. Why not ``multiprocessing``'s forkserver: it re-imports the parent's
``__main__`` in every child (a user's embedding script would run again per trial) and gives a child neither a
session nor a log of its own.

Protocol, one JSON object per line. Scheduler → starter: ``{"trial_dir", "env", "log"}``. Starter → scheduler:
``{"ready": true, "seconds"}`` (or ``{"ready": false, "reason"}``) once, then ``{"started": pid}`` per request in
order and ``{"exited": pid, "code": exit code, -signal number if killed}`` as children end; ``{"closed": reason}``
if it stops forking (it then only reports its running children's ends).
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from convit.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from convit.records import pid_alive, process_start
from orchestrator.status import read_status

#: What a trial imports on its way to the first step (measured: ``python -X importtime``), in import order: the
#: starter says it is ready once these are in.
PRELOAD = ("torch", "timm", "convit.engine", "convit.data.transforms", "orchestrator.trial_runner")
#: What a trial imports in the background (its MLflow run opens in a thread while it trains): preloaded after
#: the starter is ready, between requests, so the first trial of a sweep does not wait for it and later ones
#: find it imported.
PRELOAD_LATER = ("orchestrator.trial_tracking", "mlflow.store.tracking.sqlalchemy_store",
                 "mlflow.store.tracking.rest_store", "alembic.command", "alembic.runtime.migration",
                 "sqlalchemy.dialects.sqlite")
READY_TIMEOUT_S = 120.0
_POLL_S = 0.05


# ------------------------------------------------------------------------------------------- the starter
def serve(requests: IO[str], replies: IO[str]) -> int:
    """The starter's loop: preload, say ready, fork one child per request, report each child's exit."""
    started = time.perf_counter()
    try:
        for name in PRELOAD:
            importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported to the scheduler, which starts trials cold instead
        _reply(replies, {"ready": False, "reason": f"import failed: {type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    unsafe = _fork_hazard()
    if unsafe:
        _reply(replies, {"ready": False, "reason": unsafe})
        return EXIT_FAILED
    _reply(replies, {"ready": True, "seconds": round(time.perf_counter() - started, 2), "pid": os.getpid()})
    children: set[int] = set()
    later = list(PRELOAD_LATER)
    fd = requests.fileno()
    open_input = True
    while open_input or children:
        waiting = open_input and select.select([fd], [], [], 0 if later else _POLL_S)[0]
        if open_input and not waiting and later:
            _import_quietly(later.pop(0))  # idle: the next of the later imports (a request waits for one at most)
            hazard = _fork_hazard()
            if hazard:  # an import started a thread: fork no more (the scheduler starts the rest cold)
                open_input = False
                _reply(replies, {"closed": hazard})
        elif waiting:
            line = requests.readline()
            if not line:
                open_input = False  # the scheduler is gone or done: serve no more, report the running ones
            elif line.strip():
                pid = _fork_trial(json.loads(line), requests, replies)
                children.add(pid)
                _reply(replies, {"started": pid})
        elif not open_input:
            time.sleep(_POLL_S)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                _reply(replies, {"exited": pid, "code": os.waitstatus_to_exitcode(status)}, broken_ok=True)
    return EXIT_OK


def _import_quietly(name: str) -> None:
    """A later preload; one that fails is left to the trial that needs it (it fails there, with its own log)."""
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001,S110 - not needed to fork trials
        pass


def _fork_hazard() -> str:
    """Why forking this process now would be unsafe, or "". A Python thread could hold a lock at the fork, and a
    CUDA context does not survive one. Idle native threads that libraries start at import (torch's, jemalloc's
    background thread) are what every DataLoader worker forked after ``import torch`` lives with."""
    if threading.active_count() > 1:
        return f"{threading.active_count()} Python threads after the imports; forking is unsafe"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised by an import; a forked trial could not use it"
    return ""


def _reply(replies: IO[str], message: Mapping[str, Any], broken_ok: bool = False) -> None:
    try:
        replies.write(json.dumps(message) + "\n")
        replies.flush()
    except BrokenPipeError:
        if not broken_ok:
            raise


def _fork_trial(request: Mapping[str, Any], requests: IO[str], replies: IO[str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = EXIT_FAILED
    try:  # the child: never returns into the starter's loop
        code = _become_trial(request, requests, replies)
    except SystemExit as stop:  # e.g. a second stop signal while the atexit handlers ran
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else EXIT_FAILED)
    except KeyboardInterrupt:  # a SIGINT before the trial runner installed its handlers
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - a failure before the runner started: into the trial's log
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001,S110 - exiting anyway
                pass
        os._exit(code)


def _become_trial(request: Mapping[str, Any], requests: IO[str], replies: IO[str]) -> int:
    """Turn the forked child into the trial process a cold start makes; returns its exit code."""
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for fd in {log, null, requests.fileno(), replies.fileno()} - {0, 1, 2}:
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.environ.clear()
    os.environ.update(request["env"])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    from orchestrator import trial_runner  # heavy: mlflow, torch (preloaded here; the scheduler never imports it)

    sys.argv = [trial_runner.__file__, str(request["trial_dir"])]
    try:
        code = trial_runner.main([str(request["trial_dir"])])
    except SystemExit as stop:  # what the interpreter would make of it
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = EXIT_FAILED
    atexit._run_exitfuncs()  # logging's flush, MLflow's own; the interpreter's module teardown is skipped
    return int(code)


# ------------------------------------------------------------------------------------------ the scheduler's side
class WarmStarter:
    """The scheduler's handle on one starter process: start it early, ``start`` trials through it, ``close``."""

    def __init__(self, env: Mapping[str, str], command: Sequence[str] = ()):
        """``command``: the starter's command line (default ``python -m orchestrator.backends.warm_start``)."""
        self._proc = subprocess.Popen(list(command) or [sys.executable, "-m", "orchestrator.backends.warm_start"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=dict(env), start_new_session=True, text=True, bufsize=1)
        self._stderr: deque[str] = deque(maxlen=20)  # the starter's own last words, for the reason it gave up
        self._lock = threading.Condition()
        self._ready: bool | None = None
        self.reason = ""
        self._started: list[int] = []
        self._codes: dict[int, int] = {}
        self._alive = True
        self._accepting = True  # False once the starter said it forks no more
        self._threads = [threading.Thread(target=self._read, name="warm-start-replies", daemon=True),
                         threading.Thread(target=self._drain, name="warm-start-stderr", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip())

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if "ready" in message:
                    self._ready = bool(message["ready"])
                    self.reason = str(message.get("reason", ""))
                elif "started" in message:
                    self._started.append(int(message["started"]))
                elif "exited" in message:
                    self._codes[int(message["exited"])] = int(message["code"])
                elif "closed" in message:
                    self._accepting, self.reason = False, str(message["closed"])
                self._lock.notify_all()
        with self._lock:
            self._alive = False
            if self._ready is None:
                last = next((line for line in reversed(self._stderr) if line.strip()), "")
                self._ready, self.reason = False, (f"the warm starter exited ({self._proc.wait()}) before it was "
                                                   f"ready{': ' + last if last else ''}")
            elif self._ready:
                self.reason = f"the warm starter exited ({self._proc.wait()})"
            self._lock.notify_all()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """True once the starter has imported what trials need; False if it failed, died, took over
        ``timeout_s``, or ``should_stop()`` turned true meanwhile (checked twice a second: a cancel is not held
        up by a slow start)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._ready is None and not should_stop() and time.monotonic() < deadline:
                self._lock.wait(timeout=0.5)
            if self._ready is None:
                self.reason = "stopping" if should_stop() else f"not ready after {timeout_s:.0f} s"
            return bool(self._ready) and self._alive

    def start(self, trial_dir: Path, env: Mapping[str, str], log_path: Path) -> WarmTrial | None:
        """Fork a trial; None when the starter cannot (not ready, or gone: start it cold)."""
        if not self.wait_ready() or not self._accepting:
            return None
        request = json.dumps({"trial_dir": str(trial_dir), "env": dict(env), "log": str(log_path)})
        with self._lock:
            expected = len(self._started) + 1
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(request + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return None
            self._lock.wait_for(lambda: len(self._started) >= expected or not self._alive or not self._accepting,
                                timeout=30)
            if len(self._started) < expected:  # never serve this request later: the trial is about to start cold
                self.reason = self.reason or "the warm starter did not answer within 30 s"
                self._proc.kill()
                return None
            pid = self._started[expected - 1]
        return WarmTrial(self, pid, trial_dir)

    def exit_code(self, pid: int) -> int | None:
        with self._lock:
            return self._codes.get(pid)

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._alive

    def close(self, timeout_s: float = 5.0) -> None:
        """No more trials: the starter exits once its children have (it keeps reporting them until then)."""
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for thread in self._threads:  # both end at the pipes' end of file, now the starter has exited
            thread.join(timeout=2)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()


class WarmTrial:
    """A forked trial with the part of ``subprocess.Popen``'s interface the scheduler uses (pid, poll, wait)."""

    def __init__(self, starter: WarmStarter, pid: int, trial_dir: Path):
        self.starter, self.pid, self.trial_dir = starter, pid, trial_dir
        self._start = process_start(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.starter.exit_code(self.pid)
            if self.returncode is None and not self.starter.alive and not self._running():
                self.returncode = self._recorded_code()  # the starter died first: the trial's own record says
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"trial {self.pid}", timeout or 0)
            time.sleep(_POLL_S)
        return self.returncode  # type: ignore[return-value]

    def _running(self) -> bool:
        return pid_alive(self.pid) and process_start(self.pid) == self._start

    def _recorded_code(self) -> int:
        state = read_status(self.trial_dir).get("state")
        return {"done": EXIT_OK, "interrupted": EXIT_INTERRUPTED, "failed": EXIT_FAILED}.get(
            str(state), -signal.SIGKILL)  # still "running": it died without a word


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))
