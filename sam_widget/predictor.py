"""Prompt -> masks. `Prediction` is the one result type every engine returns.

Engines (SAM's `Predictor`, the weights-free `ClassicPredictor`) share the duck-typed interface
described by `Engine`: the widget and the exporters only ever talk to that interface.

`Predictor` runs SAM and SAM 2.1 alike: the model's family (``sam_widget.families``) prepares
and encodes the image, once, and the result is cached by content; each prompt then costs one
pass of the prompt encoder and mask decoder, computed by a decoder path arranged for repeated
prompts on one image (``sam_widget.decoder``), equal to the official ``SamPredictor`` /
``SAM2ImagePredictor`` within float rounding. Low-res logits become masks on demand
(``sam_widget.masks``).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from sam_widget import decoder as fast_decoder
from sam_widget.families import SamFamily, family_of, preprocess_shape, resize_longest_side
from sam_widget.images import to_rgb
from sam_widget.masks import fill_small_regions, logits_to_masks, upscale_logits

__all__ = [
    "EncodeCancelled",
    "Engine",
    "Prediction",
    "Predictor",
    "logits_to_masks",
    "preprocess_shape",
    "resize_longest_side",
    "select_device",
    "select_precision",
    "upscale_logits",
]

Shape = tuple[int, int]


class EncodeCancelled(RuntimeError):
    """``Predictor.encode(..., cancel=event)`` stopped because ``event`` was set."""


# The cancel event of the encode this thread runs (None: not cancellable). The image encoder's
# blocks check it before they run (`_cancellable`), so a cancelled encode stops within a block.
_running = threading.local()
_hooked: weakref.WeakSet = weakref.WeakSet()


def _check_cancel(module: nn.Module, args: Any) -> None:
    event = getattr(_running, "cancel", None)
    if event is not None and event.is_set():
        raise EncodeCancelled("encoding was cancelled")


def _cancellable(model: nn.Module) -> None:
    """Give the image encoder's blocks (each element of its ModuleLists: ViT blocks, TinyViT
    layers, Hiera blocks) a pre-forward check of `_running` (once per encoder; about a
    microsecond per block when nothing is cancelled)."""
    encoder = getattr(model, "image_encoder", None)
    if encoder is None or encoder in _hooked:
        return
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                block.register_forward_pre_hook(_check_cancel)
    _hooked.add(encoder)


@dataclass(eq=False)
class Prediction:
    """The answer to one prompt state.

    ``scores`` is (C,) (or (B, C) for B boxes at once), ``logits`` (C, 256, 256) low-resolution
    mask logits that can be fed back as ``mask_input``. Masks are made from the logits on demand:
    ``masks`` at the original image size (computed once, then cached), ``masks_at(h, w)`` at any
    other size, e.g. the widget's display resolution, without paying for the full-size masks.
    """

    scores: np.ndarray
    logits: np.ndarray
    image_shape: Shape
    # (height, width) -> bool masks of shape (..., C, height, width)
    to_masks: Callable[[Shape], np.ndarray] = field(repr=False)

    @cached_property
    def masks(self) -> np.ndarray:
        """Bool (C, H, W) masks at the original image size."""
        return self.masks_at(*self.image_shape)

    def masks_at(self, height: int, width: int) -> np.ndarray:
        """Bool (C, height, width) masks resized to any output size."""
        if (height, width) == tuple(self.image_shape) and "masks" in self.__dict__:
            return self.__dict__["masks"]
        return self.to_masks((int(height), int(width)))

    @property
    def best(self) -> int:
        """Index of the candidate with the highest predicted IoU."""
        return int(np.argmax(self.scores))


@runtime_checkable
class Engine(Protocol):
    """What the widget needs from a segmentation engine (SAM Predictor, classic, ...)."""

    name: str  # "vit_b", "mobile_sam", "classic", ...

    @property
    def device(self) -> str: ...

    @property
    def image_shape(self) -> Shape | None: ...

    def encode(self, image: Any) -> Any:
        """Encode ``image`` (or take it from a cache) without making it the current image;
        returns a handle for ``predict(..., image=handle)``."""
        ...

    def set_image(self, image: Any) -> Any:
        """``encode`` and make it the current image; an interrupted call leaves none set."""
        ...

    def predict(
        self,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        image: Any = None,
    ) -> Prediction:
        """Masks for the prompts on ``image`` (a handle from ``encode``/``set_image``), by
        default the current image."""
        ...


# --------------------------------------------------------------------------------------------
# Devices and precision
# --------------------------------------------------------------------------------------------

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA, then Apple MPS, then the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def select_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the image encoder computes in (the prompt decoder always runs in float32).

    ``"auto"`` is float16 on CUDA and float32 elsewhere; ``"bfloat16"`` and ``"float16"`` turn on
    autocast for the encoder; ``"float32"`` turns it off.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "float16" and device.type == "cpu":
        raise ValueError(
            'precision="float16" is not supported on the CPU: use "bfloat16" (or "float32")'
        )
    return getattr(torch, precision)


def _variant_name(model: nn.Module) -> str:
    """Our models carry ``variant``; recognise the official ones by their encoder's shape."""
    variant = getattr(model, "variant", None)
    if isinstance(variant, str) and variant:
        return variant
    encoder = getattr(model, "image_encoder", None)
    blocks = getattr(encoder, "blocks", None)
    if blocks is not None and hasattr(encoder, "patch_embed"):
        width = encoder.patch_embed.proj.out_channels
        shape = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
        return shape.get((width, len(blocks)), "sam")
    if encoder is not None and type(encoder).__name__ == "TinyViT":
        return "mobile_sam"
    return "sam"


