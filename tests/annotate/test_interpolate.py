"""Shape-based interpolation between outlined slices, guided by the CT or not, and counting corrections."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import interpolate_slices, make_phantom
from napari_pneumoseg.annotate import corrections, edited_slices


def _dice(a, b):
    a, b = a != 0, b != 0
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _outlines(truth, every):
    """Every ``every``-th slice from the empty slice below the pneumothorax to the one above it."""
    ks = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
    ann = list(range(max(ks[0] - 1, 0), ks[-1] + 2, every))
    if ann[-1] < ks[-1] + 1 < truth.shape[0]:
        ann.append(int(ks[-1]) + 1)
    given = np.where(np.isin(np.arange(truth.shape[0]), ann)[:, None, None], truth, 0)
    return given, ann


def test_a_cone_between_two_disks_and_an_empty_end():
    zz, yy, xx = np.mgrid[:9, :41, :41]
    r = 4 + 2 * zz  # radius grows 2 px per slice
    truth = ((yy - 20) ** 2 + (xx - 20) ** 2 <= r ** 2).astype(np.uint8)
    given, ann = truth.copy(), [0, 8]
    given[1:8] = 0
    out = interpolate_slices(given, ann)
    assert np.array_equal(out[[0, 8]], truth[[0, 8]]) and out.dtype == truth.dtype
    for k in range(1, 8):
        assert _dice(out[k], truth[k]) > 0.95, k  # pixelated disks of radius 6 to 18
    # An empty outline ends the shape: it shrinks and is gone at the empty slice.
    given[8] = 0
    out = interpolate_slices(given, ann)
    areas = [int(out[k].sum()) for k in range(9)]
    assert areas[8] == 0 and all(a >= b for a, b in zip(areas, areas[1:]))
    assert np.array_equal(interpolate_slices(given, []), given)  # nothing outlined: nothing changes


def test_refusals():
    with pytest.raises(ValueError, match="3-D"):
        interpolate_slices(np.zeros((4, 4)), [0])
    with pytest.raises(ValueError, match="outside"):
        interpolate_slices(np.zeros((4, 4, 4)), [0, 4])
    with pytest.raises(ValueError, match="image"):
        interpolate_slices(np.zeros((4, 4, 4)), [0, 3], image=np.zeros((3, 4, 4)))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=0)


@pytest.mark.parametrize("every, shape_only, guided", [(5, 0.90, 0.95), (10, 0.74, 0.90)])
def test_phantom_from_every_nth_slice(phantom, every, shape_only, guided):
    given, ann = _outlines(phantom.truth, every)
    plain = interpolate_slices(given, ann, spacing=phantom.ct.spacing)
    with_ct = interpolate_slices(given, ann, spacing=phantom.ct.spacing, image=phantom.ct.hu)
    assert _dice(plain, phantom.truth) >= shape_only
    assert _dice(with_ct, phantom.truth) >= guided  # issue 16's goals: 0.95 from every 5th, 0.90 every 10th
    assert np.array_equal(with_ct[ann], phantom.truth[ann])


def test_edited_slices_and_corrections():
    before = np.zeros((5, 8, 8), np.uint8)
    before[1:4, 2:6, 2:6] = 1
    after = before.copy()
    after[2, 2:6, 6:8] = 1  # 8 added
    after[3, 2:4, 2:6] = 0  # 8 removed
    assert edited_slices(before, after) == [2, 3]
    c = corrections(before, after, voxel_ml=0.25)
    assert (c.added_voxels, c.removed_voxels, c.added_ml, c.removed_ml) == (8, 8, 2.0, 2.0)
    assert "on 2 slices" in c.summary()
    with pytest.raises(ValueError, match="shapes differ"):
        corrections(before, after[:4])
