"""Any image a user hands us -> one RGB uint8 (H, W, 3) array, or a clear ``ImageError``.

The predictor, the widget and the exports all call ``to_rgb``, so every part of sam-widget
sees an image the same way (EXIF orientation applied, modes and dtypes resolved once).

How values are read (documented here because they are decisions, not accidents):
- uint8: as is. uint16 (and PIL's 16-bit modes): the full 0..65535 range maps to 0..255.
- other integer dtypes: 0..255 are taken as 8-bit values; anything outside is refused
  (we cannot know the intended range; convert to uint8 or uint16 first).
- float: [0, 1] if the largest value is <= 1, else [0, 255] if it is <= 255; values below 0
  or above 255, NaN and Inf are refused. (So a float image that is all dark in 0..255 but
  <= 1 everywhere is read as 0..1: pass uint8 to be explicit.)
- bool: False -> 0 (black), True -> 255 (white).
- gray (H, W) / (H, W, 1) is repeated to three channels; (H, W, 2) is gray + alpha;
  RGBA and other transparent images are composited over white (transparent areas show as
  white, not as whatever colour the hidden pixels happen to hold).
- PIL images in any mode (1, L, P, LA, PA, RGB, RGBA, CMYK, YCbCr, LAB, HSV, I, I;16, F),
  with EXIF orientation applied; str / Path are opened with PIL; a URL ("s3://bucket/a.jpg",
  "https://...", "memory://...") is read through fsspec (its backend, e.g. s3fs, installed),
  then decoded like a file.
- channels-first arrays (3, H, W) are refused with a hint, not guessed at.
- arrays in OpenCV's BGR / BGRA order: pass ``image_format="BGR"``.
- torch tensors on any device and of any dtype (bfloat16 included); channels last.
- files (a path, their bytes, a binary file object) are decoded with raster decoders only
  (``FORMATS``: no EPS/PostScript, which would run Ghostscript); a multi-frame file (GIF,
  animated PNG, TIFF stack) gives its first frame with a warning; whatever a corrupt file
  makes PIL raise becomes an ``ImageError``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

__all__ = ["FORMATS", "ImageError", "MAX_PIXELS", "to_rgb", "is_url", "url_filesystem",
           "read_url"]

# The largest image we accept, in pixels: PIL's own decompression-bomb error threshold
# (2 x Image.MAX_IMAGE_PIXELS = 2 x 89,478,485), about 13,400 x 13,400. SAM works at
# 1024 x 1024 anyway; bigger inputs only cost memory. Pass ``max_pixels`` to change it.
MAX_PIXELS = 178_956_970


class ImageError(ValueError):
    """The input cannot be read as an image; the message says what is wrong and what to do."""


def _check_size(height: int, width: int, max_pixels: int, what: str) -> None:
    if height == 0 or width == 0:
        raise ImageError(f"{what} is empty ({height} x {width} pixels)")
    if height * width > max_pixels:
        raise ImageError(
            f"{what} is {width} x {height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (a guard against decompression bombs). Downscale it first, or pass "
            "max_pixels=... if you trust it."
        )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Values of any supported dtype -> uint8, per the rules in the module docstring."""
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if dtype.kind == "u" and dtype.itemsize == 2:  # uint16 of either byte order
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"integer image of dtype {dtype} has values in [{low}, {high}]; only 0..255 "
                "can be read unambiguously. Convert it to uint8 (0..255) or uint16 (0..65535)."
            )
        return array.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        values = array.astype(np.float32, copy=False)
        if not np.isfinite(values).all():
            bad = "NaN" if np.isnan(values).any() else "Inf"
            raise ImageError(
                f"image contains {bad} values; replace them (e.g. np.nan_to_num) before segmenting"
            )
        low, high = float(values.min()), float(values.max())
        if low < 0:
            raise ImageError(
                f"float image has negative values (min {low:g}); expected [0, 1] or [0, 255]"
            )
        if high <= 1.0:
            scaled = values * 255.0
        elif high <= 255.0:
            scaled = values
        else:
            raise ImageError(
                f"float image has values up to {high:g}; expected [0, 1] or [0, 255]. "
                "Rescale it first."
            )
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    raise ImageError(f"unsupported image dtype {dtype}; use uint8, uint16, float or bool")


