"""The speed of the door (issue 12): a dry run and a resubmission of a finished sweep import no torch, and the
shortcuts that make that possible give the answers of what they replace: timm's optimizer list and RandAugment
parser (convit.data.recipe), the plan the engine recorded (orchestrator.plans.planned_epochs), the tracking
URI rules held in two modules (orchestrator.tracking_uri, orchestrator.tracking). Timings are a benchmark's job
(benchmarks/bench_cli.py), not a test's."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convit.config import TrialConfig
from convit.data import DataError, check_data
from convit.data.recipe import RAND_NUMERIC, TIMM_OPTIMIZERS, TIMM_VERSION, check_recipe_names
from convit.records import CONFIG_FILE, FINAL_FILE, METRICS_FILE, write_json
from orchestrator import tracking, tracking_uri
from orchestrator.errors import OrchestratorError
from orchestrator.plans import planned_epochs, trial_plan
from orchestrator.spec import expand, parse_spec
from orchestrator.status import trial_status
from orchestrator.submit import tracking_uri_for

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm")
SMOKE = """
name: speedy
base: {preset: smoke, epochs: 1, synthetic_train_size: 32, synthetic_val_size: 16}
grid:
  model: [convit_tiny, deit_tiny]
seeds: [0]
"""


def _run(code: str, *args: Path, env: dict[str, str] | None = None) -> tuple[list, str]:
    """Run ``code`` with ``args`` in a fresh interpreter, as a shell would: (the JSON of its last line, its
    output). What it imported is its own to report."""
    full = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
    full.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="200", **(env or {}))
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=full, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1]), out.stdout


#: cli.main(argv[1:]), then [its exit code, the heavy modules loaded] as the last line.
CLI_PROBE = f"""
import json, sys
from orchestrator import cli
code = cli.main(sys.argv[1:])
print(json.dumps([code, [m for m in {HEAVY + ('mlflow',)!r} if m in sys.modules]]))
"""


# ------------------------------------------------------------------------------------ timm's names, tested lists
def test_the_optimizer_list_is_the_installed_timms():
    """If this fails after a timm upgrade: copy timm.optim.list_optimizers() and the version into recipe.py."""
    from timm.optim import list_optimizers

    assert version("timm") == TIMM_VERSION
    assert list(TIMM_OPTIMIZERS) == list_optimizers()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sections=st.lists(st.one_of(
    st.tuples(st.sampled_from(["m", "n", "mmax", "inc"]), st.integers(0, 30).map(str)),
    st.tuples(st.sampled_from(["mstd", "p"]), st.one_of(st.integers(0, 200).map(str),
                                                         st.decimals(0, 200, places=2).map(str)))), max_size=5),
       interpolation=st.sampled_from(["bicubic", "bilinear", "random"]), remode=st.sampled_from(["pixel", "rand", "const"]),
       reprob=st.sampled_from([0.0, 0.25, 1.0]), color_jitter=st.sampled_from([0.0, 0.4]),
       crop_scale=st.sampled_from([(0.08, 1.0), (0.35, 1.0), (1.0, 1.0)]))
def test_every_string_the_fast_path_accepts_timm_builds(sections, interpolation, remode, reprob, color_jitter,
                                                         crop_scale):
    """RAND_NUMERIC is a subset of what timm accepts, whatever the rest of the augmentation recipe."""
    from convit.data.transforms import train_transform

    text = "-".join(["rand", *(key + value for key, value in sections)])
    assert RAND_NUMERIC.fullmatch(text), text
    cfg = TrialConfig.preset("smoke").model_copy(update=dict(
        randaugment=text, train_interpolation=interpolation, remode=remode, reprob=reprob,
        color_jitter=color_jitter, crop_scale=crop_scale))
    train_transform(cfg, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # raises if timm refuses


@pytest.mark.parametrize("text", ["randx", "rand-m9x", "rand-q1", "rand-m", "rand--m9", "rand-mstd", "rand-p0.5.1",
                                  "augmix-z1", "trivial", "rand-m9-tweights", "augmix-m3-w2", "rand_m9"])
def test_strings_outside_the_fast_path_get_timms_own_verdict(text: str):
    """Anything RAND_NUMERIC does not cover is judged by timm, as before: the same verdict and message."""
    from convit.data.transforms import train_transform

    assert not RAND_NUMERIC.fullmatch(text)
    cfg = TrialConfig.preset("smoke").model_copy(update={"randaugment": text})
    try:
        train_transform(cfg, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        timm_error = None
    except (AssertionError, ValueError, KeyError, IndexError) as exc:
        timm_error = f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
    if timm_error is None:
        check_recipe_names(cfg)
    else:
        with pytest.raises(DataError) as caught:
            check_recipe_names(cfg)
        assert caught.value.key == "randaugment" and timm_error in str(caught.value)


def test_an_unknown_optimizer_is_refused_with_timms_suggestion():
    cfg = TrialConfig.preset("smoke").model_copy(update={"opt": "adamx"})
    with pytest.raises(DataError, match="optimizer 'adamx' is not one of timm's") as caught:
        check_data(cfg)
    assert caught.value.key == "opt"
    check_data(cfg.model_copy(update={"opt": "LAMB"}))  # case-insensitive, as timm's create_optimizer


def test_the_data_check_and_a_dry_run_import_no_torch(tmp_path: Path):
    data_root = os.environ.get("CONVIT_DATA_ROOT") or str(REPO.parent / "shared" / "data" / "cifar10_jpeg")
    if not Path(data_root).is_dir():
        pytest.skip(f"the quickstart's CIFAR-10 is not at {data_root} (set CONVIT_DATA_ROOT)")
    check = ("import json, sys; from convit.config import TrialConfig; from convit.data import check_data; "
             "plan = check_data(TrialConfig.preset('cifar').model_copy(update={'data_root': sys.argv[1]})); "
             f"print(json.dumps([plan.epochs, [m for m in {HEAVY!r} if m in sys.modules]]))")
    (epochs, heavy), _ = _run(check, Path(data_root))
    assert epochs == 100 and heavy == []  # the cifar preset: RandAugment on, adamw
    (code, heavy), out = _run(CLI_PROBE, "submit", "sweeps/quickstart.yaml", "--dry-run", "--workdir",
                              tmp_path / "runs", env={"CONVIT_DATA_ROOT": data_root})
    assert code == 0 and heavy == [] and "would submit 2 trial(s)" in out


# ---------------------------------------------------------------------------------------------- the epoch plan
def test_planned_epochs_read_the_plan_the_engine_recorded(tmp_path: Path):
    trial = expand(parse_spec(SMOKE))[0]
    computed = trial_plan(trial.config).epochs
    folder = tmp_path / trial.id
    folder.mkdir()
    assert planned_epochs(trial, folder) == computed == planned_epochs(trial)  # nothing recorded yet
    write_json(folder / CONFIG_FILE, {"config_hash": trial.config.config_hash(), "plan": {"epochs": 7}})
    assert planned_epochs(trial, folder) == 7 and trial_status(trial, folder).epochs == 7
    write_json(folder / CONFIG_FILE, {"config_hash": "0" * 16, "plan": {"epochs": 7}})  # another config's folder
    assert planned_epochs(trial, folder) == computed


def test_a_recorded_plan_needs_no_data(tmp_path: Path):
    """A trial whose data cannot be read here (a cluster's filesystem) still shows its epochs once it ran."""
    spec = parse_spec(SMOKE.replace("preset: smoke,", f"preset: cifar, data_root: {tmp_path / 'nowhere'},"))
    trial = expand(spec)[0]
    assert planned_epochs(trial) is None
    write_json(tmp_path / CONFIG_FILE, {"config_hash": trial.config.config_hash(), "plan": {"epochs": 3}})
    assert planned_epochs(trial, tmp_path) == 3


# ------------------------------------------------------------------------------------ a finished sweep, again
def test_a_resubmission_of_a_finished_sweep_imports_no_torch(tmp_path: Path):
    """Trials finished on disk (final.json, the engine's config.json): the first resubmission logs them to MLflow
    (caught up), the next finds them there too; neither loads torch, and the status shows the recorded plan."""
    work, spec_file = tmp_path / "runs", tmp_path / "speedy.yaml"
    spec_file.write_text(SMOKE)
    for trial in expand(parse_spec(SMOKE)):
        folder = work / "sweeps" / "speedy" / "trials" / trial.id
        folder.mkdir(parents=True)
        write_json(folder / CONFIG_FILE, {"config": trial.config.to_dict(), "config_hash": trial.config.config_hash(),
                                          "plan": {**trial_plan(trial.config).to_dict(), "epochs": 5}})
        (folder / METRICS_FILE).write_text(json.dumps({"epoch": 0, "train_loss": 1.0, "val_top1": 30.0}) + "\n")
        write_json(folder / FINAL_FILE, {"metrics": {"test/top1": 30.0}, "config_hash": trial.config.config_hash()})
    for caught_up in (True, False):
        (code, heavy), out = _run(CLI_PROBE, "submit", spec_file, "--workdir", work)
        assert code == 0 and "2 trial(s) already finished: skipped" in out, out
        assert ("finished while MLflow was not answering: logged now" in out) is caught_up, out
        assert [m for m in heavy if m != "mlflow"] == []
    (code, heavy), out = _run(CLI_PROBE, "status", "speedy", "--json", "--workdir", work)
    rows = json.loads(out[:out.rindex("\n[")])
    assert code == 0 and heavy == [] and [(r["state"], r["epochs"]) for r in rows] == [("done", 5), ("done", 5)]


# ------------------------------------------------------------------------------------------ tracking URI rules
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _verdict(check, uri: str) -> str | None:
    try:
        check(uri, timeout_s=2.0)
    except OrchestratorError as exc:
        return str(exc)
    return None


def test_the_tracking_uri_rules_give_the_same_answers_in_both_modules(tmp_path: Path, monkeypatch):
    """The mlflow-free check (dry runs) judges http(s) and sqlite exactly as the full one does, and leaves every
    other scheme to MLflow's store registry, which refuses an unknown one."""
    assert tracking.DB_NAME == tracking_uri.DB_NAME
    assert tracking.default_tracking_uri(tmp_path / "w") == tracking_uri.default_tracking_uri(tmp_path / "w")
    for uri in (tracking_uri.default_tracking_uri(tmp_path), f"sqlite:///{tmp_path / 'no' / 'mlflow.db'}",
                f"http://127.0.0.1:{_free_port()}"):
        assert _verdict(tracking.check_tracking_uri, uri) == _verdict(tracking_uri.check_uri_without_mlflow, uri), uri
    assert tracking_uri.check_uri_without_mlflow("nosuch://x") is False
    assert _verdict(tracking.check_tracking_uri, "nosuch://x") is not None


def test_a_sweep_logs_where_it_was_first_submitted(tmp_path: Path, monkeypatch):
    spec = parse_spec(SMOKE)
    work = tmp_path / "runs"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri_for(spec, work, None) == tracking_uri.default_tracking_uri(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_uri_for(spec, work, None) == "http://env:5000"
    write_json(work / "sweeps" / "speedy" / "sweep.json", {"tracking_uri": "http://first:5000"})
    assert tracking_uri_for(spec, work, None) == "http://first:5000"
    assert tracking_uri_for(spec, work, "http://cli:5000") == "http://cli:5000"
    for cli_uri in (None, "http://cli:5000"):
        assert tracking_uri_for(spec, work, cli_uri) == tracking_uri.sweep_tracking_uri(work, "speedy", cli_uri, None)
