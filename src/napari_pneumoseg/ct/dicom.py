"""Read a CT series from DICOM files into a :class:`CTVolume`.

Behaves like GDCM/SimpleITK series reading: files are grouped by series,
non-CT objects and localizers are skipped, slices are ordered by their
position along the slice normal, and the slice spacing comes from those
positions. Every irregularity (duplicates, gaps, tilt, skipped files) is
reported in ``CTVolume.warnings`` or raised as a :class:`CTReadError`.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from ..progress import ProgressFn, check_cancel, report
from ..resources import check_allocation, cpu_budget
from .volume import CTReadError, CTVolume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
CT_SOP_CLASSES = {CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

#: Value written for pixels marked as padding (outside the reconstruction field).
PADDING_HU = -1000.0
#: Largest Rows or Columns read: far above any CT's (512 to 2048), far below a header's lie.
MAX_SIDE = 8192
#: Most frames read from one multi-frame file.
MAX_FRAMES = 10000

PathLike = Union[str, os.PathLike]


@dataclass
class _Slice:
    """One 2-D image: a single-frame file or one frame of a multi-frame file."""

    file: Path
    frame: Optional[int]
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    rows: int
    cols: int
    instance_number: int
    acquisition: str
    series_uid: str
    sop_uid: str
    thickness: float = float("nan")

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])


def read_ct(
    path: Union[PathLike, Sequence[PathLike]],
    series_uid: Optional[str] = None,
    *,
    progress: Optional[ProgressFn] = None,
    cancel: Any = None,
    workers: Optional[int] = None,
) -> CTVolume:
    """Read one CT series from DICOM files as Hounsfield units on its voxel grid.

    Behaves like GDCM/SimpleITK series reading. Files are grouped into
    stacks (series, orientation, image size and pixel spacing); objects that
    are not CT images (localizers, secondary captures, reports, DICOMDIR,
    files that are not DICOM) are skipped. The stack with the most axial
    slices is read unless ``series_uid`` picks one. What the result
    guarantees:

    - slices are ordered along the slice normal (row x column direction of
      ImageOrientationPatient), never by InstanceNumber;
    - the slice spacing is the median step between slice positions along
      that normal, never SliceThickness (which only a single slice falls
      back to, with a warning);
    - each slice's own RescaleSlope and RescaleIntercept are applied, and
      pixels marked as padding (PixelPaddingValue, PixelPaddingRangeLimit)
      become :data:`PADDING_HU` (-1000 HU);
    - compressed transfer syntaxes (JPEG lossless, JPEG-LS, JPEG 2000, RLE),
      big endian and Enhanced (multi-frame) CT are read;
    - nothing irregular is fixed silently: skipped files and series, a
      non-axial series, duplicate positions (one slice per position is kept,
      or one acquisition), missing or unevenly spaced slices (not
      interpolated), gantry tilt (shown sheared, not resampled) and slices
      whose pixels could not be decoded (dropped) are each described in
      ``warnings``.

    Parameters
    ----------
    path : str, os.PathLike, or sequence of them
        A folder (searched recursively; hidden files are skipped), one file,
        or a list of files (folders in the list are searched too).
    series_uid : str, optional
        SeriesInstanceUID of the series to read. Default: the stack with the
        most axial slices.
    progress : callable, optional
        ``progress(done, total, text)``, called while headers are parsed (one
        file after another) and while pixel data are decoded.
    cancel : callable or threading.Event, optional
        Checked every few files (see :mod:`napari_pneumoseg.progress`).
    workers : int, optional
        Threads decoding pixel data; default ``min(8, 2 * cpu_budget())``
        (:func:`napari_pneumoseg.resources.cpu_budget`).

    Returns
    -------
    CTVolume
        ``hu`` as float32 ``(z, y, x)``; ``spacing``, ``origin`` (the first
        slice in normal order) and ``direction`` from the DICOM geometry;
        ``warnings`` as above; ``metadata`` with the series, study and
        frame-of-reference UIDs, description, window and, per slice in array
        order, the source ``files``, ``frames``, ``sop_instance_uids``,
        ``instance_numbers``, ``positions`` and ``rescale`` (what a DICOM-SEG
        of this CT must reference), plus ``padding_replaced``.

    Raises
    ------
    CTReadError
        ``path`` does not exist or holds no files; no CT image series is
        found (the message says what was skipped and why); ``series_uid``
        matches no series (the message lists those found); all slices lie at
        one position; or no slice could be decoded. The message names the
        path.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so; nothing is returned.

    Examples
    --------
    A series written by :func:`~napari_pneumoseg.ct.write_dicom_series` reads
    back with its geometry:

    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume, write_dicom_series
    >>> folder = Path(tempfile.mkdtemp()) / "series"
    >>> air = CTVolume(np.full((3, 4, 5), -1000.0), spacing=(2.5, 0.7, 0.7))
    >>> files = write_dicom_series(air, folder)
    >>> ct = read_ct(folder)
    >>> ct.shape, ct.spacing, ct.hu.dtype, ct.warnings
    ((3, 4, 5), (2.5, 0.7, 0.7), dtype('float32'), [])
    >>> read_ct(files[:2]).shape  # a list of files
    (2, 4, 5)
    >>> read_ct(folder / "missing")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_pneumoseg.ct.volume.CTReadError: .../missing: no such file or folder.
    """
    files = _list_files(path)
    workers = workers or min(8, 2 * cpu_budget())
    warnings: list[str] = []

    # 1. Parse every file once (headers and raw pixel bytes; decoding comes later).
    datasets: list[tuple[Path, Any]] = []
    skipped: dict[str, list[str]] = defaultdict(list)
    # Serial on purpose: parsing is pure Python and holds the GIL, so threads do not
    # speed it up (see benchmarks/README.md, "Reading").
    for i, file in enumerate(files):
        if i % 16 == 0:
            check_cancel(cancel)
            report(progress, i, 2 * len(files), "reading headers")
        result = _parse(file)
        if isinstance(result, str):
            skipped[result].append(file.name)
        else:
            datasets.append((file, result))

    # 2. Turn datasets into slices, skipping what is not a CT image.
    slices: list[_Slice] = []
    others: dict[str, list[str]] = defaultdict(list)
    for file, ds in datasets:
        reason = _not_ct_reason(ds)
        if reason:
            others[reason].append(file.name)
            continue
        try:
            found = _slices_of(file, ds)
            _check_pixel_length(ds)  # here, not in _slices_of: listing series (batch) reads no pixels
            slices.extend(found)
        except _SkipFile as exc:
            skipped[str(exc)].append(file.name)

    for reason, names in skipped.items():
        warnings.append(f"Skipped {len(names)} file(s) {reason}: {_names(names)}")
    for what, names in sorted(others.items()):
        warnings.append(f"Ignored {len(names)} object(s) that are not CT images ({what}): {_names(names)}")
    if not slices:
        found = "; ".join(warnings) if warnings else "no files"
        raise CTReadError(
            f"No CT image series found in {_describe(path)} ({found}). "
            "Choose a folder or files holding a CT image series."
        )

    # 3. Group by series and orientation; pick one stack.
    stack, pick_warnings = _pick_stack(slices, series_uid, path)
    warnings += pick_warnings

    # 4. Order along the slice normal; derive spacing; check for irregularities.
    stack, geometry, geo_warnings = _geometry(stack, path)
    warnings += geo_warnings

    # 5. Decode pixels (in parallel) and convert to HU. A slice that fails to
    #    decode (truncated, corrupt) is dropped with a warning and the geometry
    #    re-checked without it.
    by_file = {file: ds for file, ds in datasets}
    hu, failed, padded = _decode(stack, by_file, workers, progress, cancel, len(files))
    if failed:
        if len(failed) == len(stack):
            raise CTReadError(
                f"{_describe(path)}: no slice of the series could be decoded "
                f"({failed[0][1]}). Install pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg and "
                "pylibjpeg-rle for compressed DICOM, or re-export the series uncompressed."
            )
        bad = {k for k, _ in failed}
        warnings.append(
            f"Skipped {len(bad)} file(s) whose pixel data could not be decoded: "
            f"{_names([f'{stack[k].file.name} ({why})' for k, why in failed], 3)}"
        )
        keep = [k for k in range(len(stack)) if k not in bad]
        stack, geometry, geo_warnings = _geometry([stack[k] for k in keep], path)
        hu = hu[keep]
        warnings += [w for w in geo_warnings if w not in warnings]
    report(progress, 2 * len(files), 2 * len(files), "done")

    first_ds = by_file[stack[0].file]
    metadata = _metadata(first_ds, stack)
    metadata["padding_replaced"] = padded
    return CTVolume(
        hu=hu,
        spacing=geometry["spacing"],
        origin=geometry["origin"],
        direction=geometry["direction"],
        warnings=warnings,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- files


def _list_files(path) -> list[Path]:
    if isinstance(path, (list, tuple)):
        paths = [Path(p) for p in path]
        if not paths:
            raise CTReadError("No files given: choose a CT folder or its DICOM files.")
    else:
        paths = [Path(path)]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
            )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CTReadError(f"{p}: no such file or folder.")
    if not files:
        raise CTReadError(f"{_describe(path)}: the folder holds no files.")
    return files


def _describe(path) -> str:
    if isinstance(path, (list, tuple)):
        return f"{len(path)} given files" if len(path) != 1 else str(path[0])
    return str(path)


def _names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _parse(file: Path):
    """The pydicom dataset of ``file``, or a short reason why it cannot be one."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # Parsed from memory: a length field that lies cannot make the parser reserve gigabytes
        # (a file object's read(n) allocates n first; a BytesIO's gives only what is there).
        data = io.BytesIO(Path(file).read_bytes())
        return pydicom.dcmread(data)
    except InvalidDicomError:
        # Some old files lack the 128-byte preamble; accept them only if they
        # start with a group 0008 or 0002 element and really parse as an image.
        try:
            with open(file, "rb") as fh:
                if fh.read(2) not in (b"\x08\x00", b"\x02\x00", b"\x00\x08"):
                    return "that are not DICOM"
            data.seek(0)
            ds = pydicom.dcmread(data, force=True)
            if "SOPClassUID" in ds or "PixelData" in ds:
                return ds
        except Exception:
            pass
        return "that are not DICOM"
    except Exception:
        return "that are unreadable or truncated DICOM"


