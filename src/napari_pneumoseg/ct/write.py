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
from .volume import CTReadError, CTVolume

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
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    nz = ct.shape[0]
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

    names = [f"CT_{k + 1:04d}.dcm" for k in range(nz)]
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        for k in range(nz):
            if k % 8 == 0:
                check_cancel(cancel)
                report(progress, k, nz, "writing DICOM")
            sop_uid = generate_uid()
            ds = Dataset()
            _set_file_meta(ds, sop_uid)
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
            if window:
                ds.WindowCenter, ds.WindowWidth = _ds(window[0]), _ds(window[1])
            ds.BurnedInAnnotation = "NO"
            _set_pixels(ds, ct.hu[k])
            ds.save_as(tmp / names[k], enforce_file_format=True)
        report(progress, nz, nz, "writing DICOM")
    folder = Path(folder)
    return [folder / n for n in names]


# --------------------------------------------------------------------------- derived series

#: Tags of the source header that are not copied into a derived slice: they describe the
#: source's pixel data (its encoding, padding, value mapping, thumbnails, overlays) or that
#: one file (signatures, media set), which the new pixels and the new file replace.
_NOT_COPIED = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths", "PixelDataProviderURL", "PlanarConfiguration",
    "SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "ModalityLUTSequence", "RealWorldValueMappingSequence", "IconImageSequence",
    "SourceImageSequence", "DerivationCodeSequence", "DigitalSignaturesSequence",
    "MACParametersSequence", "EncryptedAttributesSequence", "DataSetTrailingPadding",
    "StorageMediaFileSetUID", "StorageMediaFileSetID", "InstanceCreatorUID",
)
#: The longest SeriesDescription (LO) and DerivationDescription (ST) DICOM allows.
_LO_MAX, _ST_MAX = 64, 1024


