"""``sw.precompute``: encode a dataset's images into an `EmbeddingStore`, here, on Ray, or on
any ``concurrent.futures.Executor``; resumable, each image committed exactly once. (The module
is not called precompute.py: importing it would replace the function ``sw.precompute``.)

    ds = sw.precompute("photos/", "embeddings.zarr", model="vit_b")            # this process
    ds = sw.precompute("photos/", "s3://bucket/emb.zarr", model=sam, engine="ray")
    ds = sw.precompute(images, url, model=sam, engine=ProcessPoolExecutor(4))

Every engine runs the same `EncodeWorker` on each image: read it with our own loader
(``images.to_rgb``, EXIF applied), encode it with a `Predictor` (its own model copy), optionally
run the `MaskGenerator`, and write the record into the store. Workers return a small entry per
image; the driver (this function) is the only one that commits entries to the store's index,
in batches, so a killed worker or driver loses nothing committed, and a re-run encodes only
the images that are not committed (a record a worker finished but the driver never committed
is reused, not encoded again).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, as_completed
from typing import Any

import numpy as np

from .store import EmbeddingStore, StoreMismatchError, image_key, open_store, weights_digest

ENGINES = ("local", "ray")
COMMIT_SECONDS = 5.0  # the driver commits at least this often while results arrive


# --------------------------------------------------------------------------------------------
# Reading images (in the workers)
# --------------------------------------------------------------------------------------------


def _stat(path: str) -> list[int] | None:
    """[size, mtime_ns] of a local file (how a re-run notices a changed file cheaply)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _read_file(path: str) -> bytes:
    from .images import is_url, read_url

    if is_url(path):
        return read_url(path)  # fsspec; a missing backend names the package to install
    with open(path, "rb") as f:
        return f.read()


def load_image(payload: Any) -> tuple[np.ndarray, bytes | None]:
    """(RGB uint8 image, the file's bytes or None) for a path or an in-memory image."""
    from PIL import Image

    from .images import ImageError, to_rgb

    if isinstance(payload, (str, os.PathLike)):
        path = os.fspath(payload)
        try:
            data = _read_file(path)
        except OSError as e:
            raise ImageError(f"{path} could not be read: {e}") from None
        try:
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
                return to_rgb(opened), data
        except ImageError as e:
            raise ImageError(f"{path}: {e}") from None
        except OSError as e:
            raise ImageError(f"{path} is not an image PIL can read: {e}") from None
    return to_rgb(payload), None


# --------------------------------------------------------------------------------------------
# The worker: one model, one store, any number of images
# --------------------------------------------------------------------------------------------


class EncodeWorker:
    """Encodes images into a store; the same code for every engine.

    ``model``: a SAM module (copied to the worker by the engine) or, in this process, a
    `Predictor`. ``__call__(task)`` takes {"image": path or array, "source", "name"} and
    returns the entry the driver commits. ``encodes`` counts encoder runs.
    """

    def __init__(
        self,
        model: Any,
        store: EmbeddingStore | str,
        *,
        device: str | None = None,
        precision: str = "float32",
        everything: bool = False,
        everything_options: dict | None = None,
        threads: int | None = None,
    ) -> None:
        from .predictor import Predictor

        if threads is not None and str(device or "cpu").startswith("cpu"):
            import torch

            torch.set_num_threads(int(threads))  # CPU sums depend on how threads split them

        if isinstance(model, Predictor):
            self.predictor = model
        else:
            self.predictor = Predictor(model, device=device, precision=precision, disk_cache=False)
        self.store = open_store(store)
        self.everything = everything
        self.everything_options = dict(everything_options or {})
        self.encodes = 0

    def __call__(self, task: dict) -> dict:
        rgb, data = load_image(task["image"])
        key = image_key(rgb)
        entry = {
            "key": key,
            "source": task["source"],
            "name": task["name"],
            "image": True,
            "stat": task.get("stat"),
        }
        done = self.store.read(key, features=False)
        if done is not None and done.attrs.get("image") and (
            not self.everything or done.attrs.get("masks") is not None
        ):
            entry["masks"] = None if done.attrs.get("masks") is None else len(done.attrs["masks"])
            return entry  # finished by an earlier run (or the same image under another name)
        predictor = self.predictor
        state = predictor._encode(rgb)  # always the encoder: the store is what we fill
        self.encodes += 1
        masks = None
        if self.everything:
            from .automatic import MaskGenerator

            options = {**self.everything_options, "output_mode": "coco_rle"}
            with predictor._lock:
                predictor._remember(predictor._cache_key(rgb), state)
            masks = MaskGenerator(predictor, **options).generate(rgb)
        self.store.write(
            key,
            predictor._features(state),
            input_size=state.input_size,
            original_size=state.original_size,
            image=data if data is not None else rgb,
            masks=masks,
        )
        entry["masks"] = None if masks is None else len(masks)
        return entry


# --------------------------------------------------------------------------------------------
# Engines: each yields the entries of finished images, in any order
# --------------------------------------------------------------------------------------------


