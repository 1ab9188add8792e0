"""The napari sample data: the phantom and its truth as layer data."""

from __future__ import annotations

from napari_pneumoseg._napari._sample_data import sample_phantom


def test_sample_phantom_layers():
    layers = sample_phantom()
    (hu, kw, kind), (truth, tkw, tkind) = layers
    assert kind == "image" and tkind == "labels"
    assert kw["name"] == "Pneumothorax phantom" and tkw["name"] == "Pneumothorax phantom truth"
    assert hu.shape == truth.shape == (60, 256, 256) and truth.any()
    assert kw["scale"] == tkw["scale"] == (5.0, 1.4, 1.4)
    assert kw["contrast_limits"] == (-1000, 400)
    assert kw["metadata"]["phantom"]["side"] == "left"