def _over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite uint8 color (H, W, C) with uint8 alpha (H, W) over white."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = color.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.dtype == object or array.dtype.kind in "USVMm":
        raise ImageError(f"unsupported array dtype {array.dtype}; expected numbers or bool")
    if array.ndim == 2:
        _check_size(*array.shape, max_pixels, "image")
        gray = _to_uint8(array)
        return np.repeat(gray[..., None], 3, axis=2)
    if array.ndim != 3:
        raise ImageError(
            f"an image array must be (H, W) or (H, W, C), got {array.ndim} dimensions "
            f"{array.shape}" + ("; drop the batch dimension first" if array.ndim == 4 else "")
        )
    h, w, c = array.shape
    if c not in (1, 2, 3, 4):
        hint = ""
        if array.shape[0] in (1, 3, 4):
            hint = "; it looks channels-first: use np.moveaxis(image, 0, -1)"
        raise ImageError(f"an image needs 1-4 channels last, got shape {array.shape}{hint}")
    _check_size(h, w, max_pixels, "image")
    values = _to_uint8(array)
    if c == 1:
        return np.repeat(values, 3, axis=2)
    if c == 2:
        return np.repeat(_over_white(values[..., :1], values[..., 1]), 3, axis=2)
    if c == 4:
        if (values[..., 3] == 255).all():
            return np.ascontiguousarray(values[..., :3])
        return _over_white(values[..., :3], values[..., 3])
    return np.ascontiguousarray(values)


def _from_pil(image: Any, max_pixels: int) -> np.ndarray:
    from PIL import ImageOps

    width, height = image.size
    _check_size(height, width, max_pixels, "image")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # a broken EXIF block should not lose the picture
        warnings.warn(
            f"could not apply the EXIF orientation ({e}); using the image as stored", stacklevel=3
        )
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _from_array(np.asarray(image).astype(np.uint16), max_pixels)
    if mode == "I":
        # 32-bit integer mode: what 16-bit PNG/TIFF files decode to; read as 16-bit
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageError("mode 'I' image has values outside 0..65535; cannot scale it")
        return _from_array(values.astype(np.uint16), max_pixels)
    if mode == "F":
        return _from_array(np.asarray(image, dtype=np.float32), max_pixels)
    if mode == "1":
        return _from_array(np.asarray(image.convert("L")), max_pixels)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return _from_array(np.asarray(image.convert("RGBA")), max_pixels)
    if mode == "L":
        return _from_array(np.asarray(image), max_pixels)
    return _from_array(np.asarray(image.convert("RGB")), max_pixels)


# The decoders we let PIL use: raster formats only. Everything else PIL can open is refused
# before any plugin runs, above all EPS / PostScript, whose "decoder" runs Ghostscript on the
# file (an interpreter of a programming language), and rare formats whose plugins see little
# use (a larger attack surface for a file a user was sent). MPO (the JPEG variant of phone
# cameras) is opened by the JPEG plugin.
FORMATS = (
    "PNG",
    "JPEG",
    "GIF",
    "BMP",
    "DIB",
    "TIFF",
    "WEBP",
    "AVIF",
    "JPEG2000",
    "PPM",
    "TGA",
    "ICO",
    "QOI",
)


def _available_formats() -> list[str]:
    """``FORMATS`` that this Pillow has plugins for (AVIF needs Pillow 11.3+; Image.open
    fails on a format id it does not know)."""
    from PIL import Image

    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


