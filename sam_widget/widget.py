"""SamWidget: Segment Anything as an anywidget (click, box, see masks live, keep objects).

The transport that shows a `sam_widget.session.Session`: lasting state lives in traits (so a
reload or a second view shows the same thing); the frontend (``js/widget.ts``) sends prompt
states as custom messages tagged with a sequence number and the revision they were based on;
the background threads (``sam_widget.background``) encode and decode. Masks cross the wire as
bytes at display resolution (``sam_widget.codec``); full-size masks are made only when Python
asks for them (``w.masks``, ``w.mask``, ``w.objects``).

The kernel owns its state: a view may change only what a user can (prompts, the selection, the
position, the label, options within their ranges); anything else it sends is refused and undone.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import uuid
import warnings
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from .background import BackgroundWork, logger
from .codec import display_size, encode_image, encode_masks
from .dataset import ArraySource, Dataset, is_dataset_source
from .editing import Editing, check_proposals
from .engines import shared_engine
from .exporting import Exports
from .images import to_rgb
from .picture import PictureDisplay
from .predictor import Prediction
from .protocol import VIEW_TRAITS, ViewProtocol  # noqa: F401 - VIEW_TRAITS re-exported
from .session import (  # noqa: F401 - re-exported: the widget's public error and limits
    MAX_POINTS,
    PALETTE,
    PromptError,
    Session,
    entry_display_masks,
    entry_masks,
    quote,
    validate_box,
    validate_points,
)
from .session import prompt_state as _state
from .wire import (
    bytes_trait_from_json,
    bytes_trait_to_json,
    default_mode,
    to_wire,
)

#: decoded images kept in memory (the current one and those around it)
_RGB_CACHE = 4


def _objects_to_json(objects: list[dict], widget: SamWidget) -> list[dict]:
    """Objects for the wire: everything but the full-size mask, which becomes display bytes."""
    return [{**{k: v for k, v in o.items() if k not in ("mask", "steps")},
             "mask": to_wire(widget._object_bytes(o), widget._wire)} for o in objects]


def _objects_from_json(value: list[dict], widget: SamWidget) -> list[dict]:
    return widget.objects  # the view changes objects only through messages


def _read_esm() -> str:
    path = Path(__file__).parent / "static" / "widget.js"
    return path.read_text(encoding="utf-8") if path.exists() else ""


class ClosedError(RuntimeError):
    """The widget was closed: make a new one (annotations can still be saved)."""


class SamWidget(PictureDisplay, Editing, Exports, ViewProtocol, BackgroundWork,
                anywidget.AnyWidget):
    """Segment Anything in a notebook: click or drag on the image, get masks in Python.

    ``SamWidget(image_or_dataset, model="auto", labels=None, annotations=None)``: one image
    (numpy, PIL image, path, URL) or many (a `Dataset`, a folder, a glob, a list, an embedding
    store). model "auto" (SAM vit_b when its weights are available, else the weights-free
    "classic"), a variant name, a ``Sam`` module or a ``Predictor``/Engine (which may be shared
    between widgets). Images are encoded on background threads, the next ones ahead of time;
    prompts made meanwhile are kept and answered when the encode is done.

    ``proposals=True`` (a dataset over a store precomputed with ``everything=True``): the first
    time you arrive on an image without objects, its stored automatic masks are there as
    unlabelled objects with ``"source": "proposal"``; delete or relabel them like any object and
    add what they missed. An image is pre-filled once: not again after you emptied it, nor on
    one resumed with objects (``w.save`` records which images were offered theirs). Without it,
    "Everything" still takes an image's stored masks at once instead of running the generator.
    """

    # Our own trait instead of anywidget's file watcher: its signal holds every widget forever
    # (manzt/anywidget#929), so a closed widget could never be freed.
    _esm = t.Unicode().tag(sync=True)

    @t.default("_esm")
    def _default_esm(self) -> str:
        return _read_esm()

    # --- prompts (image pixels, x right, y down) -------------------------------------------
    points = t.List().tag(sync=True)
    """Prompt points, each [x, y, label] in image pixels; label 1 foreground, 0 background."""
    box = t.List(default_value=None, allow_none=True).tag(sync=True)
    """Prompt box [x0, y0, x1, y1] in image pixels, or None."""
    selected = t.Int(0).tag(sync=True)
    """Index of the chosen multimask candidate (the best one after each prompt)."""
    scores = t.List().tag(sync=True)
    """Predicted IoU of each candidate mask, one float per candidate."""
    objects = t.List().tag(sync=True, to_json=_objects_to_json, from_json=_objects_from_json)
    """Committed objects of the current image: dicts with id, name, label, color, score, points,
    box, visible, area, steps, mask (bool H x W at the image size)."""
    status = t.Unicode("loading model").tag(sync=True)
    """"loading model" | "encoding" | "ready" | "error: ..." (errors never lose prompts)."""
    message = t.Unicode("").tag(sync=True)
    """The status line shown under the image, e.g. "encoding… 3.2 s · vit_b on cpu"."""

    # --- dataset and labels ----------------------------------------------------------------
    index = t.Int(0).tag(sync=True)
    """Position of the shown image in the dataset (set it to move; synced both ways)."""
    count = t.Int(1).tag(sync=True)
    """Number of images in the dataset."""
    image_name = t.Unicode("").tag(sync=True)
    """File name of the shown image (or "image-<i>")."""
    labels = t.List(t.Unicode()).tag(sync=True)
    """Class names objects can carry; each has a colour (``label_colors``)."""
    label_colors = t.List(t.Unicode()).tag(sync=True)
    """The colour of each label, in the order of ``labels``."""
    label = t.Unicode(None, allow_none=True).tag(sync=True)
    """The label the next "Add object" gives (one of ``labels``, or None)."""

    # --- options ---------------------------------------------------------------------------
    opacity = t.Float(0.5).tag(sync=True)
    """Opacity of the mask fill, 0..1."""
    hover = t.Bool(True).tag(sync=True)
    """Show (faintly) the mask the next click would produce while the pointer moves."""
    refine = t.Bool(True).tag(sync=True)
    """Feed the selected candidate's low-res logits back as mask_input for the next prompt."""
    multimask = t.Bool(True).tag(sync=True)
    """Three candidates per prompt (SAM's multimask output), else one."""

    # --- read-only facts for the frontend -------------------------------------------------
    engine = t.Unicode("").tag(sync=True)
    """Name of the engine ("vit_b", "classic", ...)."""
    device = t.Unicode("").tag(sync=True)
    """Device the engine runs on ("cpu", "cuda", ...)."""
    image_width = t.Int(0).tag(sync=True)
    image_height = t.Int(0).tag(sync=True)
    display_width = t.Int(0).tag(sync=True)
    display_height = t.Int(0).tag(sync=True)
    can_undo = t.Bool(False).tag(sync=True)
    can_redo = t.Bool(False).tag(sync=True)
    prompt_rev = t.Int(0).tag(sync=True)
    """Revision of the prompt state (the kernel counts every change, on every image); views
    send the revision they saw with each message, and one based on an older state is dropped."""
    mask_rev = t.Int(-1).tag(sync=True)
    """Revision of the prompt state that ``_masks`` answers."""
    prompt_seq = t.Unicode("").tag(sync=True)
    """"client:seq" of the last frontend message handled (lets a view drop its local state)."""
    history = t.List().tag(sync=True)
    """The prompt states around the current one (previous, current, next: at most three), for
    the view's instant undo/redo; the full history stays in the kernel."""
    history_index = t.Int(0).tag(sync=True)
    """Index of the current state in ``history``."""
    notice = t.Unicode("").tag(sync=True)
    """A short notice shown inside the widget until dismissed, e.g. that SAM's weights are
    missing and how to get them (a warning alone is hidden by Voila and `marimo run`)."""
    everything_state = t.Unicode("ready").tag(sync=True)
    """The "Everything" button: "ready", "running" (the view offers Stop) or "unavailable: why"
    (engines without SAM; the reason is the button's tooltip)."""
    _uid = t.Unicode().tag(sync=True)
    _view_rev = t.Int(-1).tag(sync=True)
    """The mask revision a view drew after its own last action (set by the view: a change
    hosts like marimo see, so cells that read ``w.mask`` re-run after each click)."""
    _wire = t.Unicode("binary").tag(sync=True)
    """How bytes travel: "binary" buffers, or "base64" strings on hosts without binary buffers
    (chosen by the view's start-up probe, see sam_widget/wire.py)."""
    _image = t.Bytes(b"").tag(sync=True, to_json=bytes_trait_to_json,
                              from_json=bytes_trait_from_json)
    _masks = t.Bytes(b"").tag(sync=True, to_json=bytes_trait_to_json,
                              from_json=bytes_trait_from_json)

    def __init__(
        self,
        image: Any,
        model: Any = "auto",
        *,
        device: str | None = None,
        labels: list[str] | None = None,
        annotations: Any = None,
        max_display_size: int = 1024,
        multimask: bool = True,
        refine: bool = True,
        hover: bool = True,
        opacity: float = 0.5,
        proposals: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            names = ", ".join(sorted(kwargs))
            raise TypeError(
                f"SamWidget() got unexpected keyword argument(s): {names}. Valid ones: model, "
                "device, labels, annotations, max_display_size, multimask, refine, hover, "
                "opacity, proposals."
            )
        self._closed = False
        self._cv = threading.Condition(threading.RLock())
        self._worker = self._prefetcher = None
        self._running = {"_worker": False, "_prefetcher": False}
        if is_dataset_source(image):
            self._dataset = Dataset(image)
        else:
            self._dataset = Dataset(ArraySource([to_rgb(image)], ["image"]))
        session = Session(self._dataset.names, labels)
        engine = shared_engine(model, device)  # before any thread: a failure leaves none
        store = getattr(self._dataset.source, "store", None)  # a Dataset over an embedding store
        if store is not None and hasattr(engine, "use_store"):
            engine.use_store(store)  # its images open with no encoder run
        super().__init__(multimask=multimask, refine=refine, hover=hover,
                         opacity=_check_opacity(opacity), _uid=uuid.uuid4().hex,
                         count=len(session), labels=session.labels, label=session.label,
                         label_colors=[session.color(x, 0) for x in session.labels],
                         _wire=default_mode(),
                         notice=str(getattr(engine, "fallback_notice", "") or ""))
        try:
            self._session = session
            self._engine = engine
            self._max_display = int(max_display_size)
            self._init_state()
            self._proposals = check_proposals(proposals, self._dataset)
            if annotations is not None:
                self._resume(annotations)
            self.engine = str(getattr(engine, "name", type(engine).__name__))
            from .picture import StaticPicture
            from .predictor import Predictor

            if not isinstance(engine, Predictor):
                self.everything_state = (
                    f"unavailable: Everything needs SAM; this widget runs the weights-free "
                    f"{self.engine!r} engine. Create it with model='vit_b' (SAM's weights) to "
                    "segment everything.")
            self._picture = StaticPicture(self._picture_rgb, self._picture_text)
            self.observe(lambda _change: self._picture.changed(),
                         ["mask_rev", "objects", "selected"])
            self.device = str(getattr(engine, "device", "cpu"))
            self._show(0)
            self.on_msg(self._on_frontend_msg)
            self.observe(self._on_selected, "selected")
            self.observe(self._on_prompt_trait, ["points", "box"])
            self.observe(self._on_index, "index")
            self.observe(self._on_label, "label")
            self.observe(self._on_labels, "labels")
            self._kick()
        except BaseException:
            self._closed = True
            self.close()
            raise

    def _init_state(self) -> None:
        self._rgb: np.ndarray | None = None
        self._rgbs: OrderedDict[int, np.ndarray] = OrderedDict()
        #: display JPEGs by image index, with the RGB array each was made from (`_display`)
        self._displays: OrderedDict[int, tuple[np.ndarray, bytes]] = OrderedDict()
        self._dirty = False  # the current entry has no answer published yet
        self._failed_rev: tuple[int, BaseException] | None = None
        self._hover_req: dict | None = None
        self._hover_cache = None
        self._everything = False  # the "Everything" button was pressed; True until it is done
        self._stop_everything = False  # the view's Stop: ends "Everything" after its batch
        self._picture = None
        self._pending_commit = False
        #: keyword settings of `sam_widget.automatic.MaskGenerator` for the "Everything" button
        self.everything_settings: dict[str, Any] = {}
        self._internal = 0  # > 0 while this class itself writes traits
        self._wire_masks: dict[tuple[int, int], bytes] = {}
        self._handleless: int | None = None
        self._image_gen = 0
        self._chain = (None, 0)  # (client whose edits made the latest revisions, rev before)
        self._last_seq: dict[str, int] = {}
        self.stats = {"decodes": 0, "coalesced": 0, "hover_requests": 0, "hover_answers": 0,
                      "hover_in_flight_max": 0, "last_prompt_s": 0.0, "last_bytes": 0,
                      "hover_reused": 0, "stale": 0, "refused": 0, "prefetched": 0,
                      "prefetch_cancelled": 0,
                      "timeline": deque(maxlen=64)}
        self._hover_in_flight = 0

    # ----------------------------------------------------------------------------- public API
    @property
    def predictor(self) -> Any:
        """The engine answering prompts (a Predictor, ClassicPredictor, ...)."""
        return self._engine

    @property
    def dataset(self) -> Dataset:
        """The images this widget annotates (one, for a single image)."""
        return self._dataset

    @property
    def session(self) -> Session:
        """The annotation state (plain Python): every image's prompts, objects and labels."""
        return self._session

    @property
    def image(self) -> np.ndarray:
        """The normalised RGB uint8 image (H, W, 3) the model sees."""
        if self._rgb is None:
            raise ValueError(self._session.current.error or "no image")
        return self._rgb

    @property
    def prediction(self) -> Prediction | None:
        """The engine's answer for the current prompts (None without prompts)."""
        self._wait()
        return self._session.current.current.prediction

    @property
    def masks(self) -> np.ndarray:
        """Bool (C, H, W) candidate masks at the image size for the current prompts."""
        pred = self.prediction
        if pred is None:
            return np.zeros((0, *self.image.shape[:2]), bool)
        return entry_masks(self._session.current.current, pred)

    @property
    def mask(self) -> np.ndarray:
        """Bool (H, W): the selected candidate (all False without prompts)."""
        masks = self.masks
        if len(masks) == 0:
            return np.zeros(self.image.shape[:2], bool)
        return masks[min(self.selected, len(masks) - 1)]

    @property
    def display_masks(self) -> np.ndarray:
        """Bool (C, h, w) candidates at display resolution: exactly what the frontend draws."""
        pred = self.prediction
        if pred is None:
            return np.zeros((0, self.display_height, self.display_width), bool)
        return entry_display_masks(self._session.current.current, self.display_height,
                                   self.display_width, pred)

    @property
    def annotations(self) -> dict[int, list[dict]]:
        """Every image's objects: {index: [object, ...]} for the images that have any."""
        with self._cv:
            return self._session.annotations()

    @property
    def value(self) -> dict[str, Any]:
        """The user-level state as plain data (what marimo shows as the element's value, see
        `sam_widget.hosts.marimo_ui`): points, box, selected, scores and the current image's
        objects without their masks (each with its area in pixels)."""
        return {
            "points": [list(p) for p in self.points],
            "box": None if self.box is None else list(self.box),
            "selected": int(self.selected),
            "scores": [float(x) for x in self.scores],
            "objects": [{k: v for k, v in o.items() if k != "mask"} for o in self.objects],
            "index": int(self.index),
            "status": self.status,
        }

    def add_point(self, x: float, y: float, label: int = 1) -> SamWidget:
        """Add a prompt point (image pixels); returns once the masks reflect it."""
        self._check_open(image=True)
        cur = self._session.current.current
        points = validate_points([*cur.points, [x, y, label]], *self._size)
        return self._prompt(points, cur.box)

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> SamWidget:
        """Set the prompt box (image pixels); returns once the masks reflect it."""
        self._check_open(image=True)
        cur = self._session.current.current
        return self._prompt(cur.points, validate_box([x0, y0, x1, y1], *self._size))

    def set_prompts(self, points: Any = None, box: Any = None) -> SamWidget:
        """Replace points and box at once; returns once the masks reflect them."""
        self._check_open(image=True)
        w, h = self._size
        return self._prompt(validate_points(points, w, h), validate_box(box, w, h))

    def undo(self) -> SamWidget:
        """Go back one prompt state; at the first, undo the last object edit (no-op at the
        start)."""
        return self._edit("undo")

    def redo(self) -> SamWidget:
        """Go forward one prompt state or object edit (no-op at the end)."""
        return self._edit("redo")

    def clear(self) -> SamWidget:
        """Remove all prompts (undoable)."""
        return self._edit("clear")

    def _edit(self, kind: str, client: str | None = None, seq: str | None = None) -> SamWidget:
        self._check_open()
        with self._cv:
            img = self._session.current
            objects = img.objects
            if getattr(img, kind)():
                self._changed(client, seq=seq, objects=img.objects is not objects)
            elif seq is not None:
                self._write(prompt_seq=seq)
        return self if client is not None else self._wait()

    # --- navigation -----------------------------------------------------------------------
    def goto(self, index: int) -> SamWidget:
        """Show image ``index`` of the dataset (its objects and prompts come back); returns
        once it is shown (its encode may still run: prompts wait for it)."""
        self._check_open()
        i = self._session.check_index(index)
        if i != self._session.index:
            self.index = i  # the observer shows it
        return self

    def next(self) -> SamWidget:
        """Show the next image (stays on the last)."""
        return self.goto(min(self._session.index + 1, len(self._session) - 1))

    def previous(self) -> SamWidget:
        """Show the previous image (stays on the first)."""
        return self.goto(max(self._session.index - 1, 0))

    def set_image(self, image: Any) -> SamWidget:
        """Show a new image with the same model (cached embeddings are reused).

        The widget then holds that one image: prompts, history and objects of the old ones are
        dropped (save them first; an unsaved change is warned about).
        """
        self._check_open()
        rgb = to_rgb(image)
        self._warn_unsaved("set_image")
        with self._cv:
            self._dataset = Dataset(ArraySource([rgb], ["image"]))
            self._session = Session(["image"], self._session.labels or None,
                                    self._session.history_bytes)
            self._rgbs.clear()
            self._displays.clear()
            self._wire_masks.clear()
            self._handleless = None
            self._write(count=1, index=0)
            self._show(0)
        return self

    def retry(self) -> SamWidget:
        """Try again to read and encode the shown image after an error (e.g. out of memory)."""
        self._check_open()
        with self._cv:
            self._session.current.error = None
            self._rgbs.pop(self._session.index, None)
            self._displays.pop(self._session.index, None)
            self._show(self._session.index)
        return self

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the background threads, free embeddings and undo history, close the comm.

        The annotations stay (``w.save`` and ``w.annotations`` still work); any other use
        raises `ClosedError`. Unsaved annotations are warned about."""
        cv = getattr(self, "_cv", None)
        if cv is None:  # the constructor failed before anything was made
            super().close()
            return
        if not getattr(self, "_closed_done", False) and hasattr(self, "_session"):
            self._warn_unsaved("close")
        if getattr(self, "_picture", None) is not None:
            self._picture.cancel()
        with cv:
            self._closed = True
            cv.notify_all()
        for thread in (self._worker, self._prefetcher):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=60)
        session = getattr(self, "_session", None)
        if session is not None:
            with cv:
                for img in session.images.values():
                    img.handle = None
                    for entry in img.history:
                        entry.slim()
                self._rgbs.clear()
                self._displays.clear()
                self._hover_cache = None
                self._wire_masks.clear()
        self._closed_done = True
        super().close()
        gc.collect(0)

    def _warn_unsaved(self, what: str) -> None:
        if self._session.changed and self._session.annotations():
            n = sum(len(v) for v in self._session.annotations().values())
            warnings.warn(f"SamWidget.{what}(): {n} object(s) were never saved; "
                          "w.save(folder) keeps them (it still works after close())",
                          UserWarning, stacklevel=3)

    def _check_open(self, image: bool = False) -> None:
        if self._closed:
            raise ClosedError("this SamWidget was closed: create a new one (w.save(...) and "
                              "w.annotations still work on the closed widget)")
        if image and self._rgb is None:
            raise RuntimeError(f"SamWidget: {self._session.current.error}; w.next() or "
                               "w.goto(i) moves on")

    def set_wire(self, mode: str) -> None:
        """Send bytes as "binary" buffers or as "base64" strings (hosts without binary buffers;
        the view asks for it when its start-up probe fails). Resends the bytes traits."""
        if mode not in ("binary", "base64"):
            raise PromptError(f"wire mode must be 'binary' or 'base64', got {quote(mode, 40)}")
        if mode == self._wire:
            return
        self._wire = mode
        self.send_state(["_wire", "_image", "_masks", "objects"])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        try:
            png = self._render_png()
        except (ImportError, ValueError):  # no plot helpers, or an unreadable image
            return bundle
        if isinstance(bundle, tuple):
            data, meta = bundle
            return {**data, "image/png": png}, meta
        return {**(bundle or {}), "image/png": png}

    def __repr__(self) -> str:
        where = f"image {self.index + 1}/{self.count}, " if self.count > 1 else ""
        return (f"SamWidget({where}{self.image_width}x{self.image_height} image, "
                f"engine={self.engine!r}, points={len(self.points)}, "
                f"objects={len(self.objects)}, status={self.status!r})")

    def wait(self) -> SamWidget:
        """Block until the image is encoded and the masks answer the current prompts."""
        self._check_open()
        return self._wait()

    # ------------------------------------------------------------------------------- internals
    @property
    def _size(self) -> tuple[int, int]:
        return self.image_width, self.image_height

    def _load(self, i: int) -> np.ndarray:
        """Image ``i`` as RGB, from the small cache of decoded images when it is there."""
        with self._cv:
            rgb = self._rgbs.get(i)
            if rgb is not None:
                self._rgbs.move_to_end(i)
                return rgb
        rgb = self._dataset[i]
        with self._cv:
            self._rgbs[i] = rgb
            while len(self._rgbs) > _RGB_CACHE:
                self._rgbs.popitem(last=False)
        return rgb

    def _display(self, i: int, rgb: np.ndarray) -> bytes:
        """Image ``i``'s display JPEG (30-40 ms to make at 1024 px): made once per decoded
        image, ahead of time by the prefetch thread, so moving on does not wait for it."""
        with self._cv:
            cached = self._displays.get(i)
            if cached is not None and cached[0] is rgb:
                return cached[1]
        data = encode_image(rgb, max_size=self._max_display)
        with self._cv:
            self._displays[i] = (rgb, data)
            self._displays.move_to_end(i)
            while len(self._displays) > _RGB_CACHE:
                self._displays.popitem(last=False)
        return data

    def _show(self, i: int) -> None:
        """Make image ``i`` the shown one: its pixels, prompts, objects and answer."""
        with self._cv:
            self._session.index = i
            img = self._session.current
            for j, other in self._session.images.items():  # embeddings only near the view
                if abs(j - i) > 2:
                    other.handle = None
            self._image_gen += 1  # tells the images of cached predictions apart
            self._hover_cache = None
            try:
                rgb = self._load(i)
            except Exception as exc:  # noqa: BLE001 - an unreadable file: say so, move on
                rgb = None
                img.error = f"cannot read image {i + 1} ({img.name}): {exc}"
            self._rgb = rgb
            h, w = (0, 0) if rgb is None else rgb.shape[:2]
            dh, dw = (0, 0) if rgb is None else display_size(h, w, self._max_display)
            values = {"index": i, "image_name": img.name, "image_width": w, "image_height": h,
                      "display_width": dw, "display_height": dh,
                      "_image": b"" if rgb is None else self._display(i, rgb)}
            if img.error:
                values.update(status=f"error: {img.error}", message=f"error: {img.error}")
            elif not self._encoded():
                values.update(status="encoding", message=f"encoding… · {self.engine} on "
                                                         f"{self.device}")
            else:
                values.update(status="ready", message=self._ready_message())
            self._write(**values)
            if rgb is not None:
                self._offer_proposals(i, (h, w))
            self._changed(None, objects=True)

    def _object_bytes(self, obj: dict) -> bytes:
        """An object's mask at display resolution, packed for the wire (made once)."""
        key = (self._session.index, obj["id"], id(obj["mask"]))
        data = self._wire_masks.get(key)
        if data is None:
            from PIL import Image

            mask = obj["mask"]
            if mask.shape != (self.display_height, self.display_width) and self.display_width:
                mask = np.asarray(Image.fromarray(mask).resize(
                    (self.display_width, self.display_height), Image.Resampling.NEAREST))
            data = self._wire_masks[key] = encode_masks(mask)
        return data

    def _render_png(self, max_size: int = 1024) -> bytes:
        from .plot import render_png

        return render_png(self.image, **self._drawn(), max_size=max_size)

    def _write(self, **values: Any) -> None:
        """Set traits together in one message, marked as our own writes."""
        with self._cv:
            if self._closed and getattr(self, "_closed_done", False):
                return
            self._internal += 1
            try:
                with self.hold_sync():
                    for name, value in values.items():
                        setattr(self, name, value)
            finally:
                self._internal -= 1

    def _changed(self, client: str | None, seq: str | None = None, objects: bool = False) -> None:
        """The current image's prompts (or objects) changed: publish, schedule its masks."""
        img = self._session.current
        entry = img.current
        rev_before = self._session.rev
        self._session.rev += 1
        if client is None or self._chain[0] != client:
            self._chain = (client, rev_before)
        self._dirty = True
        self._failed_rev = None
        history, pos = img.window()
        values = {**_state(entry.points, entry.box), "history": history, "history_index": pos,
                  "can_undo": img.can_undo, "can_redo": img.can_redo,
                  "prompt_rev": self._session.rev}
        if objects:
            values["objects"] = list(img.objects)
        if seq is not None:
            values["prompt_seq"] = seq
        if img.error is None and self.status.startswith("error"):
            values["status"] = "ready" if self._encoded() else "encoding"
        self._write(**values)
        self._kick()

    def _prompt(self, points: list, box: list | None, client: str | None = None,
                seq: str | None = None, wait: bool = True) -> SamWidget:
        with self._cv:
            img = self._session.current
            if img.error is not None and self._rgb is not None:  # a failed encode: retry
                img.error = None
            if img.push(points, box):
                self._changed(client, seq=seq)
            elif seq is not None:
                self._write(prompt_seq=seq)
        return self._wait() if wait else self

    def _wait(self, check: bool = True) -> SamWidget:
        """Block until encoded, answered and any "Everything" run is done (returns at once on
        the worker thread); raise the error of a failed encode or decode of this state."""
        if threading.current_thread() in (self._worker, self._prefetcher):
            return self
        with self._cv:
            while (not self._closed and self._session.current.error is None
                   and (self._dirty or not self._encoded() or self._everything)):
                self._cv.wait(0.5)
            if not check:
                return self
            img = self._session.current
            if img.error is not None:
                raise RuntimeError(f"SamWidget: {img.error}") from getattr(img, "encode_exc",
                                                                           None)
            if self._failed_rev is not None and self._failed_rev[0] == self._session.rev:
                exc = self._failed_rev[1]
                raise RuntimeError(f"SamWidget: predict failed: {type(exc).__name__}: "
                                   f"{quote(str(exc))[1:-1]}") from exc
        return self

    def _report(self, exc: BaseException, what: str) -> None:
        """An error while handling something: log it, say so, keep prompts and objects."""
        if isinstance(exc, PromptError):
            text = str(exc)
            logger.warning("sam_widget: %s: %s", what, text)
        else:
            text = f"{type(exc).__name__}: {quote(str(exc))[1:-1]}"
            logger.error("sam_widget: %s failed", what, exc_info=exc)
        self._write(status=f"error: {what}: {text}", message=f"error: {what}: {text}")

    def _trace(self, rev: int, **times: float) -> None:
        """Wall-clock times (``time.time()``) of one prompt revision, for latency breakdowns:
        ``w.stats["timeline"]`` holds the last 64 as dicts with ``rev``, ``received`` (the
        frontend's message arrived), ``decode_start`` and ``sent`` (mask bytes handed over)."""
        timeline = self.stats["timeline"]
        for item in reversed(timeline):
            if item["rev"] == rev:
                item.update(times)
                return
        timeline.append({"rev": rev, **times})

    # trait observers and the view's changes ----------------------------------------------
    @t.validate("opacity")
    def _valid_opacity(self, proposal: dict) -> float:
        return _check_opacity(proposal["value"])

    @t.validate("label")
    def _valid_label(self, proposal: dict) -> str | None:
        session = getattr(self, "_session", None)
        return proposal["value"] if session is None else session.check_label(proposal["value"])

    def _on_label(self, change: dict) -> None:
        self._session.label = change["new"]

    def _on_labels(self, change: dict) -> None:
        """``w.labels = [...]`` from Python: new class names (objects keep theirs)."""
        if self._internal:
            return
        from .session import check_labels

        with self._cv:
            self._session.labels = check_labels(change["new"])
            label = self.label if self.label in self._session.labels else (
                self._session.labels[0] if self._session.labels else None)
            self._write(label_colors=[self._session.color(x, 0) for x in self._session.labels],
                        label=label)

    def _on_index(self, change: dict) -> None:
        if self._internal:
            return
        try:
            i = self._session.check_index(change["new"])
        except PromptError:
            self._write(index=change["old"])
            raise
        self._show(i)

    def _on_selected(self, change: dict) -> None:
        with self._cv:
            entry = self._session.current.current
            n = 0 if entry.prediction is None else len(entry.prediction.scores)
            if n and not 0 <= change["new"] < n:
                self._write(selected=change["old"] if 0 <= change["old"] < n else 0)
                self._report(PromptError(f"selected must be 0..{n - 1}, got {change['new']}"),
                             "selected")
                return
            entry.selected = int(change["new"])

    def _on_prompt_trait(self, change: dict) -> None:
        """``w.points = ...`` / ``w.box = ...`` (from Python or a view): a new prompt state."""
        if self._internal:
            return
        with self._cv:
            cur = self._session.current.current
            points = self.points if change["name"] == "points" else cur.points
            box = self.box if change["name"] == "box" else cur.box
            try:
                w, h = self._size
                points, box = validate_points(points, w, h), validate_box(box, w, h)
            except PromptError:
                self._write(points=[list(p) for p in cur.points], box=cur.box)
                raise
            self._prompt(points, box, wait=False)


def _check_opacity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 <= value <= 1):
        raise t.TraitError(f"opacity must be a number in [0, 1], got {quote(value)}")
    return float(value)


logging.getLogger("sam_widget").addHandler(logging.NullHandler())
