"""Brush and eraser strokes: hand edits of a mask, applied at the image's full resolution.

A stroke is a JSON-able record ``{"mode": "add" | "erase", "radius": r, "points": [[x, y],
...]}`` in image pixels (x right, y down, continuous coordinates): the pixels whose centres lie
within ``r`` of the polyline through the points are set ("add") or cleared ("erase"). The widget
keeps strokes as undoable edits (``sam_widget.session``), writes them into the prompt log, and
`sam_widget.export.replay` applies them after the prompts, so a replay reproduces the edited
mask exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MODES = ("add", "erase")
#: most points one stroke may hold (a long drag is thinned by the view long before this)
MAX_STROKE_POINTS = 10_000
#: the largest brush radius, in image pixels
MAX_RADIUS = 4096.0


class StrokeError(ValueError):
    """A stroke record that cannot be applied (bad mode, radius or points)."""


def validate_stroke(stroke: Any, width: int, height: int) -> dict:
    """Check a stroke record for a ``width`` x ``height`` image; returns a clean copy."""
    if not isinstance(stroke, dict):
        raise StrokeError(f"a stroke must be a dict with mode, radius, points; got "
                          f"{type(stroke).__name__}")
    mode = stroke.get("mode")
    if mode not in MODES:
        raise StrokeError(f"stroke mode must be 'add' or 'erase', got {mode!r}")
    radius = stroke.get("radius")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not (
        math.isfinite(radius) and 0 < radius <= MAX_RADIUS
    ):
        raise StrokeError(f"stroke radius must be a number in (0, {MAX_RADIUS:g}] image pixels, "
                          f"got {radius!r}")
    points = stroke.get("points")
    if not isinstance(points, (list, tuple)) or not points:
        raise StrokeError("stroke points must be a non-empty list of [x, y]")
    if len(points) > MAX_STROKE_POINTS:
        raise StrokeError(f"a stroke holds at most {MAX_STROKE_POINTS} points, got {len(points)}")
    clean = []
    for i, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p
        ):
            raise StrokeError(f"stroke point {i} must be [x, y] (finite numbers), got {p!r}")
        x, y = float(p[0]), float(p[1])
        if not (-radius <= x <= width + radius and -radius <= y <= height + radius):
            raise StrokeError(f"stroke point {i} ({x:g}, {y:g}) lies outside the {width}x{height} "
                              "image")
        clean.append([x, y])
    return {"mode": mode, "radius": float(radius), "points": clean}


def stroke_footprint(stroke: dict, height: int, width: int) -> tuple[slice, slice, np.ndarray]:
    """The pixels a stroke covers: (rows, cols) slices of its bounding box and a bool array of
    that box's shape, True where a pixel centre lies within the radius of the polyline."""
    pts = np.asarray(stroke["points"], np.float64).reshape(-1, 2)
    r = float(stroke["radius"])
    x0 = max(0, int(math.floor(pts[:, 0].min() - r)))
    x1 = min(width, int(math.ceil(pts[:, 0].max() + r)) + 1)
    y0 = max(0, int(math.floor(pts[:, 1].min() - r)))
    y1 = min(height, int(math.ceil(pts[:, 1].max() + r)) + 1)
    if x0 >= x1 or y0 >= y1:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), bool)
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    covered = np.zeros((y1 - y0, x1 - x0), bool)
    segments = list(zip(pts[:-1], pts[1:], strict=True)) if len(pts) > 1 else [(pts[0], pts[0])]
    for a, b in segments:
        # only the segment's own box: distance from each pixel centre to the segment
        sx0 = max(x0, int(math.floor(min(a[0], b[0]) - r)))
        sx1 = min(x1, int(math.ceil(max(a[0], b[0]) + r)) + 1)
        sy0 = max(y0, int(math.floor(min(a[1], b[1]) - r)))
        sy1 = min(y1, int(math.ceil(max(a[1], b[1]) + r)) + 1)
        if sx0 >= sx1 or sy0 >= sy1:
            continue
        px = xs[:, sx0 - x0 : sx1 - x0]
        py = ys[sy0 - y0 : sy1 - y0, :]
        d = b - a
        length2 = float(d @ d)
        if length2 == 0.0:
            t = 0.0
        else:
            t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / length2, 0.0, 1.0)
        dist2 = (px - (a[0] + t * d[0])) ** 2 + (py - (a[1] + t * d[1])) ** 2
        covered[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] |= dist2 <= r * r
    return slice(y0, y1), slice(x0, x1), covered


def apply_stroke(mask: np.ndarray, stroke: dict) -> np.ndarray:
    """A copy of bool ``mask`` (H, W) with one (validated) stroke applied."""
    out = np.array(mask, dtype=bool, copy=True)
    rows, cols, covered = stroke_footprint(stroke, *out.shape)
    if stroke["mode"] == "add":
        out[rows, cols] |= covered
    else:
        out[rows, cols] &= ~covered
    return out


def apply_strokes(mask: np.ndarray, strokes: list[dict]) -> np.ndarray:
    """``mask`` with every stroke applied in order (a copy; the input is never changed)."""
    out = np.array(mask, dtype=bool, copy=True)
    for stroke in strokes:
        out = apply_stroke(out, stroke)
    return out


def edit_candidates(masks: np.ndarray, strokes: list[dict]) -> np.ndarray:
    """Candidate masks (C, H, W) with the strokes applied to each (the user's edits follow
    whichever candidate is chosen); the input itself when there are no strokes."""
    masks = np.asarray(masks, dtype=bool)
    if not strokes:
        return masks
    return np.stack([apply_strokes(m, strokes) for m in masks]) if len(masks) else masks


def nearest_resize(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (C, H, W) -> (C, height, width), each output pixel the input pixel under its
    centre (what a canvas shows when it scales a mask without smoothing)."""
    masks = np.asarray(masks, dtype=bool)
    src_h, src_w = masks.shape[-2:]
    if (src_h, src_w) == (height, width):
        return masks
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(np.int64), src_w - 1)
    return masks[..., rows[:, None], cols[None, :]]
