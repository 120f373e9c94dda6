"""Start a model from published or earlier weights: read a checkpoint safely and adapt it to the model's shape.

Accepted files (``torch.load(path, map_location="cpu", weights_only=True)``: a pickle that would build any object
other than tensors and plain containers is refused, so loading never runs code from the file):

- a timm-format state dict (``{name: tensor}``), the format of timm's published ``convit_*`` / ``deit_*`` weights;
- a checkpoint dict holding one under ``"model"`` (this engine's trial checkpoints, convit/engine/checkpoint.py,
  and the original DeiT/ConViT releases) or ``"state_dict"`` (timm's training scripts).

Adapting to the model (`adapt_state_dict`), key by key; every rule changes only what cannot carry over as is:

- ``head.weight`` (C, D) / ``head.bias`` (C,) with another class count C: **re-initialised** (the model's own
  fresh head is kept: truncated normal std 0.02, zero bias, as `ConViT.init_weights`); the usual transfer practice
  (DeiT / timm fine-tuning drop a head of the wrong size).
- ``pos_embed`` (1, N, D) on another patch grid: **resampled** bicubically from the square √N×√N grid to the model's
  (H, W) grid with timm's ``resample_abs_pos_embed`` (ViT, Dosovitskiy et al. 2021, Sec. 3.2: "2D interpolation of
  the pre-trained position embeddings"); our position embedding covers the patches only (no class slot).
- ``patch_embed.proj.weight`` (D, C, p, p) with another patch size: **resampled** to the model's patch size with
  timm's ``resample_patch_embed`` (FlexiViT's pseudo-inverse resize, Beyer et al. 2023, which keeps the patch
  embedding of a resized patch approximately equal; what timm's ViT checkpoint filter does). With another input
  channel count (RGB weights for a grayscale model) timm's ``adapt_input_conv`` sums the RGB kernels (the response
  to a gray image, whose three channels are equal, is unchanged). The bias loads as is.
- ``*.rel_indices`` (GPSA's relative offsets, (N, N, 3)): **dropped**; they are derived from the grid and rebuilt
  by each GPSA layer (a non-persistent buffer), whatever grid the checkpoint was trained on. GPSA's learnt
  positional weights (``pos_proj``, (heads, 3)) and gates do not depend on the grid and load as they are.
- everything else must match the model's key and shape exactly, or `InitCheckpointError` lists every missing,
  unexpected and mismatched key (e.g. timm's ``deit_tiny`` given to ``convit_tiny``: qkv biases, a class slot in
  the position embedding, no GPSA gates).
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["InitCheckpointError", "InitReport", "adapt_state_dict", "load_init_checkpoint", "read_state_dict"]

HEAD_KEYS = ("head.weight", "head.bias")
POS_EMBED_KEY = "pos_embed"
PATCH_EMBED_KEY = "patch_embed.proj.weight"
DERIVED_SUFFIX = "rel_indices"


class InitCheckpointError(ValueError):
    """An ``init_checkpoint`` cannot start this model; ``path`` names the file, ``problem`` says what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"init_checkpoint {self.path}: {problem}")


