"""The embedding store and sw.precompute (local engine, thread pool, a killed driver), the
Predictor's store and disk cache, Dataset(store). Ray is in tests/test_precompute_ray.py.

One small random-weight model (a 256-pixel encoder, tests/test_predictor_support.small_sam) and
small synthetic images keep the whole module to seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sam_widget as sw
from sam_widget.images import to_rgb
from sam_widget.store import EmbeddingStore, StoreMismatchError, image_key
from tests.test_predictor_support import small_sam, synthetic_image

SIZES = [(60, 80), (48, 48), (90, 50), (40, 70)]


@pytest.fixture(scope="module")
def sam():
    return small_sam(0)


@pytest.fixture(scope="module")
def images():
    return [synthetic_image(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]


class EncoderCalls:
    """Counts the image encoder's forward calls on a model (a hook, removed on exit)."""

    def __init__(self, model):
        self.model, self.n = model, 0

    def __enter__(self):
        self.handle = self.model.image_encoder.register_forward_pre_hook(self._count)
        return self

    def _count(self, module, args):
        self.n += 1

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module")
def local_store(sam, images, tmp_path_factory):
    """The images precomputed once into a folder store (shared by the read-only tests)."""
    url = str(tmp_path_factory.mktemp("stores") / "local.zarr")
    with EncoderCalls(sam) as calls:
        ds = sw.precompute(images, url, model=sam, progress=False)
    assert calls.n == len(images)
    return url, ds


def embeddings(url):
    store = EmbeddingStore(url)
    return {e["source"]: store.read(e["key"]).features["embedding"] for e in store.entries()}


def test_local_store_equals_set_image_bit_for_bit(sam, images, local_store):
    url, ds = local_store
    store = EmbeddingStore(url)
    assert store.info["model"] == "vit_b" and store.info["dtype"] == "float32"
    entries = store.entries()
    assert [e["name"] for e in entries] == [f"image-{i}" for i in range(len(images))]
    p = sw.Predictor(sam, disk_cache=False)
    for image, entry in zip(images, entries, strict=True):
        p.set_image(image)
        record = store.read(entry["key"])
        assert record.features["embedding"].dtype == np.float32
        assert np.array_equal(record.features["embedding"], p.embedding.numpy())
        assert record.input_size == p.input_size
        assert record.original_size == image.shape[:2]


def test_complete_store_rerun_encodes_nothing(sam, images, local_store):
    url, _ = local_store
    before = embeddings(url)
    with EncoderCalls(sam) as calls:
        ds = sw.precompute(images, url, model=sam, progress=False)
    assert calls.n == 0
    assert len(ds) == len(images) and len(EmbeddingStore(url).entries()) == len(images)
    assert embeddings(url).keys() == before.keys()


