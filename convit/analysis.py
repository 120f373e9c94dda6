"""What the attention of a ConViT does: gating, nonlocality, positional centres (per layer and head).

The metrics are measured on each layer's *real* input: forward pre-hooks capture what every attention
module receives during one ordinary forward pass, then the explicit (paper-literal) attention maps are
computed from those inputs. The public code instead fed the patch embeddings to every layer, which
describes a network that does not exist past layer 0.

Names are flat and ready for MLflow (see docs/ARCHITECTURE.md section 1); layers are block indices.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .models.gpsa import GPSA
from .models.mhsa import MHSA
from .models.positions import relative_distances

MAPS_CHUNK = 32  # images per explicit attention map (B x H x N x N): bounds memory at large N


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model behind torch.compile / DDP wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _attention_layers(model: nn.Module) -> dict[int, GPSA | MHSA]:
    blocks = getattr(_unwrap(model), "blocks", None)
    if blocks is None:
        return {}
    return {i: blk.attn for i, blk in enumerate(blocks) if isinstance(getattr(blk, "attn", None), (GPSA, MHSA))}


def gating(model: nn.Module) -> dict[int, list[float]]:
    """sigma(lambda_h) per GPSA block and head: 1 = purely positional, 0 = purely content."""
    return {i: attn.gate().tolist() for i, attn in _attention_layers(model).items() if isinstance(attn, GPSA)}


@contextmanager
def _capture_inputs(layers: dict[int, nn.Module]) -> Iterator[dict[int, torch.Tensor]]:
    captured: dict[int, torch.Tensor] = {}
    handles = [
        layer.register_forward_pre_hook(lambda _m, args, i=i: captured.__setitem__(i, args[0].detach()))
        for i, layer in layers.items()
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def layer_inputs(model: nn.Module, images: torch.Tensor) -> dict[int, torch.Tensor]:
    """Block index -> the tokens its attention module received in an eval-mode forward of ``images``.

    Runs the plain module behind torch.compile / DDP wrappers: same function, and adding hooks to a
    compiled model would only force a recompilation.
    """
    model = _unwrap(model)
    layers = _attention_layers(model)
    was_training = model.training
    model.eval()
    try:
        with _capture_inputs(layers) as captured, torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
    return captured


def _nonlocality(attn: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Sum_j A_ij ||delta_ij|| per (image, head, query), shape (B, H, N)."""
    return (attn * distances).sum(dim=-1)


def _gpsa_metrics(i: int, layer: GPSA, x: torch.Tensor) -> dict[str, float]:
    distances = relative_distances(layer.grid_size).to(x.device)
    nonlocal_sum = torch.zeros(layer.num_heads, device=x.device)
    share_sum = torch.zeros((), device=x.device)
    for chunk in x.split(MAPS_CHUNK):
        content, positional, gate = (t.float() for t in layer.attention_components(chunk))
        g = gate.view(1, -1, 1, 1)
        attn = (1 - g) * content + g * positional
        nonlocal_sum += _nonlocality(attn, distances).sum(dim=(0, 2))
        share_sum += ((g * positional).sum(-1) / attn.sum(-1)).sum()
    queries = x.shape[0] * x.shape[1]
    nonlocality = (nonlocal_sum / queries).tolist()
    gates = gate.tolist()

    h_grid, w_grid = layer.grid_size
    centre = (h_grid // 2) * w_grid + w_grid // 2
    offsets = layer.rel_indices[centre, :, :2].float()  # (N, 2): key - central query
    centre_dist = (positional[:, centre, :] @ offsets).norm(dim=-1).tolist()

    metrics = {f"gating/l{i}": sum(gates) / len(gates), f"nonlocality/l{i}": sum(nonlocality) / len(nonlocality),
               f"positional_share/l{i}": (share_sum / (queries * layer.num_heads)).item()}
    for h in range(layer.num_heads):
        metrics[f"gating/l{i}/h{h}"] = gates[h]
        metrics[f"nonlocality/l{i}/h{h}"] = nonlocality[h]
        metrics[f"pos_center_dist/l{i}/h{h}"] = centre_dist[h]
    return metrics


def _mhsa_metrics(i: int, layer: MHSA, x: torch.Tensor, grid_size: tuple[int, int]) -> dict[str, float]:
    """Nonlocality over patch queries and patch keys (the class token has no position), rows renormalised."""
    num_patches = grid_size[0] * grid_size[1]
    first = x.shape[1] - num_patches  # prefix (class) tokens come first
    distances = relative_distances(grid_size).to(x.device)
    total = torch.zeros(layer.num_heads, device=x.device)
    for chunk in x.split(MAPS_CHUNK):
        attn = layer.attention_map(chunk).float()[:, :, first:, first:]
        attn = attn / attn.sum(dim=-1, keepdim=True)
        total += _nonlocality(attn, distances).sum(dim=(0, 2))
    nonlocality = (total / (x.shape[0] * num_patches)).tolist()
    metrics = {f"nonlocality/l{i}": sum(nonlocality) / len(nonlocality)}
    metrics.update({f"nonlocality/l{i}/h{h}": d for h, d in enumerate(nonlocality)})
    return metrics


@torch.no_grad()
def metrics_from_inputs(model: nn.Module, inputs: dict[int, torch.Tensor]) -> dict[str, float]:
    """The metrics of ``attention_metrics`` for given per-layer attention inputs (block index -> tokens)."""
    layers = _attention_layers(model)
    grid_size = getattr(getattr(_unwrap(model), "patch_embed", None), "grid_size", None)
    metrics: dict[str, float] = {}
    for i, x in sorted(inputs.items()):
        layer = layers[i]
        if isinstance(layer, GPSA):
            metrics.update(_gpsa_metrics(i, layer, x))
        elif grid_size is not None:
            metrics.update(_mhsa_metrics(i, layer, x, grid_size))
    return metrics


def attention_metrics(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Gating, nonlocality, positional share and positional centre distance, per layer (and head).

    One eval-mode, no-grad forward of ``images`` (the model's training mode is restored afterwards);
    models without GPSA layers (DeiT) get MHSA nonlocality only. Distances are in patch units.
    """
    return metrics_from_inputs(model, layer_inputs(model, images))
