"""napari hooks for masks: opened masks overlay their CT in mm; saved Labels read back exactly."""

from __future__ import annotations

import napari
import numpy as np
import pytest

from napari_pneumoseg import CTVolume, read_ct
from napari_pneumoseg._napari.mask_io import dicom_seg_layer_data, get_mask_reader, write_labels
from napari_pneumoseg._napari.reader import ct_layer_data
from napari_pneumoseg.io import MaskGeometryError, read_mask, write_mask
from napari_pneumoseg.phantom import make_phantom

PLUGIN = "napari-pneumoseg"
TOTALSEG = "abdomen_ct_jpeg2000_overlapping_totalsegmentator_labels.nii.gz"


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=4, side="left", size="large", n_slices=16, spacing=(6.0, 3.5, 3.5),
                        shape_yx=(80, 96))


def _add_ct(viewer, ct):
    data, kwargs, _ = ct_layer_data(ct)
    return viewer.add_image(data, **kwargs)


def test_reader_claims_mask_files_only(phantom, chest_dir, tmp_path):
    for suffix in (".seg.nrrd", ".nrrd", ".nii", ".nii.gz"):
        path = write_mask(phantom.truth, tmp_path / f"m{suffix}", phantom.ct)
        assert callable(get_mask_reader(str(path)))
    assert get_mask_reader(str(chest_dir)) is None
    assert get_mask_reader(str(next(chest_dir.iterdir()))) is None
    (tmp_path / "a.txt").write_text("x")
    assert get_mask_reader(str(tmp_path / "a.txt")) is None


def test_opened_mask_overlays_the_ct_layer(make_napari_viewer, phantom, tmp_path):
    ct = phantom.ct
    path = write_mask(phantom.truth, tmp_path / "truth.seg.nrrd", ct, color=(0.0, 1.0, 0.0))
    viewer = make_napari_viewer()
    image = _add_ct(viewer, ct)
    (labels,) = viewer.open(str(path), plugin=PLUGIN)
    assert isinstance(labels, napari.layers.Labels)
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    np.testing.assert_array_equal(labels.data, phantom.truth)
    assert labels.metadata["pneumoseg_mask"]["segments"][0]["name"] == "Pneumothorax"
    np.testing.assert_allclose(labels.get_color(1)[:3], (0.0, 1.0, 0.0), atol=1e-6)
    # The same world point shows the same voxel in both layers.
    world = image.data_to_world((5, 40, 30))
    np.testing.assert_allclose(labels.world_to_data(world), (5, 40, 30))


def test_mask_opened_alone_gets_the_ct_scale(make_napari_viewer, phantom, tmp_path):
    """No CT open: the file's own geometry (NIfTI stores x first) gives the CT's scale."""
    ct = phantom.ct
    path = write_mask(phantom.truth, tmp_path / "truth.nii.gz", ct)
    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(labels.scale, ct.spacing)
    data, kwargs, _ = ct_layer_data(ct)
    np.testing.assert_allclose(labels.translate, kwargs["translate"], atol=1e-4)
    np.testing.assert_array_equal(labels.data, phantom.truth)
    # A CT opened afterwards lands on it.
    image = viewer.add_image(data, **kwargs)
    np.testing.assert_allclose(image.data_to_world((3, 2, 1)), labels.data_to_world((3, 2, 1)),
                               atol=1e-4)


def test_mask_of_a_feet_first_ct_follows_that_ct_layer(make_napari_viewer, phantom, tmp_path):
    """A CT shown in its own (feet-first) array frame: the mask is put on that frame too."""
    ct = phantom.ct
    nz, _, nx = ct.shape
    ffs = CTVolume(ct.hu[::-1, :, ::-1], ct.spacing, origin=ct.index_to_lps([nz - 1, 0, nx - 1]),
                   direction=ct.direction * [[-1], [1], [-1]])
    truth = phantom.truth[::-1, :, ::-1]
    path = write_mask(truth, tmp_path / "ffs.nii.gz", ffs)
    viewer = make_napari_viewer()
    image = _add_ct(viewer, ffs)
    (labels,) = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_array_equal(labels.data, truth)
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate, atol=1e-4)
    assert labels.metadata["pneumoseg_ct"] is image.metadata["pneumoseg_ct"]


