"""Static pictures of an image with masks, points and boxes.

Two ways to draw the same thing:
- matplotlib helpers in the style of the official segment-anything notebooks (``show_mask``,
  ``show_points``, ``show_box``, and ``show`` for all at once) for figures in notebooks and
  papers;
- ``render_png``: numpy + Pillow only, no matplotlib figure and no browser, fast enough to run
  on every widget update; the widget uses it for its ``image/png`` mimebundle so a notebook
  read where no widget frontend runs (GitHub, nbconvert, a PDF) still shows the masks.

Colours follow the official notebooks: masks dodger blue (30, 144, 255) at alpha 0.6,
foreground points green stars and background points red stars with a white edge, boxes green.
Further masks get distinct colours from a fixed palette (the first stays the official blue).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MASK_COLORS",
    "render_png",
    "render",
    "show",
    "show_box",
    "show_mask",
    "show_points",
]

# RGB, 0..255: the official blue first, then matplotlib's tab10 without its blue
MASK_COLORS: tuple[tuple[int, int, int], ...] = (
    (30, 144, 255),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (127, 127, 127),
)
MASK_ALPHA = 0.6
POSITIVE = (0, 128, 0)  # matplotlib "green"
NEGATIVE = (255, 0, 0)  # matplotlib "red"
BOX = (0, 128, 0)


def _points_labels(points: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    coords = (
        np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    )
    if labels is None or len(labels) == 0:
        labs = np.ones(len(coords), dtype=np.int64)
    else:
        labs = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labs) != len(coords):
        raise ValueError(f"got {len(coords)} points and {len(labs)} labels")
    return coords, labs


def _mask_stack(masks: Any) -> np.ndarray:
    if masks is None:
        return np.zeros((0, 0, 0), dtype=bool)
    if isinstance(masks, np.ndarray):
        array = masks
    else:
        items = list(masks)
        if not items:
            return np.zeros((0, 0, 0), dtype=bool)
        array = np.stack([np.asarray(m) for m in items])
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"masks must be (H, W) or (N, H, W), got shape {array.shape}")
    return array != 0 if array.dtype != bool else array


# --------------------------------------------------------------------------------------------
# matplotlib, like the official notebooks


def show_mask(mask: Any, ax: Any, *, color: Any = None, random_color: bool = False) -> None:
    """Overlay one (H, W) mask on ``ax`` in translucent colour (official blue by default)."""
    array = np.asarray(mask) != 0
    if random_color:
        rgba = np.concatenate([np.random.random(3), [MASK_ALPHA]])
    elif color is not None:
        rgba = np.asarray(color, dtype=np.float64)
        if rgba.max() > 1:
            rgba = rgba / 255.0
        if rgba.size == 3:
            rgba = np.concatenate([rgba, [MASK_ALPHA]])
    else:
        rgba = np.array([*(c / 255 for c in MASK_COLORS[0]), MASK_ALPHA])
    h, w = array.shape[-2:]
    ax.imshow(array.reshape(h, w, 1) * rgba.reshape(1, 1, -1))


def show_points(coords: Any, labels: Any, ax: Any, marker_size: float = 375) -> None:
    """Foreground points (label 1) as green stars, background (0) as red stars."""
    xy, labs = _points_labels(coords, labels)
    for value, color in ((1, "green"), (0, "red")):
        chosen = xy[labs == value]
        ax.scatter(
            chosen[:, 0],
            chosen[:, 1],
            color=color,
            marker="*",
            s=marker_size,
            edgecolor="white",
            linewidth=1.25,
        )


def show_box(box: Any, ax: Any) -> None:
    """A green rectangle for a box (x0, y0, x1, y1) in pixels."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in np.asarray(box).reshape(4))
    ax.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, edgecolor="green", facecolor=(0, 0, 0, 0), lw=2)
    )


