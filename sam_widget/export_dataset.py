"""Dataset exports: a whole annotated collection as COCO, YOLO-seg, label PNGs and a prompt log,
and back (resume).

The single-image pieces (RLE exactly as pycocotools writes it, polygons, label images, atomic
writes, safe names) live in ``sam_widget.export``; this module puts them together per dataset.
Its functions are reachable as ``sw.export.dataset_to_coco`` etc. as well.

The shapes everything here speaks:

- ``images``: a list of ``{"file_name": str, "height": int, "width": int}`` in dataset order;
  the COCO image id of entry ``i`` is ``i + 1``.
- ``annotations``: ``{index: [object, ...]}``; an object is a dict with "mask" (bool H x W, the
  image's size), "label" (one of ``labels``, or None), "score", "points", "box", "steps".
- ``labels``: the class names; category id of ``labels[k]`` is ``k + 1``.

Objects without a label go to one extra category named "object" (or "unlabeled" when a label
is already called "object") that carries ``"unlabeled": true``; it exists only when such
objects do, and ``load_annotations`` maps it back to ``label=None``. Objects whose mask is
empty are not written (COCO has no empty annotations; an empty mask shows nothing): a save ->
load -> save round trip is exact because the second save sees the same objects.

``save_dataset`` writes, each file atomically (``export.write_atomic``):

    annotations.json     COCO: images, annotations (RLE, bbox, area, iscrowd 0, category_id,
                         plus "score" and "prompts" that COCO readers ignore), categories
    labels/<stem>.txt    YOLO-seg: one line per object, ``class x1 y1 x2 y2 ...`` normalised
                         to 0..1 (class = position in data.yaml's names); an object with holes
                         or several parts is one polygon, its rings joined by zero-width
                         bridges (how Ultralytics' own COCO converter joins segments), which
                         every even-odd or non-zero rasteriser fills back to the mask
    data.yaml            the YOLO class names
    masks/<stem>.png     a label image: 0 background, object k of that image k + 1 (8-bit,
                         16-bit beyond 255 objects); overlaps: the later object wins
    prompts.json         the prompt log: per image its objects' prompts, labels and scores,
                         enough for ``replay_dataset`` to recompute every mask

Images without objects get no per-image files (they may just not be annotated yet).
``<stem>`` is the image's file name without its extension, made safe (``export.safe_file_name``:
nothing can escape the folder); two images with one stem get ``-2``, ``-3``...; prompts.json
records each image's stem. annotations.json is written last, so a folder whose annotations.json
exists is a finished save.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sam_widget.export import (
    _as_mask,
    _jsonable,
    _replay_objects,
    decode_rle,
    encode_rle,
    label_image,
    mask_bbox,
    safe_file_name,
    target_kind,
    to_polygons,
    write_atomic,
)

__all__ = ["dataset_to_coco", "save_dataset", "load_annotations", "replay_dataset"]

UNLABELED = "object"  # category name of objects without a label ("unlabeled" if taken)
COCO_FILE = "annotations.json"
PROMPTS_FILE = "prompts.json"

# --------------------------------------------------------------------------------------------
# validation


def _image_entries(images: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    entries = []
    for i, image in enumerate(images):
        try:
            name, h, w = image["file_name"], int(image["height"]), int(image["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f'images[{i}] must be {{"file_name": str, "height": int, "width": int}}, got '
                f"{str(image)[:200]}"
            ) from e
        if not isinstance(name, str) or h <= 0 or w <= 0:
            raise ValueError(f"images[{i}] needs a file name and a positive size, got {image}")
        entries.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    return entries


def _index(key: Any, n: int) -> int:
    try:
        index = int(key)
    except (TypeError, ValueError):
        raise ValueError(f"annotations keys are image indices, got {key!r}") from None
    if not 0 <= index < n:
        raise ValueError(f"annotations has image index {index}, but there are {n} images")
    return index


def _categories(labels: Sequence[str], any_unlabeled: bool) -> list[dict[str, Any]]:
    names = [str(label) for label in labels]
    if len(set(names)) != len(names):
        raise ValueError(f"labels must be distinct, got {names}")
    categories: list[dict[str, Any]] = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    if any_unlabeled:
        name = UNLABELED if UNLABELED not in names else "unlabeled"
        while name in names:
            name = "_" + name
        categories.append({"id": len(names) + 1, "name": name, "unlabeled": True})
    return categories


def _objects(
    images: list[dict[str, Any]],
    annotations: Mapping[Any, Sequence[Mapping[str, Any]]],
    labels: Sequence[str],
) -> Iterator[tuple[int, int, dict[str, Any], np.ndarray, int]]:
    """(image index, category index (0-based), object, mask, annotation id) in dataset order,
    leaving out empty masks."""
    label_ids = {str(name): k for k, name in enumerate(labels)}
    by_index = {_index(k, len(images)): objs for k, objs in annotations.items()}
    next_id = 1
    for index in sorted(by_index):
        entry = images[index]
        for j, obj in enumerate(by_index[index]):
            where = f"annotations[{index}][{j}]"
            if not isinstance(obj, Mapping) or "mask" not in obj:
                raise ValueError(f"{where} must be a dict with a 'mask'")
            mask = _as_mask(obj["mask"], f"{where}['mask']")
            if mask.shape != (entry["height"], entry["width"]):
                raise ValueError(
                    f"{where}['mask'] is {mask.shape}, but image {index} "
                    f"({entry['file_name']}) is {entry['height']} x {entry['width']}"
                )
            label = obj.get("label")
            if label is None:
                category = len(labels)
            elif str(label) in label_ids:
                category = label_ids[str(label)]
            else:
                raise ValueError(f"{where} has the label {label!r}, which is not in {list(labels)}")
            if not mask.any():
                continue
            yield index, category, obj, mask, next_id
            next_id += 1


def _score(value: Any) -> float | None:
    if value is None:
        return None
    score = float(value)
    return score if np.isfinite(score) else None


def _prompts(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "points": _jsonable(obj.get("points")),
        "box": _jsonable(obj.get("box")),
        "steps": _jsonable(obj.get("steps")),
    }


# --------------------------------------------------------------------------------------------
# COCO


def dataset_to_coco(
    images: Sequence[Mapping[str, Any]],
    annotations: Mapping[Any, Sequence[Mapping[str, Any]]],
    labels: Sequence[str],
) -> dict[str, Any]:
    """The whole dataset as one COCO dict (see the module docstring for the arguments).

    Annotations carry "segmentation" (compressed RLE, counts as str, byte for byte what
    pycocotools writes), "area", "bbox" [x, y, w, h], "iscrowd" 0, "category_id", and two
    fields COCO readers ignore: "score", "prompts" ({"points", "box", "steps"}) and "source"
    (where the object came from: "prompts", "everything", "proposal"..., or None).
    """
    entries = _image_entries(images)
    objects = list(_objects(entries, annotations, labels))
    categories = _categories(labels, any(item[1] == len(labels) for item in objects))
    coco_annotations = []
    for index, category, obj, mask, ann_id in objects:
        coco_annotations.append(
            {
                "id": ann_id,
                "image_id": index + 1,
                "category_id": category + 1,
                "segmentation": encode_rle(mask),
                "area": int(mask.sum()),
                "bbox": mask_bbox(mask),
                "iscrowd": 0,
                "score": _score(obj.get("score")),
                "prompts": _prompts(obj),
                "source": None if obj.get("source") is None else str(obj["source"]),
            }
        )
    return {
        "info": {"description": "annotations made with sam-widget"},
        "images": entries,
        "annotations": coco_annotations,
        "categories": categories,
    }


# --------------------------------------------------------------------------------------------
# YOLO-seg


def _bridge(ring: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``ring`` and ``other`` joined into one ring through their closest pair of vertices:
    ``ring[..i], other[j..], other[..j], ring[i..]``. The bridge is walked there and back, so it
    adds no area under either fill rule."""
    best = (np.inf, 0, 0)
    step = max(1, 1_000_000 // max(len(ring), 1))
    for start in range(0, len(other), step):
        chunk = other[start : start + step]
        d = ((ring[:, None, :] - chunk[None, :, :]) ** 2).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best[0]:
            best = (float(d[i, j]), int(i), int(start + j))
    _, i, j = best
    rolled = np.concatenate([other[j:], other[: j + 1]])
    return np.concatenate([ring[: i + 1], rolled, ring[i:]])


def _single_ring(mask: np.ndarray) -> np.ndarray | None:
    """The mask's outline as one ring (holes and parts bridged in), or None if empty."""
    polygons = to_polygons(mask)
    if not polygons:
        return None
    parts = []
    for outer, *holes in polygons:
        ring = outer
        for hole in holes:
            ring = _bridge(ring, hole)
        parts.append(ring)
    parts.sort(key=len, reverse=True)
    ring = parts[0]
    for part in parts[1:]:
        ring = _bridge(ring, part)
    return ring


def _yolo_lines(objects: list[tuple[int, np.ndarray]], height: int, width: int) -> str:
    lines = []
    for category, mask in objects:
        ring = _single_ring(mask)
        if ring is None:
            continue
        xy = np.clip(ring / np.array([width, height], dtype=np.float64), 0.0, 1.0)
        lines.append(f"{category} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
    return "".join(line + "\n" for line in lines)


def _data_yaml(names: list[str]) -> str:
    # JSON strings are valid YAML double-quoted scalars: no YAML writer needed
    lines = [
        "# YOLO-seg class names, written by sam-widget. Each labels/<image stem>.txt holds one",
        "# object per line: class x1 y1 x2 y2 ... (polygon vertices normalised to 0..1).",
        "# Add train: / val: entries pointing at your image folders to train on it.",
        f"nc: {len(names)}",
        "names:",
        *(f"  {k}: {json.dumps(name, ensure_ascii=False)}" for k, name in enumerate(names)),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# saving


def _stems(entries: list[dict[str, Any]]) -> list[str]:
    """A distinct, safe file stem per image (case-insensitively distinct, for macOS and
    Windows)."""
    used: set[str] = set()
    stems = []
    for entry in entries:
        name = safe_file_name(entry["file_name"], default=f"image-{entry['id']}")
        stem = name.rsplit(".", 1)[0] if "." in name else name
        stem = stem.rstrip(" .") or f"image-{entry['id']}"
        candidate, k = stem, 1
        while candidate.lower() in used:
            k += 1
            candidate = f"{stem}-{k}"
        used.add(candidate.lower())
        stems.append(candidate)
    return stems


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def save_dataset(
    folder: str | os.PathLike[str],
    images: Sequence[Mapping[str, Any]],
    annotations: Mapping[Any, Sequence[Mapping[str, Any]]],
    labels: Sequence[str],
    *,
    prompt_log: Mapping[str, Any] | None = None,
) -> Path:
    """Write the dataset's annotations to ``folder`` (created if needed; see the module
    docstring for the files) and return the folder.

    Everything is checked (sizes, labels, JSON-ability) before the first file is written;
    each file is then written atomically, annotations.json last. Files of an earlier save are
    replaced; an image without objects gets no per-image files (YOLO reads a missing label
    file as "no objects"), and those of an earlier save are removed. ``folder`` is always a
    folder, also with dots in its name; a .json / .png / .npy / .npz path is refused (write
    ``dataset_to_coco`` to a file for a COCO file alone).

    Args:
        prompt_log: extra JSON-able fields stored at the top of prompts.json (the engine's
            name, ``refine``, raw event logs...); they cannot replace its own keys.
    """
    if target_kind(folder) != "folder":
        raise ValueError(
            f"save_dataset writes a folder, not {Path(folder).name!r}; for one COCO file write "
            "json.dumps(dataset_to_coco(...)) to it"
        )
    folder = Path(folder)
    coco = dataset_to_coco(images, annotations, labels)
    entries = coco["images"]
    names = [c["name"] for c in coco["categories"]]
    stems = _stems(entries)
    per_image: dict[int, list[tuple[int, np.ndarray, dict[str, Any]]]] = {}
    for index, category, obj, mask, ann_id in _objects(entries, annotations, labels):
        per_image.setdefault(index, []).append((category, mask, {"id": ann_id, "obj": obj}))

    log: dict[str, Any] = {
        "version": 1,
        "kind": "dataset",
        "labels": [str(label) for label in labels],
        "images": [
            {
                "index": i,
                "file_name": entry["file_name"],
                "height": entry["height"],
                "width": entry["width"],
                "stem": stems[i],
                "objects": [
                    {
                        "id": item["id"],
                        "label": None
                        if item["obj"].get("label") is None
                        else str(item["obj"]["label"]),
                        "score": _score(item["obj"].get("score")),
                        "prompts": _prompts(item["obj"]),
                    }
                    for _, _, item in per_image.get(i, [])
                ],
            }
            for i, entry in enumerate(entries)
        ],
    }
    extra = _jsonable(dict(prompt_log or {}))
    clash = sorted(set(extra) & set(log))
    if clash:
        raise ValueError(f"prompt_log cannot set {clash}: prompts.json uses those keys itself")
    log.update(extra)
    coco_bytes = _json_bytes(coco)  # serialised up front: a value JSON refuses fails here
    log_bytes = _json_bytes(log)

    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    for i, entry in enumerate(entries):
        items = per_image.get(i)
        txt = folder / "labels" / f"{stems[i]}.txt"
        png = folder / "masks" / f"{stems[i]}.png"
        if not items:  # not annotated (yet): no files, and none left from an earlier save
            txt.unlink(missing_ok=True)
            png.unlink(missing_ok=True)
            continue
        h, w = entry["height"], entry["width"]
        write_atomic(txt, _yolo_lines([(c, m) for c, m, _ in items], h, w))
        write_atomic(png, label_image([m for _, m, _ in items], png=True))  # type: ignore[arg-type]
    write_atomic(folder / "data.yaml", _data_yaml(names))
    write_atomic(folder / PROMPTS_FILE, log_bytes)
    write_atomic(folder / COCO_FILE, coco_bytes)
    return folder


# --------------------------------------------------------------------------------------------
# loading (resume) and replay


def _polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """A COCO polygon segmentation (flat [x1, y1, x2, y2, ...] lists) rasterised with PIL."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for flat in polygons:
        xy = [float(v) for v in flat]
        if len(xy) >= 6:
            draw.polygon(list(zip(xy[::2], xy[1::2], strict=False)), fill=1)
    return np.asarray(canvas, dtype=bool)


def _read_coco(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / COCO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no annotations at {path}: pass a folder written by save_dataset or a COCO .json"
        )
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a COCO JSON file: {e}") from None
    if not isinstance(coco, Mapping) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path} is not a COCO JSON file (it has no 'images' list)")
    return dict(coco)


def load_annotations(
    source: str | os.PathLike[str] | Mapping[str, Any], file_names: Sequence[str]
) -> tuple[dict[int, list[dict[str, Any]]], list[str]]:
    """Objects saved by ``save_dataset`` (a folder) or in any COCO json, matched to the
    dataset's images by file name.

    Args:
        source: a folder written by ``save_dataset``, a COCO .json path, or the COCO dict.
        file_names: the dataset's file names in order (``ds.name(i)``). A COCO image matches
            the same name, else the same base name (COCO files of other tools often hold
            "train/a.jpg"); COCO images that match none are listed in a warning.
    Returns:
        ``({index: [{"mask", "label", "score", "points", "box", "steps", "source"}, ...]},
        labels)``:
        labels are the category names in the file's order (without the category of
        unlabeled objects, whose objects get ``label=None``). Segmentations may be RLE
        (compressed or not) or polygons.
    """
    coco = _read_coco(source)
    names = [str(n) for n in file_names]
    exact: dict[str, int] = {}
    base: dict[str, int | None] = {}
    for i, name in enumerate(names):
        exact.setdefault(name, i)
        key = os.path.basename(name.replace("\\", "/"))
        base[key] = i if key not in base else None  # None: ambiguous
    categories = list(coco.get("categories") or [])
    labels = [str(c["name"]) for c in categories if not c.get("unlabeled")]
    label_of = {c["id"]: (None if c.get("unlabeled") else str(c["name"])) for c in categories}

    image_index: dict[Any, tuple[int, int, int]] = {}
    unmatched = []
    for image in coco["images"]:
        name = str(image.get("file_name", ""))
        index = exact.get(name)
        if index is None:
            index = base.get(os.path.basename(name.replace("\\", "/")))
        if index is None:
            unmatched.append(name)
            continue
        image_index[image["id"]] = (index, int(image["height"]), int(image["width"]))
    if unmatched:
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        shown = ", ".join(unmatched[:5]) + more
        warnings.warn(
            f"{len(unmatched)} annotated image(s) are not in the dataset and were skipped: {shown}",
            stacklevel=2,
        )

    result: dict[int, list[dict[str, Any]]] = {}
    for ann in coco.get("annotations") or []:
        found = image_index.get(ann.get("image_id"))
        if found is None:
            continue
        index, h, w = found
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, Mapping):
            mask = decode_rle(segmentation)
        elif isinstance(segmentation, list):
            mask = _polygon_mask(segmentation, h, w)
        else:
            raise ValueError(f"annotation {ann.get('id')} has no segmentation")
        if mask.shape != (h, w):
            raise ValueError(
                f"annotation {ann.get('id')} is {mask.shape[0]} x {mask.shape[1]}, but its image "
                f"is {h} x {w}"
            )
        category = ann.get("category_id")
        if category not in label_of:
            raise ValueError(f"annotation {ann.get('id')} has an unknown category_id {category!r}")
        prompts = ann.get("prompts") or {}
        result.setdefault(index, []).append(
            {
                "mask": mask,
                "label": label_of[category],
                "score": ann.get("score"),
                "points": prompts.get("points"),
                "box": prompts.get("box"),
                "steps": prompts.get("steps"),
                "source": ann.get("source"),
            }
        )
    return dict(sorted(result.items())), labels


def replay_dataset(
    source: str | os.PathLike[str] | Mapping[str, Any], engine: Any, images: Any
) -> dict[int, list[np.ndarray]]:
    """Recompute every object of a dataset prompt log with an engine (see ``export.replay``
    for the prompt records).

    Args:
        source: a folder written by ``save_dataset``, its prompts.json, or the log dict.
        engine: anything with ``set_image`` and ``predict`` (``Predictor``, classic...).
        images: ``images[index]`` gives the image of the logged dataset index (a ``Dataset``,
            a list), or a mapping from file name to image.
    Returns:
        ``{index: [mask, ...]}`` for every image that has objects, in the log's order.
    """
    from sam_widget.images import to_rgb

    if isinstance(source, Mapping):
        log = dict(source)
    else:
        path = Path(source)
        log = json.loads((path / PROMPTS_FILE if path.is_dir() else path).read_text("utf-8"))
    if log.get("kind") != "dataset":
        raise ValueError("this is not a dataset prompt log (use export.replay for one image)")
    result: dict[int, list[np.ndarray]] = {}
    for entry in log.get("images", []):
        if not entry.get("objects"):
            continue
        index = int(entry["index"])
        key: Any = entry["file_name"] if isinstance(images, Mapping) else index
        rgb = to_rgb(images[key])
        if rgb.shape[:2] != (entry["height"], entry["width"]):
            raise ValueError(
                f"image {index} ({entry['file_name']}) is {rgb.shape[0]} x {rgb.shape[1]}, the "
                f"log was made on {entry['height']} x {entry['width']}: not the same image"
            )
        result[index] = _replay_objects(engine, rgb, entry["objects"])
    return result
