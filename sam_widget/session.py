"""Annotation state, pure Python: per-image prompt history, undo/redo, objects and labels.

`ImageSession` is one image's work: the prompt states (undoable, with their decoded answers
kept within a byte budget), the selected candidate, the committed objects (each with its label)
and the undoable edits of those objects. `Session` holds one `ImageSession` per image of a
`Dataset`, the current position and the class labels. Nothing here knows of traitlets, threads
or the wire: ``sam_widget.widget`` shows a Session and serialises access to it.

Every object says where it came from in its ``"source"``: "prompts" (kept with "Add object"),
"everything" (the automatic masks, of a live `MaskGenerator` run or stored in an embedding
store), "proposal" (a store's automatic masks pre-filled when the user first arrived on an image
that had no objects, see `Session.prefill`) or "annotations" (loaded from a file that did not
say).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .predictor import Prediction

__all__ = ["PromptError", "ImageSession", "Session", "validate_points", "validate_box",
           "automatic_objects", "MAX_POINTS", "PALETTE", "HISTORY_BYTES", "SOURCES"]

#: most points one prompt may hold; SAM itself was trained with far fewer
MAX_POINTS = 256
#: colours given to labels (and to unlabelled objects) in turn (RGB hex), readable on photos
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip
#: bytes of decoded answers (logits, cached masks) an image's undo history keeps; older states
#: drop theirs and are decoded again if the user goes back to them
HISTORY_BYTES = 16 * 2**20
#: the states next to the current one always keep their answers (undo/redo is instant)
_KEEP_NEAR = 2
#: what an object's "source" says (see the module docstring)
SOURCES = ("prompts", "everything", "proposal", "annotations")
#: the longest a value is quoted in an error message
QUOTE = 200


class PromptError(ValueError):
    """A prompt that cannot be used (bad coordinates, types, too many points...)."""


def quote(value: Any, limit: int = QUOTE) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about untrusted input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise PromptError(f"{what} must be a number, got {type(value).__name__} {quote(value)}")
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
            raise PromptError(f"point {i} must be [x, y, label], got {quote(item)}")
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
        raise PromptError(f"box must be [x0, y0, x1, y1] or None, got {quote(box)}")
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


def prompt_state(points: list, box: list | None) -> dict:
    """A prompt state as plain data: {"points": [[x, y, label], ...], "box": [...] | None}."""
    return {"points": [list(p) for p in points], "box": None if box is None else list(box)}


@dataclass
class Entry:
    """One prompt state in the undo history, with its answer once decoded.

    ``prediction`` and ``mask_input`` may be dropped to keep the history within its byte
    budget; ``decoded``, ``multimask`` and ``selected`` stay, so the prompt log survives.
    """

    points: list[list[float]]
    box: list[float] | None
    prediction: Prediction | None = None
    selected: int = 0
    mask_input: np.ndarray | None = field(default=None, repr=False)
    decoded: bool = False  # answered once (even if the answer was since dropped)
    multimask: bool = True
    #: brush/eraser strokes on top of the answer (see "Brush and eraser" below); a new prompt
    #: state keeps the strokes of the one it follows
    strokes: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None

    @property
    def nbytes(self) -> int:
        n = 0 if self.mask_input is None else self.mask_input.nbytes
        if self.prediction is not None:
            n += np.asarray(self.prediction.logits).nbytes
            cached = self.prediction.__dict__.get("masks")
            n += 0 if cached is None else np.asarray(cached).nbytes
        return n

    def answer(self, prediction: Prediction, mask_input: np.ndarray | None, selected: int,
               multimask: bool) -> None:
        self.prediction, self.mask_input, self.selected = prediction, mask_input, selected
        self.decoded, self.multimask = True, multimask

    def slim(self) -> None:
        """Drop what can be computed again: the answer and the logits it was decoded from."""
        self.prediction = None
        self.mask_input = None

    def drop_full_masks(self) -> None:
        """Keep the answer but not its full-size masks (recomputed from the logits on demand)."""
        if self.prediction is not None:
            self.prediction.__dict__.pop("masks", None)


class ImageSession:
    """One image's annotation state: undoable prompts, objects and their labels."""

    def __init__(self, index: int = 0, name: str = "image", history_bytes: int = HISTORY_BYTES):
        self.index = index
        self.name = name
        self.history: list[Entry] = [Entry([], None)]
        self.pos = 0
        self.objects: list[dict] = []
        self.next_object = 1
        self.history_bytes = history_bytes
        # undoable object edits: (objects before, prompt history before, pos before)
        self._object_undo: list[tuple[list[dict], list[Entry], int]] = []
        self._object_redo: list[tuple[list[dict], list[Entry], int]] = []
        #: the engine's handle of this image's encoding (set by whoever encodes it)
        self.handle: Any = None
        #: why the image could not be read or encoded (shown in the status line), or None
        self.error: str | None = None
        #: True once anything changed that a save has not written yet
        self.changed = False
        #: True once the image's stored automatic masks were offered as proposals (or it had
        #: objects when the user first arrived): `Session.prefill` never offers them twice
        self.proposed = False

    # --------------------------------------------------------------------------- prompts
    @property
    def current(self) -> Entry:
        return self.history[self.pos]

    @property
    def can_undo(self) -> bool:
        return self.pos > 0 or bool(self._object_undo)

    @property
    def can_redo(self) -> bool:
        return self.pos < len(self.history) - 1 or bool(self._object_redo)

    def push(self, points: list, box: list | None) -> bool:
        """A new prompt state (drops the redo tail); False when it equals the current one."""
        cur = self.current
        if points == cur.points and box == cur.box:
            return False
        del self.history[self.pos + 1:]
        self._object_redo.clear()
        self.history.append(Entry([list(p) for p in points], None if box is None else list(box),
                                  strokes=list(cur.strokes) if points or box else []))
        self.pos += 1
        self.trim()
        return True

    def clear(self) -> bool:
        """Remove all prompts (itself undoable); False when there were none."""
        return False if self.current.empty else self.push([], None)

    def undo(self) -> bool:
        """Back one prompt state; at the first, undo the last object edit (an "Add object" gives
        its prompts back). False when there is nothing to undo."""
        if self.pos > 0:
            self.pos -= 1
            return True
        if self._object_undo:
            objects, history, pos = self._object_undo.pop()
            self._object_redo.append((self.objects, self.history, self.pos))
            self.objects, self.history, self.pos = objects, history, pos
            self.changed = True
            return True
        return False

    def redo(self) -> bool:
        if self.pos < len(self.history) - 1:
            self.pos += 1
            return True
        if self._object_redo:
            objects, history, pos = self._object_redo.pop()
            self._object_undo.append((self.objects, self.history, self.pos))
            self.objects, self.history, self.pos = objects, history, pos
            self.changed = True
            return True
        return False

    def window(self) -> tuple[list[dict], int]:
        """What a view needs for instant undo/redo: the previous, current and next prompt
        states (as many as exist) and the current one's position among them."""
        lo = max(0, self.pos - 1)
        states = [prompt_state(e.points, e.box) for e in self.history[lo:self.pos + 2]]
        if self.pos == 0 and self._object_undo:
            # undo at the first state brings the last object's prompts back: show those
            before, pos = self._object_undo[-1][1], self._object_undo[-1][2]
            states.insert(0, prompt_state(before[pos].points, before[pos].box))
            return states, 1
        return states, self.pos - lo

    def mask_input(self, pos: int | None = None) -> np.ndarray | None:
        """The selected low-res logits (1, 256, 256) of the latest answered state before
        ``pos`` (default: the current one), or None after an empty state."""
        pos = self.pos if pos is None else pos
        for entry in reversed(self.history[:pos]):
            if entry.prediction is not None:
                logits = np.asarray(entry.prediction.logits)
                k = min(entry.selected, len(logits) - 1)
                return logits[k][None].astype(np.float32)
            if entry.empty:
                return None
        return None

    def trim(self) -> int:
        """Keep the decoded answers within ``history_bytes``: states far from the current one
        lose theirs first (oldest first); full-size masks are kept only for the current state.
        Returns the bytes dropped."""
        before = sum(e.nbytes for e in self.history)
        for i, entry in enumerate(self.history):
            if i != self.pos:
                entry.drop_full_masks()
        total = sum(e.nbytes for e in self.history)
        for i, entry in enumerate(self.history):
            if total <= self.history_bytes:
                break
            if abs(i - self.pos) <= _KEEP_NEAR:
                continue
            total -= entry.nbytes
            entry.slim()
        return before - total

    @property
    def nbytes(self) -> int:
        """Bytes held by the undo history's answers (objects' masks not counted)."""
        return sum(e.nbytes for e in self.history)

    def steps(self, refine: bool) -> list[dict]:
        """The decoded prompt states that led to the current mask, oldest first.

        With ``refine`` each state's decode took the previous decoded state's selected logits
        as mask_input, so all of them are needed to reproduce the mask (``export.replay``);
        without it the last state alone is.
        """
        chain: list[Entry] = []
        for entry in reversed(self.history[: self.pos + 1]):
            if entry.empty:
                break
            if entry.decoded:
                chain.append(entry)
                if not refine:
                    break
        return [{**prompt_state(e.points, e.box), "multimask": e.multimask,
                 "selected": e.selected} for e in reversed(chain)]

    # --------------------------------------------------------------------------- objects
    def _snapshot(self) -> None:
        self._object_undo.append((list(self.objects), self.history, self.pos))
        self._object_redo.clear()
        self.changed = True

    def commit(self, *, label: str | None, color: str, refine: bool,
               name: str | None = None) -> dict | None:
        """"Add object": the current answer's selected mask becomes an object with ``label``;
        the prompt history starts afresh. None when there is no answer to keep."""
        entry = self.current
        if entry.prediction is None:
            return None
        scores = np.asarray(entry.prediction.scores).reshape(-1)
        k = min(entry.selected, len(scores) - 1)
        mask = entry_masks(entry)[k]
        oid = self.next_object
        self.next_object += 1
        obj = {
            "id": oid,
            "name": name or (f"{label} {oid}" if label else f"object {oid}"),
            "label": label,
            "color": color,
            "score": float(scores[k]),
            "points": [list(p) for p in entry.points],
            "box": None if entry.box is None else list(entry.box),
            "visible": True,
            "area": int(mask.sum()),
            # how to reproduce the mask: the decoded prompt states (export.replay)
            "steps": self.steps(refine),
            # hand edits after the prompts (export.replay applies them last)
            "strokes": [dict(x) for x in entry.strokes],
            "source": "prompts",
            "mask": mask,
        }
        self._snapshot()
        self.objects = [*self.objects, obj]
        self.history, self.pos = [Entry([], None)], 0
        return obj

    def add_objects(self, objects: list[dict]) -> list[dict]:
        """Add ready-made objects (automatic masks, resumed annotations) in one undoable step;
        each gets a fresh id."""
        self._snapshot()
        added = []
        for obj in objects:
            new = {**obj, "id": self.next_object}
            self.next_object += 1
            added.append(new)
        self.objects = [*self.objects, *added]
        return added

    def find(self, object_id: Any) -> dict:
        for obj in self.objects:
            if obj["id"] == object_id:
                return obj
        raise PromptError(f"no object with id {quote(object_id)} on image {self.name!r}")

    def remove_object(self, object_id: int) -> None:
        """Delete an object (undoable)."""
        self.find(object_id)
        self._snapshot()
        self.objects = [o for o in self.objects if o["id"] != object_id]

    def edit_object(self, object_id: int, **changes: Any) -> dict:
        """Change an object's label, name, colour or visibility (undoable but for visibility)."""
        obj = self.find(object_id)
        if set(changes) - {"visible"}:
            self._snapshot()
        new = {**obj, **changes}
        self.objects = [new if o["id"] == object_id else o for o in self.objects]
        return new


    # ----------------------------------------------------------------- brush and eraser
    # Hand edits of masks (sam_widget.strokes). On the current mask a stroke is a new prompt
    # state with the same prompts and answer plus the stroke, so undo/redo work as for prompts
    # and later prompts keep it; on a kept object it is an undoable object edit.

    def paint(self, stroke: dict) -> None:
        """Apply a validated stroke to the current mask (undoable)."""
        cur = self.current
        if cur.prediction is None:
            raise PromptError("nothing to paint on yet: click the object first, then brush or "
                              "erase its mask")
        del self.history[self.pos + 1:]
        self._object_redo.clear()
        self.history.append(Entry([list(p) for p in cur.points],
                                  None if cur.box is None else list(cur.box),
                                  prediction=cur.prediction, selected=cur.selected,
                                  mask_input=cur.mask_input, decoded=cur.decoded,
                                  multimask=cur.multimask, strokes=[*cur.strokes, stroke]))
        self.pos += 1
        self.trim()
        self.changed = True

    def paint_object(self, object_id: int, stroke: dict) -> dict:
        """Apply a validated stroke to a kept object's full-size mask (undoable)."""
        from .strokes import apply_stroke

        obj = self.find(object_id)
        mask = apply_stroke(obj["mask"], stroke)
        return self.edit_object(object_id, mask=mask, area=int(mask.sum()),
                                strokes=[*obj.get("strokes", []), stroke])


