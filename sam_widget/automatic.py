"""Everything mode: masks for the whole image from a grid of point prompts.

`MaskGenerator` takes the official `SamAutomaticMaskGenerator`'s settings and returns its
records (segmentation, area, bbox, predicted_iou, point_coords, stability_score, crop_box), with
the same filtering steps in the same order: predicted IoU, stability score, boxes touching a
crop edge, box NMS per crop, NMS across crops, optional small-region clean-up. It does less
work for the same result: the image side of the decoder is shared by all prompts of a crop
(`Predictor.decode`), masks are upsampled to full size only after the IoU filter, and kept
masks are stored cropped to their box instead of as full-size RLE.

NMS is written in torch (no torchvision); the small-region clean-up uses
``scipy.ndimage.label`` with 8-connectivity, the equivalent of the official
``cv2.connectedComponentsWithStats(mask, 8)`` (scipy comes with scikit-image and numpy stacks;
OpenCV is a large binary dependency for one function).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch
from torch import nn

from sam_widget.export import _as_mask, _run_lengths, encode_rle
from sam_widget.images import to_rgb
from sam_widget.masks import fill_small_regions
from sam_widget.predictor import Predictor

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_UPSCALE_CHUNK = 8  # masks upsampled to full size at once (each H*W float32)


# --------------------------------------------------------------------------------------------
# Geometry helpers (the official definitions, in numpy/torch)
# --------------------------------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points evenly spaced in [0, 1]^2, x fastest."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (x0, y0, x1, y1): the whole image, then (2^i)^2 overlapping crops per layer."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w, crop_h = crop_len(im_w, n, overlap), crop_len(im_h, n, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Bool masks (N, H, W) -> int64 boxes (N, 4) x0, y0, x1, y1 (inclusive); empty -> 0s."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    top = torch.where(rows, ar_h, h).amin(dim=1)
    bottom = torch.where(rows, ar_h, -1).amax(dim=1)
    left = torch.where(cols, ar_w, w).amin(dim=1)
    right = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([left, top, right, bottom], dim=1)
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes.to(torch.int64)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms`` computes it.

    boxes (N, 4) x0, y0, x1, y1; scores (N,). Returns the kept indices (int64), highest score
    first; a box is dropped when its IoU with a kept, higher-scoring box exceeds the threshold.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].float()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    overlaps = (inter / (area[:, None] + area[None, :] - inter) > iou_threshold).numpy()
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[torch.as_tensor(keep, dtype=torch.int64)]


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than area_thresh.

    8-connected components, like the official OpenCV version; when every island is small the
    largest one is kept. Returns the mask and whether it changed.
    """
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = holes ^ mask
    regions, n = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [i for i in range(n + 1) if i not in fill]
        if not fill:  # every region is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Bool (H, W) -> uncompressed COCO RLE {"size": [H, W], "counts": [...]} (column-major)."""
    array = _as_mask(mask)
    h, w = array.shape
    return {"size": [int(h), int(w)], "counts": _run_lengths(array).tolist()}


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


@dataclass
class _Masks:
    """Kept candidates, one row each. Masks are stored cropped to their box."""

    boxes: torch.Tensor  # (N, 4) int64, x0 y0 x1 y1 inclusive, image coordinates
    iou: torch.Tensor  # (N,) float32
    stability: torch.Tensor  # (N,) float32
    points: np.ndarray  # (N, 2) image coordinates, float64 (SAM) or float32 (SAM 2.1)
    crop_boxes: torch.Tensor  # (N, 4) int64
    patches: list[np.ndarray]  # bool (y1 - y0 + 1, x1 - x0 + 1) inside each box

    @classmethod
    def empty(cls) -> _Masks:
        z = torch.zeros(0, 4, dtype=torch.int64)
        e = torch.zeros(0)
        return cls(z, e, e, np.zeros((0, 2)), z, [])

    def __len__(self) -> int:
        return len(self.patches)

    def take(self, keep: torch.Tensor | np.ndarray) -> _Masks:
        idx = torch.as_tensor(keep)
        if idx.dtype == torch.bool:
            idx = torch.nonzero(idx).flatten()
        ids = idx.tolist()
        return _Masks(
            self.boxes[idx],
            self.iou[idx],
            self.stability[idx],
            self.points[ids].reshape(-1, 2),
            self.crop_boxes[idx],
            [self.patches[i] for i in ids],
        )

    @classmethod
    def cat(cls, parts: list[_Masks]) -> _Masks:
        parts = [p for p in parts if len(p)] or [cls.empty()]
        return cls(
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.iou for p in parts]),
            torch.cat([p.stability for p in parts]),
            np.concatenate([p.points for p in parts]),
            torch.cat([p.crop_boxes for p in parts]),
            [m for p in parts for m in p.patches],
        )

    def full_mask(self, i: int, shape: tuple[int, int]) -> np.ndarray:
        mask = np.zeros(shape, dtype=bool)
        x0, y0, x1, y1 = self.boxes[i].tolist()
        mask[y0 : y1 + 1, x0 : x1 + 1] = self.patches[i]
        return mask


