"""ConViT and DeiT models: GPSA, MHSA, blocks, the network and the named-variant factory."""
from .block import Block
from .convit import ConViT, DeiT
from .finetune import InitCheckpointError, InitReport, adapt_state_dict, load_init_checkpoint, read_state_dict
from .gpsa import GPSA
from .mhsa import MHSA
from .registry import VARIANTS, accepted_kwargs, create_model, list_models

__all__ = ["GPSA", "MHSA", "Block", "ConViT", "DeiT", "VARIANTS", "accepted_kwargs", "create_model", "list_models",
           "InitCheckpointError", "InitReport", "adapt_state_dict", "load_init_checkpoint", "read_state_dict"]
