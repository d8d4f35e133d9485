"""Kernel side of issue 13: "Everything" per engine (disabled with a reason, progress, count,
Stop), the missing-weights notice, and the static picture kept up to date."""

from __future__ import annotations

import re

import numpy as np
import pytest

import sam_widget as sw
from sam_widget.widget import SamWidget


def scene(h: int = 240, w: int = 320) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 90
    img[60:180, 80:200] = (220, 200, 40)
    return img


_seq = iter(range(1, 10**9))


def send(w: SamWidget, **content) -> None:
    """Deliver a custom message as the view would: its own sequence number, based on the
    current revision."""
    content.setdefault("client", "test")
    content.setdefault("seq", next(_seq))
    content.setdefault("rev", w.prompt_rev)
    w._msg_callbacks(w, content, [])


@pytest.fixture(scope="module")
def predictor():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return sw.Predictor(sw.build_sam("vit_b"))


def test_everything_is_unavailable_on_the_weights_free_engine_and_says_why():
    w = SamWidget(scene(), model=sw.ClassicPredictor())
    try:
        assert w.everything_state.startswith("unavailable: ")
        assert "needs SAM" in w.everything_state and "model='vit_b'" in w.everything_state
        send(w, type="everything")  # a stale view: a clear error, not a raw one
        assert "needs SAM" in w.message and "Traceback" not in w.message
    finally:
        w.close()


def test_everything_can_be_stopped_and_adds_nothing_then(predictor):
    w = SamWidget(scene(), model=predictor)
    try:
        w.wait()
        assert w.everything_state == "ready"
        w.everything_settings = dict(points_per_side=4, points_per_batch=2, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0)
        states, messages = [], []
        w.observe(lambda c: states.append(c["new"]), "everything_state")

        def on_message(change):
            messages.append(change["new"])
            if re.search(r"1/8 batches", change["new"]):
                send(w, type="stop")  # the user presses Stop after the first batch

        w.observe(on_message, "message")
        send(w, type="everything")
        w.wait()
        assert states == ["running", "ready"]
        assert any("masks found so far" in m for m in messages)
        assert re.match(r"everything stopped after \d/8 batches; nothing added", w.message)
        assert w.objects == []
    finally:
        w.close()


def test_the_picture_follows_clicks_and_objects():
    w = SamWidget(scene(), model=sw.ClassicPredictor())
    try:
        w.wait()
        bare = w._picture_rgb()
        w.add_point(140, 120)
        with_mask = w._picture_rgb()
        assert max(bare.shape[:2]) <= 800
        assert np.abs(with_mask.astype(int) - bare).max() > 25  # the mask is drawn
        w.commit()
        kept = w._picture_rgb()  # the object stays in the picture after "Add object"
        assert np.abs(kept.astype(int) - bare)[100:140, 120:160].max() > 25
        assert "1 object(s)" in w._picture_text()
        bundle = w._picture.bundle()
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ""
        assert ("image/png" in bundle) or ("image/jpeg" in bundle)
    finally:
        w.close()


def test_brush_strokes_are_full_resolution_undoable_and_replayed(tmp_path):
    from sam_widget.export import replay

    w = SamWidget(scene(), model=sw.ClassicPredictor())
    try:
        w.add_point(140, 120)  # the yellow block
        before = w.mask.copy()
        assert not before[20:30, 20:30].any()
        send(w, type="stroke", mode="add", radius=6, points=[[20, 25], [40, 25]], target=None)
        w.wait()
        painted = w.mask
        assert painted[25, 20:40].all() and (painted | before).sum() == painted.sum()
        # the view draws exactly Python's edited mask (display size = image size here)
        assert (w.display_masks[w.selected] == painted).all()
        send(w, type="stroke", mode="erase", radius=4, points=[[140, 120]], target=None)
        w.wait()
        assert not w.mask[120, 140] and w.mask[25, 30]
        w.undo()  # the eraser stroke goes
        assert w.mask[120, 140] and w.mask[25, 30]
        w.undo()  # then the brush stroke
        assert (w.mask == before).all()
        w.redo()
        w.add_point(100, 100)  # a later prompt keeps the edit
        assert w.mask[25, 30]
        obj = w.commit()
        assert obj["strokes"] and obj["mask"][25, 30]
        # a kept object: brush it directly
        send(w, type="stroke", mode="add", radius=3, points=[[300, 220]], target=obj["id"])
        assert w.objects[0]["mask"][220, 300] and len(w.objects[0]["strokes"]) == 2
        # the prompt log replays to the same edited mask
        w.save(tmp_path / "out")
        [replayed] = replay(tmp_path / "out", sw.ClassicPredictor())
        assert (replayed == w.objects[0]["mask"]).all()
    finally:
        w.close()


def test_a_stroke_without_a_mask_or_with_bad_values_says_what_to_do():
    w = SamWidget(scene(), model=sw.ClassicPredictor())
    try:
        w.wait()
        send(w, type="stroke", mode="add", radius=5, points=[[10, 10]], target=None)
        assert "click the object first" in w.message
        w.add_point(140, 120)
        send(w, type="stroke", mode="smudge", radius=5, points=[[10, 10]], target=None)
        assert "mode must be 'add' or 'erase'" in w.message
    finally:
        w.close()
