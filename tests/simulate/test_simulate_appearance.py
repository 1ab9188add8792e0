"""The appearance of the new content: pleural line and blur band."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_pneumoseg.simulate._appearance import blur, edge_band, pleural_line


def test_pleural_line_and_blur_band_lie_at_the_edge():
    air = np.zeros((2, 20, 20), bool)
    air[:, 5:15, 2:8] = True
    lung = np.zeros_like(air)
    lung[:, 2:18, 8:18] = True
    line = pleural_line(lung, air)
    assert line.any() and (line <= lung).all()
    assert (ndimage.binary_dilation(air, structure=np.ones((1, 3, 3), bool)) >= line).all()
    band = edge_band(air)
    assert band[:, 10, 7].all() and band[:, 10, 8].all() and not band[:, 10, 4].any() and not band[:, 10, 12].any()
    img = np.where(air, -1000.0, 40.0).astype(np.float32)
    out = blur(img)
    assert out.dtype == np.float32 and -1000 < out[0, 10, 7] < out[0, 10, 8] < 40
    assert np.array_equal(out[0], blur(img[:1])[0])  # in-plane only: slices do not mix
