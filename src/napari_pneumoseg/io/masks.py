"""Read and write masks in any supported format, chosen by the file name.

- ``.seg.nrrd``: 3D Slicer segmentation (segment name, colour, terminology);
- ``.nrrd`` / ``.nhdr``: NRRD labelmap;
- ``.nii`` / ``.nii.gz``: NIfTI-1 labelmap (RAS affine);
- ``.dcm``, or a DICOM file or folder holding a SEG: DICOM Segmentation.

A mask read onto a CT must be on that CT's voxel grid (axis order and
flips may differ); anything else raises :class:`MaskGeometryError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..ct.dicom import looks_like_dicom
from .grid import DEFAULT_COLOR, DEFAULT_NAME, MaskFile, MaskFileError, MaskGeometryError, _label_values, as_grid

PathLike = Union[str, os.PathLike]

#: Writable suffixes, in the order shown to users.
WRITE_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".dcm")
READ_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii", ".dcm")
#: Mask files that are not DICOM (a DICOM-SEG is found among DICOM files instead).
NON_DICOM_SUFFIXES = tuple(s for s in READ_SUFFIXES if s != ".dcm")

__all__ = ["read_mask", "load_mask", "write_mask", "mask_format", "MaskFileError",
           "MaskGeometryError", "WRITE_SUFFIXES", "READ_SUFFIXES", "NON_DICOM_SUFFIXES",
           "DEFAULT_NAME", "DEFAULT_COLOR"]


def mask_format(path: PathLike, *, for_writing: bool = False) -> str:
    """``'seg.nrrd'``, ``'nrrd'``, ``'nifti'`` or ``'dicom-seg'`` by name, else MaskFileError."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".seg.nrrd"):
        return "seg.nrrd"
    if name.endswith(".nrrd") or (not for_writing and name.endswith(".nhdr")):
        return "nrrd"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".dcm"):
        return "dicom-seg"
    if not for_writing and (p.is_dir() or looks_like_dicom(p)):
        return "dicom-seg"
    allowed = WRITE_SUFFIXES if for_writing else READ_SUFFIXES
    raise MaskFileError(f"{path}: unknown mask file type; use a name ending in "
                        f"{', '.join(allowed)}" + ("." if for_writing else
                                                   " (or a DICOM-SEG file or folder)."))


def _check_exists(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise MaskFileError(f"{p}: no such file or folder.")
    if p.is_file() and p.stat().st_size == 0:
        raise MaskFileError(f"{p}: the file is empty (0 bytes).")
    return p


def load_mask(path: PathLike) -> MaskFile:
    """A mask file in its own geometry: voxels, index -> LPS affine and segments."""
    p = _check_exists(path)
    kind = mask_format(p)
    if kind in ("seg.nrrd", "nrrd"):
        from .nrrd_io import read_nrrd

        mf = read_nrrd(p)
        # 3D Slicer may crop a segmentation to its content: still exact, so accept a sub-box.
        mf.allow_subgrid = kind == "seg.nrrd"
        return mf
    if kind == "nifti":
        from .nifti_io import read_nifti

        return read_nifti(p)
    from .dicom_seg import load_dicom_seg

    return load_dicom_seg(p)


def read_mask(path: PathLike, like, *, segment: Optional[Union[str, int]] = None) -> np.ndarray:
    """A mask file as uint8 (z, y, x), 1 = inside, on the voxel grid of ``like`` (a CT).

    ``segment`` picks one segment by name/ID or label value (segment number
    for DICOM-SEG); by default the only one, or the one named like
    pneumothorax. Raises MaskFileError (file type, content, segment) or
    MaskGeometryError (not on the CT's grid).
    """
    p = _check_exists(path)
    grid = as_grid(like)
    if mask_format(p) == "dicom-seg":
        from .dicom_seg import read_dicom_seg

        return read_dicom_seg(p, grid, segment=segment)
    return load_mask(p).to_grid(grid, segment=segment)


def write_mask(mask: np.ndarray, path: PathLike, ct, *, name: str = DEFAULT_NAME,
               color=DEFAULT_COLOR, overwrite: bool = False, fractional: bool = False) -> Path:
    """Write a (z, y, x) mask on ``ct``'s grid in the format its suffix names; returns the path.

    ``ct`` is a CTVolume, a :class:`~.grid.Grid` or a geometry dict (DICOM-SEG
    also needs the CT's source files in its metadata). The mask must be binary
    (bool, or 0 and one other value); ``fractional`` (DICOM-SEG only) writes
    probabilities in 0..1. Atomic; FileExistsError unless ``overwrite``.
    """
    kind = mask_format(path, for_writing=True)
    grid = as_grid(ct)
    data = _writable(mask, grid.shape, fractional)
    if fractional and kind != "dicom-seg":
        raise ValueError("fractional masks can only be written as DICOM-SEG (.dcm)")
    if kind in ("seg.nrrd", "nrrd"):
        from .nrrd_io import write_nrrd

        write_nrrd(data, path, grid, segmentation=kind == "seg.nrrd", name=name, color=color,
                   overwrite=overwrite)
    elif kind == "nifti":
        from .nifti_io import write_nifti

        write_nifti(data, path, grid, overwrite=overwrite)
    else:
        from .dicom_seg import write_dicom_seg

        write_dicom_seg(data, path, grid, name=name, color=color, overwrite=overwrite,
                        fractional=fractional)
    return Path(path)


def _writable(mask, shape, fractional: bool) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} differs from the CT's {tuple(shape)}")
    if fractional:
        if not np.issubdtype(mask.dtype, np.number) or mask.min() < 0 or mask.max() > 1:
            raise ValueError("a fractional mask must hold probabilities in 0..1")
        return mask.astype(np.float32)
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.integer) and mask.size and mask.min() >= 0:
        nonzero = _label_values(mask)
    else:
        values = np.unique(mask)
        nonzero = values[values != 0]
    if len(nonzero) > 1:
        shown = ", ".join(f"{v:g}" for v in nonzero[:8])
        raise ValueError(f"the mask holds several labels ({shown}); a mask file holds one segment "
                         "here: write (labels == value) for the one you want")
    return (mask != 0).astype(np.uint8)
