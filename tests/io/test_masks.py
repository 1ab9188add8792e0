"""read_mask / write_mask: every format round-trips on head-first, feet-first and phantom CTs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from napari_pneumoseg import read_ct
from napari_pneumoseg.io import (
    MaskFileError,
    MaskGeometryError,
    load_mask,
    mask_format,
    read_mask,
    write_mask,
)
from napari_pneumoseg.phantom import make_phantom, write_phantom_case

ALL = [".seg.nrrd", ".nrrd", ".nii", ".nii.gz", ".dcm"]


def make_feet_first(chest_dir, out, slices=range(24, 32)):
    """A feet-first copy of a few chest slices: rows run to the patient's right, order reversed.

    Pixels are kept; ImageOrientationPatient becomes [-1 0 0 0 1 0] with the
    first column moved to the patient's left edge of the same field of view,
    PatientPosition FFS, InstanceNumber reversed, all UIDs new.
    """
    files = sorted(chest_dir.iterdir())
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    by_z = [files[i] for i in np.argsort(z)]
    chosen = [pydicom.dcmread(by_z[k]) for k in slices]
    series, frame_of_ref = generate_uid(), generate_uid()
    out.mkdir()
    for n, ds in enumerate(chosen):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [x + (int(ds.Columns) - 1) * float(ds.PixelSpacing[1]), y, z]
        ds.PatientPosition = "FFS"
        ds.InstanceNumber = len(chosen) - n
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame_of_ref
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / f"ffs{n:02d}.dcm")
    return out


@pytest.fixture(scope="module")
def cts(chest_dir, tmp_path_factory):
    chest = read_ct(chest_dir)
    ffs = read_ct(make_feet_first(chest_dir, tmp_path_factory.mktemp("ffs") / "ct"))
    ph = make_phantom(seed=2, side="both", size="moderate", n_slices=16, spacing=(6.0, 3.5, 3.5),
                      shape_yx=(80, 96))
    return {"head-first": chest, "feet-first": ffs, "phantom": ph.ct, "phantom_truth": ph.truth}


def _mask(ct):
    """Air below -500 HU in an off-centre box: asymmetric along every axis."""
    nz, ny, nx = ct.shape
    m = np.zeros(ct.shape, np.uint8)
    box = (slice(nz // 4, nz - 1), slice(ny // 4, ny * 3 // 5), slice(nx // 8, nx // 2))
    m[box] = ct.hu[box] < -500
    assert 0 < m.sum()
    return m


def test_feet_first_series_really_is_feet_first(cts):
    ffs = cts["feet-first"]
    assert ffs.metadata["patient_position"] == "FFS"
    np.testing.assert_allclose(ffs.direction, [[0, 0, -1], [0, 1, 0], [-1, 0, 0]], atol=1e-9)
    assert ffs.shape == (8, 512, 512)


CASES = [(which, suffix) for which in ("head-first", "feet-first", "phantom") for suffix in ALL
         # The in-memory phantom has no DICOM files for a SEG to reference (a clear error,
         # tested in test_dicom_seg); its DICOM-SEG round trip is below, via its DICOM series.
         if (which, suffix) != ("phantom", ".dcm")]


@pytest.mark.parametrize("which, suffix", CASES)
def test_every_format_round_trips(cts, which, suffix, tmp_path):
    ct = cts[which]
    mask = cts["phantom_truth"] if which == "phantom" else _mask(ct)
    _check_round_trip(mask, ct, tmp_path / f"mask{suffix}")


def test_phantom_case_on_disk_round_trips_every_format(tmp_path):
    """The phantom as DICOM (ct/write.py): its truth.nrrd and all our formats land on it."""
    ph = make_phantom(seed=3, side="left", size="large", n_slices=12, spacing=(6.0, 4.0, 4.0),
                      shape_yx=(64, 80))
    folder = write_phantom_case(ph, tmp_path / "case")
    ct = read_ct(folder / "ct")
    assert ct.shape == ph.truth.shape
    np.testing.assert_array_equal(read_mask(folder / "truth.nrrd", like=ct), ph.truth)
    for suffix in ALL:
        _check_round_trip(ph.truth, ct, tmp_path / f"truth{suffix}")


def _check_round_trip(mask, ct, path):
    path = write_mask(mask, path, ct)
    back = read_mask(path, like=ct)
    assert back.dtype == np.uint8 and back.shape == ct.shape
    np.testing.assert_array_equal(back, mask)
    # Geometry too: the file's own affine puts its voxels at the CT's voxel positions.
    mf = load_mask(path)
    idx = np.argwhere(mf.mask())[:: max(1, int(mask.sum()) // 50)]
    lps = (mf.affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    ct_idx = np.linalg.solve((ct.direction * np.array(ct.spacing)[:, None]).T,
                             (lps - np.array(ct.origin)).T).T
    np.testing.assert_allclose(ct_idx, np.round(ct_idx), atol=1e-3)
    assert np.all(mask[tuple(np.round(ct_idx).astype(int).T)] == 1)


def test_feet_first_mask_is_not_accepted_on_the_head_first_ct(cts, tmp_path):
    path = write_mask(_mask(cts["feet-first"]), tmp_path / "ffs.nii.gz", cts["feet-first"])
    with pytest.raises(MaskGeometryError, match="not on the CT's voxel grid"):
        read_mask(path, like=cts["head-first"])


def test_existing_files_are_replaced_only_when_asked(cts, tmp_path):
    ct, truth = cts["phantom"], cts["phantom_truth"]
    path = tmp_path / "m.seg.nrrd"
    write_mask(truth, path, ct)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_mask(np.zeros_like(truth), path, ct)
    assert path.read_bytes() == before
    write_mask(np.zeros_like(truth), path, ct, overwrite=True)
    assert read_mask(path, like=ct).sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.seg.nrrd"]  # no temp files left


def test_clear_errors_for_type_empty_missing_and_bad_masks(cts, tmp_path):
    ct, truth = cts["phantom"], cts["phantom_truth"]
    with pytest.raises(MaskFileError, match="unknown mask file type.*\\.seg\\.nrrd"):
        write_mask(truth, tmp_path / "m.png", ct)
    (tmp_path / "m.png").write_bytes(b"\x89PNG....")
    with pytest.raises(MaskFileError, match="m.png: unknown mask file type"):
        read_mask(tmp_path / "m.png", like=ct)
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(MaskFileError, match="empty.nii.gz: the file is empty"):
        read_mask(tmp_path / "empty.nii.gz", like=ct)
    with pytest.raises(MaskFileError, match="no such file"):
        read_mask(tmp_path / "missing.seg.nrrd", like=ct)
    (tmp_path / "text.seg.nrrd").write_text("hello")
    with pytest.raises(MaskFileError, match="text.seg.nrrd: not a readable NRRD"):
        read_mask(tmp_path / "text.seg.nrrd", like=ct)
    with pytest.raises(ValueError, match="shape"):
        write_mask(truth[1:], tmp_path / "short.nrrd", ct)
    labels = truth.astype(np.int32) * 2
    labels[0, 0, 0] = 3
    with pytest.raises(ValueError, match="several labels \\(2, 3\\)"):
        write_mask(labels, tmp_path / "labels.nrrd", ct)
    assert not (tmp_path / "labels.nrrd").exists()
    # bool masks and 0/255 masks are fine: stored as 0/1.
    write_mask(truth.astype(bool), tmp_path / "b.nii", ct)
    write_mask(truth * 255, tmp_path / "c.nii", ct)
    for name in ("b.nii", "c.nii"):
        np.testing.assert_array_equal(read_mask(tmp_path / name, like=ct), truth)


def test_format_follows_suffix_case_insensitively(tmp_path):
    assert mask_format("a.SEG.NRRD") == "seg.nrrd" and mask_format("a.nrrd") == "nrrd"
    assert mask_format("a.Nii.Gz") == "nifti" and mask_format("a.dcm") == "dicom-seg"
    assert mask_format(tmp_path) == "dicom-seg"  # a folder: a DICOM-SEG inside
    with pytest.raises(MaskFileError):
        mask_format("a.nhdr", for_writing=True)
