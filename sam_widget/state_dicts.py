"""What a SAM / MobileSAM / SAM 2.1 state dict is, from its keys and tensor shapes alone.

``identify_state_dict`` names the official variant a state dict has the image encoder of (or
None); ``describe_state_dict`` says in a few words what it holds, for error messages such as
"this file is vit_l (24 blocks of width 1024), not vit_b". ``sam_widget.weights`` uses both when
a checkpoint does not match the model asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["describe_state_dict", "expected_description", "identify_state_dict"]

# ViT image encoders by (number of blocks, embedding width); see segment_anything/build_sam.py.
_VIT_SHAPES = {(12, 768): "vit_b", (24, 1024): "vit_l", (32, 1280): "vit_h"}
# Hiera trunks by (number of blocks, stage-1 width); see sam2's configs/sam2.1/*.yaml.
_HIERA_SHAPES = {
    (12, 96): "sam2.1_hiera_tiny",
    (16, 96): "sam2.1_hiera_small",
    (24, 112): "sam2.1_hiera_base_plus",
    (48, 144): "sam2.1_hiera_large",
}


def _count_blocks(keys: Iterable[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return len(indices)


def describe_state_dict(state: Mapping[str, Any]) -> str:
    """A short human description of a state dict's image encoder, e.g. "12 blocks of width
    768" or "a TinyViT image encoder"; used in error messages."""
    keys = list(state)
    if any(k.startswith("image_encoder.layers.") for k in keys):
        return "a TinyViT image encoder (image_encoder.layers.*)"
    hiera = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if hiera is not None and hasattr(hiera, "shape"):
        blocks = _count_blocks(keys, "image_encoder.trunk.blocks.")
        return f"a Hiera trunk of {blocks} blocks, stage-1 width {int(hiera.shape[0])}"
    proj = state.get("image_encoder.patch_embed.proj.weight")
    if proj is not None and hasattr(proj, "shape"):
        blocks = _count_blocks(keys, "image_encoder.blocks.")
        return f"{blocks} blocks of width {int(proj.shape[0])}"
    for wrapper in ("model", "state_dict", "module"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            return f"a wrapper whose state dict sits under the key {wrapper!r}"
    if any(k.startswith("module.") for k in keys):
        return "keys prefixed with 'module.' (saved from DataParallel)"
    sample = ", ".join(keys[:3])
    return f"no SAM image encoder (keys like {sample})"


def identify_state_dict(state: Mapping[str, Any]) -> str | None:
    """Which official variant a state dict is, from its tensors alone; None if it is not one."""
    keys = list(state)
    if any(k.startswith("image_encoder.layers.") for k in keys) and any(
        k.startswith("mask_decoder.") for k in keys
    ):
        return "mobile_sam"
    hiera = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if hiera is not None and hasattr(hiera, "shape"):
        blocks = _count_blocks(keys, "image_encoder.trunk.blocks.")
        return _HIERA_SHAPES.get((blocks, int(hiera.shape[0])))
    proj = state.get("image_encoder.patch_embed.proj.weight")
    if proj is None or not hasattr(proj, "shape"):
        return None
    return _VIT_SHAPES.get((_count_blocks(keys, "image_encoder.blocks."), int(proj.shape[0])))


def expected_description(variant: str) -> str:
    """What ``describe_state_dict`` says of the official ``variant``'s state dict."""
    for (blocks, width), name in _VIT_SHAPES.items():
        if name == variant:
            return f"{blocks} blocks of width {width}"
    for (blocks, width), name in _HIERA_SHAPES.items():
        if name == variant:
            return f"a Hiera trunk of {blocks} blocks, stage-1 width {width}"
    return "a TinyViT image encoder" if variant == "mobile_sam" else variant
