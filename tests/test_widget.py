"""SamWidget without a browser: traits, methods, masks, status, and every bad frontend message.

The widget runs on a random-weight SAM vit_b (the real model code; one encode per image, cached
by the predictor), so these tests show the widget wiring, not segmentation quality.
"""

from __future__ import annotations

import gc
import logging
import math
import re
import threading
import warnings
import weakref

import numpy as np
import pytest
import traitlets as t
from PIL import Image

import sam_widget as sw
from sam_widget.codec import decode_masks
from sam_widget.session import PromptError
from sam_widget.widget import MAX_POINTS, ClosedError, SamWidget


def scene(h: int = 240, w: int = 320) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 40 + xx * 60 // w
    img[..., 2] = 90 + yy * 60 // h
    img[(xx - w * 0.35) ** 2 + (yy - h * 0.45) ** 2 < (min(h, w) * 0.2) ** 2] = (220, 200, 40)
    return img


@pytest.fixture(scope="module")
def predictor():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return sw.Predictor(sw.build_sam("vit_b"))


@pytest.fixture
def widget(predictor):
    w = SamWidget(scene(), model=predictor)
    yield w
    with warnings.catch_warnings():  # "never saved": most tests make objects to look at
        warnings.simplefilter("ignore")
        w.close()


def frontend(w: SamWidget, **content) -> None:
    """Deliver a custom message as the view would (through ipywidgets' dispatcher)."""
    content.setdefault("client", "test")
    content.setdefault("seq", w._last_seq.get(content["client"], 0) + 1)
    content.setdefault("rev", w.prompt_rev)
    w._msg_callbacks(w, content, [])
    w._wait(check=False)


# ------------------------------------------------------------------------------ construction
def test_unknown_keyword_arguments_are_named(predictor):
    with pytest.raises(TypeError, match="colour, zoom"):
        SamWidget(scene(), model=predictor, zoom=2, colour="red")


def test_encodes_in_the_background_and_reports_model_and_device(predictor):
    w = SamWidget(scene(200, 300), model=predictor)
    seen = []
    w.observe(lambda c: seen.append(c["new"]), "message")
    w._wait()
    assert w.status == "ready"
    assert w.engine == "vit_b" and w.device
    assert "vit_b on" in w.message and "encoded in" in w.message
    assert [w.image_width, w.image_height] == [300, 200]
    assert len(w._image) > 0
    w.close()


def test_status_line_says_when_the_weights_free_engine_answers():
    w = SamWidget(scene(), model="classic")
    w._wait()
    assert w.status == "ready" and w.engine == "classic"
    assert "weights-free, not SAM" in w.message
    w.add_point(112, 108)  # inside the disk
    assert w.mask.shape == (240, 320) and w.mask[108, 112]
    w.close()


def test_clicks_during_encoding_are_kept_and_answered(predictor):
    img = scene(260, 340)  # a new image: the predictor must encode it
    w = SamWidget(img, model=predictor)
    frontend(w, type="prompt", points=[[100, 110, 1]], box=None)
    assert w.points == [[100, 110, 1]]
    assert len(w.scores) == 3 and w.mask.shape == (260, 340)
    w.close()


def test_large_images_are_downscaled_for_display_only(predictor):
    w = SamWidget(np.zeros((1500, 2000, 3), np.uint8), model=predictor, max_display_size=512)
    assert (w.display_width, w.display_height) == (512, 384)
    w.add_point(1900, 1400)
    assert w.points == [[1900, 1400, 1]]
    assert w.masks.shape == (3, 1500, 2000)  # full size when Python asks
    assert decode_masks(w._masks).shape == (3, 384, 512)  # display size on the wire
    w.close()


# ------------------------------------------------------------------------------ prompts
def test_add_point_returns_with_masks_that_reflect_it(widget, predictor):
    widget.add_point(110, 100)
    expected = predictor.predict(image=predictor.encode(widget.image),
                                 points=np.array([[110, 100]], np.float32),
                                 labels=np.array([1]), multimask=True)
    assert widget.points == [[110, 100, 1]]
    np.testing.assert_allclose(widget.scores, expected.scores, rtol=1e-4, atol=1e-5)
    assert widget.selected == int(np.argmax(expected.scores))
    np.testing.assert_array_equal(widget.masks, expected.masks)
    np.testing.assert_array_equal(widget.mask, expected.masks[widget.selected])
    assert widget.mask_rev == widget.prompt_rev
    # the wire carries the same masks at display resolution
    np.testing.assert_array_equal(decode_masks(widget._masks), widget.display_masks)


