"""Fixtures shared by the mask-format tests."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import read_ct


@pytest.fixture(scope="module")
def chest(chest_dir):
    return read_ct(chest_dir)


@pytest.fixture(scope="module")
def chest_mask(chest):
    """Lung air in an off-centre box: asymmetric along every axis, so any flip shows."""
    m = np.zeros(chest.shape, np.uint8)
    m[20:45, 150:330, 60:250] = chest.hu[20:45, 150:330, 60:250] < -500
    assert 1000 < m.sum() < m.size // 4
    return m
