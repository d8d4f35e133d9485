"""Image normalization (sam_widget.images.to_rgb): every input kind and its expected result.

Each test states one rule of the module docstring; images are synthetic and tiny.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam_widget.images import MAX_PIXELS, ImageError, to_rgb

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GRAY8 = RNG.integers(0, 256, (5, 7), dtype=np.uint8)


def _check(out: np.ndarray, shape=(5, 7)) -> np.ndarray:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    assert out.flags.c_contiguous
    return out


# ---------------------------------------------------------------------------- numpy


def test_rgb_uint8_passes_through_without_copy():
    out = _check(to_rgb(RGB8))
    assert out is RGB8 or np.shares_memory(out, RGB8)
    np.testing.assert_array_equal(out, RGB8)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1)])
def test_gray_is_repeated_to_three_channels(shape):
    out = _check(to_rgb(GRAY8.reshape(shape)))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], GRAY8)


def test_rgba_opaque_drops_alpha_and_transparent_goes_over_white():
    rgba = np.concatenate([RGB8, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(_check(to_rgb(rgba)), RGB8)
    rgba[0, 0] = [10, 20, 30, 0]  # fully transparent -> white
    rgba[0, 1] = [0, 0, 0, 128]  # half-transparent black -> mid gray
    out = to_rgb(rgba)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [127, 127, 127])
    np.testing.assert_array_equal(out[1:], RGB8[1:])


def test_gray_alpha_two_channels():
    ga = np.stack([GRAY8, np.full_like(GRAY8, 255)], axis=2)
    ga[0, 0, 1] = 0
    out = _check(to_rgb(ga))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[1:, :, 0], GRAY8[1:])


def test_uint16_full_range_maps_to_uint8():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    out = to_rgb(values)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    rgb16 = RGB8.astype(np.uint16) * 257
    np.testing.assert_array_equal(to_rgb(rgb16), RGB8)
    np.testing.assert_array_equal(to_rgb(rgb16.astype(">u2")), RGB8)  # big-endian (FITS, TIFF)


def test_float_in_0_1_is_scaled():
    out = to_rgb(RGB8.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(out, RGB8)
    np.testing.assert_array_equal(to_rgb(np.array([[0.0, 0.5, 1.0]]))[0, :, 0], [0, 128, 255])


def test_float_in_0_255_is_taken_as_is():
    out = to_rgb(RGB8.astype(np.float64))
    np.testing.assert_array_equal(out, RGB8)
    assert RGB8.max() > 1  # the fixture really is outside [0, 1]


def test_bool_is_black_and_white():
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(to_rgb(mask)[0], [[255, 255, 255], [0, 0, 0]])


def test_other_integers_in_0_255_are_8_bit_and_outside_are_refused():
    np.testing.assert_array_equal(to_rgb(RGB8.astype(np.int64)), RGB8)
    with pytest.raises(ImageError, match=r"values in \[-1, 3\].*uint8"):
        to_rgb(np.array([[-1, 3]], dtype=np.int32))
    with pytest.raises(ImageError, match="values in"):
        to_rgb(np.array([[0, 300]], dtype=np.int32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(bad):
    image = np.zeros((4, 4, 3), np.float32)
    image[1, 2, 0] = bad
    with pytest.raises(ImageError, match="NaN|Inf"):
        to_rgb(image)


def test_float_out_of_range_is_refused():
    with pytest.raises(ImageError, match="negative"):
        to_rgb(np.full((2, 2), -0.5))
    with pytest.raises(ImageError, match="up to 1000"):
        to_rgb(np.full((2, 2), 1000.0))


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0), (0, 0)])
def test_empty_images_are_refused(shape):
    with pytest.raises(ImageError, match="empty"):
        to_rgb(np.zeros(shape, np.uint8))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((5,), "got 1 dimensions"),
        ((1, 5, 7, 3), "drop the batch dimension"),
        ((5, 7, 5), "1-4 channels"),
        ((3, 16, 16), "channels-first"),
    ],
)
def test_wrong_ndim_or_channels_are_refused(shape, message):
    with pytest.raises(ImageError, match=message):
        to_rgb(np.zeros(shape, np.uint8))


def test_unsupported_objects_are_refused():
    with pytest.raises(ImageError, match="got None"):
        to_rgb(None)
    with pytest.raises(ImageError, match="cannot read an image from dict"):
        to_rgb({"a": 1})
    with pytest.raises(ImageError, match="dtype"):
        to_rgb(np.array([["a", "b"]]))
    assert issubclass(ImageError, ValueError)


def test_absurd_sizes_are_refused_before_any_work():
    # a broadcast view: 20000 x 20000 pixels that take no memory
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))
    with pytest.raises(ImageError, match="decompression bombs"):
        to_rgb(huge)
    with pytest.raises(ImageError, match="more than the limit of 10"):
        to_rgb(np.zeros((4, 4), np.uint8), max_pixels=10)
    assert 20000 * 20000 > MAX_PIXELS


def test_torch_tensor_hwc():
    import torch

    np.testing.assert_array_equal(to_rgb(torch.from_numpy(RGB8)), RGB8)


# ---------------------------------------------------------------------------- PIL


@pytest.mark.parametrize(
    "mode", ["RGB", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "1", "RGBA", "LA", "I", "F"]
)
def test_pil_in_any_mode(mode):
    base = Image.fromarray(RGB8)
    image = base.convert(mode) if mode not in ("I", "F") else base.convert("L").convert(mode)
    out = _check(to_rgb(image))
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(out, RGB8)
    elif mode in ("L", "LA", "F"):
        np.testing.assert_array_equal(out[..., 0], np.asarray(base.convert("L")))
    elif mode == "I":  # 32-bit integer mode is read as 16-bit data
        expected = (np.asarray(base.convert("L")).astype(np.uint32) * 255 + 32767) // 65535
        np.testing.assert_array_equal(out[..., 0], expected)
    elif mode == "1":
        assert set(np.unique(out)) <= {0, 255}
    else:  # lossy colour spaces: close to the original
        assert np.abs(out.astype(int) - RGB8.astype(int)).mean() < 40


def test_pil_16_bit():
    values = GRAY8.astype(np.uint16) * 257
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(to_rgb(image)[..., 1], GRAY8)


def test_pil_palette_with_transparency_goes_over_white():
    image = Image.new("P", (3, 2), 0)
    image.putpalette([200, 10, 10] + [0, 0, 0] * 255)
    image.info["transparency"] = 0
    out = to_rgb(image)
    np.testing.assert_array_equal(out, np.full((2, 3, 3), 255, np.uint8))


def _exif_image(orientation: int) -> Image.Image:
    image = Image.fromarray(RGB8)  # 7 wide, 5 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    return image


@pytest.mark.parametrize(
    ("orientation", "transform"),
    [
        (1, lambda a: a),
        (3, lambda a: a[::-1, ::-1]),
        (6, lambda a: np.rot90(a, k=-1)),  # rotate 90 clockwise to display
        (8, lambda a: np.rot90(a, k=1)),
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, transform):
    path = tmp_path / f"o{orientation}.png"
    image = Image.fromarray(RGB8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)
    out = to_rgb(path)
    np.testing.assert_array_equal(out, transform(RGB8))
    with Image.open(path) as opened:  # a PIL image passed in directly: same rule
        np.testing.assert_array_equal(to_rgb(opened), transform(RGB8))


# ---------------------------------------------------------------------------- paths


def test_str_and_path_are_opened(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(RGB8).save(path)
    np.testing.assert_array_equal(to_rgb(path), RGB8)
    np.testing.assert_array_equal(to_rgb(str(path)), RGB8)


def test_jpeg_path(tmp_path):
    yy, xx = np.mgrid[:32, :48]
    smooth = np.stack([xx * 5, yy * 7, 255 - xx * 5], axis=2).astype(np.uint8)
    path = tmp_path / "x.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    out = _check(to_rgb(path), shape=(32, 48))
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 3


def test_missing_folder_unreadable_and_truncated_paths(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        to_rgb(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        to_rgb(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not an image PIL can read"):
        to_rgb(text)
    good = tmp_path / "big.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageError, match="could not be read"):
        to_rgb(cut)


def test_decompression_bomb_file_is_refused_from_its_header(tmp_path):
    # a 1-bit PNG of 20000 x 20000 pixels compresses to a few kilobytes
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError, match="decompression bombs|too large"):
        to_rgb(path)
    with pytest.raises(ImageError, match="more than the limit of 1,000"):
        small = tmp_path / "small.png"
        Image.new("RGB", (40, 40)).save(small)
        to_rgb(small, max_pixels=1000)
