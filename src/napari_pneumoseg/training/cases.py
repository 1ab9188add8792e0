"""Training cases: one patient's CT and pneumothorax mask, from memory or a dataset folder.

A dataset folder holds one subfolder per patient with a DICOM series (in the
subfolder itself or below it, e.g. ``ct/``) and one mask file (``*.seg.nrrd``,
``*.nrrd``, ``*.nii``, ``*.nii.gz``) on the same voxel grid. ``pneumoseg
make-phantoms`` writes this layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from ..ct import CTVolume
from ..io.masks import NON_DICOM_SUFFIXES

#: Mask files a dataset's patient folder may hold: the one-file, non-DICOM formats (a
#: detached ``.nhdr`` header's data file would be taken for part of the DICOM series).
MASK_SUFFIXES = tuple(s for s in NON_DICOM_SUFFIXES if s != ".nhdr")


@dataclass
class Case:
    """One patient: HU volume (z, y, x), spacing in mm, and a binary mask of the same shape."""

    name: str
    hu: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])


def load_cases(cases: Union[str, os.PathLike, Sequence[Any]], progress=None) -> list[Case]:
    """Normalise what the user gave into Cases; a mismatch is an error naming the case.

    Parameters
    ----------
    cases : str, os.PathLike or sequence
        A dataset folder (one subfolder per patient with a DICOM series and one
        mask file of :data:`MASK_SUFFIXES`), or a sequence of ``(ct, mask)``
        pairs where ``ct`` is a CTVolume or an HU array (the spacing then
        defaults to the paper's 2.5 mm slices and 1 mm pixels; pass ``(hu,
        mask, spacing)`` to give it), or of Case objects.
    progress : callable, optional
        ``progress(done, total, text)`` per patient folder read.

    Returns
    -------
    list of Case
        Masks as uint8 0/1, on their CT's grid.

    Raises
    ------
    ValueError
        No cases; a CT that is not 3-D; a mask of another shape; a dataset
        folder without patient subfolders, or a patient without (or with
        several) mask files.
    CTReadError, MaskFileError, MaskGeometryError
        A patient's DICOM series or mask file cannot be read, or the mask is
        not on the CT's grid.

    Examples
    --------
    >>> import numpy as np
    >>> hu, mask = np.zeros((3, 8, 8)), np.zeros((3, 8, 8))
    >>> [c.spacing for c in load_cases([(hu, mask, (5.0, 0.7, 0.7))])]
    [(5.0, 0.7, 0.7)]
    """
    if isinstance(cases, (str, os.PathLike)):
        return list(_cases_from_folder(Path(cases), progress))
    out = []
    for k, item in enumerate(cases):
        if isinstance(item, Case):
            case = item
        else:
            ct, mask, *rest = item
            name = f"case {k + 1}"
            if isinstance(ct, CTVolume):
                hu, spacing = ct.hu, ct.spacing
                name = ct.metadata.get("series_description") and f"{name} ({ct.metadata['series_description']})" or name
            else:
                hu = np.asarray(ct)
                spacing = tuple(rest[0]) if rest else (2.5, 1.0, 1.0)
            case = Case(name, np.asarray(hu, dtype=np.float32), tuple(float(s) for s in spacing),
                        np.asarray(mask))
        _check(case)
        out.append(case)
    if not out:
        raise ValueError("no training cases given")
    return out


def pair_with_truth(cts: Sequence[tuple[str, tuple]], labels: Sequence[tuple[str, tuple]]) -> list[int]:
    """Which ground-truth mask goes with each CT, by the Train widget's rule.

    A CT named ``N`` is paired with the mask named ``"N truth"`` or, failing that,
    with the only mask of its shape.

    Parameters
    ----------
    cts : sequence of (str, tuple)
        Name and shape ``(z, y, x)`` of each CT.
    labels : sequence of (str, tuple)
        Name and shape of each candidate mask.

    Returns
    -------
    list of int
        For each CT, the index of its mask in ``labels``.

    Raises
    ------
    ValueError
        A CT has no mask (none named for it and none or several of its shape),
        or the mask named for it has another shape; the message says which and
        how to fix it.

    Examples
    --------
    >>> pair_with_truth([("a", (4, 8, 8))], [("b", (4, 8, 8)), ("a truth", (4, 8, 8))])
    [1]
    """
    out = []
    for name, shape in cts:
        shape = tuple(shape)
        named = [k for k, (lname, _) in enumerate(labels) if lname == f"{name} truth"]
        same = [k for k, (_, lshape) in enumerate(labels) if tuple(lshape) == shape]
        match = named or (same if len(same) == 1 else [])
        if not match:
            several = f" ({len(same)} masks have its shape)" if len(same) > 1 else ""
            raise ValueError(f"no ground-truth mask for '{name}'{several}: name one "
                             f"'{name} truth' (shape {shape})")
        lname, lshape = labels[match[0]]
        if tuple(lshape) != shape:
            raise ValueError(f"'{lname}' has shape {tuple(lshape)} but '{name}' has {shape}")
        out.append(match[0])
    return out


def _check(case: Case) -> None:
    if case.hu.ndim != 3:
        raise ValueError(f"{case.name}: the CT must be 3-D (z, y, x), got shape {case.hu.shape}")
    if case.mask.shape != case.hu.shape:
        raise ValueError(f"{case.name}: the mask has shape {case.mask.shape} but the CT has "
                         f"{case.hu.shape}; they must be on the same voxel grid")
    case.mask = (case.mask != 0).astype(np.uint8)


def find_mask_file(folder: Path) -> Optional[Path]:
    """The mask file directly in a patient folder (one of MASK_SUFFIXES), if any."""
    found = [f for f in sorted(folder.iterdir())
             if f.is_file() and f.name.lower().endswith(MASK_SUFFIXES)]
    if len(found) > 1:
        raise ValueError(f"{folder}: several mask files ({', '.join(f.name for f in found)}); "
                         "keep one per patient")
    return found[0] if found else None


def _cases_from_folder(root: Path, progress=None) -> Iterable[Case]:
    from ..ct import read_ct
    from ..io.masks import read_mask

    if not root.is_dir():
        raise ValueError(f"{root}: not a folder. A dataset is a folder with one subfolder per "
                         "patient, each holding a DICOM series and a mask file.")
    patients = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if not patients:
        raise ValueError(f"{root}: no patient subfolders found")
    for k, patient in enumerate(patients):
        if progress is not None:
            progress(k, len(patients), f"reading {patient.name}")
        mask_file = find_mask_file(patient)
        if mask_file is None:
            raise ValueError(f"{patient}: no mask file ({', '.join(MASK_SUFFIXES)}) next to the CT")
        dicom = [p for p in patient.rglob("*") if p.is_file() and p != mask_file
                 and not p.name.lower().endswith(MASK_SUFFIXES)]
        ct = read_ct(dicom)
        mask = read_mask(mask_file, like=ct)
        case = Case(patient.name, ct.hu, ct.spacing, mask)
        _check(case)
        yield case
