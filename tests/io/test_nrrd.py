"""NRRD and 3D Slicer .seg.nrrd: header geometry, Slicer fields, multi-segment files, RAS spaces."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from napari_pneumoseg.io import MaskFileError, MaskGeometryError, read_mask, write_mask
from napari_pneumoseg.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=1, side="right", size="large", n_slices=20, spacing=(6.0, 3.0, 3.0),
                        shape_yx=(96, 112))


def _header_geometry(header):
    return (np.asarray(header["space directions"], float),
            np.asarray(header["space origin"], float))


def test_seg_nrrd_carries_ct_geometry_and_slicer_fields(chest, chest_mask, tmp_path):
    path = write_mask(chest_mask, tmp_path / "ptx.seg.nrrd", chest, name="Pneumothorax",
                      color=(0.2, 0.4, 1.0))
    data, header = nrrd.read(str(path))  # pynrrd's default Fortran order: axes (x, y, z)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), chest_mask)
    assert header["space"] == "left-posterior-superior"
    dirs, origin = _header_geometry(header)
    # NRRD axis i steps one CT column (x), j one row (y), k one slice (z), in LPS mm.
    for n, (k, j, i) in enumerate([(0, 0, 1), (0, 1, 0), (1, 0, 0)]):
        step = chest.index_to_lps([k, j, i]) - chest.index_to_lps([0, 0, 0])
        np.testing.assert_allclose(dirs[n], step)
    np.testing.assert_allclose(origin, chest.origin)
    assert header["Segment0_Name"] == "Pneumothorax"
    assert [float(v) for v in header["Segment0_Color"].split()] == [0.2, 0.4, 1.0]
    assert header["Segment0_LabelValue"] == "1" and header["Segment0_Layer"] == "0"
    nz = np.nonzero(chest_mask)
    expected_extent = [nz[2].min(), nz[2].max(), nz[1].min(), nz[1].max(), nz[0].min(), nz[0].max()]
    assert [int(v) for v in header["Segment0_Extent"].split()] == expected_extent
    assert "SCT^36118008^Pneumothorax" in header["Segment0_Tags"]
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    # The custom fields are written as NRRD key/value pairs (":="), as Slicer expects.
    text = path.read_bytes().split(b"\n\n", 1)[0].decode()
    assert "Segment0_Name:=Pneumothorax" in text and "Segment0_Color:=0.2 0.4 1" in text


def test_itk_reads_our_nrrd_with_the_ct_geometry(chest, chest_mask, tmp_path):
    """SimpleITK (ITK's NRRD reader, as in 3D Slicer) sees the CT's grid, in LPS."""
    path = write_mask(chest_mask, tmp_path / "ptx.nrrd", chest)
    img = sitk.ReadImage(str(path))
    np.testing.assert_allclose(img.GetOrigin(), chest.origin, atol=1e-6)
    np.testing.assert_allclose(img.GetSpacing(), chest.spacing[::-1], atol=1e-9)
    # ITK's direction columns are the LPS directions of its axes (x, y, z) = our rows reversed.
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), chest.direction[::-1].T,
                               atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(img), chest_mask)
    # And the voxel ITK puts at index (i, j, k) is where our CT voxel (k, j, i) is.
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((7, 300, 40)),
                               chest.index_to_lps([40, 300, 7]), atol=1e-6)


@pytest.mark.parametrize("suffix", [".seg.nrrd", ".nrrd"])
def test_round_trip_on_the_phantom(phantom, tmp_path, suffix):
    path = write_mask(phantom.truth, tmp_path / f"truth{suffix}", phantom.ct)
    back = read_mask(path, like=phantom.ct)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, phantom.truth)


def _slicer_like(path, data_zyx, ct, segments, *, space="left-posterior-superior", layered=False,
                 origin_shift=(0, 0, 0)):
    """A .seg.nrrd as 3D Slicer writes it (x fastest), optionally 4-D with a list axis."""
    flip = np.array([-1.0, -1.0, 1.0]) if space == "right-anterior-superior" else np.ones(3)
    zero = ct.index_to_lps([0, 0, 0])
    steps = np.array([ct.index_to_lps(np.eye(3)[a]) - zero for a in (2, 1, 0)])
    origin = ct.index_to_lps(origin_shift)
    header = {"space": space, "space origin": origin * flip, "encoding": "gzip"}
    if layered:
        header["space directions"] = np.vstack([np.full(3, np.nan), steps * flip])
        header["kinds"] = ["list", "domain", "domain", "domain"]
        data = np.ascontiguousarray(np.moveaxis(data_zyx, 0, -1))  # (z, y, x, layer)
    else:
        header["space directions"] = steps * flip
        header["kinds"] = ["domain"] * 3
        data = data_zyx
    for n, (name, label, layer) in enumerate(segments):
        header.update({f"Segment{n}_ID": f"Segment_{n + 1}", f"Segment{n}_Name": name,
                       f"Segment{n}_LabelValue": str(label), f"Segment{n}_Layer": str(layer),
                       f"Segment{n}_Color": "0.5 0.5 0.5"})
    nrrd.write(str(path), data, header, index_order="C")
    return path


def test_multi_segment_labelmap_picks_by_name_label_or_pneumothorax(phantom, tmp_path):
    ct = phantom.ct
    labels = np.zeros(ct.shape, np.uint8)
    lung = (ct.hu < -500) & (phantom.truth == 0)
    labels[lung] = 1
    labels[phantom.truth == 1] = 2
    path = _slicer_like(tmp_path / "two.seg.nrrd", labels, ct,
                        [("Lung", 1, 0), ("Pneumothorax left", 2, 0)])
    np.testing.assert_array_equal(read_mask(path, like=ct), phantom.truth)
    np.testing.assert_array_equal(read_mask(path, like=ct, segment="lung"), lung)
    np.testing.assert_array_equal(read_mask(path, like=ct, segment=1), lung)
    with pytest.raises(MaskFileError, match="no segment matches 'heart'.*'Lung' \\(label 1\\)"):
        read_mask(path, like=ct, segment="heart")
    other = _slicer_like(tmp_path / "noptx.seg.nrrd", labels, ct, [("Lung", 1, 0), ("Air", 2, 0)])
    with pytest.raises(MaskFileError, match="2 segments.*choose one"):
        read_mask(other, like=ct)


def test_layered_4d_segmentation_with_overlapping_segments(phantom, tmp_path):
    ct = phantom.ct
    air = (ct.hu < -500).astype(np.uint8)  # overlaps the pneumothorax
    layers = np.stack([air, phantom.truth * 3])
    path = _slicer_like(tmp_path / "layers.seg.nrrd", layers, ct,
                        [("Air", 1, 0), ("PTX", 3, 1)], layered=True)
    np.testing.assert_array_equal(read_mask(path, like=ct), phantom.truth)  # "PTX" matches
    np.testing.assert_array_equal(read_mask(path, like=ct, segment="Air"), air)


def test_ras_space_and_slicer_cropped_extent_land_on_the_ct(phantom, tmp_path):
    ct = phantom.ct
    ras = _slicer_like(tmp_path / "ras.seg.nrrd", phantom.truth, ct, [("Pneumothorax", 1, 0)],
                       space="right-anterior-superior")
    np.testing.assert_array_equal(read_mask(ras, like=ct), phantom.truth)
    # Slicer may save only the box around the segment: origin moves by whole voxels.
    nz = np.nonzero(phantom.truth)
    lo = [int(v.min()) for v in nz]
    hi = [int(v.max()) + 1 for v in nz]
    box = phantom.truth[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    cropped = _slicer_like(tmp_path / "crop.seg.nrrd", box, ct, [("Pneumothorax", 1, 0)],
                           origin_shift=lo)
    np.testing.assert_array_equal(read_mask(cropped, like=ct), phantom.truth)
    # A plain NRRD with another extent is not a Slicer segmentation: refused.
    plain = tmp_path / "crop.nrrd"
    cropped.rename(plain)
    with pytest.raises(MaskGeometryError, match="covers only part"):
        read_mask(plain, like=ct)


def test_slicer_one_voxel_file_of_empty_segments_reads_as_empty(phantom, tmp_path):
    path = _slicer_like(tmp_path / "empty.seg.nrrd", np.zeros((1, 1, 1), np.uint8), phantom.ct,
                        [("Pneumothorax", 1, 0)], origin_shift=(-5, 0, 0))  # geometry unused
    back = read_mask(path, like=phantom.ct)
    assert back.shape == phantom.ct.shape and back.sum() == 0
    with pytest.raises(MaskFileError, match="no segment matches 'Lung'"):
        read_mask(path, like=phantom.ct, segment="Lung")


def test_wrong_grid_and_non_masks_are_refused(phantom, chest, tmp_path):
    path = write_mask(phantom.truth, tmp_path / "p.seg.nrrd", phantom.ct)
    with pytest.raises(MaskGeometryError) as info:
        read_mask(path, like=chest)
    assert "shape (20, 96, 112)" in str(info.value) and "shape (64, 512, 512)" in str(info.value)
    nospace = tmp_path / "nospace.nrrd"
    nrrd.write(str(nospace), phantom.truth)
    with pytest.raises(MaskFileError, match="no 'space'"):
        read_mask(nospace, like=phantom.ct)
    image = tmp_path / "ct.nrrd"
    header = nrrd.read_header(str(path))
    nrrd.write(str(image), phantom.ct.hu.astype(np.int16), {k: header[k] for k in
               ("space", "space directions", "space origin", "kinds")}, index_order="C")
    with pytest.raises(MaskFileError, match="negative values"):
        read_mask(image, like=phantom.ct)
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"NRRD0004\ntype: uint8\n")
    with pytest.raises(MaskFileError, match="not a readable NRRD"):
        read_mask(broken, like=phantom.ct)


@pytest.mark.parametrize("rotated", [False, True])
def test_nrrd_voxels_sit_on_the_ct_grid_even_when_oblique(tmp_path, rotated):
    """NRRD space directions/origin put every voxel at the CT voxel's LPS position."""
    import nrrd

    from napari_pneumoseg import CTVolume, write_mask

    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    if rotated:
        a, b = 0.3, -0.4
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        direction = direction @ (rz @ rx).T
    rng = np.random.default_rng(0)
    ct = CTVolume(hu=rng.uniform(-1000, 1000, (6, 20, 24)).astype(np.float32),
                  spacing=(3.0, 0.6, 0.8), origin=(-12.3, 45.6, -200.25), direction=direction)
    mask = (ct.hu > 800).astype(np.uint8)
    write_mask(mask, tmp_path / "m.nrrd", ct)
    data, header = nrrd.read(str(tmp_path / "m.nrrd"), index_order="C")
    np.testing.assert_array_equal(data, mask)
    assert list(header["sizes"]) == [24, 20, 6]  # NRRD lists the fastest axis (x) first
    assert header["space"] == "left-posterior-superior"
    idx = np.argwhere(mask)[:20]  # (k, j, i)
    lps = header["space origin"] + idx[:, ::-1] @ header["space directions"]
    np.testing.assert_allclose(lps, ct.index_to_lps(idx), atol=1e-9)
