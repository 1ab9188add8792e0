"""NIfTI: our LPS grids become correct RAS affines, and other tools' NIfTIs land on our CTs."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_pneumoseg import read_ct
from napari_pneumoseg.io import MaskFileError, MaskGeometryError, read_mask, write_mask

TOTALSEG = "abdomen_ct_jpeg2000_overlapping_totalsegmentator_labels.nii.gz"
LIVER, SPLEEN = 5, 1  # TotalSegmentator v2 class ids




@pytest.fixture(scope="module")
def abdomen(abdomen_dir):
    return read_ct(abdomen_dir)


def test_nibabel_maps_our_voxels_to_the_ct_voxels_positions(chest, chest_mask, tmp_path):
    path = write_mask(chest_mask, tmp_path / "ptx.nii.gz", chest)
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.uint8
    assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0
    np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)
    data = np.asarray(img.dataobj)
    assert data.shape == chest.shape[::-1]
    rng = np.random.default_rng(1)
    kji = np.c_[rng.integers(0, 64, 200), rng.integers(0, 512, 200), rng.integers(0, 512, 200)]
    ijk = kji[:, ::-1]
    ras = nib.affines.apply_affine(img.affine, ijk)
    lps = chest.index_to_lps(kji)
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-3)
    np.testing.assert_array_equal(data[tuple(ijk.T)], chest_mask[tuple(kji.T)])
    # The mask's voxels sit at the CT's air voxels (world -> CT index, independently).
    inside = np.argwhere(data)[::997]
    world = nib.affines.apply_affine(img.affine, inside) * [-1, -1, 1]
    k, j, i = np.rint(np.linalg.solve((chest.direction * np.array(chest.spacing)[:, None]).T,
                                      (world - chest.origin).T)).astype(int)
    assert np.all(chest.hu[k, j, i] < -500)


def test_itk_reads_our_nifti_in_lps_like_the_ct(chest, chest_mask, tmp_path):
    path = write_mask(chest_mask, tmp_path / "ptx.nii", chest)
    img = sitk.ReadImage(str(path))
    np.testing.assert_allclose(img.GetOrigin(), chest.origin, atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), chest.spacing[::-1], atol=1e-6)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), chest.direction[::-1].T,
                               atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(img), chest_mask)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip(chest, chest_mask, tmp_path, suffix):
    path = write_mask(chest_mask, tmp_path / f"m{suffix}", chest)
    if suffix == ".nii.gz":
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    else:
        assert path.read_bytes()[344:348] == b"n+1\x00"  # single-file NIfTI-1 magic
    np.testing.assert_array_equal(read_mask(path, like=chest), chest_mask)


def test_totalsegmentator_labels_land_on_our_abdomen_ct(abdomen, real_data):
    """Its NIfTI stores rows reversed relative to our reader: realigned exactly, on anatomy."""
    path = real_data / TOTALSEG
    liver = read_mask(path, like=abdomen, segment=LIVER).astype(bool)
    spleen = read_mask(path, like=abdomen, segment=SPLEEN).astype(bool)
    assert liver.shape == abdomen.shape and liver.sum() > 10_000 and spleen.sum() > 10_000
    body = abdomen.hu > -200
    assert body[liver].mean() > 0.99 and body[spleen].mean() > 0.99
    # Mirrored front-to-back (the row flip not undone), the organs would hit air outside the body.
    assert body[spleen[:, ::-1, :]].mean() < 0.9
    # Left-right: the liver is on the patient's right (LPS x smaller) of the spleen.
    x_liver = abdomen.index_to_lps(np.argwhere(liver).mean(axis=0))[0]
    x_spleen = abdomen.index_to_lps(np.argwhere(spleen).mean(axis=0))[0]
    assert x_liver < x_spleen - 50
    assert 20 < np.median(abdomen.hu[liver]) < 200  # soft tissue


def test_totalsegmentator_labels_without_a_choice_list_the_labels(abdomen, real_data):
    with pytest.raises(MaskFileError, match=r"31 segments \(label 1, label 5,.* and 19 more\)"):
        read_mask(real_data / TOTALSEG, like=abdomen)


def test_wrong_grid_missing_affine_and_garbage_are_refused(chest, abdomen, real_data, tmp_path):
    with pytest.raises(MaskGeometryError) as info:
        read_mask(real_data / TOTALSEG, like=chest, segment=LIVER)
    msg = str(info.value)
    assert "shape (512, 512, 20)" in msg and "shape (64, 512, 512)" in msg
    assert "spacing (0.9766, 0.9766, 2) mm" in msg and "spacing (5, 0.8418, 0.8418) mm" in msg
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    bare = tmp_path / "bare.nii"
    bare.write_bytes(img.to_bytes())
    with pytest.raises(MaskFileError, match="neither sform nor qform"):
        read_mask(bare, like=chest)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(MaskFileError, match="not a readable NIfTI"):
        read_mask(junk, like=chest)
