"""ConViT / DeiT models: registry, validation, GPSA fast path vs reference, local init, geometry."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import convit
from convit.models import GPSA, ConViT, create_model, list_models
from convit.models.gpsa import flush_subnormals
from convit.models.positions import local_head_offsets, relative_offsets


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Move every parameter away from its (structured) init so tests exercise general weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


# -- registry -------------------------------------------------------------------------------------
def test_list_models_names_every_variant():
    assert set(list_models()) == {
        "convit_tiny", "convit_small", "convit_base", "convit_tiny_plus", "convit_small_plus",
        "convit_base_plus", "deit_tiny", "deit_small", "deit_base",
    }
    assert convit.list_models() == list_models()


@pytest.mark.parametrize(
    "name, heads, width, gpsa_layers",
    [
        ("convit_tiny", 4, 192, 2), ("convit_small", 9, 432, 2), ("convit_base", 16, 768, 2),
        ("convit_tiny_plus", 4, 256, 2), ("convit_small_plus", 9, 576, 2), ("convit_base_plus", 16, 1024, 2),
        ("deit_tiny", 3, 192, 0), ("deit_small", 6, 384, 0), ("deit_base", 12, 768, 0),
    ],
)
def test_variant_shapes(name, heads, width, gpsa_layers):
    model = create_model(name, img_size=32, patch_size=16, num_classes=5, depth=4)
    assert model.embed_dim == width
    assert all(blk.attn.num_heads == heads for blk in model.blocks)
    assert len(model.gpsa_layers()) == gpsa_layers  # depth 4 -> all but the last two blocks are GPSA
    assert len(create_model(name, img_size=32, patch_size=16, depth=2).gpsa_layers()) == gpsa_layers // 2
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_default_convit_tiny_is_the_paper_model():
    model = convit.create_model("convit_tiny")
    assert len(model.blocks) == 12 and sorted(model.gpsa_layers()) == list(range(10))
    assert model.pos_embed.shape == (1, 196, 192)  # patches only, no class slot
    assert 5.5e6 < sum(p.numel() for p in model.parameters()) < 6.0e6
    assert all(blk.attn.qk.bias is None for blk in model.blocks[:10])
    assert model.norm.eps == 1e-6 and model.blocks[0].mlp.fc1.out_features == 4 * 192


def test_import_convit_is_light():
    code = "import sys, convit; assert 'torch' not in sys.modules; assert callable(convit.create_model)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: convit_tiny.*deit_base"):
        create_model("convit_huge")


def test_unknown_kwarg_is_rejected():
    with pytest.raises(TypeError, match="'window'.*accepted: .*img_size"):
        create_model("convit_tiny", window=7)


def test_deit_rejects_gpsa_knobs_instead_of_ignoring_them():
    with pytest.raises(TypeError, match="locality_strength.*DeiT has no GPSA"):
        create_model("deit_tiny", locality_strength=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(img_size=30, patch_size=4), "img_size height 30 is not divisible by patch_size 4"),
        (dict(img_size=(32, 30), patch_size=4), "img_size width 30"),
        (dict(local_up_to_layer=13), r"local_up_to_layer must be an int in \[0, 12\]"),
        (dict(local_up_to_layer=-1), r"local_up_to_layer must be an int in \[0, 12\]"),
        (dict(drop_path_rate=1.5), "drop_path_rate must be a probability"),
        (dict(locality_strength=-1.0), "locality_strength must be a finite number >= 0"),
        (dict(gating_init=float("nan")), "gating_init must be a finite number"),
        (dict(freeze_gating="yes"), "freeze_gating must be True or False"),
    ],
)
def test_bad_values_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("convit_tiny", **kwargs)


def test_embed_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match="embed_dim=100 is not divisible by num_heads=3"):
        ConViT(img_size=16, patch_size=8, embed_dim=100, num_heads=3, depth=2, local_up_to_layer=1, use_local_init=False)


def test_non_square_head_count_needs_local_init_off():
    with pytest.raises(ValueError, match="num_heads=3 must be a perfect square.*use_local_init=False"):
        ConViT(img_size=16, patch_size=8, embed_dim=96, num_heads=3, depth=2, local_up_to_layer=1)
    model = ConViT(img_size=16, patch_size=8, embed_dim=96, num_heads=3, depth=2, local_up_to_layer=1, use_local_init=False)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 1000)


def test_wrong_input_size_and_token_count_are_clear_errors():
    model = create_model("convit_tiny", img_size=32, patch_size=8, depth=2)
    with pytest.raises(ValueError, match="built for img_size=.32, 32."):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="4x4 patch grid .16 tokens. but got 17 tokens"):
        model.blocks[0].attn(torch.randn(1, 17, 192))


# -- GPSA fast path ---------------------------------------------------------------------------------
def _gpsa(grid=(4, 4), heads=4, **kwargs) -> GPSA:
    torch.manual_seed(0)
    layer = GPSA(16 * heads, heads, grid, **kwargs)
    _perturb(layer, scale=0.3)
    with torch.no_grad():
        layer.gating_param.copy_(torch.linspace(-2, 2, heads))
    return layer


@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_matches_explicit_reference(grid, dtype):
    layer = _gpsa(grid).to(dtype)
    x = torch.randn(3, grid[0] * grid[1], layer.num_heads * layer.head_dim, dtype=dtype, requires_grad=True)
    fast = layer(x)
    ref = layer.forward_reference(x)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast, ref, **tol)
    if dtype == torch.float64:  # gradients: exact equivalence, without float32 rounding noise
        grads_fast = torch.autograd.grad(fast.square().sum(), [x, *layer.parameters()])
        grads_ref = torch.autograd.grad(ref.square().sum(), [x, *layer.parameters()])
        for gf, gr in zip(grads_fast, grads_ref):
            torch.testing.assert_close(gf, gr, **tol)


def test_subnormal_positional_weights_are_flushed_to_zero(monkeypatch):
    """The locality init underflows part of P to subnormal floats (10x slower CPU matmuls); the fast path's
    weights must hold none, changing nothing a float32 output can show."""
    tiny = torch.finfo(torch.float32).tiny
    layer = create_model("convit_tiny", img_size=64, patch_size=4).blocks[0].attn  # 16x16 grid, as at 224/14
    g = layer.gate().detach().view(-1, 1, 1)
    weights = (g * layer.positional_attention()).detach()
    assert ((weights > 0) & (weights < tiny)).any()  # the problem is real at this geometry
    flushed = flush_subnormals(weights)
    assert not ((flushed > 0) & (flushed < tiny)).any()
    kept = weights >= tiny
    assert torch.equal(flushed[kept], weights[kept]) and (flushed[~kept] == 0).all()
    nan = weights.clone()
    nan[0, 0, 0] = float("nan")
    assert flush_subnormals(nan)[0, 0, 0].isnan()  # a diverging model stays visible
    half = weights.half()  # float16 has no values below float32's threshold but 0: untouched
    assert torch.equal(flush_subnormals(half), half)
    w = weights.clone().requires_grad_(True)
    flush_subnormals(w).sum().backward()
    assert torch.equal(w.grad, kept.to(w.dtype))  # gradients pass through the kept entries only
    seen = []  # and the fast path multiplies with the flushed weights
    bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b: seen.append(a.detach()) or bmm(a, b))
    layer(torch.randn(2, layer.num_tokens, layer.num_heads * layer.head_dim))
    assert len(seen) == 1 and not ((seen[0] > 0) & (seen[0] < tiny)).any()


def test_public_renormalisation_is_a_no_op():
    layer = _gpsa()
    content, positional, gate = layer.attention_components(torch.randn(2, 16, 64))
    g = gate.view(1, -1, 1, 1)
    mixed = (1 - g) * content + g * positional
    torch.testing.assert_close(mixed.sum(-1), torch.ones(2, 4, 16))
    torch.testing.assert_close(layer.attention_map(torch.randn(2, 16, 64)).sum(-1), torch.ones(2, 4, 16))


def test_attention_dropout_is_applied_to_the_mixed_matrix():
    layer = _gpsa(attn_drop=0.5).train()
    x = torch.randn(2, 16, 64)
    torch.manual_seed(1)
    dropped = layer(x)
    torch.manual_seed(1)
    reference = layer.forward_reference(x)  # nn.Dropout on A, same RNG stream -> same mask
    torch.testing.assert_close(dropped, reference)
    assert not torch.allclose(dropped, layer.eval()(x), atol=1e-3)  # dropout really is active in training


def test_positional_attention_is_shared_across_the_batch():
    layer = _gpsa()
    x = torch.randn(2, 16, 64)
    out_pair = layer(x)
    torch.testing.assert_close(out_pair[1:], layer(x[1:]))


# -- geometry and initialisation ------------------------------------------------------------------
def test_non_square_images_build_a_matching_grid():
    model = create_model("convit_tiny", img_size=(16, 40), patch_size=8, depth=2, num_classes=3).eval()
    assert model.blocks[0].attn.grid_size == (2, 5) and model.pos_embed.shape[1] == 10
    images = torch.randn(2, 3, 16, 40)
    with torch.no_grad():
        tokens = model.blocks[0].norm1(model.patch_embed(images) + model.pos_embed)
        torch.testing.assert_close(model.blocks[0].attn(tokens), model.blocks[0].attn.forward_reference(tokens))
        assert model(images).shape == (2, 3)


def test_relative_offsets_on_a_non_square_grid():
    r = relative_offsets((2, 3))  # tokens row-major: token 4 is at row 1, column 1
    assert r.shape == (6, 6, 3)
    assert r[0, 4].tolist() == [1.0, 1.0, 2.0]  # key 4 is one right and one down from query 0
    assert r[5, 0].tolist() == [-2.0, -1.0, 5.0]
    assert torch.equal(r[..., 0], -r[..., 0].T)


@pytest.mark.parametrize("grid", [(5, 5), (5, 7)])
def test_local_init_heads_attend_to_their_convolution_tap(grid):
    layer = GPSA(9 * 8, 9, grid, locality_strength=4.0)
    positional = layer.positional_attention()
    centre = (grid[0] // 2) * grid[1] + grid[1] // 2
    for h, (dx, dy) in enumerate(local_head_offsets(9).long().tolist()):
        target = centre + dy * grid[1] + dx
        assert positional[h, centre].argmax().item() == target
        assert positional[h, centre, target] > 0.9
    torch.testing.assert_close(layer.v.weight, torch.eye(72))


def test_local_init_follows_the_checkpoint_convention():
    timm = pytest.importorskip("timm")
    ours = create_model("convit_small", img_size=32, patch_size=8, locality_strength=0.7)
    theirs = timm.create_model("convit_small", img_size=32, patch_size=8, locality_strength=0.7)
    for i in range(10):
        torch.testing.assert_close(ours.blocks[i].attn.pos_proj.weight, theirs.blocks[i].attn.pos_proj.weight)
        torch.testing.assert_close(ours.blocks[i].attn.v.weight, theirs.blocks[i].attn.v.weight)


def test_local_init_can_be_switched_off():
    model = create_model("convit_tiny", img_size=16, patch_size=8, depth=3, use_local_init=False)
    attn = model.blocks[0].attn
    assert not torch.allclose(attn.v.weight, torch.eye(192))
    assert attn.pos_proj.weight.abs().max() < 0.1  # small random weights: near-uniform positional attention


def test_gating_init_and_freeze():
    model = create_model("convit_tiny", img_size=16, patch_size=8, depth=3, gating_init=-0.5, freeze_gating=True)
    free = create_model("convit_tiny", img_size=16, patch_size=8, depth=3)
    assert torch.equal(model.blocks[0].attn.gating_param, torch.full((4,), -0.5))
    assert torch.equal(free.blocks[0].attn.gating_param, torch.ones(4))
    for m in (model, free):
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        before = m.blocks[0].attn.gating_param.detach().clone()
        m(torch.randn(2, 3, 16, 16)).logsumexp(-1).sum().backward()
        opt.step()
        assert torch.equal(m.blocks[0].attn.gating_param, before) is (m is model)


def test_freeze_gpsa_keeps_every_gpsa_weight_while_the_rest_trains():
    """Table 3's "Train GPSA" off: one optimizer step changes no GPSA parameter (qk, v, proj, positional weights,
    gating) but does change the MLPs and the MHSA block."""
    model = create_model("convit_tiny", img_size=16, patch_size=8, depth=3, local_up_to_layer=2, freeze_gpsa=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 3, 16, 16)).logsumexp(-1).sum().backward()
    opt.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    gpsa = {name for name in before if name.startswith(("blocks.0.attn.", "blocks.1.attn."))}
    assert gpsa and not (changed & gpsa)
    assert {"blocks.0.mlp.fc1.weight", "blocks.2.attn.qkv.weight", "head.weight"} <= changed


def test_class_token_enters_at_the_first_mhsa_block():
    model = create_model("convit_tiny", img_size=16, patch_size=8, depth=3, local_up_to_layer=2).eval()
    seen = {}
    for i, blk in enumerate(model.blocks):
        blk.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0].shape[1]))
    model(torch.randn(1, 3, 16, 16))
    assert seen == {0: 4, 1: 4, 2: 5}


def test_all_gpsa_model_has_no_class_token_and_pools_patches():
    model = create_model("convit_tiny", img_size=16, patch_size=8, depth=2, local_up_to_layer=2, num_classes=3)
    assert model.cls_token is None
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert out.shape == (2, 3) and all(p.grad is not None for p in model.parameters())


def test_deit_is_all_mhsa_with_class_token_first():
    model = create_model("deit_small", img_size=32, patch_size=16, num_classes=4, drop_path_rate=0.1)
    assert model.gpsa_layers() == {} and model.local_up_to_layer == 0
    assert 21e6 < sum(p.numel() for p in create_model("deit_small").parameters()) < 23e6
    assert model.train()(torch.randn(2, 3, 32, 32)).isfinite().all()


def test_bf16_autocast_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = create_model("convit_tiny", img_size=32, patch_size=8, depth=3, num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters() if p.requires_grad)
