"""Specification of ``sam_widget.models``: the variants exist, their state-dict keys and shapes
equal the official implementations' (so the official checkpoints load with ``strict=True``),
and the modules behave as the official ones do in shape and attributes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sam_widget.models import CONFIGS, VARIANTS, Sam, build_sam, get_config
from tests.reference import official_sam


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_and_shapes_equal_the_official_model(variant: str) -> None:
    # Full-size SAMs on the meta device: no memory, no init time, exact key/shape sets.
    # (MobileSAM's TinyViT calls .item() while building, so it is built for real: 10M params.)
    device = "cpu" if variant == "mobile_sam" else "meta"
    with torch.device(device):
        ours = build_sam(variant)
        official = official_sam(variant)
    assert _shapes(ours) == _shapes(official)
    # and therefore an official state dict (what the checkpoint files hold) loads strictly
    result = ours.load_state_dict(official.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_official_vit_b_weights_load_strictly_and_are_used() -> None:
    official = official_sam("vit_b")
    ours = build_sam("vit_b")
    ours.load_state_dict(official.state_dict(), strict=True)
    theirs, mine = official.state_dict(), ours.state_dict()
    assert list(theirs) == list(mine)
    for key, value in theirs.items():
        assert torch.equal(value, mine[key]), key


def test_registry_and_config_errors() -> None:
    assert set(VARIANTS) == {"vit_b", "vit_l", "vit_h", "mobile_sam"}
    assert get_config("vit_t") is CONFIGS["mobile_sam"]
    assert get_config(CONFIGS["vit_l"]) is CONFIGS["vit_l"]
    with pytest.raises(ValueError, match="unknown SAM variant 'vit_x'.*vit_b"):
        get_config("vit_x")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        CONFIGS["vit_b"].with_encoder(num_heads=7)
    with pytest.raises(ValueError, match="outside depth"):
        CONFIGS["vit_b"].with_encoder(depth=4)  # global block 5, 8, 11 do not exist
    small = CONFIGS["vit_h"].with_encoder(depth=2, global_attn_indexes=(1,))
    assert small.encoder.embed_dim == 1280 and small.variant == "vit_h"
    assert dataclasses.replace(CONFIGS["vit_b"], variant="x").embedding_size == 64


def test_sam_attributes_mirror_the_official_model() -> None:
    sam = build_sam(CONFIGS["vit_b"].with_encoder(depth=1, global_attn_indexes=(0,)))
    assert isinstance(sam, Sam) and not sam.training
    assert sam.variant == "vit_b"
    assert sam.mask_threshold == 0.0 and sam.image_format == "RGB"
    assert sam.image_encoder.img_size == 1024
    assert sam.pixel_mean.shape == (3, 1, 1) and sam.pixel_std.shape == (3, 1, 1)
    assert "pixel_mean" not in sam.state_dict()
    assert sam.device == torch.device("cpu")


def test_preprocess_and_postprocess_shapes() -> None:
    sam = build_sam(CONFIGS["vit_b"].with_encoder(depth=1, global_attn_indexes=(0,)))
    image = torch.full((3, 768, 1024), 255.0)
    x = sam.preprocess(image)
    assert x.shape == (3, 1024, 1024)
    assert torch.allclose(x[:, 0, 0], (255 - sam.pixel_mean[:, 0, 0]) / sam.pixel_std[:, 0, 0])
    assert torch.equal(x[:, 800:], torch.zeros(3, 224, 1024))  # padded bottom
    logits = torch.randn(1, 3, 256, 256)
    masks = sam.postprocess_masks(logits, input_size=(768, 1024), original_size=(480, 640))
    assert masks.shape == (1, 3, 480, 640)


@torch.no_grad()
def test_end_to_end_forward_on_a_small_model() -> None:
    torch.manual_seed(0)
    cfg = CONFIGS["vit_b"].with_encoder(
        img_size=256, embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=5
    )
    sam = build_sam(cfg)
    assert cfg.embedding_size == 16 and sam.prompt_encoder.image_embedding_size == (16, 16)
    image = torch.rand(3, 200, 256) * 255
    out = sam(
        [
            {
                "image": image,
                "original_size": (100, 128),
                "point_coords": torch.tensor([[[50.0, 60.0], [10.0, 20.0]]]),
                "point_labels": torch.tensor([[1, 0]]),
                "boxes": torch.tensor([[5.0, 5.0, 120.0, 90.0]]),
                "mask_inputs": torch.randn(1, 1, 64, 64),
            }
        ],
        multimask_output=True,
    )[0]
    assert out["masks"].shape == (1, 3, 100, 128) and out["masks"].dtype == torch.bool
    assert out["iou_predictions"].shape == (1, 3)
    assert out["low_res_logits"].shape == (1, 3, 64, 64)


def test_image_encoders_run_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    for cfg in (
        CONFIGS["vit_b"].with_encoder(
            img_size=128, embed_dim=192, num_heads=3, depth=2, global_attn_indexes=(1,)
        ),
        CONFIGS["mobile_sam"].with_encoder(img_size=128),
    ):
        encoder = build_sam(cfg).image_encoder
        x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
        with torch.no_grad():
            ref = encoder(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = encoder(x)
        assert low.shape == ref.shape == (1, 256, cfg.image_size // 16, cfg.image_size // 16)
        err = (low.float() - ref).abs().max() / ref.std()
        assert err < 0.1, err


def test_vit_encoder_backpropagates_and_grad_mode_gives_the_same_embedding() -> None:
    # With autograd on, masks are fresh tensors rather than the reused inference scratch.
    torch.manual_seed(0)
    cfg = CONFIGS["vit_b"].with_encoder(
        img_size=128, embed_dim=64, num_heads=2, depth=2, window_size=3, global_attn_indexes=(1,)
    )
    encoder = build_sam(cfg).image_encoder
    for block in encoder.blocks:
        torch.nn.init.normal_(block.attn.rel_pos_h)
        torch.nn.init.normal_(block.attn.rel_pos_w)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        frozen = encoder(x)
    out = encoder(x)
    assert torch.allclose(out, frozen, atol=1e-5)
    out.square().mean().backward()
    for block in encoder.blocks:
        assert block.attn.rel_pos_h.grad.abs().sum() > 0
        assert block.attn.rel_pos_w.grad.abs().sum() > 0
    assert encoder.pos_embed.grad.abs().sum() > 0


def test_tiny_vit_train_mode_uses_batch_statistics_and_backpropagates() -> None:
    torch.manual_seed(0)
    encoder = build_sam(CONFIGS["mobile_sam"].with_encoder(img_size=128)).image_encoder
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        folded = encoder(x)  # eval: BatchNorm folded into the convolutions
    encoder.train()
    out = encoder(x)
    assert out.shape == folded.shape == (2, 256, 8, 8)
    assert not torch.allclose(out, folded, atol=1e-3)  # batch statistics, not running ones
    out.mean().backward()
    assert encoder.layers[1].blocks[0].attn.attention_biases.grad.abs().sum() > 0
    encoder.eval()
    with torch.no_grad():
        # one training forward moved the running statistics; folding still equals BN
        conv_bn = encoder.patch_embed.seq[0]
        x0 = torch.randn(1, 3, 32, 32)
        assert torch.allclose(conv_bn(x0), conv_bn.bn(conv_bn.c(x0)), atol=1e-5)
