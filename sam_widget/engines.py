"""Turn what a user passes as ``model=`` into a segmentation engine.

`resolve_engine` is the one place that decides which engine answers prompts: the widget, the
demo and the CLI all call it. ``"auto"`` means SAM vit_b when its weights are on this machine
or can be downloaded, else the weights-free `ClassicPredictor`, announced by an
`EngineFallbackWarning` that says how to get SAM's weights. The environment variable
``SAM_WIDGET_MODEL`` (e.g. ``classic`` on a machine that should never download) overrides
what ``"auto"`` means.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from .predictor import Engine

AUTO_VARIANT = "vit_b"  # what "auto" loads when SAM weights are at hand
SAM_VARIANTS = ("vit_b", "vit_l", "vit_h", "mobile_sam")
ENV_MODEL = "SAM_WIDGET_MODEL"  # overrides what "auto" means, e.g. "classic" or "mobile_sam"


class EngineFallbackWarning(UserWarning):
    """SAM's weights could not be had, so the weights-free engine is used instead."""


def _internal_dirs() -> tuple[str, ...]:
    """Folders whose frames are ours or the widget machinery's, never "the user's code"."""
    dirs = [Path(__file__).parent]
    for name in ("traitlets", "ipywidgets", "anywidget"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(Path(module.__file__).parent)
    return tuple(str(d.resolve()) for d in dirs)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by our caller point at the first frame
    outside sam_widget (and traitlets/ipywidgets/anywidget): the user's cell or script, not a
    library file and line (which read like a crash)."""
    internal = _internal_dirs()
    frame = sys._getframe(1)  # our caller, the function that calls warnings.warn
    level = 1
    while frame is not None:
        name = str(Path(frame.f_code.co_filename).resolve()) if frame.f_code.co_filename else ""
        if not name.startswith(internal):
            return level
        frame = frame.f_back
        level += 1
    return 1


def fallback_notice(variant: str = AUTO_VARIANT) -> str:
    """The short text the widget shows when it runs the weights-free engine instead of SAM."""
    return (
        "Using the weights-free classic engine: SAM's weights are not on this machine, and it "
        f"is much less accurate. {how_to_get_weights(variant)}"
    )


#: the fallback warning is said once per process (the widget shows its own notice each time)
_warned = False


def auto_choice(*, timeout: float = 2.0) -> str:
    """What ``model="auto"`` resolves to on this machine now: ``"vit_b"`` or ``"classic"``.

    ``"vit_b"`` when its checkpoint is cached (no network is used then) or its URL answers
    within ``timeout`` seconds; ``"classic"`` otherwise.
    """
    from . import weights

    if weights.find_checkpoint(AUTO_VARIANT) is not None:
        return AUTO_VARIANT
    if weights.can_download(AUTO_VARIANT, timeout=timeout):
        return AUTO_VARIANT
    return "classic"


def how_to_get_weights(variant: str = AUTO_VARIANT) -> str:
    """A few lines telling a user how to put SAM's ``variant`` checkpoint on this machine."""
    from . import weights

    entry = weights.REGISTRY[variant]
    return (
        f"To use SAM ({variant}), download {entry.url} and put it in the folder named by "
        f"${weights.ENV_DIR} or in {weights.cache_dir()}, or run "
        f"`python -c \"import sam_widget as sw; sw.weights.download('{variant}')\"` on a "
        "machine with internet access; then restart the kernel."
    )


def resolve_engine(model: Any = "auto", device: str | None = None) -> Engine:
    """An engine for ``model``.

    Args:
        model: ``"auto"`` (SAM vit_b if its weights are cached or downloadable, else the
            weights-free engine with an `EngineFallbackWarning`; ``$SAM_WIDGET_MODEL``, when
            set, replaces it), a SAM variant name
            (``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"mobile_sam"``: loaded, downloading the
            weights if needed), ``"classic"`` (the weights-free engine), a loaded SAM model
            (an ``nn.Module`` such as ``sw.load_model("vit_b")`` or ``sw.build_sam(...)``), or
            an existing engine (a ``Predictor``, a ``ClassicPredictor``, ...), returned as is.
        device: where SAM runs ("cuda", "mps", "cpu"; None picks the best available). The
            weights-free engine always runs on the CPU.

    Raises:
        ValueError: an unknown model name, or a device for the CPU-only classic engine.
        TypeError: ``model`` is none of the above.
        sam_widget.weights.CheckpointError: a named SAM variant whose weights cannot be had.
    """
    if isinstance(model, str):
        name = model.strip().lower()
        if name == "auto":
            name = os.environ.get(ENV_MODEL, "auto").strip().lower() or "auto"
        if name == "auto":
            return _auto(device)
        if name == "classic":
            return _classic(device)
        if name in SAM_VARIANTS:
            return _sam(name, device)
        source = f" (from ${ENV_MODEL})" if name != model.strip().lower() else ""
        raise ValueError(
            f"unknown model {name!r}{source}: use 'auto', 'classic', one of "
            f"{', '.join(map(repr, SAM_VARIANTS))}, a loaded SAM model or a Predictor"
        )
    if _is_module(model):
        from .predictor import Predictor

        return Predictor(model, device=device)
    if isinstance(model, Engine):
        return model
    raise TypeError(
        f"model must be 'auto', 'classic', a SAM variant name, a loaded SAM model (nn.Module) "
        f"or an engine such as sw.Predictor, not {type(model).__name__}"
    )


def _is_module(obj: Any) -> bool:
    try:
        from torch import nn
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(obj, nn.Module)


def _classic(device: str | None) -> Engine:
    from .classic import ClassicPredictor

    if device not in (None, "cpu"):
        raise ValueError(f"the classic engine runs on the CPU only; got device={device!r}")
    return ClassicPredictor()


def _sam(variant: str, device: str | None) -> Engine:
    from .weights import load_model

    model = load_model(variant, device=device)  # raises CheckpointError saying what to do
    from .predictor import Predictor

    return Predictor(model, device=device)


def _auto(device: str | None) -> Engine:
    from .weights import CheckpointError

    if auto_choice() == AUTO_VARIANT:
        try:
            return _sam(AUTO_VARIANT, device)
        except CheckpointError as err:  # e.g. the download broke off: still give a result
            reason = f"SAM's {AUTO_VARIANT} weights could not be loaded ({err})"
    else:
        reason = f"SAM's {AUTO_VARIANT} weights are not on this machine and cannot be downloaded"
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"{reason}: using the weights-free 'classic' engine (superpixels, no neural "
            f"network), which is much less accurate. {how_to_get_weights(AUTO_VARIANT)}",
            EngineFallbackWarning,
            stacklevel=user_stacklevel(),
        )
    engine = _classic(None)
    engine.fallback_notice = fallback_notice(AUTO_VARIANT)  # shown inside the widget
    return engine
