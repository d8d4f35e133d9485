"""Brush and eraser strokes at full resolution (sam_widget/strokes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sam_widget.strokes import StrokeError, apply_stroke, apply_strokes, validate_stroke


def test_a_brush_stroke_covers_the_pixels_within_its_radius_of_the_line():
    mask = np.zeros((40, 60), bool)
    stroke = validate_stroke({"mode": "add", "radius": 3, "points": [[10, 20], [50, 20]]}, 60, 40)
    out = apply_stroke(mask, stroke)
    ys, xs = np.mgrid[0:40, 0:60] + 0.5
    # distance of each pixel centre to the segment (10,20)-(50,20)
    dx = np.maximum(0, np.maximum(10 - xs, xs - 50))
    want = dx**2 + (ys - 20) ** 2 <= 9
    assert (out == want).all()
    assert not mask.any()  # the input is never changed


def test_erase_removes_and_strokes_apply_in_order():
    mask = np.ones((20, 20), bool)
    erase = validate_stroke({"mode": "erase", "radius": 2.5, "points": [[10, 10]]}, 20, 20)
    add = validate_stroke({"mode": "add", "radius": 1, "points": [[10, 10]]}, 20, 20)
    out = apply_strokes(mask, [erase, add])
    assert not out[8, 10] and out[10, 10] and out[0, 0]
    disc = lambda r: apply_stroke(np.zeros((20, 20), bool), {**erase, "mode": "add", "radius": r})  # noqa: E731
    assert out.sum() == 400 - disc(2.5).sum() + disc(1).sum()


@pytest.mark.parametrize(("stroke", "message"), [
    ({"mode": "paint", "radius": 2, "points": [[1, 1]]}, "mode"),
    ({"mode": "add", "radius": 0, "points": [[1, 1]]}, "radius"),
    ({"mode": "add", "radius": 2, "points": []}, "non-empty"),
    ({"mode": "add", "radius": 2, "points": [[1, float("nan")]]}, "finite"),
    ({"mode": "add", "radius": 2, "points": [[500, 1]]}, "outside"),
])
def test_bad_strokes_are_refused_with_the_reason(stroke, message):
    with pytest.raises(StrokeError, match=message):
        validate_stroke(stroke, 20, 20)
