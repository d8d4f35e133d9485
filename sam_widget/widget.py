"""SamWidget: Segment Anything as an anywidget (click, box, see masks live, keep objects).

The kernel half of the widget. Lasting state lives in traits (so a reload or a second view shows
the same thing); the frontend (``js/widget.ts``) sends prompt states as custom messages tagged
with a sequence number; one background thread encodes the image and decodes only the latest
prompt state (bursts are coalesced), answering hover requests in between. Masks cross the wire
as bytes at display resolution (``sam_widget.codec``); full-size masks are made only when Python
asks for them (``w.masks``, ``w.mask``, ``w.objects``).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from .codec import display_size, encode_image, encode_masks
from .images import to_rgb
from .predictor import Prediction

#: most points one prompt may hold; SAM itself was trained with far fewer
MAX_POINTS = 256
#: colours given to committed objects in turn (RGB hex), readable on photographs
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip


class PromptError(ValueError):
    """A prompt that cannot be used (bad coordinates, types, too many points...)."""


@dataclass
class _Entry:
    """One prompt state in the undo history, with its answer once decoded."""

    points: list[list[float]]
    box: list[float] | None
    prediction: Prediction | None = None
    selected: int = 0
    mask_input: np.ndarray | None = field(default=None, repr=False)

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise PromptError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise PromptError(f"{what} must be finite, got {value}")
    return value


def _clean(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def validate_points(points: Any, width: int, height: int) -> list[list[float]]:
    """Check a list of [x, y, label] in image pixels; returns a clean copy or raises PromptError."""
    if points is None:
        return []
    if not isinstance(points, (list, tuple)):
        raise PromptError(f"points must be a list of [x, y, label], got {type(points).__name__}")
    if len(points) > MAX_POINTS:
        raise PromptError(
            f"too many points ({len(points)}); a prompt holds at most {MAX_POINTS}. "
            "Clear or undo some, or use a box."
        )
    out = []
    for i, item in enumerate(points):
        if not isinstance(item, (list, tuple, np.ndarray)) or len(item) not in (2, 3):
            raise PromptError(f"point {i} must be [x, y, label], got {item!r}")
        x = _number(item[0], f"point {i} x")
        y = _number(item[1], f"point {i} y")
        label = _number(item[2], f"point {i} label") if len(item) == 3 else 1.0
        if label not in (0.0, 1.0):
            raise PromptError(f"point {i} label must be 1 (foreground) or 0 (background)")
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(
                f"point {i} ({x:g}, {y:g}) lies outside the {width}x{height} image "
                f"(x in [0, {width}], y in [0, {height}])"
            )
        out.append([_clean(x), _clean(y), int(label)])
    return out


def validate_box(box: Any, width: int, height: int) -> list[float] | None:
    """Check [x0, y0, x1, y1] in image pixels with x0 < x1, y0 < y1; None passes through."""
    if box is None:
        return None
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        raise PromptError(f"box must be [x0, y0, x1, y1] or None, got {box!r}")
    names = ("x0", "y0", "x1", "y1")
    x0, y0, x1, y1 = (_number(v, f"box {n}") for v, n in zip(box, names, strict=True))
    if x0 >= x1 or y0 >= y1:
        raise PromptError(
            f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is inverted or empty: "
            "give [x0, y0, x1, y1] with x0 < x1 and y0 < y1"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise PromptError(
            f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] reaches outside the {width}x{height} image"
        )
    return [_clean(v) for v in (x0, y0, x1, y1)]


def _is_engine(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("set_image", "predict", "name"))


def _resolve_engine(model: Any, device: str | None) -> Any:
    """An Engine from "auto", a variant name, "classic", a Sam module, a Predictor/Engine."""
    if _is_engine(model):
        return model
    from .engines import resolve_engine

    return resolve_engine(model, device=device)


def _objects_to_json(objects: list[dict], widget: SamWidget) -> list[dict]:
    """Objects for the wire: everything but the full-size mask, which becomes display bytes."""
    out = []
    for obj in objects:
        item = {k: v for k, v in obj.items() if k != "mask"}
        item["mask"] = widget._object_bytes.get(obj["id"], b"")
        out.append(item)
    return out


def _objects_from_json(value: list[dict], widget: SamWidget) -> list[dict]:
    # The frontend changes objects only through messages; keep Python's own (full-size) copy.
    return widget.objects


class SamWidget(anywidget.AnyWidget):
    """Segment Anything in a notebook: click or drag on the image, get masks in Python.

    ``SamWidget(image, model="auto")``: image as numpy (HxW, HxWx3, HxWx4), PIL image or path;
    model "auto" (SAM vit_b when its weights are available, else the weights-free "classic"),
    a variant name ("vit_b", "vit_l", "vit_h", "mobile_sam", "classic"), a ``Sam`` module or a
    ``Predictor``/Engine. The image is encoded on a background thread; prompts made meanwhile
    are kept and answered when it is done.
    """

    _esm = Path(__file__).parent / "static" / "widget.js"

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
    """Committed objects: dicts with id, name, color, score, points, box, visible, mask (bool
    H x W at the image size)."""
    status = t.Unicode("loading model").tag(sync=True)
    """"loading model" | "encoding" | "ready" | "error: ..." (errors never lose prompts)."""
    message = t.Unicode("").tag(sync=True)
    """The status line shown under the image, e.g. "encoding… 3.2 s · vit_b on cpu"."""

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
    """Revision of the current prompt state (the kernel counts every change)."""
    mask_rev = t.Int(-1).tag(sync=True)
    """Revision of the prompt state that ``_masks`` answers."""
    prompt_seq = t.Unicode("").tag(sync=True)
    """"client:seq" of the last frontend message applied (lets a view drop stale local state)."""
    history = t.List().tag(sync=True)
    """The undo history: prompt states {"points", "box"}, oldest first."""
    history_index = t.Int(0).tag(sync=True)
    """Index of the current state in ``history``."""
    _uid = t.Unicode().tag(sync=True)
    _image = t.Bytes(b"").tag(sync=True)
    _masks = t.Bytes(b"").tag(sync=True)

    def __init__(
        self,
        image: Any,
        model: Any = "auto",
        *,
        device: str | None = None,
        max_display_size: int = 1024,
        multimask: bool = True,
        refine: bool = True,
        hover: bool = True,
        opacity: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            names = ", ".join(sorted(kwargs))
            raise TypeError(
                f"SamWidget() got unexpected keyword argument(s): {names}. Valid ones: model, "
                "device, max_display_size, multimask, refine, hover, opacity."
            )
        super().__init__(multimask=multimask, refine=refine, hover=hover, opacity=opacity,
                         _uid=uuid.uuid4().hex, history=[{"points": [], "box": None}])
        self._max_display = int(max_display_size)
        self._cv = threading.Condition(threading.RLock())
        self._history: list[_Entry] = [_Entry([], None)]
        self._index = 0
        self._rev = 0
        self._dirty = False  # the current entry has no answer published yet
        self._encoded = False
        self._encode_image: np.ndarray | None = None
        self._failed: str | None = None
        self._hover_req: dict | None = None
        self._everything = False  # the "Everything" button was pressed; True until it is done
        #: keyword settings of `sam_widget.automatic.MaskGenerator` for the "Everything" button
        self.everything_settings: dict[str, Any] = {}
        self._closed = False
        self._internal = 0  # > 0 while this class itself writes prompt traits
        self._object_bytes: dict[int, bytes] = {}
        self._next_object = 1
        self.stats = {"decodes": 0, "coalesced": 0, "hover_requests": 0, "hover_answers": 0,
                      "hover_in_flight_max": 0, "last_prompt_s": 0.0, "last_bytes": 0,
                      "hover_reused": 0, "timeline": deque(maxlen=64)}
        self._hover_in_flight = 0
        self._image_gen = 0
        self._engine = None
        self._handle: Any = None  # the engine's handle of the encoded image (see `_encode`)
        self._set_rgb(to_rgb(image))
        self.on_msg(self._on_frontend_msg)
        self.observe(self._on_selected, "selected")
        self.observe(self._on_prompt_trait, ["points", "box"])
        self._worker = threading.Thread(target=self._work, name="sam-widget", daemon=True)
        self._worker.start()
        try:
            self._engine = _resolve_engine(model, device)
        except Exception as exc:
            self._fail(f"could not load the model: {exc}")
            raise
        self.engine = str(getattr(self._engine, "name", type(self._engine).__name__))
        self.device = str(getattr(self._engine, "device", "cpu"))
        with self._cv:
            self._encode_image = self._rgb
            self._cv.notify_all()

    # ----------------------------------------------------------------------------- public API
    @property
    def predictor(self) -> Any:
        """The engine answering prompts (a Predictor, ClassicPredictor, ...)."""
        return self._engine

    @property
    def image(self) -> np.ndarray:
        """The normalised RGB uint8 image (H, W, 3) the model sees."""
        return self._rgb

    @property
    def prediction(self) -> Prediction | None:
        """The engine's answer for the current prompts (None without prompts)."""
        self._wait()
        return self._history[self._index].prediction

    @property
    def masks(self) -> np.ndarray:
        """Bool (C, H, W) candidate masks at the image size for the current prompts."""
        pred = self.prediction
        if pred is None:
            return np.zeros((0, *self._rgb.shape[:2]), bool)
        return np.asarray(pred.masks)

    @property
    def mask(self) -> np.ndarray:
        """Bool (H, W): the selected candidate (all False without prompts)."""
        masks = self.masks
        if len(masks) == 0:
            return np.zeros(self._rgb.shape[:2], bool)
        return masks[min(self.selected, len(masks) - 1)]

    @property
    def display_masks(self) -> np.ndarray:
        """Bool (C, h, w) candidates at display resolution: exactly what the frontend draws."""
        pred = self.prediction
        if pred is None:
            return np.zeros((0, self.display_height, self.display_width), bool)
        return np.asarray(pred.masks_at(self.display_height, self.display_width))

    def add_point(self, x: float, y: float, label: int = 1) -> SamWidget:
        """Add a prompt point (image pixels); returns once the masks reflect it."""
        cur = self._history[self._index]
        points = validate_points([*cur.points, [x, y, label]], *self._size)
        return self._prompt(points, cur.box)

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> SamWidget:
        """Set the prompt box (image pixels); returns once the masks reflect it."""
        cur = self._history[self._index]
        return self._prompt(cur.points, validate_box([x0, y0, x1, y1], *self._size))

    def set_prompts(self, points: Any = None, box: Any = None) -> SamWidget:
        """Replace points and box at once; returns once the masks reflect them."""
        w, h = self._size
        return self._prompt(validate_points(points, w, h), validate_box(box, w, h))

    def undo(self) -> SamWidget:
        """Go back one prompt state (no-op at the start)."""
        with self._cv:
            if self._index > 0:
                self._index -= 1
                self._changed()
        return self._wait()

    def redo(self) -> SamWidget:
        """Go forward one prompt state (no-op at the end)."""
        with self._cv:
            if self._index < len(self._history) - 1:
                self._index += 1
                self._changed()
        return self._wait()

    def clear(self) -> SamWidget:
        """Remove all prompts (undoable)."""
        with self._cv:
            if not self._history[self._index].empty:
                self._push(_Entry([], None))
        return self._wait()

    def commit(self, name: str | None = None) -> dict | None:
        """"Add object": keep the current mask as an object and start the next one.

        Returns the new object (dict with id, name, color, score, points, box, visible, mask),
        or None when there is no mask to keep.
        """
        self._wait()
        obj = self._commit(name)
        self._wait()
        return obj

    def _commit(self, name: str | None = None) -> dict | None:
        with self._cv:
            entry = self._history[self._index]
            if entry.prediction is None:
                return None
            k = min(entry.selected, len(entry.prediction.scores) - 1)
            oid = self._next_object
            self._next_object += 1
            mask = np.asarray(entry.prediction.masks[k])
            steps = self._prompt_steps()
            obj = {
                "id": oid,
                "name": name or f"object {oid}",
                "color": PALETTE[(oid - 1) % len(PALETTE)],
                "score": float(np.asarray(entry.prediction.scores).reshape(-1)[k]),
                "points": [list(p) for p in entry.points],
                "box": None if entry.box is None else list(entry.box),
                "visible": True,
                "area": int(mask.sum()),
                # how to reproduce the mask: the decoded prompt states, each one's selected
                # logits fed to the next as mask_input when refine is on (export.replay)
                "steps": steps,
                "mask": mask,
            }
            disp = entry.prediction.masks_at(self.display_height, self.display_width)[k]
            self._object_bytes[oid] = encode_masks(disp)
            self._history = [_Entry([], None)]
            self._index = 0
            self._changed(extra={"objects": [*self.objects, obj]})
        return obj

    def _prompt_steps(self) -> list[dict]:
        """The decoded prompt states that led to the current mask, oldest first.

        With ``refine`` each state's decode took the previous decoded state's selected logits
        as mask_input (see `_mask_input`), so all of them are needed to reproduce the mask;
        without it the last state alone is.
        """
        chain: list[_Entry] = []
        for entry in reversed(self._history[: self._index + 1]):
            if entry.empty:
                break
            if entry.prediction is not None:
                chain.append(entry)
            if not self.refine and chain:
                break
        return [
            {
                "points": [list(p) for p in e.points],
                "box": None if e.box is None else list(e.box),
                "multimask": len(np.asarray(e.prediction.scores).reshape(-1)) > 1,
                "selected": min(e.selected, len(np.asarray(e.prediction.scores).reshape(-1)) - 1),
            }
            for e in reversed(chain)
            if e.prediction is not None
        ]

    def remove_object(self, object_id: int) -> None:
        """Delete a committed object by id."""
        with self._cv:
            self._object_bytes.pop(object_id, None)
            self._write(objects=[o for o in self.objects if o["id"] != object_id])

    def set_object_visible(self, object_id: int, visible: bool) -> None:
        """Show or hide a committed object's mask in the view."""
        with self._cv:
            self._write(objects=[
                {**o, "visible": bool(visible)} if o["id"] == object_id else o
                for o in self.objects
            ])

    def set_image(self, image: Any) -> SamWidget:
        """Show a new image with the same model (cached embeddings are reused).

        Prompts, history and objects belong to the old image and are cleared.
        """
        rgb = to_rgb(image)
        with self._cv:
            self._set_rgb(rgb)
            self._encoded = False
            self._history = [_Entry([], None)]
            self._index = 0
            self._object_bytes.clear()
            self._changed(extra={"objects": []})
            self._encode_image = rgb
            self._cv.notify_all()
        return self

    def segment_everything(
        self, progress: Callable[[int, int], None] | None = None, **settings: Any
    ) -> list[dict]:
        """Run SAM's automatic mask generator (``sam_widget.automatic.MaskGenerator``, official
        settings as keywords) and add every mask as an object; returns the new objects.

        ``progress(done, total)`` is called after each batch of point prompts."""
        from .automatic import MaskGenerator
        from .predictor import Predictor

        self._wait()
        if not isinstance(self._engine, Predictor):
            raise ValueError(
                f"'Everything' needs a SAM model; this widget runs {self.engine!r}. "
                "Create it with model='vit_b' (or another SAM variant) to segment everything."
            )
        gen = MaskGenerator(self._engine, **settings)
        records = gen.generate(self._rgb, progress=progress)
        return self._add_records(records)

    def to_coco(self, **kwargs: Any) -> dict:
        """Objects (or else the current mask) as a COCO-style dict (RLE segmentations)."""
        from .export import to_coco

        if self.objects:
            masks = np.stack([o["mask"] for o in self.objects])
            scores = [o["score"] for o in self.objects]
        masks, scores, prompts = self._export_items()
        return to_coco(masks, scores=scores, prompts=prompts, **kwargs)

    def _export_items(self) -> tuple[np.ndarray, list[float] | None, list[dict]]:
        """Masks (N, H, W), scores and prompt records of the objects, else of the current mask."""
        if self.objects:
            masks = np.stack([o["mask"] for o in self.objects])
            scores = [o["score"] for o in self.objects]
            prompts = [{"points": o["points"], "box": o["box"], "steps": o.get("steps", [])}
                       for o in self.objects]
        else:
            masks = self.mask[None]
            scores = [float(self.scores[self.selected])] if self.scores else None
            with self._cv:
                steps = self._prompt_steps()
            prompts = [{"points": self.points, "box": self.box, "steps": steps}]
        return masks, scores, prompts

    def save(self, path: str | Path) -> Path:
        """Save the objects (or the current mask).

        A path without a suffix (or an existing folder) gets everything: image, COCO JSON,
        polygons, label PNG, RGBA cut-outs and the prompt log that `sam_widget.export.replay`
        re-runs (see `sam_widget.export.save`). A file path gets one format by its suffix:
        .json COCO, .png picture, .npy/.npz masks.
        """
        import json

        path = Path(path)
        suffix = path.suffix.lower()
        if not suffix or path.is_dir():
            from .export import save

            masks, scores, prompts = self._export_items()
            save(path, self._rgb, masks, scores=scores, prompts=prompts,
                 extra={"engine": self.engine, "refine": bool(self.refine)})
            return path
        masks = (np.stack([o["mask"] for o in self.objects]) if self.objects
                 else self.mask[None])
        if suffix == ".json":
            path.write_text(json.dumps(self.to_coco()))
        elif suffix == ".npy":
            np.save(path, masks)
        elif suffix == ".npz":
            np.savez_compressed(path, masks=masks)
        elif suffix == ".png":
            path.write_bytes(self._render_png(max_size=max(self._rgb.shape[:2])))
        else:
            raise ValueError(
                f"cannot save {path.name!r}: use .json, .png, .npy or .npz, or a folder"
            )
        return path

    def close(self) -> None:
        """Stop the background thread and close the widget's comm."""
        cv = getattr(self, "_cv", None)
        if cv is not None:
            with cv:
                self._closed = True
                cv.notify_all()
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        try:
            png = self._render_png()
        except ImportError:  # plot helpers not installed: the widget view alone is fine
            return bundle
        if isinstance(bundle, tuple):
            data, meta = bundle
            return {**data, "image/png": png}, meta
        return {**(bundle or {}), "image/png": png}

    def __repr__(self) -> str:
        h, w = self._rgb.shape[:2]
        return (f"SamWidget({w}x{h} image, engine={self.engine!r}, points={len(self.points)}, "
                f"objects={len(self.objects)}, status={self.status!r})")

    # ------------------------------------------------------------------------------- internals
    @property
    def _size(self) -> tuple[int, int]:
        return self.image_width, self.image_height

    def _set_rgb(self, rgb: np.ndarray) -> None:
        self._rgb = rgb
        self._image_gen += 1  # tells the images of cached predictions apart
        self._hover_cache = None
        h, w = rgb.shape[:2]
        dh, dw = display_size(h, w, self._max_display)
        with self.hold_sync():
            self.image_width, self.image_height = w, h
            self.display_width, self.display_height = dw, dh
            self._image = encode_image(rgb, max_size=self._max_display)

    def _render_png(self, max_size: int = 1024) -> bytes:
        from .plot import render_png

        entry = self._history[self._index]
        masks = [o["mask"] for o in self.objects if o.get("visible", True)]
        if entry.prediction is not None:
            masks.append(entry.prediction.masks[min(entry.selected,
                                                    len(entry.prediction.scores) - 1)])
        pts = [(p[0], p[1]) for p in entry.points]
        labels = [p[2] for p in entry.points]
        return render_png(self._rgb, masks=masks, points=pts, labels=labels, box=entry.box,
                          max_size=max_size)

    def _write(self, **values: Any) -> None:
        """Set traits together in one message, marked as our own writes."""
        with self._cv:
            self._internal += 1
            try:
                with self.hold_sync():
                    for name, value in values.items():
                        setattr(self, name, value)
            finally:
                self._internal -= 1

    def _push(self, entry: _Entry, seq: str | None = None) -> None:
        del self._history[self._index + 1 :]
        self._history.append(entry)
        self._index += 1
        self._changed(seq=seq)

    def _changed(self, extra: dict | None = None, seq: str | None = None) -> None:
        """The current entry changed: publish its prompts, schedule its masks."""
        entry = self._history[self._index]
        self._rev += 1
        self._dirty = True
        values = {
            "points": [list(p) for p in entry.points],
            "box": None if entry.box is None else list(entry.box),
            "history": [{"points": [list(p) for p in e.points], "box": e.box}
                        for e in self._history],
            "history_index": self._index,
            "can_undo": self._index > 0,
            "can_redo": self._index < len(self._history) - 1,
            "prompt_rev": self._rev,
            **(extra or {}),
        }
        if seq is not None:
            values["prompt_seq"] = seq
        if self._failed is None and self.status.startswith("error"):
            values["status"] = "ready" if self._encoded else self.status
        self._write(**values)
        self._cv.notify_all()

    def _prompt(self, points: list, box: list | None, seq: str | None = None,
                wait: bool = True) -> SamWidget:
        with self._cv:
            cur = self._history[self._index]
            if points == cur.points and box == cur.box:
                if seq is not None:
                    self._write(prompt_seq=seq)
            else:
                self._push(_Entry(points, box), seq=seq)
        return self._wait() if wait else self

    def wait(self) -> SamWidget:
        """Block until the image is encoded and the masks answer the current prompts."""
        return self._wait()

    def _wait(self) -> SamWidget:
        """Block until encoded, answered and any "Everything" run is done (returns at once on
        the worker thread)."""
        if threading.current_thread() is self._worker:
            return self
        with self._cv:
            while ((self._dirty or not self._encoded or self._encode_image is not None
                    or self._everything)
                   and self._failed is None and not self._closed):
                self._cv.wait(0.5)
            if self._failed is not None:
                raise RuntimeError(f"SamWidget: {self._failed}")
        return self

    def _fail(self, message: str) -> None:
        with self._cv:
            self._failed = message
            self._write(status=f"error: {message}", message=f"error: {message}")
            self._cv.notify_all()

    def _report(self, exc: BaseException, what: str) -> None:
        """An error while handling something: say so, keep prompts and objects."""
        text = str(exc) if isinstance(exc, PromptError) else f"{type(exc).__name__}: {exc}"
        self._write(status=f"error: {what}: {text}", message=f"error: {what}: {text}")

    # trait observers --------------------------------------------------------------------
    def _on_selected(self, change: dict) -> None:
        with self._cv:
            entry = self._history[self._index]
            n = 0 if entry.prediction is None else len(entry.prediction.scores)
            if n and not 0 <= change["new"] < n:
                self._internal += 1
                try:
                    self.selected = change["old"] if 0 <= change["old"] < n else 0
                finally:
                    self._internal -= 1
                self._report(PromptError(f"selected must be 0..{n - 1}, got {change['new']}"),
                             "selected")
                return
            entry.selected = int(change["new"])

    def _on_prompt_trait(self, change: dict) -> None:
        """``w.points = ...`` / ``w.box = ...`` from Python: a new prompt state."""
        if self._internal:
            return
        with self._cv:
            cur = self._history[self._index]
            points = self.points if change["name"] == "points" else cur.points
            box = self.box if change["name"] == "box" else cur.box
            try:
                w, h = self._size
                entry = _Entry(validate_points(points, w, h), validate_box(box, w, h))
            except PromptError:
                self._write(points=[list(p) for p in cur.points], box=cur.box)
                raise
            self._push(entry)

    # frontend messages ------------------------------------------------------------------
    def _on_frontend_msg(self, _widget: Any, content: Any, buffers: list) -> None:
        seq = None
        try:
            if not isinstance(content, dict):
                raise PromptError(f"message must be an object, got {type(content).__name__}")
            kind = content.get("type")
            client, number = content.get("client", ""), content.get("seq", 0)
            seq = f"{client}:{number}"
            if kind == "prompt":
                w, h = self._size
                try:
                    points = validate_points(content.get("points"), w, h)
                    box = validate_box(content.get("box"), w, h)
                except PromptError:
                    self._write(prompt_seq=seq)  # the view drops its local state
                    raise
                received = time.time()
                with self._cv:
                    self._prompt(points, box, seq=seq, wait=False)
                    self._trace(self._rev, received=received)
            elif kind == "hover":
                self._request_hover(content)
            elif kind in ("undo", "redo", "clear"):
                with self._cv:
                    if kind == "undo" and self._index > 0:
                        self._index -= 1
                        self._changed(seq=seq)
                    elif kind == "redo" and self._index < len(self._history) - 1:
                        self._index += 1
                        self._changed(seq=seq)
                    elif kind == "clear" and not self._history[self._index].empty:
                        self._push(_Entry([], None), seq=seq)
                    else:
                        self._write(prompt_seq=seq)
            elif kind == "commit":
                with self._cv:
                    if self._dirty:  # commit once the current prompts are answered
                        self._pending_commit = True
                    else:
                        self._commit_now()
                    self._write(prompt_seq=seq)
            elif kind == "object":
                oid = content.get("id")
                if not isinstance(oid, int) or all(o["id"] != oid for o in self.objects):
                    raise PromptError(f"no object with id {oid!r}")
                if content.get("delete"):
                    self.remove_object(oid)
                else:
                    self.set_object_visible(oid, bool(content.get("visible", True)))
            elif kind == "everything":
                with self._cv:
                    self._everything = True
                    self._cv.notify_all()
            else:
                raise PromptError(f"unknown message type {kind!r}")
        except Exception as exc:  # never a dead widget: say what was wrong, keep the state
            self._report(exc, "bad message from the view")

    _pending_commit = False

    def _commit_now(self) -> None:
        self._pending_commit = False
        try:
            self._commit()
        except Exception as exc:
            self._report(exc, "add object")

    def _request_hover(self, content: dict) -> None:
        x = _number(content.get("x"), "hover x")
        y = _number(content.get("y"), "hover y")
        with self._cv:
            self.stats["hover_requests"] += 1
            self._hover_in_flight += 1
            self.stats["hover_in_flight_max"] = max(self.stats["hover_in_flight_max"],
                                                    self._hover_in_flight)
            if self._hover_req is not None:  # superseded before we got to it: drop it
                self._answer_hover(self._hover_req, None)
            self._hover_req = {"seq": content.get("seq", 0), "x": x, "y": y}
            self._cv.notify_all()

    def _answer_hover(self, req: dict, data: bytes | None) -> None:
        self._hover_in_flight = max(0, self._hover_in_flight - 1)
        self.stats["hover_answers"] += 1
        msg = {"type": "hover", "seq": req["seq"], "rev": req.get("rev", self._rev),
               "empty": data is None}
        self.send(msg, buffers=[data] if data is not None else None)

    # worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not (
                    self._encode_image is not None
                    or (self._encoded and (self._dirty or self._hover_req or self._everything))
                    or (not self._encoded and self._hover_req)
                ):
                    self._cv.wait()
                if self._closed:
                    return
                image, self._encode_image = self._encode_image, None
                hover = None
                if image is None and not self._encoded and self._hover_req:
                    hover, self._hover_req = self._hover_req, None  # not encoded yet: no mask
            if image is not None:
                self._encode(image)
            elif hover is not None:
                with self._cv:
                    self._answer_hover(hover, None)
            elif self._dirty:
                self._decode_current()
            elif self._hover_req is not None:
                self._decode_hover()
            elif self._everything:
                try:
                    self._write(message="segmenting everything…")
                    self.segment_everything(progress=self._everything_progress,
                                            **self.everything_settings)
                    self._write(message=self._ready_message())
                except Exception as exc:
                    self._report(exc, "everything")
                finally:
                    with self._cv:
                        self._everything = False
                        self._cv.notify_all()

    def _everything_progress(self, done: int, total: int) -> None:
        self._write(message=f"segmenting everything… {done}/{total} batches of points")

    def _ready_message(self) -> str:
        took = getattr(self, "_encode_seconds", 0.0)
        engine = self.engine
        if engine == "classic":  # say plainly that this is not SAM (issue: works offline)
            engine = "classic (weights-free, not SAM: see the warning for SAM weights)"
        return f"ready · {engine} on {self.device} · encoded in {took:.1f} s"

    def _encode(self, image: np.ndarray) -> None:
        while self._engine is None and not self._closed and self._failed is None:
            time.sleep(0.02)  # the model is still loading on the main thread
        if self._engine is None:
            return
        start = time.perf_counter()
        done = threading.Event()

        def tick() -> None:  # the visible "encoding… 3.2 s · vit_b on cpu"
            while not done.wait(0.25):
                self._write(message=f"encoding… {time.perf_counter() - start:.1f} s · "
                                    f"{self.engine} on {self.device}")

        self._write(status="encoding", message=f"encoding… 0.0 s · {self.engine} on "
                                               f"{self.device}")
        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            # our own handle: another user of a shared engine (a second widget, a cell calling
            # set_image) never changes which image this widget's prompts are decoded on
            encode = getattr(self._engine, "encode", None)
            handle = encode(image) if encode is not None else self._engine.set_image(image)
        except Exception as exc:
            done.set()
            self._fail(f"encoding the image failed: {type(exc).__name__}: {exc}")
            return
        finally:
            done.set()
            ticker.join()
        with self._cv:
            self._encode_seconds = time.perf_counter() - start
            if self._encode_image is not None:  # a newer image arrived meanwhile
                return
            self._handle = handle
            self._encoded = True
            self._write(status="ready", message=self._ready_message())
            self._cv.notify_all()

    def _mask_input(self, index: int) -> np.ndarray | None:
        """The selected low-res logits (1, 256, 256) of the latest answered earlier state."""
        if not self.refine:
            return None
        for entry in reversed(self._history[:index]):
            if entry.prediction is not None:
                logits = np.asarray(entry.prediction.logits)
                k = min(entry.selected, len(logits) - 1)
                return logits[k][None].astype(np.float32)
            if entry.empty:
                return None
        return None

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

    def _decode_current(self) -> None:
        t0 = time.perf_counter()
        with self._cv:
            index, rev = self._index, self._rev
            self._trace(rev, decode_start=time.time())
            entry = self._history[index]
            mask_input = entry.mask_input
            if entry.prediction is None and not entry.empty and mask_input is None:
                mask_input = self._mask_input(index)
            multimask = bool(self.multimask)
            hovered = None
            if entry.prediction is None and not entry.empty:
                hovered = self._hovered(entry.points, entry.box, mask_input, multimask)
        try:
            masks = None
            if entry.empty:
                pred = None
            elif entry.prediction is not None:
                pred = entry.prediction  # undo/redo to a state answered before: no decode
            elif hovered is not None:  # the hover preview already decoded this click
                pred, masks = hovered
                self.stats["hover_reused"] += 1
            else:
                pred = self._predict(entry.points, entry.box, mask_input, multimask)
                self.stats["decodes"] += 1
            if pred is None:
                data, scores, best = b"", [], 0
            else:
                if masks is None:
                    masks = pred.masks_at(self.display_height, self.display_width)
                data = encode_masks(masks)
                scores = [float(s) for s in np.asarray(pred.scores).reshape(-1)]
                best = entry.selected if entry.prediction is not None else pred.best
        except Exception as exc:
            with self._cv:
                if rev == self._rev:
                    self._dirty = False
                    self._report(exc, "predict")
                    self._write(mask_rev=rev)
                    self._cv.notify_all()
            return
        with self._cv:
            if entry.prediction is None:
                entry.prediction, entry.mask_input, entry.selected = pred, mask_input, best
            if rev != self._rev:  # prompts changed while decoding: publish only the latest
                self.stats["coalesced"] += 1
                return
            self._dirty = False
            values = {"scores": scores, "_masks": data, "mask_rev": rev, "selected": best}
            if self.status.startswith("error") and self._failed is None:
                values.update(status="ready", message=self._ready_message())
            self._write(**values)
            self._trace(rev, sent=time.time())
            self.stats["last_prompt_s"] = time.perf_counter() - t0
            self.stats["last_bytes"] = len(data)
            pending_commit = self._pending_commit
            self._cv.notify_all()
        if pending_commit:
            self._commit_now()

    def _predict(self, points: list, box: list | None, mask_input: np.ndarray | None,
                 multimask: bool):
        pts = np.asarray([p[:2] for p in points], np.float32) if points else None
        labels = np.asarray([p[2] for p in points], np.int64) if points else None
        box_arr = None if box is None else np.asarray(box, np.float32)
        handle = {} if self._handle is None else {"image": self._handle}
        return self._engine.predict(points=pts, labels=labels, box=box_arr,
                                    mask_input=mask_input, multimask=multimask, **handle)

    def _decode_hover(self) -> None:
        with self._cv:
            req, self._hover_req = self._hover_req, None
            if req is None:
                return
            entry = self._history[self._index]
            req["rev"] = self._rev
            mask_input = self._mask_input(self._index + 1)
            points = [*entry.points, [req["x"], req["y"], 1]]
            box = entry.box
            multimask = bool(self.multimask)
            key = self._request_key(points, box, multimask)
        data = None
        try:
            if self.hover:
                pred = self._predict(points, box, mask_input, multimask)
                masks = pred.masks_at(self.display_height, self.display_width)
                data = encode_masks(masks[pred.best])
                with self._cv:  # a click right here will ask for exactly this prediction
                    self._hover_cache = (key, mask_input, pred, masks)
        except Exception as exc:
            self._report(exc, "hover")
        with self._cv:
            self._answer_hover(req, data)

    def _request_key(self, points: list, box: list | None, multimask: bool) -> tuple:
        """What a decode depends on besides mask_input: the image, prompts and multimask."""
        return (
            self._image_gen,
            tuple(tuple(float(v) for v in p) for p in points),
            None if box is None else tuple(float(v) for v in box),
            multimask,
        )

    def _hovered(self, points: list, box: list | None, mask_input: np.ndarray | None,
                 multimask: bool):
        """The hover preview's (prediction, display masks) when it decoded this very request
        (the pointer clicked where it rested), else None."""
        cached = self._hover_cache
        if cached is None or cached[0] != self._request_key(points, box, multimask):
            return None
        if (cached[1] is None) != (mask_input is None) or (
            mask_input is not None and not np.array_equal(cached[1], mask_input)
        ):
            return None
        return cached[2], cached[3]

    def _add_records(self, records: list[dict]) -> list[dict]:
        added = []
        with self._cv:
            objects = list(self.objects)
            for rec in records:
                mask = np.asarray(rec["segmentation"], bool)
                oid = self._next_object
                self._next_object += 1
                from PIL import Image

                disp = np.asarray(Image.fromarray(mask).resize(
                    (self.display_width, self.display_height), Image.Resampling.NEAREST))
                self._object_bytes[oid] = encode_masks(disp)
                obj = {"id": oid, "name": f"object {oid}",
                       "color": PALETTE[(oid - 1) % len(PALETTE)],
                       "score": float(rec.get("predicted_iou", 0.0)),
                       "points": [[*p, 1] for p in rec.get("point_coords", [])],
                       "box": None, "visible": True, "area": int(mask.sum()), "mask": mask}
                objects.append(obj)
                added.append(obj)
            self._write(objects=objects)
        return added
