"""simulate_pneumothorax's contract on small synthetic patients: arguments, errors, progress, cancel, dtypes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_pneumoseg import CTVolume
from napari_pneumoseg.phantom import make_phantom
from napari_pneumoseg.progress import Cancelled
from napari_pneumoseg.simulate import SIDES, SIZES, TARGET_PCT, simulate_pneumothorax


@pytest.fixture(scope="module")
def patient():
    """A small phantom chest without a pneumothorax (40 slices of 128 x 128)."""
    return make_phantom(seed=3, side="none", n_slices=40, shape_yx=(128, 128)).ct


def test_the_public_names():
    assert SIDES == ("left", "right", "both") and SIZES == ("small", "moderate", "large")
    assert set(TARGET_PCT) == set(SIZES)


@pytest.mark.parametrize("kwargs, message", [
    ({"side": "up"}, "side must be one of"),
    ({"side": "none"}, "side must be one of"),
    ({"size": "huge"}, "size must be one of"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"seed": 1.5}, "seed must be a non-negative integer"),
])
def test_bad_arguments_say_what_is_wrong(patient, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_pneumothorax(patient, **kwargs)


@pytest.mark.parametrize("hu", [np.zeros((6, 48, 48)), np.full((6, 48, 48), -1000.0)],
                         ids=["water", "empty"])
def test_a_ct_without_lungs_is_refused(hu):
    with pytest.raises(ValueError, match="no (lungs|body) found in the CT"):
        simulate_pneumothorax(CTVolume(hu, spacing=(5.0, 1.0, 1.0)))


def test_not_3d_or_not_supine_or_not_axial_is_refused(patient):
    class Flat:
        hu = np.zeros((8, 8))
        metadata: dict = {}

    with pytest.raises(ValueError, match="3-D"):
        simulate_pneumothorax(Flat())
    decubitus = CTVolume(patient.hu, patient.spacing, metadata={"patient_position": "HFDL"})
    with pytest.raises(ValueError, match="not supine"):
        simulate_pneumothorax(decubitus)
    sagittal = CTVolume(patient.hu, patient.spacing,
                        direction=np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError, match="not axial"):
        simulate_pneumothorax(sagittal)


def test_progress_runs_to_the_end_and_cancel_stops(patient):
    calls = []
    case = simulate_pneumothorax(patient, side="both", size="small", progress=lambda *a: calls.append(a))
    done = [c[0] for c in calls]
    assert done == list(range(1, len(calls) + 1)) and all(c[1] == len(calls) for c in calls)
    assert all(isinstance(c[2], str) and c[2] for c in calls)
    assert case.truth.any()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        simulate_pneumothorax(patient, cancel=stop)
    seen = []

    def cancel_after_lungs():
        return len(seen) >= 1

    with pytest.raises(Cancelled):
        simulate_pneumothorax(patient, progress=lambda *a: seen.append(a), cancel=cancel_after_lungs)
    assert len(seen) == 1


def test_integer_cts_stay_integer_and_untouched_outside(patient):
    ct16 = CTVolume(np.rint(patient.hu).astype(np.int16), patient.spacing, patient.origin, patient.direction)
    case = simulate_pneumothorax(ct16, side="right", size="moderate", seed=2)
    assert case.ct.hu.dtype == np.int16
    changed = case.ct.hu != ct16.hu
    assert changed.any()
    # Nothing changes outside the right half of the patient (the phantom is centred in x).
    assert not changed[:, :, ct16.shape[2] // 2 + 4:].any()
    assert np.median(case.ct.hu[case.truth > 0]) < -900


def test_every_size_and_side_works_on_a_small_phantom(patient):
    for size in SIZES:
        case = simulate_pneumothorax(patient, side="both", size=size, seed=5)
        for side in ("left", "right"):
            lo, hi = TARGET_PCT[size]
            assert lo - 0.5 <= case.facts["pct_hemithorax"][side] <= hi + 0.5, (size, side)


def test_the_same_seed_gives_the_same_case_and_another_seed_another(patient):
    a = simulate_pneumothorax(patient, side="left", size="moderate", seed=11)
    b = simulate_pneumothorax(patient, side="left", size="moderate", seed=11)
    c = simulate_pneumothorax(patient, side="left", size="moderate", seed=12)
    assert np.array_equal(a.truth, b.truth) and np.array_equal(a.ct.hu, b.ct.hu) and a.facts == b.facts
    assert not np.array_equal(a.truth, c.truth)
    assert a.facts["parameters"]["target_pct"] != c.facts["parameters"]["target_pct"]


def _turned(ct, flip_axes=(), transpose=False):
    """The same patient stored another way: reversed and/or swapped array axes, geometry to match."""
    hu, d = ct.hu, ct.direction.copy()
    corner = [0, 0, 0]
    for ax in flip_axes:
        hu = np.flip(hu, axis=ax)
        d[ax] *= -1
        corner[ax] = ct.shape[ax] - 1
    origin = tuple(ct.index_to_lps(corner))
    if transpose:
        hu = np.swapaxes(hu, 1, 2)
        d = d[[0, 2, 1]]
    spacing = tuple(np.asarray(ct.spacing)[[0, 2, 1]]) if transpose else ct.spacing
    return CTVolume(np.ascontiguousarray(hu), spacing, origin, d, metadata=dict(ct.metadata))


def _back(arr, flip_axes=(), transpose=False):
    if transpose:
        arr = np.swapaxes(arr, 1, 2)
    for ax in flip_axes:
        arr = np.flip(arr, axis=ax)
    return arr


@pytest.mark.parametrize("flip_axes, transpose", [((0,), False), ((2,), False), ((0, 1, 2), False), ((), True)],
                         ids=["feet-first", "columns-to-the-right", "all-reversed", "rows-and-columns-swapped"])
def test_any_storage_of_the_same_patient_gives_the_same_case(patient, flip_axes, transpose):
    ref = simulate_pneumothorax(patient, side="left", size="moderate", seed=4)
    other = _turned(patient, flip_axes, transpose)
    case = simulate_pneumothorax(other, side="left", size="moderate", seed=4)
    assert np.array_equal(_back(case.truth, flip_axes, transpose), ref.truth)
    assert np.array_equal(_back(case.ct.hu, flip_axes, transpose), ref.ct.hu)
    pos = case.ct.index_to_lps(np.argwhere(case.truth).astype(float))
    np.testing.assert_allclose(pos.mean(axis=0), ref.ct.index_to_lps(np.argwhere(ref.truth).astype(float)).mean(0),
                               atol=1e-6)


def test_prone_patients_get_the_air_on_the_other_side_of_the_lung(patient):
    def centroid_y(ct, mask):
        return ct.index_to_lps(np.argwhere(mask).astype(float))[:, 1].mean()

    supine = simulate_pneumothorax(patient, side="right", size="moderate", seed=6)
    prone_ct = CTVolume(patient.hu, patient.spacing, patient.origin, patient.direction,
                        metadata=dict(patient.metadata, patient_position="HFP"))
    prone = simulate_pneumothorax(prone_ct, side="right", size="moderate", seed=6)
    changed = (supine.ct.hu != patient.hu) | (prone.ct.hu != patient.hu)  # both inside the same cavity
    mid = centroid_y(patient, changed)
    assert centroid_y(patient, supine.truth > 0) < mid - 5.0  # anterior (LPS y smaller)
    assert centroid_y(patient, prone.truth > 0) > mid + 5.0  # posterior
