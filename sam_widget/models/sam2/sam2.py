"""The SAM 2.1 image model (image encoder + prompt encoder + mask decoder) and ``build_sam2``.

:class:`Sam2` holds the image-side parts of the official ``SAM2Base`` under the official
attribute names, so the official ``sam2.1_hiera_*.pt`` state dicts load into it once their
video-only entries (``VIDEO_ONLY_KEYS``: memory attention, memory encoder, object pointers and
their embeddings) are set aside. ``encode`` gives what the official ``SAM2ImagePredictor``
keeps per image: the image embedding (with ``no_mem_embed`` added) and the decoder's two
high-resolution feature maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..prompt_encoder import PromptEncoder
from ..transformer import TwoWayTransformer
from .configs import CONFIGS, VARIANTS, Sam2Config
from .mask_decoder import Sam2MaskDecoder
from .neck import Sam2ImageEncoder

# Entries of the official checkpoints that only SAM 2's video predictor uses: the memory
# attention and memory encoder, the temporal position encodings of the memories, and the
# object pointers (projection, their position projection, the "no object" pointer and
# spatial embedding), plus the mask downsampler that feeds the memory encoder. An image model
# ignores exactly the keys under these names (prefix match up to a dot, or the whole name).
VIDEO_ONLY_KEYS: tuple[str, ...] = (
    "memory_attention",
    "memory_encoder",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "mask_downsample",
    "obj_ptr_proj",
    "obj_ptr_tpos_proj",
    "no_obj_ptr",
    "no_obj_embed_spatial",
)


def is_video_only_key(key: str) -> bool:
    """Whether a checkpoint key belongs to the video-only parts (see ``VIDEO_ONLY_KEYS``)."""
    return any(key == name or key.startswith(name + ".") for name in VIDEO_ONLY_KEYS)


class Sam2(nn.Module):
    """SAM 2.1 for images.

    Args:
        config: the :class:`Sam2Config` (a registered one for the official weights).

    Attributes (the official names): ``image_encoder`` (trunk + neck), ``sam_prompt_encoder``,
    ``sam_mask_decoder``, ``no_mem_embed`` (1, 1, C), added to the image embedding of a
    single image. Non-persistent buffers ``pixel_mean`` / ``pixel_std`` (3, 1, 1), 0..1 scale.
    """

    mask_threshold: float = 0.0  # logits above this are inside the mask
    image_format: str = "RGB"

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        self.config = config
        self.variant = config.variant
        self.image_size = config.image_size
        c = config.d_model
        self.image_encoder = Sam2ImageEncoder(config)
        e = config.embedding_size
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=c,
            image_embedding_size=(e, e),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        )
        self.sam_mask_decoder = Sam2MaskDecoder(
            transformer_dim=c,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=c,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
                mlp_layers=True,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            dynamic_multimask_via_stability=config.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=config.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=config.dynamic_multimask_stability_thresh,
        )
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        nn.init.trunc_normal_(self.no_mem_embed, std=0.02)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)

    # the predictor and the SAM 1 code paths look for these names
    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> Sam2MaskDecoder:
        return self.sam_mask_decoder

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, H, W) on the 0..255 scale -> the normalised (B, 3, S, S) model input:
        /255, bilinear resize with antialiasing to the square (the aspect ratio is not
        kept), then mean/std, as the official transforms (ToTensor, Resize, Normalize)."""
        x = x / 255.0
        s = self.image_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised (B, 3, S, S) -> image embedding (B, C, S/16, S/16) and the decoder's
        high-res features [(B, C/8, S/4, S/4), (B, C/4, S/8, S/8)]."""
        dec = self.sam_mask_decoder
        # strides 4 and 8 projected to the high-res features, stride 16
        *high_res, last = self.image_encoder.forward_projected(x, [dec.conv_s0, dec.conv_s1])
        embedding = last + self.no_mem_embed.view(1, -1, 1, 1)
        return embedding, high_res

    def load_state_dict(  # type: ignore[override]
        self, state_dict, strict: bool = True, assign: bool = False
    ):
        """Loads our own state dicts, and the official ones minus ``VIDEO_ONLY_KEYS``."""
        state = {k: v for k, v in state_dict.items() if not is_video_only_key(k)}
        return super().load_state_dict(state, strict=strict, assign=assign)


def get_config(variant: str | Sam2Config) -> Sam2Config:
    """The registered config of ``variant``, or ``variant`` itself when it already is one."""
    if isinstance(variant, Sam2Config):
        return variant
    try:
        return CONFIGS[variant]
    except KeyError:
        raise ValueError(
            f"unknown SAM 2.1 variant {variant!r}; choose one of {', '.join(VARIANTS)} "
            "or pass a Sam2Config"
        ) from None


def build_sam2(variant_or_config: str | Sam2Config = "sam2.1_hiera_tiny") -> Sam2:
    """A randomly initialised :class:`Sam2`, in eval mode."""
    return Sam2(get_config(variant_or_config)).eval()
