"""Lungs, airway, pleural cavities and hila found from HU: on a real chest CT and on made-up volumes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import read_ct
from napari_pneumoseg.ct.frame import patient_frame
from napari_pneumoseg.ct.lungs import find_lungs


@pytest.fixture(scope="module")
def tcia(chest_dir):
    ct = read_ct(chest_dir)
    frame = patient_frame(ct)
    return ct, frame, find_lungs(frame.view(ct.hu), frame.spacing)


def test_both_lungs_and_their_cavities_are_found(tcia):
    ct, frame, lungs = tcia
    ml = ct.voxel_volume_ml
    for side in ("left", "right"):
        lung, cav = lungs.lung[side], lungs.cavity[side]
        assert 1000 < cav.sum() * ml < 5000, side
        assert (lung <= cav).all() and (cav <= lungs.body).all()
        # The cavity holds the vessels: it is a little bigger than the aerated lung.
        assert 1.0 < cav.sum() / lung.sum() < 1.15
    assert not (lungs.cavity["left"] & lungs.cavity["right"]).any()
    # Canonical x grows to the patient's left: the left cavity lies right of the midline index.
    for side, sign in (("left", 1), ("right", -1)):
        x = np.nonzero(lungs.cavity[side])[2] + lungs.box[2].start
        assert np.mean(sign * (x - lungs.midline_x) > 0) > 0.99


def test_the_trachea_and_main_bronchi_are_found_and_left_out(tcia):
    ct, frame, lungs = tcia
    ml = ct.voxel_volume_ml
    assert lungs.carina_z is not None and 5 < lungs.airway.sum() * ml < 100
    assert not (lungs.airway & (lungs.cavity["left"] | lungs.cavity["right"])).any()
    ks = np.flatnonzero(lungs.airway.any(axis=(1, 2))) + lungs.box[0].start
    assert ks.max() >= ct.shape[0] - 3  # from the top slices ...
    assert ks.min() < lungs.carina_z  # ... down past the carina
    # The trachea is on the midline: within 15 mm of the middle of the body.
    cols = np.flatnonzero(lungs.body.any(axis=(0, 1))) + lungs.box[2].start
    assert abs(lungs.midline_x - 0.5 * (cols[0] + cols[-1])) * frame.spacing[2] < 15
    # Each hilum is below the carina, on its own side, medial in its lung.
    for side, sign in (("left", 1), ("right", -1)):
        k, j, i = lungs.hilum[side]
        assert k < lungs.carina_z and 10 < sign * (i - lungs.midline_x) * frame.spacing[2] < 80


def _two_lungs(touch=False):
    hu = np.full((12, 60, 80), -1000.0)
    hu[:, 5:55, 5:75] = 40.0
    hu[1:11, 12:48, 10:38] = -850.0
    hu[1:11, 12:48, 42:70] = -850.0
    if touch:
        hu[1:11, 12:20, 38:42] = -850.0  # an anterior junction: the lungs meet
    hu[4:8, 25:30, 20:24] = 60.0  # a vessel inside the right lung
    return hu


@pytest.mark.parametrize("touch", [False, True])
def test_lungs_that_touch_are_split_at_the_midline(touch):
    lungs = find_lungs(_two_lungs(touch), (5.0, 2.0, 2.0))
    ox = lungs.box[2].start
    for side, sl in (("right", slice(0, 40)), ("left", slice(40, 80))):
        cav = lungs.full(lungs.cavity[side])
        assert cav[:, :, sl].sum() == cav.sum() > 0, side
    assert 38 <= lungs.midline_x <= 42 and ox >= 0
    # The vessel inside the lung belongs to its cavity, not to its aerated lung.
    assert lungs.full(lungs.cavity["right"])[5, 27, 22] and not lungs.full(lungs.lung["right"])[5, 27, 22]


def test_a_volume_without_lungs_is_refused():
    with pytest.raises(ValueError, match="no lungs found"):
        find_lungs(np.full((6, 40, 40), 40.0), (5.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="no body found"):
        find_lungs(np.full((6, 40, 40), -1000.0), (5.0, 1.0, 1.0))
