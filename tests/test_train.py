"""Fine-tuning (sam_widget.train): it learns, it touches only what it trains, files round-trip.

A random-weight SAM with a one-block image encoder at a 128-pixel input (8x8 embedding, so a
training step costs milliseconds, not seconds) and the real-width prompt encoder and mask
decoder, trained on generated coloured shapes over textured backgrounds. One decoder
fine-tuning run is shared by the module.

The held-out gain needs a model that can learn within the budget: at the real decoder width
and an 8x8 embedding the first hundreds of steps collapse to empty masks and 60 steps buy
nothing. So the gain is asserted on its own run: a narrow decoder (64 channels, 8 channels per
mask pixel) at a 256-pixel input (16x16 embedding, 64x64 logits), 60 generated images (40
trained on, 20 held out) and 1500 steps; its held-out one-click mIoU stays near 0.07 for
about 900 steps, then the decoder learns to localise a click (benchmarks/bench_train.py
--seeds --learn).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import sam_widget as sw
from sam_widget.train import data, simulation
from sam_widget.train.family import training_family
from sam_widget.train.loop import _prepare, _simulate, trainable
from sam_widget.train.synthetic import shapes_dataset
from sam_widget.weights import CheckpointError
from tests.test_predictor_support import tiny_config

IMAGE_SIZE = 128  # the model's square input: an 8x8 embedding, 32x32 logits
STEPS = 60


def small_config():
    return tiny_config().with_encoder(img_size=IMAGE_SIZE)


LEARN_IMAGES = 60  # the gain's run: generated images (a third held out) ...
LEARN_STEPS = 1500  # ... and steps


def narrow_config():
    """A SAM with a narrow decoder (64 channels) at a 256-pixel input: a 16x16 embedding and
    a training step of ~25 ms on one core, so the decoder learns within a test's budget."""
    from dataclasses import replace

    config = tiny_config().with_encoder(img_size=256, out_chans=64)
    return replace(config, prompt_embed_dim=64, decoder_num_heads=4, decoder_mlp_dim=256,
                   iou_head_hidden_dim=64)


def learn(seed: int = 0):
    """(report) of the gain's run: a random narrow SAM's decoder fine-tuned with ``seed``."""
    images, masks = shapes_dataset(LEARN_IMAGES, size=(96, 128), seed=0)
    torch.manual_seed(seed)
    sam = sw.build_sam(narrow_config())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its ops are tiny: two threads made it 8x slower on 2 busy cores
    try:
        return sw.train.finetune(sam, images, masks, steps=LEARN_STEPS, lr=1e-3, rounds=2,
                                 objects_per_step=4, validation=0.34, clicks=1,
                                 progress=False, seed=seed)
    finally:
        torch.set_num_threads(threads)


def small_sam(seed: int = 0):
    torch.manual_seed(seed)
    return sw.build_sam(small_config())


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def shapes():
    return shapes_dataset(12, size=(96, 128), seed=0)


@pytest.fixture(scope="module")
def run(shapes):
    """(base model, fine-tuned model, report): one decoder fine-tuning run."""
    images, masks = shapes
    base = small_sam(0)
    sam = copy.deepcopy(base)
    report = sw.train.finetune(
        sam, images, masks, steps=STEPS, lr=1e-3, rounds=2, objects_per_step=4,
        validation=0.34, progress=False, seed=0,
    )
    return base, sam, report


def test_decoder_finetuning_lowers_the_training_loss_and_measures_held_out_clicks(run):
    _, _, report = run
    assert report.steps == STEPS and len(report.losses) == STEPS
    assert report.validation_images == 4 and report.train_images == 8
    assert report.validation_objects + report.train_objects == 33
    # benchmarks/bench_train.py --seeds 5 measured 0.63x to 0.67x over seeds 0-4
    first, last = np.mean(report.losses[:10]), np.mean(report.losses[-10:])
    assert last < 0.8 * first, report
    for curve in (report.before, report.after):
        assert list(curve) == [1, 2, 3, 4, 5]
        assert all(0.0 <= v <= 1.0 for v in curve.values())
    assert report.before != report.after  # measured again with the trained decoder
    assert "mIoU by clicks" in repr(report)


def test_decoder_finetuning_raises_held_out_one_click_miou():
    report = learn(0)
    assert report.validation_images == 20 and report.steps == LEARN_STEPS
    # benchmarks/bench_train.py --seeds 5 --learn: one-click mIoU 0.00-0.08 before, gains
    # +0.13 to +0.27 after (seed 0: 0.080 -> 0.228); asserted: well inside the smallest
    gain = report.after[1] - report.before[1]
    assert gain > 0.08, report
    first, last = np.mean(report.losses[:100]), np.mean(report.losses[-100:])
    assert last < 0.6 * first, report


