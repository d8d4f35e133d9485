"""Fixtures shared by the predictor and automatic-mask tests: one tiny random-weight model pair
(ours, official) per test module, from tests/test_predictor_support.py."""

from __future__ import annotations

import os

import pytest

from tests.test_predictor_support import tiny_sam_pair

# Tests never touch the user's cache folder: the Predictor's disk cache is off unless a test
# turns it on (tests/test_store.py does, in a temporary folder). Kernels started by the
# browser and notebook tests inherit this.
os.environ["SAM_WIDGET_DISK_CACHE"] = "0"


@pytest.fixture(scope="module")
def models():
    return tiny_sam_pair()


@pytest.fixture(scope="module")
def model(models):
    return models[0]


@pytest.fixture(scope="module")
def official_model(models):
    return models[1]


@pytest.fixture(scope="session")
def sam2_tiny_checkpoint(tmp_path_factory):
    """(model, path): a seeded random-weight SAM 2.1 hiera_tiny and its weights written as the
    official file is ({"model": state_dict}, with a video-only entry the loader sets aside), for
    the tests that load one through ``sw.load_model`` (the CLI, fine-tuning round trips)."""
    import torch

    from sam_widget.models import build_sam

    torch.manual_seed(0)
    model = build_sam("sam2.1_hiera_tiny")
    state = dict(model.state_dict())
    state["memory_encoder.out_proj.weight"] = torch.zeros(64, 256, 1, 1)  # video-only
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    return model, path
