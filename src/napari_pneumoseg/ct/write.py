"""Write a :class:`CTVolume` as a CT DICOM series, and masks on its grid as NRRD.

Writing is all or nothing (:func:`~napari_pneumoseg.io.atomic.atomic_folder`):
files go to a hidden temporary sibling folder that is renamed into place only
when complete, so a failed or cancelled write never leaves a half-written
series behind.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..io.atomic import atomic_folder
from ..progress import ProgressFn, check_cancel, report
from .dicom import CT_IMAGE_STORAGE
from .volume import CTVolume

PathLike = Union[str, os.PathLike]


#: Stored value = round(HU) - intercept, in signed 16 bits (the usual scanner offset).
RESCALE_INTERCEPT = -1024
#: The HU a written series can hold; values outside are clipped.
HU_RANGE = (-32768 + RESCALE_INTERCEPT, 32767 + RESCALE_INTERCEPT)


def _ds(value: float):
    """A DS value with as many digits as fit in 16 characters."""
    from pydicom.valuerep import DSfloat

    v = float(value)
    if abs(v) < 1e-12:
        v = 0.0
    return DSfloat(v, auto_format=True)


def write_dicom_series(
    ct: CTVolume,
    folder: PathLike,
    *,
    series_description: Optional[str] = None,
    patient_id: str = "PNEUMOSEG",
    patient_name: str = "Anonymous",
    study_description: str = "",
    series_number: int = 1,
    study_uid: Optional[str] = None,
    frame_of_reference_uid: Optional[str] = None,
    overwrite: bool = False,
    progress: Optional[ProgressFn] = None,
    cancel: Any = None,
) -> list[Path]:
    """Write ``ct`` as a CT Image Storage series, one file per slice, into ``folder``.

    Files are named ``CT_0001.dcm``, ``CT_0002.dcm``... in array order
    (InstanceNumber 1 = slice 0), Explicit VR Little Endian. HU are rounded
    to integers and clipped to what signed 16 bits hold with RescaleSlope 1
    and RescaleIntercept -1024 (:data:`HU_RANGE`); NaN becomes -1000 HU.
    Geometry comes from the volume: ImageOrientationPatient from the
    ``direction`` rows of the x (row) and y (column) axes,
    ImagePositionPatient = ``origin + k * spacing_z * direction[0]``,
    PixelSpacing = (spacing_y, spacing_x), SliceThickness from
    ``metadata["slice_thickness"]`` or else the slice spacing; the
    description, window, patient position and manufacturer come from the
    metadata too, when present.

    Reading the series back with :func:`read_ct` gives the same HU (rounded),
    spacing, origin and direction when ``direction`` is right-handed (slice
    axis = row x column direction, as every reader assumes); otherwise the
    reader flips the slice order.

    The write is all or nothing (see
    :func:`~napari_pneumoseg.io.atomic.atomic_folder`): a failed or cancelled
    write leaves ``folder`` as it was.

    Parameters
    ----------
    ct : CTVolume
        The volume to write.
    folder : str or os.PathLike
        The series folder: new, or an existing empty folder; parent folders
        are created.
    series_description : str, optional
        SeriesDescription; default ``ct.metadata["series_description"]``,
        else ``"CT"``.
    patient_id : str, default "PNEUMOSEG"
        PatientID.
    patient_name : str, default "Anonymous"
        PatientName.
    study_description : str, default ""
        StudyDescription.
    series_number : int, default 1
        SeriesNumber.
    study_uid, frame_of_reference_uid : str, optional
        StudyInstanceUID and FrameOfReferenceUID (e.g. to place the series in
        an existing study); fresh UIDs by default. The SeriesInstanceUID and
        every SOPInstanceUID are always fresh.
    overwrite : bool, default False
        Replace a non-empty ``folder`` and everything in it.
    progress : callable, optional
        ``progress(done, total, text)``, called every few slices.
    cancel : callable or threading.Event, optional
        Checked every few slices (see :mod:`napari_pneumoseg.progress`).

    Returns
    -------
    list of pathlib.Path
        The files written, in slice order.

    Raises
    ------
    FileExistsError
        ``folder`` is a file, or a non-empty folder and ``overwrite`` is false.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so; nothing was written.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import read_ct
    >>> ct = CTVolume(np.array([[[-1000.0, 40.4]], [[-500.0, 1200.6]]]), spacing=(2.5, 0.7, 0.7))
    >>> folder = Path(tempfile.mkdtemp()) / "series"
    >>> [f.name for f in write_dicom_series(ct, folder, series_description="phantom")]
    ['CT_0001.dcm', 'CT_0002.dcm']
    >>> read_ct(folder).hu.tolist()
    [[[-1000.0, 40.0]], [[-500.0, 1201.0]]]
    >>> write_dicom_series(ct, folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ... already exists and is not empty; ...
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    nz, ny, nx = ct.shape
    direction = np.asarray(ct.direction, dtype=float)
    spacing = ct.spacing
    origin = np.asarray(ct.origin, dtype=float)
    meta = ct.metadata or {}
    description = series_description if series_description is not None else \
        str(meta.get("series_description") or "CT")
    thickness = meta.get("slice_thickness")
    try:
        thickness = float(thickness)
    except (TypeError, ValueError):
        thickness = float("nan")
    if not np.isfinite(thickness) or thickness <= 0:
        thickness = spacing[0]
    window = meta.get("window")

    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    row_dir, col_dir, normal = direction[2], direction[1], direction[0]
    iop = [_ds(x) for x in (*row_dir, *col_dir)]
    hu_lo, hu_hi = HU_RANGE

    names = [f"CT_{k + 1:04d}.dcm" for k in range(nz)]
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        for k in range(nz):
            if k % 8 == 0:
                check_cancel(cancel)
                report(progress, k, nz, "writing DICOM")
            sop_uid = generate_uid()
            fm = FileMetaDataset()
            fm.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            fm.MediaStorageSOPInstanceUID = sop_uid
            fm.TransferSyntaxUID = ExplicitVRLittleEndian
            fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

            ds = Dataset()
            ds.file_meta = fm
            ds.preamble = b"\0" * 128
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
            # Patient, study, series, frame of reference, equipment.
            ds.PatientName = patient_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyInstanceUID = study_uid
            ds.StudyDate, ds.StudyTime = date, time
            ds.ReferringPhysicianName = ""
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.StudyDescription = study_description
            ds.Modality = "CT"
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = int(series_number)
            ds.SeriesDescription = description
            ds.SeriesDate, ds.SeriesTime = date, time
            ds.PatientPosition = str(meta.get("patient_position") or "HFS")
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.Manufacturer = str(meta.get("manufacturer") or "napari-pneumoseg")
            # Image.
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.InstanceNumber = k + 1
            ds.AcquisitionNumber = 1
            ds.ContentDate, ds.ContentTime = date, time
            ds.KVP = ""
            position = origin + k * spacing[0] * normal
            ds.ImagePositionPatient = [_ds(x) for x in position]
            ds.ImageOrientationPatient = iop
            ds.SliceLocation = _ds(float(position @ np.cross(row_dir, col_dir)))
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
            ds.SliceThickness = _ds(thickness)
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = ny, nx
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = RESCALE_INTERCEPT
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
            if window:
                ds.WindowCenter, ds.WindowWidth = _ds(window[0]), _ds(window[1])
            ds.BurnedInAnnotation = "NO"
            hu = np.nan_to_num(np.asarray(ct.hu[k], dtype=np.float64), nan=-1000.0)
            stored = np.clip(np.rint(hu), hu_lo, hu_hi) - RESCALE_INTERCEPT
            ds.PixelData = stored.astype("<i2").tobytes()
            ds.save_as(tmp / names[k], enforce_file_format=True)
        report(progress, nz, nz, "writing DICOM")
    folder = Path(folder)
    return [folder / n for n in names]
