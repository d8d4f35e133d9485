"""EmbeddingStore: image embeddings (and the images) in a zarr v3 group on any fsspec URL.

The store is what `precompute` fills and what `Predictor(store=...)` and ``Dataset(store)``
read. Layout (every node a zarr v3 group or array, so any zarr tool can read it)::

    <url>/zarr.json                   attributes["sam_widget"]: model, weights, precision, dtype
    <url>/images/<key>/               one record per image content; <key> = content digest + size
        embedding                     (256, 64, 64), one chunk; SAM 2.1 adds its named feature maps
        image                         the image: the file's bytes (uint8, 1-D) or RGB (H, W, 3)
        zarr.json                     attributes: sizes, feature names, "complete" (written last),
                                      and, with everything=True, the automatic masks (COCO RLE)
    <url>/commits/<id>/zarr.json      attributes["entries"]: images committed by one driver batch
    <url>/manifest/zarr.json          attributes["sources"]: the order of the last precompute

Who writes what, so that concurrent workers never corrupt it: a worker writes only the records
of the images it encodes (a record is complete once its attributes say so, and writing the same
image twice writes the same bytes); only the driver writes commits, each a new group under a
unique name, never rewritten. An image belongs to the dataset once a commit names it, so a run
killed at any point loses nothing committed and a re-run does only what is missing.

Precision: embeddings are stored float32 with a lossless compressor (blosc-zstd, byte shuffle)
by default, bit for bit what the encoder produced. ``dtype="float16"`` halves the size; its
masks agree with float32's at IoU 0.99993 on average, 0.9998 at worst (vit_b with random weights,
192 masks from single-point prompts; benchmarks/bench_precompute.py measures any checkpoint).

A store is bound to one model: its name and the digest of the weights that make the embedding
(the image encoder and the pixel normalisation; a fine-tuned decoder keeps the store valid).
Opening it with another model raises `StoreMismatchError`.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = 1  # version of the layout above
DTYPES = ("float32", "float16")
_ATTR = "sam_widget"  # the root group's attribute holding the store's identity


class StoreMismatchError(ValueError):
    """The store holds something else than asked for: another model, or changed images."""


# --------------------------------------------------------------------------------------------
# Identities: of an image's content, and of the weights that make its embedding
# --------------------------------------------------------------------------------------------


def content_digest(rgb: np.ndarray) -> str:
    """The hex digest `Predictor` keys its cache with: blake2b-160 of the RGB uint8 bytes."""
    return hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=20).hexdigest()


def record_key(digest: str, shape: Iterable[int]) -> str:
    """The record name of an image: its content digest and size, e.g. ``"3fa9...-480x640"``."""
    h, w = tuple(shape)[:2]
    return f"{digest}-{int(h)}x{int(w)}"


def image_key(rgb: np.ndarray) -> str:
    """The record name of an RGB uint8 (H, W, 3) image."""
    return record_key(content_digest(rgb), rgb.shape)


_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_digest(model: Any) -> str:
    """SHA-256 (hex) of what an embedding depends on: the image encoder's weights and buffers,
    the pixel mean/std and the input size. Memoized per model until its parameters change."""
    import torch

    encoder = model.image_encoder
    tensors = [("image_encoder." + k, v) for k, v in encoder.state_dict().items()]
    for name in ("pixel_mean", "pixel_std"):
        if hasattr(model, name):
            tensors.append((name, getattr(model, name)))
    version = tuple(int(t._version) for _, t in tensors)  # bumped by in-place updates
    cached = _DIGESTS.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    h = hashlib.sha256()
    h.update(str(getattr(encoder, "img_size", "")).encode())
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    digest = h.hexdigest()
    _DIGESTS[model] = (version, digest)
    return digest


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One stored image: its feature maps (name -> array without the batch axis) and sizes."""

    key: str
    features: dict[str, np.ndarray]
    input_size: tuple[int, int]  # (h, w) of the image resized into the model's square input
    original_size: tuple[int, int]  # (H, W) of the image
    attrs: dict[str, Any] = field(default_factory=dict, repr=False)


def _zarr():
    try:
        import zarr
    except ImportError as e:  # pragma: no cover - a dependency on Python >= 3.11
        raise ImportError(
            "the embedding store needs zarr 3 (Python 3.11 or newer): pip install 'zarr>=3' fsspec"
        ) from e
    return zarr


def _have_zarr() -> bool:
    try:
        import zarr
    except ImportError:
        return False
    return int(zarr.__version__.split(".")[0]) >= 3


