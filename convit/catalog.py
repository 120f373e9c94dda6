"""The model catalog, without importing torch: the named architectures (heads, per-head width, depth, GPSA layers).

Shared by the model registry (convit.models.registry) and by config validation (convit.config), which
must check architecture knobs such as ``num_heads`` against a variant before any model is built.
Source: the paper, Table 1 (ConViT-Ti/S/B and the "+" variants) and DeiT's Ti/S/B.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONVIT_MODELS", "DEIT_MODELS", "Variant", "VARIANTS", "default_local_layers"]

CONVIT_MODELS: tuple[str, ...] = (
    "convit_tiny",
    "convit_small",
    "convit_base",
    "convit_tiny_plus",
    "convit_small_plus",
    "convit_base_plus",
)
DEIT_MODELS: tuple[str, ...] = ("deit_tiny", "deit_small", "deit_base")


@dataclass(frozen=True)
class Variant:
    """Architecture of a named model: family ('convit' or 'deit'), heads and per-head width."""

    family: str
    num_heads: int
    head_dim: int
    depth: int = 12
    local_up_to_layer: int = 10

    @property
    def embed_dim(self) -> int:
        return self.num_heads * self.head_dim


VARIANTS: dict[str, Variant] = {
    "convit_tiny": Variant("convit", 4, 48),
    "convit_small": Variant("convit", 9, 48),
    "convit_base": Variant("convit", 16, 48),
    "convit_tiny_plus": Variant("convit", 4, 64),
    "convit_small_plus": Variant("convit", 9, 64),
    "convit_base_plus": Variant("convit", 16, 64),
    "deit_tiny": Variant("deit", 3, 64, local_up_to_layer=0),
    "deit_small": Variant("deit", 6, 64, local_up_to_layer=0),
    "deit_base": Variant("deit", 12, 64, local_up_to_layer=0),
}


def default_local_layers(depth: int) -> int:
    """GPSA layers when ``depth`` is overridden: all but the last two, keeping both block types where it can
    (depth 2 -> 1 GPSA + 1 MHSA), as the paper's 10 of 12."""
    return min(depth - 1, max(depth - 2, 1)) if isinstance(depth, int) and depth >= 1 else depth


#: The paper's names of the model families and sizes (ConViT-Ti, DeiT-S, ConViT-B+).
FAMILY_NAMES = {"convit": "ConViT", "deit": "DeiT"}
SIZE_NAMES = {"tiny": "Ti", "small": "S", "base": "B", "tiny_plus": "Ti+", "small_plus": "S+", "base_plus": "B+"}


def display_name(value: str) -> str:
    """'convit_tiny' -> 'ConViT-Ti', 'deit_small' -> 'DeiT-S'; anything else unchanged."""
    family, _, size = str(value).partition("_")
    if family in FAMILY_NAMES and size in SIZE_NAMES:
        return f"{FAMILY_NAMES[family]}-{SIZE_NAMES[size]}"
    return str(value)
