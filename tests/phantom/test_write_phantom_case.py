"""Writing a phantom as a case folder: DICOM series, NRRD truth and info.json, read back."""

from __future__ import annotations

import json

import nrrd
import numpy as np
import pytest

from napari_pneumoseg.ct import read_ct
from napari_pneumoseg.phantom import make_phantom, write_phantom_case


def test_write_phantom_case_round_trips(tmp_path):
    ph = make_phantom(seed=9, side="right", size="large", n_slices=16, shape_yx=(96, 96))
    case = write_phantom_case(ph, tmp_path / "case")
    assert sorted(p.name for p in case.iterdir()) == ["ct", "info.json", "truth.nrrd"]
    ct = read_ct(case / "ct")
    assert ct.warnings == []
    np.testing.assert_array_equal(ct.hu, np.rint(ph.ct.hu))
    np.testing.assert_allclose(ct.spacing, ph.ct.spacing, atol=1e-6)
    np.testing.assert_allclose(ct.origin, ph.ct.origin, atol=1e-6)
    np.testing.assert_allclose(ct.direction, ph.ct.direction, atol=1e-9)
    assert ct.metadata["series_description"] == "Pneumothorax phantom"
    mask, header = nrrd.read(str(case / "truth.nrrd"), index_order="C")
    np.testing.assert_array_equal(mask, ph.truth)
    assert header["space"] == "left-posterior-superior"
    # NRRD index (i, j, k) -> LPS must equal the CT's (k, j, i) -> LPS, voxel for voxel.
    idx = np.argwhere(ph.truth)[:: max(1, ph.truth.sum() // 50)]
    lps_nrrd = header["space origin"] + idx[:, ::-1] @ header["space directions"]
    np.testing.assert_allclose(lps_nrrd, ct.index_to_lps(idx), atol=1e-6)
    info = json.loads((case / "info.json").read_text())
    assert info["volume_ml"] == pytest.approx(ph.info["volume_ml"])
    with pytest.raises(FileExistsError):
        write_phantom_case(ph, case)

