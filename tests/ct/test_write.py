"""Writing CT DICOM series and NRRD masks: valid files, exact round trips, all-or-nothing."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pydicom
import pytest
from pydicom import config

from napari_pneumoseg.ct import CTVolume, read_ct
from napari_pneumoseg.ct.write import HU_RANGE, write_dicom_series
from napari_pneumoseg.progress import Cancelled

STANDARD = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _ct(shape=(6, 20, 24), spacing=(3.0, 0.6, 0.8), origin=(-12.3, 45.6, -200.25), direction=STANDARD,
        seed=0) -> CTVolume:
    rng = np.random.default_rng(seed)
    hu = rng.uniform(-1100, 1500, shape).astype(np.float32)
    hu[0, 0, :3] = [-50000.0, 40000.0, 0.5]  # beyond int16 after the offset, and a tie
    return CTVolume(hu=hu, spacing=spacing, origin=origin, direction=direction,
                    metadata={"series_description": "test series", "window": [40.0, 400.0]})


def _rotation(ax, ay, az):
    def r(axis, a):
        c, s = np.cos(a), np.sin(a)
        m = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m
    return r(2, az) @ r(1, ay) @ r(0, ax)


def _expected_hu(ct):
    return np.clip(np.rint(ct.hu.astype(np.float64)), *HU_RANGE)


@pytest.fixture
def strict_pydicom():
    """Invalid VRs raise while writing, so a passing write is also a valid one."""
    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.RAISE
    yield
    config.settings.writing_validation_mode = old


def test_round_trip_through_read_ct(tmp_path, strict_pydicom):
    ct = _ct()
    files = write_dicom_series(ct, tmp_path / "series")
    assert [f.name for f in files] == [f"CT_{k:04d}.dcm" for k in range(1, 7)]
    assert all(f.is_file() for f in files)
    back = read_ct(tmp_path / "series")
    assert back.warnings == []
    np.testing.assert_array_equal(back.hu, _expected_hu(ct))
    assert back.hu[0, 0, 0] == HU_RANGE[0] and back.hu[0, 0, 1] == HU_RANGE[1]
    np.testing.assert_allclose(back.spacing, ct.spacing, atol=1e-9)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, ct.direction, atol=1e-12)
    assert back.metadata["series_description"] == "test series"
    assert back.metadata["window"] == [40.0, 400.0]


def test_files_are_valid_ct_image_storage(tmp_path, strict_pydicom):
    ct = _ct()
    files = write_dicom_series(ct, tmp_path / "s", series_description="Mine", patient_id="P1",
                               patient_name="Doe^Jane", series_number=7)
    datasets = [pydicom.dcmread(f) for f in files]
    with open(files[0], "rb") as fh:
        head = fh.read(132)
    assert head[128:] == b"DICM"
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and first.Modality == "CT"
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    bits = (first.BitsAllocated, first.BitsStored, first.HighBit, first.PixelRepresentation)
    assert bits == (16, 16, 15, 1)
    assert first.RescaleSlope == 1 and first.SeriesDescription == "Mine" and first.SeriesNumber == 7
    assert first.PatientID == "P1" and str(first.PatientName) == "Doe^Jane"
    # Rows are y, columns x: PixelSpacing is (between rows, between columns).
    assert [float(v) for v in first.PixelSpacing] == [0.6, 0.8]
    assert (first.Rows, first.Columns) == (20, 24)
    assert float(first.SliceThickness) == 3.0
    # One study, series and frame of reference; a fresh instance UID per file.
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(getattr(d, attr)) for d in datasets}) == 1
    assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)
    assert [d.InstanceNumber for d in datasets] == list(range(1, 7))
    # Positions step along the slice normal.
    pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
    np.testing.assert_allclose(np.diff(pos, axis=0), [[0, 0, 3.0]] * 5, atol=1e-9)
    # The pixel values decode through pydicom too.
    decoded = first.pixel_array * 1.0 + float(first.RescaleIntercept)
    np.testing.assert_array_equal(decoded, _expected_hu(ct)[0])
    # A second series gets new UIDs.
    other = pydicom.dcmread(write_dicom_series(ct, tmp_path / "t")[0])
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    assert other.StudyInstanceUID != first.StudyInstanceUID


def test_oblique_right_handed_geometry_round_trips(tmp_path):
    direction = STANDARD @ _rotation(0.2, -0.15, 0.5).T  # rotate every axis the same way
    ct = _ct(direction=direction)
    back = read_ct(write_dicom_series(ct, tmp_path / "s")[0].parent)
    np.testing.assert_allclose(back.direction, direction, atol=1e-9)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-9)
    np.testing.assert_allclose(back.spacing, ct.spacing, atol=1e-9)
    np.testing.assert_array_equal(back.hu, _expected_hu(ct))


def test_left_handed_volume_reads_back_flipped(tmp_path):
    """Documented: readers put slices along row x column, so a left-handed stack comes back reversed."""
    direction = STANDARD.copy()
    direction[0] = [0.0, 0.0, -1.0]  # slices going inferior
    ct = _ct(direction=direction)
    back = read_ct(write_dicom_series(ct, tmp_path / "s")[0].parent)
    np.testing.assert_array_equal(back.hu, _expected_hu(ct)[::-1])
    np.testing.assert_allclose(back.direction[0], [0, 0, 1])
    np.testing.assert_allclose(back.origin, ct.index_to_lps([ct.shape[0] - 1, 0, 0]), atol=1e-9)


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        write_dicom_series(_ct(), target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    files = write_dicom_series(_ct(), target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in files)
    assert list(tmp_path.iterdir()) == [target]  # no temporary leftovers


def test_an_empty_existing_folder_is_fine_and_a_file_is_not(tmp_path):
    (tmp_path / "empty").mkdir()
    assert len(write_dicom_series(_ct(), tmp_path / "empty")) == 6
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="file"):
        write_dicom_series(_ct(), tmp_path / "afile")


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pydicom.dataset.Dataset.save_as

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", failing)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(_ct(), tmp_path / "new")
    assert calls["n"] == 4
    assert list(tmp_path.iterdir()) == []
    # Replacing an existing series: a failure keeps the old one intact.
    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", real)
    old = write_dicom_series(_ct(seed=1), tmp_path / "series")
    before = {f.name: f.read_bytes() for f in old}
    calls["n"] = 0
    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", failing)
    with pytest.raises(OSError):
        write_dicom_series(_ct(seed=2), tmp_path / "series", overwrite=True)
    assert {f.name: f.read_bytes() for f in (tmp_path / "series").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


def test_cancel_leaves_nothing_and_progress_reaches_the_end(tmp_path):
    event = threading.Event()
    seen = []

    def progress(done, total, text):
        seen.append((done, total))
        if done >= 8:
            event.set()

    with pytest.raises(Cancelled):
        write_dicom_series(_ct(shape=(20, 8, 8)), tmp_path / "c", progress=progress, cancel=event)
    assert list(tmp_path.iterdir()) == []
    seen.clear()
    write_dicom_series(_ct(shape=(20, 8, 8)), tmp_path / "d", progress=lambda d, t, s: seen.append((d, t)))
    assert seen[-1] == (20, 20)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_series_folder_and_files_get_the_umask_permissions(tmp_path, umask):
    """Not the private 0700/0600 of temp files: a colleague can read what the umask allows."""
    old = os.umask(umask)
    try:
        files = write_dicom_series(_ct(shape=(3, 8, 8)), tmp_path / "series")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "series").stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o666 & ~umask}
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


def test_atomic_folder_is_the_shared_one():
    """Until the phantom writer imports it from io.atomic, ct.write still offers the same object."""
    from napari_pneumoseg.ct import write
    from napari_pneumoseg.io import atomic

    assert write.atomic_folder is atomic.atomic_folder
