"""Configurations of the SAM variants: one dataclass per component, one registry of variants.

``build_sam`` turns a :class:`SamConfig` into modules. Every field that changes the shape of a
parameter also changes the checkpoint it can load, so the registered values are exactly the
ones the official checkpoints were trained with. Tests make smaller models with
``dataclasses.replace`` (e.g. a ViT-H of depth 4) and keep the code path of the full model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ViTConfig:
    """The plain ViT image encoder of SAM (ViTDet style), shared by vit_b, vit_l and vit_h."""

    embed_dim: int = 768  # token width C
    depth: int = 12  # number of transformer blocks
    num_heads: int = 12  # attention heads per block; embed_dim must divide by it
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)  # blocks attending over the whole map
    window_size: int = 14  # side of the local attention windows of all other blocks
    img_size: int = 1024  # side of the square (padded) input image
    patch_size: int = 16  # side of a patch: the embedding map is img_size // patch_size wide
    mlp_ratio: float = 4.0  # hidden width of the MLP as a multiple of embed_dim
    out_chans: int = 256  # channels of the image embedding (the neck's output)
    qkv_bias: bool = True  # a bias on the query/key/value projection
    use_abs_pos: bool = True  # learned absolute position embedding added after patchifying
    use_rel_pos: bool = True  # decomposed relative position bias in every attention
    norm_eps: float = 1e-6  # epsilon of the LayerNorms inside the blocks

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} must be a multiple of num_heads {self.num_heads}"
            )
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"global_attn_indexes {bad} lie outside depth {self.depth}")


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT-5M image encoder: a conv stage, then three windowed-attention stages."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)  # width of each stage
    depths: tuple[int, ...] = (2, 2, 6, 2)  # blocks per stage (stage 0: MBConv, others: attention)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)  # heads per stage (stage 0 has no attention)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)  # attention window side per stage
    # stride of the patch merging after stages 0..2; MobileSAM keeps 64x64 for the last stage
    merge_strides: tuple[int, ...] = (2, 2, 1)
    img_size: int = 1024  # side of the square (padded) input image
    mlp_ratio: float = 4.0  # hidden width of the MLPs as a multiple of the stage width
    mbconv_expand_ratio: float = 4.0  # hidden width of the MBConv blocks of stage 0
    local_conv_size: int = 3  # depthwise conv between attention and MLP in every block
    num_classes: int = 1000  # size of the unused ImageNet head, kept so mobile_sam.pt loads
    out_chans: int = 256  # channels of the image embedding (the neck's output)

    def __post_init__(self) -> None:
        n = len(self.embed_dims)
        if not (len(self.depths) == len(self.num_heads) == len(self.window_sizes) == n):
            raise ValueError(
                "embed_dims, depths, num_heads and window_sizes need one entry a stage"
            )
        if len(self.merge_strides) != n - 1:
            raise ValueError(f"merge_strides needs {n - 1} entries (one between two stages)")


@dataclass(frozen=True)
class SamConfig:
    """A whole SAM: image encoder, prompt encoder and mask decoder, plus pixel normalisation."""

    variant: str  # registry name, kept on the model as ``Sam.variant``
    encoder: ViTConfig | TinyViTConfig  # the image encoder
    prompt_embed_dim: int = 256  # width of prompt tokens, the decoder and the image embedding
    mask_in_chans: int = 16  # hidden channels of the mask-prompt downscaler
    decoder_depth: int = 2  # two-way transformer blocks in the mask decoder
    decoder_num_heads: int = 8  # attention heads in the mask decoder
    decoder_mlp_dim: int = 2048  # MLP width inside the decoder's transformer
    num_multimask_outputs: int = 3  # candidate masks when multimask output is asked for
    iou_head_depth: int = 3  # layers of the MLP that predicts each mask's IoU
    iou_head_hidden_dim: int = 256  # hidden width of that MLP
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)  # RGB, 0..255 scale

    @property
    def image_size(self) -> int:
        """Side of the square model input, in pixels (1024 for every official variant)."""
        return self.encoder.img_size

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding map (64 for every official variant)."""
        enc = self.encoder
        if isinstance(enc, ViTConfig):
            return enc.img_size // enc.patch_size
        return enc.img_size // (4 * math.prod(enc.merge_strides))

    def with_encoder(self, **changes: object) -> SamConfig:
        """A copy with some encoder fields replaced, e.g. ``depth=4`` for a fast test model."""
        return replace(self, encoder=replace(self.encoder, **changes))


CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(
        variant="vit_b",
        encoder=ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    ),
    "vit_l": SamConfig(
        variant="vit_l",
        encoder=ViTConfig(
            embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
        ),
    ),
    "vit_h": SamConfig(
        variant="vit_h",
        encoder=ViTConfig(
            embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
        ),
    ),
    "mobile_sam": SamConfig(variant="mobile_sam", encoder=TinyViTConfig()),
}
"""The official variants by name (``vit_t`` is MobileSAM's own name for ``mobile_sam``)."""

VARIANTS: tuple[str, ...] = tuple(CONFIGS)


def get_config(variant: str | SamConfig) -> SamConfig:
    """The registered config of ``variant``, or ``variant`` itself when it already is a config."""
    if isinstance(variant, SamConfig):
        return variant
    key = {"vit_t": "mobile_sam", "default": "vit_h"}.get(variant, variant)
    try:
        return CONFIGS[key]
    except KeyError:
        from .sam2.configs import VARIANTS as SAM2_VARIANTS

        raise ValueError(
            f"unknown SAM variant {variant!r}; choose one of "
            f"{', '.join(VARIANTS + SAM2_VARIANTS)} or pass a SamConfig"
        ) from None
