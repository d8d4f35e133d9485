"""The widget's edits of masks and objects: the brush and eraser, "Add object", deleting,
relabelling and hiding objects, "Everything" and the proposals of an embedding store.

`Editing` is the half of `SamWidget` that changes objects; the state itself is the session's
(``sam_widget.session``), this only serialises access and publishes the result. "Everything"
runs `MaskGenerator` on the worker thread (``BackgroundWork._run_everything``), unless the
dataset's embedding store keeps the image's automatic masks (``sw.precompute(...,
everything=True)``): then they are added at once. With ``SamWidget(..., proposals=True)`` the
stored masks are pre-filled as objects the first time the user arrives on an image without
objects (the SAM paper's semi-automatic stage: annotate what the masks missed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .session import PromptError, quote
from .strokes import validate_stroke

if TYPE_CHECKING:
    from .widget import SamWidget


class Editing:
    """Mixin of `SamWidget`: object and mask edits, "Everything" and stored proposals."""

    def apply_stroke(self, stroke: dict, target: int | None = None) -> SamWidget:
        """Brush or erase at full resolution: ``stroke`` is ``{"mode": "add" | "erase",
        "radius": r, "points": [[x, y], ...]}`` in image pixels (sam_widget.strokes).

        ``target`` None edits the current mask (an undoable step; later prompts keep the edit,
        "Add object" and the prompt log record it); an object id edits that kept object
        (undoable). Returns once the masks reflect it."""
        self._check_open()
        self._wait()
        self._stroke(stroke, target, client=None)
        return self._wait()

    def _stroke(self, stroke: Any, target: Any, client: str | None,
                seq: str | None = None) -> None:
        w, h = self._size
        try:
            clean = validate_stroke(stroke, w, h)
        except ValueError as exc:
            raise PromptError(str(exc)) from None
        with self._cv:
            img = self._session.current
            if target is None:
                img.paint(clean)
                self._changed(client, seq=seq)
            else:
                img.paint_object(target, clean)
                self._changed(client, seq=seq, objects=True)

    def commit(self, name: str | None = None, *, label: Any = ...) -> dict | None:
        """"Add object": keep the current mask as an object and start the next one.

        ``label`` (default: ``w.label``) is one of ``w.labels`` or None. Returns the new object
        (dict with id, name, label, color, score, points, box, visible, area, steps, mask), or
        None when there is no mask to keep.
        """
        self._check_open()
        label = self.label if label is ... else self._session.check_label(label)
        self._wait()
        obj = self._commit(name, label)
        self._wait()
        return obj

    def _commit(self, name: str | None = None, label: Any = ...,
                client: str | None = None) -> dict | None:
        with self._cv:
            label = self.label if label is ... else label
            img = self._session.current
            oid = img.next_object
            obj = img.commit(label=label, color=self._session.color(label, oid),
                             refine=bool(self.refine), name=name)
            if obj is not None:
                self._changed(client, objects=True)
        return obj

    def _commit_now(self) -> None:
        self._pending_commit = False
        try:
            self._commit(client=self._chain[0])
        except Exception as exc:  # noqa: BLE001
            self._report(exc, "add object")

    def remove_object(self, object_id: int) -> None:
        """Delete a committed object of the current image by id (undoable)."""
        self._object_edit(object_id, None)

    def set_object_label(self, object_id: int, label: str | None) -> dict:
        """Give an object another label (one of ``w.labels`` or None; undoable)."""
        label = self._session.check_label(label)
        return self._object_edit(object_id, {"label": label,
                                             "color": self._session.color(label, object_id)})

    def set_object_visible(self, object_id: int, visible: bool) -> None:
        """Show or hide a committed object's mask in the view."""
        self._object_edit(object_id, {"visible": bool(visible)})

    def _object_edit(self, object_id: int, changes: dict | None,
                     client: str | None = None) -> dict | None:
        with self._cv:
            img = self._session.current
            if changes is None:
                img.remove_object(object_id)
                obj = None
            else:
                obj = img.edit_object(object_id, **changes)
            self._changed(client, objects=True)
        return obj

    def segment_everything(
        self, progress: Callable[[int, int], None] | None = None,
        found: list[int] | None = None, *, stored: bool = True, **settings: Any
    ) -> list[dict]:
        """Run SAM's automatic mask generator (``sam_widget.automatic.MaskGenerator``, official
        settings as keywords) and add every mask as an object (one undoable step, source
        "everything", the current label); returns the new objects.

        When the dataset's store keeps this image's automatic masks (``sw.precompute(...,
        everything=True)``) they are added instead, at once: no generator run, no encoder call.
        Settings given here, or ``stored=False``, run the generator anyway.

        ``progress(done, total)`` is called after each batch of point prompts; ``found``, a
        one-item list, holds the number of masks kept so far when it is called."""
        from .automatic import MaskGenerator
        from .predictor import Predictor

        self._check_open()
        records = self._stored_masks() if stored and not settings else None
        if records is not None:
            return self._add_automatic(records)
        self._wait()
        if not isinstance(self._engine, Predictor):
            raise ValueError(
                f"'Everything' needs a SAM model; this widget runs {self.engine!r}. "
                "Create it with model='vit_b' (or another SAM variant) to segment everything."
            )
        gen = MaskGenerator(self._engine, **settings)
        if found is not None:  # the masks kept so far, read by the progress callback
            inner = progress

            def progress(done: int, total: int) -> None:
                found[0] = gen.found
                if inner is not None:
                    inner(done, total)

        records = gen.generate(self.image, progress=progress)
        return self._add_automatic(records)

    # --- an embedding store's automatic masks --------------------------------------------
    def _stored_masks(self) -> list[dict] | None:
        """The current image's automatic masks kept by the dataset's store, or None."""
        return self._dataset.masks(self._session.index)

    def _add_automatic(self, records: list[dict]) -> list[dict]:
        """Automatic-mask records become objects of the shown image (one undoable step)."""
        with self._cv:
            added = self._session.add_automatic(
                records, label=self.label, size=(self.image_height, self.image_width))
            self._changed(None, objects=True)
        return added

    def _press_everything(self) -> None:
        """The view's "Everything" button: the store's masks at once when it keeps them (and no
        ``everything_settings`` ask for a run), else a generator run on the worker thread."""
        records = None if self.everything_settings else self._stored_masks()
        if records is not None:
            added = self._add_automatic(records)
            self._write(message=f"everything: {len(added)} stored masks added as objects")
            return
        if self.everything_state.startswith("unavailable"):
            raise PromptError(self.everything_state.split(": ", 1)[1])
        self._stop_everything = False
        self._everything = True
        self._kick()

    def _offer_proposals(self, index: int, size: tuple[int, int]) -> None:
        """``proposals=True``: pre-fill image ``index`` with its stored masks on the user's
        first arrival when it has no objects (`Session.prefill` decides)."""
        img = self._session.image(index)
        if not self._proposals or img.proposed:
            return
        try:
            added = self._session.prefill(index, self._dataset.masks(index), size)
        except Exception as exc:  # noqa: BLE001 - a broken record: say so, show the image
            img.proposed = True
            self._report(exc, "proposals")
            return
        if added:
            n = len(added)
            self._write(message=f"{self.message} · {n} proposal{'s' if n != 1 else ''} "
                                "from the store")


def check_proposals(value: Any, dataset: Any) -> bool:
    """SamWidget's ``proposals=``: a bool, True only for a dataset whose source keeps masks."""
    if not isinstance(value, bool):
        raise TypeError(f"proposals must be True or False, got {quote(value)}")
    if value and getattr(dataset.source, "masks", None) is None:
        raise ValueError("proposals=True shows the automatic masks an embedding store keeps: "
                         "open a store made by sw.precompute(images, store, everything=True), "
                         "e.g. SamWidget(sw.Dataset(store), model=..., proposals=True)")
    return value