def _run_local(worker: EncodeWorker, tasks: list[dict]) -> Iterator[dict]:
    for task in tasks:
        yield worker(task)


_PROCESS_WORKERS: dict[tuple, EncodeWorker] = {}  # per executor process: built once, reused


def _run_chunk(model: Any, store: EmbeddingStore, options: dict, tasks: list[dict]) -> list[dict]:
    """One executor job: a few images, with this process's worker for this model and store."""
    key = (weights_digest(model), store.url, repr(sorted(options.items())))
    worker = _PROCESS_WORKERS.get(key)
    if worker is None:
        worker = _PROCESS_WORKERS[key] = EncodeWorker(model, store, **options)
    return [worker(task) for task in tasks]


def _run_executor(
    executor: Executor, model: Any, store: EmbeddingStore, options: dict, tasks: list[dict]
) -> Iterator[dict]:
    slots = int(getattr(executor, "_max_workers", 4) or 4)
    size = max(1, min(16, len(tasks) // (4 * slots) or 1))  # small chunks: even load, resume
    futures = [
        executor.submit(_run_chunk, model, store, options, tasks[i : i + size])
        for i in range(0, len(tasks), size)
    ]
    try:
        for future in as_completed(futures):
            yield from future.result()
    finally:
        for future in futures:
            future.cancel()


class _RayEncoder:
    """A Ray Data actor: one model (and worker) per actor, images by index."""

    def __init__(self, model, payloads, store, options):
        import ray

        model, payloads = ray.get([model, payloads])  # object refs: shared, not copied per actor
        self.worker = EncodeWorker(model, store, **options)
        self.payloads = payloads

    def __call__(self, batch: dict) -> dict:
        entries = []
        for index in batch["index"]:
            task = dict(self.payloads[int(index)])
            entries.append(self.worker(task))
        return {"entry": np.array(entries, dtype=object)}


def _run_ray(
    model: Any,
    store: EmbeddingStore,
    options: dict,
    tasks: list[dict],
    workers: int | None,
    worker_options: dict | None,
) -> Iterator[dict]:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError(
            'engine="ray" needs Ray Data: pip install "sam-widget[ray]"'
        ) from None
    if not ray.is_initialized():
        ray.init()  # joins $RAY_ADDRESS's cluster if set, else starts one on this machine
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours (tqdm) counts committed images
    gpus = int(ray.cluster_resources().get("GPU", 0))
    resources = dict(worker_options or ({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    size = workers or max(1, gpus or 1)
    payloads = ray.put(tasks)
    model_ref = ray.put(model)
    # one block per image, made here: the actors are the only work, so they may hold every CPU
    data = ray.data.from_items(
        [{"index": i} for i in range(len(tasks))], override_num_blocks=len(tasks)
    )
    results = data.map_batches(
        _RayEncoder,
        fn_constructor_kwargs={
            "model": model_ref,
            "payloads": payloads,
            "store": store,
            "options": options,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=size),
        **resources,
    )
    for row in results.iter_rows():
        yield row["entry"]


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def _resolve_model(model: Any, device: str | None, precision: str):
    """(SAM module, a Predictor for this process, variant name) for a name, module or
    Predictor."""
    from torch import nn

    from .predictor import Predictor

    if isinstance(model, Predictor):
        return model.model, model, model.name
    if isinstance(model, str):
        from .weights import load_model

        model = load_model(model, device="cpu")
    if not isinstance(model, nn.Module):
        raise TypeError(
            "model must be a SAM variant name ('vit_b', ...), a loaded SAM model or a "
            f"Predictor, not {type(model).__name__}"
        )
    return model, None, None


def _tasks(dataset) -> list[dict]:
    from .dataset import PathSource

    source = dataset.source
    tasks = []
    for i in range(len(dataset)):
        payload = source.read(i)
        if isinstance(source, PathSource) or isinstance(payload, (str, os.PathLike)):
            path = os.fspath(payload)
            if "://" not in path:
                path = os.path.abspath(path)
            tasks.append(
                {"image": path, "source": path, "name": dataset.name(i), "stat": _stat(path)}
            )
        else:
            name = dataset.name(i)
            tasks.append({"image": payload, "source": name, "name": name, "stat": None})
    return tasks


def _check_unchanged(task: dict, entry: dict) -> None:
    """A committed source must still be the image that was stored (clear error if not)."""
    if task["stat"] is not None and task["stat"] == entry.get("stat"):
        return  # the same file, untouched
    rgb, _ = load_image(task["image"])
    if image_key(rgb) != entry["key"]:
        raise StoreMismatchError(
            f"{task['name']} has changed since it was stored (stored {entry['key'][:12]}, now "
            f"{image_key(rgb)[:12]}): precompute into a new store, or delete the old one"
        )


def precompute(
    images: Any,
    store: Any,
    model: Any = "vit_b",
    *,
    engine: str | Executor = "local",
    everything: bool = False,
    progress: bool = True,
    dtype: str = "float32",
    device: str | None = None,
    precision: str = "float32",
    workers: int | None = None,
    worker_options: dict | None = None,
    everything_options: dict | None = None,
    threads: int | None = None,
    commit_every: int = 32,
    storage_options: dict | None = None,
    on_commit: Callable[[int], None] | None = None,
):
    """Encode every image of ``images`` that ``store`` does not hold yet; returns
    ``sw.Dataset`` over the store.

    Args:
        images: anything ``sw.Dataset`` takes (a folder, a glob, paths, arrays, a Dataset).
        store: an `EmbeddingStore` or a URL / folder (any fsspec URL; ``memory://`` only with
            the local engine or a thread pool, as other processes cannot see it).
        model: a SAM variant name (loaded with ``sw.load_model``), a loaded or fine-tuned
            model, or a `Predictor` (used as is by the local engine).
        engine: ``"local"`` (this process), ``"ray"`` (Ray Data, an actor pool with one model
            per actor, one GPU each where the cluster has GPUs), or a
            ``concurrent.futures.Executor`` (a process pool, a Dask or SLURM executor...).
        everything: also store the automatic masks (``MaskGenerator`` with
            ``everything_options``, COCO RLE) of each image; see ``EmbeddingStore.masks``.
        dtype: "float32" (lossless, default) or "float16" (half the bytes; see store.py).
        device, precision: for the workers' Predictors (precision "float32" by default, so the
            stored embedding is exactly what ``Predictor(precision="float32")`` computes).
        workers, worker_options: Ray only: actors (default: one per GPU, else 1) and each
            actor's resources (default ``{"num_gpus": 1}`` on GPUs, else ``{"num_cpus": 1}``).
        threads: torch CPU threads per worker process (Ray, process pools). CPU results depend
            on how a sum is split across threads, so by default workers use this process's
            count, and on one machine every engine's store is bit for bit the local engine's.
        commit_every: the driver commits after this many images (or every 5 seconds).
        on_commit: called with the number of images committed so far, after each commit.
    """
    import torch

    from .dataset import Dataset

    dataset = images if isinstance(images, Dataset) else Dataset(images)
    store = open_store(store, storage_options)
    module, predictor, name = _resolve_model(model, device, precision)
    if name is None:
        from .predictor import _variant_name

        name = _variant_name(module)
    if predictor is not None:
        precision = str(predictor.dtype).replace("torch.", "")
    store.bind(name, weights_digest(module), precision, dtype)
    if everything and everything_options is None:
        everything_options = {}

    tasks = _tasks(dataset)
    committed = {e["source"]: e for e in store.entries(refresh=True)}
    todo = []
    for task in tasks:
        entry = committed.get(task["source"])
        if entry is None:
            todo.append(task)
        else:
            _check_unchanged(task, entry)
            if everything and entry.get("masks") is None:
                todo.append(task)  # stored without masks: add them (the encoder is rerun)
    store.set_manifest([t["source"] for t in tasks])

    options = {
        "device": device,
        "precision": precision,
        "everything": everything,
        "everything_options": everything_options,
    }
    if engine == "local":
        worker = EncodeWorker(predictor or module, store, **options)  # this process's threads
        results: Iterable[dict] = _run_local(worker, todo)
    elif engine == "ray":
        _needs_shared_store(store, "ray")
        options["threads"] = threads or torch.get_num_threads()
        results = _run_ray(module, store, options, todo, workers, worker_options)
    elif isinstance(engine, Executor):
        from concurrent.futures import ThreadPoolExecutor

        if not isinstance(engine, ThreadPoolExecutor):
            _needs_shared_store(store, type(engine).__name__)
            options["threads"] = threads or torch.get_num_threads()
        results = _run_executor(engine, module, store, options, todo)
    else:
        raise ValueError(
            f'engine must be "local", "ray" or a concurrent.futures.Executor, got {engine!r}'
        )
    _drive(store, results, len(todo), commit_every, progress, on_commit)
    return Dataset(store)


def _needs_shared_store(store: EmbeddingStore, engine: str) -> None:
    if not store.is_local:
        raise ValueError(
            f"{store.url} lives in this process's memory; {engine} workers run in other "
            "processes: use a folder or an object-store URL"
        )


def _drive(store, results, total, commit_every, progress, on_commit) -> None:
    """Commit entries as they arrive (each source once), in batches; commit what is finished
    even when interrupted."""
    from tqdm.auto import tqdm

    committed: set[str] = set()  # sources committed by this run
    pending: list[dict] = []
    done = 0
    last = time.monotonic()
    bar = tqdm(total=total, desc="precompute", unit="image", disable=not progress)

    def flush() -> None:
        nonlocal last, done
        if pending:
            store.commit(pending)
            done += len(pending)
            pending.clear()
            if on_commit is not None:
                on_commit(done)
        last = time.monotonic()

    try:
        for entry in results:
            bar.update(1)
            if entry["source"] in committed:
                continue  # a retried task's second answer
            committed.add(entry["source"])
            pending.append(entry)
            if len(pending) >= commit_every or time.monotonic() - last > COMMIT_SECONDS:
                flush()
    finally:
        flush()
        bar.close()