def test_refinement_feeds_the_selected_logits_back(widget, predictor):
    widget.add_point(110, 100)
    first = widget.prediction
    k = widget.selected
    widget.add_point(200, 60, label=0)
    pts = np.array([[110, 100], [200, 60]], np.float32)
    refined = predictor.predict(image=predictor.encode(widget.image),
                                points=pts, labels=np.array([1, 0]),
                                mask_input=first.logits[k][None], multimask=True)
    np.testing.assert_allclose(widget.scores, refined.scores, rtol=1e-4, atol=1e-5)
    widget.undo()
    widget.refine = False
    widget.add_point(200, 60, label=0)
    plain = predictor.predict(image=predictor.encode(widget.image),
                              points=pts, labels=np.array([1, 0]), multimask=True)
    np.testing.assert_allclose(widget.scores, plain.scores, rtol=1e-4, atol=1e-5)


def test_box_and_points_combine(widget):
    widget.set_box(40, 30, 200, 180)
    widget.add_point(100, 100)
    assert widget.box == [40, 30, 200, 180]
    assert widget.points == [[100, 100, 1]]
    assert len(widget.scores) == 3


def test_setting_traits_from_python_is_a_prompt(widget):
    widget.points = [[50, 60, 1]]
    assert widget.mask.shape == (240, 320)  # properties wait for the answer
    assert widget.mask_rev == widget.prompt_rev and len(widget.scores) == 3
    with pytest.raises(Exception, match="outside"):
        widget.points = [[5000, 60, 1]]
    assert widget.points == [[50, 60, 1]]


def test_selected_syncs_and_is_checked(widget):
    widget.add_point(110, 100)
    widget.selected = 0
    np.testing.assert_array_equal(widget.mask, widget.masks[0])
    widget.selected = 7
    assert widget.selected == 0
    assert widget.status.startswith("error") and "0..2" in widget.status


def test_undo_redo_clear_and_history(widget):
    assert not widget.can_undo
    widget.add_point(110, 100)
    widget.add_point(200, 60, 0)
    widget.undo()
    assert widget.points == [[110, 100, 1]] and widget.can_redo
    widget.redo()
    assert widget.points == [[110, 100, 1], [200, 60, 0]]
    widget.clear()
    assert widget.points == [] and widget.scores == [] and not widget.mask.any()
    assert widget._masks == b""  # nothing drawn
    widget.undo()  # clear is undoable
    assert len(widget.points) == 2
    assert widget.history[widget.history_index]["points"] == widget.points
    # a new prompt after undo drops the redo tail
    widget.undo()
    widget.add_point(10, 10)
    assert not widget.can_redo


def test_commit_keeps_objects_and_starts_afresh(widget):
    assert widget.commit() is None  # nothing to keep yet
    widget.add_point(110, 100)
    mask = widget.mask.copy()
    obj = widget.commit()
    assert obj["id"] == 1 and obj["mask"].shape == (240, 320)
    np.testing.assert_array_equal(obj["mask"], mask)
    assert obj["points"] == [[110, 100, 1]] and obj["visible"]
    assert widget.points == [] and widget.can_undo  # undo gives the prompts back
    widget.undo()
    assert widget.points == [[110, 100, 1]] and widget.objects == []
    widget.redo()
    assert widget.points == [] and len(widget.objects) == 1
    widget.add_point(250, 200)
    widget.commit(name="second")
    assert [o["name"] for o in widget.objects] == ["object 1", "second"]
    assert widget.objects[0]["color"] != widget.objects[1]["color"]
    # on the wire: no full-size masks, display bytes instead
    state = widget.get_state("objects")["objects"]
    assert decode_masks(state[0]["mask"]).shape == (1, 240, 320)
    frontend(widget, type="object", id=1, visible=False)
    assert widget.objects[0]["visible"] is False
    frontend(widget, type="object", id=1, delete=True)
    assert [o["id"] for o in widget.objects] == [2]
    coco = widget.to_coco()
    assert len(coco["annotations"]) == 1


def test_frontend_commit_waits_for_the_pending_answer(widget):
    frontend(widget, type="prompt", points=[[110, 100, 1]], box=None, seq=1)
    frontend(widget, type="commit", seq=2)
    widget._wait()
    assert len(widget.objects) == 1 and widget.points == []


def test_bursts_are_coalesced_and_sequence_numbers_acknowledged(widget):
    widget._wait()
    gate = threading.Event()
    real = widget._engine.predict

    def slow_predict(**kw):
        gate.wait(5)
        return real(**kw)

    widget._engine.predict = slow_predict
    base = widget.prompt_rev  # the view has not heard back yet: every message has this base
    try:
        for seq in range(1, 21):
            widget._msg_callbacks(widget, {"type": "prompt", "client": "c", "seq": seq,
                                           "rev": base, "points": [[10 + seq, 20, 1]],
                                           "box": None}, [])
        gate.set()
        widget._wait()
    finally:
        widget._engine.predict = real
    assert widget.prompt_seq == "c:20"
    assert widget.points == [[30, 20, 1]]
    assert widget.stats["decodes"] <= 3  # the first, maybe one in between, and the latest
    assert widget.mask_rev == widget.prompt_rev


