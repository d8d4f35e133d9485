"""The weights-free engine (`ClassicPredictor`): synthetic scenes with known answers.

Each scene is drawn by the test: shapes of known extent on a textured background, so every
expectation is an IoU against the true shape, never a hard-coded mask.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam_widget.classic import ClassicPredictor
from sam_widget.predictor import Engine, Prediction

H, W = 300, 400


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def textured_background(rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float: a colour gradient, a fine sinusoidal weave and pixel noise."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    base = np.stack([90 + 40 * xx / W, 120 + 30 * yy / H, 80 + 0 * xx], axis=-1)
    weave = 18 * (np.sin(xx / 2.3) * np.sin(yy / 3.1))[..., None]
    return base + weave + rng.normal(0, 12, (H, W, 3))


@pytest.fixture(scope="module")
def scene() -> dict[str, object]:
    """A disk, a rectangle and a ring, each a flat noisy colour, on a textured background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot(xx - 300, yy - 90)
    shapes = {
        "disk": np.hypot(xx - 90, yy - 90) <= 50,
        "rectangle": (xx >= 150) & (xx < 250) & (yy >= 170) & (yy < 260),
        "ring": (r <= 60) & (r >= 32),
    }
    colours = {"disk": (220, 60, 50), "rectangle": (40, 60, 200), "ring": (240, 220, 60)}
    image = textured_background(rng)
    for name, mask in shapes.items():
        image[mask] = np.asarray(colours[name]) + rng.normal(0, 8, (int(mask.sum()), 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    engine = ClassicPredictor()
    engine.set_image(image)
    clicks = {"disk": (90, 90), "rectangle": (200, 215), "ring": (300, 44)}
    return {"image": image, "shapes": shapes, "clicks": clicks, "engine": engine}


def test_implements_the_engine_protocol(scene):
    engine = scene["engine"]
    assert isinstance(engine, Engine)
    assert engine.name == "classic"
    assert engine.device == "cpu"
    assert engine.image_shape == (H, W)
    # what set_image precomputed: superpixels covering the image at working resolution
    labels = engine.superpixels
    assert labels.shape == (384, 512) and labels.min() == 0  # longest side working_size
    assert 300 <= labels.max() + 1 <= 1500


@pytest.mark.parametrize("shape", ["disk", "rectangle", "ring"])
def test_a_click_inside_a_shape_finds_it(scene, shape):
    x, y = scene["clicks"][shape]
    pred = scene["engine"].predict(points=[(x, y)], labels=[1])
    assert isinstance(pred, Prediction)
    assert pred.masks.shape == (3, H, W) and pred.masks.dtype == bool
    truth = scene["shapes"][shape]
    ious = [iou(m, truth) for m in pred.masks]
    assert max(ious) >= 0.9, ious
    # every candidate contains the clicked pixel
    assert pred.masks[:, y, x].all()


def test_candidates_go_from_fine_to_coarse_with_scores(scene):
    x, y = scene["clicks"]["disk"]
    pred = scene["engine"].predict(points=[(x, y)], labels=[1])
    areas = pred.masks.sum(axis=(1, 2))
    assert (np.diff(areas) >= 0).all(), areas
    assert pred.scores.shape == (3,) and pred.scores.dtype == np.float32
    assert ((pred.scores >= 0) & (pred.scores <= 1)).all()
    # the true shape is a far more distinct region than a part of it
    best = int(np.argmax([iou(m, scene["shapes"]["disk"]) for m in pred.masks]))
    assert pred.best == best


def test_single_mask_is_the_best_candidate(scene):
    x, y = scene["clicks"]["rectangle"]
    multi = scene["engine"].predict(points=[(x, y)], labels=[1])
    single = scene["engine"].predict(points=[(x, y)], labels=[1], multimask=False)
    assert single.masks.shape == (1, H, W) and single.logits.shape == (1, 256, 256)
    np.testing.assert_array_equal(single.masks[0], multi.masks[multi.best])


@pytest.mark.parametrize("shape", ["disk", "rectangle", "ring"])
def test_a_box_around_a_shape_finds_it(scene, shape):
    ys, xs = np.nonzero(scene["shapes"][shape])
    box = (xs.min() - 3, ys.min() - 3, xs.max() + 4, ys.max() + 4)
    pred = scene["engine"].predict(box=box)
    ious = [iou(m, scene["shapes"][shape]) for m in pred.masks]
    assert max(ious) >= 0.9, ious
    assert ious[pred.best] >= 0.9, (ious, pred.scores)


def test_several_boxes_at_once(scene):
    boxes = []
    for name in ("disk", "rectangle"):
        ys, xs = np.nonzero(scene["shapes"][name])
        boxes.append((xs.min() - 3, ys.min() - 3, xs.max() + 4, ys.max() + 4))
    pred = scene["engine"].predict(box=np.array(boxes))
    assert pred.scores.shape == (2, 3)
    assert pred.logits.shape == (2, 3, 256, 256)
    assert pred.masks.shape == (2, 3, H, W)
    for i, name in enumerate(("disk", "rectangle")):
        assert max(iou(m, scene["shapes"][name]) for m in pred.masks[i]) >= 0.9


def test_two_foreground_points_on_two_shapes_give_a_mask_holding_both(scene):
    (x0, y0), (x1, y1) = scene["clicks"]["disk"], scene["clicks"]["rectangle"]
    pred = scene["engine"].predict(points=[(x0, y0), (x1, y1)], labels=[1, 1])
    assert pred.masks[:, y0, x0].all() and pred.masks[:, y1, x1].all()


def test_a_negative_point_removes_what_it_marks(scene):
    shapes = scene["shapes"]
    # a click on the ring with a negative point on the background inside the ring's hole
    x, y = scene["clicks"]["ring"]
    pred = scene["engine"].predict(points=[(x, y), (300, 90)], labels=[1, 0])
    assert not pred.masks[:, 90, 300].any()
    assert pred.masks[:, y, x].all()
    assert max(iou(m, shapes["ring"]) for m in pred.masks) >= 0.9


def test_a_negative_point_inside_the_only_region_splits_it(scene):
    # both points on the rectangle: the answer keeps the positive and drops the negative one
    pred = scene["engine"].predict(points=[(165, 185), (235, 245)], labels=[1, 0])
    assert pred.masks[:, 185, 165].all()
    assert not pred.masks[:, 245, 235].any()


def test_only_negative_points_select_nothing(scene):
    pred = scene["engine"].predict(points=[(10, 10)], labels=[0])
    assert not pred.masks.any()
    assert (pred.scores == 0).all()


def test_logits_are_positive_exactly_where_the_mask_is(scene):
    x, y = scene["clicks"]["disk"]
    pred = scene["engine"].predict(points=[(x, y)], labels=[1])
    assert pred.logits.shape == (3, 256, 256) and pred.logits.dtype == np.float32
    # the image fills the top-left 192x256 of SAM's 256 frame (longest side 256)
    low = pred.logits[:, :192, :256] > 0
    assert not (pred.logits[:, 192:, :] > 0).any()
    expected = pred.masks_at(192, 256)
    agreement = (low == expected).mean()
    assert agreement >= 0.99, agreement
    # distance-like: deeper inside the mask means larger logits, saturating at 20
    assert pred.logits.max() <= 20 and pred.logits.min() >= -20
    centre = pred.logits[2, 90 * 192 // H, 90 * 256 // W]
    edge_row, edge_col = (90 - 48) * 192 // H, 90 * 256 // W
    assert centre > pred.logits[2, edge_row, edge_col] > -20


def test_logits_feed_back_as_mask_input(scene):
    engine = scene["engine"]
    x, y = scene["clicks"]["disk"]
    first = engine.predict(points=[(x, y)], labels=[1])
    chosen = first.best
    again = engine.predict(
        points=[(x, y)], labels=[1], mask_input=first.logits[chosen][None], multimask=False
    )
    np.testing.assert_array_equal(again.masks[0], first.masks[chosen])
    # a mask alone snaps to the superpixels it covers
    only = engine.predict(mask_input=first.logits[chosen])
    assert iou(only.masks[0], first.masks[chosen]) >= 0.95


def test_masks_at_any_size_match_the_full_masks(scene):
    x, y = scene["clicks"]["ring"]
    pred = scene["engine"].predict(points=[(x, y)], labels=[1])
    small = pred.masks_at(150, 200)
    assert small.shape == (3, 150, 200)
    # both are sampled from the same 384x512 working-resolution regions
    assert (small == pred.masks[:, 1::2, 1::2]).mean() >= 0.99


def test_large_images_are_worked_on_at_reduced_resolution():
    rng = np.random.default_rng(1)
    big = np.clip(textured_background(rng), 0, 255).astype(np.uint8)
    big = np.kron(big, np.ones((4, 4, 1), dtype=np.uint8))  # 1200 x 1600
    yy, xx = np.mgrid[0 : big.shape[0], 0 : big.shape[1]]
    disk = np.hypot(xx - 800, yy - 600) <= 300
    big[disk] = (200, 40, 40)
    engine = ClassicPredictor(working_size=256)
    engine.set_image(big)
    assert engine.image_shape == big.shape[:2]
    pred = engine.predict(points=[(800, 600)], labels=[1])
    assert pred.masks.shape == (3, *big.shape[:2])
    # boundaries are placed at the working resolution (192 x 256 here, one working pixel is
    # 6.25 image pixels), so a few image pixels along the edge may go either way
    assert max(iou(m, disk) for m in pred.masks) >= 0.95


def test_a_new_image_does_not_change_earlier_predictions(scene):
    engine = ClassicPredictor(n_segments=300)
    engine.set_image(scene["image"])
    x, y = scene["clicks"]["disk"]
    pred = engine.predict(points=[(x, y)], labels=[1])
    engine.set_image(scene["image"][:100, :120])
    assert pred.masks.shape == (3, H, W)
    assert engine.image_shape == (100, 120)


def test_accepts_gray_and_float_images_through_images_to_rgb():
    gray = np.zeros((60, 80), dtype=np.float32)
    gray[20:40, 30:50] = 1.0
    engine = ClassicPredictor()
    engine.set_image(gray)
    pred = engine.predict(points=[(40, 30)], labels=[1])
    truth = np.zeros((60, 80), dtype=bool)
    truth[20:40, 30:50] = True
    assert max(iou(m, truth) for m in pred.masks) >= 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to segment"),
        ({"points": [(10, 10)]}, "need labels"),
        ({"points": [(10, 10)], "labels": [1, 0]}, "labels of shape"),
        ({"points": [(10, 10)], "labels": [2]}, "1 (foreground) or 0"),
        ({"points": [(10, 10, 3)], "labels": [1]}, "(K, 2)"),
        ({"points": [(float("nan"), 10)], "labels": [1]}, "NaN"),
        ({"points": [(W + 5, 10)], "labels": [1]}, "outside the 400x300 image"),
        ({"points": [(-1, 10)], "labels": [1]}, "outside"),
        ({"labels": [1]}, "labels were given without points"),
        ({"box": (50, 50, 20, 80)}, "x0 < x1 and y0 < y1"),
        ({"box": (1, 2, 3)}, "(x0, y0, x1, y1)"),
        ({"box": (W + 10, 0, W + 20, 10)}, "outside"),
        ({"box": (0, 0, float("inf"), 10)}, "infinite"),
        ({"points": [(10, 10)], "labels": [1], "mask_input": np.zeros((64, 64))}, "256"),
    ],
)
def test_bad_prompts_say_what_is_wrong(scene, kwargs, message):
    with pytest.raises(ValueError) as err:
        scene["engine"].predict(**kwargs)
    assert message in str(err.value)


def test_predict_before_set_image_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"set_image\(image\)"):
        ClassicPredictor().predict(points=[(1, 1)], labels=[1])


def test_constructor_is_keyword_only_and_checks_its_arguments():
    with pytest.raises(TypeError):
        ClassicPredictor(512)  # type: ignore[misc]
    with pytest.raises(ValueError, match="working_size"):
        ClassicPredictor(working_size=4)


def test_classic_handles_answer_for_their_own_image():
    from sam_widget.classic import ClassicPredictor

    rng = np.random.default_rng(3)
    first = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    first[10:40, 10:40] = (250, 20, 20)
    second = np.ascontiguousarray(first[:, ::-1])
    p = ClassicPredictor(working_size=64, n_segments=60)
    handle = p.encode(first)
    p.set_image(first)
    alone = p.predict(points=[(20, 20)], labels=[1]).masks
    p.set_image(second)
    np.testing.assert_array_equal(p.predict(points=[(20, 20)], labels=[1], image=handle).masks,
                                  alone)
    with pytest.raises(ValueError, match="handle"):
        p.predict(points=[(20, 20)], labels=[1], image=first)
