"""Training cases: the CT / ground-truth pairing rule (pure, used by the Train widget), and add_case."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from napari_pneumoseg import Cancelled, add_case, make_phantom, read_ct
from napari_pneumoseg.io import MaskGeometryError
from napari_pneumoseg.training.cases import load_cases, pair_with_truth

A, B = (4, 8, 8), (5, 8, 8)


def test_named_truth_wins_over_shape():
    labels = [("other", A), ("ct1 truth", A), ("ct2 truth", B)]
    assert pair_with_truth([("ct1", A), ("ct2", B)], labels) == [1, 2]


def test_the_only_mask_of_its_shape_is_taken_when_none_is_named():
    assert pair_with_truth([("ct", B)], [("x", A), ("y", B)]) == [1]


def test_no_mask_or_several_of_the_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="no ground-truth mask for 'ct': name one 'ct truth' "):
        pair_with_truth([("ct", A)], [("x", B)])
    with pytest.raises(ValueError, match=r"\(2 masks have its shape\)"):
        pair_with_truth([("ct", A)], [("x", A), ("y", A)])


def test_named_truth_of_another_shape_is_refused():
    with pytest.raises(ValueError, match=r"'ct truth' has shape \(5, 8, 8\) but 'ct' has \(4, 8, 8\)"):
        pair_with_truth([("ct", A)], [("ct truth", B)])


# ---------------------------------------------------------------------------- add_case

@pytest.fixture(scope="module")
def small_ct():
    ph = make_phantom(seed=5, side="left", n_slices=12, shape_yx=(96, 96))
    return ph.ct, ph.truth


def test_add_case_writes_what_load_cases_reads(small_ct, tmp_path):
    ct, truth = small_ct
    folder = add_case(tmp_path / "ds", ct, truth, patient_id="P 01",
                      provenance={"pre_annotation": "pleural air", "voxels_edited": 12})
    assert folder == tmp_path / "ds" / "P_01"
    assert sorted(p.name for p in folder.iterdir()) == ["case.json", "ct", "truth.seg.nrrd"]
    record = json.loads((folder / "case.json").read_text())
    assert record["provenance"] == {"pre_annotation": "pleural air", "voxels_edited": 12}
    assert record["mask"]["voxels"] == int(np.count_nonzero(truth))
    (case,) = load_cases(tmp_path / "ds")
    assert case.name == "P_01" and np.array_equal(case.mask, (truth != 0).astype(np.uint8))
    assert np.allclose(case.hu, np.round(ct.hu), atol=1) and np.allclose(case.spacing, ct.spacing)
    # Read back and added again (from DICOM this time): a derived series of its source, new name needed.
    back = read_ct(folder / "ct")
    with pytest.raises(FileExistsError, match="exists"):
        add_case(tmp_path / "ds", back, truth, patient_id="P 01")
    assert json.loads((folder / "case.json").read_text())["provenance"]["voxels_edited"] == 12  # untouched
    second = add_case(tmp_path / "ds", back, truth)  # default name from the series' PatientID
    assert second.name != "P_01" and (second / "ct").is_dir()
    add_case(tmp_path / "ds", back, np.zeros_like(truth), patient_id="P 01", overwrite=True)
    assert json.loads((folder / "case.json").read_text())["mask"]["voxels"] == 0


def test_add_case_refuses_a_mask_off_the_grid_and_cancel_leaves_nothing(small_ct, tmp_path):
    ct, truth = small_ct
    with pytest.raises(MaskGeometryError, match="voxel grid"):
        add_case(tmp_path / "ds", ct, truth[:, :-1])
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        add_case(tmp_path / "ds", ct, truth, patient_id="x", cancel=stop)
    assert not (tmp_path / "ds" / "x").exists()
    with pytest.raises(ValueError, match="JSON"):
        add_case(tmp_path / "ds", ct, truth, patient_id="y", provenance={"bad": object()})
    assert not (tmp_path / "ds" / "y").exists()