def _compressor(dtype: str):
    from zarr.codecs import BloscCodec

    size = np.dtype(dtype).itemsize
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=size)


def _missing(exc: Exception) -> bool:
    zarr = _zarr()
    return isinstance(exc, (KeyError, FileNotFoundError, zarr.errors.NodeNotFoundError))


class EmbeddingStore:
    """A zarr v3 group of image embeddings at ``url`` (a folder, ``memory://...``, ``s3://...``:
    anything fsspec opens; ``storage_options`` go to fsspec). See the module docstring.

    ``EmbeddingStore(url)`` opens (or, for writing, will create) the store; ``bind(...)``
    records or checks the model. ``entries()`` lists committed images in dataset order,
    ``read(key)`` returns a `Record` or None, ``image(entry)`` the RGB image.
    """

    def __init__(self, url: str | os.PathLike[str], *, storage_options: dict | None = None):
        self.url = os.fspath(url)
        self.storage_options = storage_options
        zarr = _zarr()
        kwargs = {"storage_options": storage_options} if storage_options else {}
        if "://" in self.url and not self.url.startswith("file://"):
            from zarr.storage import FsspecStore

            self._store = FsspecStore.from_url(self.url, read_only=False, **kwargs)
        else:
            from zarr.storage import LocalStore

            path = self.url[len("file://") :] if self.url.startswith("file://") else self.url
            self._store = LocalStore(os.path.expanduser(path))
        self._root = zarr.open_group(self._store, mode="a", zarr_format=3)
        self._entries: list[dict] | None = None

    def __repr__(self) -> str:
        info = self.info
        what = f"{info['model']}, {info['dtype']}" if info else "empty"
        return f"EmbeddingStore({self.url!r}, {what})"

    def __getstate__(self) -> dict:  # workers reopen the store from its URL
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], storage_options=state["storage_options"])

    @property
    def is_local(self) -> bool:
        """Whether other processes can open it (memory:// lives in this process only)."""
        return not self.url.startswith("memory://")

    # ---- identity ---------------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any] | None:
        """{"format", "model", "weights", "precision", "dtype"}, or None for a new store."""
        zarr = _zarr()
        self._root = zarr.open_group(self._store, mode="a", zarr_format=3)  # re-read attrs
        info = self._root.attrs.get(_ATTR)
        return dict(info) if info else None

    def bind(self, model: str, weights: str, precision: str, dtype: str = "float32") -> dict:
        """Record the model in a new store, or check that an existing store holds its
        embeddings. Returns the store's info. Raises `StoreMismatchError` on another model;
        ``dtype`` and ``precision`` of an existing store win (a re-run keeps them)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        info = self.info
        if info is None:
            info = {
                "format": FORMAT,
                "model": model,
                "weights": weights,
                "precision": precision,
                "dtype": dtype,
            }
            self._root.attrs[_ATTR] = info
            return info
        self.check(model, weights)
        return info

    def check(self, model: str, weights: str) -> None:
        """Raise `StoreMismatchError` unless the store was made by this model's weights."""
        info = self.info
        if info is None:
            return
        if info.get("format") != FORMAT:
            raise StoreMismatchError(
                f"the store at {self.url} has layout version {info.get('format')}; this "
                f"sam-widget reads version {FORMAT}: precompute into a new store"
            )
        if info["model"] != model or info["weights"] != weights:
            raise StoreMismatchError(
                f"the store at {self.url} holds embeddings of model {info['model']!r} (weights "
                f"{info['weights'][:12]}), not of {model!r} (weights {weights[:12]}); "
                "embeddings of different models cannot be mixed: use the store's model, or "
                "another store URL for this one"
            )

    # ---- records (workers) ------------------------------------------------------------------

    def read(self, key: str, *, features: bool = True) -> Record | None:
        """The complete record ``key``, or None if there is none (or it is unfinished)."""
        zarr = _zarr()
        try:
            group = zarr.open_group(self._store, path=f"images/{key}", mode="r", zarr_format=3)
        except Exception as e:
            if _missing(e):
                return None
            raise
        attrs = dict(group.attrs)
        if not attrs.get("complete"):
            return None
        arrays = {}
        if features:
            arrays = {name: group[name][...] for name in attrs["features"]}
        return Record(
            key=key,
            features=arrays,
            input_size=tuple(attrs["input_size"]),
            original_size=tuple(attrs["original_size"]),
            attrs=attrs,
        )

    def has(self, key: str) -> bool:
        """Whether a complete record ``key`` exists."""
        return self.read(key, features=False) is not None

    def write(
        self,
        key: str,
        features: Mapping[str, np.ndarray],
        *,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        image: np.ndarray | bytes | None = None,
        masks: list[dict] | None = None,
    ) -> None:
        """Write record ``key`` (its attributes last, marking it complete). Feature maps are
        stored in the store's dtype, one chunk each; ``image`` is the file's bytes or an RGB
        array; ``masks`` automatic-mask records with COCO RLE segmentations."""
        info = self.info
        if info is None:
            raise RuntimeError("bind the store to a model before writing records")
        dtype = info["dtype"]
        group = self._root.require_group(f"images/{key}")
        for name, array in features.items():
            array = np.ascontiguousarray(array, dtype=dtype)
            stored = group.create_array(
                name,
                shape=array.shape,
                dtype=dtype,
                chunks=array.shape,
                compressors=_compressor(dtype),
                overwrite=True,
            )
            stored[...] = array
        image_format = None
        if image is not None:
            if isinstance(image, (bytes, bytearray, memoryview)):
                data, image_format = np.frombuffer(bytes(image), dtype=np.uint8), "file"
            else:
                data, image_format = np.ascontiguousarray(image, dtype=np.uint8), "rgb"
            stored = group.create_array(
                "image",
                shape=data.shape,
                dtype="uint8",
                chunks=data.shape,
                compressors=_compressor("uint8") if image_format == "rgb" else None,
                overwrite=True,
            )
            stored[...] = data
        attrs = {
            "features": list(features),
            "input_size": [int(v) for v in input_size],
            "original_size": [int(v) for v in original_size],
            "image": image_format,
            "written": time.time(),
        }
        if masks is not None:
            attrs["masks"] = masks
        attrs["complete"] = True
        group.attrs.put(attrs)  # one write of the group's zarr.json: the record now counts

    def image(self, entry: Mapping[str, Any] | str) -> np.ndarray:
        """The stored image of an entry (or record key) as RGB uint8 (H, W, 3)."""
        from PIL import Image

        from .images import to_rgb

        key = entry if isinstance(entry, str) else entry["key"]
        record = self.read(key, features=False)
        if record is None or not record.attrs.get("image"):
            raise KeyError(f"the store at {self.url} holds no image {key}")
        data = self._root[f"images/{key}/image"][...]
        if record.attrs["image"] == "rgb":
            return data
        with Image.open(io.BytesIO(data.tobytes())) as opened:
            opened.load()
            return to_rgb(opened)

    def masks(self, entry: Mapping[str, Any] | str) -> list[dict] | None:
        """The automatic masks stored with ``precompute(..., everything=True)`` (records as
        `MaskGenerator` returns with ``output_mode="coco_rle"``), or None if none were."""
        key = entry if isinstance(entry, str) else entry["key"]
        record = self.read(key, features=False)
        return None if record is None else record.attrs.get("masks")

    def keys(self) -> list[str]:
        """Names of all complete records (committed or not)."""
        try:
            images = self._root["images"]
        except KeyError:
            return []
        return sorted(k for k in images.group_keys() if self.has(k))

    # ---- the index (the driver) -------------------------------------------------------------

    def commit(self, entries: list[dict]) -> None:
        """Add ``entries`` ({"key", "source", "name", ...}) to the index, as one new group."""
        if not entries:
            return
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._root.create_group(f"commits/{name}", attributes={"entries": list(entries)})
        if self._entries is not None:
            self._entries = None  # re-read (and re-order) on next use

    def set_manifest(self, sources: list[str]) -> None:
        """The order of the images as the last precompute was given them (the driver)."""
        self._root.create_group("manifest", attributes={"sources": list(sources)}, overwrite=True)
        self._entries = None

    def entries(self, *, refresh: bool = False) -> list[dict]:
        """Committed images, each once ({"key", "source", "name", ...}), in the order of the
        last precompute's inputs, then any others in commit order."""
        if self._entries is not None and not refresh:
            return self._entries
        try:
            commits = self._root["commits"]
            groups = sorted(commits.groups(), key=lambda kv: kv[0])
        except KeyError:
            groups = []
        seen: dict[str, dict] = {}
        for _, group in groups:
            for entry in group.attrs.get("entries", []):
                seen[entry["source"]] = entry  # a later commit (e.g. adding masks) wins
        try:
            manifest = list(self._root["manifest"].attrs.get("sources", []))
        except KeyError:
            manifest = []
        position = {source: i for i, source in enumerate(manifest)}
        ordered = sorted(
            enumerate(seen.values()),
            key=lambda ie: (position.get(ie[1]["source"], len(position)), ie[0]),
        )
        self._entries = [entry for _, entry in ordered]
        return self._entries

    def __len__(self) -> int:
        return len(self.entries())