def test_hover_answers_one_request_with_the_next_clicks_mask(widget, predictor):
    sent = []
    widget.send = lambda msg, buffers=None: sent.append((msg, buffers))
    widget._msg_callbacks(widget, {"type": "hover", "client": "c", "seq": 1, "x": 110, "y": 100},
                          [])
    widget._wait()
    for _ in range(200):
        if sent:
            break
        threading.Event().wait(0.05)
    msg, buffers = sent[0]
    assert msg["type"] == "hover" and msg["seq"] == 1 and not msg["empty"]
    expected = predictor.predict(image=predictor.encode(widget.image),
                                 points=np.array([[110, 100]], np.float32),
                                 labels=np.array([1]), multimask=True)
    shown = decode_masks(buffers[0])[0]
    np.testing.assert_array_equal(shown, expected.masks_at(240, 320)[expected.best])
    assert widget.points == []  # hovering never changes the prompts
    assert widget.stats["hover_in_flight_max"] == 1


def hover_and_wait(w: SamWidget, x: float, y: float, seq: int) -> None:
    """A hover request as the view sends it; returns once the kernel has answered it."""
    answered = threading.Event()
    w.send = lambda msg, buffers=None: answered.set() if msg.get("type") == "hover" else None
    w._msg_callbacks(w, {"type": "hover", "client": "c", "seq": seq, "x": x, "y": y}, [])
    assert answered.wait(60)


def test_a_click_where_the_pointer_rested_reuses_the_hover_decode(widget, predictor):
    widget.add_point(110, 100)
    first = widget.prediction
    k = widget.selected
    decodes = widget.stats["decodes"]
    hover_and_wait(widget, 200, 60, seq=1)
    frontend(widget, type="prompt", seq=2, points=[[110, 100, 1], [200, 60, 1]], box=None)
    assert widget.stats["hover_reused"] == 1
    assert widget.stats["decodes"] == decodes  # the click needed no decode of its own
    # exactly what a decode of the click gives (the refinement's mask_input included)
    expected = predictor.predict(image=predictor.encode(widget.image),
                                 points=np.array([[110, 100], [200, 60]], np.float32),
                                 labels=np.array([1, 1]), mask_input=first.logits[k][None],
                                 multimask=True)
    np.testing.assert_array_equal(widget.scores, [float(s) for s in expected.scores])
    np.testing.assert_array_equal(widget.masks, expected.masks)
    np.testing.assert_array_equal(decode_masks(widget._masks), widget.display_masks)


@pytest.mark.parametrize("change", ["label", "moved", "selected", "multimask", "image"])
def test_a_click_unlike_the_hover_is_decoded_afresh(widget, predictor, change):
    widget.add_point(110, 100)
    hover_and_wait(widget, 200, 60, seq=1)
    point = [200, 60, 1]
    if change == "label":
        point = [200, 60, 0]  # a right click at the same place
    elif change == "moved":
        point = [201, 60, 1]
    elif change == "selected":  # another candidate fed back as mask_input
        widget.selected = (widget.selected + 1) % 3
    elif change == "multimask":
        widget.multimask = False
    elif change == "image":
        widget.set_image(scene()[::-1].copy())
        widget.wait()
        widget.add_point(110, 100)
    decodes = widget.stats["decodes"]
    frontend(widget, type="prompt", seq=2, points=[[110, 100, 1], point], box=None)
    assert widget.stats["hover_reused"] == 0
    assert widget.stats["decodes"] == decodes + 1
    img = widget.session.current
    first = img.history[img.pos - 1].prediction
    expected = predictor.predict(image=predictor.encode(widget.image),

        points=np.array([[110, 100], point[:2]], np.float32), labels=np.array([1, point[2]]),
        mask_input=first.logits[min(img.history[img.pos - 1].selected, 2)][None],
        multimask=widget.multimask)
    np.testing.assert_array_equal(widget.masks, expected.masks)


def test_everything_adds_the_automatic_masks_as_objects(widget):
    widget.add_point(110, 100)
    widget.commit()
    calls = []
    added = widget.segment_everything(points_per_side=2, pred_iou_thresh=0.0,
                                      stability_score_thresh=0.0, box_nms_thresh=1.0,
                                      points_per_batch=2,
                                      progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]  # 4 grid points in batches of 2
    assert added and [o["id"] for o in widget.objects] == [1] + [o["id"] for o in added]
    assert all(o["mask"].shape == (240, 320) and o["visible"] for o in added)
    assert len(widget.get_state("objects")["objects"]) == len(widget.objects)


