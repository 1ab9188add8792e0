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
    """The mask format a file name stands for: ``'seg.nrrd'``, ``'nrrd'``, ``'nifti'`` or ``'dicom-seg'``.

    Decided by the suffix (case-insensitive; see :data:`READ_SUFFIXES` and
    :data:`WRITE_SUFFIXES`). For reading, a folder or a DICOM file without a
    suffix counts as DICOM-SEG too.

    Parameters
    ----------
    path : str or os.PathLike
        The mask file (or, for reading, a DICOM-SEG folder).
    for_writing : bool, default False
        Accept only the suffixes a mask can be written as (not ``.nhdr``, nor
        a suffix-less DICOM file or folder).

    Returns
    -------
    str
        ``'seg.nrrd'``, ``'nrrd'``, ``'nifti'`` or ``'dicom-seg'``.

    Raises
    ------
    MaskFileError
        The name stands for no supported format; the message lists the
        suffixes that do.

    Examples
    --------
    >>> mask_format("case1/truth.seg.nrrd"), mask_format("case1/truth.NII.GZ")
    ('seg.nrrd', 'nifti')
    >>> mask_format("truth.nhdr"), mask_format("truth.dcm", for_writing=True)
    ('nrrd', 'dicom-seg')
    >>> mask_format("truth.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_pneumoseg.io.grid.MaskFileError: truth.png: unknown mask file type; use a name ending in ...
    """
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
    """Read a mask file in its own geometry: voxels, index -> LPS affine and segments.

    Nothing is aligned to a CT yet (see :meth:`MaskFile.to_grid`, or
    :func:`read_mask` to do both). A 3D Slicer ``.seg.nrrd`` and a DICOM-SEG
    may cover only part of a CT (``allow_subgrid``); a plain ``.nrrd`` or
    NIfTI must cover all of it.

    Parameters
    ----------
    path : str or os.PathLike
        A mask file (any of :data:`READ_SUFFIXES`), or a DICOM-SEG file or a
        folder holding one.

    Returns
    -------
    MaskFile
        The voxels in the file's own array axes, their affine and segments.

    Raises
    ------
    MaskFileError
        ``path`` is missing or empty, its type is unknown, or its content is
        not a usable mask (unreadable, no geometry, not 3-D, an image rather
        than a labelmap...); the message names the file and the reason.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume
    >>> ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))
    >>> path = write_mask(np.ones(ct.shape, bool), Path(tempfile.mkdtemp()) / "ptx.nii.gz", ct)
    >>> mf = load_mask(path)
    >>> mf.shape  # NIfTI stores x first
    (8, 6, 4)
    >>> mf.segments
    [Segment(name=None, label=1, layer=0, color=None, id=None)]
    """
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
    """Read one segment of a mask file onto the voxel grid of a CT.

    The file's voxels must be the CT's voxels, possibly stored in another
    axis order or with flipped axes; they are reindexed exactly, never
    resampled (see :func:`~napari_pneumoseg.io.grid.align_to`).

    Parameters
    ----------
    path : str or os.PathLike
        A mask file (any of :data:`READ_SUFFIXES`), or a DICOM-SEG file or a
        folder holding one.
    like : CTVolume, Grid or dict
        The CT (or its geometry, see :func:`~napari_pneumoseg.io.grid.as_grid`).
        A DICOM-SEG frame is placed on the CT slice it references when
        ``like`` carries the CT's ``sop_instance_uids`` (as
        :func:`~napari_pneumoseg.ct.read_ct` records), else by its position.
    segment : str or int, optional
        The segment to read: its name or ID, or its label value (segment
        number for DICOM-SEG). Default: the only segment, or the one whose
        name says pneumothorax (``pneumo``, ``ptx``).

    Returns
    -------
    numpy.ndarray
        uint8 ``(z, y, x)`` of the CT's shape: 1 inside the segment, 0
        outside (all 0 for an empty NRRD or NIfTI mask).

    Raises
    ------
    MaskFileError
        The file is missing, empty, of unknown type or not a usable mask, or
        ``segment`` matches no segment or several (or the default is
        ambiguous); the message lists the segments.
    MaskGeometryError
        The mask is not on the CT's voxel grid (other spacing, a shift, a
        rotation, another extent, another frame of reference); the message
        names both geometries.
    ValueError, TypeError
        ``like`` is not a CT geometry.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume
    >>> ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))
    >>> truth = np.zeros(ct.shape, np.uint8)
    >>> truth[1:3, 2:4, 2:6] = 1
    >>> path = write_mask(truth, Path(tempfile.mkdtemp()) / "truth.seg.nrrd", ct)
    >>> mask = read_mask(path, like=ct, segment="Pneumothorax")
    >>> mask.dtype, mask.shape, int(mask.sum())
    (dtype('uint8'), (4, 6, 8), 16)
    >>> other = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7), origin=(0.0, 0.0, 1.0))
    >>> read_mask(path, like=other)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_pneumoseg.io.grid.MaskGeometryError: ...truth.seg.nrrd is not on the CT's voxel grid (it is shifted...
    """
    p = _check_exists(path)
    grid = as_grid(like)
    if mask_format(p) == "dicom-seg":
        from .dicom_seg import read_dicom_seg

        return read_dicom_seg(p, grid, segment=segment)
    return load_mask(p).to_grid(grid, segment=segment)