def open_store(store: Any, storage_options: dict | None = None) -> EmbeddingStore:
    """An `EmbeddingStore` from a store, a URL or path, or a Dataset over a store."""
    if isinstance(store, EmbeddingStore):
        return store
    source = getattr(store, "source", None)  # sw.Dataset over a store
    if isinstance(source, StoreSource):
        return source.store
    if isinstance(store, (str, os.PathLike)):
        return EmbeddingStore(store, storage_options=storage_options)
    raise TypeError(
        f"store must be an EmbeddingStore, a URL or folder, or a Dataset over a store; "
        f"got {type(store).__name__}"
    )


def looks_like_store(value: Any) -> bool:
    """Whether ``Dataset(value)`` means an embedding store: an `EmbeddingStore`, a URL where a
    zarr group is (not an image file's URL, a glob or a folder of images), or a folder holding
    a zarr group made by sam-widget."""
    if isinstance(value, EmbeddingStore):
        return True
    if not isinstance(value, (str, os.PathLike)):
        return False
    text = os.fspath(value)
    if "://" in text and not text.startswith("file://"):
        from .dataset import _url_glob, url_is_folder_or_glob
        from .images import url_filesystem

        if _url_glob(text) or not url_is_folder_or_glob(text):  # a glob, an image file
            return False
        fs, path = url_filesystem(text)  # one look: is there a zarr group?
        return fs.isfile(f"{path.rstrip('/')}/zarr.json")
    path = text[len("file://") :] if text.startswith("file://") else text
    meta = os.path.join(os.path.expanduser(path), "zarr.json")
    if not os.path.isfile(meta):
        return False
    try:
        import json

        with open(meta, encoding="utf-8") as f:
            return _ATTR in json.load(f).get("attributes", {})
    except (OSError, ValueError):
        return False


