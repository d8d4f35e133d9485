"""Dataset: an ordered collection of images to annotate (a folder, a glob, a list, ...).

``sw.Dataset(source)`` gives ``len(ds)``, ``ds[i]`` (RGB uint8 via ``images.to_rgb``) and
``ds.name(i)`` (the file name, or "image-<i>" for an in-memory array). Images are read lazily:
opening a folder lists its file names and nothing more, so 10,000 photos open at once.

Where the images come from is an ``ImageSource`` (``len``, ``name(i)``, ``read(i)``, and
optionally ``masks(i)``: stored automatic masks); a folder, a glob and a list of paths are a
`PathSource`, a list of arrays an `ArraySource`. Another source (an embedding store) plugs in by
implementing the same methods and either being passed to ``Dataset`` directly or registered
with `register_source`.
"""

from __future__ import annotations

import glob as _glob
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .images import ImageError, is_url, to_rgb

__all__ = ["Dataset", "ImageSource", "PathSource", "ArraySource", "IMAGE_SUFFIXES",
           "register_source"]

#: file name endings taken as images when a folder is listed (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")


@runtime_checkable
class ImageSource(Protocol):
    """Where a Dataset's images come from: a fixed, ordered list of images."""

    def __len__(self) -> int: ...

    def name(self, index: int) -> str:
        """A short, stable name of image ``index`` (the file name), unique in the source."""
        ...

    def read(self, index: int) -> Any:
        """Image ``index`` in any form ``images.to_rgb`` takes (path, array, PIL image)."""
        ...


