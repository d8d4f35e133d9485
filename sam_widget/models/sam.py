"""The whole SAM (image encoder + prompt encoder + mask decoder) and ``build_sam``.

:class:`Sam` mirrors the official ``segment_anything.modeling.Sam``: the same attribute
names (so the official checkpoints load with ``strict=True``), the same ``preprocess`` /
``postprocess_masks`` / ``forward``, so code written against the official model runs on ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .configs import SamConfig, TinyViTConfig, get_config
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer


class Sam(nn.Module):
    """Segment Anything: predicts object masks from an image and prompts.

    Args:
        image_encoder: (B, 3, S, S) normalised, padded image -> (B, 256, S/16, S/16).
        prompt_encoder: the :class:`PromptEncoder`.
        mask_decoder: the :class:`MaskDecoder`.
        pixel_mean, pixel_std: RGB normalisation on the 0..255 scale (non-persistent buffers
            of shape (3, 1, 1), as in the official model, so checkpoints do not carry them).
        variant: registry name ("vit_b", ..., "mobile_sam") or "custom".
    """

    mask_threshold: float = 0.0  # logits above this are inside the mask
    image_format: str = "RGB"  # channel order ``preprocess`` expects

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        variant: str = "custom",
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.variant = variant
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024)."""
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise colours and pad to the square model input.

        (3, h, w) or (B, 3, h, w) on the 0..255 scale, long side already resized to
        ``img_size`` -> same rank, (..., 3, img_size, img_size), zero padding bottom/right.
        """
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """Upscale low-res masks to the model input, drop its padding, resize to the image.

        Args:
            masks: (B, C, 256, 256) logits from the mask decoder.
            input_size: (h, w) of the resized image before padding.
            original_size: (H, W) of the original image.

        Returns:
            (B, C, H, W) logits.
        """
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """End-to-end prediction, as the official ``Sam.forward``.

        Each input dict holds ``image`` (3, h, w) already resized, ``original_size`` (H, W),
        and optionally ``point_coords`` (B, N, 2), ``point_labels`` (B, N), ``boxes`` (B, 4),
        ``mask_inputs`` (B, 1, 256, 256), all in the resized frame. Each output dict holds
        ``masks`` (B, C, H, W) bool, ``iou_predictions`` (B, C), ``low_res_logits``
        (B, C, 256, 256).
        """
        images = torch.stack([self.preprocess(rec["image"]) for rec in batched_input])
        embeddings = self.image_encoder(images)  # (N, 256, 64, 64)
        outputs = []
        for rec, embedding in zip(batched_input, embeddings, strict=True):
            points = (rec["point_coords"], rec["point_labels"]) if "point_coords" in rec else None
            sparse, dense = self.prompt_encoder(
                points=points, boxes=rec.get("boxes"), masks=rec.get("mask_inputs")
            )
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res, input_size=rec["image"].shape[-2:], original_size=rec["original_size"]
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs


def build_image_encoder(config: SamConfig) -> nn.Module:
    """The image encoder described by ``config.encoder`` (ViT or TinyViT), random init."""
    enc = config.encoder
    if isinstance(enc, TinyViTConfig):
        return TinyViT(
            img_size=enc.img_size,
            embed_dims=enc.embed_dims,
            depths=enc.depths,
            num_heads=enc.num_heads,
            window_sizes=enc.window_sizes,
            merge_strides=enc.merge_strides,
            mlp_ratio=enc.mlp_ratio,
            mbconv_expand_ratio=enc.mbconv_expand_ratio,
            local_conv_size=enc.local_conv_size,
            num_classes=enc.num_classes,
            out_chans=enc.out_chans,
        )
    return ImageEncoderViT(
        img_size=enc.img_size,
        patch_size=enc.patch_size,
        embed_dim=enc.embed_dim,
        depth=enc.depth,
        num_heads=enc.num_heads,
        mlp_ratio=enc.mlp_ratio,
        out_chans=enc.out_chans,
        qkv_bias=enc.qkv_bias,
        use_abs_pos=enc.use_abs_pos,
        use_rel_pos=enc.use_rel_pos,
        window_size=enc.window_size,
        global_attn_indexes=enc.global_attn_indexes,
        norm_eps=enc.norm_eps,
    )


def build_sam(variant_or_config: Any = "vit_b") -> nn.Module:
    """A randomly initialised model of a registered variant or of a config.

    SAM variants ("vit_b", "vit_l", "vit_h", "mobile_sam") and :class:`SamConfig` give a
    :class:`Sam`; the SAM 2.1 names ("sam2.1_hiera_tiny", ..._small, ..._base_plus, ..._large)
    and ``Sam2Config`` give a ``sam_widget.models.sam2.Sam2``. The model is returned in eval
    mode (like the official builders); load weights with ``sam_widget.load_model`` or
    ``model.load_state_dict(state_dict, strict=True)``.
    """
    from . import sam2

    if isinstance(variant_or_config, sam2.Sam2Config) or variant_or_config in sam2.CONFIGS:
        return sam2.build_sam2(variant_or_config)
    config = get_config(variant_or_config)
    if config.encoder.out_chans != config.prompt_embed_dim:
        raise ValueError(
            f"encoder out_chans {config.encoder.out_chans} must equal prompt_embed_dim "
            f"{config.prompt_embed_dim}"
        )
    e = config.embedding_size
    sam = Sam(
        image_encoder=build_image_encoder(config),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(e, e),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=config.pixel_mean,
        pixel_std=config.pixel_std,
        variant=config.variant,
    )
    return sam.eval()