class _SkipFile(Exception):
    pass


def _not_ct_reason(ds) -> Optional[str]:
    """Why ``ds`` is not a CT image we read (a kind of object, for the warning), or None."""
    meta_sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    sop = str(ds.get("SOPClassUID", "")) or meta_sop
    if sop == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return "DICOMDIR"
    modality = str(ds.get("Modality", ""))
    if sop and sop not in CT_SOP_CLASSES:
        name = _uid_name(sop)
        return name if not modality or modality in name else f"{modality} {name}"
    if not sop and modality != "CT":
        return f"{modality or 'unknown'} objects without a SOP class"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localizer (scout) images"
    return None


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else f"objects of SOP class {uid}"


# ------------------------------------------------------------------------- slices


def _slices_of(file: Path, ds) -> list[_Slice]:
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise _SkipFile("that have no pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception:
        raise _SkipFile("that lack image size (Rows/Columns)") from None
    if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
        raise _SkipFile(f"with an impossible image size (Rows x Columns of {rows} x {cols}; "
                        f"a CT image has 1 to {MAX_SIDE} of each)")
    _check_pixel_format(ds)
    series = str(ds.get("SeriesInstanceUID", "") or "")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "") or str(
        getattr(getattr(ds, "file_meta", None), "MediaStorageSOPInstanceUID", "") or "")
    inst = _int(ds.get("InstanceNumber"), 0)
    acq = str(ds.get("AcquisitionNumber", "") or "")
    nframes = _int(ds.get("NumberOfFrames"), 1)
    if not 1 <= nframes <= MAX_FRAMES:
        raise _SkipFile(f"with an impossible NumberOfFrames ({ds.get('NumberOfFrames')})")
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and len(per_frame) != nframes:
            raise _SkipFile(f"whose NumberOfFrames ({nframes}) differs from their per-frame "
                            f"geometry ({len(per_frame)} items)")
        out = []
        for f in range(nframes):
            pos = _group_attr(ds, f, "PlanePositionSequence", "ImagePositionPatient")
            iop = _group_attr(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
            ps = _group_attr(ds, f, "PixelMeasuresSequence", "PixelSpacing")
            slope = _group_attr(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _group_attr(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
            ftype = _group_attr(ds, f, "CTImageFrameTypeSequence", "FrameType") or []
            if "LOCALIZER" in [str(v).upper() for v in ftype]:
                continue
            if pos is None or iop is None or ps is None:
                raise _SkipFile("whose frames lack position, orientation or pixel spacing")
            out.append(
                _Slice(file, f, _vec(pos, 3), _unit_iop(iop), _pair(ps),
                       _rescale(slope if slope is not None else ds.get("RescaleSlope"), "RescaleSlope"),
                       _rescale(icpt if icpt is not None else ds.get("RescaleIntercept"), "RescaleIntercept"),
                       rows, cols, inst, acq, series, sop_uid)
            )
        return out
    if nframes != 1:
        raise _SkipFile("that are multi-frame without per-frame geometry")
    pos, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if pos is None or iop is None or ps is None:
        raise _SkipFile("that lack ImagePositionPatient, ImageOrientationPatient or PixelSpacing")
    return [
        _Slice(file, None, _vec(pos, 3), _unit_iop(iop), _pair(ps),
               _rescale(ds.get("RescaleSlope"), "RescaleSlope"),
               _rescale(ds.get("RescaleIntercept"), "RescaleIntercept"),
               rows, cols, inst, acq, series, sop_uid,
               _float(ds.get("SpacingBetweenSlices"), _float(ds.get("SliceThickness"), float("nan"))))
    ]


def _rescale(value, name: str) -> float:
    """RescaleSlope (default 1) or RescaleIntercept (default 0); a value that would make HU meaningless is refused.

    A slope of 0 would turn the slice into a constant and a non-number
    (``NaN``, ``inf``, text) into garbage, so such a file is skipped.
    """
    default = 1.0 if name == "RescaleSlope" else 0.0
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _SkipFile(f"with an unreadable {name} ({str(value)[:20]!r})") from None
    if not np.isfinite(v) or (name == "RescaleSlope" and v == 0):
        raise _SkipFile(f"with a {name} of {value!s:.20} (HU would be meaningless)")
    return v


def _check_pixel_format(ds) -> None:
    """Refuse pixel formats no CT image has (colour, odd bit depths) before decoding anything."""
    if "PixelData" not in ds:
        return
    samples = _int(ds.get("SamplesPerPixel"), 1)
    if samples != 1:
        raise _SkipFile(f"with {samples} samples per pixel (a CT image has one: grey levels)")
    bits = _int(ds.get("BitsAllocated"), 16)
    if bits not in (8, 16, 32):
        raise _SkipFile(f"with BitsAllocated {ds.get('BitsAllocated')} (a CT image has 8, 16 or 32)")


def _check_pixel_length(ds) -> None:
    """Uncompressed pixel data must hold what the header claims: checked before anything is allocated.

    Call after :func:`_slices_of`, which has checked Rows, Columns and NumberOfFrames.
    """
    if "PixelData" not in ds:
        return
    rows, cols, nframes = int(ds.Rows), int(ds.Columns), _int(ds.get("NumberOfFrames"), 1)
    from pydicom.uid import UncompressedTransferSyntaxes  # their pixel data length follows from the header

    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    if syntax not in UncompressedTransferSyntaxes:
        return
    need = rows * cols * nframes * _int(ds.get("BitsAllocated"), 16) // 8
    if len(ds.PixelData) < need:  # the message is the same for every such file: they are listed together
        raise _SkipFile("whose pixel data is shorter than their Rows x Columns x NumberOfFrames claim "
                        "(truncated files, or headers that lie)")


def _group_attr(ds, frame: int, seq: str, attr: str):
    """An attribute of a functional group, per-frame first, then shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame),
                          ("SharedFunctionalGroupsSequence", 0)):
        try:
            item = ds[groups][index]
            return item[seq][0][attr].value
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
    return None


def _vec(value, n: int) -> np.ndarray:
    try:
        v = np.array([float(x) for x in value], dtype=float)
    except (TypeError, ValueError):
        raise _SkipFile("with unreadable geometry values") from None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise _SkipFile("with unreadable geometry values")
    return v


def _unit_iop(value) -> np.ndarray:
    v = _vec(value, 6)
    r, c = v[:3], v[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6 or abs(np.dot(r / nr, c / nc)) > 1e-2:
        raise _SkipFile("with an invalid ImageOrientationPatient")
    return np.concatenate([r / nr, c / nc])


def _pair(value) -> tuple[float, float]:
    v = _vec(value, 2)
    if np.any(v <= 0):
        raise _SkipFile("with a non-positive PixelSpacing")
    return float(v[0]), float(v[1])


def _float(value, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _int(value, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


# -------------------------------------------------------------------- choose stack


def _is_axial(normal: np.ndarray) -> bool:
    return abs(normal[2]) >= np.cos(np.radians(45))


def _pick_stack(slices: list[_Slice], series_uid: Optional[str], path) -> tuple[list[_Slice], list[str]]:
    warnings: list[str] = []
    groups: dict[tuple, list[_Slice]] = defaultdict(list)
    for s in slices:
        key = (s.series_uid, tuple(np.round(s.orientation, 3)), s.rows, s.cols,
               tuple(np.round(s.pixel_spacing, 4)))
        groups[key].append(s)

    if series_uid is not None:
        groups = {k: v for k, v in groups.items() if k[0] == series_uid}
        if not groups:
            available = sorted({s.series_uid for s in slices})
            raise CTReadError(
                f"{_describe(path)}: no CT series with SeriesInstanceUID {series_uid}. "
                f"Series found: {', '.join(available) or '(none with a UID)'}."
            )

    def rank(item):
        key, members = item
        return (_is_axial(members[0].normal), len(members))

    ordered = sorted(groups.items(), key=rank, reverse=True)
    (key, chosen), rest = ordered[0], ordered[1:]
    if not _is_axial(chosen[0].normal):
        warnings.append(
            f"The series read is not axial (slice normal {np.round(chosen[0].normal, 3).tolist()}); "
            "the network expects axial slices."
        )
    for other_key, members in rest:
        same_series = other_key[0] == key[0]
        what = "images of the same series with another orientation or size" if same_series \
            else f"series {other_key[0] or '(no UID)'}"
        kind = "axial" if _is_axial(members[0].normal) else "non-axial"
        warnings.append(f"Skipped {what} ({len(members)} {kind} slice(s)).")
    return chosen, warnings


# ------------------------------------------------------------------------ geometry


def _geometry(stack: list[_Slice], path) -> tuple[list[_Slice], dict, list[str]]:
    warnings: list[str] = []
    r, c = stack[0].orientation[:3], stack[0].orientation[3:]
    n = np.cross(r, c)
    d = np.array([s.position @ n for s in stack])
    order = np.lexsort((np.array([s.instance_number for s in stack]), d))
    stack = [stack[i] for i in order]
    d = d[order]

    # Duplicate positions: several acquisitions at the same place, or copies.
    tol = 1e-3 + 1e-3 * (np.ptp(d) / max(len(d) - 1, 1))
    dup = np.diff(d) < tol
    if len(stack) > 1 and dup.all():
        raise CTReadError(
            f"{_describe(path)}: all {len(stack)} slices lie at the same position "
            f"({d[0]:.2f} mm along the slice normal), so they do not form a volume "
            "(a time series or repeated scans of one slice?). Open a single file instead."
        )
    if dup.any():
        acquisitions = {s.acquisition for s in stack}
        if len(acquisitions) > 1:
            by_acq: dict[str, list[_Slice]] = defaultdict(list)
            for s in stack:
                by_acq[s.acquisition].append(s)
            best = max(by_acq, key=lambda a: (len({round(x.position @ n, 3) for x in by_acq[a]}), a))
            warnings.append(
                f"Slices share positions across {len(acquisitions)} acquisitions "
                f"({', '.join(sorted(a or '?' for a in acquisitions))}); "
                f"read acquisition {best or '?'} only ({len(by_acq[best])} slices)."
            )
            return _geometry_checked(by_acq[best], n, path, warnings)
        keep = np.concatenate([[True], ~dup])
        where = sorted({f"{x:.2f}" for x in d[1:][dup]})
        warnings.append(
            f"{int(dup.sum())} slice(s) duplicate the position of another slice "
            f"(at {_names(where)} mm along the normal); kept the one with the lowest "
            "InstanceNumber at each position."
        )
        stack = [s for s, k in zip(stack, keep) if k]
    return _geometry_checked(stack, n, path, warnings)


def _geometry_checked(stack: list[_Slice], n: np.ndarray, path, warnings: list[str]):
    r, c = stack[0].orientation[:3], stack[0].orientation[3:]
    d = np.array([s.position @ n for s in stack])
    order = np.argsort(d, kind="stable")
    stack = [stack[i] for i in order]
    d = d[order]
    row_spacing, col_spacing = stack[0].pixel_spacing  # DICOM: (between rows, between columns)

    if len(stack) == 1:
        z = stack[0].thickness if np.isfinite(stack[0].thickness) and stack[0].thickness > 0 else 1.0
        warnings.append(
            "Only one slice: the slice spacing cannot be measured from positions; "
            f"{z:g} mm is assumed ({'SliceThickness' if z != 1.0 else 'a placeholder'}), "
            "so volumes in mL are estimates at best."
        )
    else:
        gaps = np.diff(d)
        z = float(np.median(gaps))
        uneven = np.abs(gaps - z) > max(0.01 * z, 1e-3)
        if uneven.any():
            parts = []
            missing = 0
            for i in np.flatnonzero(uneven):
                ratio = gaps[i] / z
                if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
                    missing += int(round(ratio)) - 1
                parts.append(f"{gaps[i]:.2f} mm between {d[i]:.2f} and {d[i + 1]:.2f} mm")
            what = (
                f"{missing} slice(s) appear to be missing" if missing else "slice gaps are uneven"
            )
            warnings.append(
                f"{what}: the series steps {z:.3f} mm but has {_names(parts, 3)}. The volume uses "
                f"{z:.3f} mm, so anything measured across the gap(s) is too small; re-export the "
                "complete series if you can."
            )
        # Gantry tilt: slices step in a direction that is not the slice normal.
        step = stack[-1].position - stack[0].position
        cosang = abs(step @ n) / max(np.linalg.norm(step), 1e-9)
        tilt = float(np.degrees(np.arccos(min(1.0, cosang))))
        if tilt > 0.5:
            warnings.append(
                f"Gantry tilt of {tilt:.1f} degrees: each slice is shifted in-plane relative to "
                "the previous one, so the volume is shown sheared (not resampled). Voxel volumes "
                f"and thus volumes in mL are right; z spacing is {z:.3f} mm along the slice normal."
            )
    direction = np.stack([n, c, r])
    geometry = {
        "spacing": (z, row_spacing, col_spacing),
        "origin": tuple(stack[0].position),
        "direction": direction,
    }
    return stack, geometry, warnings


# -------------------------------------------------------------------------- pixels


def _decode(stack, by_file, workers, progress, cancel, n_files):
    """HU array of the stack, the (index, reason) of slices that failed, and padding use."""
    _check_memory(len(stack) * stack[0].rows * stack[0].cols * 4, stack[0].file.parent)
    hu = np.empty((len(stack), stack[0].rows, stack[0].cols), dtype=np.float32)
    per_file: dict[Path, list[int]] = defaultdict(list)
    for k, s in enumerate(stack):
        per_file[s.file].append(k)

    def decode_file(indices: list[int]):
        failed, padded = [], False
        for k in indices:
            try:
                hu[k], p = _slice_hu(by_file[stack[k].file], stack[k])
                padded |= p
            except _SkipFile as exc:
                failed.append((k, str(exc)))
        return failed, padded

    failed: list[tuple[int, str]] = []
    padded = False
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # One job per file: a multi-frame file is decoded once for all its frames.
        jobs = [pool.submit(decode_file, ks) for ks in per_file.values()]
        try:
            for i, job in enumerate(jobs):
                f, p = job.result()
                failed += f
                padded |= p
                if i % 8 == 0:
                    check_cancel(cancel)
                    report(progress, n_files + i, 2 * n_files, "decoding pixels")
        except BaseException:
            for j in jobs:
                j.cancel()
            raise
    return hu, sorted(failed), padded


def _check_memory(nbytes: int, where) -> None:
    """Refuse a volume larger than the memory free now (not to be killed half-way, or to swap)."""
    why = check_allocation(nbytes, "the series as HU")
    if why:
        raise CTReadError(f"{where}: {why}.")


def _slice_hu(ds, s: _Slice) -> tuple[np.ndarray, bool]:
    """HU of one slice, and whether padding pixels were replaced."""
    try:
        if s.frame is None:
            arr = _native_pixels(ds, s)
            if arr is None:
                arr = ds.pixel_array
        else:
            arr = _frames(ds)[s.frame]
    except Exception as exc:  # decoder missing, corrupt stream, truncated data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise _SkipFile(f"{getattr(syntax, 'name', 'unknown transfer syntax')}: {exc}") from exc
    if arr.shape != (s.rows, s.cols):
        raise _SkipFile(f"pixel data has shape {arr.shape}, expected ({s.rows}, {s.cols})")
    hu = arr.astype(np.float32)
    if s.slope != 1.0:
        hu *= np.float32(s.slope)
    if s.intercept != 0.0:
        hu += np.float32(s.intercept)
    padded = False
    pad = ds.get("PixelPaddingValue")
    if pad is not None:
        limit = ds.get("PixelPaddingRangeLimit")
        lo, hi = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
        mask = (arr >= lo) & (arr <= hi)
        if mask.any():
            hu[mask] = PADDING_HU
            padded = True
    return hu, padded


_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _native_pixels(ds, s: _Slice) -> Optional[np.ndarray]:
    """Uncompressed little-endian 16-bit pixels straight from the buffer, else None.

    The common CT case; it skips pydicom's general decoder, which is much
    slower (see benchmarks/README.md, "Reading"), and gives the same values
    (a test compares them).
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", ""))
    if (syntax not in _NATIVE_LE or ds.get("BitsAllocated") != 16
            or ds.get("SamplesPerPixel", 1) != 1 or "PixelData" not in ds):
        return None
    signed = ds.get("PixelRepresentation", 0) == 1
    if signed and ds.get("BitsStored", 16) != 16:
        return None  # needs sign extension: leave it to pydicom
    data = ds.PixelData
    if len(data) < 2 * s.rows * s.cols:
        raise _SkipFile(f"pixel data is truncated ({len(data)} of {2 * s.rows * s.cols} bytes)")
    return np.frombuffer(data, dtype="<i2" if signed else "<u2", count=s.rows * s.cols).reshape(
        s.rows, s.cols
    )


def _frames(ds) -> np.ndarray:
    """All frames of a multi-frame dataset, decoded once and cached on it."""
    cached = getattr(ds, "_pneumoseg_frames", None)
    if cached is None:
        cached = ds.pixel_array
        if cached.ndim == 2:
            cached = cached[None]
        object.__setattr__(ds, "_pneumoseg_frames", cached)
    return cached


# ------------------------------------------------------------------------ metadata


def _metadata(ds, stack: list[_Slice]) -> dict[str, Any]:
    def text(name):
        v = ds.get(name)
        return str(v) if v not in (None, "") else ""

    wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
    first = lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)  # noqa: E731
    return {
        "series_instance_uid": stack[0].series_uid,
        "study_instance_uid": text("StudyInstanceUID"),
        "frame_of_reference_uid": text("FrameOfReferenceUID"),
        "series_description": text("SeriesDescription"),
        "series_number": text("SeriesNumber"),
        "patient_position": text("PatientPosition"),
        "modality": text("Modality") or "CT",
        "manufacturer": text("Manufacturer"),
        "slice_thickness": _float(ds.get("SliceThickness"), float("nan")),
        "window": [first(wc), first(ww)] if wc is not None and ww is not None else None,
        "files": [str(s.file) for s in stack],
        "frames": [s.frame for s in stack],
        "sop_instance_uids": [s.sop_uid for s in stack],
        "instance_numbers": [s.instance_number for s in stack],
        "positions": [s.position.tolist() for s in stack],
        "rescale": [[s.slope, s.intercept] for s in stack],
    }


def iter_dicom_files(folder: PathLike) -> Iterable[Path]:
    """Files below ``folder`` that start like DICOM (preamble + ``DICM``), in sorted order.

    The whole tree is listed and sorted first, and every file is opened
    (132 bytes); for a quick yes/no use :func:`first_dicom_file`.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to search, recursively.

    Yields
    ------
    pathlib.Path
        Each file for which :func:`looks_like_dicom` is true.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.dcm").write_bytes(bytes(128) + b"DICM" + bytes(16))
    >>> _ = (folder / "notes.txt").write_text("not DICOM")
    >>> [f.name for f in iter_dicom_files(folder)]
    ['a.dcm']
    """
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file() and looks_like_dicom(f):
            yield f


#: How many files :func:`first_dicom_file` opens before it gives up on a folder.
SNIFF_MAX_FILES = 64


def first_dicom_file(folder: PathLike, *, max_files: int = SNIFF_MAX_FILES) -> Optional[Path]:
    """A DICOM file in ``folder`` or below, found cheaply; None if none is found soon.

    For napari's reader hook, which runs on the GUI thread and must decide
    quickly: the tree is walked lazily (no listing or sorting of the whole
    tree), hidden files and folders are skipped, and at most ``max_files``
    files are opened (132 bytes each) before the answer is no.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to look in.
    max_files : int, optional
        Files to open at most.

    Returns
    -------
    pathlib.Path or None
        The first file found that starts like DICOM (preamble + ``DICM``;
        which one, when there are several, depends on the file system's
        order), or None.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> first_dicom_file(folder) is None
    True
    >>> _ = (folder / "IM0001").write_bytes(bytes(128) + b"DICM" + bytes(16))
    >>> first_dicom_file(folder).name
    'IM0001'
    """
    opened = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(root) / name
            if looks_like_dicom(path):
                return path
            opened += 1
            if opened >= max_files:
                return None
    return None


def looks_like_dicom(file: Path) -> bool:
    """Whether ``file`` starts like a DICOM file: a 128-byte preamble, then ``DICM``.

    Only the first 132 bytes are read. Old files written without the preamble
    (which :func:`read_ct` still accepts) answer False.

    Parameters
    ----------
    file : str or os.PathLike
        The file to look at.

    Returns
    -------
    bool
        True if ``DICM`` follows the preamble; False otherwise, also for a
        file that is missing, unreadable or shorter than 132 bytes (never
        raises :class:`OSError`).

    Examples
    --------
    >>> import tempfile
    >>> file = Path(tempfile.mkdtemp()) / "IM0001"
    >>> _ = file.write_bytes(bytes(128) + b"DICM" + bytes(16))
    >>> looks_like_dicom(file), looks_like_dicom(file.with_name("missing"))
    (True, False)
    """
    try:
        with open(file, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"