def write_mask(mask: np.ndarray, path: PathLike, ct, *, name: str = DEFAULT_NAME,
               color=DEFAULT_COLOR, overwrite: bool = False, fractional: bool = False) -> Path:
    """Write a ``(z, y, x)`` mask on a CT's voxel grid, in the format the file name says.

    ``.seg.nrrd`` (3D Slicer segmentation), ``.nrrd``, ``.nii`` / ``.nii.gz``
    or ``.dcm`` (DICOM-SEG referencing the CT's instances); see
    :data:`WRITE_SUFFIXES`. The file holds one segment, named ``name`` and
    coloured ``color`` where the format has them. Written atomically (see
    :func:`~napari_pneumoseg.io.atomic.atomic_path`): a failed write leaves
    no file behind.

    Parameters
    ----------
    mask : array_like
        The mask, of the CT's shape: bool, or 0 and one other value (written
        as 1). With ``fractional``, probabilities in 0..1.
    path : str or os.PathLike
        The file to write; its folder must exist.
    ct : CTVolume, Grid or dict
        The CT (or its geometry, see :func:`~napari_pneumoseg.io.grid.as_grid`).
        A DICOM-SEG also needs the CT's source files in its metadata (as
        :func:`~napari_pneumoseg.ct.read_ct` records them).
    name : str, default "Pneumothorax"
        Segment name (3D Slicer and DICOM-SEG); a name that says pneumothorax
        also gets the pneumothorax terminology codes.
    color : tuple of float, default (1.0, 0.6, 0.0)
        Segment colour, r g b in 0-1.
    overwrite : bool, default False
        Replace an existing file.
    fractional : bool, default False
        Write probabilities as a FRACTIONAL DICOM-SEG (``.dcm`` only).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    MaskFileError
        The suffix is not a writable mask format, or a DICOM-SEG is asked for
        a CT without (readable, unchanged) source DICOM files.
    ValueError
        ``mask`` has another shape than the CT, holds several labels, or is
        fractional where it must not be (or outside 0..1).
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume
    >>> ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))
    >>> mask = np.zeros(ct.shape, bool)
    >>> mask[2, 1:4, 1:4] = True
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_mask(mask, folder / "ptx.seg.nrrd", ct).name
    'ptx.seg.nrrd'
    >>> write_mask(mask, folder / "ptx.seg.nrrd", ct)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ...ptx.seg.nrrd already exists; choose another name or allow replacing it (overwrite=True).
    >>> write_mask(mask.astype(np.uint8) * 2 + (~mask), folder / "labels.nrrd", ct)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the mask holds several labels (1, 2); ...
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
