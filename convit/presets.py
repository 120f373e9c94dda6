"""The named starting points of a trial config (``TrialConfig.preset(name)``, ``preset: NAME`` in YAML).

Plain dicts of TrialConfig keys, deep-merged over TrialConfig's defaults; torch-free and independent of
convit.config (which imports them and validates them), so listing the preset names costs nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's recipe (DeiT's, on ImageNet-1k): every default of TrialConfig.  The source of each value
    # is tabulated in docs/training.md (tests/test_presets.py keeps the two in step).
    "imagenet": {},
    # ConViT-Ti on CIFAR-10 at its native 32 px: 8x8 patch grid (patch 4), milder crops (RandomResizedCrop
    # of 8 % of a 32 px image is a few pixels), eval without resize, no repeated augmentation (its point
    # is large distributed batches), 100 epochs at batch 256.
    "cifar": {
        "model": "convit_tiny",
        "model_kwargs": {"img_size": 32, "patch_size": 4, "drop_path_rate": 0.1},
        "dataset": "cifar10",
        "epochs": 100,
        "batch_size": 256,
        "crop_scale": (0.35, 1.0),
        "crop_pct": 1.0,
        "repeated_aug": 1,
        "num_workers": 4,
        "analysis_every": 5,
    },
    # Seconds on a CPU: a ConViT-Ti at 32 px / patch 8 on a small synthetic set, two epochs.
    "smoke": {
        "model": "convit_tiny",
        "model_kwargs": {"img_size": 32, "patch_size": 8, "drop_path_rate": 0.0},
        "dataset": "synthetic",
        "num_classes": 4,
        "synthetic_train_size": 64,
        "synthetic_val_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "lr_base_batch": None,
        "lr": 1e-3,
        "warmup_epochs": 0.5,
        "min_lr": 1e-5,
        "crop_scale": (0.35, 1.0),
        "crop_pct": 1.0,
        "repeated_aug": 1,
        "num_workers": 0,
        "analysis_every": 1,
    },
}