def automatic_objects(records: list[dict], label: str | None, source: str,
                      size: tuple[int, int] | None = None) -> list[dict]:
    """Objects (without id, name and colour) from automatic-mask records as `MaskGenerator`
    gives them: "segmentation" a bool (H, W) mask or a COCO RLE (``output_mode="coco_rle"``, as
    an embedding store keeps them), "predicted_iou", "point_coords". ``size`` (H, W): the image
    they must fit (a clear error otherwise)."""
    from .export import decode_rle

    out = []
    for i, rec in enumerate(records):
        seg = rec["segmentation"]
        mask = decode_rle(seg) if isinstance(seg, dict) else np.asarray(seg, bool)
        if size is not None and mask.shape != tuple(size):
            raise ValueError(f"automatic mask {i} is {mask.shape[0]}x{mask.shape[1]}, but the "
                             f"image is {size[0]}x{size[1]}: the masks belong to another image")
        out.append({"name": None, "label": label, "color": "",
                    "score": float(rec.get("predicted_iou", 0.0)),
                    "points": [[*p, 1] for p in rec.get("point_coords", [])],
                    "box": None, "visible": True, "area": int(mask.sum()),
                    "steps": [], "source": source, "mask": mask})
    return out


def entry_masks(entry: Entry, prediction: Prediction | None = None) -> np.ndarray:
    """Bool (C, H, W) candidates of a prompt state at the image size, its strokes applied."""
    from .strokes import edit_candidates

    pred = prediction if prediction is not None else entry.prediction
    return edit_candidates(np.asarray(pred.masks), entry.strokes)


