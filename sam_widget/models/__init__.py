"""SAM in plain torch modules (no I/O): ViT-B/L/H and MobileSAM's TinyViT image encoders, the
prompt encoder and the mask decoder. State-dict keys equal the official checkpoints', so
``sam_vit_b_01ec64.pth`` & co. and ``mobile_sam.pt`` load with ``strict=True``.

``build_sam("vit_b")`` builds a randomly initialised model; ``sam_widget.load_model`` adds
the weights. SAM 2.1's image models live in ``sam_widget.models.sam2``; ``build_sam`` builds
them too (``build_sam("sam2.1_hiera_tiny")``).
"""

from __future__ import annotations

from .configs import CONFIGS, VARIANTS, SamConfig, TinyViTConfig, ViTConfig, get_config
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam, build_sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = [
    "CONFIGS",
    "VARIANTS",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "SamConfig",
    "TinyViT",
    "TinyViTConfig",
    "TwoWayTransformer",
    "ViTConfig",
    "build_sam",
    "get_config",
]
