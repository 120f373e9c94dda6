"""Every preset value is documented with its source: docs/training.md's table must match the code exactly."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from convit.config import TrialConfig
from convit.presets import PRESETS

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def documented() -> dict[str, dict[str, object]]:
    text = DOC.read_text()
    table = text.split("<!-- presets:begin -->")[1].split("<!-- presets:end -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    out = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        key = cells[0].strip("`")
        out[key] = {"imagenet": cells[1], "cifar": cells[2], "smoke": cells[3], "source": cells[4]}
    return out


def _value(cell: str) -> object:
    return yaml.safe_load(re.fullmatch(r"`(.*)`", cell).group(1))


def _json(v: object) -> object:
    return list(v) if isinstance(v, tuple) else v


def test_every_field_is_documented_with_a_source():
    doc = documented()
    assert set(doc) == set(TrialConfig.model_fields)
    assert all(len(row["source"]) > 5 for row in doc.values())


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_documented_values_match_the_presets(preset):
    doc = documented()
    values = TrialConfig.preset(preset).to_dict()
    mismatched = {k: (doc[k][preset], values[k]) for k in values if _value(doc[k][preset]) != _json(values[k])}
    assert not mismatched, f"docs/training.md disagrees with preset '{preset}': {mismatched}"


def test_imagenet_preset_is_deits_recipe():
    """The values of DeiT's main.py / samplers.py that define the recipe (reference.md), checked one by one."""
    c = TrialConfig.preset("imagenet")
    assert (c.epochs, c.batch_size, c.lr, c.lr_base_batch, c.opt, c.weight_decay) == (300, 1024, 5e-4, 512, "adamw", 0.05)
    assert (c.warmup_epochs, c.warmup_lr, c.min_lr) == (5.0, 1e-6, 1e-5)
    assert (c.label_smoothing, c.mixup, c.cutmix, c.randaugment, c.reprob) == (0.1, 0.8, 1.0,
                                                                             "rand-m9-mstd0.5-inc1", 0.25)
    # repeated augmentation keeps an epoch at about len(dataset) samples (DeiT's RASampler), not 3x
    assert (c.repeated_aug, c.repeated_aug_budget) == (3, "deit")
    from convit.data import steps_per_epoch

    assert steps_per_epoch(1_281_167, 1024, 3, "deit") == 1_281_167 // 3 * 3 // 1024
