"""sam-widget: Segment Anything as an interactive notebook widget.

The public API (see DESIGN.md) is loaded lazily, so ``import sam_widget`` stays cheap and a
kernel that only needs the model never imports ipywidgets, and vice versa.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "build_sam": "sam_widget.models",
    "load_model": "sam_widget.weights",
    "Predictor": "sam_widget.predictor",
    "Prediction": "sam_widget.predictor",
    "MaskGenerator": "sam_widget.automatic",
    "ClassicPredictor": "sam_widget.classic",
    "SamWidget": "sam_widget.widget",
    "marimo_ui": "sam_widget.hosts",
    "Dataset": "sam_widget.dataset",
    "EmbeddingStore": "sam_widget.store",
    # not precompute.py: importing that submodule would replace the function sw.precompute
    "precompute": "sam_widget.precomputing",
}
_SUBMODULES = {
    "export", "plot", "images", "weights", "models", "codec", "classic", "dataset", "store",
    "train",
}

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from . import (  # noqa: F401
        classic,
        codec,
        dataset,
        export,
        images,
        models,
        plot,
        store,
        train,
        weights,
    )
    from .automatic import MaskGenerator  # noqa: F401
    from .classic import ClassicPredictor  # noqa: F401
    from .dataset import Dataset  # noqa: F401
    from .hosts import marimo_ui  # noqa: F401
    from .models import build_sam  # noqa: F401
    from .precomputing import precompute  # noqa: F401
    from .predictor import Prediction, Predictor  # noqa: F401
    from .store import EmbeddingStore  # noqa: F401
    from .weights import load_model  # noqa: F401
    from .widget import SamWidget  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"sam_widget.{name}")
    else:
        raise AttributeError(f"module 'sam_widget' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
