"""sw.precompute(engine="ray"): the same store as the local engine, bit for bit, and every image
exactly once when a worker dies mid-run. One local Ray (2 CPUs) for the module; actors take
half a CPU each, so two fit."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

import sam_widget as sw
from sam_widget.store import EmbeddingStore
from tests.test_predictor_support import small_sam, synthetic_image

ray = pytest.importorskip("ray", reason="the ray extra (pip install sam-widget[ray])")

SIZES = [(60, 80), (48, 48), (90, 50), (40, 70), (64, 64), (30, 90)]
HALF_CPU = {"num_cpus": 0.5}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sam():
    return small_sam(0)


@pytest.fixture(scope="module")
def images():
    return [synthetic_image(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]


@pytest.fixture(scope="module")
def local_embeddings(sam, images):
    sw.precompute(images, "memory://ray-reference.zarr", model=sam, progress=False)
    return stored("memory://ray-reference.zarr")


def stored(url):
    """{source: embedding} of a store, checking that each source is there once."""
    store = EmbeddingStore(url)
    entries = store.entries(refresh=True)
    sources = [e["source"] for e in entries]
    assert len(sources) == len(set(sources))
    return {e["source"]: store.read(e["key"]).features["embedding"] for e in entries}


def test_ray_store_equals_local_bit_for_bit(sam, images, local_embeddings, tmp_path):
    url = str(tmp_path / "ray.zarr")
    ds = sw.precompute(images, url, model=sam, engine="ray", workers=2,
                       worker_options=HALF_CPU, progress=False)
    assert ds.names == [f"image-{i}" for i in range(len(images))]
    result = stored(url)
    assert result.keys() == local_embeddings.keys()
    for source, embedding in local_embeddings.items():
        assert np.array_equal(result[source], embedding), source
    assert np.array_equal(ds[2], images[2])


def test_ray_worker_killed_mid_run_gives_every_image_once(sam, images, local_embeddings,
                                                          tmp_path):
    marker = str(tmp_path / "killed-once")

    def die_once(module, args):  # the first encode anywhere kills its actor's process
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    doomed = copy.deepcopy(sam)  # same weights (same store identity), plus the hook
    doomed.image_encoder.register_forward_pre_hook(die_once)
    url = str(tmp_path / "killed.zarr")
    ds = sw.precompute(images, url, model=doomed, engine="ray", workers=2,
                       worker_options=HALF_CPU, progress=False)
    assert os.path.exists(marker)  # a worker did die
    assert len(ds) == len(images)
    result = stored(url)
    assert result.keys() == local_embeddings.keys()
    for source, embedding in local_embeddings.items():
        assert np.array_equal(result[source], embedding), source
