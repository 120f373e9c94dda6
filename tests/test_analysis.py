"""Attention analysis: gating, nonlocality on each layer's real input, positional centres."""
from __future__ import annotations

import math

import pytest
import torch

from convit.analysis import attention_metrics, gating, layer_inputs, metrics_from_inputs
from convit.models import create_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(name="convit_tiny", seed=0, **kwargs):
    torch.manual_seed(seed)
    return create_model(name, img_size=32, patch_size=4, num_classes=10, **kwargs)


def _perturb(model, scale=0.1):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def test_gating_reports_sigmoid_of_lambda_per_gpsa_block():
    model = _model(depth=4, gating_init=-1.0)
    with torch.no_grad():
        model.blocks[1].attn.gating_param[2] = 2.0
    gates = gating(model)
    assert sorted(gates) == [0, 1]
    assert gates[0] == pytest.approx([1 / (1 + math.e)] * 4)
    assert gates[1][2] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert gating(_model("deit_tiny", depth=2)) == {}


def test_metric_names_are_flat_and_complete():
    model = _model(depth=3, local_up_to_layer=2)  # blocks 0, 1 GPSA; block 2 MHSA
    metrics = attention_metrics(model, torch.randn(2, 3, 32, 32))
    expected = {f"nonlocality/l{i}" for i in range(3)} | {f"nonlocality/l{i}/h{h}" for i in range(3) for h in range(4)}
    for i in (0, 1):
        expected |= {f"gating/l{i}", f"positional_share/l{i}"}
        expected |= {f"{name}/l{i}/h{h}" for name in ("gating", "pos_center_dist") for h in range(4)}
    assert set(metrics) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["positional_share/l0"] == pytest.approx(metrics["gating/l0"], abs=1e-6)


def test_local_init_with_large_alpha_is_local():
    images = torch.randn(4, 3, 32, 32)
    local = attention_metrics(_model(depth=3, local_up_to_layer=2, locality_strength=10.0, gating_init=3.0), images)
    spread = attention_metrics(_model(depth=3, local_up_to_layer=2, use_local_init=False, gating_init=3.0), images)
    for i in (0, 1):
        assert local[f"nonlocality/l{i}"] < 0.5 * spread[f"nonlocality/l{i}"]
        # 4 heads: taps at (+-0.5, +-0.5) -> positional centre at distance sqrt(0.5) from the query
        for h in range(4):
            assert local[f"pos_center_dist/l{i}/h{h}"] == pytest.approx(math.sqrt(0.5), abs=0.05)


def test_positional_centres_follow_the_head_grid():
    model = _model("convit_small", depth=2, locality_strength=8.0)  # 9 heads: a 3x3 kernel
    metrics = attention_metrics(model, torch.randn(1, 3, 32, 32))
    dists = sorted(round(metrics[f"pos_center_dist/l0/h{h}"], 1) for h in range(9))
    assert dists == [0.0] + [1.0] * 4 + [1.4] * 4


def test_metrics_use_each_layers_real_input_not_the_patch_embeddings():
    model = _model(depth=3, local_up_to_layer=2, gating_init=-2.0)  # content-dominated: depends on the input
    _perturb(model, scale=0.5)
    images = torch.randn(3, 3, 32, 32)
    metrics = attention_metrics(model, images)

    # What every attention module really sees: run the network by hand up to it.
    model.eval()
    with torch.no_grad():
        tokens = model.patch_embed(images) + model.pos_embed
        by_hand = {}
        for i, blk in enumerate(model.blocks):
            if i == model.local_up_to_layer:
                tokens = torch.cat((model.cls_token.expand(3, -1, -1), tokens), dim=1)
            by_hand[i] = blk.norm1(tokens)
            tokens = blk(tokens)
        embeddings = model.patch_embed(images) + model.pos_embed
        public_way = {i: model.blocks[i].norm1(embeddings) for i in (0, 1)}  # patch embeddings to every layer
    assert metrics == pytest.approx(metrics_from_inputs(model, by_hand), rel=1e-5)
    wrong = metrics_from_inputs(model, public_way)
    assert wrong["nonlocality/l0"] == pytest.approx(metrics["nonlocality/l0"], rel=1e-5)  # same input at layer 0
    assert abs(wrong["nonlocality/l1"] - metrics["nonlocality/l1"]) > 0.05  # but not beyond


def test_forward_hooks_are_removed_and_mode_restored():
    model = _model(depth=2).train()
    inputs = layer_inputs(model, torch.randn(2, 3, 32, 32))
    assert sorted(inputs) == [0, 1] and inputs[0].shape == (2, 64, 192) and inputs[1].shape == (2, 65, 192)
    assert model.training
    assert all(not blk.attn._forward_pre_hooks for blk in model.blocks)


def test_deit_gets_mhsa_nonlocality_only():
    metrics = attention_metrics(_model("deit_tiny", depth=2), torch.randn(2, 3, 32, 32))
    assert set(metrics) == {f"nonlocality/l{i}" for i in (0, 1)} | {f"nonlocality/l{i}/h{h}" for i in (0, 1) for h in range(3)}
    # near-uniform attention of a fresh model over an 8x8 grid: mean distance between patches is ~3.6
    assert 2.5 < metrics["nonlocality/l0"] < 4.5
