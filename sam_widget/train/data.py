"""What fine-tuning trains on: images with their object masks, from whatever the user has.

`collect` turns each accepted source into one list of `Example` (an image and its masks):
images with masks per image; an annotation widget (``w.annotations`` {index: [objects]} of a
dataset session, else ``w.objects`` of the current image); a folder saved by the widget or any
COCO folder (``annotations.json`` next to the images, RLE or polygon segmentations). `split`
holds out whole images for the before/after measurement.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Example:
    """One image and the objects annotated on it."""

    image: Any  # anything `to_rgb` reads; converted when the image is first encoded
    masks: list[np.ndarray]  # bool (H, W) at the image size, each non-empty
    name: str  # for messages: a file name or "image-i"


def _as_masks(value: Any, where: str) -> list[np.ndarray]:
    """One image's masks: an (N, H, W) array, a list of (H, W), or objects with "mask"."""
    if isinstance(value, np.ndarray):
        items = [value] if value.ndim == 2 else list(value)
    else:
        items = list(value)
    masks = []
    for j, item in enumerate(items):
        if isinstance(item, Mapping):
            if "mask" not in item:
                raise ValueError(f"{where}[{j}] is an object without a 'mask' entry")
            item = item["mask"]
        mask = np.asarray(item)
        if mask.ndim != 2:
            raise ValueError(f"{where}[{j}] must be an (H, W) mask, got shape {mask.shape}")
        masks.append(mask.astype(bool) if mask.dtype != bool else mask)
    return masks


def from_images(images: Sequence[Any], masks: Sequence[Any]) -> list[Example]:
    """``images[i]`` with ``masks[i]`` (a list of bool (H, W), or an (N, H, W) array)."""
    if len(images) != len(masks):
        raise ValueError(
            f"images and masks must have one entry per image: {len(images)} images, "
            f"{len(masks)} mask lists"
        )
    name_of = getattr(images, "name", None)
    examples = []
    for i in range(len(images)):
        name = name_of(i) if callable(name_of) else f"image-{i}"
        examples.append(Example(images[i], _as_masks(masks[i], f"masks[{i}]"), name))
    return examples


def from_widget(widget: Any) -> list[Example]:
    """Every committed object of an annotation widget (or session).

    A dataset session's ``annotations`` ({index: [objects]}) with its images from
    ``widget.dataset`` (or ``widget.images``); otherwise the ``objects`` of the current image.
    """
    annotations = getattr(widget, "annotations", None)
    if isinstance(annotations, Mapping) and annotations:
        images = getattr(widget, "dataset", None)
        if images is None:
            images = getattr(widget, "images", None)
        if images is None:
            raise TypeError(
                f"{type(widget).__name__} has annotations but neither .dataset nor .images "
                "to read their images from"
            )
        name_of = getattr(images, "name", None)
        return [
            Example(
                images[i],
                _as_masks(objects, f"annotations[{i}]"),
                name_of(i) if callable(name_of) else f"image-{i}",
            )
            for i, objects in sorted(annotations.items())
            if objects
        ]
    objects = list(getattr(widget, "objects", None) or [])
    if not objects:
        return []
    return [Example(widget.image, _as_masks(objects, "objects"), "image-0")]


def _polygon_mask(polygons: list, height: int, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for flat in polygons:
        if len(flat) >= 6:
            draw.polygon([(flat[k], flat[k + 1]) for k in range(0, len(flat) - 1, 2)], fill=1)
    return np.asarray(canvas, dtype=bool)


def from_coco(path: str | os.PathLike[str]) -> list[Example]:
    """A COCO folder (``annotations.json`` and the images it names), or a COCO json file."""
    from sam_widget.export import decode_rle

    path = Path(path).expanduser()
    if path.is_dir():
        candidates = [path / "annotations.json", *sorted(path.glob("*.json"))]
        found = next((p for p in candidates if p.is_file() and _is_coco(p)), None)
        if found is None:
            raise ValueError(
                f"{path} holds no COCO annotations file (annotations.json with 'images' and "
                "'annotations'); save one with w.save(folder)"
            )
        path = found
    coco = json.loads(path.read_text())
    folder = path.parent
    by_image: dict[Any, list[np.ndarray]] = {}
    heights = {im["id"]: (int(im["height"]), int(im["width"])) for im in coco["images"]}
    for ann in coco["annotations"]:
        seg = ann.get("segmentation")
        h, w = heights[ann["image_id"]]
        if isinstance(seg, Mapping):
            mask = decode_rle(seg)
        elif isinstance(seg, list) and seg:
            mask = _polygon_mask(seg, h, w)
        else:
            continue
        if mask.any():
            by_image.setdefault(ann["image_id"], []).append(mask)
    examples = []
    for im in coco["images"]:
        masks = by_image.get(im["id"])
        if not masks:
            continue
        file = folder / im["file_name"]
        if not file.is_file() and (folder / "images" / im["file_name"]).is_file():
            file = folder / "images" / im["file_name"]
        if not file.is_file():
            raise FileNotFoundError(
                f"{path} names the image {im['file_name']!r}, not found in {folder} (a folder "
                "saved from in-memory images holds annotations only): put the image files "
                "there, or pass images and masks: finetune(sam, images, masks)"
            )
        examples.append(Example(file, masks, im["file_name"]))
    return examples


def _is_coco(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "images" in data and "annotations" in data


def collect(images: Any, masks: Any = None) -> list[Example]:
    """The examples ``finetune(sam, images, masks)`` trains on (see the module docstring)."""
    if masks is None:
        if isinstance(images, (str, os.PathLike)):
            examples = from_coco(images)
        elif hasattr(images, "annotations") or hasattr(images, "objects"):
            examples = from_widget(images)
        else:
            raise TypeError(
                "finetune needs masks: finetune(sam, images, masks) with one list of bool "
                "(H, W) masks per image, or an annotation widget, or a saved COCO folder; got "
                f"{type(images).__name__} without masks"
            )
    else:
        examples = from_images(images, masks)
    for ex in examples:
        ex.masks = [m for m in ex.masks if m.any()]  # an empty mask has no prompt to sample
    examples = [ex for ex in examples if ex.masks]
    if not examples:
        raise ValueError("nothing to train on: no image has a non-empty object mask")
    return examples


def split(
    examples: list[Example], validation: float, rng: np.random.Generator
) -> tuple[list[Example], list[Example]]:
    """(train, held out): a ``validation`` fraction of the images (at least one when
    ``validation`` > 0). With a single image its objects are split instead."""
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation}")
    if validation == 0.0:
        return examples, []
    if len(examples) == 1:
        ex = examples[0]
        if len(ex.masks) < 2:
            raise ValueError(
                "one image with one object cannot be split for validation: annotate more, or "
                "pass validation=0"
            )
        order = rng.permutation(len(ex.masks))
        n_val = min(len(order) - 1, max(1, round(validation * len(order))))
        held = [ex.masks[k] for k in order[:n_val]]
        kept = [ex.masks[k] for k in order[n_val:]]
        return [Example(ex.image, kept, ex.name)], [Example(ex.image, held, ex.name)]
    order = rng.permutation(len(examples))
    n_val = min(len(examples) - 1, max(1, round(validation * len(examples))))
    held = sorted(order[:n_val].tolist())
    return (
        [examples[i] for i in sorted(order[n_val:].tolist())],
        [examples[i] for i in held],
    )