class MaskGenerator:
    """Masks for everything in an image, like the official ``SamAutomaticMaskGenerator``
    (SAM) and ``SAM2AutomaticMaskGenerator`` (SAM 2.1).

    ``model_or_predictor``: a SAM or SAM 2.1 model or a `Predictor` (whose embedding cache is
    then shared; its current image is untouched). The settings and their defaults are the
    official ones; ``pred_iou_thresh=None`` is the model family's official default (0.88 for
    SAM, 0.8 for SAM 2.1); ``point_grids`` replaces ``points_per_side`` with explicit normalised
    (N, 2) grids, one per crop layer.

    ``min_mask_region_area`` follows each official generator: for SAM, small holes and islands
    of the kept full-size masks are removed and NMS runs again; for SAM 2.1 it is the
    predictor's ``max_hole_area`` and ``max_sprinkle_area`` on the low-res logits (which the
    official code applies only with its CUDA extension; here on any device). SAM 2.1 only:
    ``use_m2m`` refines each mask once more with its own logits as mask input (single-mask
    output), ``multimask_output=False`` asks each point for one mask.
    """

    def __init__(
        self,
        model_or_predictor: nn.Module | Predictor,
        *,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if points_per_side is not None:
            self.point_grids = [
                build_point_grid(int(points_per_side / crop_n_points_downscale_factor**i))
                for i in range(crop_n_layers + 1)
            ]
        else:
            if len(point_grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1})")
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        if isinstance(model_or_predictor, Predictor):
            self.predictor = model_or_predictor
        else:
            self.predictor = Predictor(model_or_predictor)
        self.sam2 = self.predictor.family.name == "sam2"
        if (use_m2m or not multimask_output) and not self.sam2:
            raise ValueError(
                "use_m2m and multimask_output=False are settings of SAM 2's generator; "
                "this is a SAM model"
            )
        if pred_iou_thresh is None:
            pred_iou_thresh = self.predictor.family.default_pred_iou_thresh
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    def generate(
        self, image: Any, progress: Callable[[int, int], None] | None = None
    ) -> list[dict[str, Any]]:
        """Masks for the whole image, as a list of records with the official keys.

        ``progress(done, total)`` is called after each batch of point prompts. Each record:
        segmentation (bool (H, W), or an RLE dict per ``output_mode``), area (int), bbox
        [x, y, w, h], predicted_iou, point_coords [[x, y]], stability_score, crop_box [x, y, w, h].
        """
        rgb = to_rgb(image)
        orig_size = rgb.shape[:2]
        crop_boxes, layers = generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        total = sum(-(-len(self.point_grids[layer]) // self.points_per_batch) for layer in layers)
        counter = [0, total, progress]
        self.found = 0  # masks kept so far (before the final de-duplication across crops)
        parts = [  # each crop is encoded as a handle: the predictor's current image is untouched
            self._process_crop(rgb, box, layer, orig_size, counter)
            for box, layer in zip(crop_boxes, layers, strict=True)
        ]
        data = _Masks.cat(parts)
        if len(crop_boxes) > 1 and len(data):
            cb = data.crop_boxes
            scores = 1 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
            data = data.take(box_nms(data.boxes, scores, self.crop_nms_thresh))
        if self.min_mask_region_area > 0 and len(data) and not self.sam2:
            data = self._clean_small_regions(
                data, orig_size, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        return self._records(data, orig_size)

    @torch.no_grad()
    def _process_crop(self, rgb, crop_box, layer, orig_size, counter) -> _Masks:
        x0, y0, x1, y1 = crop_box
        cropped = rgb[y0:y1, x0:x1]
        crop_h, crop_w = cropped.shape[:2]
        predictor = self.predictor
        state = predictor.encode(cropped)
        points = self.point_grids[layer] * np.array([crop_w, crop_h])
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            # model-frame coordinates rounded as the official generator of the family does
            coords, batch = predictor.family.grid_points(
                points[start : start + self.points_per_batch], (crop_h, crop_w), state.input_size
            )
            coords = coords[:, None, :]
            labels = np.ones((len(batch), 1), dtype=np.int32)
            low_res, iou = predictor.decode(
                state, coords, labels, None, None, self.multimask_output
            )
            m = low_res.shape[1]
            low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
            if self.use_m2m:  # refine each mask with its own (clamped) logits as mask input
                low_res, iou = predictor.decode(
                    state,
                    coords.repeat_interleave(m, dim=0),
                    np.ones((len(low_res), 1), dtype=np.int32),
                    None,
                    predictor.family.output_logits(low_res)[:, None],
                    False,
                )
                low_res, iou = low_res[:, 0], iou[:, 0]
            parts.append(
                self._filter_batch(
                    state,
                    low_res,
                    iou.float(),
                    np.repeat(batch, m, axis=0),
                    crop_box,
                    orig_size,
                )
            )
            counter[0] += 1
            self.found += len(parts[-1])
            if counter[2] is not None:
                counter[2](counter[0], counter[1])
        data = _Masks.cat(parts)
        data = data.take(box_nms(data.boxes, data.iou, self.box_nms_thresh))
        offset = torch.tensor([x0, y0, x0, y0])
        data.boxes = data.boxes + offset
        data.points = data.points + np.array([x0, y0], dtype=data.points.dtype)
        data.crop_boxes = torch.tensor([crop_box] * len(data), dtype=torch.int64).reshape(-1, 4)
        return data

    def _filter_batch(self, state, low_res, iou, points, crop_box, orig_size) -> _Masks:
        """IoU filter on the low-res output, then full-size logits only for the survivors."""
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            low_res, iou, points = low_res[keep], iou[keep], points[keep.cpu().numpy()]
        # the upscaling and thresholds run on the model's device; what is kept (scores, boxes,
        # cropped masks) lives on the CPU, where NMS and the records are made
        iou = iou.cpu()
        threshold = self.predictor.mask_threshold
        offset = self.stability_score_offset
        if self.sam2 and self.min_mask_region_area > 0:  # SAM 2: holes and specks, low-res
            area = self.min_mask_region_area
            low_res = fill_small_regions(low_res, threshold, area, area)
        crop_size = (crop_box[3] - crop_box[1], crop_box[2] - crop_box[0])
        kept: list[int] = []
        stabilities, boxes, patches = [], [], []
        for start in range(0, len(low_res), _UPSCALE_CHUNK):
            logits = self.predictor.upscale(
                low_res[start : start + _UPSCALE_CHUNK], crop_size, state
            )
            inter = (logits > threshold + offset).sum(dim=(1, 2))
            union = (logits > threshold - offset).sum(dim=(1, 2))
            stability = (inter.float() / union.float()).cpu()
            masks = logits > threshold
            del logits
            for j in range(len(masks)):
                if self.stability_score_thresh > 0.0 and not (
                    stability[j] >= self.stability_score_thresh
                ):
                    continue
                box = masks_to_boxes(masks[j : j + 1])[0].cpu()
                if _near_crop_edge(box, crop_box, orig_size):
                    continue
                bx0, by0, bx1, by1 = box.tolist()
                kept.append(start + j)
                stabilities.append(stability[j])
                boxes.append(box)
                patches.append(masks[j, by0 : by1 + 1, bx0 : bx1 + 1].cpu().numpy().copy())
        if not kept:
            return _Masks.empty()
        idx = torch.as_tensor(kept)
        return _Masks(
            boxes=torch.stack(boxes),
            iou=iou[idx],
            stability=torch.stack(stabilities),
            points=points[kept].reshape(-1, 2),
            crop_boxes=torch.zeros(len(kept), 4, dtype=torch.int64),
            patches=patches,
        )

    def _clean_small_regions(self, data: _Masks, orig_size, nms_thresh: float) -> _Masks:
        """Fill small holes, drop small islands, then NMS again preferring unchanged masks."""
        new_masks, scores = [], []
        for i in range(len(data)):
            mask = data.full_mask(i, orig_size)
            mask, changed_holes = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, changed_islands = remove_small_regions(mask, self.min_mask_region_area, "islands")
            new_masks.append(mask)
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.as_tensor(np.stack(new_masks))
        boxes = masks_to_boxes(masks)
        keep = box_nms(boxes, torch.as_tensor(scores), nms_thresh)
        for i in keep.tolist():
            if scores[i] == 0.0:
                x0, y0, x1, y1 = boxes[i].tolist()
                data.boxes[i] = boxes[i]
                data.patches[i] = new_masks[i][y0 : y1 + 1, x0 : x1 + 1].copy()
        return data.take(keep)

    def _records(self, data: _Masks, orig_size) -> list[dict[str, Any]]:
        records = []
        for i in range(len(data)):
            mask = data.full_mask(i, orig_size)
            if self.output_mode == "binary_mask":
                segmentation: Any = mask
            elif self.output_mode == "uncompressed_rle":
                segmentation = mask_to_rle(mask)
            else:
                segmentation = encode_rle(mask)
            x0, y0, x1, y1 = data.boxes[i].tolist()
            cx0, cy0, cx1, cy1 = data.crop_boxes[i].tolist()
            records.append(
                {
                    "segmentation": segmentation,
                    "area": int(data.patches[i].sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": float(data.iou[i]),
                    "point_coords": [data.points[i].tolist()],
                    "stability_score": float(data.stability[i]),
                    "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
                }
            )
        return records


def _near_crop_edge(box: torch.Tensor, crop_box: list[int], orig_size, atol: float = 20.0) -> bool:
    """Whether a box (crop coordinates) touches a crop edge that is not an image edge."""
    x0, y0 = crop_box[0], crop_box[1]
    b = (box + torch.tensor([x0, y0, x0, y0])).float()
    crop = torch.tensor(crop_box, dtype=torch.float)
    image = torch.tensor([0, 0, orig_size[1], orig_size[0]], dtype=torch.float)
    near_crop = torch.isclose(b, crop, atol=atol, rtol=0)
    near_image = torch.isclose(b, image, atol=atol, rtol=0)
    return bool((near_crop & ~near_image).any())
