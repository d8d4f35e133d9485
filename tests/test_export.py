"""Exports (sam_widget.export): RLE identical to pycocotools', COCO fields, polygons with
holes, label images, cut-outs and ``save``.

pycocotools is the reference (test-only dependency): every mask below is encoded by both, the
strings must be equal, and pycocotools must decode ours to exactly the mask.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pycocotools.mask as coco_mask
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image

from sam_widget import export


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    h, w = 61, 83
    ring = _disc(h, w, 30, 40, 25) & ~_disc(h, w, 30, 40, 12)
    two_holes = np.zeros((h, w), bool)
    two_holes[5:55, 5:75] = True
    two_holes[15:25, 15:30] = False
    two_holes[30:45, 45:65] = False
    parts = _disc(h, w, 10, 10, 6) | _disc(h, w, 45, 60, 9)
    parts[55:60, 0:5] = True
    border = np.zeros((h, w), bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    corners = np.zeros((h, w), bool)
    corners[0, 0] = corners[0, -1] = corners[-1, 0] = corners[-1, -1] = True
    big = np.zeros((700, 900), bool)  # long runs: counts need several 5-bit groups
    big[100:650, 50:880] = True
    big[300, 400] = False
    return {
        "ring_with_hole": ring,
        "two_holes": two_holes,
        "several_parts": parts,
        "border_pixels": border,
        "corner_pixels": corners,
        "noise": rng.random((h, w)) < 0.5,
        "sparse_noise": rng.random((h, w)) < 0.03,
        "empty": np.zeros((h, w), bool),
        "full": np.ones((h, w), bool),
        "single_pixel": np.pad(np.ones((1, 1), bool), ((7, 3), (2, 9))),
        "one_row": rng.random((1, 50)) < 0.5,
        "one_column": rng.random((50, 1)) < 0.5,
        "large_runs": big,
        "alternating_columns": np.tile(np.arange(83) % 2 == 0, (61, 1)),
    }


MASKS = _masks()


@pytest.mark.parametrize("name", sorted(MASKS))
def test_rle_is_byte_identical_to_pycocotools_and_decodes_exactly(name):
    mask = MASKS[name]
    ours = export.encode_rle(mask)
    theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["size"] == [mask.shape[0], mask.shape[1]] == list(theirs["size"])
    assert ours["counts"] == theirs["counts"].decode("ascii")
    decoded = coco_mask.decode({"size": ours["size"], "counts": ours["counts"].encode()})
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded.astype(bool), mask)
    np.testing.assert_array_equal(export.decode_rle(ours), mask)
    np.testing.assert_array_equal(export.decode_rle(theirs), mask)  # bytes counts too
    assert export.rle_area(ours) == int(coco_mask.area(theirs)) == int(mask.sum())


@pytest.mark.parametrize("name", sorted(MASKS))
def test_coco_area_and_bbox_agree_with_pycocotools(name):
    mask = MASKS[name]
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert export.mask_bbox(mask) == [float(v) for v in coco_mask.toBbox(rle)]
    assert export.rle_area(export.encode_rle(mask)) == int(coco_mask.area(rle))
    coco = export.to_coco(mask[None], scores=[0.5])
    if not mask.any():  # an empty mask is no object
        assert coco["annotations"] == []
        return
    (ann,) = coco["annotations"]
    assert ann["area"] == int(coco_mask.area(rle))
    assert ann["bbox"] == [float(v) for v in coco_mask.toBbox(rle)]
    json.dumps(coco)  # plain JSON types only


def test_decode_uncompressed_rle_and_reject_inconsistent_counts():
    mask = MASKS["several_parts"]
    uncompressed = {"size": list(mask.shape), "counts": export._run_lengths(mask).tolist()}
    np.testing.assert_array_equal(export.decode_rle(uncompressed), mask)
    compressed = coco_mask.frPyObjects(uncompressed, *mask.shape)
    assert export.encode_rle(mask)["counts"] == compressed["counts"].decode()
    with pytest.raises(ValueError, match="add up to"):
        export.decode_rle({"size": [3, 3], "counts": [1, 2]})
    with pytest.raises(ValueError, match="not a compressed COCO RLE"):
        export.decode_rle({"size": [3, 3], "counts": "9 9"})


def test_random_masks_roundtrip_many_shapes():
    rng = np.random.default_rng(1)
    for _ in range(50):
        h, w = rng.integers(1, 40, size=2)
        density = rng.random()
        mask = rng.random((h, w)) < density
        ours = export.encode_rle(mask)["counts"]
        theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        assert ours == theirs


def test_to_coco_carries_scores_prompts_and_image_entry():
    masks = np.stack([MASKS["ring_with_hole"], MASKS["several_parts"]])
    prompts = [
        {"points": [[40, 30, 1]], "box": None},
        {"points": [[10, 10, 1], [40, 30, 0]], "box": [0, 0, 80, 60]},
    ]
    coco = export.to_coco(
        masks,
        scores=np.array([0.9, 0.7], np.float32),
        prompts=prompts,
        image_id=7,
        file_name="cat.jpg",
    )
    assert coco["images"] == [{"id": 7, "file_name": "cat.jpg", "height": 61, "width": 83}]
    assert [a["id"] for a in coco["annotations"]] == [1, 2]
    assert all(a["image_id"] == 7 and a["iscrowd"] == 0 for a in coco["annotations"])
    assert coco["annotations"][0]["score"] == pytest.approx(0.9)
    assert coco["annotations"][1]["prompts"] == prompts[1]
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    # pycocotools reads the whole thing back as a dataset
    from pycocotools.coco import COCO

    dataset = COCO()
    dataset.dataset = json.loads(json.dumps(coco))
    dataset.createIndex()
    np.testing.assert_array_equal(dataset.annToMask(dataset.loadAnns(2)[0]), masks[1])


def test_to_coco_reads_automatic_generator_records():
    records = [
        {"segmentation": MASKS["two_holes"], "predicted_iou": 0.8, "point_coords": [[12.0, 5.0]]},
        {
            "segmentation": export.encode_rle(MASKS["noise"]),
            "predicted_iou": 0.6,
            "point_coords": [[1.0, 2.0]],
        },
    ]
    coco = export.to_coco(records)
    first, second = coco["annotations"]
    assert first["score"] == pytest.approx(0.8)
    assert first["prompts"] == {"points": [[12.0, 5.0, 1]]}
    np.testing.assert_array_equal(export.decode_rle(second["segmentation"]), MASKS["noise"])


def test_to_coco_rejects_mismatched_lengths_and_sizes():
    masks = np.zeros((2, 4, 4), bool)
    with pytest.raises(ValueError, match="got 3 scores for 2 masks"):
        export.to_coco(masks, scores=[1, 2, 3])
    with pytest.raises(ValueError, match="got 1 prompts for 2 masks"):
        export.to_coco(masks, prompts=[{}])
    with pytest.raises(ValueError, match="same size"):
        export.to_coco([np.zeros((4, 4)), np.zeros((5, 4))])


# ---------------------------------------------------------------------------- polygons


def _rasterize(polygons, shape):
    """Fill polygons with holes at pixel centres (even-odd over all rings)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    inside = np.zeros(h * w, bool)
    for polygon in polygons:
        for ring in polygon:
            inside ^= MplPath(ring).contains_points(centres)
    return inside.reshape(h, w)


