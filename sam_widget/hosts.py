"""Host-specific glue for notebooks other than Jupyter: marimo.

marimo re-runs the cells that read a UI element when its view changes something, and exposes
the element's value as ``.value``. Wrapped with plain ``mo.ui.anywidget``, a SamWidget's value
would be every synced trait, raw image and mask bytes included; `marimo_ui` wraps it so that
``.value`` is the user-level state (`SamWidget.value`: points, box, selected, scores, objects
without their masks). Either way a click re-runs dependent cells: the view reports each answer
it drew (the ``_view_rev`` trait), which marimo sees as a change.

    import marimo as mo, sam_widget as sw
    w = sw.marimo_ui(sw.SamWidget(image))
    w                       # in another cell: w.mask, w.objects, w.value
"""

from __future__ import annotations

from typing import Any

_ui_class: type | None = None


def marimo_ui(widget: Any) -> Any:
    """``widget`` as a marimo UI element whose ``.value`` is ``widget.value`` (no bytes).

    Attribute access goes through to the widget (``w.mask``, ``w.add_point(...)``), as with
    ``mo.ui.anywidget``. Needs marimo (``pip install marimo``)."""
    global _ui_class
    if _ui_class is None:
        try:
            import marimo as mo
        except ImportError as exc:
            raise ImportError("marimo_ui needs marimo: pip install marimo") from exc

        class SamWidgetUI(mo.ui.anywidget):  # type: ignore[misc, name-defined]
            """A SamWidget in marimo: ``.value`` is its user-level state."""

            @property
            def value(self) -> dict[str, Any]:
                return self.widget.value

        _ui_class = SamWidgetUI
    return _ui_class(widget)
