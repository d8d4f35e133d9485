"""Prompt -> masks. `Prediction` is the one result type every engine returns.

Engines (SAM's `Predictor`, the weights-free `ClassicPredictor`) share the duck-typed interface
described by `Engine`: the widget and the exporters only ever talk to that interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np

Shape = tuple[int, int]


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

    def set_image(self, image: Any) -> None: ...

    def predict(
        self,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> Prediction: ...
