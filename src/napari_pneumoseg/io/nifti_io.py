"""NIfTI masks (``.nii``, ``.nii.gz``): RAS affines converted to and from our LPS grids.

NIfTI world coordinates are RAS (+x towards the patient's right, +y anterior),
DICOM's are LPS: an LPS affine becomes RAS by negating its first two rows. We write the
array with NIfTI axes (i, j, k) = the CT's (x, y, z) axes, as dcm2niix and
most tools do, with both qform and sform set (code 1, scanner) so every
reader finds the same affine.
"""

from __future__ import annotations

import gzip
import os
from typing import Union

import numpy as np

from .atomic import atomic_path
from .grid import MaskFile, MaskFileError, as_grid

PathLike = Union[str, os.PathLike]

#: LPS <-> RAS: negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_nifti(path: PathLike) -> MaskFile:
    """A NIfTI labelmap with its index -> LPS affine (array axes i, j, k as stored)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # ImageFileError, truncated gzip, bad header
        raise MaskFileError(f"{path}: not a readable NIfTI file ({exc}).") from exc
    header = img.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise MaskFileError(
            f"{path}: the NIfTI has neither sform nor qform set, so where its voxels are in the "
            "patient is unknown. Save it with the CT's affine."
        )
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise MaskFileError(f"{path}: a mask must be 3-D, got shape {data.shape}.")
    affine = LPS_TO_RAS @ np.asarray(img.affine, float)
    return MaskFile.from_labelmap(data, affine, str(path))


def nifti_image(mask: np.ndarray, ct):
    """A nibabel image of a (z, y, x) mask on ``ct``'s grid, stored (x, y, z), RAS affine."""
    import nibabel as nib

    grid = as_grid(ct)
    data = np.asarray(mask, dtype=np.uint8).transpose(2, 1, 0)  # (x, y, z)
    lps = grid.affine[:, [2, 1, 0, 3]]  # columns for array axes x, y, z
    ras = LPS_TO_RAS @ lps
    img = nib.Nifti1Image(np.asfortranarray(data), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm")
    img.set_data_dtype(np.uint8)
    return img


def write_nifti(mask: np.ndarray, path: PathLike, ct, *, overwrite: bool = False) -> None:
    """Write a (z, y, x) mask on ``ct``'s grid as NIfTI-1 (gzip if the name ends in .gz); atomic."""
    blob = nifti_image(mask, ct).to_bytes()
    if str(path).lower().endswith(".gz"):
        blob = gzip.compress(blob, compresslevel=6, mtime=0)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(blob)
