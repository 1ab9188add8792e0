"""Grid geometry: affines, exact realignment of reordered/flipped masks, refusal of other grids."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_pneumoseg.ct import CTVolume
from napari_pneumoseg.io.grid import (
    STANDARD_AXIAL,
    Grid,
    MaskFile,
    MaskFileError,
    MaskGeometryError,
    Segment,
    affine_from,
    align_to,
    as_grid,
    closest_axial,
)

# A feet-first-like grid: z runs inferior, x runs to the patient's right.
FFS_DIRECTION = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


@pytest.fixture()
def ct() -> CTVolume:
    return CTVolume(np.zeros((5, 7, 9), np.float32), spacing=(2.5, 0.8, 0.7),
                    origin=(-10.0, 20.0, 30.0), direction=FFS_DIRECTION)


@pytest.fixture()
def mask(ct) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random(ct.shape) < 0.3).astype(np.uint8)


def _stored(mask, affine, order, flips):
    """``mask`` stored with axes ``order`` and ``flips``, and the affine of that storage.

    New axis a is old axis order[a]; built from the index map new -> old,
    independently of align_to (which inverts the other way).
    """
    arr = np.transpose(mask, order)
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for a, old in enumerate(order):
        if flips[a]:
            arr = np.flip(arr, axis=a)
            m[old, a] = -1
            m[old, 3] = mask.shape[old] - 1
        else:
            m[old, a] = 1
    return arr, affine @ m


def test_affine_agrees_with_ct_index_to_lps(ct):
    idx = np.array([[0, 0, 0], [4, 6, 8], [1, 2, 3]])
    lps = (ct_affine := as_grid(ct).affine) @ np.c_[idx, np.ones(3)].T
    np.testing.assert_allclose(lps[:3].T, ct.index_to_lps(idx))
    assert ct_affine.shape == (4, 4)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_axis_order_and_flip_realigns_exactly(ct, mask, order):
    for flips in itertools.product([False, True], repeat=3):
        arr, affine = _stored(mask, as_grid(ct).affine, order, flips)
        back = align_to(arr, affine, ct)
        np.testing.assert_array_equal(back, mask, err_msg=f"order {order} flips {flips}")


def test_float_noise_is_tolerated_but_not_a_hundredth_of_a_voxel(ct, mask):
    affine = as_grid(ct).affine
    noisy = affine.copy()
    noisy[:3, 3] += 1e-5 * np.array(ct.spacing)[::-1]
    np.testing.assert_array_equal(align_to(mask, noisy, ct), mask)
    off = affine.copy()
    off[:3, 3] += 0.01 * ct.spacing[0] * ct.direction[0]
    with pytest.raises(MaskGeometryError, match="shifted by a fraction"):
        align_to(mask, off, ct)


def _rotation_z(deg):
    t = np.radians(deg)
    r = np.eye(4)
    r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return r


@pytest.mark.parametrize("change, reason", [
    ("spacing", "spacing differs"),
    ("half_voxel", "shifted by a fraction"),
    ("rotated", "rotated"),
    ("rotated45", "rotated"),
    ("cropped", "covers only part"),
    ("bigger", "extent differs"),
])
def test_other_grids_are_refused_naming_both_geometries(ct, mask, change, reason):
    affine = as_grid(ct).affine
    arr = mask
    if change == "spacing":
        affine = affine_from((2.5, 0.8, 0.75), ct.origin, ct.direction)
    elif change == "half_voxel":
        affine = affine.copy()
        affine[:3, 3] += 0.5 * ct.spacing[2] * ct.direction[2]
    elif change == "rotated":
        affine = _rotation_z(3) @ affine
    elif change == "rotated45":
        affine = _rotation_z(45) @ affine
    elif change == "cropped":
        arr = mask[1:4]
        affine = affine.copy()
        affine[:3, 3] += ct.spacing[0] * ct.direction[0]
    elif change == "bigger":
        arr = np.zeros((5, 7, 10), np.uint8)
    with pytest.raises(MaskGeometryError) as info:
        align_to(arr, affine, ct, source="gt.nrrd")
    msg = str(info.value)
    assert reason in msg
    assert "gt.nrrd" in msg
    assert f"shape {arr.shape}" in msg and "shape (5, 7, 9)" in msg  # both geometries named
    assert "spacing (2.5, 0.8, 0.7) mm" in msg and "origin (-10, 20, 30) mm" in msg
    assert "axes -S, +P, -L" in msg


def test_subgrid_lands_in_place_only_when_allowed_and_inside(ct, mask):
    affine = as_grid(ct).affine
    sub = mask[1:4, 2:5, 3:9]
    sub_affine = affine.copy()
    sub_affine[:3, 3] = affine[:3, :3] @ np.array([1, 2, 3]) + affine[:3, 3]
    placed = align_to(sub, sub_affine, ct, allow_subgrid=True)
    expected = np.zeros_like(mask)
    expected[1:4, 2:5, 3:9] = sub
    np.testing.assert_array_equal(placed, expected)
    # Reversed and transposed sub-box lands in the same place.
    arr, aff = _stored(sub, sub_affine, (2, 0, 1), (True, False, True))
    np.testing.assert_array_equal(align_to(arr, aff, ct, allow_subgrid=True), expected)
    outside = affine.copy()
    outside[:3, 3] = affine[:3, :3] @ np.array([3, 0, 0]) + affine[:3, 3]
    with pytest.raises(MaskGeometryError, match="reaches outside"):
        align_to(sub, outside, ct, allow_subgrid=True)


def test_closest_axial_reorders_to_superior_posterior_left_and_keeps_positions(ct, mask):
    # Stored as (x, y, z) with y reversed, on a feet-first grid: every axis needs work.
    arr, affine = _stored(mask, as_grid(ct).affine, (2, 1, 0), (False, True, False))
    out, new = closest_axial(arr, affine)
    grid = Grid.from_affine(new, out.shape)
    np.testing.assert_allclose(grid.direction, STANDARD_AXIAL, atol=1e-12)
    # Same voxel values at the same LPS positions.
    idx = np.array(np.nonzero(out)).T[:50]
    lps = (new @ np.c_[idx, np.ones(len(idx))].T)
    in_arr = np.linalg.solve(affine, lps)[:3].T
    np.testing.assert_allclose(in_arr, np.round(in_arr), atol=1e-9)
    src = np.round(in_arr).astype(int)
    assert np.all(arr[tuple(src.T)] == 1)
    assert out.sum() == mask.sum()


def test_as_grid_takes_layer_metadata_and_keeps_extra_fields(ct):
    meta = {**ct.geometry(), "files": ["a", "b"], "sop_instance_uids": ["1", "2"]}
    grid = as_grid(meta)
    assert grid.shape == ct.shape and grid.metadata["files"] == ["a", "b"]
    np.testing.assert_allclose(grid.affine, as_grid(ct).affine)
    with pytest.raises(ValueError, match="origin"):
        as_grid({"shape": [1, 2, 3], "spacing": [1, 1, 1], "direction": np.eye(3)})


def test_segment_choice_by_default_name_or_label():
    layers = np.zeros((1, 2, 2, 2), np.uint8)
    layers[0, 0, 0, 0] = 1
    layers[0, 1, 1, 1] = 2
    segs = [Segment("Right lung", 1, id="lung_r"), Segment("Pneumothorax", 2, id="ptx")]
    mf = MaskFile(layers, np.eye(4), segs, "case.seg.nrrd")
    assert mf.pick() is segs[1]  # named like pneumothorax
    assert mf.pick("right LUNG") is segs[0] and mf.pick("lung_r") is segs[0]
    assert mf.pick(1) is segs[0] and mf.pick("2") is segs[1]
    assert mf.mask().sum() == 1 and mf.mask()[1, 1, 1] == 1
    with pytest.raises(MaskFileError, match="no segment matches 'heart'.*'Right lung'"):
        mf.pick("heart")
    plain = MaskFile(layers, np.eye(4), [Segment("A", 1), Segment("B", 2)], "two.nrrd")
    with pytest.raises(MaskFileError, match="holds 2 segments .*'A' \\(label 1\\)"):
        plain.pick()


def test_labelmaps_that_are_images_are_refused():
    with pytest.raises(MaskFileError, match="negative values"):
        MaskFile.from_labelmap(np.full((2, 2, 2), -1000, np.int16), np.eye(4), "ct.nii")
    with pytest.raises(MaskFileError, match="fractional"):
        MaskFile.from_labelmap(np.full((2, 2, 2), 0.3, np.float32), np.eye(4), "prob.nii")
    mf = MaskFile.from_labelmap(np.array([0.0, 2.0, 5.0, 2.0]).reshape(1, 2, 2), np.eye(4), "f.nii")
    assert [s.label for s in mf.segments] == [2, 5]
    with pytest.raises(MaskFileError, match="distinct values"):
        MaskFile.from_labelmap(np.arange(2000, dtype=np.uint16).reshape(10, 10, 20), np.eye(4), "m")
