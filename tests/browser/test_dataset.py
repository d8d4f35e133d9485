"""The folder workflow and the link to the kernel in real JupyterLab (headless Chromium).

A SamWidget over a folder of three synthetic images (the weights-free engine: these tests are
about navigation, labels and the wire, not the model): move with the buttons, the keys and the
position box, commit labelled objects, find them in ``w.annotations``; 300 rapid clicks reach
the kernel in order (the lag is measured and printed); a restarted kernel makes the view say
"disconnected" and a busy one "queued", with no uncaught errors. The same folder precomputed
into an embedding store with its automatic masks (a small random-weight SAM) opens with those
masks drawn as proposals on each image the user arrives on, with no encoder call.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
from test_widget import canvas_alpha, click, wait_for

pytestmark = pytest.mark.browser

FOLDER = """
import tempfile, pathlib, numpy as np
from PIL import Image
from sam_widget import SamWidget
folder = pathlib.Path(tempfile.mkdtemp())
for i, (h, w) in enumerate([(240, 320), (200, 300), (260, 320)]):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 40 + xx * 60 // w
    img[..., 2] = 90 + yy * 60 // h
    img[(xx - w * (0.3 + 0.2 * i)) ** 2 + (yy - h * 0.5) ** 2 < (h * 0.2) ** 2] = (220, 200, 40)
    Image.fromarray(img).save(folder / f"plate{i}.png")
"""


def show_folder(nb, extra: str = ""):
    nb.run_cell(FOLDER)
    nb.run_cell(f"w = SamWidget(folder, model='classic', labels=['cell', 'debris']{extra}); w")
    nb.execute("w.wait()")
    view = nb.page.locator(".sam-widget").first
    view.locator(".sam-status", has_text="ready").wait_for()
    return view


def button(view, label: str):
    return view.get_by_role("button", name=label, exact=True)


def test_moves_through_three_images_and_commits_labelled_objects(lab, tmp_path):
    nb = lab.new_notebook()
    view = show_folder(nb)
    position = view.get_by_label("Image number")
    assert position.input_value() == "1" and "/ 3" in view.locator(".sam-count").inner_text()
    assert button(view, "Previous image").is_disabled()

    # image 1: the key shift+2 picks "debris", a click, "Add object"
    click(nb, view, 0.3, 0.5, 320, 240)
    view.press("Shift+Digit2")
    nb.wait_until("w.label == 'debris' and len(w.scores) == 3")
    button(view, "Add object").click()
    nb.wait_until("len(w.objects) == 1")

    # to image 2 with the button, to image 3 with the key "n"
    button(view, "Next image").click()
    nb.wait_until("w.index == 1")
    view.locator(".sam-name", has_text="plate1.png").wait_for()
    view.focus()
    view.press("n")
    nb.wait_until("w.index == 2")
    assert button(view, "Next image").is_disabled()
    view.locator(".sam-status", has_text="ready").wait_for()

    # image 3: the label picker, a click, Enter ("Add object")
    view.get_by_label("Label", exact=True).select_option("cell")
    nb.wait_until("w.label == 'cell'")
    click(nb, view, 0.7, 0.5, 320, 260)
    nb.wait_until("len(w.scores) == 3")
    view.press("Enter")
    nb.wait_until("len(w.objects) == 1")
    view.get_by_role("listitem").first.wait_for()
    lab_shot = tmp_path / "dataset.png"
    view.screenshot(path=str(lab_shot))
    print(f"screenshot: {lab_shot}")

    # back with "p", then jump to image 1 by typing in the position box
    view.press("p")
    nb.wait_until("w.index == 1")
    position.fill("1")
    position.press("Enter")
    nb.wait_until("w.index == 0")
    view.get_by_label("Label of debris 1").wait_for()
    annotations = nb.value("{i: [o['label'] for o in objs] for i, objs in w.annotations.items()}")
    assert annotations == {"0": ["debris"], "2": ["cell"]}
    assert not [line for line in lab.console if line.startswith("pageerror")]


STORE = """
import sam_widget as sw
from tests.test_predictor_support import small_sam
sam = small_sam(1)
ds = sw.precompute(folder, "memory://proposals.zarr", model=sam, everything=True, progress=False,
                   everything_options=dict(points_per_side=4, pred_iou_thresh=0.0,
                                           stability_score_thresh=0.0))
