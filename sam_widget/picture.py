"""The static picture a reader without a kernel sees (GitHub, nbviewer, nbconvert HTML offline).

A widget view needs a kernel, or the widget's JavaScript from the internet; a saved notebook
read anywhere else shows only what its outputs hold as plain data. So `SamWidget` displays two
outputs: the live view, and a picture of the image with the current mask and the kept objects
under an IPython display id. The picture is re-rendered (debounced) whenever the masks or the
objects change and replaces its output in place (``update_display_data``), so a saved notebook
always holds the latest one, and only one: a JPEG (PNG for images of few colours) at most
``MAX_SIDE`` pixels on its longer side and ``MAX_BYTES`` of base64 text.

Live frontends must not show the picture under the view: its output also carries a widget-view
mime entry with an empty ``model_id``, which the Jupyter widget renderers (JupyterLab, Notebook
7, Voila) hide, and which nbconvert skips (no widget state has that id), falling back to the
image.
"""

from __future__ import annotations

import base64
import io
import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

#: the picture's longer side, in pixels
MAX_SIDE = 800
#: seconds without changes before the picture is re-rendered (it costs a few hundred ms of
#: CPU, so it waits for a pause in the user's clicking)
DELAY_S = 1.5
#: the most bytes the picture may take in the notebook (base64 text)
MAX_BYTES = 150_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def encode_picture(rgb: np.ndarray, quality: int = 80) -> tuple[str, bytes]:
    """(mime type, bytes): PNG for images of few colours (drawings, synthetic scenes), else
    JPEG, made smaller (quality, then size) until its base64 fits ``MAX_BYTES``."""
    from PIL import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    sample = rgb[::7, ::7].reshape(-1, 3).astype(np.uint32)
    colours = len(np.unique((sample[:, 0] << 16) | (sample[:, 1] << 8) | sample[:, 2]))
    img = Image.fromarray(rgb)
    if colours <= 512:
        out = io.BytesIO()
        img.save(out, format="PNG", compress_level=1)
        if len(out.getvalue()) * 4 // 3 <= MAX_BYTES:
            return "image/png", out.getvalue()
    while True:
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=quality)
        data = out.getvalue()
        if len(data) * 4 // 3 <= MAX_BYTES or max(img.size) <= 200:
            return "image/jpeg", data
        if quality > 60:
            quality -= 10
        else:
            img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.BILINEAR)


def picture_bundle(rgb: np.ndarray, text: str) -> dict[str, Any]:
    """The picture output's data: the image, a hidden widget view and a text line."""
    mime, data = encode_picture(rgb)
    return {
        WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": ""},
        mime: base64.b64encode(data).decode("ascii"),
        "text/plain": text,
    }


class StaticPicture:
    """Keeps one display output up to date with ``render()`` (an RGB array) and ``text()``."""

    def __init__(self, render: Callable[[], np.ndarray], text: Callable[[], str],
                 delay: float = DELAY_S) -> None:
        self._render = render
        self._text = text
        self._delay = delay
        self.display_id: str | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.updates = 0

    def bundle(self) -> dict[str, Any]:
        return picture_bundle(self._render(), self._text())

    def show(self) -> None:
        """Display the picture output (once per display of the widget; updates reach all)."""
        from IPython.display import display

        if self.display_id is None:
            self.display_id = f"sam-widget-{uuid.uuid4().hex}"
        display(self.bundle(), raw=True, display_id=self.display_id)

    def changed(self) -> None:
        """The masks or objects changed: re-render once things are quiet for ``delay`` s."""
        if self.display_id is None:
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._delay, self.update)
            self._timer.daemon = True
            self._timer.start()

    def update(self) -> None:
        """Re-render now and replace the output in place."""
        from IPython.display import update_display

        with self._lock:
            self._timer = None
        if self.display_id is None:
            return
        try:
            update_display(self.bundle(), raw=True, display_id=self.display_id)
            self.updates += 1
        except Exception:  # never let a picture break the widget (e.g. the kernel is closing)
            pass

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


class PictureDisplay:
    """Mixin of `SamWidget`: how IPython displays it (the live view, then its picture)."""

    def _ipython_display_(self) -> None:
        """In IPython (Jupyter, Voila, nbconvert): the live view, then the static picture that
        a saved notebook shows to readers without a kernel, kept up to date (sam_widget.picture)."""
        from IPython.display import display

        bundle = super()._repr_mimebundle_()  # type: ignore[misc]
        data, meta = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        display(data, metadata=meta, raw=True)
        try:
            self._picture.show()
        except (ImportError, ValueError):  # no plot helpers, or an unreadable image
            pass

    def _drawn(self) -> dict:
        """What a static picture of the widget draws (``sam_widget.plot.render``'s masks,
        points, labels and box): the visible objects, the selected candidate, the prompts."""
        from .session import entry_masks

        with self._cv:
            entry = self._session.current.current
            masks = [o["mask"] for o in self.objects if o.get("visible", True)]
            if entry.prediction is not None:
                masks.append(entry_masks(entry)[min(entry.selected,
                                                    len(entry.prediction.scores) - 1)])
            return {"masks": masks, "points": [(p[0], p[1]) for p in entry.points],
                    "labels": [p[2] for p in entry.points], "box": entry.box}

    def _picture_rgb(self) -> np.ndarray:
        from .plot import render

        return render(self.image, **self._drawn(), max_size=MAX_SIDE)

    def _picture_text(self) -> str:
        return (f"SamWidget: {len(self.objects)} object(s), {len(self.points)} point(s) "
                f"(a picture of the widget; run the notebook for the live view)")
