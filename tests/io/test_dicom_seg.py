"""DICOM-SEG: references the source CT, frames at the CT slices, read back whole and exact."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from napari_pneumoseg import read_ct
from napari_pneumoseg.io import MaskFileError, MaskGeometryError, read_mask, write_mask
from napari_pneumoseg.io.dicom_seg import find_seg_file, load_dicom_seg
from napari_pneumoseg.phantom import make_phantom


@pytest.fixture(scope="module")
def seg_path(chest, chest_mask, tmp_path_factory):
    return write_mask(chest_mask, tmp_path_factory.mktemp("seg") / "ptx.dcm", chest,
                      color=(1.0, 0.0, 0.0))


def test_highdicom_reads_references_and_frame_positions(chest, chest_mask, seg_path):
    seg = hd.seg.segread(str(seg_path))
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == chest.metadata["study_instance_uid"]
    assert seg.FrameOfReferenceUID == chest.metadata["frame_of_reference_uid"]
    assert {u[2] for u in seg.get_source_image_uids()} == set(chest.metadata["sop_instance_uids"])
    assert {u[1] for u in seg.get_source_image_uids()} == {chest.metadata["series_instance_uid"]}
    desc = seg.get_segment_description(1)
    assert desc.segment_label == "Pneumothorax"
    assert desc.segmented_property_type.value == "36118008"  # SNOMED CT Pneumothorax
    # Only the non-empty slices are stored; each frame references its CT slice and sits there.
    nonempty = np.flatnonzero(chest_mask.any(axis=(1, 2)))
    assert int(seg.NumberOfFrames) == len(nonempty)
    index_of = {uid: k for k, uid in enumerate(chest.metadata["sop_instance_uids"])}
    pixels = seg.pixel_array
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = index_of[uid]
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(ipp, chest.metadata["positions"][k], atol=1e-4)
        np.testing.assert_array_equal(pixels[f], chest_mask[k])
    # highdicom's own volume of the SEG has the CT's slice geometry.
    vol = seg.get_volume()
    lps0 = vol.affine @ np.array([0, 0, 0, 1.0])
    top = chest.index_to_lps([nonempty.max(), 0, 0])
    bottom = chest.index_to_lps([nonempty.min(), 0, 0])
    assert np.allclose(lps0[:3], top, atol=1e-4) or np.allclose(lps0[:3], bottom, atol=1e-4)


def test_round_trip_gives_the_whole_volume(chest, chest_mask, seg_path):
    back = read_mask(seg_path, like=chest)
    assert back.shape == chest.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back, chest_mask)
    # The folder holding only the SEG works too.
    assert find_seg_file(seg_path.parent) == seg_path
    np.testing.assert_array_equal(read_mask(seg_path.parent, like=chest), chest_mask)


def test_frames_without_references_are_placed_by_position(chest, chest_mask, seg_path, tmp_path):
    ds = pydicom.dcmread(seg_path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    del ds.ReferencedSeriesSequence
    other = tmp_path / "noref.dcm"
    ds.save_as(other)
    np.testing.assert_array_equal(read_mask(other, like=chest), chest_mask)
    # Moved by half a slice: no CT slice there.
    for item in ds.PerFrameFunctionalGroupsSequence:
        pos = item.PlanePositionSequence[0].ImagePositionPatient
        item.PlanePositionSequence[0].ImagePositionPatient = [pos[0], pos[1], float(pos[2]) + 2.5]
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved)
    with pytest.raises(MaskGeometryError, match="shifted by a fraction"):
        read_mask(moved, like=chest)


def test_references_place_frames_even_where_positions_disagree(chest, chest_mask, seg_path,
                                                               tmp_path):
    """References win (a tilted stack's positions fit no regular grid); unless locations moved."""
    ds = pydicom.dcmread(seg_path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        pos = item.PlanePositionSequence[0].ImagePositionPatient
        item.PlanePositionSequence[0].ImagePositionPatient = [pos[0], pos[1], float(pos[2]) + 2.5]
    ds.save_as(tmp_path / "shifted_refs.dcm")
    np.testing.assert_array_equal(read_mask(tmp_path / "shifted_refs.dcm", like=chest), chest_mask)
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.DerivationImageSequence[0].SourceImageSequence[0].SpatialLocationsPreserved = "NO"
    ds.save_as(tmp_path / "not_preserved.dcm")
    with pytest.raises(MaskGeometryError, match="shifted by a fraction"):
        read_mask(tmp_path / "not_preserved.dcm", like=chest)


def test_fractional_seg_is_read_thresholded(chest, chest_mask, tmp_path):
    prob = chest_mask * np.float32(0.8)
    prob[30, 200:210, 100:110] = 0.3  # below one half: outside
    path = write_mask(prob, tmp_path / "prob.dcm", chest, fractional=True)
    seg = hd.seg.segread(str(path))
    assert seg.SegmentationType == "FRACTIONAL"
    back = read_mask(path, like=chest)
    np.testing.assert_array_equal(back, (prob >= 0.5).astype(np.uint8))
    assert back[30, 200:210, 100:110].sum() == 0 and chest_mask[30, 200:210, 100:110].any()


def test_seg_on_another_ct_or_of_another_kind_is_refused(abdomen_dir, chest_dir, seg_path):
    abdomen = read_ct(abdomen_dir)
    with pytest.raises(MaskGeometryError, match="another frame of reference"):
        read_mask(seg_path, like=abdomen)
    ct_slice = next(chest_dir.iterdir())
    with pytest.raises(MaskFileError, match="CT Image Storage, not a DICOM Segmentation"):
        read_mask(ct_slice, like=abdomen)
    with pytest.raises(MaskFileError, match="expected one DICOM-SEG file in the folder, found 0"):
        read_mask(chest_dir, like=abdomen)


def test_seg_needs_source_files(tmp_path):
    ph = make_phantom(seed=0, n_slices=8, spacing=(5.0, 4.0, 4.0), shape_yx=(64, 64))
    with pytest.raises(MaskFileError, match="needs|must reference the CT's DICOM files"):
        write_mask(ph.truth, tmp_path / "ph.dcm", ph.ct)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_load_without_ct_gives_segments_and_geometry(chest, chest_mask, seg_path):
    mf = load_dicom_seg(seg_path)
    (seg,) = mf.segments
    assert seg.name == "Pneumothorax" and seg.label == 1
    assert seg.color == pytest.approx((1.0, 0.0, 0.0), abs=0.02)
    np.testing.assert_array_equal(mf.to_grid(chest), chest_mask)


def test_seg_of_a_series_with_sop_uids_only_in_file_meta(abdomen_dir, tmp_path):
    """The abdomen files leave SOP class/instance UIDs empty in the data set (only in the file
    meta): the SEG references the file-meta UIDs and is placed by position. Empty masks write."""
    abdomen = read_ct(abdomen_dir)
    first = pydicom.dcmread(abdomen.metadata["files"][0], stop_before_pixels=True)
    assert not first.get("SOPClassUID") and not first.get("SOPInstanceUID")
    mask = np.zeros(abdomen.shape, np.uint8)
    mask[3:6, 100:120, 200:230] = 1
    path = write_mask(mask, tmp_path / "a.dcm", abdomen)
    file_meta_uids = {str(pydicom.dcmread(f, stop_before_pixels=True)
                          .file_meta.MediaStorageSOPInstanceUID) for f in abdomen.metadata["files"]}
    assert {u[2] for u in hd.seg.segread(str(path)).get_source_image_uids()} == file_meta_uids
    np.testing.assert_array_equal(read_mask(path, like=abdomen), mask)
    empty = write_mask(np.zeros_like(mask), tmp_path / "empty.dcm", abdomen)
    assert read_mask(empty, like=abdomen).sum() == 0
