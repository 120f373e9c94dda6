"""Small generic pieces of a vision transformer, kept here so the models import only torch.

Submodule names (``proj``, ``fc1``, ``fc2``) follow the published ConViT checkpoint format.
"""
from __future__ import annotations

import torch
from torch import nn


def to_pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Accept ``n`` or ``(h, w)``; reject anything else with a message naming the argument."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair (height, width) of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (B, N, C), row-major over an H x W grid."""

    def __init__(self, img_size: tuple[int, int], patch_size: tuple[int, int], in_chans: int, embed_dim: int):
        super().__init__()
        for axis, (img, patch) in enumerate(zip(img_size, patch_size)):
            if img % patch:
                side = "height" if axis == 0 else "width"
                lower, upper = img - img % patch, img - img % patch + patch
                raise ValueError(
                    f"img_size {side} {img} is not divisible by patch_size {patch}: choose an img_size that is a "
                    f"multiple of patch_size (e.g. {lower or upper} or {upper})"
                )
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.img_size:
            raise ValueError(
                f"input images are {tuple(x.shape[-2:])} but the model was built for img_size={self.img_size}: "
                "resize the images or create the model with a matching img_size"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Two-layer GELU MLP of the transformer block."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, rescale the survivors."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def check_heads(embed_dim: int, num_heads: int) -> int:
    """Return the per-head dim, or say which values would work."""
    if num_heads < 1 or embed_dim % num_heads:
        divisors = [h for h in range(1, min(embed_dim, 32) + 1) if embed_dim % h == 0]
        raise ValueError(
            f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}: num_heads must divide embed_dim "
            f"(e.g. one of {divisors})"
        )
    return embed_dim // num_heads
