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


# ----------------------------------------------------------------------------- derived series

from napari_pneumoseg.ct.write import write_derived_series  # noqa: E402


def _with_air_box(ct: CTVolume) -> CTVolume:
    """The source's HU with a box of air (a stand-in for a simulated pneumothorax), same metadata."""
    hu = ct.hu.copy()
    nz, ny, nx = hu.shape
    hu[nz // 3: nz // 2, ny // 3: ny // 2, nx // 5: nx // 3] = -1000.0
    hu[0, 0, 0] = -3000.4  # below the source's unsigned 12-bit range: the new rescale must hold it
    return CTVolume(hu=hu, spacing=ct.spacing, origin=ct.origin, direction=ct.direction,
                    metadata=dict(ct.metadata))


@pytest.fixture(scope="module")
def chest(chest_dir):
    return read_ct(chest_dir)


@pytest.fixture(scope="module")
def derived(chest, tmp_path_factory):
    """The real chest CT with a box of air, written as a derived series of it (once per module)."""
    new = _with_air_box(chest)
    folder = tmp_path_factory.mktemp("derived") / "series"
    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.RAISE  # a passing write is also a valid one
    try:
        files = write_derived_series(new, folder, series_description="SIMULATED pneumothorax",
                                     derivation_description="box of air")
    finally:
        config.settings.writing_validation_mode = old
    return new, folder, files


def test_derived_series_reads_back_with_the_new_hu_and_the_source_geometry(chest, derived):
    new, folder, files = derived
    assert [f.name for f in files] == [f"CT_{k:04d}.dcm" for k in range(1, chest.shape[0] + 1)]
    back = read_ct(folder)
    assert back.warnings == []
    np.testing.assert_array_equal(back.hu, np.rint(new.hu))
    assert back.hu.min() == -3000.0
    assert back.spacing == chest.spacing and back.origin == chest.origin
    np.testing.assert_array_equal(back.direction, chest.direction)


def test_derived_series_keeps_patient_study_and_frame_tags_with_new_uids(chest, derived):
    _, _, files = derived
    out = [pydicom.dcmread(f) for f in files]
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in chest.metadata["files"]]
    for attr in ("PatientName", "PatientID", "PatientSex", "PatientAge", "StudyInstanceUID",
                 "StudyDate", "StudyDescription", "FrameOfReferenceUID", "Manufacturer",
                 "ManufacturerModelName", "KVP", "ConvolutionKernel", "PatientPosition"):
        assert {str(d.get(attr)) for d in out} == {str(src[0].get(attr))}, attr
    series = {d.SeriesInstanceUID for d in out}
    assert len(series) == 1 and series != {chest.metadata["series_instance_uid"]}
    sops = [d.SOPInstanceUID for d in out]
    assert len(set(sops)) == len(sops) and not set(sops) & set(chest.metadata["sop_instance_uids"])
    assert all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in out)
    first = out[0]
    assert first.SeriesDescription == "SIMULATED pneumothorax" and first.DerivationDescription == "box of air"
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "AXIAL" in first.ImageType
    assert first.SeriesNumber == int(src[0].SeriesNumber) + 1000
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (first.BitsStored, first.PixelRepresentation, float(first.RescaleSlope)) == (16, 1, 1.0)
    # Private tags (CTP, ELSCINT1 in the source) are dropped.
    assert any(t.is_private for t in src[0].keys())
    assert not any(t.is_private for d in out for t in d.keys())
    assert first.ContributingEquipmentSequence[-1].Manufacturer == "napari-pneumoseg"


def test_each_derived_slice_comes_from_the_source_slice_at_its_position(chest, derived):
    """Matched by position: the files' names run top to bottom, the array bottom to top."""
    _, _, files = derived
    by_sop = {str(d.SOPInstanceUID): d for d in
              (pydicom.dcmread(f, stop_before_pixels=True) for f in chest.metadata["files"])}
    first_file = pydicom.dcmread(sorted(chest.metadata["files"])[0], stop_before_pixels=True)
    assert first_file.ImagePositionPatient != pydicom.dcmread(files[0]).ImagePositionPatient
    for k, f in enumerate(files):
        d = pydicom.dcmread(f, stop_before_pixels=True)
        src = by_sop[str(d.SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert d.SourceImageSequence[0].ReferencedSOPInstanceUID == chest.metadata["sop_instance_uids"][k]
        assert list(d.ImagePositionPatient) == list(src.ImagePositionPatient)
        assert d.InstanceNumber == src.InstanceNumber and d.SliceLocation == src.SliceLocation


def test_a_mask_made_on_the_source_lands_on_the_derived_series(chest, derived, tmp_path):
    from napari_pneumoseg import read_mask, write_mask

    _, folder, _ = derived
    mask = np.zeros(chest.shape, np.uint8)
    mask[20:30, 200:260, 100:180] = 1
    write_mask(mask, tmp_path / "truth.seg.nrrd", chest)
    np.testing.assert_array_equal(read_mask(tmp_path / "truth.seg.nrrd", like=read_ct(folder)), mask)


def test_derived_series_refuses_to_overwrite_and_needs_a_matching_source(chest, derived, tmp_path):
    new, folder, files = derived
    before = {f.name: f.stat().st_mtime_ns for f in files}
    with pytest.raises(FileExistsError, match="not empty"):
        write_derived_series(new, folder)
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == before
    # A volume that is not on the source's grid, or has no source files, is refused.
    shifted = CTVolume(new.hu[:4], new.spacing, origin=np.add(new.origin, (0, 0, 2.0)),
                       direction=new.direction, metadata={**new.metadata, "positions": None})
    with pytest.raises(ValueError, match="no source slice at its position"):
        write_derived_series(shifted, tmp_path / "a")
    with pytest.raises(ValueError, match="no source DICOM files"):
        write_derived_series(CTVolume(new.hu[:2], new.spacing), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_derived_series_from_a_folder_a_subset_of_slices_and_latin1_text(chest, tmp_path):
    """The source given as a folder; a few slices; ISO_IR 100 text survives as UTF-8; the umask's modes."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    for f in chest.metadata["files"][30:33]:
        ds = pydicom.dcmread(f)
        ds.PatientName = "Müller^Jörg"
        ds.save_as(src_dir / f"{ds.SOPInstanceUID}.dcm")
    source = read_ct(src_dir)
    assert pydicom.dcmread(next(src_dir.iterdir())).SpecificCharacterSet == "ISO_IR 100"
    sub = CTVolume(source.hu[1:] + 5, source.spacing, origin=source.index_to_lps([1, 0, 0]),
                   direction=source.direction)  # no metadata: the grid positions are matched
    old = os.umask(0o027)
    try:
        files = write_derived_series(sub, tmp_path / "out", source=src_dir)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o640}
    back = read_ct(tmp_path / "out")
    np.testing.assert_array_equal(back.hu, np.rint(source.hu[1:] + 5))
    np.testing.assert_allclose(back.origin, sub.origin, atol=1e-6)
    out = pydicom.dcmread(files[0])
    assert str(out.PatientName) == "Müller^Jörg" and out.SpecificCharacterSet == "ISO_IR 192"
    assert out.SeriesDescription == f"Derived from {source.metadata['series_description']}"
