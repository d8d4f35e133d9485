"""A generated segmentation dataset: coloured shapes on textured backgrounds.

For trying fine-tuning without data (the data-engine notebook, the tests, the benchmark):
each image has a few ellipses, rectangles and triangles in flat colours over a background of
stripes and smooth noise; later shapes occlude earlier ones, and each mask is the visible part.
"""

from __future__ import annotations

import numpy as np


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Stripes at a random angle plus smooth colour noise, float (h, w, 3) in 0..255."""
    yy, xx = np.mgrid[:h, :w].astype(float)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 18)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    base = rng.uniform(60, 200, 3)
    contrast = rng.uniform(15, 45, 3)
    coarse = rng.normal(0, 1, (h // 16 + 2, w // 16 + 2, 3))
    from PIL import Image

    smooth = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c].astype(np.float32)).resize((w, h),
                                                                             Image.BICUBIC))
         for c in range(3)], axis=-1)
    return base + contrast * stripes[..., None] + 20 * smooth + rng.normal(0, 6, (h, w, 3))


def _shape(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(float)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
    kind = rng.integers(3)
    if kind == 0:  # ellipse
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    if kind == 1:  # rotated rectangle
        a = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        return (np.abs(u) < rx) & (np.abs(v) < ry)
    # triangle: inside three half-planes
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
    px, py = cx + rx * 1.3 * np.cos(angles), cy + ry * 1.3 * np.sin(angles)
    inside = np.ones((h, w), bool)
    for i in range(3):
        j = (i + 1) % 3
        k = (i + 2) % 3
        side = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
        ref = (px[j] - px[i]) * (py[k] - py[i]) - (py[j] - py[i]) * (px[k] - px[i])
        inside &= side * ref > 0
    return inside


def shapes_dataset(
    n: int = 8,
    size: tuple[int, int] = (96, 128),
    objects: tuple[int, int] = (2, 4),
    seed: int = 0,
    min_pixels: int = 30,
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """``n`` RGB uint8 images of ``size`` (h, w) and, per image, the bool masks of its
    ``objects[0]``..``objects[1]`` shapes (visible parts of at least ``min_pixels``)."""
    rng = np.random.default_rng(seed)
    h, w = size
    images, masks = [], []
    for _ in range(n):
        image = _texture(h, w, rng)
        owner = np.full((h, w), -1)
        count = int(rng.integers(objects[0], objects[1] + 1))
        for k in range(count):
            shape = _shape(h, w, rng)
            color = rng.uniform(0, 255, 3)
            image[shape] = color + rng.normal(0, 4, (int(shape.sum()), 3))
            owner[shape] = k
        image_masks = [owner == k for k in range(count)]
        masks.append([m for m in image_masks if m.sum() >= min_pixels])
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images, masks
