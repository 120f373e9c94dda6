"""The sweep as a researcher sees it in MLflow's UI: a real ``mlflow server``, headless Chromium, the text each
rendered page shows (benchmarks/mlflow_browser.py). Skips, saying why, where no Chromium is installed (`.ci/run`
installs the Debian package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.test_local import cli, sweep_file

REPO = Path(__file__).resolve().parents[1]


def _browser_check():
    spec = importlib.util.spec_from_file_location("mlflow_browser", REPO / "benchmarks" / "mlflow_browser.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_runs_table_the_sweep_run_and_a_trial_page_answer_the_question(tmp_path: Path):
    check = _browser_check()
    if check.find_browser() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); the MLflow UI check needs a browser")
    work = tmp_path / "runs"
    done = cli("submit", str(sweep_file(tmp_path, "ui")), "--workdir", str(work))
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {p.name: p for p in check.capture(work, "ui", tmp_path / "shots")}

    runs = pages["runs"].text
    assert "Model training" in runs and "Group: convit_tiny" in runs and "Group: deit_tiny" in runs
    assert "convit_tiny · s0" in runs and "deit_tiny · s0" in runs  # short child names, axes first
    assert "Parameters" in runs and "test_top1" in runs and "(average)" in runs  # axes and headline as columns

    sweep_run = pages["sweep_run"].text
    assert "Sweep ui : results" in sweep_run or "Sweep ui: results" in sweep_run
    assert "ConViT-Ti" in sweep_run and "DeiT-Ti" in sweep_run and "Δ test_top1 vs DeiT-Ti" in sweep_run
    assert "gap/test_top1/convit_tiny_vs_deit_tiny/all" in sweep_run  # the summary metrics

    trial = pages["trial_run"].text
    assert " · s0" in trial and ("gating/l00" in trial or "nonlocality/l00" in trial)
    assert "gating/l0/h0" not in trial and "final/" not in trial
    for page in pages.values():
        assert page.screenshot.stat().st_size > 20_000, page.name  # a rendered page, not a blank one
