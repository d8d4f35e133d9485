"""Specification of `sam_widget.automatic.MaskGenerator`: the official generator's output.

Same random-weight model (test_predictor_support.py), same settings, compared with the official
`SamAutomaticMaskGenerator`: same number of masks, each matched with IoU >= 0.99, same scores.
Random weights give speckled masks spread over the whole image, with stability scores of
0.04-0.26 and predicted IoUs of -0.15-0.12 (hence the low thresholds); their boxes all cover the
image, so most settings switch off box NMS (``box_nms_thresh=1.0``) to keep many masks to
compare. NMS itself is compared with torchvision's on random boxes.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sam_widget.automatic import MaskGenerator, box_nms, mask_to_rle, remove_small_regions
from sam_widget.predictor import Predictor
from tests.test_predictor_support import synthetic_image


@pytest.fixture(scope="module")
def image():
    return synthetic_image(160, 224)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def assert_same_records(ours: list[dict], official: list[dict]) -> None:
    assert len(ours) == len(official) > 0
    unmatched = list(range(len(ours)))
    for ref in official:  # greedy matching by mask IoU (order may differ on score ties)
        best = max(unmatched, key=lambda j: iou(ours[j]["segmentation"], ref["segmentation"]))
        rec = ours[best]
        unmatched.remove(best)
        assert iou(rec["segmentation"], ref["segmentation"]) >= 0.99
        assert abs(rec["predicted_iou"] - ref["predicted_iou"]) <= 1e-3
        assert abs(rec["stability_score"] - ref["stability_score"]) <= 1e-3
        assert np.allclose(rec["point_coords"], ref["point_coords"])
        assert np.allclose(rec["crop_box"], ref["crop_box"])
        assert abs(rec["area"] - ref["area"]) <= 0.01 * max(ref["area"], 1)
        assert np.abs(np.array(rec["bbox"]) - np.array(ref["bbox"])).max() <= 2
    keys = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score"}
    assert set(ours[0]) == keys | {"crop_box"} == set(official[0])


def official_records(official_model, image, **settings):
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(official_model, **settings).generate(image)


SETTINGS = {
    # every candidate kept: 3 masks per point, compared one by one
    "no filters": dict(
        points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    ),
    # predicted-IoU and stability filters, and box NMS
    "filters + nms": dict(
        points_per_side=4, pred_iou_thresh=0.05, stability_score_thresh=0.1, box_nms_thresh=0.7
    ),
    "stability filter": dict(
        points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.1, box_nms_thresh=1.0
    ),
    # crop layer: 1 + 4 crops, masks at crop edges dropped, NMS across crops
    "crops": dict(
        points_per_side=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        crop_n_layers=1,
        crop_nms_thresh=1.0,
    ),
    # small holes filled and islands removed (the official uses OpenCV, we use scipy)
    "small regions": dict(
        points_per_side=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        min_mask_region_area=40,
    ),
}


@pytest.mark.parametrize("name", SETTINGS, ids=list(SETTINGS))
def test_same_masks_as_official(model, official_model, image, name):
    settings = SETTINGS[name]
    ours = MaskGenerator(model, **settings).generate(image)
    assert_same_records(ours, official_records(official_model, image, **settings))


def test_rle_outputs(model, official_model, image):
    settings = dict(SETTINGS["no filters"], points_per_side=2)
    binary = MaskGenerator(model, **settings).generate(image)
    rle = MaskGenerator(model, output_mode="uncompressed_rle", **settings).generate(image)
    reference = official_records(official_model, image, output_mode="uncompressed_rle", **settings)
    assert len(rle) == len(reference) == len(binary)
    from pycocotools import mask as mask_utils

    for b, r in zip(binary, rle, strict=True):  # the official uncompressed RLE layout
        assert r["segmentation"]["size"] == [160, 224]
        decoded = mask_utils.decode(mask_utils.frPyObjects(r["segmentation"], 160, 224))
        assert np.array_equal(decoded.astype(bool), b["segmentation"])
    for ref in reference:  # the official RLEs decode to (almost exactly) our masks
        ref_mask = mask_utils.decode(mask_utils.frPyObjects(ref["segmentation"], 160, 224))
        assert max(iou(ref_mask.astype(bool), b["segmentation"]) for b in binary) >= 0.99

    coco = MaskGenerator(model, output_mode="coco_rle", **settings).generate(image)
    for b, c in zip(binary, coco, strict=True):
        decoded = mask_utils.decode(c["segmentation"]).astype(bool)
        assert np.array_equal(decoded, b["segmentation"])
        assert mask_utils.area(c["segmentation"]) == b["area"]


def test_rle_round_trip_edge_cases():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), rng.random((9, 11)) > 0.5]
    for mask in cases:
        rle = mask_to_rle(mask)
        assert sum(rle["counts"]) == mask.size
        coco = mask_utils.frPyObjects(rle, *mask.shape)
        assert np.array_equal(mask_utils.decode(coco).astype(bool), mask)


def test_nms_equals_torchvision():
    torchvision_ops = pytest.importorskip("torchvision.ops")
    gen = torch.Generator().manual_seed(0)
    for n in (1, 5, 200):
        xy = torch.rand(n, 2, generator=gen) * 100
        wh = torch.rand(n, 2, generator=gen) * 40
        boxes = torch.cat([xy, xy + wh], dim=1).round()
        scores = torch.rand(n, generator=gen)
        for thresh in (0.3, 0.7):
            expected = torchvision_ops.nms(boxes, scores, thresh)
            assert torch.equal(box_nms(boxes, scores, thresh), expected)
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_small_region_clean_up():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # a one-pixel hole
    mask[17, 17] = True  # a one-pixel island
    filled, changed = remove_small_regions(mask, 5, "holes")
    assert changed and filled[5, 5] and filled[17, 17]
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[17, 17] and cleaned[2:12, 2:12].all()
    same, changed = remove_small_regions(cleaned, 5, "islands")
    assert not changed and np.array_equal(same, cleaned)
    # when every island is small, the largest stays
    dots = np.zeros((10, 10), bool)
    dots[0, 0] = True
    dots[5:7, 5:7] = True
    kept, _ = remove_small_regions(dots, 50, "islands")
    assert kept.sum() == 4 and kept[5:7, 5:7].all()


def test_progress_and_shared_predictor(model, image):
    predictor = Predictor(model, device="cpu")
    other = synthetic_image(seed=3)
    predictor.set_image(other)
    calls = []
    settings = dict(SETTINGS["no filters"], points_per_side=4, points_per_batch=6)
    records = MaskGenerator(predictor, **settings).generate(
        image, progress=lambda done, total: calls.append((done, total))
    )
    assert records and calls == [(i, 3) for i in (1, 2, 3)]  # 16 points in batches of 6
    assert predictor.image_shape == other.shape[:2]  # the predictor's own image is restored


def test_bad_settings_are_refused(model):
    with pytest.raises(ValueError, match="output_mode"):
        MaskGenerator(model, output_mode="png")
    with pytest.raises(ValueError, match="exactly one"):
        MaskGenerator(model, points_per_side=None)


def test_torchvision_is_not_needed():
    code = (
        "import sys; import sam_widget.automatic, sam_widget.predictor; "
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
