"""Dataset exports (sam_widget.export_dataset): COCO read back by pycocotools, YOLO-seg polygons
that rasterise back to the masks, label PNGs, the prompt log, resume (folder and COCO json) with
an exact round trip, atomic files, names that cannot leave the folder.

The dataset is three small synthetic images; their objects have holes and several parts (the
hard cases for polygons), one has no label, one image has no objects.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from matplotlib.path import Path as MplPath
from PIL import Image
from pycocotools.coco import COCO

import sam_widget as sw
from sam_widget import export, export_dataset
from tests.test_export import _disc, _DiscEngine

LABELS = ["cell", "debris"]


def _dataset():
    images = [
        {"file_name": "plate_a.png", "height": 48, "width": 64},
        {"file_name": "plate_b.tif", "height": 40, "width": 40},
        {"file_name": "sub/plate_c.jpg", "height": 56, "width": 72},
    ]
    ring = _disc(48, 64, 24, 30, 18) & ~_disc(48, 64, 24, 30, 7)
    parts = _disc(48, 64, 8, 52, 6) | _disc(48, 64, 38, 55, 7)
    box = np.zeros((56, 72), bool)
    box[5:50, 10:66] = True
    box[15:25, 20:30] = False
    box[30:42, 40:60] = False
    blob = _disc(56, 72, 28, 36, 20)
    annotations = {
        0: [
            {
                "mask": ring,
                "label": "cell",
                "score": 0.91,
                "points": [[30, 12, 1]],
                "box": None,
                "steps": [{"points": [[30, 12, 1]], "box": None, "selected": 2}],
            },
            {
                "mask": parts,
                "label": None,
                "score": 0.5,
                "points": [[52, 8, 1], [55, 38, 1]],
                "box": None,
                "steps": [],
            },
        ],
        2: [
            {
                "mask": box,
                "label": "debris",
                "score": 0.77,
                "points": [],
                "box": [10, 5, 65, 49],
                "steps": [{"points": [], "box": [10, 5, 65, 49]}],
            },
            {
                "mask": blob,
                "label": "cell",
                "score": None,
                "points": [[36, 28, 1]],
                "box": None,
                "steps": None,
            },
        ],
    }
    return images, annotations


def _rasterize_ring(xy: np.ndarray, shape) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    return MplPath(xy).contains_points(centres).reshape(h, w)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.fixture
def saved(tmp_path):
    images, annotations = _dataset()
    folder = export.save_dataset(
        tmp_path / "out.v2",
        images,
        annotations,
        LABELS,
        prompt_log={"engine": "disc", "refine": True},
    )
    return folder, images, annotations


def test_coco_loads_in_pycocotools_and_decodes_to_the_masks(saved):
    folder, images, annotations = saved
    coco = COCO(str(folder / "annotations.json"))
    assert [coco.imgs[i + 1]["file_name"] for i in range(3)] == [e["file_name"] for e in images]
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert names == {1: "cell", 2: "debris", 3: "object"}  # "object": the unlabeled category
    for index, objects in annotations.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[index + 1]))
        assert len(anns) == len(objects)
        for ann, obj in zip(anns, objects, strict=True):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), obj["mask"])
            assert names[ann["category_id"]] == (obj["label"] or "object")
            assert ann["iscrowd"] == 0 and ann["area"] == int(obj["mask"].sum())
            assert ann["bbox"] == export.mask_bbox(obj["mask"])
            assert ann["score"] == obj["score"]
            assert ann["prompts"]["points"] == obj["points"]
    assert coco.getAnnIds(imgIds=[2]) == []
    # the dict itself is the same as the file, and sw.export reaches the dataset functions
    assert sw.export.dataset_to_coco is export_dataset.dataset_to_coco
    on_disk = json.loads((folder / "annotations.json").read_text())
    assert on_disk == export.dataset_to_coco(images, annotations, LABELS)


def test_yolo_seg_polygons_rasterise_back_to_the_masks(saved):
    folder, images, annotations = saved
    data = yaml.safe_load((folder / "data.yaml").read_text())
    assert data["names"] == {0: "cell", 1: "debris", 2: "object"} and data["nc"] == 3
    # plate_b has no objects: no label file (YOLO reads that as "no objects")
    assert sorted(p.name for p in (folder / "labels").iterdir()) == ["plate_a.txt", "plate_c.txt"]
    for index, objects in annotations.items():
        entry = images[index]
        stem = entry["file_name"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        lines = (folder / "labels" / f"{stem}.txt").read_text().splitlines()
        assert len(lines) == len(objects)
        for line, obj in zip(lines, objects, strict=True):
            values = line.split()
            assert data["names"][int(values[0])] == (obj["label"] or "object")
            xy = np.array(values[1:], dtype=float).reshape(-1, 2)
            assert (xy >= 0).all() and (xy <= 1).all()
            xy *= [entry["width"], entry["height"]]
            got = _rasterize_ring(xy, obj["mask"].shape)
            assert _iou(got, obj["mask"]) >= 0.95, (index, _iou(got, obj["mask"]))
            # the holes stay holes: no pixel of a hole is filled
            hole_pixels = ~obj["mask"] & _rasterize_ring(
                export.to_polygons(obj["mask"])[0][0], obj["mask"].shape
            )
            assert (got & hole_pixels).sum() <= 0.05 * hole_pixels.sum() + 4


def test_label_pngs_and_the_prompt_log(saved):
    folder, images, annotations = saved
    a = np.asarray(Image.open(folder / "masks" / "plate_a.png"))
    assert a.shape == (48, 64) and a.dtype == np.uint8
    assert set(np.unique(a)) == {0, 1, 2}
    np.testing.assert_array_equal(a == 1, annotations[0][0]["mask"] & ~annotations[0][1]["mask"])
    assert sorted(p.name for p in (folder / "masks").iterdir()) == ["plate_a.png", "plate_c.png"]
    log = json.loads((folder / "prompts.json").read_text())
    assert log["kind"] == "dataset" and log["labels"] == LABELS
    assert log["engine"] == "disc" and log["refine"] is True
    assert [e["stem"] for e in log["images"]] == ["plate_a", "plate_b", "plate_c"]
    assert log["images"][2]["objects"][0] == {
        "id": 3,
        "label": "debris",
        "score": 0.77,
        "prompts": {
            "points": [],
            "box": [10, 5, 65, 49],
            "steps": [{"points": [], "box": [10, 5, 65, 49]}],
        },
    }


@pytest.mark.parametrize("via", ["folder", "coco json"])
def test_resume_round_trips_exactly(saved, tmp_path, via):
    folder, images, annotations = saved
    source = folder if via == "folder" else folder / "annotations.json"
    names = [e["file_name"] for e in images]
    loaded, labels = export.load_annotations(source, names)
    assert labels == LABELS
    assert sorted(loaded) == [0, 2]
    for index, objects in annotations.items():
        for got, want in zip(loaded[index], objects, strict=True):
            assert set(got) == {"mask", "label", "score", "points", "box", "steps", "source"}
            assert got["source"] == want.get("source")
            np.testing.assert_array_equal(got["mask"], want["mask"])
            assert (got["label"], got["score"], got["points"], got["box"], got["steps"]) == (
                want["label"],
                want["score"],
                want["points"],
                want["box"],
                want["steps"],
            )
    again = export.save_dataset(tmp_path / "again", images, loaded, labels)
    assert (again / "annotations.json").read_bytes() == (folder / "annotations.json").read_bytes()
    for sub in ("labels", "masks"):
        for path in (folder / sub).iterdir():
            assert (again / sub / path.name).read_bytes() == path.read_bytes()


def test_resume_matches_by_file_name_and_warns_about_strangers(saved):
    folder, images, annotations = saved
    # another order, base names only, and one image of the file is not in this dataset
    names = ["plate_c.jpg", "extra.png", "plate_a.png"]
    with pytest.warns(UserWarning, match="1 annotated image.*plate_b.tif"):
        loaded, _ = export.load_annotations(folder, names)
    assert sorted(loaded) == [0, 2]
    np.testing.assert_array_equal(loaded[0][0]["mask"], annotations[2][0]["mask"])
    np.testing.assert_array_equal(loaded[2][1]["mask"], annotations[0][1]["mask"])


def test_resume_reads_polygon_coco_files_of_other_tools(tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "x.png", "height": 20, "width": 30}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 4,
                "iscrowd": 0,
                "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]],
                "area": 80,
                "bbox": [2, 2, 10, 8],
            }
        ],
        "categories": [{"id": 4, "name": "leaf"}],
    }
    path = tmp_path / "other.json"
    path.write_text(json.dumps(coco))
    loaded, labels = export.load_annotations(path, ["x.png"])
    assert labels == ["leaf"]
    obj = loaded[0][0]
    assert obj["label"] == "leaf" and obj["score"] is None and obj["steps"] is None
    assert obj["mask"][3:10, 3:12].all() and not obj["mask"][12:].any()


def test_an_exception_mid_save_leaves_no_half_written_file(saved, monkeypatch):
    folder, images, annotations = saved
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    changed = {k: [dict(o, score=0.1) for o in v] for k, v in annotations.items()}

    class DiskFull:
        """The temporary file fills the disk half-way through the 4th file written."""

        def __init__(self, f):
            self.f, self.name = f, f.name

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")

    real = export._open_temp
    calls = []

    def open_temp(path):
        calls.append(path.name)
        f = real(path)
        return DiskFull(f) if len(calls) == 4 else f

    monkeypatch.setattr(export, "_open_temp", open_temp)
    with pytest.raises(OSError, match="No space"):
        export.save_dataset(folder, images, changed, LABELS)
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert set(after) == set(before)  # no temporary file left behind
    assert after[folder / "annotations.json"] == before[folder / "annotations.json"]
    # the file being written when the disk filled is its old, complete self
    failed = folder / "masks" / calls[3]
    assert after[failed] == before[failed]

    # an exception before writing (a mask of the wrong size) writes nothing at all
    monkeypatch.setattr(export, "_open_temp", real)
    bad = {0: [dict(annotations[0][0], mask=np.ones((5, 5), bool))]}
    with pytest.raises(ValueError, match=r"annotations\[0\]\[0\]\['mask'\] is \(5, 5\)"):
        export.save_dataset(folder / "new", images, bad, LABELS)
    assert not (folder / "new").exists()


def test_file_names_cannot_escape_the_folder_and_duplicates_get_their_own_stem(tmp_path):
    names = [
        "../../evil.png",
        "a/../../../b.png",
        "..",
        "C:\\x\\..\\y.png",
        "con.png",
        "same.png",
        "same.jpg",
        "SAME.tif",
        ".hidden.png",
        "ok name (1).png",
    ]
    images = [{"file_name": n, "height": 4, "width": 4} for n in names]
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    annotations = {i: [{"mask": mask, "label": None}] for i in range(len(names))}
    out = tmp_path / "deep" / "out"
    export.save_dataset(out, images, annotations, [])
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.txt"))
    assert all(p.startswith("deep/out/labels/") for p in written)
    stems = [e["stem"] for e in json.loads((out / "prompts.json").read_text())["images"]]
    assert stems == [
        "evil",
        "b",
        "image-3",
        "y",
        "_con",
        "same",
        "same-2",
        "SAME-3",
        "hidden",
        "ok name _1_",
    ]
    loaded, _ = export.load_annotations(out, names)
    assert sorted(loaded) == list(range(len(names)))


def test_replay_recomputes_every_object(tmp_path):
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(2)]
    engine = _DiscEngine()
    engine.set_image(pictures[1])
    first = engine.predict(np.array([[20, 20]]), np.array([1]), None, None, True)
    images = [{"file_name": f"p{i}.png", "height": 40, "width": 50} for i in range(2)]
    annotations = {
        1: [
            {
                "mask": first.masks[2],
                "label": "cell",
                "score": 0.5,
                "points": [[20, 20, 1]],
                "box": None,
                "steps": [{"points": [[20, 20, 1]], "box": None, "selected": 2}],
            }
        ]
    }
    folder = export.save_dataset(tmp_path / "o", images, annotations, ["cell"])
    replayed = export.replay_dataset(folder, _DiscEngine(), pictures)
    assert list(replayed) == [1]
    np.testing.assert_array_equal(replayed[1][0], first.masks[2])
    by_name = export.replay_dataset(folder / "prompts.json", _DiscEngine(), {"p1.png": pictures[1]})
    np.testing.assert_array_equal(by_name[1][0], first.masks[2])
    with pytest.raises(ValueError, match="not the same image"):
        export.replay_dataset(folder, _DiscEngine(), [pictures[0], pictures[1][:30]])


def test_bad_input_is_refused_with_the_argument_named():
    images, annotations = _dataset()
    with pytest.raises(ValueError, match=r"'plant', which is not in \['cell', 'debris'\]"):
        export.dataset_to_coco(images, {0: [dict(annotations[0][0], label="plant")]}, LABELS)
    with pytest.raises(ValueError, match="image index 5, but there are 3 images"):
        export.dataset_to_coco(images, {5: []}, LABELS)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        export.dataset_to_coco([images[0], {"file_name": "x"}], {}, LABELS)
    with pytest.raises(ValueError, match="distinct"):
        export.dataset_to_coco(images, {}, ["a", "a"])
    # nothing to export: every image listed, no annotations, the labels as categories
    empty = export.dataset_to_coco(images, {0: [{"mask": np.zeros((48, 64), bool)}]}, LABELS)
    assert empty["annotations"] == [] and len(empty["images"]) == 3
    assert [c["name"] for c in empty["categories"]] == LABELS


def test_a_later_save_removes_the_files_of_images_that_lost_their_objects(saved):
    folder, images, annotations = saved
    export.save_dataset(folder, images, {2: annotations[2]}, LABELS)
    assert [p.name for p in (folder / "labels").iterdir()] == ["plate_c.txt"]
    assert [p.name for p in (folder / "masks").iterdir()] == ["plate_c.png"]
    loaded, _ = export.load_annotations(folder, [e["file_name"] for e in images])
    assert sorted(loaded) == [2]
    with pytest.raises(ValueError, match="writes a folder, not 'coco.json'"):
        export.save_dataset(folder / "coco.json", images, annotations, LABELS)
