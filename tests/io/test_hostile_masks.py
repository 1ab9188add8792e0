"""Mask files from strangers: refused with MaskFileError naming them, memory bounded, nothing read elsewhere."""

from __future__ import annotations

import gzip
import os
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_pneumoseg.ct import CTVolume
from napari_pneumoseg.io.grid import MaskFileError, MaskGeometryError
from napari_pneumoseg.io.masks import load_mask

HEADER = ("NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: {sizes}\n"
          "space directions: (1,0,0) (0,1,0) (0,0,2.5)\nspace origin: (0,0,0)\nencoding: {encoding}\n{extra}\n")


def nhdr(folder: Path, name="m.nhdr", sizes="8 6 4", encoding="raw", extra="") -> Path:
    path = folder / name
    path.write_text(HEADER.format(sizes=sizes, encoding=encoding, extra=extra))
    return path


def refused(path, *words, max_mb: float = 64.0) -> str:
    """The MaskFileError's message; the read allocated at most ``max_mb``."""
    tracemalloc.start()
    try:
        with pytest.raises(MaskFileError) as info:
            load_mask(path)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    assert peak < max_mb, f"{peak:.0f} MB allocated"
    return msg


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the mask's folder holding exactly the bytes a mask would need."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    f = outside / "secret.raw"
    f.write_bytes(bytes(range(192)))
    return f


def test_a_detached_data_file_next_to_the_header_reads(tmp_path):
    (tmp_path / "m.raw").write_bytes((np.arange(192) % 2).astype(np.uint8).tobytes())
    mf = load_mask(nhdr(tmp_path, extra="data file: m.raw"))
    assert mf.shape == (4, 6, 8) and int(mf.layers.sum()) == 96


@pytest.mark.parametrize("pointer", ["../elsewhere/secret.raw", "{abs}", "../../../../../../../etc/passwd",
                                     "LIST", "secret%03d.raw 1 3 1"])
def test_a_data_file_outside_the_folder_is_never_read(tmp_path, secret, pointer, monkeypatch):
    folder = tmp_path / "masks"
    folder.mkdir()
    pointer = pointer.format(abs=secret)
    opened = []
    real_open = open

    def spy(file, *a, **k):
        opened.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    refused(nhdr(folder, extra=f"data file: {pointer}"), "data file")
    assert str(secret) not in opened and "/etc/passwd" not in opened


def test_a_link_in_the_folder_that_leads_out_is_refused(tmp_path, secret):
    folder = tmp_path / "masks"
    folder.mkdir()
    os.symlink(secret, folder / "m.raw")
    refused(nhdr(folder, extra="data file: m.raw"), "leads out of its folder")


def test_sizes_that_lie_are_refused_before_allocating(tmp_path):
    path = tmp_path / "big.nrrd"
    path.write_bytes(HEADER.format(sizes="100000 100000 1000", encoding="raw", extra="").encode() + b"\0" * 100)
    refused(path, "GB")
    path = tmp_path / "short.nrrd"
    path.write_bytes(HEADER.format(sizes="512 512 300", encoding="raw", extra="").encode() + b"\0" * 100)
    refused(path, max_mb=96)


def test_a_gzip_bomb_costs_no_more_than_its_claim(tmp_path):
    payload = gzip.compress(b"\0" * (256 * 2**20), compresslevel=9)  # 256 MB of zeros in ~250 KB
    assert len(payload) < 2**20
    small = tmp_path / "bomb-small.nrrd"
    small.write_bytes(HEADER.format(sizes="8 6 4", encoding="gzip", extra="").encode() + payload)
    tracemalloc.start()
    try:
        mf = load_mask(small)  # reads its 192 bytes and stops
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert mf.shape == (4, 6, 8) and peak < 16
    huge = tmp_path / "bomb-huge.nrrd"
    huge.write_bytes(HEADER.format(sizes="4096 4096 4096", encoding="gzip", extra="").encode() + payload)
    refused(huge, "GB")
    truncated = tmp_path / "bomb-short.nrrd"
    truncated.write_bytes(HEADER.format(sizes="512 512 1100", encoding="gzip", extra="").encode() + payload)
    refused(truncated, "fewer than", max_mb=320)  # no more than its claim (288 MB)


def test_nifti_headers_that_lie(tmp_path):
    ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))
    from napari_pneumoseg.io.nifti_io import nifti_image

    img = nifti_image(np.ones(ct.shape, np.uint8), ct)
    good = tmp_path / "m.nii"
    nib.save(img, good)
    data = bytearray(good.read_bytes())
    dims = np.frombuffer(bytes(data[40:56]), "<i2").copy()
    dims[1:4] = (30000, 30000, 30000)
    lying = tmp_path / "lying.nii"
    lying.write_bytes(bytes(data[:40]) + dims.astype("<i2").tobytes() + bytes(data[56:]))
    refused(lying, "GB")
    dims[1:4] = (512, 512, 300)
    short = tmp_path / "short.nii"
    short.write_bytes(bytes(data[:40]) + dims.astype("<i2").tobytes() + bytes(data[56:]))
    refused(short, "fewer than")
    gz = tmp_path / "short.nii.gz"
    gz.write_bytes(gzip.compress(short.read_bytes()))
    refused(gz, max_mb=200)
    (tmp_path / "text.nii").write_text("not a NIfTI at all\n" * 40)
    refused(tmp_path / "text.nii", "NIfTI")


def _four_slices(chest_dir: Path, folder: Path, new_slices: bool = False, **tags) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    for name in ("1-20.dcm", "1-21.dcm", "1-22.dcm", "1-23.dcm"):
        ds = pydicom.dcmread(chest_dir / name)
        for key, value in tags.items():
            setattr(ds, key, value)
        if new_slices:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / name)
    return folder


def test_a_dicom_seg_for_a_ct_with_an_empty_character_set(chest_dir, tmp_path):
    from napari_pneumoseg import read_ct
    from napari_pneumoseg.io.dicom_seg import read_dicom_seg, write_dicom_seg

    ct = read_ct(_four_slices(chest_dir, tmp_path / "ct", SpecificCharacterSet=""))
    mask = np.zeros(ct.shape, np.uint8)
    mask[1:3, 100:140, 80:120] = 1
    write_dicom_seg(mask, tmp_path / "ptx.dcm", ct)  # raised a raw ValueError inside highdicom before
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "ptx.dcm", ct), mask)


def test_a_dicom_seg_of_another_series_is_refused(chest_dir, tmp_path):
    from pydicom.uid import generate_uid

    from napari_pneumoseg import read_ct
    from napari_pneumoseg.io.dicom_seg import write_dicom_seg
    from napari_pneumoseg.io.masks import read_mask

    ct = read_ct(_four_slices(chest_dir, tmp_path / "ct"))
    mask = np.zeros(ct.shape, np.uint8)
    mask[1:3, 100:140, 80:120] = 1
    write_dicom_seg(mask, tmp_path / "ptx.dcm", ct)
    other = read_ct(_four_slices(chest_dir, tmp_path / "other", new_slices=True, SeriesInstanceUID=generate_uid(),
                                 FrameOfReferenceUID=generate_uid()))
    with pytest.raises(MaskGeometryError, match="another frame of reference") as info:
        read_mask(tmp_path / "ptx.dcm", like=other)
    assert "ptx.dcm" in str(info.value)
