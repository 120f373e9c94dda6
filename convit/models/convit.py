"""The ConViT network and its DeiT twin.

ConViT: patch embedding + positional embedding (patches only), ``local_up_to_layer`` GPSA blocks on the
patch tokens, then the class token is prepended and the remaining blocks are MHSA. DeiT here is the same
network with no GPSA block (class token from the start), which keeps the comparison controlled: the
attention type is the only difference. Parameter names follow the published ConViT checkpoints.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .block import LAYER_NORM_EPS, Block
from .gpsa import GPSA
from .layers import PatchEmbed, check_heads, to_pair
from .positions import local_head_offsets


def _check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _check_finite(name: str, value: float, minimum: float | None = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _check_int(name: str, value: int, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int in {allowed}, got {value!r}")
    return value


def _check_bool(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


class ConViT(nn.Module):
    """Vision transformer whose first ``local_up_to_layer`` blocks use gated positional self-attention.

    ``embed_dim`` is the total width (unlike timm's constructor, where it is per head). When
    ``local_up_to_layer == depth`` no block sees a class token, so none is created and the head
    average-pools the patch tokens.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        local_up_to_layer: int = 10,
        locality_strength: float = 1.0,
        gating_init: float = 1.0,
        freeze_gating: bool = False,
        use_local_init: bool = True,
        freeze_gpsa: bool = False,
    ):
        super().__init__()
        depth = _check_int("depth", depth, 1)
        self.local_up_to_layer = _check_int("local_up_to_layer", local_up_to_layer, 0, depth)
        _check_int("in_chans", in_chans, 1)
        _check_int("num_classes", num_classes, 0)
        check_heads(_check_int("embed_dim", embed_dim, 1), _check_int("num_heads", num_heads, 1))
        rates = {n: _check_rate(n, v) for n, v in (("drop_rate", drop_rate), ("pos_drop_rate", pos_drop_rate),
                 ("proj_drop_rate", proj_drop_rate), ("attn_drop_rate", attn_drop_rate), ("drop_path_rate", drop_path_rate))}
        if _check_bool("use_local_init", use_local_init) and self.local_up_to_layer > 0:
            local_head_offsets(num_heads)  # perfect-square check, with its own message
        gpsa_kwargs = dict(
            locality_strength=_check_finite("locality_strength", locality_strength, minimum=0.0),
            gating_init=_check_finite("gating_init", gating_init),
            freeze_gating=_check_bool("freeze_gating", freeze_gating),
            use_local_init=use_local_init,
        )

        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.patch_embed = PatchEmbed(to_pair(img_size, "img_size"), to_pair(patch_size, "patch_size"), in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if self.local_up_to_layer < depth else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(rates["pos_drop_rate"])

        drop_paths = torch.linspace(0, rates["drop_path_rate"], depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=rates["proj_drop_rate"],
                attn_drop=rates["attn_drop_rate"], drop_path=drop_paths[i],
                gpsa=dict(grid_size=self.grid_size, **gpsa_kwargs) if i < self.local_up_to_layer else None,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.head_drop = nn.Dropout(rates["drop_rate"])
        self.global_pool = "token" if self.cls_token is not None else "avg"
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()
        if _check_bool("freeze_gpsa", freeze_gpsa):
            # Table 3's "Train GPSA" = no: every GPSA attention layer (qk, v, proj, positional weights, gating)
            # keeps its initial value; the blocks' MLPs, norms and the MHSA layers still train.
            for attn in self.gpsa_layers().values():
                attn.requires_grad_(False)

    def init_weights(self) -> None:
        """Truncated normal (std 0.02) for linears and embeddings, then each GPSA's own (local) init."""
        for p in (self.pos_embed, self.cls_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, GPSA):
                m.reset_parameters()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classification head (timm's classifier API): ``nn.Linear(num_features, num_classes)`` or Identity."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head for ``num_classes`` classes (0: features, head = Identity), initialised as at construction
        (truncated normal std 0.02, zero bias); timm's classifier API (``timm.models.convit.ConVit``).

        ``global_pool`` (None keeps the current one): ``"token"`` the class token (needs one, i.e.
        ``local_up_to_layer < depth``), ``"avg"`` the mean of the patch tokens, ``""`` no pooling (forward_head then
        returns the (B, N, D) tokens, as timm)."""
        _check_int("num_classes", num_classes, 0)
        if global_pool is not None:
            if global_pool not in ("", "token", "avg"):
                raise ValueError(f"global_pool must be one of '', 'token', 'avg', got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool 'token' needs a class token; this model has none "
                                 "(local_up_to_layer == depth): use 'avg'")
            self.global_pool = global_pool
        self.num_classes = num_classes
        like = dict(device=self.norm.weight.device, dtype=self.norm.weight.dtype)
        self.head = nn.Linear(self.num_features, num_classes, **like) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def gpsa_layers(self) -> dict[int, GPSA]:
        """Block index -> GPSA module, for analysis and gating control."""
        return {i: blk.attn for i, blk in enumerate(self.blocks) if isinstance(blk.attn, GPSA)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        for i, blk in enumerate(self.blocks):
            if i == self.local_up_to_layer and self.cls_token is not None:
                x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":  # the patch tokens (the class token, if any, is left out, as timm)
            x = (x[:, 1:] if self.cls_token is not None else x).mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class DeiT(ConViT):
    """The DeiT baseline: the same network with MHSA everywhere (class token from the first block)."""

    def __init__(self, **kwargs):
        for knob in ("local_up_to_layer", "locality_strength", "gating_init", "freeze_gating", "use_local_init",
                     "freeze_gpsa"):
            if knob in kwargs:
                raise TypeError(f"DeiT has no GPSA layers, so it does not take {knob!r}")
        super().__init__(local_up_to_layer=0, use_local_init=False, **kwargs)
