"""Fine-tuning SAM 2.1 (sam_widget.train): it learns, it touches only what it trains, and the
fine-tuned file round-trips through ``sw.load_model("sam2.1_hiera_tiny", finetuned=...)``.

A random-weight SAM 2.1 with a one-block-per-stage, 16-wide Hiera trunk at a 128-pixel input
(an 8x8 embedding, 32x32 logits, high-res features at 16x16 and 32x32) and a narrow decoder
(64 channels), so a training step costs milliseconds; trained on the generated coloured shapes
of tests/test_train.py. The same simulated-annotator loop as SAM's, through SAM 2.1's own
pieces (boxes as corner points, the object-score token, sigmoid IoU, the high-res upsampling
path: ``sam_widget.families.Sam2Family``).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

import sam_widget as sw
from sam_widget.models.sam2 import CONFIGS
from sam_widget.models.sam2.configs import HieraConfig
from sam_widget.train import data
from sam_widget.train.family import training_family
from sam_widget.train.loop import _prepare, _simulate, trainable
from sam_widget.train.synthetic import shapes_dataset
from tests.test_train import same, state

LEARN_IMAGES = 60  # generated images, a third held out
LEARN_STEPS = 1000


def narrow_sam2_config():
    """hiera_tiny's layout shrunk: 128-pixel input, 16-wide trunk of 4 one-block stages,
    64-channel neck and decoder."""
    return replace(
        CONFIGS["sam2.1_hiera_tiny"], image_size=128, d_model=64, decoder_num_heads=4,
        decoder_mlp_dim=256, iou_head_hidden_dim=64,
        trunk=HieraConfig(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1),
                          global_att_blocks=(0,), window_pos_embed_bkg_spatial_size=(7, 7)),
    )


def narrow_sam2(seed: int = 0):
    torch.manual_seed(seed)
    return sw.build_sam(narrow_sam2_config())


@pytest.fixture(scope="module")
def learned():
    """(base, fine-tuned, report): the narrow SAM 2.1's mask decoder fine-tuned."""
    images, masks = shapes_dataset(LEARN_IMAGES, size=(96, 128), seed=0)
    base = narrow_sam2(0)
    sam = copy.deepcopy(base)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster on two busy cores
    try:
        report = sw.train.finetune(sam, images, masks, steps=LEARN_STEPS, lr=1e-3, rounds=2,
                                   objects_per_step=4, validation=0.34, clicks=1,
                                   progress=False, seed=0)
    finally:
        torch.set_num_threads(threads)
    return base, sam, report


def test_sam2_decoder_finetuning_raises_held_out_one_click_miou(learned):
    _, _, report = learned
    assert report.validation_images == 20 and report.steps == LEARN_STEPS
    # measured (seeds 0-4 of this run): one-click mIoU 0.04-0.08 before, gains +0.23 (seed 0:
    # 0.076 -> 0.304), +0.09, +0.00 (seed 2 has not begun to localise clicks by step 1000),
    # +0.24, +0.21; asserted on seed 0 (a CPU run repeats exactly), with a wide margin
    gain = report.after[1] - report.before[1]
    assert gain > 0.1, report
    first, last = np.mean(report.losses[:100]), np.mean(report.losses[-100:])
    assert last < 0.7 * first, report


def test_sam2_frozen_parts_and_the_high_res_projections_stay_bit_identical(learned):
    base, sam, _ = learned
    assert sam.finetuned_parts == ("mask_decoder",)
    for part in ("image_encoder", "prompt_encoder"):
        assert same(state(getattr(base, part)), state(getattr(sam, part))), part
    assert torch.equal(base.no_mem_embed, sam.no_mem_embed)
    # conv_s0 / conv_s1 run when an image is encoded: cached and stored encodings stay valid
    for conv in ("conv_s0", "conv_s1"):
        assert same(state(getattr(base.mask_decoder, conv)),
                    state(getattr(sam.mask_decoder, conv))), conv
    assert not same(state(base.mask_decoder), state(sam.mask_decoder))
    assert not sam.training and all(p.requires_grad for p in sam.parameters())


def test_sam2_gradients_reach_the_decoder_through_its_own_pieces_and_nothing_else():
    images, masks = shapes_dataset(2, size=(96, 128), seed=1)
    sam = narrow_sam2(1)
    family = training_family(sam)
    assert family.name == "sam2" and family.low_res == 32
    [(enc, rgb, targets, _)] = _prepare(
        family, sw.Predictor(sam), data.collect(images[:1], masks[:1]), False, False, "")
    assert enc.input_size == (128, 128) and len(enc.high_res) == 2  # the whole square
    rng = np.random.default_rng(0)
    with trainable(sam, ("mask_decoder",)):
        for box in (False, True):  # a point, and a box (as corner points), then corrections
            _simulate(family, enc, rgb, targets, rounds=2, box=box, cell=4.0, rng=rng,
                      device=torch.device("cpu"))
    # not reached: the frozen parts, the high-res projections (run at encoding) and the
    # object-score head (an image model's answer does not use it)
    outside = (".conv_s0.", ".conv_s1.", ".pred_obj_score_head.")
    for name, p in sam.named_parameters():
        if name.startswith("sam_mask_decoder.") and not any(o in name for o in outside):
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert sum(float(p.grad.abs().sum()) for p in sam.mask_decoder.parameters()
               if p.grad is not None) > 0


@pytest.mark.parametrize(
    "parts", [("prompt_encoder", "mask_decoder"), ("image_encoder",)], ids="+".join
)
def test_sam2_other_parts_train_and_the_rest_stays_frozen(parts):
    images, masks = shapes_dataset(3, size=(96, 128), seed=2)
    base = narrow_sam2(2)
    sam = copy.deepcopy(base)
    report = sw.train.finetune(sam, images, masks, parts=parts, steps=2, rounds=2,
                               objects_per_step=2, clicks=1, lr=1e-3, validation=0.34,
                               progress=False)
    assert report.parts == parts and set(report.after) == {1}
    for part in training_family(sam).parts:
        unchanged = same(state(getattr(base, part)), state(getattr(sam, part)))
        assert unchanged == (part not in parts), part


def test_sam2_finetuned_file_round_trips_through_load_model(sam2_tiny_checkpoint, tmp_path):
    model, checkpoint = sam2_tiny_checkpoint
    tuned = copy.deepcopy(model)
    with torch.no_grad():  # as a fine-tuning run would leave it
        for p in tuned.sam_mask_decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = sw.train.save(tuned, tmp_path / "decoder.pt", parts=("mask_decoder",))
    record = torch.load(path, weights_only=True)
    assert record["base_variant"] == "sam2.1_hiera_tiny" and record["parts"] == ["mask_decoder"]
    assert record["state_dict"] and all(
        k.startswith("sam_mask_decoder.") for k in record["state_dict"])
    loaded = sw.load_model("sam2.1_hiera_tiny", checkpoint=checkpoint, finetuned=path,
                           device="cpu")
    assert loaded.finetuned_parts == ("mask_decoder",)
    assert same(state(loaded), state(tuned))
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.no_mem_embed.add_(1.0)  # other base weights: refused
    with pytest.raises(sw.weights.CheckpointError, match="other sam2.1_hiera_tiny weights"):
        sw.train.load(other, path)
