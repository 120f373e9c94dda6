"""Named variants and the public factory ``create_model``.

Keyword names follow timm's ConViT where timm has them, so ``create_model(name, **kw)`` and
``timm.create_model(name, **kw)`` build state_dict-compatible models for convit_tiny/small/base.
"""
from __future__ import annotations

from typing import Any

from ..catalog import VARIANTS, Variant, default_local_layers
from .convit import ConViT, DeiT

# Knobs every model takes (timm's names), and those that only make sense with GPSA layers.
SHARED_KWARGS = frozenset({
    "img_size", "patch_size", "in_chans", "num_classes", "depth", "num_heads", "embed_dim", "mlp_ratio",
    "drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
})
GPSA_KWARGS = frozenset({"locality_strength", "local_up_to_layer", "gating_init", "freeze_gating", "use_local_init",
                         "freeze_gpsa"})


def list_models() -> list[str]:
    """Every name ``create_model`` accepts."""
    return list(VARIANTS)


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def accepted_kwargs(name: str) -> frozenset[str]:
    """The keyword arguments ``create_model(name, ...)`` accepts (for config validation upstream)."""
    return SHARED_KWARGS | GPSA_KWARGS if _variant(name).family == "convit" else SHARED_KWARGS


def create_model(name: str, **kwargs: Any) -> ConViT:
    """Build a named ConViT or DeiT; any img_size / patch_size / in_chans / num_classes.

    With ``depth`` overridden and ``local_up_to_layer`` not given, ConViT keeps the paper's shape of
    "all but the last two blocks are GPSA" while keeping both block types where it can
    (``local_up_to_layer = min(depth - 1, max(depth - 2, 1))``: depth 2 -> 1 GPSA + 1 MHSA).
    """
    variant = _variant(name)
    unknown = sorted(set(kwargs) - accepted_kwargs(name))
    if unknown:
        hint = " (GPSA-only knobs: DeiT has no GPSA layers)" if set(unknown) & GPSA_KWARGS else ""
        raise TypeError(
            f"{name} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}{hint}; "
            f"accepted: {', '.join(sorted(accepted_kwargs(name)))}"
        )
    heads = kwargs.get("num_heads", variant.num_heads)
    width = variant.embed_dim if "num_heads" not in kwargs else heads * variant.head_dim
    args = dict(embed_dim=width, num_heads=heads, depth=variant.depth) | kwargs
    if variant.family == "deit":
        return DeiT(**args)
    if "local_up_to_layer" not in kwargs:
        args["local_up_to_layer"] = variant.local_up_to_layer if "depth" not in kwargs else default_local_layers(args["depth"])
    return ConViT(**args)