# how a file begins, for naming formats we refuse
_REFUSED_MAGIC = {
    b"%!PS": "PostScript/EPS (opening it would run Ghostscript)",
    b"\xc5\xd0\xd3\xc6": "EPS (opening it would run Ghostscript)",
    b"%PDF": "PDF",
    b"8BPS": "Photoshop (PSD)",
}


def _refused_kind(head: bytes) -> str | None:
    for magic, kind in _REFUSED_MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def _decode(source: Any, what: str, max_pixels: int) -> np.ndarray:
    """Decode a file (path or binary file object) with the allowed decoders only; every
    error PIL (or a plugin) raises on a corrupt file becomes an ``ImageError``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # we apply our own limit (max_pixels) right after the header is read
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=_available_formats()) as image:
                _check_size(image.size[1], image.size[0], max_pixels, what)
                frames = getattr(image, "n_frames", 1)
                if frames > 1 and image.format != "MPO":  # MPO: a photo plus its previews
                    warnings.warn(
                        f"{what} has {frames} frames (an animation or a stack); using the "
                        "first. Open it with PIL and pass the frame you want to use another.",
                        stacklevel=4,
                    )
                image.load()
                return _from_pil(image, max_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what} is too large to open safely ({e}). Downscale it first.") from None
    except UnidentifiedImageError:
        head = b""
        try:
            if isinstance(source, (str, os.PathLike)):
                with open(source, "rb") as f:
                    head = f.read(8)
            else:
                source.seek(0)
                head = source.read(8)
        except (OSError, AttributeError, ValueError):
            pass
        kind = _refused_kind(head)
        if kind is not None:
            raise ImageError(
                f"{what} is {kind}, which sam-widget does not open; convert it to PNG or JPEG first"
            ) from None
        raise ImageError(
            f"{what} is not an image PIL can read (unknown or corrupt format; sam-widget "
            f"reads {', '.join(FORMATS)})"
        ) from None
    except MemoryError:
        raise ImageError(f"{what} could not be read: it needs more memory than is free") from None
    except Exception as e:  # truncated and corrupt files: OSError, ValueError, SyntaxError,
        # struct.error, IndexError, ... (whatever the plugin's parser tripped on)
        if isinstance(e, OSError) and e.errno is not None:  # the file system, not the bytes
            raise ImageError(f"{what} could not be read: {e.strerror}") from None
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        raise ImageError(
            f"{what} could not be read: it is truncated or corrupt ({type(e).__name__}"
            + (f": {detail}" if detail else "")
            + ")"
        ) from None


def _open_path(path: str | os.PathLike[str], max_pixels: int) -> np.ndarray:
    if not os.path.exists(path):
        raise ImageError(f"image file not found: {os.fspath(path)}")
    if os.path.isdir(path):
        raise ImageError(f"{os.fspath(path)} is a folder, not an image file")
    return _decode(path, os.fspath(path), max_pixels)


def is_url(value: Any) -> bool:
    """Whether ``value`` is a URL with a scheme ("s3://...", "memory://..."): read through
    fsspec rather than opened as a local path."""
    import re

    return isinstance(value, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value) is not None


def url_filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) of ``url``. A protocol whose fsspec backend is not
    installed is an ImportError naming the package to install (s3:// needs s3fs...)."""
    from fsspec.core import url_to_fs
    from fsspec.registry import known_implementations

    protocol = url.split("://", 1)[0].lower()
    try:
        return url_to_fs(url)
    except ImportError as e:
        import re

        found = known_implementations.get(protocol, {}).get("class", "").split(".")[0]
        packages = [found] if found and found != "fsspec" else re.findall(r'"([\w.-]+)"', str(e))
        hint = f": pip install {' '.join(packages)}" if packages else ""
        raise ImportError(f"reading {url!r} needs fsspec's backend for {protocol}:// URLs, "
                          f"which is not installed{hint} ({e})") from None
    except ValueError as e:
        if "not known" not in str(e):
            raise
        raise ValueError(f"{url!r}: fsspec knows no {protocol}:// filesystem; use a local path "
                         "or a URL fsspec reads (s3://, gs://, https://, memory://...)") from None


