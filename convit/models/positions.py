"""Relative patch geometry shared by GPSA, its local init and the attention analysis.

Tokens are patches in row-major order on an ``H x W`` grid: token ``t`` sits at row ``t // W``,
column ``t % W``. Offsets are always *key minus query*, in patch units, so that a positive ``dx``
means "looking to the right". Non-square grids are handled explicitly (the public code assumed
``N`` was a perfect square and silently mis-indexed otherwise).
"""
from __future__ import annotations

import math

import torch


def grid_coords(grid_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of every token of an ``H x W`` grid, row-major."""
    h, w = grid_size
    rows = torch.arange(h, dtype=torch.float32).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float32).repeat(h)
    return rows, cols


def relative_offsets(grid_size: tuple[int, int]) -> torch.Tensor:
    """``r_ij = (dx, dy, dx^2 + dy^2)`` for every query i and key j: shape (N, N, 3), float32.

    The channel order (x, y, squared distance) is the one of the published checkpoints' ``pos_proj``.
    """
    rows, cols = grid_coords(grid_size)
    dx = cols[None, :] - cols[:, None]
    dy = rows[None, :] - rows[:, None]
    return torch.stack((dx, dy, dx * dx + dy * dy), dim=-1)


def relative_distances(grid_size: tuple[int, int]) -> torch.Tensor:
    """Euclidean distance ``||delta_ij||`` between patches, shape (N, N), float32."""
    return relative_offsets(grid_size)[..., 2].sqrt()


def is_perfect_square(n: int) -> bool:
    return n >= 1 and math.isqrt(n) ** 2 == n


def local_head_offsets(num_heads: int) -> torch.Tensor:
    """Centre offset ``Delta_h = (dx, dy)`` of each head for the convolutional init, shape (H, 2).

    Heads tile a ``k x k`` grid (``k = sqrt(H)``) centred on the query, like the taps of a k x k
    convolution; for even ``k`` the centres fall between patches (e.g. +-0.5 for 4 heads).
    Head ``h`` has ``dx = h // k - c`` and ``dy = h % k - c`` (the published checkpoints' order).
    """
    if not is_perfect_square(num_heads):
        raise ValueError(
            f"num_heads={num_heads} must be a perfect square (1, 4, 9, 16, ...) for the convolutional "
            "local init; pass use_local_init=False to use another head count"
        )
    k = math.isqrt(num_heads)
    centre = (k - 1) / 2
    heads = torch.arange(num_heads, dtype=torch.float32)
    return torch.stack((heads.div(k, rounding_mode="floor") - centre, heads.remainder(k) - centre), dim=-1)
