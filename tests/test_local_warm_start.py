"""The local backend's warm starter (orchestrator.backends.warm_start): trials forked from a process that has
imported torch, timm and MLflow once must be the processes a cold start makes (own session, own environment
and thread budget, own log, the runner's exit code), a crash must stay in its trial, and a starter that dies
must cost no trial."""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from convit.exitcodes import EXIT_OK
from convit.records import pid_alive, read_json, trial_owner
from orchestrator.backends.warm_start import WarmStarter
from tests.test_local import REPO, cli_background, sweep_file, wait_for

# The real starter loop with the trial body replaced by a probe (the trial runner itself is tested end to end
# below): it prints what the trial process sees, then does what the trial folder's name asks.
PROBE = textwrap.dedent("""
    import os, sys, time
    from orchestrator import trial_runner
    from orchestrator.process_env import apply_thread_budget
    from orchestrator.backends.warm_start import serve

    def probe(argv):
        apply_thread_budget()
        import torch
        print(f"session={os.getsid(0) == os.getpid()} threads={torch.get_num_threads()} "
              f"cuda={os.environ.get('CUDA_VISIBLE_DEVICES')} marker={os.environ.get('PROBE_MARKER')} "
              f"argv={sys.argv[1:]}", flush=True)
        action = os.path.basename(argv[0])
        if action == "sleep":
            time.sleep(60)
        if action == "raise":
            raise RuntimeError("probe failure")
        if action == "exit7":
            raise SystemExit(7)
        return 0

    trial_runner.main = probe
    sys.exit(serve(sys.stdin, sys.stdout))
""")


