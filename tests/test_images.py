"""Image normalization (sam_widget.images.to_rgb): every input kind and its expected result.

Each test states one rule of the module docstring; images are synthetic and tiny.
"""

from __future__ import annotations

import warnings

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


# ---------------------------------------------------------------------------- untrusted files


def _seed_corpus() -> dict[str, bytes]:
    """Small files in every allowed format and its common variants, written by Pillow."""
    import io

    from PIL import features

    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    corpus = {}

    def add(name, image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        corpus[name] = buffer.getvalue()

    add("rgb.png", rgb, "PNG")
    add("rgba.png", rgb.convert("RGBA"), "PNG")
    add("palette.png", rgb.convert("P"), "PNG", transparency=0)
    add("gray16.png", Image.fromarray(rng.integers(0, 65535, (12, 16), dtype=np.uint16)), "PNG")
    add("rgb.jpg", rgb, "JPEG", quality=80)
    add("progressive.jpg", rgb.convert("L"), "JPEG", progressive=True)
    add("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    add("anim.gif", rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.rotate(90)])
    add("rgb.bmp", rgb, "BMP")
    add("rle.bmp", rgb.convert("P"), "BMP")
    add("rgb.tif", rgb, "TIFF")
    add("deflate.tif", rgb, "TIFF", compression="tiff_deflate")
    add("stack.tif", rgb, "TIFF", save_all=True, append_images=[rgb.convert("L").convert("RGB")])
    add("float.tif", Image.fromarray(rng.random((12, 16), dtype=np.float32)), "TIFF")
    add("rgb.ppm", rgb, "PPM")
    add("rgb.tga", rgb, "TGA", compression="tga_rle")
    add("icon.ico", rgb, "ICO", sizes=[(16, 12)])
    if features.check("webp"):
        add("rgb.webp", rgb, "WEBP", lossless=True)
        add("lossy.webp", rgb.convert("RGBA"), "WEBP", quality=50)
    if features.check("jpg_2000"):
        add("rgb.jp2", rgb, "JPEG2000")
    return corpus


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = int(rng.integers(6))
    n = len(b)
    if kind == 0:  # a few random bytes
        for i in rng.integers(0, n, int(rng.integers(1, 9))):
            b[i] = int(rng.integers(256))
    elif kind == 1:  # truncated
        b = b[: int(rng.integers(1, n))]
    elif kind == 2:  # random bytes inserted
        i = int(rng.integers(n))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
    elif kind == 3:  # a slice repeated
        i, j = sorted(int(v) for v in rng.integers(0, n, 2))
        b[j:j] = b[i : i + 64]
    elif kind == 4:  # the header's numbers pushed to extremes
        for i in rng.integers(0, min(n, 96), int(rng.integers(1, 5))):
            b[i] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF]))
    else:  # a run zeroed
        i = int(rng.integers(n))
        b[i : i + int(rng.integers(1, 48))] = bytes(min(n - i, 48))[: len(b[i : i + 48])]
    return bytes(b)


def test_fuzzed_files_give_an_image_or_an_image_error(tmp_path):
    """3,000 mutated files (seeded): each one decodes or raises ImageError, nothing else."""
    corpus = _seed_corpus()
    names = sorted(corpus)
    rng = np.random.default_rng(20261201)
    path = tmp_path / "fuzz.bin"
    unexpected = []
    outcomes = {"image": 0, "ImageError": 0}
    for trial in range(3000):
        name = names[trial % len(names)]
        path.write_bytes(_mutate(corpus[name], rng))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = to_rgb(path, max_pixels=100_000)
        except ImageError:
            outcomes["ImageError"] += 1
            continue
        except Exception as e:  # what this test exists to catch
            unexpected.append(f"trial {trial} ({name}): {type(e).__name__}: {str(e)[:80]}")
            continue
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        outcomes["image"] += 1
    assert not unexpected, f"{len(unexpected)} non-ImageError errors:\n" + "\n".join(
        unexpected[:10]
    )
    assert min(outcomes.values()) > 300, outcomes  # both outcomes are exercised


def test_the_seed_corpus_decodes_and_bytes_and_file_objects_are_read_too():
    import io

    corpus = _seed_corpus()
    assert len(corpus) >= 17
    for name, data in corpus.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the GIF and the TIFF stack have two frames
            out = to_rgb(data)
        assert out.shape == (12, 16, 3), name
    np.testing.assert_array_equal(to_rgb(io.BytesIO(corpus["rgb.png"])), to_rgb(corpus["rgb.png"]))
    with pytest.raises(ImageError, match="empty"):
        to_rgb(b"")


EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
newpath 0 0 moveto 8 0 lineto 8 8 lineto closepath fill
showpage
%%EOF
"""


def test_eps_and_other_non_raster_formats_never_reach_their_decoder(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs", raising=False)
    path = tmp_path / "figure.png"  # the name does not matter, the content does
    path.write_bytes(EPS)
    with pytest.raises(ImageError, match="EPS.*Ghostscript"):
        to_rgb(path)
    with pytest.raises(ImageError, match="EPS"):
        to_rgb(EPS)
    assert ran == []
    # a format PIL could open but that is not on the list (here: Photoshop's PSD header)
    psd = tmp_path / "layers.psd"
    psd.write_bytes(b"8BPS\x00\x01" + bytes(40))
    with pytest.raises(ImageError, match="Photoshop"):
        to_rgb(psd)


def test_multi_frame_files_give_the_first_frame_with_a_warning(tmp_path):
    first = np.zeros((8, 10, 3), np.uint8)
    first[:, :5] = 255
    second = 255 - first
    frames = [Image.fromarray(first), Image.fromarray(second)]
    for name in ("anim.gif", "stack.tif", "anim.png"):
        path = tmp_path / name
        frames[0].save(path, save_all=True, append_images=frames[1:])
        with pytest.warns(UserWarning, match="has 2 frames .*using the first"):
            out = to_rgb(path)
        np.testing.assert_array_equal(out, first)
    single = tmp_path / "one.gif"
    frames[0].save(single)
    # a phone's MPO JPEG (the photo plus a preview) is one picture: no warning
    mpo = tmp_path / "phone.jpg"
    frames[0].save(mpo, format="MPO", save_all=True, append_images=[frames[0].resize((5, 4))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_rgb(single)
        assert to_rgb(mpo).shape == (8, 10, 3)


def test_bgr_arrays_from_opencv(tmp_path):
    bgr = RGB8[..., ::-1]
    np.testing.assert_array_equal(to_rgb(bgr, image_format="BGR"), RGB8)
    np.testing.assert_array_equal(to_rgb(np.ascontiguousarray(bgr), image_format="bgr"), RGB8)
    bgra = np.concatenate([bgr, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb(bgra, image_format="BGR"), RGB8)
    np.testing.assert_array_equal(to_rgb(GRAY8, image_format="BGR"), to_rgb(GRAY8))
    import torch

    np.testing.assert_array_equal(to_rgb(torch.from_numpy(bgr.copy()), image_format="BGR"), RGB8)
    with pytest.raises(ValueError, match='image_format must be "RGB" or "BGR"'):
        to_rgb(RGB8, image_format="HSV")
    path = tmp_path / "x.png"
    Image.fromarray(RGB8).save(path)
    with pytest.raises(ImageError, match="knows its own channel order"):
        to_rgb(path, image_format="BGR")
    with pytest.raises(ImageError, match="knows its own channel order"):
        to_rgb(Image.fromarray(RGB8), image_format="BGR")


def test_bfloat16_and_half_tensors_are_converted():
    import torch

    values = torch.from_numpy(RGB8.astype(np.float32) / 255)
    for dtype in (torch.bfloat16, torch.float16):
        tensor = values.to(dtype)
        expected = np.clip(np.rint(tensor.float().numpy() * 255), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(_check(to_rgb(tensor)), expected)
        assert np.abs(to_rgb(tensor).astype(int) - RGB8).max() <= 1  # bfloat16: 8 bits
    # a tensor that requires grad works too
    np.testing.assert_array_equal(
        to_rgb(values.to(torch.bfloat16).requires_grad_()), to_rgb(values.to(torch.bfloat16))
    )


def test_predictor_set_image_takes_opencv_bgr_like_the_official_api():
    from sam_widget.models import build_sam
    from sam_widget.predictor import Predictor
    from tests.test_predictor_support import tiny_config

    predictor = Predictor(build_sam(tiny_config()).eval(), device="cpu")
    image = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    predictor.set_image(image[..., ::-1], image_format="BGR")
    predictor.set_image(image)  # the same pixels once the channels are read right: cached
    assert (predictor.cache_info["misses"], predictor.cache_info["hits"]) == (1, 1)


def test_an_unreadable_file_says_so_not_corrupt(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "locked.png"
    Image.fromarray(RGB8).save(path)
    real_open = Image.open

    def denied(fp, *args, **kwargs):
        if str(fp) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageError, match="could not be read: Permission denied$"):
        to_rgb(path)
