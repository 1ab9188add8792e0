"""Training batches: patches and whole slices."""

from __future__ import annotations


def test_whole_slice_batches_pad_mixed_shapes_to_a_multiple_of_32():
    import numpy as np

    from napari_pneumoseg.training.sampling import SliceBatches

    vols = [np.ones((2, 40, 50), np.float32), np.ones((2, 64, 30), np.float32)]
    masks = [np.ones((2, 40, 50), np.uint8), np.ones((2, 64, 30), np.uint8)]
    x, y = SliceBatches(vols, masks, [(0, 0), (1, 1)], 2, deterministic=True)[0]
    assert x.shape == (2, 64, 64, 1) and y.shape == (2, 64, 64, 1)
    # Original pixels kept, padding is the fill value (0) and background.
    assert x[0, :40, :50].min() == 1 and x[0, 40:].max() == 0 and y[0, :, 50:].max() == 0
    assert y[1, :64, :30].min() == 1
