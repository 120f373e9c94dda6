"""The SLURM backend end to end on the real local cluster (slurm/start.sh): real slurmctld/slurmd/slurmdbd, real
sbatch arrays through submitit, a real MLflow sqlite store, the real `convit-sweep` command.

One module fixture drives every scenario on the 2-CPU nodes at once (3-4 minutes in all) and the tests
check one behaviour each:

* ``main``: 5 trials as ONE job array, submitted from a private copy of the code that is broken right after
  submission (the code snapshot must keep every task working): trial 0 gets ``scancel --signal=USR2`` mid-epoch
  (preemption), trial 1 ``scontrol requeue``, trial 4 fails (its image files are not images).
* ``limit``: one trial longer than its 1-minute time limit, requeued at the limit until it completes.
* ``stop``: ``convit-sweep cancel`` while one trial runs and one is queued, then submitted again.
* ``ddp``: one trial as two tasks on one node (DDP over gloo through submitit's TorchDistributedEnvironment).
* ``ddp2`` (on a cluster of two nodes or more: ``slurm/start.sh --nodes 2``): the same trial as one task on each of
  two nodes, preempted (USR2) and then requeued (``scontrol requeue``) while it trains; it must end where the
  uninterrupted one-node run ended.

Skipped, with the reason, where no cluster answers.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from orchestrator.tracking import Tracker, default_tracking_uri
from convit.records import read_json, read_metrics

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 720.0  # the fixture takes 3-5 min (time-limited trial's requeues, SLURM queueing; load)


def node_count() -> int:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=15)
    return len(set(out.stdout.split()))


def cluster_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client on PATH (start the local cluster: sudo bash slurm/start.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer (sinfo timed out)"
    if out.returncode != 0 or not out.stdout.strip():
        return f"the SLURM controller does not answer: {out.stderr.strip()}"
    acct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minute"], capture_output=True, text=True, timeout=15)
    if acct.returncode != 0:
        return f"SLURM accounting (sacct) is not available: {acct.stderr.strip()}"
    return None


SMOKE = {"preset": "smoke", "synthetic_val_size": 16}
MAIN = {
    "name": "main",
    "base": {**SMOKE, "epochs": 3, "synthetic_train_size": 256},
    "zip": {"model": ["convit_tiny", "convit_tiny", "deit_tiny", "deit_tiny", "deit_tiny"],
            "seed": [0, 1, 0, 1, 2],
            "dataset": ["synthetic", "synthetic", "synthetic", "synthetic", "imagefolder"]},
    "slurm": {"profile": "local", "array_parallelism": 2},
}
# 256 steps of 16 images: ~37 s of training on an idle core, ~75 s beside the other scenarios (+6-9 s start-up per
# job). A job trains at most ~27 s before its USR2 (SLURM sends it up to a minute early, and the task's backstop
# sends it 35 s after the start at the latest: signal_delay_s / 2 before the end), so at least one requeue even on
# an idle machine; three or four jobs in all beside the other scenarios.
LIMIT_EPOCHS = 4
LIMIT = {
    "name": "limit",
    "base": {**SMOKE, "epochs": LIMIT_EPOCHS, "synthetic_train_size": 1024, "analysis_every": 0},
    "seeds": [0],
    "slurm": {"profile": "local", "timeout_min": 1, "signal_delay_s": 50, "max_requeues": 20},
}
DDP_EPOCHS = 6  # ~1 s each as two ranks: long enough for a USR2 and then an `scontrol requeue` to land mid-trial
DDP = {
    "name": "ddp",
    "base": {**SMOKE, "epochs": DDP_EPOCHS, "synthetic_train_size": 128},
    "seeds": [0],
    "slurm": {"profile": "local", "tasks_per_node": 2},
}
DDP2 = {**DDP, "name": "ddp2", "slurm": {"profile": "local", "nodes": 2, "tasks_per_node": 1}}
BROKEN = {  # submitted from a code copy whose engine cannot be imported on the compute node
    "name": "broken",
    "base": {**SMOKE, "epochs": 1, "synthetic_train_size": 64},
    "seeds": [0],
    "slurm": {"profile": "local"},
}
STOP_EPOCHS = 8  # long enough that `cancel` (a CLI start-up, ~2 s) lands while the first trial still trains
STOP = {
    "name": "stop",
    "base": {**SMOKE, "epochs": STOP_EPOCHS, "synthetic_train_size": 128, "num_workers": 2},  # SIGTERM reaches workers too
    "seeds": [0, 1],
    "slurm": {"profile": "local", "array_parallelism": 1},
}


# ------------------------------------------------------------------------------------------------ helpers
class Session:
    """The CLI against one working folder, from a given code folder, with the collected observations."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.work = tmp / "runs"
        self.code = tmp / "code"
        self.seen: dict[str, Any] = {}

    def cli(self, *args: str, code: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(code or REPO))
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--workdir", str(self.work)],
                             cwd=self.tmp, env=env, capture_output=True, text=True, timeout=timeout)
        return out

    def submit(self, spec: dict[str, Any], code: Path | None = None) -> None:
        import yaml

        path = self.tmp / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec))
        out = self.cli("submit", str(path), "--backend", "slurm", code=code)
        assert out.returncode == 0, out.stdout + out.stderr
        self.seen[f"submit_{spec['name']}"] = out.stdout + out.stderr

    def sweep_dir(self, name: str) -> Path:
        return self.work / "sweeps" / name

    def trials(self, name: str) -> list[dict[str, Any]]:
        return read_json(self.sweep_dir(name) / "trials.json", [])

    def job_of(self, name: str, trial_id: str) -> str:
        return read_json(self.sweep_dir(name) / "slurm.json")["tasks"][trial_id]

    def arrays(self, name: str) -> list[str]:
        return [a["job_id"] for a in read_json(self.sweep_dir(name) / "slurm.json")["arrays"]]

    def status(self, name: str) -> list[dict[str, Any]]:
        out = self.cli("status", name, "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    def settlers(self, name: str) -> list[str]:
        return [a["job_id"] for a in read_json(self.sweep_dir(name) / "slurm.json").get("settlers", [])]

    def queued(self, arrays: list[str]) -> bool:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                             text=True, timeout=30)
        return bool(out.stdout.strip())


