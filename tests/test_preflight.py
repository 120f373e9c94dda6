"""Data problems are found before submission: exit 2, one message per distinct problem, nothing written."""
from __future__ import annotations

from pathlib import Path

from orchestrator import cli

SWEEP = """
name: preflight
base: {{preset: cifar, epochs: 1, warmup_epochs: 0, analysis_every: 1, data_root: {root}}}
grid:
  model: [convit_tiny, deit_tiny]
  data_fraction: [0.01, 1.0]
"""


def _write(tmp_path: Path, root: str) -> Path:
    path = tmp_path / "preflight.yaml"
    path.write_text(SWEEP.format(root=root))
    return path


def test_missing_data_root_is_refused_before_anything_is_written(tmp_path: Path, capsys):
    work = tmp_path / "runs"
    code = cli.main(["submit", str(_write(tmp_path, str(tmp_path / "nowhere"))), "--workdir", str(work)])
    err = capsys.readouterr().err
    assert code == 2
    assert "1 problem" in err and "nowhere" in err and "is not a directory" in err and "data_root" in err
    assert not work.exists()


def test_batch_larger_than_a_subset_names_the_trials(tmp_path: Path, capsys):
    root = tmp_path / "cifar"
    root.mkdir()
    import numpy as np

    for name in [f"train_{i}.npz" for i in range(5)] + ["test.npz"]:  # 100 labelled images per shard
        np.savez(root / name, images=np.zeros((100, 32, 32, 3), np.uint8), labels=np.arange(100) % 10)
    work = tmp_path / "runs"
    code = cli.main(["submit", str(_write(tmp_path, str(root))), "--workdir", str(work), "--dry-run",
                     "batch_size=64"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "<command line>: batch_size: batch_size=64 is larger than the training subset (10 images at " \
           "data_fraction=0.01, after holding out val_fraction=0.1)" in err
    assert "model=convit_tiny" in err and "model=deit_tiny" in err  # every affected trial, both models
    assert "data_fraction=1.0" not in err.split("trials:")[1]  # the full-data trials are fine
    assert not work.exists()


def test_a_missing_init_checkpoint_is_refused_at_its_line(tmp_path: Path, capsys):
    path = tmp_path / "finetune.yaml"
    path.write_text("name: finetune\nbase:\n  preset: smoke\n  init_checkpoint: /nowhere/convit_tiny.pth\n"
                    "seeds: [0]\n")
    work = tmp_path / "runs"
    code = cli.main(["submit", str(path), "--workdir", str(work), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:4" in err and "init_checkpoint" in err and "is not a file" in err
    assert not work.exists()