@pytest.mark.parametrize(
    "name", ["ring_with_hole", "two_holes", "several_parts", "border_pixels", "full"]
)
def test_polygons_with_holes_rasterize_back_to_the_mask(name):
    mask = MASKS[name]
    polygons = export.to_polygons(mask)
    np.testing.assert_array_equal(_rasterize(polygons, mask.shape), mask)


def test_polygon_structure_exteriors_and_holes():
    polygons = export.to_polygons(MASKS["two_holes"])
    assert len(polygons) == 1 and len(polygons[0]) == 3  # one part, two holes
    outer, *holes = polygons[0]
    assert outer[:, 0].min() == pytest.approx(5.0, abs=0.51)
    assert outer[:, 0].max() == pytest.approx(75.0, abs=0.51)
    # exterior and holes wind in opposite directions
    signs = {np.sign(export._signed_area(r)) for r in holes}
    assert signs == {-np.sign(export._signed_area(outer))}
    # a rectangle needs few vertices: collinear points were dropped
    assert len(outer) <= 8
    assert len(export.to_polygons(MASKS["several_parts"])) == 3
    assert export.to_polygons(MASKS["empty"]) == []


# ---------------------------------------------------------------------------- label image


def test_label_image_ids_and_png():
    a = np.zeros((10, 12), bool)
    a[1:5, 1:5] = True
    b = np.zeros((10, 12), bool)
    b[3:8, 3:9] = True
    labels = export.label_image([a, b])
    assert labels.dtype == np.uint8
    assert labels[0, 0] == 0 and labels[1, 1] == 1 and labels[4, 4] == 2 and labels[7, 8] == 2
    png = export.label_image([a, b], png=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), labels)