@pytest.fixture
def starter(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    started = WarmStarter(env, command=[sys.executable, "-c", PROBE])
    assert started.wait_ready(), started.reason
    yield started
    started.close()


def _env(threads: int, marker: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "CONVIT_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
            "CUDA_VISIBLE_DEVICES": "", "PROBE_MARKER": marker}


def _says(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


def test_a_forked_trial_gets_its_own_session_environment_threads_and_log(starter: WarmStarter, tmp_path: Path):
    runs = []
    for threads, name in ((1, "one"), (2, "two")):
        log = tmp_path / f"{name}.log"
        trial = starter.start(tmp_path / name, _env(threads, name), log)
        assert trial is not None
        runs.append((trial, log, threads, name))
    for trial, log, threads, name in runs:
        assert trial.wait(timeout=60) == EXIT_OK
        assert log.read_text().strip() == (f"session=True threads={threads} cuda= marker={name} "
                                           f"argv=['{tmp_path / name}']")


def test_exit_codes_are_the_processes_own(starter: WarmStarter, tmp_path: Path):
    failing = starter.start(tmp_path / "raise", _env(1, "r"), tmp_path / "raise.log")
    exiting = starter.start(tmp_path / "exit7", _env(1, "e"), tmp_path / "exit7.log")
    sleeping = starter.start(tmp_path / "sleep", _env(1, "s"), tmp_path / "sleep.log")
    assert failing and exiting and sleeping
    assert failing.wait(timeout=60) == 1
    assert "RuntimeError: probe failure" in (tmp_path / "raise.log").read_text()
    assert exiting.wait(timeout=60) == 7
    wait_for(lambda: _says(tmp_path / "sleep.log", "session=True"), 30, "the sleeping trial to start")
    os.killpg(sleeping.pid, signal.SIGKILL)  # a crash stays in its trial: the starter serves on
    assert sleeping.wait(timeout=30) == -signal.SIGKILL
    again = starter.start(tmp_path / "after", _env(1, "a"), tmp_path / "after.log")
    assert again is not None and again.wait(timeout=60) == EXIT_OK


def test_a_dead_starter_costs_no_trial(starter: WarmStarter, tmp_path: Path):
    sleeping = starter.start(tmp_path / "sleep", _env(1, "s"), tmp_path / "sleep.log")
    assert sleeping is not None
    wait_for(lambda: _says(tmp_path / "sleep.log", "session=True"), 30, "the trial to start")
    os.kill(starter._proc.pid, signal.SIGKILL)
    wait_for(lambda: not starter.alive, 30, "the scheduler to see the starter gone")
    assert sleeping.poll() is None and pid_alive(sleeping.pid)  # the trial runs on without its starter
    assert starter.start(tmp_path / "next", _env(1, "n"), tmp_path / "next.log") is None  # next ones: cold
    assert "exited" in starter.reason
    os.killpg(sleeping.pid, signal.SIGKILL)
    assert sleeping.wait(timeout=30) == -signal.SIGKILL  # no status.json says otherwise: it died


def test_sweep_trials_are_forked_warm_and_start_cold_once_the_starter_is_gone(tmp_path: Path):
    """End to end: two real trials, one at a time; the starter is killed while the first runs; that trial still
    ends done, the second starts cold, and the sweep finishes."""
    spec = sweep_file(tmp_path, "warm", epochs=8, train=64, models="[convit_tiny, deit_tiny]")
    spec.write_text(spec.read_text().replace("max_parallel: 2", "max_parallel: 1"))
    work = tmp_path / "runs"
    proc = cli_background("submit", str(spec), "--workdir", str(work))
    trials = work / "sweeps" / "warm" / "trials"
    wait_for(lambda: any((d / "config.json").exists() for d in trials.glob("*/")), 180, "the first trial's start")
    first = next(d for d in trials.glob("*/") if (d / "config.json").exists())
    runner = int((trial_owner(first) or {})["pid"])
    starter_pid = int(Path(f"/proc/{runner}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
    assert "orchestrator.backends.warm_start" in Path(f"/proc/{starter_pid}/cmdline").read_text()
    os.kill(starter_pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "start cold from here on" in out
    assert out.count("done        ") == 2
    assert all((read_json(d / "status.json", {}) or {}).get("state") == "done" for d in trials.glob("*/"))


def test_a_stop_while_the_starter_imports_is_not_held_up():
    """`cancel` must not wait for a slow starter: wait_ready gives up as soon as a stop is asked for."""
    never_ready = WarmStarter(dict(os.environ), command=[sys.executable, "-c", "import time; time.sleep(60)"])
    asked = time.monotonic() + 0.5
    started = time.monotonic()
    assert not never_ready.wait_ready(timeout_s=60, should_stop=lambda: time.monotonic() > asked)
    assert time.monotonic() - started < 5 and never_ready.reason == "stopping"
    never_ready.close(timeout_s=0.5)  # it does not read its input: killed
    assert never_ready._proc.poll() is not None


def test_release_stops_a_starter_that_submit_never_used(tmp_path: Path):
    from orchestrator.backends.local import LocalBackend
    from orchestrator.sections import LocalSection
    from orchestrator.workdir import SweepContext

    backend = LocalBackend()
    backend.prepare(SweepContext(name="s", workdir=tmp_path, tracking_uri="sqlite:///x.db", experiment="s",
                                 options=LocalSection()))
    starter = backend._starter
    assert starter is not None and starter._proc.poll() is None
    backend.release()
    assert starter._proc.poll() is not None and backend._starter is None


def test_a_fork_waits_for_the_run_opening_in_the_background():
    """DataLoader workers are forked while the trial's MLflow run may still be opening in a thread: the fork
    waits for it, so no child inherits a lock held mid-import or mid-write."""
    from orchestrator.trial_runner import _OpeningRun

    opened_at: list[float] = []

    def slow_open():
        time.sleep(1.0)
        opened_at.append(time.monotonic())
        return "run"

    opening = _OpeningRun(slow_open)  # type: ignore[arg-type]
    time.sleep(0.1)  # the thread holds the lock now
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    forked_at = time.monotonic()
    os.waitpid(pid, 0)
    assert opening.get() == "run" and opened_at and forked_at >= opened_at[0]