def wait_for(predicate, deadline: float, what: str, poll: float = 0.1) -> None:
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def epochs_done(trial_dir: Path) -> int:
    return len(read_metrics(trial_dir))


def starts_of(trial_dir: Path) -> list[dict[str, Any]]:
    return (read_json(trial_dir / "slurm_task.json", {}) or {}).get("starts", [])


def signal_when(s: Session, pending: dict[str, tuple[Path, Any, Any]], deadline: float) -> None:
    """Run each action (a scancel/scontrol command, or a function) once its condition holds (polled every 50 ms);
    record the trial's epochs at that moment as ``<key>_at_epoch``."""
    while pending and time.time() < deadline:
        for key, (trial_dir, ready, action) in list(pending.items()):
            if ready():
                action() if callable(action) else slurm_command(action)
                s.seen[f"{key}_at_epoch"] = epochs_done(trial_dir)
                del pending[key]
        time.sleep(0.05)
    assert not pending, f"the trials were never ready for: {list(pending)}"


def every(seconds: float, predicate: Callable[[], bool]) -> Callable[[], bool]:
    """``predicate``, asked at most every ``seconds`` (False in between): for conditions that cost a SLURM query."""
    last = [-math.inf]

    def throttled() -> bool:
        if time.monotonic() - last[0] < seconds:
            return False
        last[0] = time.monotonic()
        return predicate()
    return throttled