encodes = []
sam.image_encoder.register_forward_pre_hook(lambda module, args: encodes.append(1))
"""


def test_stored_masks_are_drawn_as_proposals_on_each_image_reached(lab, tmp_path):
    nb = lab.new_notebook()
    nb.run_cell(FOLDER)
    nb.run_cell(STORE)
    nb.run_cell("w = SamWidget(sw.Dataset('memory://proposals.zarr'), model=sam, "
                "proposals=True); w")
    nb.execute("w.wait()")
    view = nb.page.locator(".sam-widget").first
    view.locator(".sam-status", has_text="ready").wait_for()
    objects = ("dict(sources=[o['source'] for o in w.objects], "
               "size=[w.display_height, w.display_width], "
               "union=np.any([o['mask'] for o in w.objects], axis=0).astype(int).tolist())")

    def drawn(union):
        alpha = canvas_alpha(view, "canvas.sam-objects-layer")
        return alpha.shape == union.shape and (alpha == union).all()

    for index, name in enumerate(["plate0.png", "plate1.png"]):
        view.locator(".sam-name", has_text=name).wait_for()
        state = nb.value(objects)
        assert state["sources"] and set(state["sources"]) == {"proposal"}
        union = np.asarray(state["union"], bool)
        assert list(union.shape) == state["size"]  # 320 px wide: display size = image size
        wait_for(lambda union=union: drawn(union), f"image {index + 1}'s proposals drawn")
        assert view.get_by_role("listitem").first.inner_text().startswith("proposal")
        shot = tmp_path / f"proposals{index}.png"
        view.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
        if index == 0:
            view.get_by_role("button", name="Next image", exact=True).click()
            nb.wait_until("w.index == 1")
    # an edit keeps the object's id: the view draws the new mask, not the one it had
    nb.execute("w.apply_stroke({'mode': 'erase', 'radius': 60, 'points': [[150, 100]]}, "
               "target=w.objects[0]['id'])")
    erased = np.asarray(nb.value(objects)["union"], bool)
    assert erased.sum() < union.sum()
    wait_for(lambda: drawn(erased), "the erased proposal drawn")
    assert nb.value("len(encodes)") == 0
    assert not [line for line in lab.console if line.startswith("pageerror")]


def test_300_rapid_clicks_reach_the_kernel_in_order_without_growing_lag(lab):
    nb = lab.new_notebook()
    view = show_folder(nb)
    nb.execute(
        "import time\n"
        "arrived = []\n"
        "_handle = w._handle\n"
        "def _logged(kind, content, client, seq):\n"
        "    arrived.append((content.get('seq'), time.time(), kind))\n"
        "    return _handle(kind, content, client, seq)\n"
        "w._handle = _logged\n"
    )
    n = 300
    for i in range(n):
        if i and i % 100 == 0:
            view.press("Escape")  # a prompt holds at most 256 points: clear now and then
        else:
            click(nb, view, 0.05 + 0.9 * ((i * 37) % 100) / 100, 0.1 + 0.8 * (i % 7) / 7,
                  320, 240)
    sent = nb.page.evaluate(
        """() => performance.getEntriesByName('sam:prompt')
                 .map(e => [e.detail.seq, (performance.timeOrigin + e.startTime) / 1000])"""
    )
    expected = len(sent) + 2  # and the two clears
    arrived = nb.wait_until(f"len(arrived) >= {expected} and arrived")
    seqs = [a[0] for a in arrived]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # in order, none twice
    when = {seq: t for seq, t, _ in arrived}
    lags = [when[seq] - t for seq, t in sent if seq in when]
    assert len(lags) == len(sent) == n - 2
    first, last = lags[:50], lags[-50:]
    print(f"kernel lag behind {n} rapid clicks: first 50 p50 {statistics.median(first) * 1e3:.0f}"
          f" ms, last 50 p50 {statistics.median(last) * 1e3:.0f} ms, worst "
          f"{max(lags) * 1e3:.0f} ms")
    state = nb.value("dict(stale=w.stats['stale'], n=len(w.points), rev=w.prompt_rev)")
    assert state["stale"] == 0 and state["n"] == 99  # every click of the last run was kept


def test_the_view_says_queued_while_the_kernel_is_busy_and_disconnected_after_a_restart(lab):
    nb = lab.new_notebook()
    view = show_folder(nb)
    status = view.locator(".sam-status")
    nb.page.evaluate(
        """(path) => { const panel = [...window.jupyterapp.shell.widgets('main')]
             .find(w => w.context && w.context.path === path);
           panel.sessionContext.session.kernel.requestExecute({code: 'import time; time.sleep(6)'});
        }""",
        nb.path,
    )
    time.sleep(0.5)
    click(nb, view, 0.3, 0.5, 320, 240)
    status.filter(has_text="queued").wait_for()
    nb.wait_until("len(w.points) == 1")  # answered once the kernel is free
    wait_for(lambda: view.get_attribute("data-link") == "ok", "the queued note to go")

    nb.page.evaluate(
        """async (path) => { const panel = [...window.jupyterapp.shell.widgets('main')]
             .find(w => w.context && w.context.path === path);
           await panel.sessionContext.session.kernel.restart(); }""",
        nb.path,
    )
    status.filter(has_text="disconnected").wait_for()
    assert "re-run the cell" in status.inner_text()
    click(nb, view, 0.5, 0.5, 320, 240)  # clicks on a dead widget throw nothing
    view.press("n")
    time.sleep(0.5)
    assert not [line for line in lab.console if line.startswith("pageerror")]
    assert view.get_attribute("data-link") == "disconnected"
