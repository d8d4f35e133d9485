"""SamWidget in marimo (issue 13, item 8): a click on the image re-runs the cells that read the
widget, and the widget's value is the user-level state (no image or mask bytes). One
`marimo edit` server for this module."""

from __future__ import annotations

import pytest
from harness import timeout_s
from marimo_host import MarimoServer

pytestmark = pytest.mark.browser

NOTEBOOK = '''
import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo
    import numpy as np
    import sam_widget as sw

    img = np.zeros((240, 320, 3), np.uint8)
    img[..., 2] = 90
    img[60:180, 80:200] = (220, 200, 40)
    w = sw.marimo_ui(sw.SamWidget(img, model=sw.ClassicPredictor()))
    plain = mo.ui.anywidget(sw.SamWidget(img, model=sw.ClassicPredictor()))
    mo.vstack([w, plain])
    return mo, plain, w


@app.cell
def _(mo, plain):
    mo.md(f"plain anywidget, its points: {len(plain.points)}")
    return


@app.cell
def _(mo, w):
    state = w.value
    mo.md(
        f"sam points: {len(w.points)} · mask pixels: {int(w.mask.sum())} · "
        f"value: {','.join(sorted(state))} · bytes in value: "
        f"{any(isinstance(v, (bytes, memoryview)) for v in state.values())}"
    )
    return
'''


@pytest.fixture(scope="module")
def marimo_server():
    with MarimoServer(NOTEBOOK) as server:
        yield server


def test_a_click_reruns_the_cells_that_read_the_widget(marimo_server, chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(timeout_s() * 1000)
    try:
        page = context.new_page()
        marimo_server.open(page)
        page.get_by_text("sam points: 0").wait_for()
        canvas = page.locator("canvas.sam-markers").first
        canvas.wait_for()
        page.locator(".sam-status", has_text="ready").first.wait_for()
        bb = canvas.bounding_box()
        page.mouse.click(bb["x"] + 0.4 * bb["width"], bb["y"] + 0.5 * bb["height"])
        text = page.get_by_text("sam points: 1")
        text.wait_for()
        assert "mask pixels: 0 " not in text.inner_text()
        assert "bytes in value: False" in text.inner_text()
        for name in ("points", "box", "selected", "objects"):
            assert name in text.inner_text()
        # plain mo.ui.anywidget re-runs its dependents after a click too
        second = page.locator("canvas.sam-markers").nth(1)
        bb = second.bounding_box()
        page.mouse.click(bb["x"] + 0.4 * bb["width"], bb["y"] + 0.5 * bb["height"])
        page.get_by_text("plain anywidget, its points: 1").wait_for()
    finally:
        context.close()
