"""The SLURM backend without running jobs: the ``slurm`` section and cluster profiles, the batch script that
submitit renders from them (checked by bash itself), the code snapshot, and the errors when SLURM is missing or
its controller does not answer (a real ``sinfo`` against a controller address where none listens)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.backends.slurm.backend import SlurmBackend, resolve_options
from orchestrator.backends.slurm.cluster import parse_minutes, require_cluster
from orchestrator.backends.slurm.snapshot import snapshot_code
from orchestrator.errors import BackendUnavailable, SpecError
from orchestrator.spec import expand
from orchestrator.spec import parse_spec
from orchestrator.workdir import sweep_context

REPO = Path(__file__).resolve().parents[1]
BASE = "name: s\nbase: {preset: smoke}\n"


def spec(slurm: str, extra: str = ""):
    return parse_spec(f"{BASE}{extra}slurm: {slurm}\n")


# ------------------------------------------------------------------------------------------ section/profiles
def test_profile_fills_the_section_and_the_sweep_overrides_it():
    section = spec("{profile: local, cpus_per_task: 2, partition: other}").slurm
    assert (section.cpus_per_task, section.partition) == (2, "other")  # the sweep's keys win
    assert (section.mem_gb, section.signal_delay_s, section.array_parallelism) == (2.0, 30, 2)  # local.yaml's
    gpu = spec("{profile: example-gpu-cluster, account: null}").slurm
    assert gpu.gpus_per_node == 4 and gpu.account is None and "module purge" in gpu.setup


@pytest.mark.parametrize("slurm, message", [
    ("{profile: lcoal}", r"unknown cluster profile 'lcoal' \(did you mean 'local'\?\)"),
    ("{partiton: debug}", r"slurm.partiton: unknown key 'partiton' \(did you mean 'partition'\?\)"),
    ("{timeout_min: 1, signal_delay_s: 60}", r"signal_delay_s \(60\) must be shorter than the time limit"),
    ("{cpus_per_task: '2'}", r"slurm.cpus_per_task: Input should be a valid integer"),
])
def test_section_mistakes_are_located_and_explained(slurm: str, message: str):
    with pytest.raises(SpecError, match=message) as info:
        spec(slurm)
    assert "<string>:3" in str(info.value)  # the sweep file's line


def test_a_broken_profile_is_reported_against_its_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "typo.yaml").write_text("nodes: 1\ncpus_per_tsk: 2\n")
    (tmp_path / "badtype.yaml").write_text("nodes: 1\nmem_gb: lots\n")
    monkeypatch.setenv("CONVIT_SLURM_PROFILES", str(tmp_path))
    with pytest.raises(SpecError, match=r"typo.yaml: unknown key 'cpus_per_tsk' \(did you mean 'cpus_per_task'\?\)"):
        spec("{profile: typo}")
    with pytest.raises(SpecError, match=r"badtype.yaml: mem_gb: Input should be a valid number"):
        spec("{profile: badtype}")
    (tmp_path / "ok.yaml").write_text("nodes: 2\n")
    assert spec(f"{{profile: {tmp_path / 'ok.yaml'}}}").slurm.nodes == 2  # a profile given by its path


@pytest.mark.parametrize("slurm, message", [
    ('{partition: "debug\\nrm -rf /tmp/x"}', "not a valid SLURM partition name"),
    ("{account: 'proj;touch /tmp/pwned'}", "not a valid SLURM account name"),
    ("{qos: '$(id)'}", "not a valid SLURM qos name"),
    ("{constraint: 'a100 && reboot'}", "not a SLURM node-feature expression"),
    ('{setup: ["module load x\\nrm -rf ~"]}', "setup line 0 contains a line break"),
    ("{additional_parameters: {comment: 'a\"b'}}", "contains a quote"),
    ("{additional_parameters: {comment: 'x$HOME'}}", "contains a quote, a backslash, \\$"),
    ("{additional_parameters: {'mail-type\\n#': FAIL}}", "is not an sbatch option name"),
    ("{additional_parameters: {array: '0-3'}}", "'array' cannot be set here"),
    ("{additional_parameters: {time: 10}}", "use slurm.timeout_min"),
    ("{additional_parameters: {mail_type: [FAIL]}}", "a value is a string, a number or true"),
])
def test_values_that_would_break_the_batch_script_are_refused(slurm: str, message: str):
    with pytest.raises(SpecError, match=message):
        spec(slurm)


# ------------------------------------------------------------------------------------------- batch script
def context(tmp_path: Path, slurm: str, extra: str = "grid: {seed: [0, 1, 2, 3, 4]}\n"):
    s = spec(slurm, extra)
    return sweep_context(s, tmp_path / "runs", "slurm", "sqlite:///x.db"), expand(s)


def test_batch_script_is_one_array_with_the_snapshot_first_and_passes_bash(tmp_path: Path):
    ctx, trials = context(tmp_path, "{profile: local, constraint: 'a100&ib', array_parallelism: 3, "
                                    "setup: ['module load cuda/12.4', 'export NCCL_DEBUG=WARN'], "
                                    "additional_parameters: {exclusive: true, mail_type: FAIL, requeue_delay: false,"
                                    " comment: 'sweep s'}}")
    plan = SlurmBackend(check=False).plan(ctx, trials)
    script = plan.script
    assert plan.tasks == 5 and plan.pickle_bytes > 0
    lines = script.splitlines()
    for expected in ("#SBATCH --array=0-4%3", "#SBATCH --constraint='a100&ib'", "#SBATCH --exclusive",
                     "#SBATCH --mail-type=FAIL", "#SBATCH --comment='sweep s'", "#SBATCH --signal=USR2@30",
                     "#SBATCH --time=30", "#SBATCH --partition=debug", "#SBATCH --cpus-per-task=1",
                     "#SBATCH --mem=2GB", "#SBATCH --job-name=convit-s"):
        assert expected in lines, expected
    assert not any("requeue-delay" in line for line in lines)  # false = not set
    setup = lines.index("module load cuda/12.4")
    export = next(i for i, line in enumerate(lines) if line.startswith("export PYTHONPATH="))
    assert setup < export < next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert f"{sys.executable} -P -u -m submitit.core._submit" in script
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert not (tmp_path / "runs").exists()  # a plan writes nothing


def test_recorded_options_do_not_reread_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "site.yaml").write_text("cpus_per_task: 3\n")
    monkeypatch.setenv("CONVIT_SLURM_PROFILES", str(tmp_path))
    ctx, _ = context(tmp_path, "{profile: site}")
    (tmp_path / "site.yaml").write_text("cpus_per_task: 7\n")  # edited after submission
    assert resolve_options(ctx).cpus_per_task == 3


def test_parse_minutes():
    assert parse_minutes("1:00:00") == 60 and parse_minutes("2-00:30:00") == 2 * 24 * 60 + 30
    assert parse_minutes("30:00") == 30 and parse_minutes("UNLIMITED") is None


# ---------------------------------------------------------------------------------------------- snapshot
def test_snapshot_copies_the_packages_once_per_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "src"
    for package in ("convit", "orchestrator"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    code = f"import sys; sys.path.insert(0, {str(src)!r}); from orchestrator.backends.slurm.snapshot import " \
           f"snapshot_code; from pathlib import Path; print(snapshot_code(Path({str(tmp_path / 'snaps')!r})))"

    def snap() -> Path:
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())

    first = snap()
    assert (first / "convit" / "engine" / "trial.py").read_text() == (src / "convit/engine/trial.py").read_text()
    assert snap() == first  # same content: reused
    (src / "convit" / "engine" / "trial.py").write_text("# edited\n")
    second = snap()
    assert second != first and (second / "convit/engine/trial.py").read_text() == "# edited\n"
    assert "# edited" not in (first / "convit/engine/trial.py").read_text()  # the earlier copy is untouched
    assert not list(first.rglob("__pycache__"))


def test_snapshot_of_this_checkout_is_importable(tmp_path: Path):
    target = snapshot_code(tmp_path)
    out = subprocess.run([sys.executable, "-P", "-c", "import orchestrator.backends.slurm.job as m; print(m.__file__)"],
                         env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith(str(target)), out.stderr  # not the working tree


# -------------------------------------------------------------------------------------- cluster missing
def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO)}, timeout=120)


def test_no_slurm_on_path_is_one_clear_error_and_nothing_is_written(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "s.yaml").write_text(f"{BASE}seeds: [0]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
    env["PATH"] = str(bin_dir)  # no sbatch, no sinfo
    out = cli("submit", "s.yaml", "--backend", "slurm", "--workdir", "runs", env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "sbatch" in out.stderr and "slurm/start.sh" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


needs_sinfo = pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client (sinfo) installed here")


def dead_controller_conf(tmp_path: Path, port: int, message_timeout: int) -> Path:
    """A copy of this machine's slurm.conf whose controller is 127.0.0.1:port."""
    source = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    if not source.is_file():
        pytest.skip(f"no slurm.conf at {source} to derive a test configuration from")
    keep = [line for line in source.read_text().splitlines()
            if not line.startswith(("SlurmctldPort", "MessageTimeout", "SlurmctldHost"))]
    conf = tmp_path / "slurm.conf"
    conf.write_text("\n".join([f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)", *keep,
                               f"SlurmctldPort={port}", f"MessageTimeout={message_timeout}", ""]))
    return conf


