"""The base64 fallback for hosts without binary buffers (sam_widget/wire.py, js/wire.ts)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

import sam_widget as sw
from sam_widget.codec import decode_masks
from sam_widget.wire import PROBE, from_wire, probe_answer


def _scene() -> np.ndarray:
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:30, 12:40] = (220, 200, 40)
    return img


def test_probe_answer_says_whether_the_views_buffer_arrived():
    msg, buffers = probe_answer({"client": "c1"}, [memoryview(PROBE)])
    assert msg == {"type": "wire-probe", "client": "c1", "received": True}
    assert buffers == [PROBE]
    assert probe_answer({"client": "c1"}, [])[0]["received"] is False
    assert probe_answer({"client": "c1"}, [b"sam?"])[0]["received"] is False


def test_forced_base64_sends_every_bytes_value_as_text(monkeypatch):
    monkeypatch.setenv("SAM_WIDGET_WIRE", "base64")
    w = sw.SamWidget(_scene(), model=sw.ClassicPredictor())
    try:
        w.add_point(20, 20)
        w.commit()
        w.add_point(30, 15)
        state = w.get_state()
        assert state["_wire"] == "base64"
        assert isinstance(state["_masks"], str) and isinstance(state["_image"], str)
        # the same bytes as the binary path would have sent
        assert base64.b64decode(state["_masks"]) == w._masks
        masks = decode_masks(from_wire(state["_masks"]))
        assert masks.shape[1:] == (w.display_height, w.display_width)
        obj = state["objects"][0]
        assert isinstance(obj["mask"], str)
        assert decode_masks(from_wire(obj["mask"]))[0].any()
        # ipywidgets finds no binary buffers to split off
        from ipywidgets.widgets.widget import _remove_buffers

        _, _, buffers = _remove_buffers(state)
        assert buffers == []
    finally:
        w.close()


def test_the_view_switches_a_binary_widget_to_base64():
    w = sw.SamWidget(_scene(), model=sw.ClassicPredictor())
    try:
        assert isinstance(w.get_state()["_masks"], (bytes, memoryview))
        w._msg_callbacks(w, {"type": "wire", "client": "c", "seq": 1, "mode": "base64"}, [])
        assert w._wire == "base64" and isinstance(w.get_state()["_image"], str)
        assert not w.status.startswith("error")
        with pytest.raises(ValueError, match="binary.*base64"):
            w.set_wire("hex")
    finally:
        w.close()
