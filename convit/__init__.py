"""convit: ConViT / DeiT models, attention analysis and the training engine.

``import convit`` stays cheap (no torch import): ``create_model`` and ``list_models`` load
``convit.models`` on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_model", "list_models"]

if TYPE_CHECKING:
    from .models import create_model, list_models


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import models  # heavy: torch, loaded on first use so that `import convit` stays cheap

        return getattr(models, name)
    raise AttributeError(f"module 'convit' has no attribute {name!r}")
