"""Support module (no tests): small random-weight SAM models for the predictor and AMG tests.

Our model and the official ``segment_anything`` one (a test-only dependency, built by
tests/reference.py) with the same weights and a one-block image encoder, so tests run in
seconds on a CPU; the prompt encoder and mask decoder are full size. The zero-initialised
tensors (relative positions, positional embedding, biases) are re-drawn (``randomize_``), and
the hypernetwork's last layer is scaled up so mask logits have the spread of a trained model's
(random weights otherwise give logits within +-0.3, where every mask is "unstable").
"""

from __future__ import annotations

import numpy as np
import torch


def tiny_config():
    """vit_b's configuration with a one-block, narrow image encoder."""
    from sam_widget.models import get_config

    return get_config("vit_b").with_encoder(
        embed_dim=192, depth=1, num_heads=3, global_attn_indexes=(0,)
    )


def sharpen_(model: torch.nn.Module, factor: float = 30.0) -> torch.nn.Module:
    """Scale the hypernetworks' last layers so random-weight mask logits have a trained model's
    spread (SAM's ``mask_decoder`` or SAM 2's ``sam_mask_decoder``). Returns ``model``."""
    decoder = model.mask_decoder if hasattr(model, "mask_decoder") else model.sam_mask_decoder
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(factor)
    return model


def sam_pair(config, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, official) for a SAM 1 config (a variant name or a `SamConfig`), eval mode, with
    the same random weights: every constant-initialised tensor redrawn, logits sharpened."""
    from sam_widget.models import build_sam
    from tests.reference import official_sam, randomize_

    torch.manual_seed(seed)
    ours = sharpen_(randomize_(build_sam(config).eval(), seed))
    official = official_sam(config)
    official.load_state_dict(ours.state_dict())
    return ours, official.eval()


def tiny_sam_pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, official): `sam_widget.models` and segment_anything, the same random weights."""
    return sam_pair(tiny_config(), seed)


def synthetic_image(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image: noise with a few flat shapes."""
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    image[height // 4 : height * 3 // 4, width // 4 : width // 2] = (200, 30, 30)
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - height * 0.6) ** 2 + (xx - width * 0.75) ** 2 < (height * 0.2) ** 2
    image[disk] = (30, 160, 40)
    return image


def small_config():
    """vit_b's configuration with a one-block, narrow encoder on a 256-pixel input."""
    from sam_widget.models import get_config

    return get_config("vit_b").with_encoder(
        embed_dim=96, depth=1, num_heads=3, global_attn_indexes=(0,), img_size=256
    )


def small_sam(seed: int = 0) -> torch.nn.Module:
    """Our model only, with a one-block, narrow encoder on a 256-pixel input (16x16 embedding):
    for tests that encode many images and care about storing embeddings, not their values."""
    from sam_widget.models import build_sam
    from tests.reference import randomize_

    torch.manual_seed(seed)
    model = randomize_(build_sam(small_config()).eval(), seed)
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
    return model
