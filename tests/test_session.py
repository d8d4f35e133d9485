"""The annotation state without a widget or a model: undo/redo per image, objects, labels,
the undo history's byte budget, the prompt log and resuming saved objects."""

from __future__ import annotations

import numpy as np
import pytest

from sam_widget.predictor import Prediction
from sam_widget.session import (
    HISTORY_BYTES,
    ImageSession,
    PromptError,
    Session,
    check_labels,
    quote,
)


def answer(h: int = 30, w: int = 40, seed: int = 0) -> Prediction:
    """A decoder's answer as the engines make it: 3 candidates' logits, masks on demand."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3, 256, 256)).astype(np.float32)

    def to_masks(shape):
        ys = np.linspace(0, 255, shape[0]).astype(int)
        xs = np.linspace(0, 255, shape[1]).astype(int)
        return logits[:, ys][:, :, xs] > 0

    return Prediction(scores=np.array([0.5, 0.9, 0.7], np.float32), logits=logits,
                      image_shape=(h, w), to_masks=to_masks)


def click(img: ImageSession, x: float, y: float, label: int = 1, seed: int = 0) -> None:
    cur = img.current
    assert img.push([*cur.points, [x, y, label]], cur.box)
    img.current.answer(answer(seed=seed), img.mask_input(), 1, True)
    img.trim()


def test_undo_redo_and_a_new_prompt_drops_the_redo_tail():
    img = ImageSession()
    assert not img.can_undo and not img.undo()
    click(img, 1, 2)
    click(img, 3, 4)
    assert img.undo() and img.current.points == [[1, 2, 1]] and img.can_redo
    assert img.redo() and len(img.current.points) == 2
    assert img.clear() and img.current.empty and not img.clear()
    assert img.undo() and len(img.current.points) == 2  # clear is undoable
    img.undo()
    click(img, 9, 9)
    assert not img.can_redo
    assert not img.push([[1, 2, 1], [9, 9, 1]], None)  # the same state is not recorded


def test_refine_takes_the_selected_logits_of_the_latest_answer():
    img = ImageSession()
    click(img, 1, 2, seed=1)
    first = img.current.prediction
    img.push([[1, 2, 1], [5, 5, 0]], None)
    np.testing.assert_array_equal(img.mask_input(), first.logits[1][None])
    img.clear()
    img.push([[7, 7, 1]], None)
    assert img.mask_input() is None  # nothing is refined across a clear


def test_each_image_keeps_its_own_prompts_and_objects():
    s = Session(["a.png", "b.png", "c.png"], labels=["cell", "debris"])
    click(s.current, 1, 1)
    s.current.commit(label="cell", color=s.color("cell", 1), refine=True)
    s.index = 2
    click(s.current, 5, 5)
    s.index = 0
    assert s.current.current.empty and len(s.current.objects) == 1
    s.index = 2
    assert s.current.current.points == [[5, 5, 1]] and s.current.objects == []
    assert list(s.annotations()) == [0]
    assert s.annotations()[0][0]["label"] == "cell"


def test_commit_delete_and_relabel_are_undoable():
    s = Session(["a"], labels=["cat", "dog"])
    img = s.current
    click(img, 1, 1)
    click(img, 2, 2)
    obj = img.commit(label="cat", color=s.color("cat", 1), refine=True)
    assert obj["label"] == "cat" and obj["name"] == "cat 1" and obj["mask"].shape == (30, 40)
    assert [len(st["points"]) for st in obj["steps"]] == [1, 2]  # the refine chain
    assert img.current.empty and img.can_undo and s.changed
    img.edit_object(1, label="dog", color=s.color("dog", 1))
    assert img.objects[0]["label"] == "dog" and img.objects[0]["color"] == s.color("dog", 0)
    img.remove_object(1)
    assert img.objects == []
    img.undo()
    assert img.objects[0]["label"] == "dog"
    img.undo()
    assert img.objects[0]["label"] == "cat"
    img.undo()  # undoing "Add object" gives its prompts back
    assert img.objects == [] and img.current.points == [[1, 1, 1], [2, 2, 1]]
    img.redo()
    img.redo()
    assert img.objects[0]["label"] == "dog"
    img.edit_object(1, visible=False)  # showing and hiding is not an edit to undo
    assert img.undo() and img.objects[0]["label"] == "cat"
    with pytest.raises(PromptError, match="no object with id 7"):
        img.remove_object(7)


def test_history_window_is_what_a_view_needs_for_undo_and_redo():
    img = ImageSession()
    for i in range(50):
        img.push([[i, i, 1]], None)
    img.undo()
    states, pos = img.window()
    assert len(states) == 3 and pos == 1
    assert [st["points"][0][0] for st in states] == [47, 48, 49]
    img.pos = 0
    states, pos = img.window()
    assert pos == 0 and len(states) == 2


def test_undo_history_is_bounded_in_bytes_and_keeps_the_prompt_log():
    img = ImageSession(history_bytes=4 * 2**20)
    for i in range(200):
        click(img, i % 40, i % 30, seed=i)
        _ = img.current.prediction.masks  # Python asked for the full-size masks
    assert img.nbytes <= 4 * 2**20 + 3 * answer().logits.nbytes * 2
    assert img.history[-1].prediction is not None and img.history[-2].prediction is not None
    assert img.history[1].prediction is None and img.history[1].decoded  # slimmed, not lost
    assert len(img.steps(refine=True)) == 200
    (last,) = img.steps(refine=False)
    assert len(last["points"]) == 200 and last["selected"] == 1 and last["multimask"]
    assert HISTORY_BYTES <= 32 * 2**20


def test_labels_are_checked_and_coloured_the_same_everywhere():
    s = Session(["a", "b"], labels=["cell", "debris"])
    assert s.label == "cell"
    assert s.color("debris", 1) == s.color("debris", 99) != s.color("cell", 1)
    with pytest.raises(PromptError, match="unknown label 'tree'.*'cell', 'debris'"):
        s.check_label("tree")
    with pytest.raises(TypeError, match="non-empty strings"):
        check_labels(["a", ""])
    with pytest.raises(ValueError, match="distinct"):
        check_labels(["a", "a"])
    with pytest.raises(PromptError, match="out of range.*2 images"):
        s.check_index(2)


def test_restore_puts_saved_objects_back_with_their_labels_and_nothing_to_save():
    s = Session(["a", "b", "c"], labels=["cell"])
    mask = np.zeros((30, 40), bool)
    mask[3:9, 4:12] = True
    s.restore({2: [{"mask": mask, "label": "debris", "score": 0.8}]}, ["cell", "debris"])
    assert s.labels == ["cell", "debris"]
    obj = s.annotations()[2][0]
    assert obj["label"] == "debris" and obj["area"] == 48 and obj["id"] == 1
    assert obj["color"] == s.color("debris", 1)
    assert not s.changed and not s.image(2).can_undo
    s.image(2).remove_object(1)
    assert s.changed


def test_quote_cuts_long_values():
    text = quote("x" * 10_000)
    assert len(text) < 260 and "10002 characters" in text


def test_proposals_prefill_an_image_once_as_its_starting_state():
    """Session.prefill: stored automatic masks (COCO RLE) become unlabelled "proposal" objects
    on an image without objects, once; not undoable, not an unsaved change; never on an image
    that has objects, never again after the user emptied it, nor after a resume says so."""
    from sam_widget.export import encode_rle

    rng = np.random.default_rng(0)
    masks = [rng.random((30, 40)) > 0.5, np.zeros((30, 40), bool)]
    masks[1][5:9, 2:30] = True
    records = [{"segmentation": encode_rle(m), "predicted_iou": 0.8 - k / 10,
                "point_coords": [[3.5, 4.5]]} for k, m in enumerate(masks)]
    s = Session(["a.png", "b.png", "c.png"], labels=["cell"])
    added = s.prefill(0, records, size=(30, 40))
    img = s.image(0)
    assert [o["source"] for o in img.objects] == ["proposal", "proposal"]
    assert [o["name"] for o in img.objects] == ["proposal 1", "proposal 2"]
    assert all(o["label"] is None for o in added) and added[0]["points"] == [[3.5, 4.5, 1]]
    for obj, mask in zip(img.objects, masks, strict=True):
        np.testing.assert_array_equal(obj["mask"], mask)
        assert obj["area"] == int(mask.sum())
    assert not img.can_undo and not s.changed  # the starting state, nothing to save yet
    img.remove_object(1)
    img.remove_object(2)
    assert s.prefill(0, records) == [] and img.objects == []  # emptied on purpose: stays empty
    assert s.prefill(1, None) == [] and not s.image(1).proposed  # nothing stored: nothing done
    click(s.image(2), 5, 5)
    s.image(2).commit(label="cell", color="#000", refine=True)
    assert s.prefill(2, records) == [] and len(s.image(2).objects) == 1  # it had objects
    assert s.image(2).objects[0]["source"] == "prompts"
    assert s.proposed() == [0, 2]
    with pytest.raises(ValueError, match="another image"):
        s.prefill(1, records, size=(40, 30))

    resumed = Session(["a.png", "b.png", "c.png"], labels=["cell"])
    resumed.restore({2: [{"mask": masks[0], "label": "cell", "source": "proposal"}]}, ["cell"],
                    proposed=[0])
    assert resumed.prefill(0, records) == []  # offered before the save
    assert resumed.prefill(2, records) == []  # resumed with objects
    assert resumed.image(2).objects[0]["source"] == "proposal"
    assert len(resumed.prefill(1, records)) == 2  # never offered: now it is
