"""torch.compile on the models (inductor, CPU): no graph break, same numbers, trains."""
from __future__ import annotations

import pytest
import torch

from convit.models import create_model


@pytest.mark.timeout(300)
def test_compiled_tiny_convit_matches_eager_and_backprops():
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = create_model("convit_tiny", img_size=16, patch_size=4, depth=2, num_classes=3)
    images = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: a graph break would be an error
    out = compiled(images)
    torch.testing.assert_close(out, model(images), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    gate = model.blocks[0].attn.gating_param
    assert gate.grad is not None and gate.grad.abs().sum() > 0
