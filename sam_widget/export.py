"""Getting masks out: COCO RLE and annotations, polygons with holes, label images, cut-outs.

Everything here works on plain numpy masks (bool, H x W), so it serves the widget
(``w.to_coco()``, ``w.save(folder)``), the automatic mask generator's records and any other
masks alike. The RLE is written byte for byte as pycocotools writes it (column-major runs,
starting with a run of zeros, compressed into its 6-bit ASCII string), implemented in numpy so
pycocotools is only needed by the tests that prove it.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - served lazily by __getattr__ below
    from sam_widget.export_dataset import (  # noqa: F401
        dataset_to_coco,
        load_annotations,
        replay_dataset,
        save_dataset,
    )

__all__ = [
    "encode_rle",
    "decode_rle",
    "rle_area",
    "mask_bbox",
    "to_coco",
    "to_polygons",
    "label_image",
    "cutout",
    "save",
    "load_prompt_log",
    "replay",
    "write_atomic",
    "safe_file_name",
    "target_kind",
    # dataset exports (sam_widget.export_dataset), reachable here too
    "dataset_to_coco",
    "save_dataset",
    "load_annotations",
    "replay_dataset",
]

_DATASET_NAMES = {"dataset_to_coco", "save_dataset", "load_annotations", "replay_dataset"}


def __getattr__(name: str) -> Any:
    # The dataset exports live in their own module (export_dataset.py imports this one, so a
    # top-level import here would be circular); ``sw.export.save_dataset`` works all the same.
    if name in _DATASET_NAMES:
        from sam_widget import export_dataset

        return getattr(export_dataset, name)
    raise AttributeError(f"module 'sam_widget.export' has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# RLE


def _as_mask(mask: Any, what: str = "mask") -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {array.shape}")
    if array.dtype != bool:
        array = array != 0
    return array


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Column-major run lengths, the first one counting zeros (possibly 0), as int64."""
    flat = mask.ravel(order="F")
    n = flat.size
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [n]))
    counts = np.diff(bounds).astype(np.int64)
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return counts


def _counts_to_string(counts: np.ndarray) -> str:
    """pycocotools' ``rleToString``: deltas against the count two back (from the 4th on),
    written as little-endian groups of 5 bits, 0x20 = "more follows", 0x10 = sign, + 48."""
    x = counts.astype(np.int64).copy()
    if x.size > 3:
        x[3:] = counts[3:] - counts[1:-2]
    # groups needed: the smallest k with -2**(5k-1) <= x < 2**(5k-1)
    groups = np.ones(x.shape, dtype=np.int64)
    limit = np.int64(16)
    while True:
        outside = (x >= limit) | (x < -limit)
        if not outside.any():
            break
        groups += outside
        limit = limit * 32
    width = int(groups.max()) if groups.size else 1
    shifts = 5 * np.arange(width, dtype=np.int64)
    digits = (x[:, None] >> shifts[None, :]) & 0x1F  # arithmetic shift, like C's signed long
    index = np.arange(width)[None, :]
    digits = digits | np.where(index < groups[:, None] - 1, 0x20, 0)
    chars = (digits + 48).astype(np.uint8)
    return chars[index < groups[:, None]].tobytes().decode("ascii")


