"""The DICOM CT reader against real series, SimpleITK, and every odd case the issue lists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings as pywarnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from napari_pneumoseg import CTReadError, read_ct
from napari_pneumoseg.ct.dicom import PADDING_HU


def sitk_series(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def sitk_hu(folder: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk_series(folder)).astype(np.float32)


def copy_slices(src: Path, dst: Path, names=None, n=None) -> list[Path]:
    files = sorted(f for f in src.iterdir() if f.is_file())
    if n is not None:
        files = files[:n]
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        target = dst / (names(i, f) if names else f.name)
        shutil.copy(f, target)
        out.append(target)
    return out


def edit(file: Path, **changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(file)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(file)
    return ds


# ----------------------------------------------------------------- real series


def test_chest_ct_matches_simpleitk(chest_dir):
    ct = read_ct(chest_dir)
    image = sitk_series(chest_dir)
    assert ct.shape == (64, 512, 512)
    np.testing.assert_array_equal(ct.hu, sitk.GetArrayFromImage(image).astype(np.float32))
    # Spacing from positions; SimpleITK gives (x, y, z).
    assert ct.spacing == pytest.approx(image.GetSpacing()[::-1])
    assert ct.origin == pytest.approx(image.GetOrigin())
    # Our direction rows are the axes z, y, x; SimpleITK's matrix columns are x, y, z.
    sitk_dir = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(ct.direction, sitk_dir.T[::-1])
    assert ct.hu.min() == -1024 and ct.warnings == []


def test_sorted_by_position_not_instance_number(chest_dir):
    ct = read_ct(chest_dir)
    z = [p[2] for p in ct.metadata["positions"]]
    assert z == sorted(z)  # ascending along the normal (towards the head)
    # In this series InstanceNumber 1 is the top slice: it must come last.
    assert ct.metadata["instance_numbers"][0] == 64
    assert ct.metadata["instance_numbers"][-1] == 1


def test_abdomen_jpeg2000_overlapping_uses_positions(abdomen_dir):
    ct = read_ct(abdomen_dir)
    assert ct.spacing[0] == pytest.approx(2.0)  # SliceThickness says 3 mm
    assert pydicom.dcmread(next(abdomen_dir.iterdir())).SliceThickness == 3
    np.testing.assert_array_equal(ct.hu, sitk_hu(abdomen_dir))


def test_empty_sop_class_and_series_uid_still_read(abdomen_dir, tmp_path):
    ds = pydicom.dcmread(next(abdomen_dir.iterdir()), stop_before_pixels=True)
    assert not ds.get("SOPClassUID") and not ds.get("SeriesInstanceUID")
    assert read_ct(abdomen_dir).shape[0] == 20
    # Without the file meta's class either, Modality CT is enough.
    for f in copy_slices(abdomen_dir, tmp_path, n=3):
        ds = pydicom.dcmread(f)
        del ds.SOPClassUID
        ds.file_meta.MediaStorageSOPClassUID = ""
        ds.save_as(f)
    assert read_ct(tmp_path).shape[0] == 3


# ---------------------------------------------------------- files and folders


def test_single_file_list_of_files_and_no_suffix(chest_dir, tmp_path):
    # Names that sort opposite to position, without .dcm suffix, in nested folders.
    files = copy_slices(chest_dir, tmp_path / "a" / "b", names=lambda i, f: f"IMG{99 - i:03d}", n=6)
    by_folder = read_ct(tmp_path)
    by_list = read_ct([str(f) for f in reversed(files)])
    np.testing.assert_array_equal(by_folder.hu, by_list.hu)
    assert by_folder.shape == (6, 512, 512)
    one = read_ct(files[0])
    assert one.shape == (1, 512, 512)
    np.testing.assert_array_equal(one.hu[0], by_folder.hu[-1])
    assert any("Only one slice" in w for w in one.warnings)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(CTReadError, match="no such file"):
        read_ct(tmp_path / "nope")
    with pytest.raises(CTReadError, match="holds no files"):
        read_ct(tmp_path)
    with pytest.raises(CTReadError, match="No files given"):
        read_ct([])


def test_several_series_picks_largest_axial_and_reports_others(chest_dir, tmp_path):
    copy_slices(chest_dir, tmp_path / "main", n=10)
    # A second, smaller CT series.
    other_uid = generate_uid()
    for f in copy_slices(chest_dir, tmp_path / "other", n=3):
        edit(f, SeriesInstanceUID=other_uid, SOPInstanceUID=generate_uid())
    # A localizer (scout): flagged by ImageType, coronal orientation.
    loc = copy_slices(chest_dir, tmp_path / "scout", n=1)[0]
    edit(loc, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], ImageOrientationPatient=[1, 0, 0, 0, 0, -1],
         SeriesInstanceUID=generate_uid())
    # A coronal reformat series without LOCALIZER in ImageType (ignored by orientation).
    coronal_uid = generate_uid()
    for f in copy_slices(chest_dir, tmp_path / "coronal", n=2):
        edit(f, ImageOrientationPatient=[1, 0, 0, 0, 0, -1], ImageType=["DERIVED", "SECONDARY"],
             SeriesInstanceUID=coronal_uid)
    # A secondary capture, a structured report and a DICOMDIR-like file.
    sc = copy_slices(chest_dir, tmp_path / "sc", n=1)[0]
    edit(sc, SOPClassUID="1.2.840.10008.5.1.4.1.1.7", Modality="OT")
    sr = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    sr.save_as(tmp_path / "report")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")
    (tmp_path / "notes.txt").write_text("not dicom")

    ct = read_ct(tmp_path)
    assert ct.shape[0] == 10
    text = "\n".join(ct.warnings)
    assert other_uid in text and "3 axial slice(s)" in text
    assert "localizer" in text and "Secondary Capture" in text
    assert "DICOMDIR" in text and "Comprehensive SR" in text
    assert "not DICOM: notes.txt" in text
    assert "2 non-axial slice(s)" in text

    chosen = read_ct(tmp_path, series_uid=other_uid)
    assert chosen.shape[0] == 3 and chosen.metadata["series_instance_uid"] == other_uid
    with pytest.raises(CTReadError, match="no CT series with SeriesInstanceUID 1.2.3"):
        read_ct(tmp_path, series_uid="1.2.3")


def test_only_non_ct_objects_is_a_clear_error(real_data, tmp_path):
    with pytest.raises(CTReadError, match="No CT image series.*MR Image Storage"):
        read_ct(real_data / "dicom_edge_cases" / "generic" / "compressed_rle")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(CTReadError, match="not DICOM: a.txt"):
        read_ct(tmp_path)


def test_bad_files_are_skipped_when_the_rest_forms_a_volume(chest_dir, tmp_path):
    files = copy_slices(chest_dir, tmp_path, n=6)
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    # Truncated pixel data on one slice (header intact, pixel bytes cut).
    data = files[2].read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(data[: len(data) - 300_000])
    files[2].unlink()
    # A CT object without pixel data.
    ds = pydicom.dcmread(files[3])
    del ds.PixelData
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "nopixels.dcm")

    ct = read_ct(tmp_path)
    text = "\n".join(ct.warnings)
    assert ct.shape[0] == 5
    assert "nopixels.dcm" in text and "no pixel data" in text
    assert "truncated.dcm" in text
    assert "junk.dcm" in text
    # The dropped slice leaves a gap, which is reported too.
    assert "missing" in text


def test_truncated_only_file_is_an_error(chest_dir, tmp_path):
    data = next(iter(sorted(chest_dir.iterdir()))).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:2000])
    with pytest.raises(CTReadError, match="cut.dcm"):
        read_ct(tmp_path)


# --------------------------------------------------------------- geometry cases


def test_duplicate_positions_warn_and_keep_one(chest_dir, tmp_path):
    files = copy_slices(chest_dir, tmp_path, n=5)
    dup = tmp_path / "dup.dcm"
    shutil.copy(files[1], dup)
    edit(dup, SOPInstanceUID=generate_uid(), InstanceNumber=500)
    ct = read_ct(tmp_path)
    assert ct.shape[0] == 5
    assert any("duplicate the position" in w for w in ct.warnings)
    assert 500 not in ct.metadata["instance_numbers"]


def test_duplicate_positions_from_two_acquisitions_read_one(chest_dir, tmp_path):
    first = copy_slices(chest_dir, tmp_path / "a", n=4)
    second = copy_slices(chest_dir, tmp_path / "b", n=4)
    for f in first:
        edit(f, AcquisitionNumber=1)
    for f in second:
        edit(f, AcquisitionNumber=2, SOPInstanceUID=generate_uid())
    ct = read_ct(tmp_path)
    assert ct.shape[0] == 4
    assert any("2 acquisitions" in w for w in ct.warnings)


def test_all_slices_at_one_position_is_an_error(real_data):
    with pytest.raises(CTReadError, match="same position.*do not form a volume"):
        read_ct(real_data / "dicom_edge_cases" / "failing" / "notavolume")


def test_missing_slice_is_reported(real_data):
    ct = read_ct(real_data / "dicom_edge_cases" / "failing" / "sliceincrement" / "001")
    assert ct.spacing[0] == pytest.approx(5.0)
    assert any("1 slice(s) appear to be missing" in w and "10.00 mm" in w for w in ct.warnings)


def test_uneven_gaps_are_reported(chest_dir, tmp_path):
    files = copy_slices(chest_dir, tmp_path, n=5)
    pos = pydicom.dcmread(files[2]).ImagePositionPatient
    edit(files[2], ImagePositionPatient=[pos[0], pos[1], float(pos[2]) + 1.5])
    ct = read_ct(tmp_path)
    assert any("uneven" in w for w in ct.warnings)


def test_gantry_tilt_is_reported_and_spacing_is_along_the_normal(real_data):
    folder = real_data / "dicom_edge_cases" / "failing" / "gantrytilting"
    ct = read_ct(folder)
    tilt = [w for w in ct.warnings if "Gantry tilt" in w]
    assert tilt and "14.0 degrees" in tilt[0]
    # Positions step 5 mm in z; the normal is tilted 14 degrees from z.
    assert ct.spacing[0] == pytest.approx(5 * np.cos(np.radians(14.0)), rel=1e-3)


# ------------------------------------------------------------------ pixel values


def test_rescale_per_slice(chest_dir, tmp_path):
    files = copy_slices(chest_dir, tmp_path, n=4)
    reference = read_ct(tmp_path).hu
    # Re-encode slice 1 with slope 2 / intercept -2048: same HU, different stored values.
    ds = pydicom.dcmread(files[1])
    raw = ds.pixel_array.astype(np.int32)  # HU = raw - 1024
    hu = raw - 1024
    stored = np.round((hu + 2048) / 2).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -2048
    ds.save_as(files[1])
    ct = read_ct(tmp_path)
    k = ct.metadata["files"].index(str(files[1]))
    assert ct.metadata["rescale"][k] == [2.0, -2048.0]
    expected = reference.copy()
    expected[k] = stored.astype(np.float32) * 2 - 2048
    np.testing.assert_array_equal(ct.hu, expected)
    assert np.abs(ct.hu[k] - reference[k]).max() <= 1


def test_signed_pixels_match_simpleitk():
    f = Path(get_testdata_file("CT_small.dcm"))
    assert pydicom.dcmread(f).PixelRepresentation == 1
    ct = read_ct(f)
    np.testing.assert_array_equal(ct.hu[0], sitk.GetArrayFromImage(sitk.ReadImage(str(f)))[0])


def test_native_fast_path_equals_pydicom_decoder(chest_dir):
    ct = read_ct(chest_dir)
    for k in (0, 31, 63):
        ds = pydicom.dcmread(ct.metadata["files"][k])
        np.testing.assert_array_equal(ct.hu[k], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_padding_value_becomes_air(chest_dir, tmp_path):
    files = copy_slices(chest_dir, tmp_path, n=2)
    ds = pydicom.dcmread(files[0])
    arr = ds.pixel_array.copy()
    arr[:10, :10] = 0  # stored 0 = -1024 HU, marked as padding
    ds.PixelData = arr.tobytes()
    ds.add_new(0x00280120, "US", 0)  # PixelPaddingValue
    ds.save_as(files[0])
    ct = read_ct(tmp_path)
    k = ct.metadata["files"].index(str(files[0]))
    assert np.all(ct.hu[k, :10, :10] == PADDING_HU)
    assert ct.metadata["padding_replaced"]


def test_padding_differs_from_simpleitk_only_in_padded_pixels():
    # pydicom-data's 693 CT slice pads with -2000 (= -3024 HU); GDCM keeps -3024.
    f = get_testdata_file("693_UNCR.dcm")
    ct = read_ct(f)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(f)).astype(np.float32)
    raw = pydicom.dcmread(f).pixel_array
    padded = raw == -2000
    assert padded.any()
    np.testing.assert_array_equal(ct.hu[0][~padded], ref[0][~padded])
    assert np.all(ct.hu[0][padded] == PADDING_HU)


# ------------------------------------------------------------- transfer syntaxes


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless", "JPEG2000Lossless"])
def test_compressed_real_ct_equals_uncompressed(chest_dir, tmp_path, syntax):
    import pydicom.uid

    files = copy_slices(chest_dir, tmp_path, n=3)
    reference = read_ct(tmp_path).hu
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(getattr(pydicom.uid, syntax))
        ds.save_as(f)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    np.testing.assert_array_equal(read_ct(tmp_path).hu, reference)


@pytest.mark.parametrize(
    "name", ["bad_sequence.dcm", "693_J2KR.dcm", "J2K_pixelrep_mismatch.dcm", "explicit_VR-UN.dcm"]
)
def test_compressed_ct_files_match_gdcm(name):
    """JPEG lossless and JPEG 2000 CT slices from pydicom-data, against GDCM (SimpleITK)."""
    f = get_testdata_file(name)
    ds = pydicom.dcmread(f)
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    ct = read_ct(f)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(f)).astype(np.float32)[0]
    pad = ds.get("PixelPaddingValue")
    keep = np.ones(ref.shape, bool) if pad is None else ds.pixel_array != pad
    np.testing.assert_array_equal(ct.hu[0][keep], ref[keep])


def test_jpeg2000_same_as_uncompressed_pair():
    a = read_ct(get_testdata_file("693_J2KR.dcm")).hu
    b = read_ct(get_testdata_file("693_UNCR.dcm")).hu
    np.testing.assert_array_equal(a, b)


def test_big_endian(tmp_path):
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    reference = read_ct(get_testdata_file("CT_small.dcm")).hu
    arr = src.pixel_array
    src.PixelData = arr.astype(">i2").tobytes()
    src["PixelData"].VR = "OW"
    src.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore")
        pydicom.dcmwrite(tmp_path / "be.dcm", src, enforce_file_format=True)
    ds = pydicom.dcmread(tmp_path / "be.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    np.testing.assert_array_equal(read_ct(tmp_path / "be.dcm").hu, reference)


def test_implicit_and_explicit_vr(chest_dir, abdomen_dir):
    implicit = pydicom.dcmread(next(chest_dir.iterdir()), stop_before_pixels=True)
    assert implicit.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    ct = read_ct(get_testdata_file("CT_small.dcm"))  # explicit VR little endian
    assert pydicom.dcmread(get_testdata_file("CT_small.dcm")).file_meta.TransferSyntaxUID == \
        pydicom.uid.ExplicitVRLittleEndian
    assert ct.shape == (1, 128, 128)


def test_enhanced_multiframe_ct():
    f = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(f)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1" and ds.NumberOfFrames == 2
    ct = read_ct(f)
    assert ct.shape == (2, 512, 512)
    assert ct.spacing[0] == pytest.approx(10.0)
    # Frames in position order along the normal, HU from the shared rescale (-1024).
    frames = ds.pixel_array.astype(np.float32) - 1024
    d = [np.dot(p, ct.direction[0]) for p in ct.metadata["positions"]]
    assert d[0] < d[1]
    order = ct.metadata["frames"]
    np.testing.assert_array_equal(ct.hu, frames[order])
    np.testing.assert_array_equal(ct.hu, sitk.GetArrayFromImage(sitk.ReadImage(f))[::-1])


# ---------------------------------------------------------------- progress, TF


def test_progress_and_cancel(chest_dir):
    from napari_pneumoseg import Cancelled

    seen = []
    read_ct(chest_dir, progress=lambda done, total, text: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and len(seen) > 3
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        read_ct(chest_dir, cancel=cancel)


def test_reading_does_not_import_tensorflow(chest_dir):
    code = (
        "import sys, napari_pneumoseg\n"
        f"napari_pneumoseg.read_ct({str(chest_dir)!r})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'segmentation_models')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
