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


#: The files a case folder written by :func:`add_case` holds (besides the DICOM series in ``ct/``).
CASE_MASK, CASE_JSON = "truth.seg.nrrd", "case.json"


def _slug(name: str) -> str:
    """A folder-name-safe version of ``name``: letters, digits, ``._-``; others become ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name)).strip("._")


def write_case_folder(folder, ct, mask: np.ndarray, *, sidecar: tuple[str, str], series_description: str,
                      derivation: str, overwrite: bool = False, progress=None, cancel=None) -> Path:
    """Write one patient folder of a dataset, all or nothing: ``ct/``, ``truth.seg.nrrd`` and a JSON sidecar.

    The CT is written as a series derived from its source DICOM files when it names
    them (``metadata["files"]``: the source's patient, study and geometry tags, new
    UIDs), else as a new series; the mask as a 3D Slicer segmentation on the CT's grid.

    Parameters
    ----------
    folder : str or os.PathLike
        The patient folder to create (parents are created).
    ct : CTVolume
        The CT.
    mask : ndarray, shape (z, y, x)
        The mask on the CT's grid.
    sidecar : (str, str)
        File name and JSON text of the facts or provenance written beside them.
    series_description, derivation : str
        SeriesDescription and DerivationDescription of the written series.
    overwrite : bool, default False
        Replace an existing non-empty ``folder``.
    progress, cancel
        While the DICOM slices are written.

    Returns
    -------
    pathlib.Path
        ``folder``.

    Raises
    ------
    FileExistsError
        ``folder`` is a file, or a non-empty folder and ``overwrite`` is false.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so; ``folder`` is left as it was.
    """
    from ..ct.write import write_derived_series, write_dicom_series
    from ..io.atomic import atomic_folder
    from ..io.masks import write_mask

    with atomic_folder(folder, overwrite=overwrite) as tmp:
        if ct.metadata.get("files"):
            write_derived_series(ct, tmp / "ct", series_description=series_description,
                                 derivation_description=derivation, progress=progress, cancel=cancel)
        else:  # a CT that was not read from DICOM (e.g. the packaged sample): a new series
            write_dicom_series(ct, tmp / "ct", series_description=series_description,
                               progress=progress, cancel=cancel)
        write_mask(mask, tmp / CASE_MASK, ct)
        (tmp / sidecar[0]).write_text(sidecar[1], encoding="utf-8")
    return Path(folder)


def _patient_name(ct) -> str:
    """PatientID from the CT's first source file, else a name from its series UID."""
    files = ct.metadata.get("files") or []
    if files:
        import pydicom

        try:
            pid = str(pydicom.dcmread(files[0], stop_before_pixels=True, force=True).get("PatientID") or "")
        except Exception:  # noqa: BLE001 - an unreadable header just gives no PatientID
            pid = ""
        if _slug(pid):
            return _slug(pid)
    uid = str(ct.metadata.get("series_instance_uid") or "")
    return f"case-{_slug(uid)[-12:]}" if _slug(uid) else "case"


def add_case(dataset, ct, mask: np.ndarray, *, patient_id: Optional[str] = None,
             provenance: Optional[dict] = None, overwrite: bool = False, progress=None, cancel=None) -> Path:
    """Add a CT and its (corrected) mask to a dataset folder as ``dataset/<patient>/``, in the layout train() reads.

    Parameters
    ----------
    dataset : str or os.PathLike
        The dataset folder (created if missing).
    ct : CTVolume
        The CT the mask was drawn on.
    mask : ndarray, shape (z, y, x)
        The mask on the CT's grid (nonzero = pneumothorax).
    patient_id : str, optional
        The patient folder's name (made folder-safe); default the PatientID of the
        CT's source files, else ``case-<end of its series UID>``. Cases of one patient
        share a name; give another to add a second study of the same patient.
    provenance : dict, optional
        What made the mask (e.g. ``{"pre_annotation": "pleural air", "voxels_edited":
        1234}``), written to ``case.json`` with the source series and the time.
    overwrite : bool, default False
        Replace an existing case of that name.
    progress, cancel
        While the DICOM slices are written.

    Returns
    -------
    pathlib.Path
        The patient folder: ``ct/`` (the CT as a DICOM series derived from its
        source, or a new series), ``truth.seg.nrrd`` and ``case.json``; written
        all or nothing.

    Raises
    ------
    MaskGeometryError
        If the mask is not on the CT's grid (another shape).
    FileExistsError
        If the case exists and ``overwrite`` is False (nothing is written).
    ValueError
        If ``provenance`` cannot be written as JSON.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so; nothing is left behind.
    """
    import datetime
    import json

    from .. import __version__
    from ..io import MaskGeometryError

    mask = np.asarray(mask)
    if mask.shape != tuple(ct.shape):
        raise MaskGeometryError(f"the mask's shape {mask.shape} is not the CT's {tuple(ct.shape)}: "
                                "a case needs the mask on the CT's voxel grid")
    name = _slug(patient_id) if patient_id is not None else _patient_name(ct)
    if not name:
        raise ValueError(f"patient_id {patient_id!r} has no letters or digits to name a folder with")
    folder = Path(dataset) / name
    if not overwrite and (folder.is_file() or (folder.is_dir() and any(folder.iterdir()))):
        raise FileExistsError(f"{folder} exists: a case of that name is in the dataset; "
                              "choose another patient id or allow replacing it")
    record = {
        "source": {"series_instance_uid": ct.metadata.get("series_instance_uid"),
                   "study_instance_uid": ct.metadata.get("study_instance_uid"),
                   "series_description": ct.metadata.get("series_description"),
                   "files": len(ct.metadata.get("files") or [])},
        "mask": {"voxels": int(np.count_nonzero(mask)),
                 "volume_ml": float(np.count_nonzero(mask)) * ct.voxel_volume_ml},
        "provenance": dict(provenance or {}),
        "added": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "software": f"napari-pneumoseg {__version__}",
    }
    try:
        text = json.dumps(record, indent=2)
    except TypeError as exc:
        raise ValueError(f"provenance cannot be written as JSON: {exc}") from None
    src = ct.metadata.get("series_description") or ""
    return write_case_folder(
        folder, ct, (mask != 0).astype(np.uint8), sidecar=(CASE_JSON, text), overwrite=overwrite,
        series_description=f"Annotated case {name}",
        derivation=f"Saved as annotated case {name} by napari-pneumoseg {__version__} from series "
                   f"{ct.metadata.get('series_instance_uid') or '(no UID)'}" + (f" ({src})" if src else ""),
        progress=progress, cancel=cancel)