def _string_to_counts(text: str | bytes) -> np.ndarray:
    """pycocotools' ``rleFrString``, vectorized."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if not raw:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if (c < 0).any() or (c > 63).any():
        raise ValueError("not a compressed COCO RLE string (characters outside '0'..'o')")
    last = (c & 0x20) == 0  # each value ends at a character without "more"
    if not last[-1]:
        raise ValueError("compressed COCO RLE string ends in the middle of a value")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    position = np.arange(c.size) - np.repeat(starts, ends - starts + 1)
    values = np.add.reduceat((c & 0x1F) << (5 * position), starts)
    lengths = ends - starts + 1
    negative = (c[ends] & 0x10) != 0
    values = values - np.where(negative, np.left_shift(1, 5 * lengths), 0)
    counts = values.copy()
    # undo the deltas: counts[m] = x[m] + counts[m - 2] for m > 2
    counts[3::2] = np.cumsum(values[1::2])[1:] if counts.size > 3 else counts[3::2]
    counts[4::2] = values[2] + np.cumsum(values[4::2]) if counts.size > 4 else counts[4::2]
    return counts


def encode_rle(mask: Any) -> dict[str, Any]:
    """COCO compressed RLE of one mask, exactly as ``pycocotools.mask.encode`` writes it.

    Args:
        mask: (H, W) array; nonzero is foreground.
    Returns:
        ``{"size": [H, W], "counts": str}`` (pycocotools gives the same counts as bytes).
    """
    array = _as_mask(mask)
    h, w = array.shape
    return {"size": [int(h), int(w)], "counts": _counts_to_string(_run_lengths(array))}


def _rle_counts(rle: Mapping[str, Any]) -> tuple[int, int, np.ndarray]:
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError('an RLE is a dict {"size": [H, W], "counts": str | list}') from e
    if isinstance(counts, (str, bytes)):
        array = _string_to_counts(counts)
    else:  # uncompressed RLE: a list of run lengths
        array = np.asarray(counts, dtype=np.int64)
    return h, w, array


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Bool (H, W) mask from a COCO RLE (compressed string/bytes or uncompressed list)."""
    h, w, counts = _rle_counts(rle)
    if (counts < 0).any() or counts.sum() != h * w:
        raise ValueError(
            f"RLE counts add up to {int(counts.sum())} pixels, but size {h}x{w} has {h * w}"
        )
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def rle_area(rle: Mapping[str, Any]) -> int:
    """Foreground pixel count of an RLE (``pycocotools.mask.area``)."""
    _, _, counts = _rle_counts(rle)
    return int(counts[1::2].sum())


def mask_bbox(mask: Any) -> list[float]:
    """Tight box ``[x, y, width, height]`` in pixels (``pycocotools.mask.toBbox``);
    ``[0, 0, 0, 0]`` for an empty mask."""
    array = _as_mask(mask)
    rows = np.flatnonzero(array.any(axis=1))
    cols = np.flatnonzero(array.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]


# --------------------------------------------------------------------------------------------
# COCO


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and tuples to plain JSON types, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _normalize_masks(
    masks: Any, scores: Any, prompts: Any
) -> tuple[list[np.ndarray], list[float | None], list[Any]]:
    """Accepts (N, H, W) arrays, sequences of (H, W) masks, or the automatic generator's
    records (dicts with "segmentation", "predicted_iou", "point_coords")."""
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = masks[None]
    items = list(masks) if not isinstance(masks, np.ndarray) else list(masks)
    mask_list: list[np.ndarray] = []
    record_scores: list[float | None] = []
    record_prompts: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            segmentation = item.get("segmentation", item.get("mask"))
            if isinstance(segmentation, Mapping):
                segmentation = decode_rle(segmentation)
            mask_list.append(_as_mask(segmentation, f"masks[{i}]"))
            score = item.get("score", item.get("predicted_iou"))
            record_scores.append(None if score is None else float(score))
            prompt = item.get("prompts")
            if prompt is None and "point_coords" in item:
                prompt = {"points": [[*p, 1] for p in _jsonable(item["point_coords"])]}
            record_prompts.append(prompt)
        else:
            mask_list.append(_as_mask(item, f"masks[{i}]"))
            record_scores.append(None)
            record_prompts.append(None)
    n = len(mask_list)
    if scores is not None:
        scores = [float(s) for s in np.asarray(scores, dtype=float).reshape(-1)]
        if len(scores) != n:
            raise ValueError(f"got {len(scores)} scores for {n} masks")
        record_scores = list(scores)
    if prompts is not None:
        prompts = list(prompts)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} masks")
        record_prompts = prompts
    shapes = {m.shape for m in mask_list}
    if len(shapes) > 1:
        raise ValueError(f"all masks must have the same size, got {sorted(shapes)}")
    return mask_list, record_scores, record_prompts


