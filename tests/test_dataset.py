"""sw.Dataset: folders, globs, lists of paths or arrays; lazy reading; names; bad files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

import sam_widget as sw
from sam_widget.dataset import ArraySource, register_source
from sam_widget.images import ImageError


def write(path, value: int, size=(12, 8)) -> None:
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    for name, value in [("b.png", 20), ("a.jpg", 10), ("img10.png", 40), ("img2.png", 30)]:
        write(tmp_path / name, value)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    return tmp_path


def test_a_folder_is_its_image_files_sorted_by_name_and_the_rest_is_warned_about(folder):
    with pytest.warns(UserWarning, match=r"skipped 2 file.*empty\.png.*notes\.txt"):
        ds = sw.Dataset(folder)
    assert len(ds) == 4
    assert ds.names == ["a.jpg", "b.png", "img2.png", "img10.png"]  # numbers sort as numbers
    assert ds.name(-1) == "img10.png"
    assert ds.size(2) == (8, 12)
    img = ds[2]
    assert img.dtype == np.uint8 and img.shape == (8, 12, 3) and (img == 30).all()
    assert "4 images" in repr(ds)


def test_a_glob_and_a_list_of_paths(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = sw.Dataset(str(folder / "img*.png"))
    assert ds.names == ["img2.png", "img10.png"]
    ds = sw.Dataset([folder / "b.png", str(folder / "a.jpg")])
    assert ds.names == ["b.png", "a.jpg"]  # a list keeps its order
    assert ds[0][0, 0, 0] == 20


def test_arrays_and_a_stack_are_named_by_position():
    gray = np.full((5, 6), 7, np.uint8)
    ds = sw.Dataset([gray, np.zeros((4, 4, 4), np.float32)])
    assert ds.names == ["image-0", "image-1"]
    assert ds[0].shape == (5, 6, 3) and ds[1].shape == (4, 4, 3)
    assert len(sw.Dataset(np.zeros((3, 4, 4, 3), np.uint8))) == 3


def test_same_file_names_in_two_folders_stay_apart(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        write(tmp_path / sub / "im.png", 1)
    ds = sw.Dataset([tmp_path / "x" / "im.png", tmp_path / "y" / "im.png"])
    assert ds.names == ["x/im.png", "y/im.png"]


def test_reading_is_lazy_and_an_unreadable_file_fails_alone_naming_it(tmp_path):
    write(tmp_path / "good.png", 5)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    ds = sw.Dataset(tmp_path)  # opening reads no pixels, so the broken file is not noticed yet
    assert ds.names == ["broken.png", "good.png"]
    with pytest.raises(ImageError, match=r"image 0 \(broken\.png\)"):
        ds[0]
    assert (ds[1] == 5).all()


def test_a_big_folder_opens_without_reading_images(tmp_path, monkeypatch):
    from sam_widget import dataset

    write(tmp_path / "one.png", 3)
    payload = (tmp_path / "one.png").read_bytes()
    for i in range(500):
        (tmp_path / f"f{i:05d}.png").write_bytes(payload)
    reads = []
    monkeypatch.setattr(dataset, "to_rgb", lambda x: reads.append(x) or np.zeros((1, 1, 3)))
    ds = sw.Dataset(tmp_path)
    assert len(ds) == 501 and reads == []
    ds[7]
    assert reads == [tmp_path / "f00007.png"]


@pytest.mark.parametrize("bad, error, match", [
    ("no/such/folder", ValueError, "neither a folder"),
    ("no/such/*.png", ValueError, "no files match"),
    ([], ValueError, "empty"),
    (42, TypeError, "cannot make a Dataset from int"),
    (np.zeros((4, 4, 3)), ValueError, "single array is one image"),
])
def test_bad_sources_are_clear(bad, error, match):
    with pytest.raises(error, match=match):
        sw.Dataset(bad)


def test_an_empty_folder_says_what_it_looked_for(tmp_path):
    with pytest.raises(ValueError, match=r"holds no image files.*\.png"):
        sw.Dataset(tmp_path)


def test_index_errors_name_the_range():
    ds = sw.Dataset([np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(IndexError, match="out of range for 1 images"):
        ds[3]
    with pytest.raises(TypeError, match="must be an int"):
        ds["0"]


def test_other_sources_plug_in_by_protocol_and_registration():
    class Doubled(ArraySource):
        pass

    src = Doubled([np.zeros((2, 2, 3), np.uint8)], names=["only"])
    assert sw.Dataset(src).names == ["only"]
    marker = object()
    register_source(lambda x: x is marker, lambda x: ArraySource([np.ones((3, 3))], ["m"]))
    try:
        assert sw.Dataset(marker).names == ["m"]
    finally:
        from sam_widget import dataset

        dataset._SOURCE_FACTORIES.pop(0)


@pytest.fixture
def memory_photos():
    """Image files in fsspec's memory filesystem (one JPEG turned by EXIF), removed after."""
    import io

    import fsspec

    fs = fsspec.filesystem("memory")
    files = {}
    for name, value in [("b.png", 20), ("a.jpg", 10), ("img10.png", 40), ("img2.png", 30)]:
        buf = io.BytesIO()
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        exif = Image.Exif()
        exif[0x0112] = 6 if fmt == "JPEG" else 1  # the JPEG is turned 90 degrees
        Image.fromarray(np.full((8, 12, 3), value, np.uint8)).save(buf, fmt, exif=exif)
        files[name] = buf.getvalue()
        fs.pipe(f"/photos/{name}", files[name])
    fs.pipe("/photos/notes.txt", b"not an image")
    fs.pipe("/photos/sub/c.png", files["b.png"])
    yield files
    fs.rm("/photos", recursive=True)


