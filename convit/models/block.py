"""Pre-norm transformer block whose attention is either GPSA or MHSA."""
from __future__ import annotations

import torch
from torch import nn

from .gpsa import GPSA
from .layers import DropPath, Mlp
from .mhsa import MHSA

LAYER_NORM_EPS = 1e-6


class Block(nn.Module):
    """x + DropPath(attn(LN(x))), then x + DropPath(mlp(LN(x))).

    ``gpsa`` holds the GPSA keyword arguments (grid_size, locality_strength, gating...) for a GPSA block,
    or ``None`` for an MHSA block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        gpsa: dict | None = None,
    ):
        super().__init__()
        self.use_gpsa = gpsa is not None
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        if gpsa is not None:
            self.attn: GPSA | MHSA = GPSA(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, **gpsa)
        else:
            self.attn = MHSA(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