def _drop_empty(
    masks: list[np.ndarray], scores: list[float | None], prompts: list[Any]
) -> tuple[list[np.ndarray], list[float | None], list[Any]]:
    """Leave out masks without a single foreground pixel: an empty mask is no object (COCO
    has no empty annotations, a label image or cut-out of one shows nothing)."""
    keep = [i for i, m in enumerate(masks) if m.any()]
    return [masks[i] for i in keep], [scores[i] for i in keep], [prompts[i] for i in keep]


def _masks_size(masks: Any, mask_list: list[np.ndarray]) -> tuple[int, int] | None:
    if mask_list:
        return mask_list[0].shape  # type: ignore[return-value]
    shape = getattr(masks, "shape", None)  # an (N, H, W) array with N = 0 still has a size
    if shape is not None and len(shape) in (2, 3):
        return int(shape[-2]), int(shape[-1])
    return None


def to_coco(
    masks: Any,
    *,
    scores: Any = None,
    prompts: Sequence[Any] | None = None,
    image_id: int = 1,
    file_name: str | None = None,
    image_size: tuple[int, int] | None = None,
    category_id: int = 1,
    category_name: str = "object",
    first_annotation_id: int = 1,
) -> dict[str, Any]:
    """COCO-style annotations for one image.

    Args:
        masks: (N, H, W) or (H, W) array, a sequence of (H, W) masks, or the automatic mask
            generator's records (dicts with "segmentation", "predicted_iou", "point_coords").
            Empty masks (no foreground pixel) are left out: nothing to export gives no
            annotations.
        scores: N predicted-IoU scores (kept as each annotation's "score").
        prompts: N prompt records (e.g. ``{"points": [[x, y, label], ...], "box": [...]}``),
            kept as each annotation's "prompts".
        image_id, file_name: the image entry; file_name defaults to "image.png".
        image_size: (H, W) of the image entry when ``masks`` cannot tell (an empty list);
            default: the masks' size.
    Returns:
        ``{"images": [...], "annotations": [...], "categories": [...]}``; each annotation has
        "segmentation" (compressed RLE, counts as str), "area", "bbox" ([x, y, w, h]),
        "iscrowd" 0, "score" and "prompts" (None where unknown).
    """
    mask_list, score_list, prompt_list = _normalize_masks(masks, scores, prompts)
    size = _masks_size(masks, mask_list)
    if image_size is not None:
        if size is not None and tuple(size) != tuple(image_size):
            raise ValueError(f"image_size is {tuple(image_size)}, but the masks are {size}")
        size = (int(image_size[0]), int(image_size[1]))
    height, width = size if size is not None else (0, 0)
    mask_list, score_list, prompt_list = _drop_empty(mask_list, score_list, prompt_list)
    annotations = []
    for i, (mask, score, prompt) in enumerate(zip(mask_list, score_list, prompt_list, strict=True)):
        rle = encode_rle(mask)
        annotations.append(
            {
                "id": first_annotation_id + i,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle,
                "area": int(mask.sum()),
                "bbox": mask_bbox(mask),
                "iscrowd": 0,
                "score": score,
                "prompts": _jsonable(prompt),
            }
        )
    return {
        "images": [
            {
                "id": image_id,
                "file_name": file_name or "image.png",
                "height": int(height),
                "width": int(width),
            }
        ],
        "annotations": annotations,
        "categories": [{"id": category_id, "name": category_name}],
    }


# --------------------------------------------------------------------------------------------
# polygons


