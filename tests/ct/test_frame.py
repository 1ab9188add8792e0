"""The simulator's patient frame: array axes turned to superior, dependent, patient-left."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import CTVolume
from napari_pneumoseg.ct.frame import patient_frame


def _ct(direction, position=None, shape=(4, 5, 6), spacing=(5.0, 0.8, 0.7)):
    meta = {} if position is None else {"patient_position": position}
    return CTVolume(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), spacing,
                    direction=np.asarray(direction, float), metadata=meta)


AXIAL = [[0, 0, 1], [0, 1, 0], [1, 0, 0]]


def test_a_standard_axial_series_is_already_canonical():
    f = patient_frame(_ct(AXIAL, "HFS"))
    assert f.perm == (0, 1, 2) and f.flip == (False, False, False) and not f.prone
    assert f.spacing == (5.0, 0.8, 0.7)


def test_reversed_axes_are_flipped_and_the_view_writes_through():
    ct = _ct([[0, 0, -1], [0, -1, 0], [-1, 0, 0]], "FFS")
    f = patient_frame(ct)
    assert f.flip == (True, True, True)
    v = f.view(ct.hu)
    assert v[0, 0, 0] == ct.hu[-1, -1, -1] and np.shares_memory(v, ct.hu)
    v[0, 0, 0] = -5
    assert ct.hu[-1, -1, -1] == -5
    assert f.source_slice(0, 4) == 3


def test_rows_running_left_are_swapped_with_columns():
    ct = _ct([[0, 0, 1], [1, 0, 0], [0, 1, 0]])  # rows run to the patient's left, columns posteriorly
    f = patient_frame(ct)
    assert f.perm == (0, 2, 1) and f.spacing == (5.0, 0.7, 0.8)
    assert f.view(ct.hu).shape == (4, 6, 5)


def test_prone_patients_have_the_anterior_side_dependent():
    f = patient_frame(_ct(AXIAL, "HFP"))
    assert f.prone and f.flip == (False, True, False)


@pytest.mark.parametrize("position", ["HFDL", "FFDR", "SITTING"])
def test_other_positions_are_refused(position):
    with pytest.raises(ValueError, match="not supine"):
        patient_frame(_ct(AXIAL, position))


def test_non_axial_or_oblique_stacks_are_refused():
    with pytest.raises(ValueError, match="not axial"):
        patient_frame(_ct([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))  # sagittal slices
    r = 1 / np.sqrt(3)
    with pytest.raises(ValueError, match="direction matrix"):
        patient_frame(_ct([[r, r, r], [0, 1, 0], [1, 0, 0]]))  # no axis runs head to feet