class PathSource:
    """Image files given by path or URL (read through fsspec), in the given order (a folder or
    glob sorts them by name)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths: list[Any] = [p if is_url(p) else Path(p) for p in paths]
        names = [_file_name(p) for p in self.paths]
        if len(set(names)) != len(names):  # files from several folders: keep the names unique
            parts = [(p if is_url(p) else Path(os.path.abspath(p)).as_posix()).split("/")
                     for p in self.paths]
            common = 0
            while all(len(x) > common + 1 and x[common] == parts[0][common] for x in parts):
                common += 1
            names = ["/".join(x[common:]) for x in parts]
        self._names = names

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self._names[index]

    def read(self, index: int) -> Any:
        return self.paths[index]


def _file_name(path: Any) -> str:
    """A path's file name; a URL's last part (without an http query)."""
    if not is_url(path):
        return Path(path).name
    if path.lower().startswith(("http://", "https://")):
        path = path.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/").rsplit("/", 1)[-1]


class ArraySource:
    """In-memory images (numpy arrays, PIL images, tensors), named "image-<i>"."""

    def __init__(self, images: Sequence[Any], names: Sequence[str] | None = None) -> None:
        self.images = list(images)
        if names is not None and len(names) != len(self.images):
            raise ValueError(f"names has {len(names)} entries for {len(self.images)} images")
        self._names = list(names) if names is not None else [
            f"image-{i}" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return self._names[index]

    def read(self, index: int) -> Any:
        return self.images[index]


#: (test, factory): a source a Dataset recognises besides paths and arrays (e.g. a store URL)
_SOURCE_FACTORIES: list[tuple[Callable[[Any], bool], Callable[[Any], ImageSource]]] = []


def register_source(test: Callable[[Any], bool], factory: Callable[[Any], ImageSource]) -> None:
    """Teach ``Dataset(x)`` a new kind of source: when ``test(x)`` is true, the images come from
    ``factory(x)`` (checked before folders, globs and lists)."""
    _SOURCE_FACTORIES.insert(0, (test, factory))


def _natural_key(name: str) -> tuple:
    """Sort "img2" before "img10": digits compare as numbers, the rest case-insensitively."""
    import re

    return tuple(int(part) if part.isdigit() else part.lower()
                 for part in re.split(r"(\d+)", name))


def _list_files(files: Iterable[tuple[Any, str, bool, Callable[[], int]]],
                what: str) -> PathSource:
    """The image files among ``files``: (path or URL, file name, is a folder, its size)."""
    images, skipped = [], []
    for item, name, is_dir, size in files:
        if name.startswith(".") or is_dir:
            continue
        if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{name} (not an image file type)")
        elif size() == 0:
            skipped.append(f"{name} (empty file)")
        else:
            images.append(item)
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if
                                           len(skipped) > 10 else "")
        warnings.warn(f"{what}: skipped {len(skipped)} file(s) that cannot be read as images: "
                      f"{shown}", stacklevel=4)
    if not images:
        raise ValueError(f"{what} holds no image files (looked for "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    return PathSource(images)


def _local_files(paths: Iterable[Path]) -> Iterator[tuple[Any, str, bool, Callable[[], int]]]:
    for p in paths:
        yield p, p.name, p.is_dir(), lambda p=p: p.stat().st_size


def _url_glob(url: str) -> bool:
    """Whether a URL is a glob pattern (never an http(s) one: "?" starts its query)."""
    protocol, rest = url.split("://", 1)
    return protocol.lower() not in ("http", "https") and _glob.has_magic(rest)


def url_is_folder_or_glob(url: str) -> bool:
    """Whether a URL means several images (a glob, or not an image file's name)."""
    return _url_glob(url) or not _file_name(url).lower().endswith(IMAGE_SUFFIXES)


def _url_source(url: str) -> ImageSource:
    """Image files at a URL (fsspec): one file, a folder's files sorted by name, or a glob's
    matches sorted by path."""
    from .images import url_filesystem

    fs, path = url_filesystem(url)
    protocol, rest = url.split("://", 1)

    def full(info: dict) -> str:  # the URL of a listed file, in the form the user wrote
        name = info["name"]
        if "://" in name:
            return name
        return fs.unstrip_protocol(name) if rest.startswith("/") or protocol == "file" else (
            f"{protocol}://{name.lstrip('/')}")

    def files(infos: Iterable[dict]) -> Iterator[tuple[Any, str, bool, Callable[[], int]]]:
        for info in infos:
            yield (full(info), _file_name(full(info)), info.get("type") == "directory",
                   lambda info=info: int(info.get("size") or 0))

    if _url_glob(url):
        found = sorted(fs.glob(path, detail=True).values(), key=lambda i: _natural_key(i["name"]))
        if not found:
            raise ValueError(f"no files match {url!r}")
        return _list_files(files(found), f"pattern {url!r}")
    if fs.isdir(path):
        found = sorted(fs.ls(path, detail=True), key=lambda i: _natural_key(_file_name(full(i))))
        return _list_files(files(found), f"folder {url!r}")
    if fs.isfile(path):
        return PathSource([url])
    raise ValueError(f"nothing at {url!r}: give an image file's URL, a folder's or a glob "
                     "pattern ('s3://bucket/photos/*.jpg')")


def _source_for(source: Any) -> ImageSource:
    for test, factory in _SOURCE_FACTORIES:
        if test(source):
            return factory(source)
    if isinstance(source, Dataset):
        return source.source
    if isinstance(source, ImageSource) and not isinstance(source, (str, bytes, list, tuple)):
        return source
    if is_url(source):
        return _url_source(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.iterdir(), key=lambda p: _natural_key(p.name))
            return _list_files(_local_files(files), f"folder {os.fspath(path)!r}")
        if path.is_file():
            return PathSource([path])
        pattern = os.fspath(source)
        if _glob.has_magic(pattern):
            files = sorted((Path(p) for p in _glob.glob(pattern, recursive=True)),
                           key=lambda p: _natural_key(os.fspath(p)))
            if not files:
                raise ValueError(f"no files match {pattern!r}")
            return _list_files(_local_files(files), f"pattern {pattern!r}")
        raise ValueError(f"{pattern!r} is neither a folder, an image file nor a glob pattern "
                         "that matches files")
    if isinstance(source, np.ndarray):
        if source.ndim == 4:  # a stack of images (N, H, W, C)
            return ArraySource(list(source))
        raise ValueError("a single array is one image: pass it to SamWidget directly, or a "
                         "list of arrays (or an (N, H, W, C) stack) for a Dataset")
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("the list of images is empty")
        if all(isinstance(s, (str, os.PathLike)) for s in source):
            return PathSource(source)
        if any(isinstance(s, (str, os.PathLike)) for s in source):
            return ArraySource([s if is_url(s) else Path(s) if isinstance(s, (str, os.PathLike))
                                else s for s in source],
                               names=[_file_name(s) if isinstance(s, (str, os.PathLike))
                                      else f"image-{i}" for i, s in enumerate(source)])
        return ArraySource(source)
    raise TypeError(f"cannot make a Dataset from {type(source).__name__}: pass a folder, a glob "
                    "pattern, a list of paths or arrays, or an ImageSource")


def is_dataset_source(value: Any) -> bool:
    """Whether ``SamWidget(value)`` means many images rather than one."""
    if isinstance(value, (Dataset, ImageSource)) and not isinstance(value, (str, list, tuple)):
        return True
    if any(test(value) for test, _ in _SOURCE_FACTORIES):
        return True
    if is_url(value):  # one image file, else a folder, a glob or a store
        return url_is_folder_or_glob(value)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        return path.is_dir() or (not path.exists() and _glob.has_magic(os.fspath(value)))
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and not all(isinstance(v, (int, float, np.number)) for v in value)
    return isinstance(value, np.ndarray) and value.ndim == 4


class Dataset:
    """An ordered collection of images, read lazily (see the module docstring).

    ``Dataset("photos/")`` (image files sorted by name; other files are listed in a warning),
    ``Dataset("photos/*.jpg")``, ``Dataset([path, ...])``, ``Dataset([array, ...])`` or any
    `ImageSource`. ``ds[i]`` raises ``images.ImageError`` for an unreadable file, naming it.
    """

    def __init__(self, source: Any) -> None:
        self.source: ImageSource = _source_for(source)

    def __len__(self) -> int:
        return len(self.source)

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"a dataset index must be an int, got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"image index {index} is out of range for {n} images")
        return i

    def __getitem__(self, index: int) -> np.ndarray:
        i = self._index(index)
        try:
            return to_rgb(self.source.read(i))
        except ImageError as exc:
            raise ImageError(f"image {i} ({self.name(i)}): {exc}") from None

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def size(self, index: int) -> tuple[int, int]:
        """(height, width) of image ``index`` as ``ds[index]`` gives it; for a file only its
        header is read (EXIF orientations 5-8 swap the two)."""
        i = self._index(index)
        item = self.source.read(i)
        if isinstance(item, (str, os.PathLike)):
            from PIL import Image

            try:
                with Image.open(item) as im:
                    w, h = im.size
                    turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                return (w, h) if turned else (h, w)
            except Exception:  # noqa: BLE001 - let the full read say what is wrong
                pass
        return self[i].shape[:2]

    def masks(self, index: int) -> list[dict] | None:
        """Image ``index``'s stored automatic masks (a store filled by ``sw.precompute(...,
        everything=True)``: `MaskGenerator` records with COCO RLE segmentations), or None when
        its source keeps none (an optional ``masks(i)`` of the `ImageSource`)."""
        i = self._index(index)
        masks = getattr(self.source, "masks", None)
        return None if masks is None else masks(i)

    def name(self, index: int) -> str:
        """The image's file name (relative path when names would clash), or "image-<i>"."""
        return self.source.name(self._index(index))

    @property
    def names(self) -> list[str]:
        return [self.source.name(i) for i in range(len(self))]

    def __repr__(self) -> str:
        n = len(self)
        first = f", first {self.name(0)!r}" if n else ""
        return f"Dataset({n} images{first})"


def _is_store(value: Any) -> bool:
    from .store import looks_like_store

    return looks_like_store(value)


def _store_source(value: Any) -> ImageSource:
    from .store import StoreSource

    return StoreSource(value)


# an EmbeddingStore, or its URL / folder: the images committed to it (see store.py)
register_source(_is_store, _store_source)
