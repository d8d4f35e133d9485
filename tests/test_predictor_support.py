"""Support module (no tests): small random-weight SAM models for the predictor and AMG tests.

The official ``segment_anything`` architecture (a test-only dependency) with a one-block image
encoder so tests run in seconds on a CPU; the prompt encoder and mask decoder are full size.
The zero-initialised tables (relative positions, absolute positional embedding) are re-drawn so
they matter, and the hypernetwork's last layer is scaled up so mask logits have the spread of a
trained model's (random weights otherwise give logits within +-0.3, where every mask is
"unstable").
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch


def tiny_official_sam(seed: int = 0) -> torch.nn.Module:
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        depth=1,
        embed_dim=192,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=3,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=[0],
        window_size=14,
        out_chans=256,
    )
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.5)
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
    return sam


def synthetic_image(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image: noise with a few flat shapes."""
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    image[height // 4 : height * 3 // 4, width // 4 : width // 2] = (200, 30, 30)
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - height * 0.6) ** 2 + (xx - width * 0.75) ** 2 < (height * 0.2) ** 2
    image[disk] = (30, 160, 40)
    return image
