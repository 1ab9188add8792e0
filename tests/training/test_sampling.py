"""Training batches: patches and whole slices."""

from __future__ import annotations


def test_whole_slice_batches_pad_mixed_shapes_to_a_multiple_of_32():
    import numpy as np

    from napari_pneumoseg.training.sampling import SliceBatches

    vols = [np.ones((2, 40, 50), np.float32), np.ones((2, 64, 30), np.float32)]
    vols[0][0, 0, 0], vols[1][1, 5, 5] = 0.25, 0.5  # each volume's lowest value
    masks = [np.ones((2, 40, 50), np.uint8), np.ones((2, 64, 30), np.uint8)]
    x, y = SliceBatches(vols, masks, [(0, 0), (1, 1)], 2, deterministic=True)[0]
    assert x.shape == (2, 64, 64, 1) and y.shape == (2, 64, 64, 1)
    # Centred as segment() pads: 40 -> 64 adds 12 rows before and after, 50 -> 64 adds 7 columns.
    np.testing.assert_array_equal(x[0, 12:52, 7:57, 0], vols[0][0])
    np.testing.assert_array_equal(y[0, 12:52, 7:57, 0], masks[0][0])
    # Padding is the volume's own lowest value (what segment() pads with), and background.
    assert set(np.unique(x[0, :12])) == {0.25} and set(np.unique(x[0, :, 57:])) == {0.25}
    assert y[0, :12].max() == 0 and y[0, :, 57:].max() == 0
    np.testing.assert_array_equal(x[1, :, 17:47, 0], vols[1][1])
    assert set(np.unique(x[1, :, :17])) == {0.5} and y[1, :, :17].max() == 0
    assert y[1, :64, 17:47].min() == 1
