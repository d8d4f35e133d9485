"""Dataset: an ordered collection of images to annotate (a folder, a glob, a list, ...).

``sw.Dataset(source)`` gives ``len(ds)``, ``ds[i]`` (RGB uint8 via ``images.to_rgb``) and
``ds.name(i)`` (the file name, or "image-<i>" for an in-memory array). Images are read lazily:
opening a folder lists its file names and nothing more, so 10,000 photos open at once.

Where the images come from is an ``ImageSource`` (``len``, ``name(i)``, ``read(i)``); a folder,
a glob and a list of paths are a `PathSource`, a list of arrays an `ArraySource`. Another source
(an embedding store, URLs) plugs in by implementing the same three methods and either being
passed to ``Dataset`` directly or registered with `register_source`.
"""

from __future__ import annotations

import glob as _glob
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .images import ImageError, to_rgb

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
    """Image files given by path, in the given order (a folder or glob sorts them by name)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = [Path(p) for p in paths]
        names = [p.name for p in self.paths]
        if len(set(names)) != len(names):  # files from several folders: keep the names unique
            common = Path(os.path.commonpath([os.path.abspath(p) for p in self.paths]))
            names = [Path(os.path.abspath(p)).relative_to(common).as_posix()
                     for p in self.paths]
        self._names = names

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self._names[index]

    def read(self, index: int) -> Any:
        return self.paths[index]


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


def _list_files(paths: list[Path], what: str) -> PathSource:
    images, skipped = [], []
    for p in paths:
        if p.name.startswith(".") or p.is_dir():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{p.name} (not an image file type)")
        elif p.stat().st_size == 0:
            skipped.append(f"{p.name} (empty file)")
        else:
            images.append(p)
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if
                                           len(skipped) > 10 else "")
        warnings.warn(f"{what}: skipped {len(skipped)} file(s) that cannot be read as images: "
                      f"{shown}", stacklevel=4)
    if not images:
        raise ValueError(f"{what} holds no image files (looked for "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    return PathSource(images)


def _source_for(source: Any) -> ImageSource:
    for test, factory in _SOURCE_FACTORIES:
        if test(source):
            return factory(source)
    if isinstance(source, Dataset):
        return source.source
    if isinstance(source, ImageSource) and not isinstance(source, (str, bytes, list, tuple)):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.iterdir(), key=lambda p: _natural_key(p.name))
            return _list_files(files, f"folder {os.fspath(path)!r}")
        if path.is_file():
            return PathSource([path])
        pattern = os.fspath(source)
        if _glob.has_magic(pattern):
            files = sorted((Path(p) for p in _glob.glob(pattern, recursive=True)),
                           key=lambda p: _natural_key(os.fspath(p)))
            if not files:
                raise ValueError(f"no files match {pattern!r}")
            return _list_files(files, f"pattern {pattern!r}")
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
            return ArraySource([Path(s) if isinstance(s, (str, os.PathLike)) else s
                                for s in source],
                               names=[Path(s).name if isinstance(s, (str, os.PathLike))
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
