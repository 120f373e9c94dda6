"""The door of `convit-sweep` (issue 12, "The command line"), through the real command in subprocesses: `list`,
`--version`, shell completion, the hint for a Hydra-style override, `submit --show-config`, a column per axis
and one state vocabulary in `status` and the dry run, `--json` that matches the table, quiet exits on a closed
pipe, `cancel` with nothing to stop. Sweeps are recorded in real working folders; trial states are made the way
the trial runner makes them (final.json, status.json, a live process holding the ownership lock)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from convit.config import TrialConfig
from convit.records import FINAL_FILE, write_json
from orchestrator import cli
from orchestrator.listing import STATES, folder_state, sweep_rows
from orchestrator.spec import expand, parse_spec
from orchestrator.status import trial_status, write_status
from orchestrator.workdir import sweep_context
from orchestrator.tracking import default_tracking_uri
from orchestrator.workdir import write_trials

REPO = Path(__file__).resolve().parents[1]
SWEEP = """
name: door
base: {preset: smoke, epochs: 1}
grid:
  model: [convit_tiny, deit_tiny]
  model_kwargs.drop_path_rate: [0.0, 0.1]
seeds: [0]
"""
HOLDER = """
import sys, time
from pathlib import Path
from convit.records import own_trial
from orchestrator.status import write_status
with own_trial(Path(sys.argv[1])):
    write_status(Path(sys.argv[1]), "running")
    print("holding", flush=True)
    time.sleep(120)