def test_everything_button_shows_progress_in_the_status_line(widget):
    messages = []
    widget.everything_settings = dict(points_per_side=4, pred_iou_thresh=0.0,
                                      stability_score_thresh=0.0, box_nms_thresh=1.0)
    widget.observe(lambda c: messages.append(c["new"]), "message")
    frontend(widget, type="everything")
    widget._wait()
    assert any(re.search(r"segmenting everything… \d+/\d+ batches", m) for m in messages)
    assert any(re.search(r"\d+ masks found so far", m) for m in messages)
    assert widget.status == "ready" and re.match(r"everything: \d+ masks added", widget.message)
    assert len(widget.objects) > 0 and widget.everything_state == "ready"


def test_set_image_resets_prompts_and_objects(widget):
    widget.add_point(110, 100)
    widget.commit()
    with pytest.warns(UserWarning, match="1 object.*never saved"):
        widget.set_image(scene(100, 150))
    widget.add_point(10, 10)
    assert (widget.image_width, widget.image_height) == (150, 100)
    assert widget.objects == [] and widget.mask.shape == (100, 150)


def test_mimebundle_has_a_png_and_the_widget_view(widget):
    widget.add_point(110, 100)
    data, _ = widget._repr_mimebundle_()
    assert data["image/png"].startswith(b"\x89PNG")
    assert "application/vnd.jupyter.widget-view+json" in data


def test_save(widget, tmp_path):
    widget.add_point(110, 100)
    assert np.load(widget.save(tmp_path / "m.npy")).shape == (1, 240, 320)
    assert widget.save(tmp_path / "m.png").read_bytes().startswith(b"\x89PNG")
    assert "annotations" in widget.save(tmp_path / "m.json").read_text()
    with pytest.raises(ValueError, match=".json, .png"):
        widget.save(tmp_path / "m.txt")



def test_save_folder_writes_every_format_and_replays_to_the_same_objects(widget, tmp_path):
    from sam_widget.export import replay

    widget.add_point(110, 100)
    widget.add_point(250, 60, label=0)  # refined: decoded with the first click's logits
    widget.selected = 2
    widget.commit()
    widget.set_box(200, 120, 300, 220)
    widget.commit()
    folder = widget.save(tmp_path / "out")
    names = {p.name for p in folder.iterdir()}
    assert {"image.png", "annotations.json", "labels.png", "polygons.json", "prompts.json",
            "cutouts"} <= names
    assert [len(o["steps"]) for o in widget.objects] == [2, 1]
    masks = replay(folder, widget._engine)
    assert len(masks) == 2
    for obj, mask in zip(widget.objects, masks, strict=True):
        assert (mask == obj["mask"]).mean() > 0.999


# ------------------------------------------------------------------------------ bad input
BAD_MESSAGES = [
    ({"type": "prompt", "points": [[math.nan, 5, 1]], "box": None}, "finite"),
    ({"type": "prompt", "points": [[5, math.inf, 1]], "box": None}, "finite"),
    ({"type": "prompt", "points": [[-3, 5, 1]], "box": None}, "outside"),
    ({"type": "prompt", "points": [[5, 9999, 1]], "box": None}, "outside"),
    ({"type": "prompt", "points": [["5", 5, 1]], "box": None}, "must be a number"),
    ({"type": "prompt", "points": [[5, 5, 7]], "box": None}, "label"),
    ({"type": "prompt", "points": [[5, 5, True]], "box": None}, "must be a number"),
    ({"type": "prompt", "points": "5,5", "box": None}, "list"),
    ({"type": "prompt", "points": [[5]], "box": None}, r"\[x, y, label\]"),
    ({"type": "prompt", "points": [[1, 1, 1]] * 10_000, "box": None}, "too many points"),
    ({"type": "prompt", "points": [], "box": [50, 50, 10, 10]}, "inverted"),
    ({"type": "prompt", "points": [], "box": [10, 10, 10, 20]}, "inverted or empty"),
    ({"type": "prompt", "points": [], "box": [0, 0, 5000, 10]}, "outside"),
    ({"type": "prompt", "points": [], "box": [0, 0, 5]}, r"\[x0, y0, x1, y1\]"),
    ({"type": "prompt", "points": [], "box": {"x0": 1}}, "box must be"),
    ({"type": "hover", "x": math.nan, "y": 3}, "finite"),
    ({"type": "object", "id": 99}, "no object"),
    ({"type": "launch_missiles"}, "unknown message type"),
]


@pytest.mark.parametrize(("content", "message"), BAD_MESSAGES,
                         ids=[f"{c['type']}-{i}" for i, (c, _) in enumerate(BAD_MESSAGES)])
