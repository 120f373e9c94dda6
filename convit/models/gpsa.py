"""Gated positional self-attention (d'Ascoli et al. 2021, eq. 5).

    A_h = (1 - sigma(lambda_h)) * softmax(Q K^T / sqrt(d)) + sigma(lambda_h) * softmax(W_pos,h . r_ij)

Both terms are row-stochastic and mixed convexly, so A is already normalised: the public code's
division by the row sum is a no-op, and the output splits into two independent products

    A V = (1 - g) * softmax(Q K^T / sqrt(d)) V  +  g * P V,     P = softmax(W_pos . r)

The first is one fused ``scaled_dot_product_attention`` call (no B x H x N x N tensor on GPU); the
second uses P, which depends only on the patch geometry, so it is computed once per forward for the
whole batch (H x N x N) instead of once per image. ``forward_reference`` keeps the explicit,
paper-literal computation (including the renormalisation) for tests and for the analysis.

Subnormal weights: the locality initialisation makes P sharply peaked, so about 9 % of its entries (ConViT-Ti,
224 px) underflow to subnormal floats (below 1.2e-38 in float32). CPU matrix kernels run up to ~10x slower on
subnormal operands, and FTZ/DAZ flags (``torch.set_flush_denormal``) do not reach the BLAS worker threads, so the
fast path flushes them to zero itself (:func:`flush_subnormals`): a change below 1.2e-38 per weight, and the
product (g P) V then costs what a dense product costs (26 ms -> 2.5 ms for H=4, N=196, B=32, d=48 on 2 cores,
``benchmarks/bench_models.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_heads
from .positions import local_head_offsets, relative_offsets


def flush_subnormals(weights: torch.Tensor) -> torch.Tensor:
    """``weights`` with its entries below float32's smallest normal number (|w| < 1.18e-38: float32 and bfloat16
    subnormals) set to 0, same shape and dtype; float16 weights, whose smallest subnormal is far above that, and
    NaNs are left as they are; gradients flow through the entries kept. See the module docstring for why."""
    tiny = torch.finfo(torch.float32).tiny
    return torch.where(weights.abs() < tiny, torch.zeros((), dtype=weights.dtype, device=weights.device), weights)


class GPSA(nn.Module):
    """GPSA over the patch tokens of a fixed ``grid_size = (H, W)`` (no class token).

    Attention dropout: dropping entries of the mixed matrix A is not the same as dropping entries of
    each branch with independent masks, and SDPA cannot share its mask with the positional branch. So
    when ``attn_drop > 0`` and the module is training, ``forward`` takes the explicit path (dropout on A,
    exactly as the paper/public code); otherwise (eval, or attn_drop == 0 as in the DeiT recipe) the
    fast path runs. Both paths compute the same function.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: tuple[int, int],
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        locality_strength: float = 1.0,
        gating_init: float = 1.0,
        freeze_gating: bool = False,
        use_local_init: bool = True,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        if use_local_init:
            local_head_offsets(num_heads)  # validates the head count before anything is built
        self.grid_size = tuple(grid_size)
        self.locality_strength = locality_strength
        self.gating_init = gating_init
        self.use_local_init = use_local_init

        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)
        self.gating_param = nn.Parameter(torch.full((num_heads,), float(gating_init)), requires_grad=not freeze_gating)
        # Geometry, not state: rebuilt from grid_size, kept out of the state_dict (checkpoint format).
        self.register_buffer("rel_indices", relative_offsets(self.grid_size), persistent=False)
        self.reset_parameters()

    @property
    def num_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def reset_parameters(self) -> None:
        """Truncated-normal linears, then (if enabled) the convolutional local init."""
        for linear in (self.qk, self.v, self.proj, self.pos_proj):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        with torch.no_grad():
            self.gating_param.fill_(self.gating_init)
        if self.use_local_init:
            self.local_init()

    @torch.no_grad()
    def local_init(self) -> None:
        """Make each head a soft convolution tap: V = identity, score_h = -alpha ||delta - Delta_h||^2 + const.

        Expanding -alpha ||delta - Delta||^2 = alpha (2 Delta . delta - ||delta||^2) - alpha ||Delta||^2 gives the
        positional weights alpha * (2 Delta_x, 2 Delta_y, -1); the constant cancels in the softmax.
        """
        offsets = local_head_offsets(self.num_heads)
        weight = torch.cat((2 * offsets, -torch.ones(self.num_heads, 1)), dim=1) * self.locality_strength
        self.pos_proj.weight.copy_(weight)
        nn.init.zeros_(self.pos_proj.bias)
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}, num_heads={self.num_heads}, locality_strength={self.locality_strength}"

    # -- pieces shared by both paths -------------------------------------------------------------
    def _check_tokens(self, n: int) -> None:
        if n != self.num_tokens:
            raise ValueError(
                f"GPSA was built for a {self.grid_size[0]}x{self.grid_size[1]} patch grid ({self.num_tokens} tokens) "
                f"but got {n} tokens: GPSA takes patch tokens only, without a class token"
            )

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        q, k = self.qk(x).view(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        v = self.v(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def gate(self) -> torch.Tensor:
        """sigma(lambda_h), shape (H,): the weight of the positional term in each head."""
        return torch.sigmoid(self.gating_param)

    def positional_attention(self) -> torch.Tensor:
        """P = softmax(W_pos . r_ij) over keys, shape (H, N, N); independent of the input."""
        return self.pos_proj(self.rel_indices).permute(2, 0, 1).softmax(dim=-1)

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)))

    # -- fast path -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_tokens(x.shape[1])
        if self.training and self.attn_drop.p > 0:
            return self.forward_reference(x)
        b, n, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = self._qkv(x)
        g = self.gate()
        content = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, d)
        # (g P) V for the whole batch as one matmul per head: (H, N, N) @ (H, N, B*d). Broadcasting P over
        # the batch instead would materialise B copies of it (and sum B gradients back in the backward).
        weights = flush_subnormals((g.view(h, 1, 1) * self.positional_attention()).to(v.dtype))
        values = v.permute(1, 2, 0, 3).reshape(h, n, b * d)
        positional = torch.bmm(weights, values).view(h, n, b, d).permute(2, 0, 1, 3)
        out = torch.addcmul(positional.to(content.dtype), content, (1.0 - g).view(1, h, 1, 1).to(content.dtype))
        return self._merge(out)

    # -- explicit path ---------------------------------------------------------------------------
    def attention_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(content softmax (B,H,N,N), positional softmax (H,N,N), gate (H,)) for the input tokens x."""
        self._check_tokens(x.shape[1])
        q, k, _ = self._qkv(x)
        content = (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)
        return content, self.positional_attention(), self.gate()

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The full attention matrix A (B, H, N, N), paper-literal, renormalised like the public code."""
        content, positional, g = self.attention_components(x)
        g = g.view(1, -1, 1, 1)
        attn = (1.0 - g) * content + g * positional
        return attn / attn.sum(dim=-1, keepdim=True)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Explicit A, dropout on A, then A V: the semantics the fast path must reproduce."""
        _, _, v = self._qkv(x)
        attn = self.attn_drop(self.attention_map(x))
        return self._merge(attn.to(v.dtype) @ v)