"""


def run(*args: str, stdout=subprocess.PIPE, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def recorded(work: Path, text: str = SWEEP):
    spec = parse_spec(text)
    ctx = sweep_context(spec, work, "local", default_tracking_uri(work))
    ctx.save()
    trials = expand(spec)
    write_trials(ctx, trials)
    return ctx, trials


@pytest.fixture()
def states(tmp_path: Path):
    """A recorded sweep of 4 trials, one in each state but pending: done, running (a live process holds its
    lock), failed, interrupted. Yields (ctx, trials, holder process); the holder is stopped by its PID."""
    work = tmp_path / "runs"
    ctx, trials = recorded(work)
    done, running, failed, interrupted = (ctx.trial_dir(t.id) for t in trials)
    write_json(done / FINAL_FILE, {"metrics": {"test/top1": 50.0}})
    write_status(failed, "failed", error="TrialFailed: non-finite loss")
    write_status(interrupted, "interrupted")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(running)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield ctx, trials, holder
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_list_counts_each_state_like_status_and_json_matches_the_table(states, tmp_path: Path):
    ctx, trials, _ = states
    work = ctx.workdir
    recorded(work, SWEEP.replace("name: door", "name: other"))  # a second sweep, nothing run: 4 pending
    table = run("list", "--workdir", str(work))
    assert table.returncode == 0, table.stderr
    listed = json.loads(run("list", "--json", "--workdir", str(work)).stdout)
    by_name = {row["name"]: row for row in listed}
    assert set(by_name) == {"door", "other"}
    assert {s: by_name["door"][s] for s in STATES} == {"done": 1, "running": 1, "failed": 1, "interrupted": 1,
                                                        "pending": 0}
    assert by_name["other"]["pending"] == 4 and by_name["door"]["backend"] == "local"
    assert by_name["door"]["last_activity"] and by_name["door"]["trials"] == 4
    for row in listed:  # each JSON row is a table row, with the same numbers in the same order
        line = next(line for line in table.stdout.splitlines() if f" {row['name']} " in line)
        cells = [c.strip() for c in line.strip("│ \n").split("│")]
        assert cells[:3] == [row["name"], row["backend"], str(row["trials"])]
        assert cells[3:8] == [str(row[s]) for s in STATES]
    # the same state as `status` derives from the same folder (status adds the epoch plan)
    for trial in trials:
        assert folder_state(ctx.trial_dir(trial.id))[0] == trial_status(trial, ctx.trial_dir(trial.id)).state


def test_list_is_fast_and_imports_neither_torch_nor_mlflow(tmp_path: Path):
    work = tmp_path / "runs"
    recorded(work)
    probe = ("import json, sys, time; t = time.perf_counter(); from orchestrator import cli; "
             f"code = cli.main(['list', '--workdir', {str(work)!r}]); "
             "heavy = [m for m in ('torch', 'mlflow', 'timm', 'ray') if m in sys.modules]; "
             "print(json.dumps([code, heavy, time.perf_counter() - t]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    code, heavy, seconds = json.loads(out.stdout.splitlines()[-1])
    assert code == 0 and heavy == [], out.stdout + out.stderr
    assert seconds < 2.0  # ~0.3 s here (imports included); generous for a loaded 2-core machine


def test_list_of_an_empty_working_folder_says_how_to_start(tmp_path: Path):
    result = run("list", "--workdir", str(tmp_path / "nothing"))
    assert result.returncode == 0 and "no sweep in" in result.stdout
    assert json.loads(run("list", "--json", "--workdir", str(tmp_path / "nothing")).stdout) == []
    assert not (tmp_path / "nothing").exists()


def test_version_names_the_package_and_its_stack():
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"convit-sweep {version('convit-sweep')} (")
    assert f"torch {version('torch')}" in result.stdout and f"mlflow {version('mlflow')}" in result.stdout


def _complete(script: str, words: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """COMPREPLY of the generated bash completion for the command line ``words`` (the last is being typed)."""
    driver = (f'{script}\nCOMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n'
              '_convit_sweep; printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", driver], cwd=cwd, capture_output=True, text=True, timeout=30,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_commands_options_choices_and_sweep_names(tmp_path: Path):
    result = run("completion", "bash")
    assert result.returncode == 0 and "complete -o filenames -F _convit_sweep convit-sweep" in result.stdout
    script = result.stdout
    recorded(tmp_path / "runs")
    (tmp_path / "mine.yaml").write_text(SWEEP)
    assert set(_complete(script, ["convit-sweep", ""], tmp_path)) >= {"submit", "status", "list", "completion",
                                                                       "--version"}
    assert _complete(script, ["convit-sweep", "li"], tmp_path) == ["list"]
    assert _complete(script, ["convit-sweep", "submit", "x.yaml", "--backend", ""], tmp_path) == ["local", "ray",
                                                                                                 "slurm"]
    assert "--show-config" in _complete(script, ["convit-sweep", "submit", "x.yaml", "--sh"], tmp_path)
    assert _complete(script, ["convit-sweep", "submit", "mi"], tmp_path) == ["mine.yaml"]
    assert _complete(script, ["convit-sweep", "status", "do"], tmp_path) == ["door"]  # ./runs by default
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _complete(script, ["convit-sweep", "cancel", "--workdir", str(tmp_path / "runs"), "d"], elsewhere) == \
        ["door"]
    assert _complete(script, ["convit-sweep", "compare", "d"], elsewhere,
                     {"CONVIT_WORKDIR": str(tmp_path / "runs")}) == ["door"]
    assert _complete(script, ["convit-sweep", "completion", ""], tmp_path) == ["bash", "zsh"]


def test_zsh_completion_is_the_bash_one_through_bashcompinit():
    result = run("completion", "zsh")
    assert result.returncode == 0
    assert "bashcompinit" in result.stdout and "complete -o filenames -F _convit_sweep convit-sweep" in result.stdout
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n", "-c", result.stdout], timeout=30).returncode == 0
    assert run("completion", "fish").returncode == 2


@pytest.mark.parametrize("override, fix", [
    ("lr=1e-3,1e-4", "grid.lr=[1e-3,1e-4]"),
    ("base.lr=1e-3,1e-4", "grid.lr=[1e-3,1e-4]"),
    ("grid.lr=1e-3,1e-4", "grid.lr=[1e-3,1e-4]"),
    ("seeds=0,1", "seeds=[0,1]"),
    ("model_kwargs.img_size=32,64", "grid.model_kwargs.img_size=[32,64]"),
    ("local.max_parallel=1,2", "local.max_parallel takes one value"),
])
def test_a_hydra_style_comma_list_gets_the_fix_in_one_line(tmp_path: Path, override: str, fix: str):
    sweep = tmp_path / "door.yaml"
    sweep.write_text(SWEEP)
    result = run("submit", str(sweep), "--dry-run", "--workdir", str(tmp_path / "runs"), override)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fix in lines[0] and "Traceback" not in lines[0]
    assert not (tmp_path / "runs").exists()


def test_the_hint_joins_the_other_problems_and_spares_valid_values(sweep_file: Path, capsys):
    assert cli.main(["submit", str(sweep_file), "--dry-run", "lr=1e-3,1e-4", "epochs=-1"]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "grid.lr=[1e-3,1e-4]" in err and "epochs: Input should be" in err
    assert cli.hydra_hint("data_root=/data/a,b") is not None  # the hint exists, but only a rejected value gets it
    assert cli.hydra_hint("grid.lr=[1e-3,1e-4]") is None and cli.hydra_hint("lr=1e-3") is None


@pytest.fixture()
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "door.yaml"
    path.write_text(SWEEP)
    return path


@pytest.mark.parametrize("which", ["2", "name", "id", "prefix"])
def test_show_config_prints_one_trials_resolved_config_and_writes_nothing(sweep_file: Path, tmp_path: Path,
                                                                          which: str):
    target = expand(parse_spec(SWEEP.replace("epochs: 1", "epochs: 3")))[2]  # the ids with epochs=3
    arg = {"2": "2", "name": target.name, "id": target.id, "prefix": target.id[:6]}[which]
    work = tmp_path / "runs"
    result = run("submit", str(sweep_file), "--show-config", arg, "--workdir", str(work), "epochs=3")
    assert result.returncode == 0, result.stderr
    config = TrialConfig.model_validate(yaml.safe_load(result.stdout))  # the whole config, as YAML
    assert config.epochs == 3 and config.model == target.config.model
    assert config.model_kwargs["drop_path_rate"] == target.config.model_kwargs["drop_path_rate"]
    assert f"trial #2 of 4: {config.config_hash()[:12]}" in result.stdout
    assert not work.exists()


def test_show_config_output_is_a_config_file_the_engine_runs_as_that_trial(sweep_file: Path, tmp_path: Path):
    target = expand(parse_spec(SWEEP))[1]
    shown = run("submit", str(sweep_file), "--show-config", "1")
    config = tmp_path / "one.yaml"
    config.write_text(shown.stdout)
    engine = subprocess.run([sys.executable, "-m", "convit.train", str(config), "--out", str(tmp_path / "t"),
                             "--print-config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert engine.returncode == 0, engine.stderr
    assert json.loads(engine.stdout)["config_hash"][:12] == target.id


def test_show_config_of_an_unknown_trial_is_one_line_exit_2(sweep_file: Path, tmp_path: Path):
    result = run("submit", str(sweep_file), "--show-config", "9", "--workdir", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "give its index 0-3" in result.stderr and "--dry-run" in result.stderr


def test_status_has_a_column_per_axis_and_its_json_matches_the_table(states):
    ctx, trials, _ = states
    table = run("status", "door", "--workdir", str(ctx.workdir))
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "trial id" in line)
    assert [c.strip() for c in header.strip("┃ \n").split("┃")][:7] == ["trial id", "model", "drop_path_rate",
                                                                      "seed", "state", "epochs", "val top-1"]
    rows = json.loads(run("status", "door", "--json", "--workdir", str(ctx.workdir)).stdout)
    assert [r["trial_id"] for r in rows] == [t.id for t in trials]
    assert [r["state"] for r in rows] == ["done", "running", "failed", "interrupted"]
    for row, trial in zip(rows, trials):
        assert row["axes"] == {k: trial.axes[k] for k in ctx.axes}
        line = next(line for line in table.stdout.splitlines() if row["trial_id"] in line)
        cells = [c.strip() for c in line.strip("│ \n").split("│")]
        assert cells[1:5] == [trial.config.model, cli._fmt(trial.axes["model_kwargs.drop_path_rate"]), "0",
                              row["state"]]
    assert "1 done · 1 running · 1 failed · 1 interrupted" in table.stdout


def test_dry_run_states_use_the_status_vocabulary(states, sweep_file: Path):
    ctx, trials, _ = states
    result = run("submit", str(sweep_file), "--dry-run", "--workdir", str(ctx.workdir))
    assert result.returncode == 0, result.stderr
    by_id = {t.id: line for t in trials for line in result.stdout.splitlines() if t.id in line}
    expected = [("done", "skip"), ("running", "leave alone"), ("failed", "to run"), ("interrupted", "to run")]
    for trial, (state, action) in zip(trials, expected):
        cells = [c.strip() for c in by_id[trial.id].strip("│ \n").split("│")]
        assert cells[-2:] == [state, action]
    assert "would submit 2 trial(s) (1 already finished, 1 running: left alone)" in result.stdout


def test_cancel_with_nothing_running_says_so_and_exits_0(tmp_path: Path):
    ctx, trials = recorded(tmp_path / "runs")
    write_json(ctx.trial_dir(trials[0].id) / FINAL_FILE, {"metrics": {}})
    write_status(ctx.trial_dir(trials[1].id), "interrupted")
    result = run("cancel", "door", "--workdir", str(ctx.workdir))
    assert result.returncode == 0, result.stderr
    assert "nothing to stop" in result.stdout and "(1 done · 1 interrupted · 2 pending)" in result.stdout


def test_cancel_stops_a_running_trial_and_says_how_many(states):
    ctx, _, holder = states
    result = run("cancel", "door", "--workdir", str(ctx.workdir))
    assert result.returncode == 0, result.stderr
    assert "1 running trial(s) stopped" in result.stdout and "nothing to stop" not in result.stdout
    assert holder.wait(30) == -signal.SIGTERM


@pytest.mark.parametrize("args", [["list", "--json"], ["list"], ["status", "door", "--json"], ["status", "door"],
                                  ["submit", "{file}", "--dry-run"], ["submit", "{file}", "--show-config", "0"],
                                  ["completion", "bash"]])
def test_a_closed_pipe_ends_quietly(tmp_path: Path, sweep_file: Path, args: list[str]):
    """`convit-sweep ... | head -1`: the reader has gone before the output is written; no traceback, exit 141."""
    work = tmp_path / "runs"
    recorded(work)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        argv = [a.replace("{file}", str(sweep_file)) for a in args]
        argv += ["--workdir", str(work)] if args[0] != "completion" else []
        result = run(*argv, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "", result.stderr


def test_head_of_status_json_through_a_shell_pipe(states):
    """The case as a user types it: bash, `| head -1`, pipefail off: head's line, nothing on stderr."""
    ctx, _, _ = states
    line = (f"cd {REPO} && PYTHONPATH={REPO} {sys.executable} -m orchestrator.cli status door --json "
            f"--workdir {ctx.workdir} | head -1")
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == "[\n" and out.stderr == ""


def test_sweep_rows_newest_first_and_an_unreadable_trials_file_is_named(tmp_path: Path):
    work = tmp_path / "runs"
    old_ctx, _ = recorded(work, SWEEP.replace("name: door", "name: old"))
    time.sleep(0.05)
    recorded(work)
    past = time.time() - 3600
    for path in old_ctx.sweep_dir.rglob("*"):
        os.utime(path, (past, past))
    assert [r.name for r in sweep_rows(work)] == ["door", "old"]
    (old_ctx.sweep_dir / "trials.json").write_text('{"not": "a list"}')
    row = next(r for r in sweep_rows(work) if r.name == "old")
    assert row.trials == 0 and "not a list" in row.problem