class StoreSource:
    """The committed images of a store as a Dataset source (``sw.Dataset(store_or_url)``)."""

    def __init__(self, store: Any) -> None:
        self.store = open_store(store)
        if self.store.info is None:
            raise ValueError(
                f"{self.store.url} is not an embedding store (no sam-widget zarr group there): "
                "make one with sw.precompute(images, store_url, model=...)"
            )
        self._entries = [e for e in self.store.entries() if e.get("image")]

    def __len__(self) -> int:
        return len(self._entries)

    def name(self, index: int) -> str:
        return self._entries[index]["name"]

    def read(self, index: int) -> np.ndarray:
        return self.store.image(self._entries[index])

    def entry(self, index: int) -> dict:
        return self._entries[index]

    def masks(self, index: int) -> list[dict] | None:
        """Image ``index``'s automatic masks (``precompute(..., everything=True)``), or None."""
        return self.store.masks(self._entries[index])


# --------------------------------------------------------------------------------------------
# The Predictor's side: a store to read before encoding, and the bounded disk cache
# --------------------------------------------------------------------------------------------

DISK_CACHE_ENV = "SAM_WIDGET_DISK_CACHE"  # "0" turns the disk cache off; a folder moves it
DISK_CACHE_BYTES = 2 * 2**30  # default bound of the disk cache (all models together)


def user_cache_dir() -> str:
    """sam-widget's folder in the user's cache: $XDG_CACHE_HOME or ~/.cache on Linux,
    ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows."""
    import sys

    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "sam-widget")


