"""Simulated annotators: the prompts SAM was trained with, and the clicks it is measured with.

Training (the SAM paper, section 3 and appendix A): the first prompt of an object is a point
drawn uniformly from its mask or its bounding box with noise (standard deviation 10% of the
box side, at most 20 pixels); each later point is drawn uniformly from the error region of the
previous prediction, foreground where the object was missed, background where too much was
taken. These work in the low-res logits' frame (cheap, and what the loss sees).

Measurement (the paper's interactive protocol): every click goes to the centre of the largest
error region, the pixel farthest from the region's edge by a distance transform, at full image
resolution; positive on a missed part, negative on an extra one.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

BOX_NOISE = 0.1  # standard deviation of a box corner's noise, as a fraction of the box side
BOX_NOISE_MAX = 20.0  # ... at most this many input-frame pixels


def first_points(
    targets: torch.Tensor, cell: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One point drawn uniformly inside each low-res target (B, l, l): input-frame coords
    (B, 1, 2) as (x, y) and labels (B, 1) of ones. ``cell``: input pixels per low-res cell."""
    coords = [_uniform_pixel(t.numpy() > 0.5, cell, rng) for t in targets.cpu()]
    return torch.tensor(np.array(coords), dtype=torch.float32)[:, None], torch.ones(
        len(coords), 1, dtype=torch.int64
    )


def noisy_boxes(targets: torch.Tensor, cell: float, rng: np.random.Generator) -> torch.Tensor:
    """The bounding box of each low-res target (B, l, l), each corner moved by Gaussian noise:
    (B, 4) as (x0, y0, x1, y1) in input-frame pixels."""
    boxes = []
    for t in targets.cpu().numpy() > 0.5:
        ys, xs = np.nonzero(t)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float) * cell
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        noise = rng.normal(0.0, 1.0, 4) * np.minimum(BOX_NOISE * side, BOX_NOISE_MAX)
        noise = np.clip(noise, -BOX_NOISE_MAX, BOX_NOISE_MAX)
        box = box + noise
        x0, x1 = sorted(box[[0, 2]])
        y0, y1 = sorted(box[[1, 3]])
        boxes.append([x0, y0, x1, y1])
    return torch.tensor(boxes, dtype=torch.float32)


def corrective_points(
    logits: torch.Tensor,
    targets: torch.Tensor,
    crop: tuple[int, int],
    cell: float,
    rng: np.random.Generator,
    threshold: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A point drawn uniformly from each object's error region (inside ``crop``, the low-res
    rows/columns that cover the image): (B, 1, 2) input-frame coords and (B, 1) labels,
    1 where the prediction missed the object, 0 where it took too much. An object predicted
    exactly gets a point inside itself (a harmless confirmation)."""
    h, w = crop
    pred = (logits.detach()[:, :h, :w] > threshold).cpu().numpy()
    truth = targets[:, :h, :w].cpu().numpy() > 0.5
    coords, labels = [], []
    for p, t in zip(pred, truth, strict=True):
        error = p != t
        region = error if error.any() else t
        x, y = _uniform_pixel(region, cell, rng)
        coords.append((x, y))
        labels.append(int(t[min(int(y / cell), h - 1), min(int(x / cell), w - 1)]))
    return (
        torch.tensor(coords, dtype=torch.float32)[:, None],
        torch.tensor(labels, dtype=torch.int64)[:, None],
    )


def _uniform_pixel(region: np.ndarray, cell: float, rng: np.random.Generator) -> tuple:
    """A uniformly drawn input-frame pixel (x, y) inside a low-res cell of ``region``."""
    ys, xs = np.nonzero(region)
    k = rng.integers(len(ys))
    x = (xs[k] + rng.random()) * cell
    y = (ys[k] + rng.random()) * cell
    return float(np.floor(x)), float(np.floor(y))


def next_click(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float, int] | None:
    """The protocol's next click for a bool (H, W) ground truth and prediction: (x, y, label)
    at the centre of the largest error region, or None when there is no error."""
    best = None
    for label, error in ((1, truth & ~pred), (0, pred & ~truth)):
        if not error.any():
            continue
        # padded: the image's own edge counts as an edge of the region
        dist = ndimage.distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1]
        peak = dist.max()
        if best is None or peak > best[0]:
            # a flat top (a band's middle line) is a set of pixels: take its middle one
            ys, xs = np.nonzero(dist == peak)
            k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
            best = (peak, (float(xs[k]), float(ys[k])), label)
    if best is None:
        return None
    return best[1][0], best[1][1], best[2]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