def test_label_image_goes_16_bit_beyond_255_objects():
    masks = np.zeros((300, 4, 75), bool)
    for i in range(300):
        masks[i].flat[i] = True
    labels = export.label_image(masks)
    assert labels.dtype == np.uint16 and labels.max() == 300
    decoded = np.asarray(Image.open(io.BytesIO(export.label_image(masks, png=True))))
    np.testing.assert_array_equal(decoded.astype(np.uint16), labels)


# ---------------------------------------------------------------------------- cut-outs, save


def test_cutout_is_rgba_cropped_to_the_mask():
    image = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:16] = True
    mask[6, 12] = False
    rgba = export.cutout(image, mask)
    assert rgba.shape == (4, 6, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., 3], np.where(mask[5:9, 10:16], 255, 0))
    np.testing.assert_array_equal(rgba[0, 0, :3], image[5, 10])
    assert (rgba[1, 2] == 0).all()  # the hole is transparent black
    full = export.cutout(image, mask, crop=False)
    assert full.shape == (20, 30, 4)
    with pytest.raises(ValueError, match="differ in size"):
        export.cutout(image, mask[:10])


def test_save_writes_every_format(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    masks = [MASKS["ring_with_hole"], MASKS["several_parts"]]
    prompts = [{"points": [[40, 30, 1]], "box": None}, {"points": [], "box": [1, 2, 70, 50]}]
    log = [{"event": "add_point", "x": 40, "y": 30, "label": 1}, {"event": "commit"}]
    paths = export.save(tmp_path / "out", image, masks, scores=[0.9, 0.8], prompts=prompts, log=log)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations.json",
        "cutouts",
        "image.png",
        "labels.png",
        "polygons.json",
        "prompts.json",
    ]
    np.testing.assert_array_equal(np.asarray(Image.open(paths["image"])), image)
    coco = json.loads(paths["annotations"].read_text())
    for ann, mask in zip(coco["annotations"], masks, strict=True):
        np.testing.assert_array_equal(
            coco_mask.decode(
                {
                    "size": ann["segmentation"]["size"],
                    "counts": ann["segmentation"]["counts"].encode(),
                }
            ).astype(bool),
            mask,
        )
    labels = np.asarray(Image.open(paths["labels"]))
    assert set(np.unique(labels)) == {0, 1, 2}
    cut = np.asarray(Image.open(out / "cutouts" / "object_002.png"))
    assert cut.shape[2] == 4
    polygons = json.loads(paths["polygons"].read_text())
    assert [p["id"] for p in polygons] == [1, 2] and len(polygons[1]["polygons"]) == 3
    rings = [[np.array(r) for r in poly] for poly in polygons[0]["polygons"]]
    np.testing.assert_array_equal(_rasterize(rings, masks[0].shape), masks[0])
    log_json = json.loads(paths["prompts"].read_text())
    assert log_json["objects"][1] == {"id": 2, "prompts": prompts[1], "score": 0.8}
    assert log_json["log"] == log
    assert log_json["image"]["width"] == 83 and len(log_json["image"]["sha256"]) == 64