@needs_sinfo
def test_a_controller_that_refuses_connections_is_one_clear_error(tmp_path: Path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SLURM_CONF", str(dead_controller_conf(tmp_path, port, 1)))
    with pytest.raises(BackendUnavailable, match=r"controller does not answer.*Unable to contact.*slurm/start.sh"):
        require_cluster()


@needs_sinfo
def test_a_controller_that_never_replies_times_out(tmp_path: Path, monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept connections and never answer
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SLURM_CONF", str(dead_controller_conf(tmp_path, server.getsockname()[1], 30)))
        with pytest.raises(BackendUnavailable, match=r"did not answer `sinfo.*within 2 s.*slurm/start.sh"):
            require_cluster(timeout=2)
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


# ------------------------------------------------------------------------------------------ settling job
@pytest.mark.parametrize(("state", "recorded", "expected"), [
    ("FAILED", None, "failed"),  # died before the runner: an import, the interpreter
    ("OUT_OF_MEMORY", "running", "failed"),  # killed mid-step
    ("NODE_FAIL", "running", "failed"),
    ("FAILED", "failed", None),  # the runner recorded it (and its MLflow run)
    ("FAILED", "interrupted", None),
    ("COMPLETED", "done", None),
    ("CANCELLED", None, None),  # never started: still pending, nothing to record
    ("CANCELLED", "running", "interrupted"),  # killed hard during a cancel
    ("TIMEOUT", "running", "interrupted"),
    ("RUNNING", "running", None),  # not ended
])
def test_the_settler_records_only_ends_that_nobody_recorded(state: str, recorded: str | None, expected: str | None):
    from orchestrator.backends.slurm.cluster import TaskState
    from orchestrator.backends.slurm.settle import unrecorded_end

    assert unrecorded_end(TaskState("7_0", state), recorded) == expected


def test_the_failure_reason_is_the_tasks_exception_not_srun(tmp_path: Path):
    from orchestrator.backends.slurm.cluster import TaskState
    from orchestrator.backends.slurm.settle import end_reason
    from orchestrator.backends.slurm.state import stderr_path

    ctx, _ = context(tmp_path, "{profile: local}")
    path = stderr_path(ctx, "7_0")
    path.parent.mkdir(parents=True)
    path.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\nImportError: no torch here\n"
                    "srun: error: node1: task 0: Exited with exit code 1\n")
    reason = end_reason(ctx, TaskState("7_0", "FAILED", exit_code="1:0"), "failed")
    assert reason == "SLURM task 7_0 ended FAILED (exit code 1:0) outside the trial runner: ImportError: no torch here"


def test_the_settling_job_runs_after_the_whole_array_where_the_array_ran(tmp_path: Path):
    from orchestrator.backends.slurm.backend import settler_parameters

    ctx, _ = context(tmp_path, "{profile: local, account: lab, qos: short, additional_parameters: {comment: x}}")
    params = settler_parameters(ctx, resolve_options(ctx), tmp_path / "code", "4242")
    assert params["slurm_additional_parameters"] == {"comment": "x", "dependency": "afterany:4242"}
    assert params["slurm_partition"] == "debug" and params["slurm_account"] == "lab" and params["slurm_qos"] == "short"
    assert params["cpus_per_task"] == 1 and params["nodes"] == 1 and "gpus_per_node" not in params