def test_other_tools_labelmap_is_put_on_the_open_ct(make_napari_viewer, abdomen_dir, real_data):
    """TotalSegmentator's NIfTI (rows stored reversed) is reindexed onto the abdomen CT layer."""
    ct = read_ct(abdomen_dir)
    viewer = make_napari_viewer()
    image = _add_ct(viewer, ct)
    (labels,) = viewer.open(str(real_data / TOTALSEG), plugin=PLUGIN)
    assert labels.data.shape == ct.shape
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    liver = read_mask(real_data / TOTALSEG, like=ct, segment=5)
    np.testing.assert_array_equal(labels.data == 5, liver.astype(bool))
    assert len(np.unique(labels.data)) == 32  # all labels kept for viewing


@pytest.mark.parametrize("suffix", [".seg.nrrd", ".nii.gz"])
def test_saving_a_labels_layer_writes_a_mask_on_the_ct(make_napari_viewer, phantom, tmp_path,
                                                       suffix):
    ct = phantom.ct
    viewer = make_napari_viewer()
    image = _add_ct(viewer, ct)
    labels = viewer.add_labels(phantom.truth, scale=image.scale, translate=image.translate,
                               metadata={"pneumoseg_ct": image.metadata["pneumoseg_ct"]})
    path = tmp_path / f"saved{suffix}"
    written = napari.save_layers(str(path), [labels], plugin=PLUGIN)
    assert written == [str(path)]
    np.testing.assert_array_equal(read_mask(path, like=ct), phantom.truth)
    # The save dialog has confirmed replacing: the writer overwrites.
    labels.data = np.zeros_like(phantom.truth)
    napari.save_layers(str(path), [labels], plugin=PLUGIN)
    assert read_mask(path, like=ct).sum() == 0


def test_labels_without_ct_metadata_are_saved_from_scale_and_translate(phantom, tmp_path):
    ct = phantom.ct  # standard axial direction, so scale + translate describe it fully
    _, kwargs, _ = ct_layer_data(ct)
    meta = {"scale": ct.spacing, "translate": kwargs["translate"], "metadata": {}}
    (path,) = write_labels(str(tmp_path / "plain.nrrd"), phantom.truth, meta)
    np.testing.assert_array_equal(read_mask(path, like=ct), phantom.truth)
    shifted = {**meta, "translate": tuple(np.add(kwargs["translate"], (0.0, 1.75, 0.0)))}
    write_labels(str(tmp_path / "shifted.nrrd"), phantom.truth, shifted)
    with pytest.raises(MaskGeometryError, match="shifted by a fraction"):
        read_mask(tmp_path / "shifted.nrrd", like=ct)


def test_saving_errors_reach_the_user(make_napari_viewer, phantom, tmp_path):
    """The phantom has no DICOM files: a DICOM-SEG save says why instead of failing silently."""
    viewer = make_napari_viewer()
    image = _add_ct(viewer, phantom.ct)
    labels = viewer.add_labels(phantom.truth, scale=image.scale, translate=image.translate,
                               metadata={"pneumoseg_ct": image.metadata["pneumoseg_ct"]})
    with pytest.raises(RuntimeError, match="must reference the CT's DICOM files"):
        napari.save_layers(str(tmp_path / "truth.dcm"), [labels], plugin=PLUGIN)
    assert not (tmp_path / "truth.dcm").exists()


def test_dicom_seg_layer_data_for_the_ct_reader(chest_dir, tmp_path):
    ct = read_ct(chest_dir)
    mask = np.zeros(ct.shape, np.uint8)
    mask[30:34, 200:260, 300:380] = 1
    path = write_mask(mask, tmp_path / "ptx.dcm", ct)
    ((data, kwargs, kind),) = dicom_seg_layer_data(path, ct=ct)
    assert kind == "labels"
    np.testing.assert_array_equal(data, mask)
    np.testing.assert_allclose(kwargs["scale"], ct.spacing)
    assert kwargs["metadata"]["pneumoseg_ct"]["files"] == ct.metadata["files"]