def test_save_rejects_masks_of_another_size(tmp_path):
    with pytest.raises(ValueError, match="the image is"):
        export.save(tmp_path, np.zeros((10, 10, 3), np.uint8), [np.zeros((9, 10), bool)])


# ---------------------------------------------------------------------------- replay


class _DiscEngine:
    """A tiny deterministic engine following the Engine protocol: candidate k is the disc of
    radius 6 * (k + 1) around the mean foreground point, minus discs around background
    points; with a box, candidates are clipped to it; mask_input widens every disc by 2."""

    name = "disc"
    device = "cpu"

    def __init__(self):
        self.image_shape = None
        self.calls = []

    def set_image(self, image):
        self.image_shape = np.asarray(image).shape[:2]

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True):
        from sam_widget.predictor import Prediction

        self.calls.append((points, labels, box, mask_input is not None, multimask))
        h, w = self.image_shape
        yy, xx = np.mgrid[:h, :w]
        grow = 2 if mask_input is not None else 0
        n = 3 if multimask else 1
        masks = np.zeros((n, h, w), bool)
        pts = np.zeros((0, 2)) if points is None else np.asarray(points)
        labs = np.zeros(0) if labels is None else np.asarray(labels)
        for k in range(n):
            r = 6 * (k + 1) + grow
            fg = pts[labs == 1]
            if len(fg):
                cx, cy = fg.mean(axis=0)
                masks[k] = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            elif box is not None:
                masks[k] = True
            for bx, by in pts[labs == 0]:
                masks[k] &= (xx - bx) ** 2 + (yy - by) ** 2 > 16
            if box is not None:
                x0, y0, x1, y1 = box
                masks[k] &= (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        scores = np.array([0.5, 0.9, 0.7][:n])
        logits = masks.astype(np.float32)[:, :4, :4]
        return Prediction(scores, logits, (h, w), lambda shape: masks)


def test_saved_prompt_log_replays_to_the_same_objects(tmp_path):
    image = np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    engine = _DiscEngine()
    engine.set_image(image)
    prompts = [
        {"points": [[20, 20, 1]], "box": None, "multimask": True, "selected": 2},
        {"points": [[50, 30, 1], [55, 30, 0]], "box": [40, 20, 70, 45], "multimask": False},
        {
            "steps": [
                {"points": [[30, 40, 1]], "box": None, "selected": 0},
                {"points": [[30, 40, 1], [34, 40, 0]], "box": None, "selected": 1},
            ]
        },
    ]
    first = engine.predict(np.array([[20, 20]]), np.array([1]), None, None, True).masks[2]
    second = engine.predict(
        np.array([[50, 30], [55, 30]]), np.array([1, 0]), np.array([40, 20, 70, 45]), None, False
    ).masks[0]
    step = engine.predict(np.array([[30, 40]]), np.array([1]), None, None, True)
    third = engine.predict(
        np.array([[30, 40], [34, 40]]), np.array([1, 0]), None, step.logits[:1], True
    ).masks[1]
    objects = [first, second, third]
    export.save(tmp_path, image, objects, scores=[0.7, 0.5, 0.9], prompts=prompts)

    replayer = _DiscEngine()
    replayed = export.replay(tmp_path, replayer)
    assert len(replayed) == 3
    for got, want in zip(replayed, objects, strict=True):
        np.testing.assert_array_equal(got, want)
    assert [c[3] for c in replayer.calls] == [False, False, False, True]  # refined step chained
    assert replayer.calls[1][4] is False  # multimask honoured

    # the same log on another image is refused
    with pytest.raises(ValueError, match="not the image"):
        export.replay(tmp_path / "prompts.json", _DiscEngine(), image=image[::-1])
    # a default "selected" picks the best score
    best = export.replay(
        {"image": {}, "objects": [{"prompts": {"points": [[20, 20, 1]], "box": None}}]},
        _DiscEngine(),
        image=image,
    )[0]
    by_score = engine.predict(np.array([[20, 20]]), np.array([1]), None, None, True)
    np.testing.assert_array_equal(best, by_score.masks[by_score.best])


# ---------------------------------------------------------------------------- files in and out


def test_to_coco_with_nothing_to_export_has_no_annotations():
    for nothing in (np.zeros((1, 20, 30), bool), np.zeros((0, 20, 30), bool)):
        coco = export.to_coco(nothing, scores=[0.5] * len(nothing))
        assert coco["annotations"] == []
        assert (coco["images"][0]["height"], coco["images"][0]["width"]) == (20, 30)
    assert export.to_coco([], image_size=(20, 30))["images"][0]["width"] == 30
    # an empty mask among real ones is left out with its score and prompt
    two = np.zeros((2, 20, 30), bool)
    two[1, 3, 4] = True
    coco = export.to_coco(two, scores=[0.1, 0.9], prompts=[{"a": 1}, {"b": 2}])
    assert [(a["id"], a["score"], a["prompts"]) for a in coco["annotations"]] == [
        (1, 0.9, {"b": 2})
    ]


@pytest.mark.parametrize("nothing", ["no objects", "empty masks"])
def test_save_with_nothing_writes_a_complete_replayable_folder(tmp_path, nothing):
    image = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    masks = [] if nothing == "no objects" else np.zeros((2, 24, 32), bool)
    export.save(tmp_path / "out", image, masks)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations.json",
        "cutouts",
        "image.png",
        "labels.png",
        "polygons.json",
        "prompts.json",
    ]
    assert list((out / "cutouts").iterdir()) == []
    labels = np.asarray(Image.open(out / "labels.png"))
    assert labels.shape == (24, 32) and not labels.any()
    coco = json.loads((out / "annotations.json").read_text())
    assert coco["annotations"] == [] and coco["images"][0]["height"] == 24
    assert json.loads((out / "polygons.json").read_text()) == []
    assert export.replay(out, _DiscEngine()) == []