def test_image_urls_are_read_through_fsspec_like_files(memory_photos):
    """A list of URLs, a glob URL and a folder URL; names are the file names; pixels are
    what to_rgb gives for the same file's bytes (EXIF applied)."""
    urls = ["memory://photos/img2.png", "memory://photos/a.jpg"]
    ds = sw.Dataset(urls)
    assert ds.names == ["img2.png", "a.jpg"]
    assert (ds[0] == 30).all() and ds[0].shape == (8, 12, 3)
    np.testing.assert_array_equal(ds[1], sw.images.to_rgb(memory_photos["a.jpg"]))
    assert ds[1].shape == (12, 8, 3) and ds.size(1) == (12, 8)  # EXIF: turned
    glob = sw.Dataset("memory://photos/*.png")
    assert glob.names == ["b.png", "img2.png", "img10.png"]
    assert [int(glob[i][0, 0, 0]) for i in range(3)] == [20, 30, 40]
    with pytest.warns(UserWarning, match=r"skipped 1 file.*notes\.txt"):
        folder = sw.Dataset("memory://photos/")
    assert folder.names == ["a.jpg", "b.png", "img2.png", "img10.png"]
    assert sw.Dataset(["memory://photos/b.png", "memory://photos/sub/c.png"]).names == [
        "b.png", "c.png"]
    clash = sw.Dataset(["memory://photos/b.png", "memory://x/b.png"])
    assert clash.names == ["photos/b.png", "x/b.png"]
    assert (sw.images.to_rgb("memory://photos/img10.png") == 40).all()
    with pytest.raises(ImageError, match="not found: memory://photos/nope.png"):
        sw.Dataset(["memory://photos/nope.png"])[0]
    with pytest.raises(ValueError, match="no files match"):
        sw.Dataset("memory://photos/*.tif")
    with pytest.raises(ValueError, match="nothing at 'memory://nowhere'"):
        sw.Dataset("memory://nowhere")


def test_a_url_whose_fsspec_backend_is_missing_names_the_package():
    from fsspec.registry import register_implementation

    register_implementation("samtestfs", "samwidget_missing_backend.FileSystem",
                            errtxt="Install samwidget_missing_backend", clobber=True)
    ds = sw.Dataset(["samtestfs://bucket/a.jpg", "samtestfs://bucket/b.jpg"])
    assert ds.names == ["a.jpg", "b.jpg"]  # listing URLs reads nothing
    with pytest.raises(ImportError, match=r"samtestfs:// URLs.*pip install "
                                          r"samwidget_missing_backend"):
        ds[0]
    with pytest.raises(ValueError, match="fsspec knows no nope:// filesystem"):
        sw.images.to_rgb("nope://a.png")
