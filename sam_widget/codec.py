"""The widget's wire format: masks and images <-> compact bytes (never JSON lists or base64).

Masks travel as one binary blob per update, decoded by ``js/codec.ts``::

    offset  size  field
    0       4     magic b"SAMM"
    4       1     format version (1)
    5       1     compression: 0 = raw packed bits, 1 = zlib(deflate) of the packed bits
    6       2     reserved (0)
    8       4     count C (uint32, little endian)
    12      4     height H (uint32 LE)
    16      4     width W (uint32 LE)
    20      ...   payload: C*H*W bits, row-major per mask, packed MSB-first (numpy.packbits),
                  each mask padded to a whole byte; zlib-compressed when that is smaller

SAM's masks are a few compact regions, so packed bits + zlib level 1 is both tiny (three
1024x1024 candidates are typically a few KiB) and fast (about a millisecond), and the browser
inflates it natively (``DecompressionStream("deflate")``).

Images travel as PNG (small or with few colours) or JPEG (large photographs) bytes, already
normalised by :func:`sam_widget.images.to_rgb` and downscaled to the display resolution.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"SAMM"
VERSION = 1
RAW, ZLIB = 0, 1
_HEADER = struct.Struct("<4sBBHIII")  # magic, version, compression, reserved, C, H, W
HEADER_BYTES = _HEADER.size  # 20


class CodecError(ValueError):
    """Bytes that are not a mask blob of this format."""


@dataclass(frozen=True)
class MaskCodec:
    """Encode bool masks (C, H, W) to bytes and back; ``level`` is zlib's (1 = fastest)."""

    level: int = 1

    def encode(self, masks: np.ndarray) -> bytes:
        """Bool/0-1 array (H, W) or (C, H, W) -> bytes in the format above."""
        m = np.asarray(masks)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise CodecError(f"masks must be (H, W) or (C, H, W), got shape {m.shape}")
        count, height, width = (int(s) for s in m.shape)
        if m.dtype != np.bool_:
            m = m != 0
        packed = np.packbits(m.reshape(count, height * width), axis=1).tobytes()
        compressed = zlib.compress(packed, self.level)
        if len(compressed) < len(packed):
            kind, payload = ZLIB, compressed
        else:
            kind, payload = RAW, packed
        return _HEADER.pack(MAGIC, VERSION, kind, 0, count, height, width) + payload

    def decode(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Bytes -> bool (C, H, W)."""
        buf = memoryview(data).cast("B")
        if len(buf) < HEADER_BYTES:
            raise CodecError(f"mask blob too short: {len(buf)} bytes")
        magic, version, kind, _, count, height, width = _HEADER.unpack(buf[:HEADER_BYTES])
        if magic != MAGIC or version != VERSION:
            raise CodecError(f"not a mask blob (magic {magic!r}, version {version})")
        payload = bytes(buf[HEADER_BYTES:])
        if kind == ZLIB:
            payload = zlib.decompress(payload)
        elif kind != RAW:
            raise CodecError(f"unknown compression {kind}")
        row_bytes = (height * width + 7) // 8
        if len(payload) != count * row_bytes:
            raise CodecError(
                f"mask payload has {len(payload)} bytes, expected {count * row_bytes} "
                f"for {count}x{height}x{width}"
            )
        bits = np.frombuffer(payload, np.uint8).reshape(count, row_bytes)
        flat = np.unpackbits(bits, axis=1, count=height * width)
        return flat.reshape(count, height, width).astype(bool)


_default = MaskCodec()


def encode_masks(masks: np.ndarray) -> bytes:
    """Bool masks (C, H, W) or (H, W) -> compact bytes (see the module docstring)."""
    return _default.encode(masks)


def decode_masks(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Compact bytes -> bool masks (C, H, W)."""
    return _default.decode(data)


def display_size(height: int, width: int, max_size: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is at most ``max_size`` (never upscaled)."""
    longest = max(height, width)
    if longest <= max_size:
        return int(height), int(width)
    scale = max_size / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def encode_image(rgb: np.ndarray, *, max_size: int = 1024, quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) -> PNG or JPEG bytes at display size (longer side <= max_size).

    JPEG for large photographs (much smaller), PNG when that is small anyway (few colours,
    small images), so masks line up with exactly the pixels Python has.
    """
    from PIL import Image

    height, width = rgb.shape[:2]
    dh, dw = display_size(height, width, max_size)
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if (dh, dw) != (height, width):
        img = img.resize((dw, dh), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    png = out.getvalue()
    if dh * dw <= 256 * 256 or len(png) <= dh * dw:  # small, or few colours
        return png
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> RGB uint8 (H, W, 3)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
