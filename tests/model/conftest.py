"""Shared, session-cached networks for the model tests (TensorFlow imports once, models build once)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_bundle():
    """An untrained resnet18 Unet bundle (fast; same code path as the paper's resnet50), seeded."""
    from napari_pneumoseg.model import ModelBundle
    from napari_pneumoseg.model._backend import keras_modules

    keras_modules().keras.utils.set_random_seed(0)
    return ModelBundle.build("resnet18", provenance={"purpose": "tests"})


@pytest.fixture(scope="session")
def paper_model():
    """The paper's untrained Unet-ResNet50 with one input channel."""
    from napari_pneumoseg.model import build_unet

    return build_unet("resnet50", 1, encoder_weights=None)


@pytest.fixture(scope="session")
def keras():
    from napari_pneumoseg.model._backend import keras_modules

    return keras_modules().keras