def test_bad_frontend_messages_give_a_clear_status_and_lose_nothing(widget, content, message):
    widget.add_point(110, 100)
    widget.add_point(20, 20)
    widget.commit()
    widget.add_point(110, 100)
    before = (widget.points, widget.box, widget.scores, [o["id"] for o in widget.objects])
    frontend(widget, **content)
    assert widget.status.startswith("error: bad message from the view")
    assert re.search(message, widget.status), widget.status
    assert (widget.points, widget.box, widget.scores,
            [o["id"] for o in widget.objects]) == before
    # the widget still works, and the next good prompt clears the error
    frontend(widget, type="prompt", points=[[60, 60, 1]], box=None, seq=99)
    assert widget.status == "ready" and widget.points == [[60, 60, 1]]


def test_non_dict_message(widget):
    widget._msg_callbacks(widget, ["not", "a", "dict"], [])
    assert "must be an object" in widget.status


@pytest.mark.parametrize("call", [
    lambda w: w.add_point(math.nan, 1),
    lambda w: w.add_point(1, 1, label=3),
    lambda w: w.set_box(10, 10, 5, 5),
    lambda w: w.set_prompts(points=[[1, 1, 1]] * (MAX_POINTS + 1)),
])
def test_bad_python_prompts_raise_and_keep_state(widget, call):
    widget.add_point(110, 100)
    with pytest.raises(ValueError):
        call(widget)
    assert widget.points == [[110, 100, 1]]


def test_engine_errors_land_in_status_without_losing_prompts(widget):
    widget.add_point(110, 100)
    real = widget._engine.predict

    def broken(**kw):
        raise RuntimeError("out of memory")

    widget._engine.predict = broken
    try:
        frontend(widget, type="prompt", points=[[110, 100, 1], [30, 30, 1]], box=None)
    finally:
        widget._engine.predict = real
    assert widget.status == "error: predict: RuntimeError: out of memory"
    assert widget.points == [[110, 100, 1], [30, 30, 1]]
    widget.add_point(60, 60)
    assert widget.status == "ready"


# --------------------------------------------------------------- one Predictor, many widgets
def test_two_widgets_sharing_a_predictor_answer_from_their_own_images(predictor):
    """Alternate clicks on two widgets over one Predictor, and a cell that calls
    ``predictor.set_image`` meanwhile: each widget's masks are those of its own image."""
    first, second = scene(), np.ascontiguousarray(scene()[::-1, ::-1])
    a = SamWidget(first, model=predictor)
    b = SamWidget(second, model=predictor)
    try:
        expected = {}
        for name, img in (("a", first), ("b", second)):
            handle = predictor.encode(img)
            expected[name] = predictor.predict(points=[(100, 90)], labels=[1],
                                               image=handle).masks
        assert not np.array_equal(expected["a"], expected["b"])
        for _ in range(2):
            a.add_point(100, 90)
            predictor.set_image(second)  # another cell changes the predictor's current image
            b.add_point(100, 90)
            predictor.set_image(first)
            np.testing.assert_array_equal(b.masks, expected["b"])
            np.testing.assert_array_equal(a.masks, expected["a"])
            a.undo()
            b.undo()
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------- lifetime: threads and memory
def test_close_ends_the_threads_and_the_widget_is_freed(predictor):
    w = SamWidget(scene(), model=predictor)
    w.add_point(110, 100)
    threads = [w._worker, w._prefetcher]
    ref = weakref.ref(w)
    w.close()
    assert not any(th.is_alive() for th in threads)
    del w
    gc.collect()
    assert ref() is None  # nothing (anywidget's file watcher included) holds it


def test_a_closed_widget_refuses_work_but_still_saves(predictor, tmp_path):
    w = SamWidget(scene(), model=predictor)
    w.add_point(110, 100)
    w.commit()
    with pytest.warns(UserWarning, match="1 object.*never saved"):
        w.close()
    for call in (lambda: w.add_point(1, 1), w.undo, w.wait, lambda: w.goto(0)):
        with pytest.raises(ClosedError, match="closed: create a new one"):
            call()
    assert len(w.annotations[0]) == 1
    assert (w.save(tmp_path / "after-close.npy")).exists()


