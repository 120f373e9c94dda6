"""Multi-head self-attention on the fused SDPA kernel (flash / memory-efficient on GPU)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_heads


class MHSA(nn.Module):
    """Plain softmax self-attention; ``qkv`` is one projection, as in the checkpoint format.

    Attention dropout is SDPA's own ``dropout_p``, which drops entries of the softmax matrix exactly
    like ``nn.Dropout`` applied to it would.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._qkv(x)
        p = self.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Explicit softmax(QK^T/sqrt(d)), shape (B, H, N, N): for analysis, never used in training."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)