# --------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------

_DECODE_CHUNK = 16  # prompts decoded together: bounds memory (the upscaled features are 8 MB each)


@dataclass(frozen=True)
class _ImageState:
    """Everything known about the current image; replaced whole, never mutated."""

    embedding: torch.Tensor  # (1, C, h, w), in the encoder's dtype
    input_size: Shape  # (h, w) of the resized image inside the model's square input
    original_size: Shape  # (H, W) of the image as given
    owner: object = field(default=None, compare=False)  # token of the Predictor that made it
    # SAM 2.1: the decoder's high-res features (1, C/8, 4h, 4w), (1, C/4, 2h, 2w); SAM: none
    high_res: tuple[torch.Tensor, ...] = ()
    context_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    context: list = field(default_factory=list, compare=False)  # [ _ImageContext ] once built

    @property
    def image_shape(self) -> Shape:
        """(H, W) of the image as given."""
        return self.original_size

    @property
    def nbytes(self) -> int:
        """Memory held by the encoder's output: 4 MiB for SAM in float32, 16 MiB for SAM 2.1
        (the embedding, 8 MiB + 4 MiB of high-res features)."""
        return sum(t.numel() * t.element_size() for t in (self.embedding, *self.high_res))


class Predictor:
    """SAM or SAM 2.1 as an `Engine`: ``set_image`` once, then ``predict`` for any number of
    prompts.

    >>> p = Predictor(build_sam("vit_b"))          # doctest: +SKIP
    >>> p.set_image(image)                         # (H, W, 3) uint8, PIL image, path, ...
    >>> pred = p.predict(points=[(x, y)], labels=[1])
    >>> pred.masks.shape, pred.scores.shape        # (3, H, W), (3,)

    ``device``: None picks CUDA, then MPS, then the CPU. ``precision``: "auto" (float16 autocast
    for the image encoder on CUDA, float32 elsewhere), "float32", "bfloat16" or "float16" (the
    encoder only; the prompt decoder always runs in float32). ``cache_bytes`` bounds the
    embedding cache (least recently used images are dropped first; 0 disables it): a SAM image
    takes 4 MiB in float32, a SAM 2.1 image 16 MiB (its embedding and two high-res feature
    maps), so the default holds 64 SAM or 16 SAM 2.1 images. ``max_hole_area`` /
    ``max_sprinkle_area`` (pixels of the 256x256 low-res mask, 0: off) fill small holes and
    remove small specks before the masks are resized, as SAM 2's predictor does with its CUDA
    extension; here on any device (``sam_widget.masks.fill_small_regions``).
    ``store``: an `EmbeddingStore`, its URL, or ``sw.Dataset`` over one: embeddings found there
    (by image content) are not encoded, new ones are written to it; a store of another model is
    a `StoreMismatchError`. ``disk_cache``: recent embeddings also kept on disk (True, the
    default: in the user's cache folder, bounded; a folder path; or False), so reopening
    yesterday's images is instant; ``$SAM_WIDGET_DISK_CACHE`` = 0 or a folder overrides it.

    Thread safety: ``set_image`` may run in a background thread while another thread calls
    ``predict``; a prediction uses the image that was completely set when it started. Several
    users of one Predictor (two widgets, a widget and a notebook cell) each keep the handle that
    ``encode``/``set_image`` returned and pass it as ``predict(..., image=handle)``: the
    "current image" of ``set_image`` is then never consulted, so nobody answers from another's
    image.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        cache_bytes: int = 256 * 2**20,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        store: Any = None,
        disk_cache: bool | str | None = None,
    ) -> None:
        if not all(hasattr(model, a) for a in ("image_encoder", "prompt_encoder", "mask_decoder")):
            raise TypeError(
                "Predictor needs a SAM model (with image_encoder, prompt_encoder, mask_decoder), "
                f"e.g. sam_widget.load_model('vit_b'); got {type(model).__name__}"
            )
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if max_hole_area < 0 or max_sprinkle_area < 0:
            raise ValueError(
                "max_hole_area and max_sprinkle_area must be >= 0 (0 turns them off), got "
                f"{max_hole_area} and {max_sprinkle_area}"
            )
        self._device = select_device(device)
        self.dtype = select_precision(precision, self._device)
        self.model = model.to(self._device).eval()
        self.name: str = _variant_name(model)
        self.family: SamFamily = family_of(model)
        self.image_size: int = self.family.image_size(model)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self.mask_threshold: float = float(getattr(model, "mask_threshold", 0.0))
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple, _ImageState] = OrderedDict()
        self._cache_used = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self._fast = fast_decoder.fast_path_ok(model)
        self._state: _ImageState | None = None
        self._token = object()  # marks the handles this Predictor made (see `_current`)
        self._lock = threading.Lock()  # guards _state and the cache
        self._encode_lock = threading.Lock()  # one encoder run at a time
        self._stores = _store_hooks(self, store, disk_cache)  # store.py: look-up, then write

    # ---- Engine attributes -------------------------------------------------------------------

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def image_shape(self) -> Shape | None:
        """(H, W) of the current image, or None before ``set_image``."""
        state = self._state
        return None if state is None else state.original_size

    @property
    def embedding(self) -> torch.Tensor:
        """The current image's embedding, (256, 64, 64), in the encoder's dtype."""
        return self._current().embedding[0]

    @property
    def input_size(self) -> Shape:
        """(h, w) of the current image after resizing into the model's square input."""
        return self._current().input_size

    # ---- images ------------------------------------------------------------------------------

    def encode(
        self, image: Any, image_format: str = "RGB", cancel: threading.Event | None = None
    ) -> _ImageState:
        """Encode ``image`` (numpy, PIL image or path; see ``sam_widget.images.to_rgb``) without
        making it the current image; returns its handle for ``predict(..., image=handle)``.
        ``image_format="BGR"`` reads an array in OpenCV's channel order (as the official API).

        An image whose content was encoded before (and is still cached, or is in the store or
        the disk cache) is not encoded again. ``cancel``: an event that, once set (by another
        thread), stops this encode within one encoder block with `EncodeCancelled`, nothing
        cached (the widget's prefetch uses it so that moving to another image never waits for
        an encode of an image nobody looks at).
        """
        rgb = to_rgb(image, image_format=image_format)
        key = self._cache_key(rgb)
        with self._lock:
            state = self._cache.get(key)
            if state is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return state
        with self._encode_lock:
            with self._lock:  # another thread may have encoded it meanwhile
                state = self._cache.get(key)
            if state is None:
                state = self._stores.load(key)  # the embedding store, then the disk cache
                if state is None:
                    if cancel is not None:
                        if cancel.is_set():  # while this thread waited for the lock
                            raise EncodeCancelled("encoding was cancelled")
                        _cancellable(self.model)
                    _running.cancel = cancel
                    try:
                        state = self._encode(rgb)
                    finally:
                        _running.cancel = None
                    self._stores.save(key, state)
                with self._lock:
                    self.cache_misses += 1
                    self._remember(key, state)
        return state

    def set_image(self, image: Any, image_format: str = "RGB") -> _ImageState:
        """Encode ``image`` (see `encode`) and make it the current image; returns its handle.

        If encoding fails or is interrupted (an exception, KeyboardInterrupt), no image is
        current afterwards: ``predict`` then raises "no image set" rather than answering for
        the image set before.
        """
        try:
            state = self.encode(image, image_format=image_format)
        except BaseException:
            with self._lock:
                self._state = None
            raise
        with self._lock:
            self._state = state
        return state

    def reset_image(self) -> None:
        """Forget the current image (cached embeddings stay cached)."""
        with self._lock:
            self._state = None

    def clear_cache(self) -> None:
        """Drop every cached embedding."""
        with self._lock:
            self._cache.clear()
            self._cache_used = 0

    def refresh(self) -> None:
        """Forget what was derived from the prompt encoder's and mask decoder's weights; call
        after changing them in place (``sw.train.finetune`` does). Cached embeddings stay:
        they depend on the image encoder only (after changing that, ``clear_cache``)."""
        with self._lock:
            states = [*self._cache.values(), *([self._state] if self._state else [])]
        for state in states:
            with state.context_lock:
                state.context.clear()

    @property
    def cache_info(self) -> dict[str, int]:
        """{"entries", "bytes", "max_bytes", "hits", "misses"} of the embedding cache."""
        with self._lock:
            return {
                "entries": len(self._cache),
                "bytes": self._cache_used,
                "max_bytes": self.cache_bytes,
                "hits": self.cache_hits,
                "misses": self.cache_misses,
            }

    def _cache_key(self, rgb: np.ndarray) -> tuple:
        digest = hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=20).hexdigest()
        return (digest, rgb.shape, self.name, str(self.dtype), str(self._device))

    def _remember(self, key: tuple, state: _ImageState) -> None:
        size = state.nbytes
        if size > self.cache_bytes:
            return
        self._cache[key] = state
        self._cache_used += size
        while self._cache_used > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_used -= old.nbytes

    @torch.no_grad()
    def _encode(self, rgb: np.ndarray) -> _ImageState:
        x, input_size = self.family.prepare(self.model, rgb, self._device)
        if self.dtype == torch.float32:
            embedding, high_res = self.family.encode(self.model, x)
        else:
            with torch.autocast(self._device.type, dtype=self.dtype):
                embedding, high_res = self.family.encode(self.model, x)
            embedding = embedding.to(self.dtype)
            high_res = tuple(f.to(self.dtype) for f in high_res)
        return _ImageState(
            embedding=embedding.contiguous(),
            input_size=tuple(input_size),
            original_size=tuple(rgb.shape[:2]),
            owner=self._token,
            high_res=tuple(f.contiguous() for f in high_res),
        )

    def use_store(self, store: Any) -> None:
        """Look embeddings up in ``store`` (an `EmbeddingStore`, its URL, or ``sw.Dataset``
        over one) before encoding, as ``Predictor(..., store=...)`` does."""
        self._stores.attach(store)

    # ---- records for the embedding store (store.py): this family's named feature maps -------

    def _features(self, state: _ImageState) -> dict[str, np.ndarray]:
        """The arrays that make an image's state, as stored: SAM 1 has one embedding, SAM 2.1
        adds its two high-res feature maps ("high_res_0" stride 4, "high_res_1" stride 8)."""
        features = {"embedding": state.embedding[0].float().cpu().numpy()}
        for i, f in enumerate(state.high_res):
            features[f"high_res_{i}"] = f[0].float().cpu().numpy()
        return features

    def _from_record(self, record: Any) -> _ImageState:
        """The image state from a stored record (`store.Record`)."""

        def tensor(name: str) -> torch.Tensor:
            array = np.ascontiguousarray(record.features[name])
            return torch.from_numpy(array)[None].to(self._device, self.dtype)

        names = sorted(n for n in record.features if n.startswith("high_res_"))
        return _ImageState(
            embedding=tensor("embedding"),
            input_size=tuple(record.input_size),
            original_size=tuple(record.original_size),
            owner=self._token,
            high_res=tuple(tensor(n) for n in names),
        )

    def _current(self, image: _ImageState | None = None) -> _ImageState:
        """The handle ``image`` (checked to be one of ours), else the current image."""
        if image is not None:
            if not isinstance(image, _ImageState) or image.owner is not self._token:
                raise ValueError(
                    "image= must be a handle returned by this Predictor's encode() or "
                    f"set_image(), got {type(image).__name__}"
                )
            return image
        state = self._state
        if state is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        return state

    def prepare(self, image: _ImageState) -> None:
        """Build ``image``'s per-image decoder state now (the image side of the mask decoder),
        which the first ``predict`` on it would otherwise build: for a prefetch thread, so the
        first click on a prefetched image costs one prompt decode."""
        image = self._current(image)
        if self._fast:
            self._context(image)

    def _context(self, state: _ImageState) -> fast_decoder._ImageContext:
        with state.context_lock:
            if not state.context:
                with torch.no_grad():
                    state.context.append(
                        fast_decoder.image_context(self.model, state.embedding, state.high_res)
                    )
            return state.context[0]

    # ---- prompts -----------------------------------------------------------------------------

    def predict(
        self,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        image: _ImageState | None = None,
    ) -> Prediction:
        """Masks for one prompt state (or B boxes at once).

        points: (N, 2) pixel (x, y) of the original image, or (B, N, 2) with B boxes;
        labels: (N,) or (B, N), 1 foreground / 0 background; box: (4,) x0, y0, x1, y1 in pixels,
        or (B, 4) for B objects at once; mask_input: (1, 256, 256) logits from an earlier
        prediction (or (B, 1, 256, 256)); image: a handle from `encode`/`set_image` (default:
        the current image). Returns a `Prediction` with scores (C,), logits
        (C, 256, 256), masks (C, H, W), C = 3 if ``multimask`` else 1; with B boxes each gains a
        leading B axis.
        """
        state = self._current(image)
        coords, point_labels, boxes, masks, batched = _check_prompts(
            points, labels, box, mask_input, self.image_size
        )
        coords, boxes = self.family.to_model_frame(
            coords, boxes, state.original_size, state.input_size
        )
        low_res, iou = self.decode(state, coords, point_labels, boxes, masks, multimask)
        return self._prediction(state, low_res, iou, batched)

    @torch.no_grad()
    def decode(
        self,
        state: _ImageState | None,
        coords: np.ndarray | torch.Tensor | None,
        labels: np.ndarray | torch.Tensor | None,
        boxes: np.ndarray | torch.Tensor | None,
        masks: np.ndarray | torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts already in the model's input frame -> (low-res logits (B, M, 256, 256),
        IoU (B, M)). coords (B, N, 2), labels (B, N), boxes (B, 4), masks (B, 1, 256, 256)."""
        state = self._current() if state is None else state
        dev = self._device

        def tensor(x: Any, dtype: torch.dtype | None) -> torch.Tensor | None:
            if x is None:
                return None
            if isinstance(x, np.ndarray) and dtype is None:
                dtype = torch.float32 if x.dtype == np.float64 and dev.type == "mps" else None
            return torch.as_tensor(x, dtype=dtype).to(dev)

        coords_t = tensor(coords, torch.float32 if dev.type == "mps" else None)
        if coords_t is not None and not coords_t.is_floating_point():
            coords_t = coords_t.float()
        labels_t = tensor(labels, torch.int32)
        boxes_t = tensor(boxes, torch.float32)
        masks_t = tensor(masks, torch.float32)
        b = next(len(x) for x in (coords_t, boxes_t, masks_t) if x is not None)
        outputs = []
        for start in range(0, b, _DECODE_CHUNK):
            part = slice(start, start + _DECODE_CHUNK)
            outputs.append(
                self._decode_chunk(
                    state,
                    None if coords_t is None else (coords_t[part], labels_t[part]),
                    None if boxes_t is None else boxes_t[part],
                    None if masks_t is None else masks_t[part],
                    multimask,
                )
            )
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])

    def _decode_chunk(self, state, points, boxes, masks, multimask):
        sparse, dense = self.family.embed_prompts(self.model, points, boxes, masks)
        if self._fast:
            return fast_decoder.decode(
                self.model,
                self._context(state),
                sparse,
                None if masks is None else dense,
                multimask,
            )
        return self.family.decode_reference(self.model, state, sparse, dense, multimask)

    def upscale(self, low_res: torch.Tensor, size: Shape, state: _ImageState | None = None):
        """Low-res logits (..., 256, 256) -> logits (..., h, w) covering the whole image."""
        state = self._current() if state is None else state
        frame, crop = self.family.mask_frame(self.image_size, state.input_size, size)
        return upscale_logits(low_res, crop, size, frame)

    def _prediction(self, state, low_res, iou, batched) -> Prediction:
        if not batched:
            low_res, iou = low_res[0], iou[0]
        threshold = self.mask_threshold
        # masks come from the decoder's logits (after the optional clean-up); the logits handed
        # back for feeding in again are the family's (SAM 2.1 clamps them)
        for_masks = fill_small_regions(
            low_res, threshold, self.max_hole_area, self.max_sprinkle_area
        )
        family, image_size = self.family, self.image_size

        def to_masks(size: Shape) -> np.ndarray:
            frame, crop = family.mask_frame(image_size, state.input_size, size)
            with torch.no_grad():
                if for_masks.device.type == "cpu":
                    return logits_to_masks(for_masks, crop, size, threshold, frame)
                logits = upscale_logits(for_masks, crop, size, frame)
                return (logits > threshold).cpu().numpy()

        return Prediction(
            scores=iou.float().cpu().numpy(),
            logits=family.output_logits(low_res).float().cpu().numpy(),
            image_shape=state.original_size,
            to_masks=to_masks,
        )


def _store_hooks(predictor: Predictor, store: Any, disk_cache: bool | str | None):
    """The predictor's embedding store and disk cache (see store.py): ``load(key)`` before
    encoding, ``save(key, state)`` after."""
    from sam_widget.store import StoreHooks

    return StoreHooks(predictor, store, disk_cache)


def _check_prompts(points, labels, box, mask_input, image_size):
    """Validate prompts; returns float64 coords (B, N, 2), int labels (B, N), boxes (B, 4),
    float32 masks (B, 1, 256, 256) (each or None) and whether the caller asked for a batch."""

    def array(x, name, dtype=np.float64):
        try:
            a = np.asarray(x, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numeric, got {x!r:.80}") from e
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values: {a.tolist()!r:.200}")
        return a

    coords = lab = boxes = masks = None
    batched = False
    if points is not None and len(points) > 0:
        coords = array(points, "points")
        if coords.ndim == 2 and coords.shape[1] == 2:
            coords = coords[None]
        elif coords.ndim == 3 and coords.shape[2] == 2:
            batched = True
        else:
            raise ValueError(f"points must have shape (N, 2) or (B, N, 2), got {coords.shape}")
        if labels is None:
            raise ValueError("labels are required with points: 1 foreground, 0 background")
        lab = array(labels, "labels")
        if lab.shape != coords.shape[:2] and lab.shape != coords.shape[1:2]:
            raise ValueError(
                f"labels must have one entry per point: {coords.shape[1]} points, "
                f"labels of shape {lab.shape}"
            )
        if not np.isin(lab, (0, 1)).all():
            raise ValueError(f"labels must be 1 (foreground) or 0 (background), got {lab.tolist()}")
        lab = np.broadcast_to(lab.astype(np.int32), coords.shape[:2]).copy()
    elif labels is not None and len(labels) > 0:
        raise ValueError("labels were given without points")
    if box is not None:
        boxes = array(box, "box")
        if boxes.shape == (4,):
            boxes = boxes[None]
        elif boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0:
            batched = True
        else:
            raise ValueError(
                f"box must be (x0, y0, x1, y1) or have shape (B, 4), got {boxes.shape}"
            )
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            raise ValueError(
                f"box corners are inverted: {boxes[bad][0].tolist()}; "
                "give (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1"
            )
    if mask_input is not None:
        masks = array(mask_input, "mask_input", np.float32)
        low = image_size // 4
        if masks.shape == (low, low):
            masks = masks[None, None]
        elif masks.shape == (1, low, low):
            masks = masks[None]
        elif masks.ndim == 4 and masks.shape[1:] == (1, low, low):
            batched = True
        else:
            raise ValueError(
                f"mask_input must be (1, {low}, {low}) logits from an earlier prediction "
                f"(pred.logits[i][None]), got shape {masks.shape}"
            )
    sizes = {len(x) for x in (coords, boxes, masks) if x is not None}
    if not sizes:
        raise ValueError("give at least one prompt: points (with labels), a box or a mask_input")
    b = max(sizes)
    if sizes - {1, b}:
        raise ValueError(f"batched prompts disagree on the batch size: {sorted(sizes)}")
    if coords is not None and len(coords) != b:
        coords, lab = np.repeat(coords, b, axis=0), np.repeat(lab, b, axis=0)
    if boxes is not None and len(boxes) != b:
        boxes = np.repeat(boxes, b, axis=0)
    if masks is not None and len(masks) != b:
        masks = np.repeat(masks, b, axis=0)
    return coords, lab, boxes, masks, batched