def test_widgets_of_a_cell_run_again_share_the_model_and_idle_threads_end(monkeypatch):
    from sam_widget import background

    monkeypatch.setattr(background, "IDLE_EXIT_S", 0.2)
    baseline = threading.active_count()
    widgets = [SamWidget(scene(60, 80), model="classic") for _ in range(20)]  # never closed
    assert all(w.predictor is widgets[0].predictor for w in widgets)  # one model, not 20
    for w in widgets:
        w.wait()
    for _ in range(100):
        if threading.active_count() <= baseline:
            break
        threading.Event().wait(0.1)
    assert threading.active_count() <= baseline
    widgets[5].add_point(10, 10)  # an idle widget starts its thread again when used
    assert len(widgets[5].scores) == 3
    refs = [weakref.ref(w) for w in widgets]
    for w in widgets:
        w.close()
    del widgets, w
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_constructor_that_raises_leaves_no_thread(tmp_path):
    baseline = threading.active_count()
    with pytest.raises(ValueError, match="unknown model"):
        SamWidget(scene(), model="no_such_model")
    with pytest.raises((FileNotFoundError, ValueError)):
        SamWidget(scene(), model="classic", annotations=tmp_path / "missing.json")
    gc.collect()
    assert threading.active_count() == baseline


def test_undo_history_is_bounded_in_bytes():
    w = SamWidget(scene(), model="classic")
    for i in range(150):
        w.add_point(5 + i * 2, 5 + i, label=i % 2)
        _ = w.mask  # Python asks for the full-size masks too
    img = w.session.current
    # unbounded, each state would hold its logits, mask_input and masks: over 150 MB here
    assert img.nbytes <= img.history_bytes + 3 * 2**20
    w.undo()
    assert w.points == [[5 + i * 2, 5 + i, i % 2] for i in range(149)]
    w.close()


# ------------------------------------------------------------- the kernel owns its state
def test_the_view_may_not_change_kernel_owned_traits(widget):
    widget.add_point(110, 100)
    before = {k: widget.get_state(k)[k] for k in
              ("status", "engine", "device", "image_width", "count", "prompt_rev", "history",
               "can_undo", "scores", "mask_rev")}
    widget.set_state({"status": "ready", "engine": "x", "device": "tpu", "image_width": 5,
                      "count": 99, "prompt_rev": 0, "history": [], "can_undo": False,
                      "scores": [1.0], "mask_rev": 77})
    after = {k: widget.get_state(k)[k] for k in before}
    assert {k: v for k, v in after.items() if k != "status"} == {
        k: v for k, v in before.items() if k != "status"}
    assert "may not change" in widget.status and widget.stats["refused"] == 1


@pytest.mark.parametrize("change, error", [
    ({"opacity": math.nan}, "opacity must be a number in"),
    ({"opacity": 3}, "opacity must be a number in"),
    ({"index": 4}, "out of range"),
    ({"label": "tree"}, "unknown label"),
    ({"hover": "yes"}, "hover must be true or false"),
    ({"selected": "0"}, "selected must be an int"),
    ({"points": [[1e9, 1, 1]]}, "outside"),
])
def test_the_views_values_are_range_checked(widget, change, error):
    widget.wait()
    before = {k: getattr(widget, k) for k in change}
    widget.set_state(change)
    assert {k: getattr(widget, k) for k in change} == before
    assert error in widget.status


def test_python_values_are_range_checked_too(widget):
    with pytest.raises(t.TraitError, match=r"opacity must be a number in \[0, 1\]"):
        widget.opacity = math.nan
    widget.set_state({"opacity": 0.25})  # a good value from the view is taken
    assert widget.opacity == 0.25


def test_error_messages_quote_little_of_a_bad_value(widget):
    widget.wait()
    frontend(widget, type="prompt", points=[], box="y" * 100_000)
    assert "box must be" in widget.status and len(widget.status) < 320


def test_a_prompt_message_missing_a_field_is_an_error_naming_it(widget):
    widget.add_point(110, 100)
    frontend(widget, type="prompt", points=[[5, 5, 1]])
    assert "missing the field 'box'" in widget.status
    assert widget.points == [[110, 100, 1]]
    frontend(widget, type="hover", x=3)
    assert "missing the field 'y'" in widget.status


# ------------------------------------------------------------- stale and out-of-order messages
def test_a_message_based_on_an_older_state_never_undoes_newer_state(widget):
    base = widget.prompt_rev
    widget.add_point(110, 100)  # Python changed the state after the view last heard
    frontend(widget, type="clear", rev=base, seq=1)
    frontend(widget, type="prompt", points=[[5, 5, 1]], box=None, rev=base, seq=2)
    assert widget.points == [[110, 100, 1]] and widget.stats["stale"] == 2
    assert widget.prompt_seq == "test:2"  # acknowledged, so the view drops its local state
    # out of order: an older sequence number after a newer one is dropped
    frontend(widget, type="prompt", points=[[7, 7, 1]], box=None, seq=5)
    frontend(widget, type="prompt", points=[[9, 9, 1]], box=None, seq=4)
    assert widget.points == [[7, 7, 1]]


