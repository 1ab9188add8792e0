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
    """Read a NIfTI labelmap in its own geometry: array axes (i, j, k) as stored, LPS affine.

    The affine is nibabel's (sform if set, else qform), converted from RAS
    to LPS. Trailing axes of length 1 (e.g. a 4-D file with one volume) are
    dropped. Segments are the labelmap's nonzero values (no names).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    MaskFile
        Voxels, index -> LPS affine and one segment per nonzero value.

    Raises
    ------
    MaskFileError
        The file cannot be read as NIfTI, has neither sform nor qform, is not
        3-D, or holds values that make it an image rather than a labelmap
        (negative, fractional, too many distinct values).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_pneumoseg.ct import CTVolume
    >>> ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7), origin=(10.0, 20.0, 30.0))
    >>> path = Path(tempfile.mkdtemp()) / "ptx.nii.gz"
    >>> write_nifti(np.ones(ct.shape, np.uint8), path, ct)
    >>> mf = read_nifti(path)
    >>> mf.shape, mf.affine[:3, 3].tolist()  # stored (x, y, z); origin back in LPS
    ((8, 6, 4), [10.0, 20.0, 30.0])
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))  # the header only: the voxels are read below
    except Exception as exc:  # ImageFileError, bad header
        raise MaskFileError(f"{path}: not a readable NIfTI file ({exc}).") from exc
    _check_claim(img, path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip, short data
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


def _check_claim(img, path) -> None:
    """Refuse a header that claims more voxels than allowed or free, or than an uncompressed file holds."""
    from ..resources import MAX_ARRAY_BYTES, check_allocation

    try:
        shape = tuple(int(v) for v in img.shape)
        itemsize = np.dtype(img.get_data_dtype()).itemsize
        offset = int(img.dataobj.offset)
    except Exception as exc:
        raise MaskFileError(f"{path}: not a readable NIfTI file (bad dimensions or type: {exc}).") from exc
    if not shape or min(shape) < 1:
        raise MaskFileError(f"{path}: the NIfTI's dimensions {shape} are not a volume.")
    need = int(np.prod(shape, dtype=object)) * itemsize
    why = check_allocation(need, "its voxels", limit=MAX_ARRAY_BYTES)
    if why:
        raise MaskFileError(f"{path}: refused: {why}.")
    if not str(path).lower().endswith(".gz") and os.path.getsize(path) < offset + need:
        raise MaskFileError(f"{path}: the NIfTI holds {os.path.getsize(path) - offset} bytes of voxels, fewer "
                            f"than the {need} its header claims (truncated, or a header that lies).")


def nifti_image(mask: np.ndarray, ct):
    """A nibabel NIfTI-1 image of a ``(z, y, x)`` mask on a CT's grid: uint8, stored (x, y, z).

    Parameters
    ----------
    mask : array_like
        The mask, of the CT's shape (cast to uint8).
    ct : CTVolume, Grid or dict
        The CT or its geometry (see :func:`~napari_pneumoseg.io.grid.as_grid`).

    Returns
    -------
    nibabel.Nifti1Image
        With the RAS affine as both qform and sform (code 1, scanner) and
        units mm.

    Examples
    --------
    >>> from napari_pneumoseg.ct import CTVolume
    >>> img = nifti_image(np.zeros((4, 6, 8), np.uint8), CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7)))
    >>> img.shape, img.get_data_dtype().name
    ((8, 6, 4), 'uint8')
    >>> np.round(np.diag(img.affine), 3).tolist()  # x and y negated: RAS
    [-0.7, -0.7, 2.5, 1.0]
    """
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
    """Write a ``(z, y, x)`` mask on a CT's grid as NIfTI-1 (see :func:`nifti_image`).

    Gzip-compressed if the name ends in ``.gz``. Written atomically (see
    :func:`~napari_pneumoseg.io.atomic.atomic_path`). Values are stored as
    uint8 as given: :func:`~napari_pneumoseg.io.write_mask` checks and
    binarises a mask before it calls this.

    Parameters
    ----------
    mask : array_like
        The mask, of the CT's shape.
    path : str or os.PathLike
        The file to write; its folder must exist.
    ct : CTVolume, Grid or dict
        The CT or its geometry.
    overwrite : bool, default False
        Replace an existing file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_pneumoseg.ct import CTVolume
    >>> path = Path(tempfile.mkdtemp()) / "ptx.nii.gz"
    >>> write_nifti(np.zeros((4, 6, 8), np.uint8), path, CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7)))
    >>> path.read_bytes()[:2].hex()  # the gzip magic number
    '1f8b'
    """
    blob = nifti_image(mask, ct).to_bytes()
    if str(path).lower().endswith(".gz"):
        blob = gzip.compress(blob, compresslevel=6, mtime=0)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(blob)