def read_url(url: str) -> bytes:
    """The bytes of the file at ``url`` (see `url_filesystem`); a missing file is an
    ImageError naming it."""
    fs, path = url_filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError) as e:
        raise ImageError(f"image file not found: {url} ({type(e).__name__})") from None


def _open_bytes(data: Any, max_pixels: int) -> np.ndarray:
    import io

    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) == 0:
            raise ImageError("the image data is empty (0 bytes)")
        data = io.BytesIO(bytes(data))
    return _decode(data, "the image data", max_pixels)


def _from_tensor(image: Any) -> np.ndarray:
    """A torch tensor (any device, any dtype numpy lacks, such as bfloat16) as numpy."""
    image = image.detach()
    if str(getattr(image, "dtype", "")) in (
        "torch.bfloat16",
        "torch.float8_e4m3fn",
        "torch.float8_e5m2",
    ):
        image = image.float()  # numpy has no such dtype; float32 holds every value exactly
    return np.asarray(image.cpu())


_IMAGE_FORMATS = ("RGB", "BGR")


def _bgr_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] in (3, 4):
        order = [2, 1, 0] + ([3] if array.shape[2] == 4 else [])
        return array[..., order]
    return array  # gray (+ alpha): no colour order


def to_rgb(image: Any, *, max_pixels: int = MAX_PIXELS, image_format: str = "RGB") -> np.ndarray:
    """Normalize an image to RGB uint8.

    Args:
        image: numpy array (H, W), (H, W, 1|2|3|4) of uint8 / uint16 / other ints / float /
            bool; a PIL image in any mode; a path (str or os.PathLike) to an image file, or
            the file's bytes / a binary file object (only raster formats are decoded: see
            ``FORMATS``; a multi-frame file gives its first frame, with a warning); or
            anything with ``__array__`` (e.g. a torch tensor laid out (H, W, C), on any
            device, bfloat16 included).
        max_pixels: refuse larger images (decompression-bomb guard).
        image_format: "RGB" or "BGR": the channel order of an array (OpenCV's ``cv2.imread``
            gives BGR, and BGRA for 4 channels). Files and PIL images know their order, so
            "BGR" with one of those is refused.
    Returns:
        (H, W, 3) uint8, C-contiguous. A uint8 RGB input is returned without copying.
    Raises:
        ImageError: with what is wrong and what to do.
    """
    fmt = str(image_format).upper() if isinstance(image_format, str) else image_format
    if fmt not in _IMAGE_FORMATS:
        raise ValueError(f'image_format must be "RGB" or "BGR", got {str(image_format)[:50]!r}')
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # noqa: N806
    is_pil = Image is not None and isinstance(image, Image.Image)
    is_file = isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)) or (
        hasattr(image, "read") and not hasattr(image, "__array__")
    )
    if fmt == "BGR" and (is_pil or is_file):
        raise ImageError(
            'image_format="BGR" is for arrays (such as cv2.imread\'s); a file or PIL image '
            'knows its own channel order: leave image_format at "RGB"'
        )
    if is_url(image):
        import io

        return _decode(io.BytesIO(read_url(image)), image, max_pixels)
    if isinstance(image, (str, os.PathLike)):
        return _open_path(image, max_pixels)
    if is_file:
        return _open_bytes(image, max_pixels)
    if is_pil:
        return _from_pil(image, max_pixels)
    if image is None:
        raise ImageError("no image given (got None)")
    if isinstance(image, np.ndarray):
        array = image
    elif hasattr(image, "__array__"):
        array = _from_tensor(image) if hasattr(image, "detach") else np.asarray(image)
    else:
        raise ImageError(
            f"cannot read an image from {type(image).__name__}; pass a numpy array, a PIL "
            "image or a file path"
        )
    if fmt == "BGR":
        array = _bgr_to_rgb(array)
    return _from_array(array, max_pixels)