def test_a_views_own_burst_is_not_stale_but_another_views_is(widget):
    base = widget.prompt_rev
    for seq in (1, 2, 3):
        frontend(widget, client="a", seq=seq, rev=base, type="prompt",
                 points=[[10 * seq, 10, 1]], box=None)
    assert widget.points == [[30, 10, 1]]
    frontend(widget, client="b", seq=1, rev=base, type="undo")
    assert widget.points == [[30, 10, 1]]


# ------------------------------------------------------------- errors are visible and recoverable
def test_engine_errors_are_logged_raised_shown_and_the_next_prompt_works(widget, caplog):
    real = widget._engine.predict

    def broken(**kw):
        raise RuntimeError("the decoder broke")

    widget._engine.predict = broken
    try:
        with caplog.at_level(logging.ERROR, logger="sam_widget"):
            with pytest.raises(RuntimeError, match="predict failed: RuntimeError: the decoder"):
                widget.add_point(110, 100)
    finally:
        widget._engine.predict = real
    record = next(r for r in caplog.records if r.name == "sam_widget")
    assert record.exc_info and "the decoder broke" in str(record.exc_info[1])
    assert widget.status == "error: predict: RuntimeError: the decoder broke"
    widget.add_point(60, 60)
    assert widget.status == "ready" and len(widget.scores) == 3


def test_a_base_exception_in_the_engine_does_not_kill_the_worker(widget):
    real = widget._engine.predict

    def interrupted(**kw):
        raise KeyboardInterrupt

    widget._engine.predict = interrupted
    try:
        frontend(widget, type="prompt", points=[[110, 100, 1]], box=None)
    finally:
        widget._engine.predict = real
    assert widget.status.startswith("error: predict: KeyboardInterrupt")
    assert widget._worker.is_alive()
    widget.add_point(60, 60)
    assert widget.status == "ready"


def test_a_failed_encode_is_retryable_empties_the_cuda_cache_and_says_what_to_try(monkeypatch):
    torch = pytest.importorskip("torch")
    from sam_widget.classic import ClassicPredictor

    engine = ClassicPredictor()
    real, calls, emptied = engine.encode, [], []

    def oom_once(image):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(image)

    engine.encode = oom_once
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    w = SamWidget(scene(), model=engine)
    with pytest.raises(RuntimeError, match=r"smaller model .*device='cpu'.*smaller image.*retry"):
        w.wait()
    assert w.status.startswith("error: encoding 'image' failed: OutOfMemoryError")
    assert emptied
    w.retry()
    w.add_point(110, 100)
    assert w.status == "ready" and len(w.scores) == 3
    w.close()


# ------------------------------------------------------------- a folder of images (issue 12)
@pytest.fixture
def folder(tmp_path):
    for i, (h, w) in enumerate([(60, 80), (70, 90), (50, 60)]):
        Image.fromarray(scene(h, w)[::1 if i % 2 == 0 else -1]).save(tmp_path / f"img{i}.png")
    return tmp_path


def test_a_folder_is_annotated_image_by_image_with_labels(folder, tmp_path):
    w = SamWidget(folder, model="classic", labels=["cell", "debris"])
    assert (w.index, w.count, w.image_name, w.label) == (0, 3, "img0.png", "cell")
    assert w.labels == ["cell", "debris"] and len(set(w.label_colors)) == 2
    w.add_point(20, 20)
    first = w.commit(label="debris")
    assert first["label"] == "debris" and first["color"] == w.label_colors[1]
    w.next()
    assert (w.index, w.image_name, w.image_width, w.objects) == (1, "img1.png", 90, [])
    w.add_point(30, 30)  # an uncommitted prompt stays with its image
    w.index = 2  # from Python, like the view's position box
    w.label = "cell"
    w.add_point(10, 10)
    w.commit()
    w.set_state({"index": 0})  # the view's "Previous" twice
    assert w.index == 0 and [o["label"] for o in w.objects] == ["debris"]
    w.goto(1)
    assert w.points == [[30, 30, 1]]
    assert {i: [o["label"] for o in objs] for i, objs in w.annotations.items()} == {
        0: ["debris"], 2: ["cell"]}
    w.goto(0)
    w.set_object_label(first["id"], "cell")
    assert w.objects[0]["label"] == "cell" and w.objects[0]["color"] == w.label_colors[0]
    w.undo()  # relabelling is undoable
    assert w.objects[0]["label"] == "debris"
    with pytest.raises(PromptError, match="unknown label 'tree'"):
        w.commit(label="tree")
    with pytest.raises(PromptError, match="out of range"):
        w.goto(3)
    coco = w.to_coco()
    assert [im["file_name"] for im in coco["images"]] == ["img0.png", "img1.png", "img2.png"]
    assert [(im["height"], im["width"]) for im in coco["images"]] == [(60, 80), (70, 90),
                                                                     (50, 60)]
    assert sorted(a["image_id"] for a in coco["annotations"]) == [1, 3]
    out = w.save(tmp_path / "out")
    saved = {i: [o["mask"].copy() for o in objs] for i, objs in w.annotations.items()}
    w.close()  # saved: no warning
    again = SamWidget(folder, model="classic", annotations=out)
    assert again.labels == ["cell", "debris"] and not again.session.changed
    assert {i: [o["label"] for o in objs] for i, objs in again.annotations.items()} == {
        0: ["debris"], 2: ["cell"]}
    for i, masks in saved.items():
        for obj, mask in zip(again.annotations[i], masks, strict=True):
            np.testing.assert_array_equal(obj["mask"], mask)
    out2 = again.save(tmp_path / "out2")
    assert (out2 / "annotations.json").read_text() == (out / "annotations.json").read_text()
    coco_resumed = SamWidget(folder, model="classic", annotations=out / "annotations.json")
    assert len(coco_resumed.annotations[2]) == 1
    again.labels = ["cell", "debris", "tree"]  # a new class from Python
    assert len(again.label_colors) == 3 and again.session.labels[-1] == "tree"
    again.close()
    coco_resumed.close()