def show(
    image: Any,
    masks: Any = (),
    points: Any = (),
    labels: Any = (),
    box: Any = None,
    *,
    ax: Any = None,
    scores: Sequence[float] | None = None,
    title: str | None = None,
) -> Any:
    """Draw an image with its masks, points and box on a matplotlib axes; returns the axes.

    Args:
        image: anything ``sam_widget.images.to_rgb`` accepts.
        masks: (H, W) or (N, H, W); mask i gets ``MASK_COLORS[i]``.
        points: (K, 2) pixel coordinates (x, y); labels: K values, 1 foreground, 0 background.
        box: (x0, y0, x1, y1) or None.
        ax: axes to draw on; default: a new figure sized like the image.
        scores: optional, shown in the title as the official notebooks do.
    """
    import matplotlib.pyplot as plt

    from sam_widget.images import to_rgb

    rgb = to_rgb(image)
    if ax is None:
        h, w = rgb.shape[:2]
        scale = 8 / max(h, w)
        _, ax = plt.subplots(figsize=(max(w * scale, 1), max(h * scale, 1)))
    ax.imshow(rgb)
    stack = _mask_stack(masks)
    for i, mask in enumerate(stack):
        show_mask(mask, ax, color=MASK_COLORS[i % len(MASK_COLORS)])
    if len(points):
        show_points(points, labels, ax)
    if box is not None:
        show_box(box, ax)
    if title is None and scores is not None and len(scores):
        title = ", ".join(f"Mask {i + 1}, Score: {float(s):.3f}" for i, s in enumerate(scores))
    if title:
        ax.set_title(title, fontsize=12)
    ax.set_xlim(-0.5, rgb.shape[1] - 0.5)
    ax.set_ylim(rgb.shape[0] - 0.5, -0.5)
    ax.axis("off")
    return ax


# --------------------------------------------------------------------------------------------
# fast PNG without matplotlib


def _star(x: float, y: float, radius: float) -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.42)
    return [(x + r * np.cos(a), y + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool (H, W) mask to (w, h) = size, sampling pixel
    centres."""
    h, w = mask.shape
    out_w, out_h = size
    if (out_w, out_h) == (w, h):
        return mask
    rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.intp), w - 1)
    return mask[rows[:, None], cols[None, :]]


def render(
    image: Any,
    masks: Any = (),
    points: Any = (),
    labels: Any = (),
    box: Any = None,
    *,
    max_size: int = 1024,
    outline: bool = True,
) -> np.ndarray:
    """``render_png`` without the PNG encoding: an RGB uint8 (h, w, 3) array, the image scaled
    so its longer side is at most ``max_size``."""
    from PIL import Image, ImageDraw

    from sam_widget.images import to_rgb

    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, max_size / max(h, w))
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    picture = Image.fromarray(rgb)
    if (out_w, out_h) != (w, h):
        picture = picture.resize((out_w, out_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    canvas = np.asarray(picture, dtype=np.float32).copy()

    stack = _mask_stack(masks)
    if stack.size and stack.shape[1:] != (h, w):
        raise ValueError(f"masks are {stack.shape[1:]}, the image is {(h, w)}")
    edges = []
    for i, mask in enumerate(stack):
        small = _resize_mask(mask, (out_w, out_h))
        color = np.asarray(MASK_COLORS[i % len(MASK_COLORS)], dtype=np.float32)
        canvas[small] = canvas[small] * (1 - MASK_ALPHA) + color * MASK_ALPHA
        if outline:
            padded = np.pad(small, 1)
            interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
            edges.append((small & ~interior, color))
    for edge, color in edges:
        canvas[edge] = color
    result = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(result)
    line = max(2, round(max(out_w, out_h) / 400))
    if box is not None:
        x0, y0, x1, y1 = (float(v) * scale for v in np.asarray(box).reshape(4))
        draw.rectangle([x0, y0, x1, y1], outline=BOX, width=line)
    if len(points):
        xy, labs = _points_labels(points, labels)
        radius = max(6.0, max(out_w, out_h) / 60)
        for (x, y), lab in zip(xy * scale, labs, strict=True):
            fill = POSITIVE if lab == 1 else NEGATIVE
            draw.polygon(_star(x, y, radius), fill=fill, outline=(255, 255, 255), width=1)
    return np.asarray(result)


def render_png(
    image: Any,
    masks: Any = (),
    points: Any = (),
    labels: Any = (),
    box: Any = None,
    max_size: int = 1024,
) -> bytes:
    """PNG bytes of the image with masks (translucent, outlined), points (green/red stars) and
    a box (green), scaled so the longer side is at most ``max_size`` pixels.

    Args:
        image: anything ``sam_widget.images.to_rgb`` accepts, (H, W).
        masks: (H, W) or (N, H, W) bool at the image's full size.
        points: (K, 2) in original pixel coordinates (x right, y down); labels: K of 1 / 0.
        box: (x0, y0, x1, y1) in original pixels, or None.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(render(image, masks, points, labels, box, max_size=max_size)).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()
