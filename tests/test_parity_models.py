"""Parity of our SAM modules with the official implementations (see ``tests/reference.py``).

The same random weights (every tensor that initialises to a constant redrawn, so relative
position tables, the position embedding and TinyViT's attention biases all matter) go into
the official model and ours; both then see the same inputs. With random weights the masks
hardly depend on details, so we compare the numbers that carry the signal: the image
embedding (max |diff| / std <= 1e-4 in float32), the low-res mask logits (<= 1e-3 of their
std) and the predicted IoUs (<= 1e-4).

vit_b runs at full size. The vit_l and vit_h configurations keep their full width, heads,
window and image size but only two blocks (one windowed, one global), which keeps this file
within a few CPU minutes; every block runs the same code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_widget.models import CONFIGS, SamConfig, build_sam
from tests.reference import official_sam, randomize_

EMBEDDING_TOL = 1e-4
LOGITS_TOL = 1e-3
IOU_TOL = 1e-4

ENCODER_CONFIGS = {
    "vit_b": CONFIGS["vit_b"],
    "vit_l_depth2": CONFIGS["vit_l"].with_encoder(depth=2, global_attn_indexes=(1,)),
    "vit_h_depth2": CONFIGS["vit_h"].with_encoder(depth=2, global_attn_indexes=(1,)),
    "mobile_sam": CONFIGS["mobile_sam"],
}


def _pair(config: SamConfig, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(official, ours) with identical random weights, both in eval mode."""
    official = randomize_(official_sam(config), seed)
    ours = build_sam(config)
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / std(ref)."""
    return float((ours.float() - ref).abs().max() / ref.std())


@pytest.mark.parametrize("name", list(ENCODER_CONFIGS))
@torch.no_grad()
def test_image_embedding_matches_the_official_encoder(name: str) -> None:
    config = ENCODER_CONFIGS[name]
    official, ours = _pair(config)
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    ref = official.image_encoder(image)
    out = ours.image_encoder(image)
    assert out.shape == ref.shape == (1, 256, 64, 64)
    assert ref.std() > 0.1  # a live signal, not a collapsed one
    err = _rel_err(out, ref)
    print(f"{name}: image embedding max|diff|/std = {err:.2e}")
    assert err <= EMBEDDING_TOL


@pytest.fixture(scope="module", params=["vit_b", "mobile_sam"])
def decoder_pair(request: pytest.FixtureRequest):
    """Official and our SAM sharing random weights, plus one random image embedding."""
    official, ours = _pair(CONFIGS[request.param], seed=2)
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(3))
    return official, ours, embedding


def _decode(sam, embedding, multimask, points=None, labels=None, box=None, mask_input=None):
    sparse, dense = sam.prompt_encoder(
        points=None if points is None else (points, labels), boxes=box, masks=mask_input
    )
    logits, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    return sparse, dense, logits, iou


PROMPTS = {
    "one point": dict(points=[[[500.0, 375.0]]], labels=[[1]]),
    "fg+bg points": dict(
        points=[[[500.0, 375.0], [880.5, 120.25], [30.0, 990.0]]], labels=[[1, 0, 0]]
    ),
    "box": dict(box=[[425.0, 600.0, 700.0, 875.0]]),
    "box+points": dict(
        points=[[[575.0, 750.0], [1000.0, 10.0]]],
        labels=[[0, 1]],
        box=[[425.0, 600.0, 700.0, 875.0]],
    ),
    "three boxes": dict(
        box=[[10.0, 20.0, 300.0, 400.0], [425.0, 600.0, 700.0, 875.0], [0.0, 0.0, 1023.0, 1023.0]]
    ),
}


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
@torch.no_grad()
def test_prompt_encoder_and_mask_decoder_match_the_official_ones(decoder_pair, prompt, multimask):
    official, ours, embedding = decoder_pair
    kwargs = {
        k: torch.tensor(v, dtype=torch.int64 if k == "labels" else torch.float32)
        for k, v in PROMPTS[prompt].items()
    }
    ref = _decode(official, embedding, multimask, **kwargs)
    out = _decode(ours, embedding, multimask, **kwargs)
    for name, a, b in zip(["sparse", "dense"], out[:2], ref[:2], strict=True):
        assert a.shape == b.shape, name
        assert _rel_err(a, b) <= 1e-5, name
    logits, iou = out[2:]
    ref_logits, ref_iou = ref[2:]
    n_masks = 3 if multimask else 1
    assert logits.shape == ref_logits.shape == (len(ref_logits), n_masks, 256, 256)
    assert iou.shape == ref_iou.shape == (len(ref_logits), n_masks)
    err = _rel_err(logits, ref_logits)
    print(f"{prompt}, multimask={multimask}: logits max|diff|/std = {err:.2e}")
    assert err <= LOGITS_TOL
    assert float((iou - ref_iou).abs().max()) <= IOU_TOL


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@torch.no_grad()
def test_mask_input_fed_back_matches(decoder_pair, multimask):
    official, ours, embedding = decoder_pair
    points = torch.tensor([[[500.0, 375.0], [600.0, 300.0]]])
    labels = torch.tensor([[1, 1]])
    first = _decode(official, embedding, True, points=points, labels=labels)[2]
    # the best first-round candidate goes back in, as an interactive session does
    mask_input = first[:, :1]  # (1, 1, 256, 256)
    ref = _decode(official, embedding, multimask, points, labels, mask_input=mask_input)
    out = _decode(ours, embedding, multimask, points, labels, mask_input=mask_input)
    assert _rel_err(out[1], ref[1]) <= 1e-5  # the dense mask embedding
    assert _rel_err(out[2], ref[2]) <= LOGITS_TOL
    assert float((out[3] - ref[3]).abs().max()) <= IOU_TOL
    # the mask input does change the result, so the comparison above is not vacuous
    plain = _decode(ours, embedding, multimask, points, labels)[2]
    assert _rel_err(plain, out[2]) > 1e-2


@torch.no_grad()
def test_end_to_end_forward_matches_the_official_sam() -> None:
    # a small SAM (256-pixel input, narrow ViT) through Sam.forward: preprocess, encoder,
    # prompts, decoder and postprocess_masks together
    config = CONFIGS["vit_b"].with_encoder(
        img_size=256, embed_dim=96, num_heads=4, depth=3, window_size=5, global_attn_indexes=(1,)
    )
    official, ours = _pair(config, seed=4)
    gen = torch.Generator().manual_seed(5)
    batch = [
        {
            "image": torch.rand(3, 192, 256, generator=gen) * 255,
            "original_size": (300, 400),
            "point_coords": torch.tensor([[[100.0, 80.0], [20.0, 150.0]]]),
            "point_labels": torch.tensor([[1, 0]]),
        },
        {
            "image": torch.rand(3, 192, 256, generator=gen) * 255,
            "original_size": (150, 200),
            "boxes": torch.tensor([[30.0, 40.0, 200.0, 180.0]]),
            "mask_inputs": torch.randn(1, 1, 64, 64, generator=gen),
        },
    ]
    ref = official(batch, multimask_output=True)
    out = ours(batch, multimask_output=True)
    for r, o in zip(ref, out, strict=True):
        assert _rel_err(o["low_res_logits"], r["low_res_logits"]) <= LOGITS_TOL
        assert float((o["iou_predictions"] - r["iou_predictions"]).abs().max()) <= IOU_TOL
        assert o["masks"].shape == r["masks"].shape and o["masks"].dtype == torch.bool
        assert (o["masks"] == r["masks"]).float().mean() >= 0.999


@torch.no_grad()
def test_the_official_sam_predictor_gives_the_same_masks_on_our_model() -> None:
    # Code written against the official Sam (here: its own SamPredictor) runs on ours.
    from segment_anything import SamPredictor

    config = CONFIGS["vit_b"].with_encoder(
        img_size=256, embed_dim=96, num_heads=4, depth=2, window_size=6, global_attn_indexes=(1,)
    )
    official, ours = _pair(config, seed=6)
    gen = torch.Generator().manual_seed(7)
    image = (torch.rand(150, 200, 3, generator=gen) * 255).to(torch.uint8).numpy()
    results = []
    for model in (official, ours):
        predictor = SamPredictor(model)
        predictor.set_image(image)
        results.append(
            predictor.predict(
                point_coords=np.array([[120.0, 70.0], [30.0, 100.0]]),
                point_labels=np.array([1, 0]),
                box=np.array([20.0, 10.0, 180.0, 140.0]),
                multimask_output=True,
            )
        )
    (ref_masks, ref_scores, ref_logits), (masks, scores, logits) = results
    assert masks.shape == ref_masks.shape == (3, 150, 200)
    assert (masks == ref_masks).mean() >= 0.999
    assert np.abs(scores - ref_scores).max() <= IOU_TOL
    assert np.abs(logits - ref_logits).max() / ref_logits.std() <= LOGITS_TOL


@pytest.mark.parametrize("q_size,k_size", [(14, 14), (10, 10), (20, 20), (7, 14), (14, 7)])
def test_relative_position_tables_match_including_resampling(q_size: int, k_size: int) -> None:
    from segment_anything.modeling.image_encoder import get_rel_pos

    from sam_widget.models.image_encoder import rel_pos_table

    table = torch.randn(27, 8, generator=torch.Generator().manual_seed(8))  # trained for 14
    assert torch.allclose(rel_pos_table(q_size, k_size, table), get_rel_pos(q_size, k_size, table))
