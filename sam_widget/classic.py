"""The weights-free engine: SAM's prompt interface on a superpixel hierarchy (scikit-image).

`ClassicPredictor` implements the `Engine` protocol of `sam_widget.predictor`, so the widget,
the exporters and the CLI use it exactly like SAM's `Predictor` when no SAM weights are at hand.

How it works (all heavy work happens once per image in `set_image`, like SAM's encoder):

1. the image is resized so its longest side is ``working_size`` pixels and cut into compact
   superpixels by SLIC (``skimage.segmentation.slic``);
2. each superpixel gets a feature vector: mean CIELAB colour and a texture measure (the local
   standard deviation of lightness);
3. a region adjacency graph (``skimage.graph.RAG``) over the superpixels is merged greedily,
   cheapest pair first, by ``skimage.graph.merge_hierarchical`` with a Ward-like cost
   (``sqrt(n1 n2 / (n1 + n2)) * |f1 - f2|``) scaled by the strength of the image edge along
   the two regions' shared boundary (Sobel of the smoothed Lab image), until one is left.
   Recording every merge gives a binary tree of regions: the hierarchy every prompt is
   answered from.

`predict` then only walks that tree (a few milliseconds): the regions that contain every
foreground point and no background point form a chain from small to large; the three most
*persistent* regions of that chain (those that survive longest before merging with their
neighbour, i.e. whose cost to merge outward is much higher than the cost that formed them)
are the three candidates, fine to coarse: SAM's part / object / group ambiguity. Each score
is ``1 - birth / death`` of the region, a contrast ratio in [0, 1). A box ranks regions by
how well they fill it. ``mask_input`` (the logits of an earlier prediction) is a prior that
re-ranks the candidates. Logits are signed distances to the mask boundary in the same
256x256 frame SAM uses, so they can be fed back as ``mask_input``.

Why scikit-image: it is already in every scientific Python stack (pure wheels for all
platforms, BSD licensed, maintained), its SLIC superpixels follow object boundaries well and
its RAG merging is the textbook region-merging algorithm, with a hook to record each merge.
OpenCV's GrabCut needs a box and iterates a graph cut per prompt (hundreds of ms at 1 Mpx),
too slow for hover, and the opencv wheels are large with GUI/headless variants that conflict.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .images import to_rgb
from .predictor import Prediction, Shape

LOWRES = 256  # side of SAM's low-resolution logit frame (1024 / 4)
_LOGIT_CLIP = 20.0  # logits saturate at +-this value, as SAM's roughly do
_LOGIT_BAND = 3  # ... at this many low-res pixels from the mask boundary


@dataclass(eq=False)
class _Hierarchy:
    """Everything `predict` needs for one image (immutable once built).

    N leaves (superpixels) and M = 2N - 1 tree nodes; node ids < N are leaves, the rest are
    merges in the order they happened, so children always precede their parent.
    """

    image_shape: Shape  # (H, W) of the original image
    leaves: np.ndarray  # (Hw, Ww) int32 superpixel label per working-resolution pixel
    leaves_lowres: np.ndarray  # (h, w) int32 labels in the 256 frame (top-left h x w of it)
    leaf_area: np.ndarray  # (N,) pixels per leaf at working resolution
    parent: np.ndarray  # (M,) parent node, -1 for the root
    height: np.ndarray  # (M,) merge cost that formed the node (0 for leaves)
    persistence: np.ndarray  # (M,) log((death + eps) / (birth + eps))
    area: np.ndarray  # (M,) pixels at working resolution
    bbox: np.ndarray  # (M, 4) x0, y0, x1, y1 (exclusive) at working resolution
    rank: np.ndarray  # (N,) position of each leaf in dendrogram order
    order: np.ndarray  # (N,) leaves in dendrogram order
    start: np.ndarray  # (M,) node n covers order[start[n]:end[n]]
    end: np.ndarray  # (M,)
    _resized: dict[Shape, np.ndarray] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_area)

    @property
    def working_shape(self) -> Shape:
        return self.leaves.shape  # type: ignore[return-value]

    def leaves_at(self, height: int, width: int) -> np.ndarray:
        """(height, width) leaf labels, nearest-neighbour resized (cached per size)."""
        key = (height, width)
        with self._lock:
            cached = self._resized.get(key)
        if cached is None:
            cached = _resize_nearest(self.leaves, height, width)
            with self._lock:
                if len(self._resized) > 4:
                    self._resized.pop(next(iter(self._resized)))
                self._resized[key] = cached
        return cached

    def node_leaves(self, node: int) -> np.ndarray:
        """(k,) leaf ids that make up ``node``."""
        return self.order[self.start[node] : self.end[node]]

    def contains(self, leaf: int) -> np.ndarray:
        """(M,) bool: which nodes contain ``leaf``."""
        r = self.rank[leaf]
        return (self.start <= r) & (r < self.end)


def _resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer (h, w) array to (height, width)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.intp), w - 1)
    return labels[rows[:, None], cols[None, :]]


def _lowres_shape(h: int, w: int) -> Shape:
    """Size of the image inside SAM's 256x256 logit frame (longest side 256, top-left)."""
    scale = LOWRES / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