def test_frozen_parts_stay_bit_identical_and_the_trained_part_changes(run):
    base, sam, _ = run
    for part in ("image_encoder", "prompt_encoder"):
        assert same(state(getattr(base, part)), state(getattr(sam, part))), part
    assert not same(state(base.mask_decoder), state(sam.mask_decoder))
    assert sam.finetuned_parts == ("mask_decoder",)
    # the flags come back as they were: everything trainable, as build_sam made it
    assert all(p.requires_grad for p in sam.parameters())
    assert not sam.training


def test_gradients_never_reach_a_frozen_part(shapes):
    images, masks = shapes
    sam = small_sam(1)
    family = training_family(sam)
    predictor = sw.Predictor(sam)
    [(enc, rgb, targets, _)] = _prepare(
        family, predictor, data.collect(images[:1], masks[:1]), False, False, "")
    assert not enc.embedding.requires_grad
    rng = np.random.default_rng(0)
    cell = family.image_size / family.low_res
    with trainable(sam, ("mask_decoder",)):
        for box in (False, True):  # the point and the box first prompt, then corrections
            _simulate(family, enc, rgb, targets, rounds=3, box=box, cell=cell, rng=rng,
                      device=torch.device("cpu"))
    for name, p in sam.named_parameters():
        if name.startswith("mask_decoder."):
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert sum(float(p.grad.abs().sum()) for p in sam.mask_decoder.parameters()) > 0


@pytest.mark.parametrize(
    "parts", [("prompt_encoder", "mask_decoder"), ("image_encoder",)], ids="+".join
)
def test_other_parts_train_and_the_rest_stays_frozen(shapes, parts):
    images, masks = shapes
    base = small_sam(2)
    sam = copy.deepcopy(base)
    report = sw.train.finetune(sam, images[:3], masks[:3], parts=parts, steps=2, rounds=2,
                               objects_per_step=2, clicks=1, lr=1e-3, validation=0.34,
                               progress=False)
    assert report.parts == parts and set(report.after) == {1}
    for part in training_family(sam).parts:
        unchanged = same(state(getattr(base, part)), state(getattr(sam, part)))
        assert unchanged == (part not in parts), part


def test_save_writes_only_the_trained_part_and_loads_back_exactly(run, tmp_path):
    base, sam, _ = run
    path = sw.train.save(sam, tmp_path / "decoder.pt")
    record = torch.load(path, weights_only=True)
    assert record["base_variant"] == "vit_b" and record["parts"] == ["mask_decoder"]
    assert all(k.startswith("mask_decoder.") for k in record["state_dict"])
    assert record["base_digest"] == sw.train.weights_digest(base, exclude=["mask_decoder"])

    fresh = sw.train.load(copy.deepcopy(base), path)
    assert same(state(fresh), state(sam))

    # load_model: the base checkpoint plus the fine-tuned file
    torch.save(base.state_dict(), tmp_path / "base.pth")
    loaded = sw.load_model(small_config(), checkpoint=tmp_path / "base.pth",
                           finetuned=path, device="cpu")
    assert same(state(loaded), state(sam))


def test_a_file_for_another_base_is_refused(run, tmp_path):
    _, sam, _ = run
    path = sw.train.save(sam, tmp_path / "decoder.pt")
    other = small_sam(7)  # the same variant, other weights
    before = state(other)
    with pytest.raises(CheckpointError, match="other vit_b weights"):
        sw.train.load(other, path)
    assert same(state(other), before)  # nothing was applied
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other vit_b weights"):
        sw.load_model(small_config(), checkpoint=tmp_path / "other.pth", finetuned=path)
    renamed = copy.deepcopy(sam)
    renamed.variant = "vit_l"
    with pytest.raises(CheckpointError, match="fine-tuned on vit_b, not vit_l"):
        sw.train.load(renamed, path)
    with pytest.raises(CheckpointError, match="not a fine-tuned file"):
        sw.train.load(sam, tmp_path / "other.pth")


def test_save_needs_to_know_what_was_trained(tmp_path):
    with pytest.raises(ValueError, match="parts="):
        sw.train.save(small_sam(0), tmp_path / "x.pt")


def test_the_protocol_clicks_the_centre_of_the_largest_error_region():
    truth = np.zeros((40, 60), bool)
    truth[5:25, 10:50] = True  # a 20x40 rectangle
    x, y, label = simulation.next_click(truth, np.zeros_like(truth))
    assert label == 1 and 14 <= y <= 15 and 28 <= x <= 31  # its centre
    pred = truth.copy()
    pred[28:40, 0:12] = True  # a 12x12 extra block in the corner
    pred[5:7, 10:50] = False  # a thin missed strip
    x, y, label = simulation.next_click(truth, pred)
    assert label == 0 and (x, y) in {(5.0, 33.0), (5.0, 34.0), (6.0, 33.0), (6.0, 34.0)}
    assert simulation.next_click(truth, truth) is None