def test_a_smaller_save_into_the_same_folder_leaves_no_stale_cutouts(tmp_path):
    image = np.zeros((61, 83, 3), np.uint8)
    export.save(tmp_path, image, [MASKS["ring_with_hole"], MASKS["several_parts"]])
    export.save(tmp_path, image, [MASKS["two_holes"]])
    assert [p.name for p in (tmp_path / "cutouts").iterdir()] == ["object_001.png"]


@pytest.mark.parametrize("name", ["../evil.png", "sub/../../evil.png", "/tmp/evil.png", ""])
def test_save_refuses_file_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(ValueError, match="file_name"):
        export.save(tmp_path / "out", np.zeros((4, 4, 3), np.uint8), [], file_name=name)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()


def test_replay_refuses_a_log_that_points_outside_its_folder(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "secret.png")  # outside the export folder
    export.save(tmp_path / "out", image, [])
    log_path = tmp_path / "out" / "prompts.json"
    log = json.loads(log_path.read_text())
    log["image"]["file_name"] = "../secret.png"
    log_path.write_text(json.dumps(log))
    with pytest.raises(ValueError, match="points outside the folder"):
        export.replay(tmp_path / "out", _DiscEngine())


def test_target_kind_tells_folders_with_dots_from_files(tmp_path):
    assert export.target_kind(tmp_path / "run.v2") == "folder"
    assert export.target_kind(tmp_path / "2024.06.01") == "folder"
    assert export.target_kind(tmp_path / "masks") == "folder"
    assert export.target_kind(tmp_path / "coco.JSON") == "json"
    assert export.target_kind(tmp_path / "overlay.png") == "png"
    assert export.target_kind(f"{tmp_path}/new.json/") == "folder"  # a trailing separator
    (tmp_path / "old.json").mkdir()
    assert export.target_kind(tmp_path / "old.json") == "folder"  # an existing folder
    (tmp_path / "notes.v1").write_text("x")
    with pytest.raises(ValueError, match="existing file"):
        export.target_kind(tmp_path / "notes.v1")
    with pytest.raises(ValueError, match=r"suffix \.txt; use \.json, \.png, \.npy or \.npz"):
        export.target_kind(tmp_path / "m.txt")
