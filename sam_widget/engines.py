"""Turn what a user passes as ``model=`` into a segmentation engine.

`resolve_engine` is the one place that decides which engine answers prompts: the widget, the
demo and the CLI all call it. ``"auto"`` (see `auto_choice`) means, in this order: a SAM 2.1
checkpoint already on this machine; else a SAM checkpoint already on this machine (a user
who has one keeps it rather than downloading another); else SAM 2.1 small on the CPU / large
on CUDA when it can be downloaded; else the weights-free `ClassicPredictor`, announced by an
`EngineFallbackWarning` that says how to get weights. SAM 2.1 is preferred because it is more
accurate than SAM (the SAM 2 paper's image benchmarks) and its Hiera encoders are much
faster; the README gives the measured encode times. The environment variable
``SAM_WIDGET_MODEL`` (e.g. ``classic`` on a machine that should never download) overrides
what ``"auto"`` means.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any

from .predictor import Engine

SAM1_VARIANTS = ("vit_b", "vit_l", "vit_h", "mobile_sam")
SAM2_VARIANTS = (
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
)
SAM_VARIANTS = SAM1_VARIANTS + SAM2_VARIANTS
AUTO_CPU = "sam2.1_hiera_small"  # what "auto" downloads for the CPU (and MPS)
AUTO_CUDA = "sam2.1_hiera_large"  # what "auto" downloads for a CUDA GPU
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


def fallback_notice(variant: str = AUTO_CPU) -> str:
    """The short text the widget shows when it runs the weights-free engine instead of SAM."""
    return (
        "Using the weights-free classic engine: no SAM or SAM 2.1 weights are on this machine, "
        f"and it is much less accurate. {how_to_get_weights(variant)}"
    )


#: the fallback warning is said once per process (the widget shows its own notice each time)
_warned = False


def _on_cuda(device: str | None) -> bool:
    from .predictor import select_device

    return select_device(device).type == "cuda"


def auto_download(device: str | None = None) -> str:
    """The variant "auto" downloads when nothing is cached: SAM 2.1 large on CUDA, else small."""
    return AUTO_CUDA if _on_cuda(device) else AUTO_CPU


def auto_preference(device: str | None = None) -> tuple[str, ...]:
    """Cached checkpoints "auto" takes, best first: SAM 2.1 (on the CPU the smaller models
    first, small before tiny; on CUDA the larger first), then SAM (vit_b, the long-standing
    default, first on the CPU; the larger first on CUDA)."""
    if _on_cuda(device):
        return tuple(reversed(SAM2_VARIANTS)) + ("vit_h", "vit_l", "vit_b", "mobile_sam")
    sam2 = ("sam2.1_hiera_small", "sam2.1_hiera_tiny", "sam2.1_hiera_base_plus")
    return sam2 + ("sam2.1_hiera_large", "vit_b", "mobile_sam", "vit_l", "vit_h")


def auto_choice(*, device: str | None = None, timeout: float = 2.0) -> str:
    """What ``model="auto"`` resolves to on this machine now: a variant name or "classic".

    A cached checkpoint (no network is used then; see `auto_preference`), else
    `auto_download`'s variant when its URL answers within ``timeout`` seconds, else
    ``"classic"``.
    """
    from . import weights

    for variant in auto_preference(device):
        if weights.find_checkpoint(variant) is not None:
            return variant
    target = auto_download(device)
    if weights.can_download(target, timeout=timeout):
        return target
    return "classic"


def how_to_get_weights(variant: str = AUTO_CPU) -> str:
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
        model: ``"auto"`` (see `auto_choice`: cached SAM 2.1, else cached SAM, else SAM 2.1
            small (CPU) / large (CUDA) if downloadable, else the weights-free engine with an
            `EngineFallbackWarning`; ``$SAM_WIDGET_MODEL``, when set, replaces it), a variant
            name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"mobile_sam"``,
            ``"sam2.1_hiera_tiny"``, ``..._small``, ``..._base_plus``, ``..._large``: loaded,
            downloading the weights if needed), ``"classic"`` (the weights-free engine), a
            loaded SAM or SAM 2.1 model
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


def _is_engine(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("set_image", "predict", "name"))


#: engines made from a name or a module, shared by every widget that asks for the same one
#: (each widget keeps its own image handles, so sharing is safe); freed with their last widget
_ENGINES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_ENGINES_LOCK = threading.Lock()


def shared_engine(model: Any, device: str | None = None) -> Any:
    """`resolve_engine`, shared: an engine made from a name or a module is reused by every
    widget that asks for the same one, so a cell run again (``SamWidget(img, model="vit_b")``)
    gets the engine the last run loaded, not a second copy of the model."""
    if _is_engine(model):
        return model

    key = (model.strip().lower() if isinstance(model, str) else id(model), device)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None and (isinstance(model, str) or getattr(engine, "model", None)
                                   is model):
            return engine
        engine = resolve_engine(model, device=device)
        try:
            _ENGINES[key] = engine
        except TypeError:  # an engine that cannot be weakly referenced: not shared
            pass
        return engine


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

    choice = auto_choice(device=device)
    target = choice if choice != "classic" else auto_download(device)
    if choice != "classic":
        try:
            return _sam(choice, device)
        except CheckpointError as err:  # e.g. the download broke off: still give a result
            reason = f"the {choice} weights could not be loaded ({err})"
    else:
        reason = (
            "no SAM or SAM 2.1 weights are on this machine and "
            f"{target}'s cannot be downloaded"
        )
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"{reason}: using the weights-free 'classic' engine (superpixels, no neural "
            f"network), which is much less accurate. {how_to_get_weights(target)}",
            EngineFallbackWarning,
            stacklevel=user_stacklevel(),
        )
    engine = _classic(None)
    engine.fallback_notice = fallback_notice(target)  # shown inside the widget
    return engine