def test_evaluate_measures_clicks_to_iou(shapes):
    images, masks = shapes
    curve = sw.train.evaluate(small_sam(0), images[:2], masks[:2], clicks=3)
    assert list(curve) == [1, 2, 3] and all(0.0 <= v <= 1.0 for v in curve.values())


def test_finetune_straight_from_an_annotation_widget(shapes):
    images, masks = shapes
    sam = small_sam(3)
    predictor = sw.Predictor(sam)
    w = sw.SamWidget(images[0], model=predictor)
    try:
        for mask in masks[0]:
            ys, xs = np.nonzero(mask)
            w.add_point(float(xs[len(xs) // 2]), float(ys[len(ys) // 2]))
            w.commit()
        assert len(w.objects) == len(masks[0])
        encoded = predictor.cache_info["misses"]
        handle = predictor.encode(images[0])
        old = predictor.predict(points=[(10, 10)], labels=[1], image=handle).logits
        report = sw.train.finetune(sam, w, steps=2, rounds=2, validation=0, progress=False)
        assert report.train_objects == len(masks[0]) and report.before == {}
        assert predictor.cache_info["misses"] == encoded  # the widget's embedding was reused
        # the widget now answers with the fine-tuned decoder (no stale decoder caches)
        w.add_point(10, 10)
        fresh = sw.Predictor(sam)
        fresh.set_image(images[0])
        expected = fresh.predict(points=[(10, 10)], labels=[1]).logits
        np.testing.assert_allclose(w.prediction.logits, expected, atol=1e-4)
        assert not np.allclose(old, expected)
    finally:
        w.close()


def test_a_dataset_session_annotations_are_read_with_their_images(shapes):
    images, masks = shapes

    class Session:  # the shape of a dataset session: {index: [objects]} and its images
        dataset = images
        annotations = {2: [{"mask": m} for m in masks[2]], 0: [{"mask": masks[0][0]}], 5: []}

    examples = data.collect(Session())
    assert [len(ex.masks) for ex in examples] == [1, len(masks[2])]
    assert examples[1].image is images[2]


def test_a_saved_coco_folder_trains(shapes, tmp_path):
    images, masks = shapes
    sw.export.save(tmp_path / "one", images[1], masks[1])
    [example] = data.collect(tmp_path / "one")
    assert len(example.masks) == len(masks[1])
    assert all(np.array_equal(a, b) for a, b in zip(example.masks, masks[1], strict=True))

    # polygon segmentations (COCO's other form) and several images in one file
    from PIL import Image

    Image.fromarray(images[3]).save(tmp_path / "b.png")
    coco = json.loads((tmp_path / "one" / "annotations.json").read_text())
    coco["images"].append({"id": 2, "file_name": "../b.png", "height": 96, "width": 128})
    coco["annotations"].append({"id": 99, "image_id": 2, "category_id": 1,
                                "segmentation": [[10, 10, 60, 10, 60, 50, 10, 50]]})
    (tmp_path / "one" / "annotations.json").write_text(json.dumps(coco))
    examples = data.collect(tmp_path / "one")
    assert examples[1].masks[0].sum() == pytest.approx(50 * 40, rel=0.1)
    report = sw.train.finetune(small_sam(4), tmp_path / "one", steps=1, rounds=1,
                               validation=0.5, clicks=1, progress=False)
    assert report.train_images == 1 and report.validation_images == 1


def test_progress_shows_the_running_loss(shapes, capsys):
    images, masks = shapes
    sw.train.finetune(small_sam(5), images[:2], masks[:2], steps=2, rounds=1, clicks=1,
                      validation=0, progress=True)
    err = capsys.readouterr().err
    assert "fine-tuning" in err and "loss=" in err


def test_bad_input_is_named(shapes):
    images, masks = shapes
    sam = small_sam(0)
    with pytest.raises(ValueError, match="parts must name"):
        sw.train.finetune(sam, images[:2], masks[:2], parts=("decoder",))
    with pytest.raises(ValueError, match="one entry per image"):
        sw.train.finetune(sam, images[:2], masks[:1])
    with pytest.raises(ValueError, match="mask 0 is 10x10"):
        sw.train.finetune(sam, images[:2], [[np.ones((10, 10), bool)], masks[1]],
                          validation=0, progress=False)
    with pytest.raises(TypeError, match="needs masks"):
        sw.train.finetune(sam, images[:2])
    with pytest.raises(ValueError, match="nothing to train on"):
        sw.train.finetune(sam, images[:1], [[np.zeros((96, 128), bool)]])
    with pytest.raises(TypeError, match="SAM or SAM 2.1 model"):
        sw.train.finetune(torch.nn.Linear(2, 2), images[:1], masks[:1])
