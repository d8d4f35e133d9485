"""Fixtures shared by the predictor and automatic-mask tests: one tiny random-weight model pair
(ours, official) per test module, from tests/test_predictor_support.py."""

from __future__ import annotations

import pytest

from tests.test_predictor_support import tiny_sam_pair


@pytest.fixture(scope="module")
def models():
    return tiny_sam_pair()


@pytest.fixture(scope="module")
def model(models):
    return models[0]


@pytest.fixture(scope="module")
def official_model(models):
    return models[1]