def write_derived_series(
    ct: CTVolume,
    folder: PathLike,
    *,
    source: Union[CTVolume, PathLike, "list[PathLike]", None] = None,
    series_description: Optional[str] = None,
    derivation_description: str = "",
    series_number: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[ProgressFn] = None,
    cancel: Any = None,
) -> list[Path]:
    """Write ``ct`` as a new series of its source: the source's headers, new pixels and UIDs.

    For a volume made from a CT series by changing its HU (a simulated
    pneumothorax, a denoised CT) on the same voxel grid. Each output slice
    starts from the header of the source slice *at the same position*
    (matched by ImagePositionPatient, never by file order), so patient,
    study, equipment, acquisition and geometry tags are the source's, and so
    are the StudyInstanceUID and FrameOfReferenceUID: the new series lands
    in the source's study and on its grid, and a mask made on the source
    overlays it. What changes:

    - SeriesInstanceUID and every SOPInstanceUID are new
      (:func:`pydicom.uid.generate_uid`); SeriesNumber, SeriesDescription,
      SeriesDate/Time, ContentDate/Time and InstanceCreationDate/Time are
      new;
    - ImageType becomes ``DERIVED\\SECONDARY`` (the source's third and later
      values kept), DerivationDescription says how it was made, a
      SourceImageSequence references the source slice, and a
      ContributingEquipmentSequence item names napari-pneumoseg as
      processing equipment;
    - the pixels are ``ct.hu`` rounded to integers, uncompressed (Explicit VR
      Little Endian) in signed 16 bits with RescaleSlope 1 and
      RescaleIntercept -1024, which hold :data:`HU_RANGE` (values outside
      are clipped; NaN becomes -1000 HU);
    - private tags are dropped: their meaning is the vendor's and some
      describe the source pixels (or identify the scanner's private
      processing), so they cannot be vouched for on new pixels. Also
      dropped (:data:`_NOT_COPIED`): tags of the old pixel encoding
      (smallest/largest value, padding value, modality LUT, real world value
      mapping), icons, overlays, digital signatures and media-set UIDs;
    - text is written as UTF-8 (SpecificCharacterSet ``ISO_IR 192``), after
      decoding the source's text with the source's character set.

    Reading the written series with :func:`read_ct` gives ``ct``'s HU
    (rounded), spacing, origin and direction. Files are named
    ``CT_0001.dcm``... in array order; InstanceNumber is the source
    slice's. All or nothing, as :func:`write_dicom_series`; files and the
    folder get the user's umask permissions.

    Parameters
    ----------
    ct : CTVolume
        The new HU, on (a subset of the slices of) the source's grid.
    folder : str or os.PathLike
        The series folder to create (new or empty; parents are created).
    source : CTVolume, str, os.PathLike or list of them, optional
        The source series: a CTVolume read by :func:`read_ct` (its
        ``metadata["files"]`` are used), or DICOM files or folders. Default:
        the files in ``ct.metadata`` (a volume derived from a read CT keeps
        its metadata).
    series_description : str, optional
        SeriesDescription (cut to 64 characters); default ``"Derived from
        <source description>"``.
    derivation_description : str, default ""
        DerivationDescription (cut to 1024 characters); default a sentence
        naming the source series.
    series_number : int, optional
        SeriesNumber; default the source's plus 1000.
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
    ValueError
        No source files are known, a source file is missing, multi-frame or
        not DICOM, or a slice of ``ct`` has no source slice at its position
        (or the source's orientation, pixel spacing or image size differ
        from ``ct``'s); the message says which.
    FileExistsError
        ``folder`` is a file, or a non-empty folder and ``overwrite`` is false.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so; nothing was written.

    Examples
    --------
    >>> import tempfile
    >>> import pydicom
    >>> from napari_pneumoseg.ct import read_ct
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = write_dicom_series(CTVolume(np.full((3, 4, 5), 40.0), spacing=(2.5, 0.7, 0.7)),
    ...                        root / "source", patient_id="P7", series_description="chest")
    >>> source = read_ct(root / "source")
    >>> new = CTVolume(source.hu - 1040.0, source.spacing, source.origin, source.direction,
    ...                metadata=source.metadata)
    >>> files = write_derived_series(new, root / "derived", series_description="chest, edited")
    >>> back = read_ct(root / "derived")
    >>> float(back.hu.max()), back.origin == source.origin
    (-1000.0, True)
    >>> ds = pydicom.dcmread(files[0])
    >>> ds.PatientID, ds.SeriesDescription, list(ds.ImageType)[:2]
    ('P7', 'chest, edited', ['DERIVED', 'SECONDARY'])
    >>> ds.SeriesInstanceUID != source.metadata["series_instance_uid"]
    True
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    from .. import __version__

    headers, source_series = _source_headers(ct, source)
    nz = ct.shape[0]
    matched = _match_slices(ct, headers)

    first = headers[matched[0]][1]
    src_description = str(first.get("SeriesDescription", "") or "")
    if series_description is None:
        series_description = f"Derived from {src_description}" if src_description else "Derived CT"
    if not derivation_description:
        derivation_description = (f"Derived by napari-pneumoseg {__version__} from series "
                                  f"{source_series or '(no UID)'}"
                                  + (f" ({src_description})" if src_description else ""))
    if series_number is None:
        try:
            series_number = int(first.get("SeriesNumber")) + 1000
        except (TypeError, ValueError):
            series_number = 1000

    series_uid = generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    names = [f"CT_{k + 1:04d}.dcm" for k in range(nz)]
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        for k in range(nz):
            if k % 8 == 0:
                check_cancel(cancel)
                report(progress, k, nz, "writing DICOM")
            src_file, _ = headers[matched[k]]
            ds = pydicom.dcmread(src_file, stop_before_pixels=True)  # fresh: nothing shared between slices
            ds.decode()  # text values to str with the source's character set, before it changes
            ds.remove_private_tags()
            for keyword in _NOT_COPIED:
                if keyword in ds:
                    delattr(ds, keyword)
            for tag in [t for t in ds.keys() if 0x6000 <= t.group <= 0x601E and t.group % 2 == 0]:
                del ds[tag]  # overlays
            src_class = str(ds.get("SOPClassUID", "") or CT_IMAGE_STORAGE)
            src_sop = str(ds.get("SOPInstanceUID", "") or "")

            sop_uid = generate_uid()
            _set_file_meta(ds, sop_uid)

            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = int(series_number)
            ds.SeriesDescription = series_description[:_LO_MAX]
            ds.SeriesDate, ds.SeriesTime = date, time
            ds.ContentDate, ds.ContentTime = date, time
            old_type = [str(v) for v in (ds.get("ImageType") or [])]
            ds.ImageType = ["DERIVED", "SECONDARY", *(old_type[2:] or ["AXIAL"])]
            ds.DerivationDescription = derivation_description[:_ST_MAX]
            if src_sop:
                ref = Dataset()
                ref.ReferencedSOPClassUID = src_class
                ref.ReferencedSOPInstanceUID = src_sop
                ds.SourceImageSequence = [ref]
            ds.ContributingEquipmentSequence = [
                *(ds.get("ContributingEquipmentSequence") or []), _processing_equipment(now, __version__)]

            _set_pixels(ds, ct.hu[k])
            ds.save_as(tmp / names[k], enforce_file_format=True, implicit_vr=False, little_endian=True)
        report(progress, nz, nz, "writing DICOM")
    folder = Path(folder)
    return [folder / n for n in names]


def _set_file_meta(ds, sop_uid: str) -> None:
    """File meta of a CT Image Storage instance in Explicit VR Little Endian, and the preamble."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = fm
    ds.preamble = b"\0" * 128