def entry_display_masks(entry: Entry, height: int, width: int,
                        prediction: Prediction | None = None) -> np.ndarray:
    """Bool (C, height, width) candidates at display size, strokes applied at full resolution
    first (so the view shows exactly what Python has)."""
    from .strokes import nearest_resize

    pred = prediction if prediction is not None else entry.prediction
    if not entry.strokes:
        return np.asarray(pred.masks_at(height, width))
    return nearest_resize(entry_masks(entry, pred), height, width)


class Session:
    """The annotation state of a whole dataset: one `ImageSession` per visited image, the
    current position, the class labels and the label new objects get."""

    def __init__(self, names: list[str], labels: list[str] | None = None,
                 history_bytes: int = HISTORY_BYTES) -> None:
        if not names:
            raise ValueError("a session needs at least one image")
        self.names = list(names)
        self.labels = check_labels(labels)
        self.label: str | None = self.labels[0] if self.labels else None
        self.index = 0
        self.history_bytes = history_bytes
        self.images: dict[int, ImageSession] = {}
        #: changes of every prompt state or object, across all images (views tag their
        #: messages with the revision they saw, see `SamWidget`)
        self.rev = 0

    def __len__(self) -> int:
        return len(self.names)

    def image(self, index: int | None = None) -> ImageSession:
        """The state of image ``index`` (default: the current one), made on first use."""
        i = self.index if index is None else self.check_index(index)
        if i not in self.images:
            self.images[i] = ImageSession(i, self.names[i], self.history_bytes)
        return self.images[i]

    @property
    def current(self) -> ImageSession:
        return self.image()

    def check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise PromptError(f"index must be an int, got {type(index).__name__} {quote(index)}")
        if not 0 <= int(index) < len(self.names):
            raise PromptError(f"index {int(index)} is out of range: the dataset has "
                              f"{len(self.names)} images (0..{len(self.names) - 1})")
        return int(index)

    def check_label(self, label: Any) -> str | None:
        if label is None:
            return None
        if not isinstance(label, str) or label not in self.labels:
            known = ", ".join(repr(x) for x in self.labels) or "none (pass labels=[...])"
            raise PromptError(f"unknown label {quote(label)}; the labels are {known}")
        return label

    def color(self, label: str | None, object_id: int) -> str:
        """A label's colour (the same on every image), else one per object."""
        if label is not None and label in self.labels:
            return PALETTE[self.labels.index(label) % len(PALETTE)]
        return PALETTE[(object_id - 1) % len(PALETTE)]

    @property
    def changed(self) -> bool:
        """Whether any image has object changes that were not saved."""
        return any(s.changed for s in self.images.values())

    def mark_saved(self) -> None:
        for s in self.images.values():
            s.changed = False

    def annotations(self) -> dict[int, list[dict]]:
        """{index: objects} of every image that has any, in dataset order."""
        return {i: list(s.objects) for i, s in sorted(self.images.items()) if s.objects}

    def add_automatic(self, records: list[dict], *, label: str | None, source: str = "everything",
                      index: int | None = None, size: tuple[int, int] | None = None
                      ) -> list[dict]:
        """Automatic-mask records (see `automatic_objects`) become objects of image ``index``
        (default: the current one) in one undoable step; returns them."""
        img = self.image(index)
        added = img.add_objects(automatic_objects(records, label, source, size))
        for obj in added:
            obj["name"] = f"{'proposal' if source == 'proposal' else 'object'} {obj['id']}"
            obj["color"] = self.color(label, obj["id"])
        return added

    def prefill(self, index: int, records: list[dict] | None,
                size: tuple[int, int] | None = None) -> list[dict]:
        """Proposals (the SAM paper's semi-automatic stage): the first time the user arrives on
        an image that has no objects, its stored automatic masks become unlabelled objects with
        source "proposal", the image's starting state (not an edit to undo, not an unsaved
        change). Never twice for one image: not after the user deleted them, not on an image
        that had objects (e.g. resumed ones). ``records`` None (none stored): nothing happens."""
        img = self.image(index)
        if img.proposed or records is None:
            return []
        img.proposed = True
        if img.objects:
            return []
        changed = img.changed
        added = self.add_automatic(records, label=None, source="proposal", index=index,
                                   size=size)
        img._object_undo.pop()  # the starting state: undo does not remove it
        img.changed = changed
        return added

    def proposed(self) -> list[int]:
        """Indices of the images whose proposals were offered (`prefill`), for a save to keep."""
        return sorted(i for i, s in self.images.items() if s.proposed)

    def restore(self, annotations: dict[int, list[dict]], labels: list[str],
                proposed: Any = ()) -> None:
        """Put saved objects back on their images (labels first joined to the known ones);
        ``proposed``: indices of images whose proposals were already offered (never again)."""
        for index in proposed:
            self.image(index).proposed = True
        for name in labels:
            if name not in self.labels:
                self.labels.append(name)
        if self.label is None and self.labels:
            self.label = self.labels[0]
        for index, objects in sorted(annotations.items()):
            img = self.image(index)
            added = []
            for obj in objects:
                mask = np.asarray(obj["mask"], bool)
                label = obj.get("label")
                added.append({"name": obj.get("name") or None, "label": label,
                              "color": "", "score": float(obj.get("score") or 0.0),
                              "points": obj.get("points") or [], "box": obj.get("box"),
                              "visible": True, "area": int(mask.sum()),
                              "steps": obj.get("steps") or [],
                              "source": obj.get("source") or "annotations", "mask": mask})
            for obj in img.add_objects(added):
                obj["name"] = obj["name"] or (f"{obj['label']} {obj['id']}" if obj["label"]
                                              else f"object {obj['id']}")
                obj["color"] = self.color(obj["label"], obj["id"])
            img._object_undo.clear()  # loading is not an edit to undo
            img.changed = False


def check_labels(labels: Any) -> list[str]:
    """Class names: a list of distinct, non-empty strings (None: no labels)."""
    if labels is None:
        return []
    if isinstance(labels, str) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise TypeError(f"labels must be a list of non-empty strings, got {quote(labels)}")
    labels = [x.strip() for x in labels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {quote(labels)}")
    return labels
