"""Low-resolution mask logits -> masks at any size, and the small-region clean-up of logits.

A model family maps its (..., 256, 256) decoder logits to an image through a chain of
bilinear resizes described by a *frame*: the logits are first resized to ``frame`` (h, w),
the top-left ``crop`` of that is kept, and the crop is resized to the output size. SAM
resizes to its padded 1024 square and crops the resized image (frame (1024, 1024), crop the
image's size inside it); SAM 2.1 resizes straight to the output (frame = crop = output size).

``fill_small_regions`` is SAM 2's ``max_hole_area`` / ``max_sprinkle_area`` post-processing,
on the CPU (the official code needs its CUDA extension for it and skips it otherwise).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

Shape = tuple[int, int]


def _pair(size: int | Shape) -> Shape:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def upscale_logits(
    logits: torch.Tensor,
    input_size: Shape,
    output_size: Shape,
    image_size: int | Shape = 1024,
) -> torch.Tensor:
    """Low-res mask logits (..., 256, 256) -> logits (..., H, W) at ``output_size``.

    The same two bilinear steps as the official ``Sam.postprocess_masks`` (to the padded
    ``image_size`` frame, crop the ``input_size`` image region, then to the output size), but
    the first step only upsamples the low-res rows and columns the crop needs. With frame =
    crop = output size (SAM 2.1) it is the one resize of the official ``postprocess_masks``.
    """
    lead = logits.shape[:-2]
    low_h, low_w = logits.shape[-2:]
    x = logits.reshape(-1, 1, low_h, low_w)
    frame = _pair(image_size)
    if frame == tuple(input_size) == tuple(output_size):
        x = F.interpolate(x, tuple(output_size), mode="bilinear", align_corners=False)
        return x.reshape(*lead, *x.shape[-2:])
    fh, fw = frame[0] // low_h, frame[1] // low_w
    # rows/columns of the low-res grid that reach the cropped region, plus one for the
    # bilinear neighbour; upsampling them by the same factor samples the same positions
    rows = min(low_h, -(-input_size[0] // fh) + 1)
    cols = min(low_w, -(-input_size[1] // fw) + 1)
    x = x[..., :rows, :cols]
    x = F.interpolate(x, (rows * fh, cols * fw), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    if tuple(output_size) != tuple(input_size):
        x = F.interpolate(x, tuple(output_size), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *x.shape[-2:])


# Masks straight from the low-res logits (CPU). The official postprocessing is two bilinear
# resizes (to the padded square, crop, to the output size) and a threshold; each step is
# linear along each axis, so the whole chain is one (out, low) matrix per axis, and
# masks = (A @ logits @ B^T) > threshold. Each output pixel depends on at most 3x3 low-res
# logits, so both products run in bands over the few low-res rows/columns each block of
# output needs, and each block is thresholded while it is still in cache: the full-size float
# logits (26 MB for 3 masks at 1200x1800) are never written out. Logits agree with
# `upscale_logits` within float rounding (composed weights), so masks can differ only where
# |logit - threshold| is about 1e-5 of the logits' scale.

_MASK_ROWS = 16  # output rows per block of the vertical pass (few zero weights, in cache)
_MASK_COLS = 128  # output columns per block of the horizontal pass
_MASK_GROUP = 3  # masks resized together: bounds the intermediate (group, rows, W) floats


def _bilinear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F.interpolate(mode="bilinear", align_corners=False)`` along one axis: output i is
    (1 - frac) * x[lo] + frac * x[hi], from source position (i + 0.5) * in / out - 0.5
    clamped at 0."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lo = np.minimum(src.astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, src - lo


def _resize_matrix(low: int, image_size: int, crop: int, out: int) -> np.ndarray:
    """(out, low) float64 weights, along one axis, of the official postprocessing: low-res
    -> the padded ``image_size`` square, keep the first ``crop``, -> ``out``."""
    lo, hi, frac = (a[:crop] for a in _bilinear_taps(image_size, low))
    taps = [(lo, 1.0 - frac), (hi, frac)]  # per cropped index: low-res index, weight
    if out != crop:  # each output mixes two cropped indices, so four low-res taps
        lo2, hi2, frac2 = _bilinear_taps(out, crop)
        taps = [(i[lo2], w[lo2] * (1.0 - frac2)) for i, w in taps] + [
            (i[hi2], w[hi2] * frac2) for i, w in taps
        ]
    m = np.zeros((out, low))
    rows = np.arange(out)
    for index, weight in taps:
        np.add.at(m, (rows, index), weight)  # add: taps can coincide (clamped at the edge)
    return m


def _bands(matrix: np.ndarray, step: int) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """Split an (out, in) resize matrix into blocks of ``step`` output indices:
    (out0, out1, in0, in1, float32 weights (out1 - out0, in1 - in0)) over the inputs used."""
    bands = []
    for start in range(0, matrix.shape[0], step):
        block = matrix[start : start + step]
        used = np.flatnonzero(block.any(axis=0))
        lo, hi = int(used[0]), int(used[-1]) + 1
        weights = torch.from_numpy(np.ascontiguousarray(block[:, lo:hi], dtype=np.float32))
        bands.append((start, start + len(block), lo, hi, weights))
    return bands


@lru_cache(maxsize=16)
def _mask_plan(low: Shape, input_size: Shape, output_size: Shape, frame: Shape):
    """Per axis: the composed (output, low-res) resize, split into bands."""
    axes = []
    for low_n, size, crop, out in zip(low, frame, input_size, output_size, strict=True):
        m = _resize_matrix(low_n, size, crop, out)
        axes.append(m[:, : int(np.flatnonzero(m.any(axis=0))[-1]) + 1])  # low-res used
    rows, cols = axes
    vertical = _bands(rows, _MASK_ROWS)
    horizontal = [
        (a, b, lo, hi, w.t().contiguous()) for a, b, lo, hi, w in _bands(cols, _MASK_COLS)
    ]
    return rows.shape[1], cols.shape[1], vertical, horizontal


@torch.no_grad()
def logits_to_masks(
    logits: torch.Tensor,
    input_size: Shape,
    output_size: Shape,
    threshold: float = 0.0,
    image_size: int | Shape = 1024,
) -> np.ndarray:
    """Bool masks (..., H, W) from CPU low-res logits (..., 256, 256): the official
    postprocessing and threshold, without the full-size float logits (see above).
    ``image_size``: the frame (an int for a square), see the module docstring."""
    lead = logits.shape[:-2]
    low = tuple(logits.shape[-2:])
    height, width = (int(n) for n in output_size)
    if height < 1 or width < 1:
        raise ValueError(f"masks need a positive size, got {height}x{width}")
    n_rows, n_cols, vertical, horizontal = _mask_plan(
        low, tuple(input_size), (height, width), _pair(image_size)
    )
    x = logits.reshape(-1, *low).float()[:, :n_rows, :n_cols]
    masks = np.empty((x.shape[0], height, width), dtype=bool)
    for g in range(0, x.shape[0], _MASK_GROUP):
        part = x[g : g + _MASK_GROUP]
        across = part.new_empty(part.shape[0], n_rows, width)  # horizontal pass done
        for c0, c1, lo, hi, weights in horizontal:
            across[:, :, c0:c1] = part[:, :, lo:hi] @ weights
        for r0, r1, lo, hi, weights in vertical:
            block = weights @ across[:, lo:hi]  # (group, r1 - r0, W)
            np.greater(block.numpy(), threshold, out=masks[g : g + _MASK_GROUP, r0:r1])
    return masks.reshape(*lead, height, width)


# --------------------------------------------------------------------------------------------
# Small holes and sprinkles (SAM 2's max_hole_area / max_sprinkle_area)
# --------------------------------------------------------------------------------------------


def small_components(masks: np.ndarray, max_area: float) -> np.ndarray:
    """Bool (N, h, w): the pixels of ``masks`` whose 8-connected component has at most
    ``max_area`` pixels."""
    from scipy import ndimage

    out = np.zeros(masks.shape, dtype=bool)
    structure = np.ones((3, 3), dtype=bool)
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes <= max_area
        small[0] = False  # the background of this labelling
        out[i] = small[labels]
    return out


@torch.no_grad()
def fill_small_regions(
    logits: torch.Tensor, threshold: float, max_hole_area: float, max_sprinkle_area: float
) -> torch.Tensor:
    """SAM 2's post-processing of low-res logits (..., h, w), before they are resized.

    Holes: 8-connected components of ``logits <= threshold`` with at most ``max_hole_area``
    pixels get the logit ``threshold + 10``; sprinkles: 8-connected components of
    ``logits > threshold`` with at most ``max_sprinkle_area`` pixels get ``threshold - 10``.
    Both are found on the logits as given (as the official code does: filling a hole does not
    join the sprinkles around it). An area of 0 turns a step off. Returns new logits (the
    input is not changed).
    """
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    shape = logits.shape
    flat = logits.reshape(-1, *shape[-2:]).float()
    result = flat.clone()
    if max_hole_area > 0:
        holes = small_components((flat <= threshold).cpu().numpy(), max_hole_area)
        result[torch.from_numpy(holes).to(flat.device)] = threshold + 10.0
    if max_sprinkle_area > 0:
        sprinkles = small_components((flat > threshold).cpu().numpy(), max_sprinkle_area)
        result[torch.from_numpy(sprinkles).to(flat.device)] = threshold - 10.0
    return result.reshape(shape).to(logits.dtype)