def _set_pixels(ds, hu_slice: np.ndarray) -> None:
    """One slice of HU as signed 16-bit pixels with :data:`RESCALE_INTERCEPT` (NaN: -1000 HU)."""
    ny, nx = hu_slice.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = str(RESCALE_INTERCEPT), "1"
    ds.RescaleType = "HU"
    hu = np.nan_to_num(np.asarray(hu_slice, dtype=np.float64), nan=-1000.0)
    stored = np.clip(np.rint(hu), *HU_RANGE) - RESCALE_INTERCEPT
    ds.PixelData = stored.astype("<i2").tobytes()
    ds["PixelData"].VR = "OW"


def _processing_equipment(now: datetime.datetime, version: str):
    """A ContributingEquipmentSequence item: napari-pneumoseg made these pixels."""
    from pydicom.dataset import Dataset

    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "109102", "DCM"
    purpose.CodeMeaning = "Processing Equipment"
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = "napari-pneumoseg"
    item.SoftwareVersions = version
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = "Derived image: new pixel data"
    return item


def _source_headers(ct: CTVolume, source) -> tuple[list[tuple[Path, Any]], str]:
    """(file, header) of every candidate source slice, and the source's SeriesInstanceUID."""
    import pydicom

    from .dicom import _list_files

    meta = (source.metadata if isinstance(source, CTVolume) else ct.metadata) or {}
    series = str(meta.get("series_instance_uid") or "")
    if source is None or isinstance(source, CTVolume):
        files = [Path(f) for f in meta.get("files") or []]
        if not files:
            raise ValueError("no source DICOM files are known for this CT (its metadata has no "
                             "'files'): pass source= the CT read from DICOM, or its files")
        frames = [f for f in meta.get("frames") or [] if f is not None]
        if frames:
            raise ValueError("the source series is multi-frame (Enhanced CT); a derived series can "
                             "only be written from single-frame slices: use write_dicom_series")
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"source file {missing[0]} no longer exists"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        given = True
    else:
        try:
            files = _list_files(source if isinstance(source, (list, tuple)) else source)
        except CTReadError as exc:
            raise ValueError(str(exc)) from None
        given = False
    headers = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            if given:
                raise ValueError(f"source file {f} is not readable DICOM") from None
            continue
        if "ImagePositionPatient" not in ds:
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise ValueError(f"source file {f} is multi-frame; a derived series can only be "
                             "written from single-frame slices: use write_dicom_series")
        headers.append((f, ds))
    if series and not given:
        same = [(f, ds) for f, ds in headers if str(ds.get("SeriesInstanceUID", "")) == series]
        headers = same or headers
    if not headers:
        raise ValueError("no source DICOM slice with a position was found")
    return headers, series or str(headers[0][1].get("SeriesInstanceUID", "") or "")


def _match_slices(ct: CTVolume, headers: list[tuple[Path, Any]]) -> list[int]:
    """For each slice of ``ct``, the index in ``headers`` of the source slice at its position."""
    nz, ny, nx = ct.shape
    direction = np.asarray(ct.direction, dtype=float)
    positions = (ct.metadata or {}).get("positions")
    if positions is not None and len(positions) == nz:
        wanted = np.asarray(positions, dtype=float)  # the real positions read_ct found
    else:
        wanted = np.asarray(ct.origin) + np.arange(nz)[:, None] * ct.spacing[0] * direction[0]
    src_pos = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers])
    tol = max(1e-3, 0.05 * ct.spacing[0])
    matched: list[int] = []
    for k in range(nz):
        dist = np.linalg.norm(src_pos - wanted[k], axis=1)
        j = int(np.argmin(dist))
        if dist[j] > tol:
            raise ValueError(
                f"slice {k} of the CT (at {np.round(wanted[k], 2).tolist()} mm) has no source slice at "
                f"its position (nearest {dist[j]:.2f} mm away): the CT is not on the source series' grid")
        matched.append(j)
    if len(set(matched)) != len(matched):
        raise ValueError("several slices of the CT match the same source slice: the CT is not on "
                         "the source series' grid")
    row_dir, col_dir = direction[2], direction[1]
    for j in sorted(set(matched)):
        f, ds = headers[j]
        problem = None
        try:
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            ps = [float(v) for v in ds.PixelSpacing]
            size = (int(ds.Rows), int(ds.Columns))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"source file {f} lacks orientation, pixel spacing or image size") from None
        if not np.allclose(iop, [*row_dir, *col_dir], atol=1e-4):
            problem = f"orientation {iop.round(4).tolist()}"
        elif not np.allclose(ps, ct.spacing[1:], rtol=1e-4):
            problem = f"pixel spacing {ps}"
        elif size != (ny, nx):
            problem = f"image size {size}"
        if problem:
            raise ValueError(f"source file {f.name} has {problem}, unlike the CT: the CT is not on the "
                             "source series' grid")
    return matched