def _simplify_ring(ring: np.ndarray) -> np.ndarray:
    """Drop closing duplicate and vertices that sit on a straight line between neighbours."""
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) < 3:
        return ring
    prev = np.roll(ring, 1, axis=0)
    nxt = np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) - (ring[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - ring[:, 0]
    )
    keep = np.abs(cross) > 1e-9
    return ring[keep] if keep.sum() >= 3 else ring


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def to_polygons(mask: Any) -> list[list[np.ndarray]]:
    """Outline a mask as polygons with holes (matplotlib's contour machinery, contourpy).

    Pixel (row r, column c) covers the square [c, c+1] x [r, r+1]; the outline runs through
    the midpoints of the boundary pixels' edges (marching squares on the pixel grid), so
    corners are cut diagonally and the polygon area is close to, not exactly, the pixel count.

    Returns:
        One entry per connected part: a list of rings, each an (N, 2) float array of (x, y)
        vertices; ring 0 is the outer boundary (counter-clockwise in image coordinates, y
        down), the others are its holes (clockwise). An empty mask gives [].
    """
    import contourpy

    array = _as_mask(mask)
    rows = np.flatnonzero(array.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(array.any(axis=0))
    # only the bounding box matters (outside it all is background): a small object in a big
    # image costs what its box costs
    top, left = int(rows[0]), int(cols[0])
    padded = np.pad(array[top : rows[-1] + 1, left : cols[-1] + 1], 1).astype(np.float64)
    # z[i, j] is the value at pixel centre (x, y) = (left + j - 0.5, top + i - 0.5)
    h, w = padded.shape
    x = np.arange(w, dtype=np.float64) - 0.5 + left
    y = np.arange(h, dtype=np.float64) - 0.5 + top
    generator = contourpy.contour_generator(
        x, y, padded, fill_type=contourpy.FillType.OuterOffset, corner_mask=True
    )
    points_list, offsets_list = generator.filled(0.5, 2.0)
    polygons: list[list[np.ndarray]] = []
    for points, offsets in zip(points_list, offsets_list, strict=True):
        rings = []
        for start, stop in zip(offsets[:-1], offsets[1:], strict=True):
            ring = _simplify_ring(np.asarray(points[start:stop], dtype=np.float64))
            if len(ring) >= 3:
                rings.append(ring)
        if not rings:
            continue
        # exterior counter-clockwise as seen on screen (y down) = negative signed area in
        # math orientation; holes the other way
        outer = rings[0] if _signed_area(rings[0]) < 0 else rings[0][::-1]
        holes = [r if _signed_area(r) > 0 else r[::-1] for r in rings[1:]]
        polygons.append([outer, *holes])
    return polygons


def _polygons_json(polygons: list[list[np.ndarray]]) -> list[list[list[list[float]]]]:
    return [[ring.round(3).tolist() for ring in polygon] for polygon in polygons]


# --------------------------------------------------------------------------------------------
# label images and cut-outs


def label_image(masks: Any, *, png: bool = False) -> np.ndarray | bytes:
    """One integer id per object: 0 is background, object i is i + 1; where masks overlap the
    later one wins.

    Returns an (H, W) uint8 array (uint16 above 255 objects), or PNG bytes of it (8- or
    16-bit grayscale) when ``png``.
    """
    mask_list, _, _ = _normalize_masks(masks, None, None)
    if not mask_list:
        raise ValueError("label_image needs at least one mask (to know the image size)")
    dtype = np.uint8 if len(mask_list) <= 255 else np.uint16
    if len(mask_list) > 65535:
        raise ValueError(f"a 16-bit label image holds at most 65535 objects, got {len(mask_list)}")
    labels = np.zeros(mask_list[0].shape, dtype=dtype)
    for i, mask in enumerate(mask_list):
        labels[mask] = i + 1
    if not png:
        return labels
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(labels)  # uint8 -> mode "L", uint16 -> mode "I;16"
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def cutout(image: Any, mask: Any, *, crop: bool = True) -> np.ndarray:
    """RGBA uint8 cut-out: the image's pixels, opaque inside the mask, transparent outside.

    Args:
        image: anything ``sam_widget.images.to_rgb`` accepts, (H, W) like the mask.
        mask: (H, W), nonzero inside.
        crop: crop to the mask's bounding box (an empty mask gives a 0 x 0 image).
    Returns:
        (h, w, 4) uint8.
    """
    from sam_widget.images import to_rgb

    rgb = to_rgb(image)
    array = _as_mask(mask)
    if array.shape != rgb.shape[:2]:
        raise ValueError(f"mask {array.shape} and image {rgb.shape[:2]} differ in size")
    rgba = np.concatenate([rgb, np.where(array, 255, 0).astype(np.uint8)[..., None]], axis=2)
    rgba[~array, :3] = 0
    if crop:
        x, y, w, h = (int(v) for v in mask_bbox(array))
        rgba = rgba[y : y + h, x : x + w]
    return rgba


# --------------------------------------------------------------------------------------------
# files: atomic writes, safe names, file-or-folder


def _open_temp(path: Path) -> Any:
    """A new, exclusive temporary file beside ``path`` (same folder, so the rename is atomic;
    created with ``open`` so it gets the umask's permissions, unlike ``mkstemp``'s 0600)."""
    return open(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"), "xb")


def write_atomic(path: str | os.PathLike[str], data: bytes | str | Iterable[bytes]) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is never half-written: the bytes go to a
    temporary file in the same folder, which then replaces ``path`` in one ``os.replace``.
    On any error (a full disk, an exception while producing the chunks, Ctrl-C) the temporary
    file is removed and ``path`` is left as it was (absent, or its previous complete content).
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    chunks: Iterable[bytes] = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    f = _open_temp(path)
    tmp = Path(f.name)
    try:
        with f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


# names a file may not take on Windows, whatever the extension
_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}
_UNSAFE_CHARS = re.compile(r"[^\w.\- ]+")


def safe_file_name(name: str, default: str = "image") -> str:
    """``name`` reduced to a plain file name that stays inside any folder it is joined to:
    the last path component only (``/`` and ``\\`` both split), characters other than
    letters, digits, ``_ - . space`` replaced by ``_``, no leading dots or trailing dots and
    spaces, not a Windows device name, at most 200 characters; ``default`` if nothing is left.
    """
    base = re.split(r"[\\/]", str(name))[-1]
    clean = _UNSAFE_CHARS.sub("_", base).strip(" .")
    clean = clean.lstrip(".")[:200].rstrip(" .")
    if not clean:
        clean = default
    if clean.split(".")[0].lower() in _RESERVED:
        clean = "_" + clean
    return clean


def _inside(folder: Path, name: Any, what: str) -> Path:
    """``folder / name``, refusing names that would leave ``folder`` (absolute paths, ``..``,
    links pointing out): a prompt log or a caller cannot make us read or write elsewhere."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{what} must be a non-empty file name, got {str(name)[:200]!r}")
    root = folder.resolve()
    path = (folder / name).resolve()
    if path == root or root not in path.parents:
        raise ValueError(
            f"{what} {name[:200]!r} points outside the folder {folder}; use a plain file name "
            "such as 'image.png'"
        )
    return path


# what ``target_kind`` reads from a path's suffix; any other name is a folder name, except the
# suffixes of common file formats we do not write (a typo for a format, not a folder name)
FILE_SUFFIXES = {".json": "json", ".png": "png", ".npy": "npy", ".npz": "npz"}
_OTHER_FILE_SUFFIXES = {
    *(".txt .csv .tsv .jpg .jpeg .tif .tiff .bmp .gif .webp .pdf .svg .xml .yaml .yml".split()),
    *(".zip .tar .gz .pkl .pt .pth .h5 .mat .ipynb .py .html".split()),
}


def target_kind(path: str | os.PathLike[str]) -> str:
    """Whether saving to ``path`` means a folder ("folder") or one file ("json", "png",
    "npy", "npz").

    An existing folder, a path ending in a separator, or a name whose suffix is not a file
    format is a folder, so a new folder may have dots in its name ("run.v2", "2024.06.01").
    A format we do not write (".txt", ".jpg"...) or an existing file of another kind is a
    ``ValueError`` that lists the choices.
    """
    text = os.fspath(path)
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):
        return "folder"
    suffix = p.suffix.lower()
    kind = FILE_SUFFIXES.get(suffix)
    if kind is not None:
        return kind
    if suffix in _OTHER_FILE_SUFFIXES or p.exists():
        what = "is an existing file" if p.exists() else f"has the file suffix {suffix}"
        raise ValueError(
            f"cannot save to {p.name!r}: it {what}; use .json, .png, .npy or .npz for one file, "
            "or a folder (any other name, or one ending in '/')"
        )
    return "folder"


# --------------------------------------------------------------------------------------------
# everything at once


def _png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA array."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save(
    folder: str | os.PathLike[str],
    image: Any,
    masks: Any,
    *,
    scores: Any = None,
    prompts: Sequence[Any] | None = None,
    log: Sequence[Any] | None = None,
    file_name: str = "image.png",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write an image's objects in every format to ``folder`` (created if needed).

    Files: ``image.png`` (the RGB image as segmented), ``annotations.json`` (COCO, see
    ``to_coco``), ``labels.png`` (``label_image``; all zero without objects), ``polygons.json``
    (per object, rings of [x, y]), ``cutouts/object_001.png``... (RGBA, cropped), and
    ``prompts.json``: the prompt log (per object its prompts and score, plus ``log``, the raw
    event list if given) from which the objects can be reproduced on the same image.

    Empty masks are left out (as in ``to_coco``); with no objects at all the folder is still
    complete (every file, an empty ``cutouts/``) and replays to no objects. Everything is
    checked before the first file is written, and each file is written atomically
    (``write_atomic``). ``file_name`` must be a plain name: it cannot lead out of ``folder``.

    Returns the written paths by kind.
    """
    import hashlib

    from sam_widget.images import to_rgb

    folder = Path(folder)
    image_path = _inside(folder, file_name, "file_name")
    if image_path.suffix.lower() != ".png":
        raise ValueError(f"file_name {file_name!r} must end in .png (the image is saved as PNG)")
    if image_path.name in {"annotations.json", "labels.png", "polygons.json", "prompts.json"}:
        raise ValueError(f"file_name {file_name!r} is taken by one of the exported files")
    rgb = to_rgb(image)
    mask_list, score_list, prompt_list = _normalize_masks(masks, scores, prompts)
    for i, mask in enumerate(mask_list):
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"masks[{i}] is {mask.shape}, the image is {rgb.shape[:2]}")
    mask_list, score_list, prompt_list = _drop_empty(mask_list, score_list, prompt_list)
    height, width = rgb.shape[:2]

    coco = to_coco(
        mask_list,
        scores=score_list,
        prompts=prompt_list,
        file_name=file_name,
        image_size=(height, width),
    )
    polygons = [
        {"id": i + 1, "polygons": _polygons_json(to_polygons(mask))}
        for i, mask in enumerate(mask_list)
    ]
    prompt_log = {
        "version": 1,
        "image": {
            "file_name": file_name,
            "height": int(height),
            "width": int(width),
            "sha256": hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest(),
        },
        "objects": [
            {"id": i + 1, "prompts": _jsonable(p), "score": s}
            for i, (p, s) in enumerate(zip(prompt_list, score_list, strict=True))
        ],
        "log": _jsonable(list(log)) if log is not None else [],
        **_jsonable(dict(extra or {})),
    }
    # serialised before anything is written: a value JSON refuses fails here, not half-way
    texts = {
        "annotations": json.dumps(coco, indent=1),
        "polygons": json.dumps(polygons),
        "prompts": json.dumps(prompt_log, indent=1),
    }
    labels = (
        label_image(mask_list, png=True) if mask_list else _png(np.zeros((height, width), np.uint8))
    )

    paths: dict[str, Path] = {}
    cut_dir = folder / "cutouts"
    cut_dir.mkdir(parents=True, exist_ok=True)
    paths["image"] = write_atomic(folder / file_name, _png(rgb))
    paths["labels"] = write_atomic(folder / "labels.png", labels)  # type: ignore[arg-type]
    for i, mask in enumerate(mask_list):
        path = cut_dir / f"object_{i + 1:03d}.png"
        paths[f"cutout_{i + 1}"] = write_atomic(path, _png(cutout(rgb, mask)))
    for stale in cut_dir.glob("object_*.png"):  # cut-outs of a previous, larger save
        if stale not in paths.values():
            stale.unlink()
    paths["polygons"] = write_atomic(folder / "polygons.json", texts["polygons"])
    paths["prompts"] = write_atomic(folder / "prompts.json", texts["prompts"])
    paths["annotations"] = write_atomic(folder / "annotations.json", texts["annotations"])
    return paths


# --------------------------------------------------------------------------------------------
# replaying a prompt log


def load_prompt_log(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """The prompt log written by ``save``: from its folder, its ``prompts.json`` or a dict."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "prompts.json"
    return json.loads(path.read_text())


def replay(
    source: str | os.PathLike[str] | Mapping[str, Any],
    engine: Any,
    image: Any = None,
) -> list[np.ndarray]:
    """Reproduce the objects of a prompt log with an engine (``Predictor``, classic, ...).

    Each object's ``prompts`` record is ``{"points": [[x, y, label], ...], "box": [x0, y0, x1,
    y1] | None, "multimask": bool (default True), "selected": int (default: the best score)}``,
    or ``{"steps": [record, ...]}`` for an object refined over several prompts, where each
    step's selected low-res logits are fed to the next as ``mask_input`` (what the widget does
    with ``refine=True``). A record's ``strokes`` (brush and eraser edits, see
    ``sam_widget.strokes``) are applied to the mask after its prompts.

    Args:
        source: a folder written by ``save``, its prompts.json, or the log dict.
        engine: anything with ``set_image(image)`` and ``predict(points, labels, box,
            mask_input, multimask) -> Prediction``.
        image: the image; default: the one saved in the folder. It must be the logged image
            (same size and pixels, checked by SHA-256), else ``ValueError``.
    Returns:
        One bool (H, W) mask per object, in the log's order.
    """
    import hashlib

    from sam_widget.images import to_rgb

    log = load_prompt_log(source)
    if image is None:
        if isinstance(source, Mapping):
            raise ValueError("replay from a dict needs the image")
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        image = _inside(folder, log.get("image", {}).get("file_name"), "the log's image file_name")
    rgb = to_rgb(image)
    expected = log.get("image", {}).get("sha256")
    actual = hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()
    if expected is not None and expected != actual:
        raise ValueError(
            "this is not the image the prompt log was made on (its pixels differ); pass the "
            "original image"
        )
    return _replay_objects(engine, rgb, log.get("objects", []))


def _replay_objects(engine: Any, rgb: np.ndarray, objects: Sequence[Mapping[str, Any]]) -> list:
    """Each object's prompt record replayed on ``rgb`` (see ``replay``); one mask each."""
    engine.set_image(rgb)
    masks = []
    for obj in objects:
        record = obj.get("prompts") or {}
        steps = record.get("steps") or [record]
        mask_input = None
        mask = np.zeros(rgb.shape[:2], dtype=bool)
        for step in steps:
            triples = np.asarray(step.get("points") or [], dtype=np.float64).reshape(-1, 3)
            box = step.get("box")
            prediction = engine.predict(
                points=triples[:, :2] if len(triples) else None,
                labels=triples[:, 2].astype(np.int64) if len(triples) else None,
                box=None if box is None else np.asarray(box, dtype=np.float64),
                mask_input=mask_input,
                multimask=bool(step.get("multimask", True)),
            )
            scores = np.asarray(prediction.scores).reshape(-1)
            k = step.get("selected")
            k = int(np.argmax(scores)) if k is None else int(k)
            mask = np.asarray(prediction.masks[k], dtype=bool)
            mask_input = np.asarray(prediction.logits)[k : k + 1]
        if record.get("strokes"):  # brush/eraser edits made after the prompts
            from sam_widget.strokes import apply_strokes

            mask = apply_strokes(mask, record["strokes"])
        masks.append(mask)
    return masks
