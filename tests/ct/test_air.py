"""The core's HU analysis (napari_pneumoseg.ct.air): body outline, enclosed region, aerated lung."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from napari_pneumoseg import CTVolume, measure
from napari_pneumoseg.ct import air
from napari_pneumoseg.ct.air import (
    BODY_HU,
    LUNG_HU,
    LUNG_KEEP_FRACTION,
    LUNG_MIN_ML,
    OUTSIDE_AIR_HU,
    aerated_lung,
    body_mask,
    chest_extent,
    coarse_step,
    enclosed_mask,
    internal_air_mask,
    lung_sized,
)


def _chest(nz=6, ny=64, nx=80, couch=False):
    """A body ellipse (40 HU) with two lungs (-850 HU) and a trachea (-1000 HU). With ``couch``, a
    separate couch below it: a dense shell (100 HU) around a lung-density foam core (-700 HU)."""
    yy, xx = np.mgrid[:ny, :nx]
    body = ((yy - 26) / 22) ** 2 + ((xx - 39.5) / 36) ** 2 <= 1
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    hu[:, body] = 40
    hu[:, 16:36, 14:32] = -850  # right lung, 360 voxels a slice, clear of the skin
    hu[:, 16:36, 48:66] = -850  # left lung
    hu[:, 10:13, 38:41] = -1000  # trachea: below the lung window
    if couch:
        hu[:, 52:60, 4:76] = 100
        hu[:, 54:58, 6:74] = -700
    return hu


# ----------------------------------------------------------------------------- constants


def test_constants_are_what_the_docs_say():
    assert BODY_HU == -400.0 and OUTSIDE_AIR_HU == -500.0
    assert LUNG_HU == (-950.0, -300.0)
    assert (LUNG_KEEP_FRACTION, LUNG_MIN_ML) == (0.02, 5.0)


def test_measure_sides_defines_no_hu_constants_of_its_own():
    """One home: the per-side measurement takes its HU analysis from ct.air."""
    import importlib

    sides = importlib.import_module("napari_pneumoseg.measure.sides")
    for name in ("BODY_HU", "LUNG_HU", "KEEP_FRACTION", "MIN_LUNG_ML", "LUNG_MIN_ML", "COARSE_TARGET",
                 "_inside_body"):
        assert not hasattr(sides, name), name
    assert sides.aerated_lung is aerated_lung


def test_coarse_step():
    assert coarse_step((512, 512)) == 2
    assert coarse_step((256, 256)) == coarse_step((300, 200)) == 1
    assert coarse_step((1024, 768)) == 3
    assert coarse_step((4, 10, 10)) == 1  # a full shape: the last two entries count


# ----------------------------------------------------------------------------- body outline and enclosed region


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enclosed_mask_is_per_slice_hole_filling_of_every_dense_region(seed):
    rng = np.random.default_rng(seed)
    hu = ndimage.gaussian_filter(rng.normal(0, 1, (5, 40, 50)), (0, 2, 2))
    hu = np.where(hu > 0, 40.0, -1000.0).astype(np.float32)
    expected = np.stack([ndimage.binary_fill_holes(~(s <= OUTSIDE_AIR_HU)) for s in hu])
    assert np.array_equal(enclosed_mask(hu), expected)
    # No links between slices: each slice is filled on its own.
    for k in range(hu.shape[0]):
        assert np.array_equal(enclosed_mask(hu[k : k + 1])[0], expected[k])


def test_thresholds_apply_where_they_say():
    hu = np.full((1, 9, 9), -1000.0)
    hu[0, 1:8, 1:8] = 40.0
    hu[0, 4, 4] = OUTSIDE_AIR_HU  # at the threshold, walled in
    hu[0, 4, 0] = hu[0, 4, 1] = OUTSIDE_AIR_HU  # at the threshold, joined to the border
    enclosed = enclosed_mask(hu)
    assert enclosed[0, 4, 4] and not enclosed[0, 4, 1]  # "at or below" is air
    assert enclosed_mask(hu, threshold=-600.0)[0, 4, 1]  # denser than -600: never outside air
    # For the body outline -500 HU is air (below BODY_HU): inside the body where walled in.
    assert body_mask(hu)[0, 4, 4] and not body_mask(hu)[0, 4, 1]
    assert internal_air_mask(hu)[0, 4, 4] and int(internal_air_mask(hu).sum()) == 1


def test_body_outline_and_enclosed_region_differ_on_a_couch():
    """Why there are two outlines: a couch's shell walls in its foam core. The enclosed region
    (measure) holds the core, the body outline (fast path) does not."""
    hu = _chest(couch=True)
    foam = np.zeros(hu.shape, bool)
    foam[:, 54:58, 6:74] = True
    assert enclosed_mask(hu)[foam].all()
    assert not body_mask(hu)[foam].any()
    assert not internal_air_mask(hu)[foam].any()
    # Same body and lungs otherwise.
    plain = _chest()
    assert np.array_equal(body_mask(hu), body_mask(plain))
    assert np.array_equal(enclosed_mask(hu)[:, :50], enclosed_mask(plain)[:, :50])


# ----------------------------------------------------------------------------- lung


def test_lung_sized_rule():
    voxel_ml = 0.01
    # Largest 200 mL: 2 % is 4 mL, so the 5 mL minimum is the bar.
    assert lung_sized(np.array([20_000, 501, 499]), voxel_ml).tolist() == [True, True, False]
    # Largest 1000 mL: 2 % (20 mL) is the bar, above the minimum.
    assert lung_sized(np.array([100_000, 2001, 1999, 600]), voxel_ml).tolist() == [True, True, False, False]
    assert lung_sized(np.array([], int), voxel_ml).size == 0


def test_aerated_lung_leaves_out_airways_pneumothorax_and_small_specks():
    hu = _chest()
    hu[:, 20:24, 50:56] = -1000  # pneumothorax-like air in the left lung: below the window
    hu[:, 42, 40] = -850  # a speck inside the body, far below the lung-sized bar
    voxel_ml = 0.1
    est = aerated_lung(hu, voxel_ml)
    window = (hu > LUNG_HU[0]) & (hu < LUNG_HU[1])
    lungs = np.zeros(hu.shape, bool)
    lungs[:, 16:36, 14:32] = lungs[:, 16:36, 48:66] = True
    assert est.step == 1
    assert np.array_equal(est.lung, window & lungs)
    assert not est.lung[:, 10:13, 38:41].any()  # trachea
    assert not est.lung[:, 42, 40].any()  # speck
    assert est.slices().tolist() == list(range(hu.shape[0]))
    # An excluded voxel (a pneumothorax mask) is not lung, on the coarse grid or at full resolution.
    exclude = np.zeros(hu.shape, bool)
    exclude[:, 30:34, 16:22] = True
    est2 = aerated_lung(hu, voxel_ml, exclude=exclude.astype(np.uint8))
    assert not est2.lung[exclude].any()
    assert not est2.full_slice(2, hu[2], exclude[2])[exclude[2]].any()
    with pytest.raises(ValueError, match="exclude shape"):
        aerated_lung(hu, voxel_ml, exclude=exclude[:, :-1])
    with pytest.raises(ValueError, match="3-D"):
        aerated_lung(hu[0], voxel_ml)


def test_aerated_lung_counts_at_full_resolution_on_a_coarse_grid():
    """Step 2: the search runs on every other pixel; full_slice counts every full-resolution lung voxel."""
    hu = _chest(ny=64, nx=80)
    est = aerated_lung(hu, 0.1, step=2)
    assert est.step == 2 and est.lung.shape == (hu.shape[0], 32, 40)
    k = 3
    full = est.full_slice(k, hu[k])
    window = (hu[k] > LUNG_HU[0]) & (hu[k] < LUNG_HU[1])
    lungs = np.zeros(hu.shape[1:], bool)
    lungs[16:36, 14:32] = lungs[16:36, 48:66] = True
    assert np.array_equal(full, window & lungs)
    assert np.array_equal(est.full_slice(k, hu[k], lungs), np.zeros_like(lungs))


def test_chest_extent_uses_the_same_lung_sized_rule(monkeypatch):
    hu = _chest()
    sp = (5.0, 2.0, 2.0)  # 0.02 mL voxels; a lung is 1440 mm^2 a slice, too large for an airway
    assert chest_extent(hu, sp).lung.all()
    assert aerated_lung(hu, 0.02).lung.any()
    # Each lung is 6 x 360 voxels = 43.2 mL: raising the bar to 50 mL drops them in both searches.
    monkeypatch.setattr(air, "LUNG_MIN_ML", 50.0)
    assert not chest_extent(hu, sp).lung.any()
    assert not aerated_lung(hu, 0.02).lung.any()


def test_measure_counts_the_couch_core_as_lung():
    """The known limit of the enclosed region, pinned: a couch's foam core of lung density is
    counted as lung (split between the sides), which the body outline would leave out."""
    plain, couch = _chest(), _chest(couch=True)
    mask = np.zeros(plain.shape, np.uint8)
    mask[:, 20:24, 50:56] = 1
    sp = (5.0, 2.0, 2.0)
    a = measure(mask, ct=CTVolume(hu=plain, spacing=sp))
    b = measure(mask, ct=CTVolume(hu=couch, spacing=sp))
    foam_ml = 6 * 4 * 68 * 0.02
    assert b.left_lung_ml + b.right_lung_ml == pytest.approx(a.left_lung_ml + a.right_lung_ml + foam_ml)
    assert b.left_ml == a.left_ml


def test_the_core_imports_no_gui_and_no_tensorflow():
    code = (
        "import sys, numpy as np\n"
        "import napari_pneumoseg.ct.air, napari_pneumoseg.measure\n"
        "from napari_pneumoseg.ct.volume import ct_from_geometry\n"
        "ct, notes = ct_from_geometry(np.zeros((2, 4, 4)))\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'magicgui', 'tensorflow') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_chest_extent_boxes_take_an_index_a_slice_or_a_mask():
    hu = _chest()
    ext = chest_extent(hu, (5.0, 2.0, 2.0))
    assert ext.box(2) == ext.box(slice(2, 3)) == ext.box(np.arange(6) == 2)
    assert ext.air(2) == ext.air(slice(2, 3)) is not None
    lo, hi = ext.box(2)[:2]
    assert body_mask(hu)[2].any(axis=1).nonzero()[0][[0, -1]].tolist() == [lo, hi - 1]