class DiskCache:
    """Recent embeddings on local disk, one store per model, bounded in bytes (all models
    together): the least recently used records go first. Records are read and written as in
    any `EmbeddingStore`; a read refreshes the record's time."""

    def __init__(self, folder: str, max_bytes: int = DISK_CACHE_BYTES) -> None:
        self.folder = os.path.expanduser(folder)
        self.max_bytes = int(max_bytes)
        self._used: int | None = None  # bytes on disk, measured at the first write

    def store_for(self, model: str, weights: str, precision: str) -> EmbeddingStore:
        store = EmbeddingStore(
            os.path.join(self.folder, f"{model}-{weights[:16]}-{precision}.zarr")
        )
        store.bind(model, weights, precision, "float32")
        return store

    def touch(self, store: EmbeddingStore, key: str) -> None:
        try:
            os.utime(os.path.join(store.url, "images", key, "zarr.json"))
        except OSError:
            pass

    def added(self, store: EmbeddingStore, key: str) -> None:
        """Account for a new record; evict the oldest records while over the bound."""
        size = _folder_bytes(os.path.join(store.url, "images", key))
        if self._used is None:
            self._used = sum(size for _, size, _ in self._records())
        else:
            self._used += size
        if self._used <= self.max_bytes:
            return
        import shutil

        records = sorted(self._records(), key=lambda r: r[2])  # oldest first
        self._used = sum(size for _, size, _ in records)
        for path, size, _ in records:
            if self._used <= self.max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            self._used -= size

    def _records(self) -> list[tuple[str, int, float]]:
        """(folder, bytes, last use) of every record of every model."""
        out = []
        try:
            stores = os.listdir(self.folder)
        except OSError:
            return out
        for name in stores:
            images = os.path.join(self.folder, name, "images")
            try:
                keys = os.listdir(images)
            except OSError:
                continue
            for key in keys:
                path = os.path.join(images, key)
                if not os.path.isdir(path):
                    continue
                try:
                    used = os.stat(os.path.join(path, "zarr.json")).st_mtime
                except OSError:
                    used = 0.0
                out.append((path, _folder_bytes(path), used))
        return out


def _folder_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


class StoreHooks:
    """What `Predictor` asks before encoding (``load``) and tells after (``save``): its
    embedding store, then the disk cache. Keys are the Predictor's cache keys."""

    def __init__(self, predictor: Any, store: Any, disk_cache: bool | str | None) -> None:
        self.predictor = predictor
        self.hits = 0
        self.stores: list[EmbeddingStore] = []  # read in order; new embeddings go to the first
        if store is not None:
            self.attach(store)
        if disk_cache is None:
            env = os.environ.get(DISK_CACHE_ENV, "").strip()
            disk_cache = False if env.lower() in ("0", "false", "off", "no") else (env or True)
        folder = None
        if disk_cache is True and not _have_zarr():
            disk_cache = False  # Python 3.10 (no zarr 3): the default cache is simply off
        if disk_cache is True:
            folder = os.path.join(user_cache_dir(), "embeddings")
        elif disk_cache:
            folder = os.fspath(disk_cache)
        self.disk = DiskCache(folder) if folder else None
        self._disk_store: tuple[str, EmbeddingStore] | None = None

    def attach(self, store: Any) -> EmbeddingStore:
        """Read (and, for the first one, write) embeddings through ``store`` too; raises
        `StoreMismatchError` if it holds another model's embeddings."""
        store = open_store(store)
        if any(s.url == store.url for s in self.stores):
            return store
        store.bind(self.predictor.name, weights_digest(self.predictor.model), self._precision)
        self.stores.append(store)
        return store

    @property
    def _precision(self) -> str:
        return str(self.predictor.dtype).replace("torch.", "")

    def _disk(self) -> EmbeddingStore | None:
        if self.disk is None:
            return None
        digest = weights_digest(self.predictor.model)  # memoized; changes if weights change
        if self._disk_store is None or self._disk_store[0] != digest:
            try:
                store = self.disk.store_for(self.predictor.name, digest, self._precision)
            except OSError:  # a read-only home: no disk cache, no fuss
                self.disk = None
                return None
            self._disk_store = (digest, store)
        return self._disk_store[1]

    def load(self, cache_key: tuple) -> Any:
        """The image state for ``cache_key`` from the store or the disk cache, or None."""
        if not self.stores and self.disk is None:
            return None
        key = record_key(cache_key[0], cache_key[1])
        for store in self.stores:
            record = store.read(key)
            if record is not None:
                self.hits += 1
                return self.predictor._from_record(record)
        disk = self._disk()
        if disk is not None:
            record = disk.read(key)
            if record is not None:
                self.disk.touch(disk, key)
                self.hits += 1
                return self.predictor._from_record(record)
        return None

    def save(self, cache_key: tuple, state: Any) -> None:
        """Write a newly encoded image's state to the store and the disk cache."""
        if not self.stores and self.disk is None:
            return
        key = record_key(cache_key[0], cache_key[1])
        features = self.predictor._features(state)
        sizes = {"input_size": state.input_size, "original_size": state.original_size}
        if self.stores:
            self.stores[0].write(key, features, **sizes)
        disk = self._disk()
        if disk is not None:
            try:
                disk.write(key, features, **sizes)
                self.disk.added(disk, key)
            except OSError:  # a full or read-only disk: the cache is only a cache
                pass