@dataclass
class InitReport:
    """What `adapt_state_dict` did, by key: loaded unchanged, re-initialised, resampled (old -> new shape), dropped."""

    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    resampled: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded as they are"]
        if self.reinitialised:
            parts.append(f"re-initialised {', '.join(self.reinitialised)}")
        parts += [f"resampled {k} {list(a)} -> {list(b)}" for k, (a, b) in self.resampled.items()]
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} grid-derived buffers (rebuilt for the model's grid)")
        return "; ".join(parts)


def _weights_only_reason(err: Exception) -> str:
    """The line of torch's weights-only refusal that names the offending global (torch prints a long hint)."""
    text = str(err)
    for line in text.splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.split(". Please use")[0].strip().rstrip(".")  # not torch's hint to allowlist the global
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` mapping in ``path`` (see the module docstring for the accepted layouts).

    Raises `InitCheckpointError` naming the file for a missing file, a file torch cannot read, a pickle that
    would execute code (refused by ``weights_only=True``), or content that is not a state dict."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InitCheckpointError(path, "no such file")
    if not path.is_file():
        raise InitCheckpointError(path, "is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _weights_only_reason(err)
        if "Unsupported global" in reason:
            raise InitCheckpointError(path, "refused: the file is a pickle holding objects other than tensors, "
                                            f"which loading would have to construct by running code ({reason}); "
                                            "save the weights with torch.save(model.state_dict(), path)") from None
        raise InitCheckpointError(path, f"not a PyTorch checkpoint (torch.load: {reason})") from None
    except Exception as err:  # noqa: BLE001 - zip/EOF/format errors of any kind: the file is not a checkpoint
        raise InitCheckpointError(path, f"not a PyTorch checkpoint (torch.load: {type(err).__name__}: "
                                        f"{_weights_only_reason(err)})") from None
    state: Any = obj
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                state = obj[wrapper]
                break
    if not isinstance(state, Mapping) or not state:
        got = f"an empty {type(state).__name__}" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise InitCheckpointError(path, f"not a state dict: it holds {got}; expected a mapping of parameter names to "
                                        "tensors, or a checkpoint with one under 'model'")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InitCheckpointError(path, f"not a state dict: {len(bad)} entries are not name -> tensor "
                                        f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")
    return dict(state)


def _grid_of(num_positions: int) -> tuple[int, int] | None:
    side = math.isqrt(num_positions)
    return (side, side) if side * side == num_positions else None


def adapt_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path = "<state dict>",
                     ) -> tuple[dict[str, torch.Tensor], InitReport]:
    """``state`` reshaped to fit ``model`` by the rules of the module docstring, as a complete state dict for
    ``model.load_state_dict(..., strict=True)``, and what was done.

    Only ``model.state_dict()``'s keys and shapes are read (a model on the meta device is enough to check a file).
    Raises `InitCheckpointError` (naming ``path``) with every missing, unexpected and mismatched key otherwise.
    """
    from timm.layers import resample_abs_pos_embed, resample_patch_embed  # heavy: timm (~1 s), kept off create_model
    from timm.models import adapt_input_conv  # heavy: timm, as above

    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    report = InitReport()
    unexpected, mismatched = [], []
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] == DERIVED_SUFFIX:
            report.dropped.append(key)
            continue
        if key not in target:
            if key in HEAD_KEYS:  # the model has no classifier (num_classes=0): nothing to load it into
                report.reinitialised.append(key)
            else:
                unexpected.append(key)
            continue
        want = tuple(target[key].shape)
        have = tuple(value.shape)
        if have == want:
            out[key] = value
            report.loaded.append(key)
        elif key in HEAD_KEYS and have[1:] == want[1:]:  # another class count, same width
            out[key] = target[key]
            report.reinitialised.append(key)
        elif key == POS_EMBED_KEY and len(have) == 3 and have[0] == 1 and have[2] == want[2] \
                and _grid_of(have[1]) is not None:
            new_grid = list(getattr(model, "grid_size", _grid_of(want[1]) or (want[1], 1)))
            out[key] = resample_abs_pos_embed(value.float(), new_size=new_grid, old_size=list(_grid_of(have[1])),
                                              num_prefix_tokens=0, interpolation="bicubic",
                                              antialias=True).to(value.dtype)
            report.resampled[key] = (have, want)
        elif key == PATCH_EMBED_KEY and len(have) == 4 and have[0] == want[0]:
            weight = value.float()
            if have[1] != want[1]:  # RGB weights for a grayscale model (summed) or the reverse (timm's rule)
                weight = adapt_input_conv(want[1], weight)
            if tuple(weight.shape[2:]) != want[2:]:
                weight = resample_patch_embed(weight, new_size=list(want[2:]), interpolation="bicubic",
                                              antialias=True)
            out[key] = weight.to(value.dtype)
            report.resampled[key] = (have, want)
        else:
            mismatched.append(f"{key}: checkpoint {list(have)}, model {list(want)}")
    missing = []
    for key in target:
        if key not in state:
            if key in HEAD_KEYS:  # a features-only checkpoint (num_classes=0): the model's fresh head stays
                out[key] = target[key]
                report.reinitialised.append(key)
            else:
                missing.append(key)
    if missing or unexpected or mismatched:
        lines = [f"does not fit the model: {len(missing)} missing, {len(unexpected)} unexpected and "
                 f"{len(mismatched)} mismatched keys (a checkpoint of another architecture or size?)"]
        lines += [f"  missing: {k}" for k in missing]
        lines += [f"  unexpected: {k}" for k in unexpected]
        lines += [f"  mismatched: {m}" for m in mismatched]
        raise InitCheckpointError(path, "\n".join(lines))
    return out, report


def load_init_checkpoint(model: nn.Module, path: str | Path) -> InitReport:
    """Read ``path`` (`read_state_dict`), adapt it (`adapt_state_dict`) and load it into ``model`` strictly."""
    state, report = adapt_state_dict(model, read_state_dict(path), path)
    model.load_state_dict(state, strict=True)
    return report