@pytest.mark.parametrize("kind", ["memory", "folder"])
def test_round_trip_memory_and_folder(sam, kind, tmp_path, local_store):
    """Image files (one JPEG with an EXIF rotation) in, Dataset(url) out: same pixels as our
    loader gives, same names, embeddings equal to the array-input store's."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate(SIZES[:2]):
        Image.fromarray(synthetic_image(h, w, seed=i)).save(folder / f"p{i}.png")
    rotated = Image.fromarray((rng.random((30, 50, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    rotated.save(folder / "p2.jpg", exif=exif)
    url = "memory://round-trip.zarr" if kind == "memory" else str(tmp_path / "s.zarr")
    sw.precompute(folder, url, model=sam, progress=False)

    ds = sw.Dataset(url)  # opened again from the URL alone
    assert ds.names == ["p0.png", "p1.png", "p2.jpg"]
    for i, name in enumerate(ds.names):
        assert np.array_equal(ds[i], to_rgb(folder / name))
    assert ds[2].shape == (50, 30, 3)  # EXIF applied, as sw.Dataset / to_rgb do
    stored = embeddings(url)
    reference = embeddings(local_store[0])
    for i in range(2):  # the same pixels as the array store's image-0, image-1
        assert np.array_equal(stored[str(folder / f"p{i}.png")], reference[f"image-{i}"])


def test_precompute_over_image_urls_round_trips(sam, images, local_store):
    """Image files given as URLs (fsspec; memory:// here): stored with their file names and
    the embeddings of the same pixels; a glob over their folder finds them all committed."""
    import io

    import fsspec

    fs = fsspec.filesystem("memory")
    urls = []
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, "PNG")
        fs.pipe(f"/url-photos/p{i}.png", buf.getvalue())
        urls.append(f"memory://url-photos/p{i}.png")
    try:
        ds = sw.precompute(urls, "memory://urls.zarr", model=sam, progress=False)
        assert ds.names == ["p0.png", "p1.png"]
        stored, reference = embeddings("memory://urls.zarr"), embeddings(local_store[0])
        for i, url in enumerate(urls):
            assert np.array_equal(ds[i], images[i])
            assert np.array_equal(stored[url], reference[f"image-{i}"])
        with EncoderCalls(sam) as calls:
            again = sw.precompute("memory://url-photos/*.png", "memory://urls.zarr", model=sam,
                                  progress=False)
        assert calls.n == 0 and again.names == ["p0.png", "p1.png"]
    finally:
        fs.rm("/url-photos", recursive=True)


def test_model_mismatch_is_a_clear_error(images, local_store):
    url, _ = local_store
    other = small_sam(seed=1)
    with pytest.raises(StoreMismatchError, match="embeddings of different models"):
        sw.precompute(images, url, model=other, progress=False)
    with pytest.raises(StoreMismatchError, match="weights"):
        sw.Predictor(other, store=url, disk_cache=False)


def test_changed_image_is_a_clear_error(sam, images, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(images[i]).save(folder / f"p{i}.png")
    url = str(tmp_path / "s.zarr")
    sw.precompute(folder, url, model=sam, progress=False)
    Image.fromarray(images[2]).save(folder / "p1.png")  # same name, other picture
    with pytest.raises(StoreMismatchError, match="p1.png has changed"):
        sw.precompute(folder, url, model=sam, progress=False)
    with pytest.raises(StoreMismatchError, match="image-0 has changed"):  # arrays: by name
        sw.precompute([images[0]], "memory://changed.zarr", model=sam, progress=False)
        sw.precompute([images[3]], "memory://changed.zarr", model=sam, progress=False)


def test_predictor_reads_the_store_and_writes_new_images(sam, images, local_store):
    url, ds = local_store
    p = sw.Predictor(sam, store=ds, disk_cache=False)
    with EncoderCalls(sam) as calls:
        for i in range(len(ds)):
            p.set_image(ds[i])
            assert p.image_shape == images[i].shape[:2]
    assert calls.n == 0
    new = synthetic_image(33, 44, seed=9)
    with EncoderCalls(sam) as calls:
        p.set_image(new)
        sw.Predictor(sam, store=url, disk_cache=False).set_image(new)  # found in the store
    assert calls.n == 1
    assert EmbeddingStore(url).has(image_key(new))
    assert len(sw.Dataset(url)) == len(images)  # a predictor's record is no dataset image


def test_prediction_from_the_store_equals_a_fresh_encode(sam, images, local_store):
    _, ds = local_store
    fresh = sw.Predictor(sam, disk_cache=False)
    stored = sw.Predictor(sam, store=ds, disk_cache=False)
    for p in (fresh, stored):
        p.set_image(images[0])
    a = fresh.predict(points=[(30, 20)], labels=[1])
    b = stored.predict(points=[(30, 20)], labels=[1])
    assert np.array_equal(a.logits, b.logits) and np.array_equal(a.masks, b.masks)


def test_float16_store_halves_the_bytes_and_keeps_the_masks(sam, images, local_store):
    url16 = "memory://half.zarr"
    sw.precompute(images, url16, model=sam, dtype="float16", progress=False)
    store16, store32 = EmbeddingStore(url16), EmbeddingStore(local_store[0])
    key = store16.entries()[0]["key"]
    half = store16.read(key).features["embedding"]
    assert half.dtype == np.float16
    full = store32.read(key).features["embedding"]
    assert np.allclose(half, full, rtol=1e-3, atol=1e-3)
    p16 = sw.Predictor(sam, store=url16, disk_cache=False)
    p32 = sw.Predictor(sam, store=local_store[0], disk_cache=False)
    ious = []
    for p in (p16, p32):
        p.set_image(images[0])
    for x, y in [(20, 15), (40, 30), (60, 45)]:
        a = p16.predict(points=[(x, y)], labels=[1]).masks
        b = p32.predict(points=[(x, y)], labels=[1]).masks
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    assert np.mean(ious) > 0.99


#: random weights: loose filters, so that the generator keeps some masks to compare
EVERYTHING = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.5}


@pytest.fixture(scope="module")
def everything_store(sam, images):
    """Three images precomputed with their automatic masks, and MaskGenerator's own masks."""
    ds = sw.precompute(images[:3], "memory://everything.zarr", model=sam, everything=True,
                       everything_options=EVERYTHING, progress=False)
    generator = sw.MaskGenerator(sw.Predictor(sam, disk_cache=False), **EVERYTHING)
    return ds, [generator.generate(image) for image in images[:3]]


def test_everything_stores_the_mask_generators_masks(everything_store):
    from pycocotools import mask as mask_utils

    ds, expected = everything_store
    store = ds.source.store
    total = 0
    for i, entry in enumerate(store.entries()):
        stored = ds.masks(i)
        assert stored == ds.source.masks(i) == store.masks(entry)
        assert len(stored) == len(expected[i])
        for s, e in zip(stored, expected[i], strict=True):
            assert np.array_equal(mask_utils.decode(s["segmentation"]).astype(bool),
                                  e["segmentation"])
            assert s["bbox"] == e["bbox"] and s["predicted_iou"] == e["predicted_iou"]
        total += len(stored)
    assert total > 0  # the generator found something to compare


def assert_objects_are(objects, records, source, label):
    """Widget objects equal to MaskGenerator records, pixel for pixel."""
    assert len(objects) == len(records) > 0
    for obj, rec in zip(objects, records, strict=True):
        np.testing.assert_array_equal(obj["mask"], rec["segmentation"])
        assert obj["score"] == rec["predicted_iou"] and obj["area"] == rec["area"]
        assert obj["points"] == [[*p, 1] for p in rec["point_coords"]]
        assert (obj["source"], obj["label"]) == (source, label)


def no_generator(*args, **kwargs):
    raise AssertionError("MaskGenerator ran although the store keeps the masks")


@pytest.mark.filterwarnings("ignore:.*never saved")
def test_everything_in_the_widget_takes_the_stored_masks_at_once(sam, everything_store,
                                                                  monkeypatch):
    """w.segment_everything() and the "Everything" button add the store's masks: the same
    objects a live run adds (pixel for pixel), undoable, with no generator run and no encoder
    call; settings given to segment_everything still run the generator."""
    ds, expected = everything_store
    monkeypatch.setattr(sw.MaskGenerator, "generate", no_generator)
    with EncoderCalls(sam) as calls:
        w = sw.SamWidget(sw.Dataset(ds.source.store), model=sam, labels=["cell"])
        try:
            added = w.segment_everything()
            assert_objects_are(w.objects, expected[0], "everything", "cell")
            assert added == w.objects and w.can_undo
            w.undo()
            assert w.objects == []
            w.goto(1)
            messages = []
            w.observe(lambda change: messages.append(change["new"]), "message")
            w._msg_callbacks(w, {"type": "everything", "client": "t", "seq": 1}, [])
            assert_objects_are(w.objects, expected[1], "everything", "cell")  # no wait needed
            assert f"everything: {len(expected[1])} stored masks added as objects" in messages
            with pytest.raises(AssertionError, match="MaskGenerator ran"):
                w.segment_everything(points_per_side=2)  # settings: a live run
            w.wait()
        finally:
            w.close()
    assert calls.n == 0


def test_proposals_prefill_each_image_once_and_a_resume_keeps_the_choices(
        sam, images, everything_store, tmp_path, monkeypatch):
    """proposals=True: arriving on an image without objects shows its stored masks as
    unlabelled "proposal" objects (no generator, no encoder); they are edited like any
    object; an image the user emptied stays empty, also after save and resume."""
    ds, expected = everything_store
    monkeypatch.setattr(sw.MaskGenerator, "generate", no_generator)
    with EncoderCalls(sam) as calls:
        w = sw.SamWidget(ds, model=sam, labels=["cell"], proposals=True)
        try:
            assert_objects_are(w.objects, expected[0], "proposal", None)
            assert not w.can_undo  # the image's starting state
            first = w.objects[0]["id"]
            w.set_object_label(first, "cell")
            w.goto(1)
            assert_objects_are(w.objects, expected[1], "proposal", None)
            for obj in w.objects:
                w.remove_object(obj["id"])
            w.goto(0)
            assert [(o["label"], o["source"]) for o in w.objects][0] == ("cell", "proposal")
            w.goto(1)
            assert w.objects == []  # emptied on purpose: not filled again
            w.save(tmp_path / "out")
        finally:
            w.close()
        r = sw.SamWidget(ds, model=sam, labels=["cell"], proposals=True,
                         annotations=tmp_path / "out")
        try:
            assert [(o["label"], o["source"]) for o in r.objects][0] == ("cell", "proposal")
            assert len(r.objects) == len(expected[0])  # resumed, not pre-filled on top
            np.testing.assert_array_equal(r.objects[0]["mask"], expected[0][0]["segmentation"])
            assert r.goto(1).objects == []
            assert_objects_are(r.goto(2).objects, expected[2], "proposal", None)
            r.wait()
        finally:
            r.close()
    assert calls.n == 0
    with pytest.raises(ValueError, match="everything=True"):
        sw.SamWidget(images[:2], model=sam, proposals=True)


def test_thread_pool_engine_equals_local(sam, images, local_store):
    with ThreadPoolExecutor(2) as pool:
        sw.precompute(images, "memory://pool.zarr", model=sam, engine=pool, progress=False)
    pooled, local = embeddings("memory://pool.zarr"), embeddings(local_store[0])
    assert pooled.keys() == local.keys()
    assert all(np.array_equal(pooled[k], local[k]) for k in local)


def test_memory_store_refuses_other_processes(sam, images):
    with pytest.raises(ValueError, match="other\\s+processes"):
        sw.precompute(images, "memory://nope.zarr", model=sam, engine="ray", progress=False)


KILLED_DRIVER = textwrap.dedent(
    """
    import os, signal, sys, torch
    import sam_widget as sw
    from tests.test_predictor_support import synthetic_image

    model = torch.load(sys.argv[1], weights_only=False)
    sizes = {sizes!r}
    images = [synthetic_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    calls = [0]

    def die_on_third(module, args):
        calls[0] += 1
        if calls[0] == 3:  # while encoding the third image
            os.kill(os.getpid(), signal.SIGKILL)

    model.image_encoder.register_forward_pre_hook(die_on_third)
    sw.precompute(images, sys.argv[2], model=model, commit_every=1, progress=False)
    """
)


def test_killed_driver_rerun_encodes_only_what_is_not_committed(sam, images, tmp_path):
    weights = tmp_path / "model.pt"
    torch.save(sam, weights)
    url = str(tmp_path / "killed.zarr")
    script = KILLED_DRIVER.format(sizes=SIZES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(weights), url], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stderr  # SIGKILL: no clean-up ran
    committed = {e["source"] for e in EmbeddingStore(url).entries()}
    assert committed == {"image-0", "image-1"}

    encoded = []
    hook = sam.image_encoder.register_forward_pre_hook(
        lambda module, args: encoded.append(args[0].shape))
    try:
        ds = sw.precompute(images, url, model=sam, progress=False)
    finally:
        hook.remove()
    assert len(encoded) == len(images) - len(committed)
    entries = EmbeddingStore(url).entries()
    assert [e["source"] for e in entries] == [f"image-{i}" for i in range(len(images))]
    assert len(ds) == len(images)
    reference = sw.Predictor(sam, disk_cache=False)
    for image, entry in zip(images, entries, strict=True):
        reference.set_image(image)
        stored = EmbeddingStore(url).read(entry["key"]).features["embedding"]
        assert np.array_equal(stored, reference.embedding.numpy())


def test_disk_cache_serves_a_new_predictor_and_stays_bounded(sam, images, tmp_path):
    folder = tmp_path / "cache"
    with EncoderCalls(sam) as calls:
        p = sw.Predictor(sam, disk_cache=str(folder))
        p.set_image(images[0])
        q = sw.Predictor(sam, disk_cache=str(folder))  # e.g. tomorrow's kernel
        q.set_image(images[0])
    assert calls.n == 1
    assert np.array_equal(p.embedding.numpy(), q.embedding.numpy())

    cache = q._stores.disk
    one_record = cache._records()[0][1]
    cache.max_bytes = int(2.5 * one_record)  # room for two records
    for image in images[1:]:
        q.set_image(image)
    kept = {Path(path).name for path, _, _ in cache._records()}
    assert kept == {image_key(images[2]), image_key(images[3])}  # the oldest went first


def test_disk_cache_default_folder_and_switch(monkeypatch, tmp_path, sam):
    from sam_widget.store import user_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SAM_WIDGET_DISK_CACHE")
    if sys.platform.startswith("linux"):
        assert user_cache_dir() == str(tmp_path / "sam-widget")
    assert sw.Predictor(sam)._stores.disk.folder == os.path.join(user_cache_dir(), "embeddings")
    monkeypatch.setenv("SAM_WIDGET_DISK_CACHE", "0")
    assert sw.Predictor(sam)._stores.disk is None


def test_cli_precompute_a_folder_then_resume(sam, images, tmp_path, monkeypatch, capsys):
    from sam_widget import cli, weights

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(images[i]).save(folder / f"p{i}.png")
    loaded = []
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: loaded.append((a, k)) or sam)
    url = str(tmp_path / "cli.zarr")
    assert cli.main(["precompute", str(folder), "--store", url, "--model", "vit_b"]) == 0
    assert loaded[0][0] == ("vit_b",)
    out = capsys.readouterr().out
    assert "2 stored" in out and url in out
    Image.fromarray(images[2]).save(folder / "p2.png")
    with EncoderCalls(sam) as calls:
        assert cli.main(["precompute", str(folder), "--store", url]) == 0
    assert calls.n == 1  # only the new file
    assert sw.Dataset(url).names == ["p0.png", "p1.png", "p2.png"]
    other = small_sam(seed=1)
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: other)
    assert cli.main(["precompute", str(folder), "--store", url]) == 1
    assert "different models" in capsys.readouterr().err


def test_widget_over_a_store_opens_and_navigates_without_encoding(sam, images, local_store):
    url, _ = local_store
    with EncoderCalls(sam) as calls:
        w = sw.SamWidget(sw.Dataset(url), model=sam)
        try:
            for i in [1, 2, 3, 0]:
                w.goto(i).wait()  # shown, and its embedding ready (neighbours prefetched)
                assert w.index == i and w.status == "ready"
            w.add_point(30, 20)  # the prompt decodes on the stored embedding
            assert w.mask.shape == images[0].shape[:2]
            w.next()
            w.wait()
        finally:
            w.close()
    assert calls.n == 0
    assert w._engine._stores.hits >= len(images)