def slurm_command(cmd: list[str]) -> None:
    """Run scancel/scontrol. Slurm 22.05 answers a signal to one task of an array whose other tasks are
    pending with "Job can not be altered now, try again later" although it delivered the signal, and scancel
    then retries for ever: give it a few seconds, the effect is checked by the tests."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return
    assert proc.returncode == 0, f"{' '.join(cmd)}: {err}"


def sacct_states(job_id: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-o", "State", "-j", job_id], capture_output=True,
                         text=True, timeout=30)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def scancel_all(session: Session) -> None:
    for name in ("main", "limit", "stop", "ddp", "ddp2", "broken"):
        try:
            ids = session.arrays(name) + session.settlers(name)
        except (TypeError, KeyError):
            continue
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


# ------------------------------------------------------------------------------------------------ fixture
@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Session:
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    session = Session(tmp_path_factory.mktemp("slurm"))
    for folder in ("convit", "orchestrator", "slurm/profiles"):
        shutil.copytree(REPO / folder, session.code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    deadline = time.time() + DEADLINE_S
    try:
        _drive(session, deadline)
    except BaseException:
        scancel_all(session)
        raise
    return session


def corrupt_imagefolder(root: Path) -> Path:
    """An ImageFolder that passes the submit-time data check (layout, counts: after the validation hold-out the
    training subset still fills a smoke batch of 16; image headers readable) but whose files are truncated PNGs (a
    broken copy): the trial that decodes them fails at run time, naming the file."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buffer, "PNG")
    truncated = buffer.getvalue()[:200]
    for split, per_class in (("train", 8), ("val", 1)):
        for label in "abcd":
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{i}.png").write_bytes(truncated)
    return root


def mark(s: Session, what: str) -> None:
    """A timeline of the fixture on stderr (pytest shows it with a failure, or with -s): where its minutes go."""
    s.seen.setdefault("t0", time.time())
    print(f"[{time.time() - s.seen['t0']:6.1f} s] {what}", file=sys.stderr, flush=True)