def test_the_next_image_is_prefetched_with_its_own_handle(folder):
    w = SamWidget(folder, model="classic")
    w.wait()
    for _ in range(200):
        if w.session.image(1).handle is not None:
            break
        threading.Event().wait(0.05)
    assert w.session.image(1).handle is not None and w.stats["prefetched"] >= 1
    assert "next image ready" in w.message
    w.predictor.set_image(np.zeros((20, 20, 3), np.uint8))  # another cell: no cross-talk
    w.next()
    encodes = w.predictor.encode
    w.predictor.encode = lambda *a, **k: pytest.fail("the prefetched image was encoded again")
    try:
        w.add_point(30, 30)
    finally:
        w.predictor.encode = encodes
    assert w.mask.shape == (70, 90) and len(w.scores) == 3
    w.close()


def test_moving_to_an_image_not_encoded_yet_cancels_the_prefetch_of_another(folder):
    """The user jumps from image 1 to image 3 while the prefetch encodes image 2: the shown
    image's encode does not wait for image 2's, which stops within one encoder block, leaves
    image 2 without an error, and is encoded when the user gets there."""
    pytest.importorskip("torch")
    from tests.test_predictor_support import small_sam

    model = small_sam()
    inside, gate = threading.Event(), threading.Event()

    def hold_the_prefetch(module, args):  # the prefetch stays inside the encoder until told
        if threading.current_thread().name == "sam-widget-prefetch":
            inside.set()
            gate.wait(60)

    hook = model.image_encoder.blocks[0].register_forward_pre_hook(hold_the_prefetch)
    w = SamWidget(folder, model=sw.Predictor(model, device="cpu"))
    try:
        w.wait()
        assert inside.wait(60), "the prefetch of image 2 never started"
        mover = threading.Thread(target=lambda: w.goto(2).wait())
        mover.start()
        for _ in range(1200):  # until the worker has asked the prefetch to stop
            busy = w._prefetching
            if busy is not None and busy[1].is_set():
                break
            threading.Event().wait(0.05)
        gate.set()
        mover.join(60)
        assert (w.index, w.status) == (2, "ready")
        assert w.stats["prefetch_cancelled"] == 1 and w.stats["prefetched"] == 0
        assert w.session.image(1).handle is None and w.session.image(1).error is None
        w.goto(1).wait()
        w.add_point(20, 20)
        assert w.status == "ready" and len(w.scores) == 3
    finally:
        gate.set()
        hook.remove()
        w.close()


def test_an_unreadable_image_is_shown_as_an_error_and_the_user_moves_on(folder):
    (folder / "img1.png").write_bytes(b"\x89PNG broken")
    w = SamWidget(folder, model="classic")
    w.goto(1)
    assert w.status.startswith("error: cannot read image 2 (img1.png)")
    assert w._image == b""
    with pytest.raises(RuntimeError, match="cannot read image 2"):
        w.add_point(1, 1)
    w.next()
    w.add_point(10, 10)
    assert w.status == "ready" and w.index == 2
    w.close()


def test_save_works_while_an_encode_runs(folder, tmp_path):
    from sam_widget.classic import ClassicPredictor

    engine, gate = ClassicPredictor(), threading.Event()
    real = engine.encode
    w = SamWidget(folder, model=engine)
    w.add_point(20, 20)
    w.commit()
    engine.encode = lambda image: gate.wait(30) and real(image)
    w.next()  # its encode now waits on the gate
    out = w.save(tmp_path / "during")
    gate.set()
    assert (out / "annotations.json").exists() and w.status in ("encoding", "ready")
    w.close()
