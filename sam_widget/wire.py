"""How the widget's bytes (image, masks) travel: binary buffers, or base64 where a host drops them.

JupyterLab, Notebook 7, Voila and marimo carry binary buffers with widget messages; some hosts
(older Colab and VS Code renderers, custom widget managers) lose or mangle them. The view tests
the binary path at start-up (``js/wire.ts``): it sends a "wire-probe" message with the 4 bytes
``PROBE`` and expects an answer carrying the same 4 bytes. When either direction fails it asks
for base64 (a "wire" message), and from then on every bytes value (``_image``, ``_masks``, object
masks, hover answers) crosses as a base64 string instead. ``SAM_WIDGET_WIRE=base64`` in the
kernel's environment forces the fallback from the start.
"""

from __future__ import annotations

import base64
import os
from typing import Any

#: the probe's bytes, both ways
PROBE = b"sam!"
MODES = ("binary", "base64")


def default_mode() -> str:
    """The wire mode a new widget starts in: SAM_WIDGET_WIRE if set ("binary"/"base64")."""
    mode = os.environ.get("SAM_WIDGET_WIRE", "binary").strip().lower() or "binary"
    if mode not in MODES:
        raise ValueError(f"SAM_WIDGET_WIRE={mode!r}: use 'binary' or 'base64'")
    return mode


def to_wire(data: bytes, mode: str) -> bytes | str:
    """Bytes as they go on the wire: unchanged (a binary buffer) or a base64 string."""
    if mode == "base64":
        return base64.b64encode(bytes(data)).decode("ascii")
    return data


def from_wire(value: Any) -> bytes:
    """The bytes a wire value carries (bytes, memoryview or a base64 string)."""
    if isinstance(value, str):
        return base64.b64decode(value)
    return bytes(value)


def bytes_trait_to_json(value: bytes, widget: Any) -> bytes | str:
    """``to_json`` of the widget's bytes traits: honours the widget's ``_wire`` mode."""
    return to_wire(value, getattr(widget, "_wire", "binary"))


def bytes_trait_from_json(value: Any, widget: Any) -> bytes:
    return from_wire(value) if value is not None else b""


def probe_answer(content: dict, buffers: list) -> tuple[dict, list[bytes]]:
    """The kernel's answer to a "wire-probe": whether the view's buffer arrived intact, and
    the probe bytes back as a buffer."""
    received = bool(buffers) and bytes(buffers[0]) == PROBE
    msg = {"type": "wire-probe", "client": content.get("client", ""), "received": received}
    return msg, [PROBE]
