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
