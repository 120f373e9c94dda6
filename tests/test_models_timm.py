"""Checkpoint compatibility with timm 1.0.31's ConViT: same state_dict format, same function."""
from __future__ import annotations

import pytest
import torch

from convit.models import create_model

timm = pytest.importorskip("timm")

CONFIGS = [
    ("convit_tiny", dict(img_size=32, patch_size=4, num_classes=10)),
    ("convit_tiny", dict(img_size=32, patch_size=4, num_classes=10, local_up_to_layer=3, locality_strength=0.1)),
    ("convit_small", dict(img_size=48, patch_size=8, num_classes=7, depth=4, local_up_to_layer=2)),
    ("convit_base", dict(img_size=32, patch_size=16, in_chans=1, depth=2, local_up_to_layer=1)),
    ("convit_tiny", dict(drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1, proj_drop_rate=0.1)),
    ("convit_tiny", dict()),  # 224 px, patch 16: the published checkpoints' configuration
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS])
def test_loads_timm_weights_and_matches_its_outputs(name, kwargs):
    torch.manual_seed(0)
    reference = timm.create_model(name, **kwargs).eval()
    with torch.no_grad():  # random weights everywhere, not just the structured init (gates, V, pos_proj)
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = create_model(name, **kwargs).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    size = kwargs.get("img_size", 224)
    images = torch.randn(2, kwargs.get("in_chans", 3), size, size)
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert expected.std() > 0.1  # outputs are not trivially equal (e.g. all ~0)


def test_state_dict_format_is_identical_both_ways():
    kwargs = dict(img_size=32, patch_size=8, local_up_to_layer=4)
    ours = create_model("convit_small", **kwargs).state_dict()
    theirs = timm.create_model("convit_small", **kwargs).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    timm.create_model("convit_small", **kwargs).load_state_dict(ours, strict=True)
