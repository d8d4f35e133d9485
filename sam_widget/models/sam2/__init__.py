"""SAM 2.1 image models in plain torch modules (no I/O): the Hiera trunk (``hiera``), the FPN
neck (``neck``), SAM 2's mask-decoder additions (``mask_decoder``), the whole model
(``sam2``) and the four official configurations (``configs``). The prompt encoder, the two-way
transformer and the decoder's core are SAM 1's modules (``sam_widget.models``).
"""

from __future__ import annotations

from .configs import CONFIGS, VARIANTS, HieraConfig, Sam2Config
from .hiera import Hiera
from .mask_decoder import Sam2MaskDecoder
from .neck import FpnNeck, Sam2ImageEncoder
from .sam2 import VIDEO_ONLY_KEYS, Sam2, build_sam2, get_config, is_video_only_key

__all__ = [
    "CONFIGS",
    "VARIANTS",
    "VIDEO_ONLY_KEYS",
    "FpnNeck",
    "Hiera",
    "HieraConfig",
    "Sam2",
    "Sam2Config",
    "Sam2ImageEncoder",
    "Sam2MaskDecoder",
    "build_sam2",
    "get_config",
    "is_video_only_key",
]