class ClassicPredictor:
    """A weights-free segmentation engine with SAM's `Predictor` interface.

    >>> p = ClassicPredictor()
    >>> p.set_image(image)                       # ~0.3-1 s: superpixels + region hierarchy
    >>> pred = p.predict(points=[(x, y)], labels=[1])
    >>> pred.masks.shape, pred.scores.shape      # (3, H, W), (3,) fine -> coarse

    Args:
        working_size: longest side (pixels) of the resolution the hierarchy is built at;
            masks are returned at any size, with boundaries that are this precise.
        n_segments: approximate number of SLIC superpixels (the finest parts a click can get).
        compactness: SLIC's colour / space trade-off (higher = more regular superpixels).
        texture_weight: weight of the texture feature relative to colour in merge costs.
    """

    name = "classic"

    def __init__(
        self,
        *,
        working_size: int = 512,
        n_segments: int = 1200,
        compactness: float = 10.0,
        texture_weight: float = 1.0,
    ) -> None:
        if working_size < 16:
            raise ValueError(f"working_size must be at least 16 pixels, got {working_size}")
        if n_segments < 2:
            raise ValueError(f"n_segments must be at least 2, got {n_segments}")
        self.working_size = int(working_size)
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.texture_weight = float(texture_weight)
        self._h: _Hierarchy | None = None

    def __repr__(self) -> str:
        shape = None if self._h is None else self._h.image_shape
        return f"ClassicPredictor(working_size={self.working_size}, image_shape={shape})"

    # -- Engine protocol ------------------------------------------------------------------

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def image_shape(self) -> Shape | None:
        return None if self._h is None else self._h.image_shape

    @property
    def superpixels(self) -> np.ndarray:
        """(Hw, Ww) int32 superpixel label per pixel at the working resolution: the finest
        regions a prompt can select (what ``set_image`` computed, like SAM's embedding)."""
        if self._h is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._h.leaves

    def encode(self, image: Any) -> _Hierarchy:
        """Build the region hierarchy for ``image`` (numpy, PIL image or path) without making
        it the current image; returns its handle for ``predict(..., image=handle)``."""
        return self._build(to_rgb(image))

    def set_image(self, image: Any) -> _Hierarchy:
        """Build the region hierarchy for ``image`` and make it the current image; returns its
        handle. An interrupted call leaves no image set."""
        self._h = None
        self._h = self.encode(image)
        return self._h

    def predict(
        self,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        image: _Hierarchy | None = None,
    ) -> Prediction:
        """Masks for the prompts, fine to coarse.

        Args:
            points: (K, 2) pixel coordinates (x right, y down) in the original image.
            labels: (K,) 1 for foreground, 0 for background.
            box: (4,) x0, y0, x1, y1 in pixels, or (B, 4) for B boxes at once.
            mask_input: (1, 256, 256) or (256, 256) logits of an earlier prediction.
            multimask: three candidates (part, object, group) if True, else the best one.
            image: a handle from `encode` / `set_image` (default: the current image).

        Returns:
            `Prediction` with scores (C,) (or (B, C) for B boxes), logits (C, 256, 256)
            (or (B, C, 256, 256)) and lazy masks (C, H, W) (or (B, C, H, W)).
        """
        if image is not None and not isinstance(image, _Hierarchy):
            raise ValueError(
                "image= must be a handle returned by encode() or set_image(), "
                f"got {type(image).__name__}"
            )
        h = self._h if image is None else image
        if h is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        pts, lbl = _check_points(points, labels, h.image_shape)
        boxes = _check_boxes(box, h.image_shape)
        prior = _check_mask_input(mask_input)
        if len(pts) == 0 and boxes is None and prior is None:
            raise ValueError(
                "nothing to segment: give points (with labels), a box, or a mask_input"
            )
        hh, ww = h.working_shape
        H, W = h.image_shape
        sx, sy = ww / W, hh / H
        pos = _leaves_at(h, pts[lbl == 1], sx, sy)
        neg = _leaves_at(h, pts[lbl == 0], sx, sy)
        prior_leaves = None if prior is None else _prior_leaves(h, prior)
        count = 3 if multimask else 1

        if boxes is None:
            tables, scores = _answer(h, pos, neg, None, prior_leaves, count)
        else:
            answers = [
                _answer(h, pos, neg, b * np.array([sx, sy, sx, sy]), prior_leaves, count)
                for b in boxes
            ]
            tables = np.stack([a[0] for a in answers])  # (B, C, N)
            scores = np.stack([a[1] for a in answers])  # (B, C)
            if np.ndim(box) == 1:
                tables, scores = tables[0], scores[0]

        logits = _signed_distance_logits(h, tables)

        def to_masks(size: Shape) -> np.ndarray:
            labels_at = h.leaves_at(*size)
            return tables[..., labels_at]  # (..., C, height, width)

        return Prediction(
            scores=scores.astype(np.float32),
            logits=logits,
            image_shape=h.image_shape,
            to_masks=to_masks,
        )

    # -- building the hierarchy -------------------------------------------------------------

    def _build(self, rgb: np.ndarray) -> _Hierarchy:
        from PIL import Image
        from scipy import ndimage as ndi
        from skimage.color import rgb2lab
        from skimage.segmentation import relabel_sequential, slic

        H, W = rgb.shape[:2]
        # like SAM's encoder, always work at one size (longest side working_size): small
        # images are enlarged so superpixel edges fall between their pixels
        scale = self.working_size / max(H, W)
        hh, ww = max(1, round(H * scale)), max(1, round(W * scale))
        if (hh, ww) != (H, W):  # area averaging when shrinking (alias-free), else bilinear
            method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
            rgb = np.asarray(Image.fromarray(rgb).resize((ww, hh), method))
        work = rgb.astype(np.float32) / 255.0
        lab = rgb2lab(work).astype(np.float32)  # L in [0, 100], a/b roughly [-100, 100]
        n_segments = max(2, min(self.n_segments, hh * ww // 16))
        # slic rescales its input to [0, 1] before use; given RGB in [0, 1] it converts
        # to Lab itself, where its default compactness is meant to be used. Smoothing
        # first (sigma) keeps noise and fine texture from fragmenting the superpixels.
        leaves = slic(
            work,
            n_segments=n_segments,
            compactness=self.compactness,
            sigma=1.0,
            start_label=0,
            convert2lab=True,
            channel_axis=-1,
            enforce_connectivity=True,
            max_num_iter=6,
        )
        leaves = relabel_sequential(leaves)[0].astype(np.int32)
        n = int(leaves.max()) + 1

        # per-leaf features: mean L, a, b and mean local std of L (texture), all in Lab units
        lum = lab[..., 0]
        mean = ndi.uniform_filter(lum, 5)
        texture = np.sqrt(np.maximum(ndi.uniform_filter(lum * lum, 5) - mean * mean, 0))
        flat = leaves.ravel()
        area = np.bincount(flat, minlength=n).astype(np.float64)
        channels = [lab[..., 0], lab[..., 1], lab[..., 2], texture * self.texture_weight]
        sums = np.stack([np.bincount(flat, c.ravel(), minlength=n) for c in channels], axis=1)

        # edge strength: gradient magnitude of the smoothed Lab image (Sobel, per channel)
        smooth = ndi.gaussian_filter(lab, sigma=(1, 1, 0))
        edge = np.sqrt(
            sum(ndi.sobel(smooth[..., c], axis=ax) ** 2 for c in range(3) for ax in (0, 1))
        )
        edges, boundary = _adjacent_pairs(leaves, edge)
        parent, height = _merge_tree(n, area, sums, edges, boundary)
        tree = _tree_arrays(leaves, n, parent, height, area)
        return _Hierarchy(
            image_shape=(H, W),
            leaves=leaves,
            leaves_lowres=_resize_nearest(leaves, *_lowres_shape(H, W)),
            leaf_area=area,
            **tree,
        )


# -- hierarchy construction helpers -----------------------------------------------------------


def _adjacent_pairs(leaves: np.ndarray, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, 2) unique pairs (a < b) of 4-connected neighbouring labels, and (E, 2) the sum of
    ``edge`` (a per-pixel edge strength) along their shared boundary and its length."""
    a = np.concatenate([leaves[:, :-1].ravel(), leaves[:-1, :].ravel()])
    b = np.concatenate([leaves[:, 1:].ravel(), leaves[1:, :].ravel()])
    strength = np.concatenate(
        [
            np.maximum(edge[:, :-1], edge[:, 1:]).ravel(),
            np.maximum(edge[:-1, :], edge[1:, :]).ravel(),
        ]
    )
    differ = a != b
    n = int(leaves.max()) + 1
    lo = np.minimum(a[differ], b[differ]).astype(np.int64)
    hi = np.maximum(a[differ], b[differ]).astype(np.int64)
    key, index = np.unique(lo * n + hi, return_inverse=True)
    total = np.bincount(index, strength[differ], minlength=len(key))
    length = np.bincount(index, minlength=len(key)).astype(np.float64)
    return np.stack([key // n, key % n], axis=1), np.stack([total, length], axis=1)


def _ward(c1: float, s1: np.ndarray, c2: float, s2: np.ndarray) -> float:
    """Ward-like merge cost: sqrt(n1 n2 / (n1 + n2)) * |mean1 - mean2|."""
    diff = s1 / c1 - s2 / c2
    return float(np.sqrt(c1 * c2 / (c1 + c2)) * np.sqrt(diff @ diff))


def _cost(c1: float, s1: np.ndarray, c2: float, s2: np.ndarray, boundary: np.ndarray,
          typical_edge: float) -> float:
    """Merge cost: the Ward-like colour/texture cost, scaled by how strong the edge along
    the shared boundary is compared with a typical edge (weak edges merge first)."""
    mean_edge = boundary[0] / max(boundary[1], 1.0)
    return _ward(c1, s1, c2, s2) * (mean_edge + typical_edge) / (2 * typical_edge)


def _merge_tree(
    n: int, area: np.ndarray, sums: np.ndarray, edges: np.ndarray, boundary: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the region adjacency graph down to one region; return (parent, height) per node.

    Uses `skimage.graph.merge_hierarchical` with a merge hook that records each merge as a
    new tree node. Nodes 0..n-1 are the leaves, node n + i is the i-th merge.
    """
    from skimage.graph import RAG, merge_hierarchical

    rag = RAG()
    for i in range(n):
        rag.add_node(i, labels=[i], count=area[i], sum=sums[i].copy(), tree=i)
    edge_means = boundary[:, 0] / np.maximum(boundary[:, 1], 1.0)
    typical = float(np.median(edge_means)) + 1e-6 if len(edge_means) else 1.0
    for (a, b), bd in zip(edges, boundary, strict=True):
        cost = _cost(area[a], sums[a], area[b], sums[b], bd, typical)
        rag.add_edge(int(a), int(b), weight=cost, boundary=bd)

    parent = np.full(2 * n - 1, -1, dtype=np.int64)
    height = np.zeros(2 * n - 1, dtype=np.float64)
    next_node = [n]

    def on_merge(graph: Any, src: int, dst: int) -> None:
        s, d = graph.nodes[src], graph.nodes[dst]
        node = next_node[0]
        next_node[0] += 1
        parent[s["tree"]] = node
        parent[d["tree"]] = node
        # costs are not always monotone under adjacency constraints: keep heights ordered
        height[node] = max(graph[src][dst]["weight"], height[s["tree"]], height[d["tree"]])
        d["tree"] = node
        d["count"] = s["count"] + d["count"]
        d["sum"] = s["sum"] + d["sum"]

    def new_weight(graph: Any, src: int, dst: int, other: int) -> dict[str, Any]:
        d, o = graph.nodes[dst], graph.nodes[other]
        bd = np.zeros(2)
        for node in (src, dst):  # the merged region's boundary with `other` is both of theirs
            if graph.has_edge(node, other):
                bd = bd + graph[node][other]["boundary"]
        cost = _cost(d["count"], d["sum"], o["count"], o["sum"], bd, typical)
        return {"weight": cost, "boundary": bd}

    labels = np.arange(n)  # merge_hierarchical relabels this; we only want the merge hooks
    merge_hierarchical(labels, rag, np.inf, False, True, on_merge, new_weight)

    # a graph with several components (cannot happen for a pixel grid, but be safe) is joined
    # by extra merges above the highest one
    roots = [data["tree"] for _, data in rag.nodes(data=True)]
    top = float(height.max()) if n > 1 else 1.0
    while len(roots) > 1:
        a, b = roots.pop(), roots.pop()
        node = next_node[0]
        next_node[0] += 1
        parent[a] = parent[b] = node
        top = top * 2 + 1
        height[node] = top
        roots.append(node)
    return parent, height


def _tree_arrays(
    leaves: np.ndarray, n: int, parent: np.ndarray, height: np.ndarray, leaf_area: np.ndarray
) -> dict[str, np.ndarray]:
    """Areas, boxes, dendrogram order and persistence of every node of the merge tree."""
    from scipy import ndimage as ndi

    m = 2 * n - 1
    area = np.zeros(m)
    area[:n] = leaf_area
    bbox = np.zeros((m, 4))
    for i, sl in enumerate(ndi.find_objects(leaves + 1)):
        if sl is None:  # relabel_sequential leaves no gaps; an empty leaf is harmless
            bbox[i] = (0, 0, 0, 0)
            continue
        bbox[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    children: list[list[int]] = [[] for _ in range(m)]
    for child in range(m - 1):
        children[parent[child]].append(child)
    for node in range(n, m):  # children precede parents
        kids = children[node]
        area[node] = area[kids].sum()
        bbox[node, :2] = bbox[kids, :2].min(axis=0)
        bbox[node, 2:] = bbox[kids, 2:].max(axis=0)

    # dendrogram order: every node's leaves are one contiguous run of `order`
    start = np.zeros(m, dtype=np.int64)
    end = np.zeros(m, dtype=np.int64)
    order = np.empty(n, dtype=np.int64)
    root = m - 1
    cursor = 0
    stack: list[tuple[int, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            end[node] = cursor
            continue
        start[node] = cursor
        if node < n:
            order[cursor] = node
            cursor += 1
            end[node] = cursor
            continue
        stack.append((node, True))
        stack.extend((kid, False) for kid in reversed(children[node]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    # persistence: how much more it costs to merge a region outward than to form it
    positive = height[n:][height[n:] > 0]
    # a noise floor for merge costs: regions formed and absorbed below it (a few superpixels
    # of the same surface) are not distinct, so they cannot outscore objects
    eps = float(np.percentile(positive, 90)) if positive.size else 1.0
    death = np.where(parent >= 0, height[np.maximum(parent, 0)], 2 * height.max() + eps)
    persistence = np.log((death + eps) / (height + eps))
    return dict(
        parent=parent,
        height=height,
        persistence=persistence,
        area=area,
        bbox=bbox,
        rank=rank,
        order=order,
        start=start,
        end=end,
    )


# -- prompt validation --------------------------------------------------------------------


def _check_points(
    points: Any, labels: Any, image_shape: Shape
) -> tuple[np.ndarray, np.ndarray]:
    if points is None or (hasattr(points, "__len__") and len(points) == 0):
        if labels is not None and len(np.atleast_1d(labels)) > 0:
            raise ValueError("labels were given without points")
        return np.zeros((0, 2)), np.zeros((0,), dtype=np.int64)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (K, 2) pixel coordinates (x, y), got shape {pts.shape}")
    if labels is None:
        raise ValueError("points need labels: 1 for foreground, 0 for background, one per point")
    lbl = np.atleast_1d(np.asarray(labels))
    if lbl.shape != (len(pts),):
        raise ValueError(f"got {len(pts)} points but labels of shape {lbl.shape}")
    if not np.isin(lbl, (0, 1)).all():
        raise ValueError(f"labels must be 1 (foreground) or 0 (background), got {lbl.tolist()}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or infinite coordinates")
    H, W = image_shape
    outside = (pts[:, 0] < 0) | (pts[:, 0] > W) | (pts[:, 1] < 0) | (pts[:, 1] > H)
    if outside.any():
        x, y = pts[np.argmax(outside)]
        raise ValueError(f"point ({x:g}, {y:g}) lies outside the {W}x{H} image (x right, y down)")
    return pts, lbl.astype(np.int64)


def _check_boxes(box: Any, image_shape: Shape) -> np.ndarray | None:
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
        raise ValueError(f"box must be (x0, y0, x1, y1) or (B, 4), got shape {np.shape(box)}")
    if not np.isfinite(b).all():
        raise ValueError("box contains NaN or infinite coordinates")
    if ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError(f"box must satisfy x0 < x1 and y0 < y1, got {b.tolist()}")
    H, W = image_shape
    b = b.copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, W)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, H)
    if ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError(f"box lies outside the {W}x{H} image")
    return b


def _check_mask_input(mask_input: Any) -> np.ndarray | None:
    if mask_input is None:
        return None
    m = np.asarray(mask_input, dtype=np.float32)
    if m.shape == (1, LOWRES, LOWRES):
        m = m[0]
    if m.shape != (LOWRES, LOWRES):
        raise ValueError(
            f"mask_input must be (1, 256, 256) logits (one of pred.logits), got {m.shape}"
        )
    if not np.isfinite(m).all():
        raise ValueError("mask_input contains NaN or infinite values")
    return m


# -- answering prompts ----------------------------------------------------------------------


def _leaves_at(h: _Hierarchy, pts: np.ndarray, sx: float, sy: float) -> np.ndarray:
    hh, ww = h.working_shape
    cols = np.clip((pts[:, 0] * sx).astype(np.intp), 0, ww - 1)
    rows = np.clip((pts[:, 1] * sy).astype(np.intp), 0, hh - 1)
    return h.leaves[rows, cols]


def _prior_leaves(h: _Hierarchy, prior: np.ndarray) -> np.ndarray:
    """(N,) bool: leaves whose mean prior logit (in the 256 frame) is positive."""
    lh, lw = h.leaves_lowres.shape
    flat = h.leaves_lowres.ravel()
    n = h.n_leaves
    total = np.bincount(flat, prior[:lh, :lw].ravel(), minlength=n)
    return total > 0  # mean logit > 0  <=>  sum > 0 (leaves too small for the frame: False)


def _choose(
    nodes: np.ndarray, rank_score: np.ndarray, area: np.ndarray, count: int
) -> np.ndarray:
    """Up to ``count`` nodes with the best rank_score, of clearly different sizes, small first."""
    chosen: list[int] = []
    for i in np.argsort(-rank_score, kind="stable"):
        a = area[i]
        if all(max(a, area[j]) / max(min(a, area[j]), 1.0) >= 1.3 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == count:
            break
    if len(chosen) < count:  # too few distinct sizes: fill with the best remaining
        for i in np.argsort(-rank_score, kind="stable"):
            if int(i) not in chosen:
                chosen.append(int(i))
            if len(chosen) == count:
                break
    while len(chosen) < count:
        chosen.append(chosen[-1])
    chosen.sort(key=lambda i: area[i])
    return nodes[chosen]


def _answer(
    h: _Hierarchy,
    pos: np.ndarray,
    neg: np.ndarray,
    box: np.ndarray | None,
    prior: np.ndarray | None,
    count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(count, N) bool leaf tables and (count,) scores for one prompt state."""
    n = h.n_leaves
    total_area = float(h.leaf_area.sum())
    contrast = 1.0 - np.exp(-h.persistence)  # (M,) in [0, 1)
    neg = np.setdiff1d(neg, pos)  # a point wins over a negative point on the same superpixel
    free = np.ones(len(h.parent), dtype=bool)
    for leaf in neg:
        free &= ~h.contains(leaf)

    fit = None
    if box is not None:
        x0, y0, x1, y1 = box
        hh, ww = h.working_shape
        r0, r1 = int(np.floor(y0)), max(int(np.ceil(y1)), int(np.floor(y0)) + 1)
        c0, c1 = int(np.floor(x0)), max(int(np.ceil(x1)), int(np.floor(x0)) + 1)
        inside_leaf = np.bincount(
            h.leaves[max(r0, 0) : min(r1, hh), max(c0, 0) : min(c1, ww)].ravel(), minlength=n
        ).astype(np.float64)
        cum = np.concatenate([[0.0], np.cumsum(inside_leaf[h.order])])
        inside = cum[h.end] - cum[h.start]  # (M,) pixels of each node inside the box
        bx = h.bbox
        iw = np.clip(np.minimum(bx[:, 2], x1) - np.maximum(bx[:, 0], x0), 0, None)
        ih = np.clip(np.minimum(bx[:, 3], y1) - np.maximum(bx[:, 1], y0), 0, None)
        inter = iw * ih
        union = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]) + (x1 - x0) * (y1 - y0) - inter
        fit = (inside / h.area) * inter / np.maximum(union, 1e-9)  # (M,) in [0, 1]

    if len(pos):
        pool = free.copy()
        for leaf in pos:
            pool &= h.contains(leaf)
        if pool.any():
            return _rank(h, np.flatnonzero(pool), contrast, fit, prior, total_area, count)
        # no single region holds every foreground point without a background point: answer
        # each foreground point on its own and take the union per level
        tables = np.zeros((count, n), dtype=bool)
        scores = np.zeros(count)
        for leaf in pos:
            own = free & h.contains(leaf)
            t, s = _rank(h, np.flatnonzero(own), contrast, fit, prior, total_area, count)
            tables |= t
            scores += s / len(pos)
        return tables, scores

    if fit is not None:
        pool = free & (fit > 0)
        if not pool.any():
            pool = fit > 0
        return _rank(h, np.flatnonzero(pool), contrast, fit, prior, total_area, count)

    if prior is not None:  # only a mask: snap it to the superpixels
        table = prior.copy()
        if neg.size:
            table[neg] = False
        return np.repeat(table[None], count, axis=0), np.full(count, 0.5)

    # only background points: nothing is foreground
    return np.zeros((count, n), dtype=bool), np.zeros(count)


def _rank(
    h: _Hierarchy,
    nodes: np.ndarray,
    contrast: np.ndarray,
    fit: np.ndarray | None,
    prior: np.ndarray | None,
    total_area: float,
    count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``count`` candidate nodes out of ``nodes`` and turn them into leaf tables."""
    area = h.area[nodes]
    score = contrast[nodes].copy()
    if fit is not None:
        score = np.sqrt(score * fit[nodes])
    small = area <= 0.9 * total_area  # the whole image is never a useful answer ...
    if small.any() and not small.all():  # ... unless nothing else is left
        nodes, area, score = nodes[small], area[small], score[small]
    tables = np.zeros((count, h.n_leaves), dtype=bool)
    if prior is not None:
        prior_area = float(h.leaf_area[prior].sum())
        agree = np.empty(len(nodes))
        for i, node in enumerate(nodes):
            leaves = h.node_leaves(node)
            inter = float(h.leaf_area[leaves][prior[leaves]].sum())
            agree[i] = inter / max(h.area[node] + prior_area - inter, 1.0)
        score = 0.5 * score + 0.5 * agree
    chosen = _choose(nodes, score, area, count)
    for i, node in enumerate(chosen):
        tables[i, h.node_leaves(node)] = True
    lookup = {int(node): s for node, s in zip(nodes, score, strict=True)}
    return tables, np.array([lookup[int(node)] for node in chosen])


def _signed_distance_logits(h: _Hierarchy, tables: np.ndarray) -> np.ndarray:
    """(..., C, 256, 256) float32 logits in the 256 frame: positive inside each mask.

    A signed distance to the boundary within a band of a few low-res pixels (a box-filtered
    mask, rescaled), saturating at +-20 beyond it, like SAM's logits: thresholding at 0
    gives the mask back, and the values can be fed back as ``mask_input``.
    """
    from scipy.ndimage import uniform_filter

    lh, lw = h.leaves_lowres.shape
    flat = tables.reshape(-1, tables.shape[-1])
    masks = np.zeros((len(flat), LOWRES, LOWRES), dtype=np.float32)
    masks[:, :lh, :lw] = flat[:, h.leaves_lowres]
    band = 2 * _LOGIT_BAND + 1
    smooth = uniform_filter(masks, size=(1, band, band), mode="constant")
    # a pixel keeps its side of the boundary even where the box filter is exactly 1/2
    logits = np.where(masks > 0, np.maximum(smooth, 0.5 + 1e-3), np.minimum(smooth, 0.5 - 1e-3))
    logits = (logits - 0.5) * (2 * _LOGIT_CLIP)
    return logits.reshape(*tables.shape[:-1], LOWRES, LOWRES).astype(np.float32)