def _drive(s: Session, deadline: float) -> None:
    mark(s, "start")
    s.submit(LIMIT)
    # A task that fails before its trial runner starts (the engine cannot be imported on the compute node).
    broken_code = s.tmp / "broken-code"
    for folder in ("convit", "orchestrator", "slurm/profiles"):
        shutil.copytree(REPO / folder, broken_code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    engine = broken_code / "convit" / "engine" / "__init__.py"
    engine.write_text("raise ImportError('simulated: torch is broken on this node')\n" + engine.read_text())
    s.submit(BROKEN, code=broken_code)
    s.submit({**MAIN, "base": {**MAIN["base"], "data_root": str(corrupt_imagefolder(s.tmp / "corrupt"))}},
             code=s.code)
    # The working tree the sweep was submitted from changes under the queued and running tasks.
    broken = s.code / "convit" / "engine" / "trial.py"
    broken.write_text(broken.read_text() + "\nraise RuntimeError('the working tree was edited after submit')\n")
    main = s.trials("main")
    preempted, requeued = (s.sweep_dir("main") / "trials" / main[i]["id"] for i in (0, 1))

    # Preemption (USR2) and an admin requeue, each while its trial is in its second epoch.
    signal_when(s, {"usr2": (preempted, lambda: epochs_done(preempted) >= 1,
                             ["scancel", "--signal=USR2", s.job_of("main", main[0]["id"])]),
                    "requeue": (requeued, lambda: epochs_done(requeued) >= 1,
                                ["scontrol", "requeue", s.job_of("main", main[1]["id"])])}, deadline)
    mark(s, "main: USR2 and requeue sent")

    # At once, queued behind main's last tasks: the same DDP trial across two nodes, preempted then requeued; a
    # sweep cancelled while one trial runs and the other waits, then submitted again; one DDP trial on one node
    # (two tasks). Submitted now rather than after main: most of each scenario is waiting on SLURM (requeue
    # delays, signal cycles), which overlaps.
    actions: dict[str, tuple[Path, Any, Any]] = {}
    if node_count() >= 2:
        s.submit(DDP2)  # first: it needs a CPU on each node, the one-node scenarios fit around it
        ddp2 = s.sweep_dir("ddp2") / "trials" / s.trials("ddp2")[0]["id"]
        job = s.job_of("ddp2", s.trials("ddp2")[0]["id"])
        actions["ddp2_usr2"] = (ddp2, lambda: epochs_done(ddp2) >= 1, ["scancel", "--signal=USR2", job])
        actions["ddp2_requeue"] = (ddp2, lambda: "ddp2_usr2_at_epoch" in s.seen and len(starts_of(ddp2)) >= 2
                                   and epochs_done(ddp2) > s.seen["ddp2_usr2_at_epoch"], ["scontrol", "requeue", job])
    s.submit(STOP)
    s.submit(DDP)
    first = s.sweep_dir("stop") / "trials" / s.trials("stop")[0]["id"]
    actions["stop_cancel"] = (first, lambda: epochs_done(first) >= 1, lambda: cancel_and_resubmit_stop(s, first))
    main_done = every(2.0, lambda: not s.queued(s.arrays("main")))
    actions["main_done"] = (preempted, main_done, lambda: s.seen.update(main_status=s.status("main")))
    signal_when(s, actions, deadline)
    mark(s, "main finished; stop, ddp2: signals sent")
    for name in ("stop", "limit", "ddp", "ddp2", "broken"):
        if s.seen.get(f"submit_{name}"):
            wait_for(lambda: not s.queued(s.arrays(name)), deadline, f"the '{name}' sweep to finish", poll=1)
            mark(s, f"{name}: finished")
    for name in ("main", "stop", "limit", "ddp", "ddp2", "broken"):
        if s.seen.get(f"submit_{name}"):
            wait_for(lambda: not s.queued(s.settlers(name)), deadline, f"the settling jobs of '{name}'", poll=1)
    mark(s, "settled")


def cancel_and_resubmit_stop(s: Session, first: Path) -> None:
    """`convit-sweep cancel` while the first 'stop' trial runs and the second waits; what it left; submit again."""
    s.seen["cancel"] = s.cli("cancel", "stop")
    s.seen["stop_after_cancel"] = s.status("stop")
    s.seen["stop_queued_after_cancel"] = s.queued(s.arrays("stop"))
    s.seen["stop_run_after_cancel"] = read_json(first / "mlflow_run.json")["run_id"]
    tracker = Tracker(default_tracking_uri(s.work))
    s.seen["stop_parent_after_cancel"] = tracker.find_sweep_run("stop", "stop").info.status
    s.seen["stop_runs_after_cancel"] = {k: r.info.status for k, r in tracker.trial_runs("stop", "stop").items()}
    s.submit(STOP)


# ------------------------------------------------------------------------------------------------ checks
def reference_final(trial: dict[str, Any], tmp: Path) -> dict[str, float]:
    """The same trial, uninterrupted, in this process (1 thread, as in the task): the exact result to match."""
    import torch

    from convit.engine import run_trial
    from orchestrator.trial import Trial

    torch.set_num_threads(1)
    return run_trial(Trial.from_dict(trial).config, tmp / f"ref-{trial['id']}")


def result_metrics(final: dict[str, float]) -> dict[str, float]:
    """Metrics that depend only on the computation (not on timing or memory)."""
    return {k: v for k, v in final.items() if not any(w in k for w in ("time", "per_s", "mem"))}


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def child_runs(s: Session, sweep: str) -> dict[str, Any]:
    return Tracker(default_tracking_uri(s.work)).trial_runs(sweep, sweep)


def epoch_steps(s: Session, run_id: str) -> list[int]:
    return [step for step, _ in Tracker(default_tracking_uri(s.work)).metric_history(run_id, "epoch")]


def test_sweep_is_one_array_and_lands_in_mlflow(run: Session):
    trials = run.trials("main")
    assert len(run.arrays("main")) == 1
    array = run.arrays("main")[0]
    assert {run.job_of("main", t["id"]) for t in trials} == {f"{array}_{i}" for i in range(5)}
    states = {s["trial_id"]: s for s in run.seen["main_status"]}
    assert [states[t["id"]]["state"] for t in trials] == ["done"] * 4 + ["failed"]
    runs = child_runs(run, "main")
    assert set(runs) == {t["id"] for t in trials}
    tracker = Tracker(default_tracking_uri(run.work))
    parent = tracker.find_sweep_run("main", "main")
    assert parent.info.status == "FAILED"  # closed by the last task to end, failed because one trial failed
    for t in trials[:4]:
        r = runs[t["id"]]
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["slurm_job_id"] == array and r.data.tags["backend"] == "slurm"
        assert epoch_steps(run, r.info.run_id) == [0, 1, 2]  # every epoch exactly once, requeues included
        final = read_json(run.sweep_dir("main") / "trials" / t["id"] / "final.json")["metrics"]
        assert r.data.metrics["val_top1"] == pytest.approx(final["val_top1"])


def test_tasks_run_the_code_snapshot_not_the_edited_working_tree(run: Session):
    snapshots = list((run.sweep_dir("main") / "slurm").glob("code-*"))
    assert len(snapshots) == 1
    assert "edited after submit" not in (snapshots[0] / "convit" / "engine" / "trial.py").read_text()
    for t in run.trials("main")[:4]:
        starts = read_json(run.sweep_dir("main") / "trials" / t["id"] / "slurm_task.json")["starts"]
        assert starts and all(Path(s["code"]) == snapshots[0] for s in starts)


def test_preempted_trial_resumes_mid_epoch_with_identical_results(run: Session, tmp_path: Path):
    trial = run.trials("main")[0]
    trial_dir = run.sweep_dir("main") / "trials" / trial["id"]
    starts = read_json(trial_dir / "slurm_task.json")["starts"]
    assert len(starts) >= 2 and starts[1]["restart_count"] >= 1
    epoch, step = (int(x) for x in starts[1]["resume_from"][5:-3].split("-"))
    assert epoch >= 1 and step > 0, f"resumed from {starts[1]['resume_from']}: not a mid-epoch checkpoint"
    assert "REQUEUED" in sacct_states(run.job_of("main", trial["id"]))
    log = (run.sweep_dir("main") / "slurm" / "logs" / f"{run.job_of('main', trial['id'])}_0_log.err").read_text()
    assert "USR2: exact checkpoint saved" in log
    assert len(child_runs(run, "main")[trial["id"]].data.tags) and epoch_steps(
        run, read_json(trial_dir / "mlflow_run.json")["run_id"]) == [0, 1, 2]
    got = read_json(trial_dir / "final.json")["metrics"]
    assert same(result_metrics(got), result_metrics(reference_final(trial, tmp_path)))


def test_scontrol_requeue_loses_nothing_since_the_checkpoint_and_completes(run: Session, tmp_path: Path):
    trial = run.trials("main")[1]
    trial_dir = run.sweep_dir("main") / "trials" / trial["id"]
    starts = read_json(trial_dir / "slurm_task.json")["starts"]
    assert len(starts) >= 2 and starts[-1]["restart_count"] >= 1
    assert starts[1]["resume_from"] is not None  # resumed from a checkpoint, not from scratch
    assert "REQUEUED" in sacct_states(run.job_of("main", trial["id"]))
    status = {s["trial_id"]: s for s in run.seen["main_status"]}[trial["id"]]
    assert status["slurm"]["restarts"] >= 1
    assert epoch_steps(run, read_json(trial_dir / "mlflow_run.json")["run_id"]) == [0, 1, 2]
    got = read_json(trial_dir / "final.json")["metrics"]
    assert same(result_metrics(got), result_metrics(reference_final(trial, tmp_path)))


def test_failing_trial_shows_its_error_and_does_not_stop_the_others(run: Session):
    trial = run.trials("main")[4]
    status = {s["trial_id"]: s for s in run.seen["main_status"]}[trial["id"]]
    assert status["state"] == "failed"
    assert "0.png cannot be decoded" in status["detail"]
    tail = status["slurm"]["stderr_tail"]
    assert tail.startswith("Traceback") and "0.png cannot be decoded (image file is truncated)" in tail
    assert len(tail.splitlines()) <= 20 and status["slurm"]["state"] == "FAILED"
    r = child_runs(run, "main")[trial["id"]]
    assert r.info.status == "FAILED" and "cannot be decoded" in r.data.tags["failure_reason"]
    out = run.cli("status", "main")
    assert "failed" in out.stdout and "4 done" in out.stdout


def test_time_limited_trial_is_requeued_and_completes(run: Session):
    trial = run.trials("limit")[0]
    trial_dir = run.sweep_dir("limit") / "trials" / trial["id"]
    job = run.job_of("limit", trial["id"])
    states = sacct_states(job)
    assert "REQUEUED" in states and states[-1] == "COMPLETED", states
    assert (trial_dir / "final.json").is_file()
    runs = child_runs(run, "limit")
    assert len(runs) == 1 and runs[trial["id"]].info.status == "FINISHED"
    assert epoch_steps(run, runs[trial["id"]].info.run_id) == list(range(LIMIT_EPOCHS))
    status = run.status("limit")[0]
    assert status["state"] == "done" and status["slurm"]["restarts"] >= 1


def test_cancel_checkpoints_running_trials_and_submit_resumes_them(run: Session):
    assert run.seen["cancel"].returncode == 0, run.seen["cancel"].stderr
    assert run.seen["stop_queued_after_cancel"] is False
    first, second = run.trials("stop")
    states = {s["trial_id"]: s for s in run.seen["stop_after_cancel"]}
    assert states[first["id"]]["state"] == "interrupted"
    assert states[second["id"]]["state"] == "pending" and "before it started" in states[second["id"]]["detail"]
    assert run.seen["stop_parent_after_cancel"] == "KILLED"
    assert run.seen["stop_runs_after_cancel"] == {first["id"]: "KILLED"}
    first_dir = run.sweep_dir("stop") / "trials" / first["id"]
    starts = read_json(first_dir / "slurm_task.json")["starts"]
    epoch, step = (int(x) for x in starts[-1]["resume_from"][5:-3].split("-"))
    assert epoch >= 1 and step > 0, "the cancelled trial did not checkpoint at the SIGTERM (mid-epoch)"
    assert len(run.arrays("stop")) == 2  # resubmitted as a second array
    for t in (first, second):
        assert (run.sweep_dir("stop") / "trials" / t["id"] / "final.json").is_file()
    runs = child_runs(run, "stop")
    assert runs[first["id"]].info.run_id == run.seen["stop_run_after_cancel"]  # the same MLflow run continued
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert epoch_steps(run, runs[first["id"]].info.run_id) == list(range(STOP_EPOCHS))
    assert Tracker(default_tracking_uri(run.work)).find_sweep_run("stop", "stop").info.status == "FINISHED"


def test_a_task_that_fails_outside_its_runner_gets_a_failed_run_and_the_sweep_closes(run: Session):
    trial = run.trials("broken")[0]
    (settler,) = run.settlers("broken")
    assert sacct_states(settler) == ["COMPLETED"]
    assert sacct_states(run.job_of("broken", trial["id"])) == ["FAILED"]
    status = run.status("broken")[0]
    assert status["state"] == "failed" and "simulated: torch is broken" in status["detail"]
    recorded = read_json(run.sweep_dir("broken") / "trials" / trial["id"] / "status.json")
    assert recorded["state"] == "failed" and "outside the trial runner" in recorded["error"]
    assert "ImportError: simulated" in recorded["error"]
    runs = child_runs(run, "broken")
    assert set(runs) == {trial["id"]} and runs[trial["id"]].info.status == "FAILED"
    assert "ImportError: simulated" in runs[trial["id"]].data.tags["failure_reason"]
    assert Tracker(default_tracking_uri(run.work)).find_sweep_run("broken", "broken").info.status == "FAILED"


def test_settling_jobs_ran_after_each_array_and_changed_no_recorded_end(run: Session):
    finished = [name for name in ("stop", "limit", "ddp", "ddp2") if run.seen.get(f"submit_{name}")]
    for name in ("main", *finished):
        assert run.settlers(name), name
        for job in run.settlers(name):
            assert sacct_states(job) == ["COMPLETED"], (name, job)
    tracker = Tracker(default_tracking_uri(run.work))
    assert tracker.find_sweep_run("main", "main").info.status == "FAILED"
    for name in finished:
        assert tracker.find_sweep_run(name, name).info.status == "FINISHED", name
        assert all(r.info.status == "FINISHED" for r in child_runs(run, name).values()), name


def test_a_multi_task_trial_trains_with_ddp_and_only_rank_0_logs(run: Session):
    trial = run.trials("ddp")[0]
    trial_dir = run.sweep_dir("ddp") / "trials" / trial["id"]
    assert (trial_dir / "final.json").is_file()
    resolved = read_json(trial_dir / "config.json")["resolved"]
    assert resolved["world_size"] == 2
    starts = starts_of(trial_dir)
    assert [s["num_tasks"] for s in starts] == [2]  # written by rank 0 only
    assert resolved["rank_hosts"] == [starts[0]["host"]] * 2 == starts[0]["rank_hosts"]  # both ranks on one node
    job = run.job_of("ddp", trial["id"])
    logs = run.sweep_dir("ddp") / "slurm" / "logs"
    assert (logs / f"{job}_0_result.pkl").is_file() and (logs / f"{job}_1_result.pkl").is_file()  # both ranks ran
    runs = child_runs(run, "ddp")
    assert len(runs) == 1 and runs[trial["id"]].info.status == "FINISHED"
    assert epoch_steps(run, runs[trial["id"]].info.run_id) == list(range(DDP_EPOCHS))  # rank 1 logged nothing
    assert runs[trial["id"]].data.tags["rank_hosts"] == ",".join(resolved["rank_hosts"])


def _two_node_trial(run: Session) -> Path:
    if not run.seen.get("submit_ddp2"):
        pytest.skip("needs a SLURM cluster of two nodes or more (sudo slurm/start.sh --nodes 2)")
    return run.sweep_dir("ddp2") / "trials" / run.trials("ddp2")[0]["id"]


def test_a_two_node_trial_ends_where_the_one_node_two_process_trial_ends(run: Session):
    """nodes: 2, tasks_per_node: 1 — one rank per node, MASTER_ADDR the first node — preempted and requeued on the
    way, against the same trial as two processes on one node, never interrupted: the same metrics to the last bit,
    the weights within the tolerance of tests/test_ddp.py."""
    import torch

    from convit.engine.checkpoint import list_checkpoints

    two_nodes = _two_node_trial(run)
    one_node = run.sweep_dir("ddp") / "trials" / run.trials("ddp")[0]["id"]
    assert two_nodes.name == one_node.name  # the same trial id: the placement is not part of the trial
    assert read_json(two_nodes / "config.json")["resolved"]["world_size"] == 2
    finals = [read_json(d / "final.json")["metrics"] for d in (one_node, two_nodes)]
    assert same(result_metrics(finals[0]), result_metrics(finals[1])), (finals[0], finals[1])
    rows = [[{k: v for k, v in r.items() if k in ("train_loss", "val_loss", "val_top1", "lr")} for r in
             read_metrics(d)] for d in (one_node, two_nodes)]
    assert rows[0] == rows[1]
    weights = [torch.load(list_checkpoints(d / "checkpoints")[-1], weights_only=True)["model"]
               for d in (one_node, two_nodes)]
    for key in weights[0]:
        if not key.endswith("attn.pos_proj.bias"):  # rounding noise normalised by AdamW: see tests/test_ddp.py
            torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_preempted_and_requeued_two_node_trial_resumes_with_every_step_once(run: Session):
    trial_dir = _two_node_trial(run)
    starts = starts_of(trial_dir)
    assert len(starts) >= 3, starts  # the USR2 requeued it, then `scontrol requeue` did
    assert 1 <= run.seen["ddp2_usr2_at_epoch"] < run.seen["ddp2_requeue_at_epoch"] < DDP_EPOCHS
    assert any(s["resume_from"] for s in starts[1:])  # resumed from a checkpoint, not from scratch
    for start in starts:
        assert start["num_tasks"] == 2 and sorted(start["rank_hosts"]) == ["node1", "node2"], start
        assert start["host"] == start["rank_hosts"][0]  # rank 0 runs the trial runner
    (mlflow_run,) = child_runs(run, "ddp2").values()
    assert mlflow_run.info.status == "FINISHED"
    assert epoch_steps(run, mlflow_run.info.run_id) == list(range(DDP_EPOCHS))  # every step once, requeues included
    tags = mlflow_run.data.tags
    assert tags["host"] == starts[-1]["host"] and tags["rank_hosts"] == ",".join(starts[-1]["rank_hosts"])
    assert int(tags["slurm_restart_count"]) >= 2
