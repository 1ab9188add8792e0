"""DICOM Segmentation objects (DICOM-SEG), written and read with highdicom.

Writing needs the source CT files (``ct.metadata['files']``, kept by
:func:`~napari_pneumoseg.ct.read_ct`): the SEG references each CT instance
and copies patient, study and frame-of-reference from them. Headers are
re-read without pixel data.

Reading onto a CT: a frame that references one of this CT's SOP instances
is placed on that slice (exact, and robust to a sheared, gantry-tilted
stack); any other frame by its own position and orientation, which must
fall exactly on a CT slice (:func:`.grid.align_to`). Frames that highdicom
omitted because they were empty read back as zeros.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .atomic import atomic_path
from .grid import (
    DEFAULT_COLOR,
    DEFAULT_NAME,
    Grid,
    MaskFile,
    MaskFileError,
    MaskGeometryError,
    Segment,
    align_to,
    as_grid,
)

PathLike = Union[str, os.PathLike]

SEG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
}

#: Fractional SEG values at or above this (after scaling to 0-1) count as inside the mask.
FRACTIONAL_THRESHOLD = 0.5


# --------------------------------------------------------------------------- write


def write_dicom_seg(mask: np.ndarray, path: PathLike, ct, *, name: str = DEFAULT_NAME,
                    color=DEFAULT_COLOR, overwrite: bool = False, fractional: bool = False,
                    series_number: int = 1000, series_description: Optional[str] = None) -> None:
    """Write a ``(z, y, x)`` mask on a CT's grid as a DICOM-SEG referencing the CT's instances.

    One segment, algorithm type AUTOMATIC (napari-pneumoseg), each frame
    derived from its CT slice; patient, study and frame of reference are
    copied from the CT's files, which are re-read (headers only). Written
    atomically (see :func:`~napari_pneumoseg.io.atomic.atomic_path`).
    :func:`~napari_pneumoseg.io.write_mask` checks a mask's values before it
    calls this.

    Parameters
    ----------
    mask : array_like
        The mask, of the CT's shape: nonzero = inside (BINARY SEG) or, with
        ``fractional``, probabilities (clipped to 0..1; FRACTIONAL SEG).
    path : str or os.PathLike
        The file to write; its folder must exist.
    ct : CTVolume, Grid or dict
        The CT or its geometry, with the source files recorded by
        :func:`~napari_pneumoseg.ct.read_ct` in its metadata (``files``, and
        ``frames`` and ``sop_instance_uids`` when present).
    name : str, default "Pneumothorax"
        Segment label (first 64 characters); a name that says pneumothorax
        gets the SNOMED CT codes for it, any other name "Tissue".
    color : tuple of float, default (1.0, 0.6, 0.0)
        Recommended display colour, r g b in 0-1.
    overwrite : bool, default False
        Replace an existing file.
    fractional : bool, default False
        Write probabilities rather than a binary mask.
    series_number : int, default 1000
        SeriesNumber of the SEG.
    series_description : str, optional
        SeriesDescription; default ``"<name> (napari-pneumoseg)"``.

    Raises
    ------
    MaskFileError
        The CT has no source files on record, one cannot be read any more or
        no longer holds the slice that was read, or the CT is spread over
        several multi-frame files.
    ValueError
        ``mask`` has another shape than the CT.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume, read_ct, write_dicom_series
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = write_dicom_series(CTVolume(np.full((3, 8, 8), -1000.0), spacing=(2.5, 0.7, 0.7)), root / "ct")
    >>> ct = read_ct(root / "ct")
    >>> mask = np.zeros(ct.shape, np.uint8)
    >>> mask[1, 2:5, 3:6] = 1
    >>> write_dicom_seg(mask, root / "ptx.dcm", ct)
    >>> int(read_dicom_seg(root / "ptx.dcm", ct).sum())
    9
    """
    import highdicom as hd
    import pydicom

    from .. import __version__

    grid = as_grid(ct)
    sources, pixel_array = _sources_and_frames(np.asarray(mask), grid)
    if fractional:
        pixel_array = np.clip(pixel_array.astype(np.float32), 0.0, 1.0)
        seg_type = hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        pixel_array = (pixel_array != 0).astype(np.uint8)
        seg_type = hd.seg.SegmentationTypeValues.BINARY
    category, prop = _codes(name)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=prop,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="napari-pneumoseg", version=__version__,
            family=pydicom.sr.codedict.codes.cid7162.ArtificialIntelligence),
        display_color=hd.color.CIELabColor.from_rgb(*(255 * min(max(float(c), 0.0), 1.0)
                                                      for c in color)),
    )
    with warnings.catch_warnings():
        # highdicom checks the copied PatientName, which old CTs often store as one component.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        try:
            seg = _segmentation(hd, sources, pixel_array, seg_type, description, series_number)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise MaskFileError(f"A DICOM-SEG cannot be made for this CT ({grid.metadata.get('files', ['?'])[0]} "
                                f"and the rest of its series): highdicom refused its headers ({exc}). Save the "
                                "mask as .seg.nrrd or .nii.gz instead.") from exc
    seg.SeriesDescription = (series_description or f"{name} (napari-pneumoseg)")[:64]
    with atomic_path(path, overwrite=overwrite) as tmp:
        seg.save_as(str(tmp), enforce_file_format=True)


def _segmentation(hd, sources, pixel_array, seg_type, description, series_number):
    """highdicom's Segmentation of the mask frames, with this plugin as its maker."""
    from .. import __version__

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=seg_type,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-pneumoseg",
        manufacturer_model_name="napari-pneumoseg",
        software_versions=__version__,
        device_serial_number="0",
    )


def _as_list(value) -> list:
    """A DICOM element's value as a list: [] for None, the values of a multi-valued one, else [value]."""
    from pydicom.multival import MultiValue

    if value is None:
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def _sources_and_frames(mask: np.ndarray, grid: Grid):
    """The CT's source datasets (no pixels) and the mask as frames in their order."""
    import pydicom

    meta = grid.metadata
    files = meta.get("files") or []
    if mask.shape != grid.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the CT's {grid.shape}")
    if len(files) != grid.shape[0]:
        raise MaskFileError(
            "A DICOM-SEG must reference the CT's DICOM files, and this CT has none on record "
            "(a synthetic CT or one not read from DICOM). Save as .seg.nrrd or .nii.gz instead."
        )
    frames = meta.get("frames") or [None] * len(files)
    uids = meta.get("sop_instance_uids") or []
    if len(uids) != len(files):
        uids = [None] * len(files)
    datasets: dict[str, object] = {}
    for f in dict.fromkeys(files):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:
            raise MaskFileError(f"{f}: the CT's source file cannot be read any more ({exc}); "
                                "a DICOM-SEG needs the original CT files.") from exc
        # Some files leave SOP class/instance empty in the data set (only in the file meta).
        meta_ = getattr(ds, "file_meta", None)
        for attr, meta_attr in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(ds.get(attr, "") or "") and meta_ is not None and meta_.get(meta_attr):
                setattr(ds, attr, meta_.get(meta_attr))
        # Present but empty means the default repertoire, which highdicom only accepts when absent.
        charset = ds.get("SpecificCharacterSet")
        if "SpecificCharacterSet" in ds and not "".join(map(str, _as_list(charset))).strip():
            del ds.SpecificCharacterSet
        datasets[f] = ds
    for f, uid in zip(files, uids, strict=True):
        if uid and str(datasets[f].get("SOPInstanceUID", "")) != uid:
            raise MaskFileError(f"{f}: no longer holds the CT slice that was read "
                                f"(SOP instance {uid}); re-open the CT.")
    if all(fr is None for fr in frames):
        return [datasets[f] for f in files], mask
    if len(datasets) != 1 or any(fr is None for fr in frames):
        raise MaskFileError("A DICOM-SEG of a CT spread over several multi-frame files is not "
                            "supported; save as .seg.nrrd or .nii.gz instead.")
    ds = next(iter(datasets.values()))
    out = np.zeros((int(ds.NumberOfFrames),) + mask.shape[1:], dtype=mask.dtype)
    out[np.asarray(frames, int)] = mask
    return [ds], out


def _codes(name: str):
    from pydicom.sr.codedict import codes

    from .grid import _PNEUMOTHORAX

    if _PNEUMOTHORAX.search(name):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Pneumothorax
    return codes.SCT.Tissue, codes.SCT.Tissue


# ---------------------------------------------------------------------------- read


def find_seg_file(path: PathLike) -> Path:
    """The DICOM-SEG file at ``path``: the file itself, or the one SEG in a folder.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM-SEG file, or a folder (searched recursively) holding exactly
        one, possibly among other DICOM files.

    Returns
    -------
    pathlib.Path
        The SEG file.

    Raises
    ------
    MaskFileError
        The file is not readable DICOM or is another kind of object (the
        message says which), or the folder holds no SEG or several.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume, read_ct, write_dicom_series
    >>> root = Path(tempfile.mkdtemp())
    >>> files = write_dicom_series(CTVolume(np.zeros((2, 4, 4)), spacing=(2.5, 0.7, 0.7)), root / "ct")
    >>> write_dicom_seg(np.ones((2, 4, 4), np.uint8), root / "ct" / "seg.dcm", read_ct(files))
    >>> find_seg_file(root).name
    'seg.dcm'
    >>> find_seg_file(files[0])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_pneumoseg.io.grid.MaskFileError: ...CT_0001.dcm: is a CT Image Storage, not a DICOM Segmentation...
    """
    import pydicom

    path = Path(path)
    if path.is_dir():
        from ..ct.dicom import iter_dicom_files

        segs = []
        for f in iter_dicom_files(path):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            except Exception:
                continue
            if str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES:
                segs.append(f)
        if len(segs) != 1:
            found = ", ".join(s.name for s in segs[:5]) if segs else "none"
            raise MaskFileError(f"{path}: expected one DICOM-SEG file in the folder, found "
                                f"{len(segs)} ({found}). Choose the SEG file itself.")
        return segs[0]
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "Modality"])
    except Exception as exc:
        raise MaskFileError(f"{path}: not a readable DICOM file ({exc}).") from exc
    sop = str(ds.get("SOPClassUID", ""))
    if sop not in SEG_SOP_CLASSES:
        from pydicom.uid import UID

        what = UID(sop).name if sop else f"{ds.get('Modality', 'unknown')} object"
        raise MaskFileError(f"{path}: is a {what}, not a DICOM Segmentation (DICOM-SEG).")
    return path


def _segread(path: PathLike):
    import highdicom as hd

    file = find_seg_file(path)
    try:
        return file, hd.seg.segread(str(file))
    except Exception as exc:
        raise MaskFileError(f"{file}: not a valid DICOM-SEG ({exc}).") from exc


def _segments(seg) -> list[Segment]:
    import highdicom as hd

    out = []
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        color = None
        lab = desc.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            try:
                rgb = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
                color = tuple(float(c) / 255 for c in rgb)
            except (ValueError, TypeError):
                color = None
        out.append(Segment(name=str(desc.segment_label), label=int(number), layer=len(out),
                           color=color, id=str(desc.segment_label)))
    return out


def read_dicom_seg(path: PathLike, like, *, segment=None) -> np.ndarray:
    """Read one segment of a DICOM-SEG onto a CT's voxel grid.

    Each stored frame goes to the CT slice it references (SOP instance, and
    frame for a multi-frame CT) when its spatial locations are preserved and
    its size matches; otherwise to where its plane position puts it, which
    must be exactly a CT slice. No frame is ever dropped silently. A
    FRACTIONAL SEG counts as inside where its value is at least
    :data:`FRACTIONAL_THRESHOLD`.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM-SEG file or a folder holding one (see :func:`find_seg_file`).
    like : CTVolume, Grid or dict
        The CT or its geometry; with ``sop_instance_uids`` (and ``frames``)
        in its metadata, as :func:`~napari_pneumoseg.ct.read_ct` records,
        frames are placed by reference.
    segment : str or int, optional
        Segment label or segment number; default the only segment, or the
        one whose label says pneumothorax.

    Returns
    -------
    numpy.ndarray
        uint8 ``(z, y, x)`` of the CT's shape, 1 inside the segment.

    Raises
    ------
    MaskFileError
        No SEG at ``path`` or not a valid one, no segments, ``segment``
        matches none or several, or a frame that references no CT slice has
        no plane position.
    MaskGeometryError
        A frame placed by position is not exactly on a CT slice or lies
        outside the CT, or the SEG belongs to another frame of reference.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume, read_ct, write_dicom_series
    >>> root = Path(tempfile.mkdtemp())
    >>> ct = read_ct(write_dicom_series(CTVolume(np.zeros((3, 4, 4)), spacing=(2.5, 0.7, 0.7)), root / "ct"))
    >>> mask = np.zeros(ct.shape, np.uint8)
    >>> mask[2, 1:3, 1:3] = 1
    >>> write_dicom_seg(mask, root / "ptx.dcm", ct, name="Pneumothorax left")
    >>> np.array_equal(read_dicom_seg(root / "ptx.dcm", ct, segment="Pneumothorax left"), mask)
    True
    """
    grid = as_grid(like)
    file, seg = _segread(path)
    segments = _segments(seg)
    listing = MaskFile(np.zeros((0, 0, 0, 0), np.uint8), np.eye(4), segments, str(file))
    chosen = listing.pick(segment)
    if chosen is None:
        raise MaskFileError(f"{file}: the DICOM-SEG has no segments.")
    source = str(file)
    slice_of = _ct_slices(grid)
    same_size = (int(seg.Rows), int(seg.Columns)) == tuple(grid.shape[1:])
    out = np.zeros(grid.shape, np.uint8)
    inv_ct = np.linalg.inv(grid.affine)
    checked_for = False
    for i, item, frame in _frames_of(seg, chosen.label):
        k = _referenced_slice(item, slice_of) if same_size else None
        if k is not None:
            np.maximum(out[k], frame, out=out[k])
            continue
        if not checked_for:
            _check_frame_of_reference(seg, grid, source)
            checked_for = True
        ipp = _group(seg, item, "PlanePositionSequence", "ImagePositionPatient")
        iop = _group(seg, item, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _group(seg, item, "PixelMeasuresSequence", "PixelSpacing")
        if ipp is None or iop is None or ps is None:
            raise MaskFileError(f"{source}: frame {i + 1} has no plane position, orientation or "
                                "pixel spacing and references no slice of this CT, so it cannot "
                                "be placed.")
        _place(out, frame, np.asarray(ipp, float), np.asarray(iop, float),
               np.asarray(ps, float), grid, inv_ct, f"{source} (frame {i + 1})")
    return out


def _ct_slices(grid: Grid) -> dict[tuple[str, Optional[int]], int]:
    """CT slice index by (SOP instance UID, 1-based frame number or None)."""
    uids = grid.metadata.get("sop_instance_uids") or []
    frames = grid.metadata.get("frames") or [None] * len(uids)
    if len(uids) != grid.shape[0] or len(frames) != len(uids):
        return {}
    out: dict[tuple[str, Optional[int]], int] = {}
    for k, (uid, f) in enumerate(zip(uids, frames, strict=True)):
        if uid:
            out[(str(uid), None if f is None else int(f) + 1)] = k
    return out


def _referenced_slice(item, slice_of) -> Optional[int]:
    """The CT slice a SEG frame was derived from, if exactly one and at the same place."""
    from pydicom.multival import MultiValue

    refs = []
    for der in item.get("DerivationImageSequence", []):
        for src in der.get("SourceImageSequence", []):
            if str(src.get("SpatialLocationsPreserved", "YES")).upper() != "YES":
                return None
            fr = src.get("ReferencedFrameNumber")
            if fr not in (None, ""):
                fr = int(fr[0]) if isinstance(fr, MultiValue) else int(fr)
            else:
                fr = None
            uid = str(src.get("ReferencedSOPInstanceUID", ""))
            k = slice_of.get((uid, fr))
            if k is None and fr == 1:  # a single-frame image referenced as "frame 1"
                k = slice_of.get((uid, None))
            refs.append(k)
    return refs[0] if len(refs) == 1 else None


def _frames_of(seg, number: int):
    """``(index, item, binary frame)`` for each stored frame of segment ``number`` with content."""
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    seg_type = str(seg.SegmentationType)
    max_frac = float(seg.get("MaximumFractionalValue", 255) or 255)
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if seg_type == "LABELMAP":
            frame = pixels[i] == number
        else:
            which = _group(seg, item, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
            if which != number:
                continue
            if seg_type == "FRACTIONAL":
                frame = pixels[i] / max_frac >= FRACTIONAL_THRESHOLD
            else:
                frame = pixels[i] != 0
        if frame.any():
            yield i, item, frame.astype(np.uint8)


def _check_frame_of_reference(seg, grid: Grid, source: str) -> None:
    seg_for = str(seg.get("FrameOfReferenceUID", "") or "")
    ct_for = str(grid.metadata.get("frame_of_reference_uid", "") or "")
    if seg_for and ct_for and seg_for != ct_for:
        raise MaskGeometryError(
            f"{source} belongs to another frame of reference ({seg_for}) than the CT ({ct_for}): "
            "it was made on another scan, so its positions do not apply to this CT."
        )


def _group(seg, item, seq: str, attr: str):
    for where in (item, seg.SharedFunctionalGroupsSequence[0]
                  if "SharedFunctionalGroupsSequence" in seg else None):
        if where is not None and seq in where and attr in where[seq][0]:
            value = where[seq][0][attr].value
            return int(value) if attr == "ReferencedSegmentNumber" else value
    return None


def _place(out, frame, ipp, iop, ps, grid: Grid, inv_ct, source: str) -> None:
    """Put one 2-D frame into ``out`` where it lies on the CT grid, or raise MaskGeometryError."""
    row_step = iop[3:] * ps[0]  # moving down one row
    col_step = iop[:3] * ps[1]  # moving right one column
    in_ct = inv_ct[:3, :3] @ np.stack([row_step, col_step], axis=1)
    b_row, b_col = (int(np.argmax(np.abs(in_ct[:, c]))) for c in range(2))
    normal_axis = ({0, 1, 2} - {b_row, b_col}).pop() if b_row != b_col else 0
    a_ct = grid.affine
    frame_affine = np.eye(4)
    frame_affine[:3, 0] = a_ct[:3, normal_axis]
    frame_affine[:3, 1] = row_step
    frame_affine[:3, 2] = col_step
    frame_affine[:3, 3] = ipp
    k = int(np.rint((inv_ct @ np.append(ipp, 1.0))[normal_axis]))
    if not 0 <= k < grid.shape[normal_axis]:
        raise MaskGeometryError(f"{source} lies outside the CT: at slice {k} along CT axis "
                                f"{'zyx'[normal_axis]} of {grid.shape[normal_axis]}.")
    slab_shape = list(grid.shape)
    slab_shape[normal_axis] = 1
    slab = Grid(slab_shape, grid.spacing, tuple(a_ct[:3, 3] + k * a_ct[:3, normal_axis]),
                grid.direction)
    placed = align_to(frame[None], frame_affine, slab, source=source, allow_subgrid=False)
    index = [slice(None)] * 3
    index[normal_axis] = slice(k, k + 1)
    np.maximum(out[tuple(index)], placed, out=out[tuple(index)])


def load_dicom_seg(path: PathLike) -> MaskFile:
    """Read all segments of a DICOM-SEG in its own geometry, without a CT.

    Uses highdicom's volume, so the frames must be regularly spaced; its
    extent may be only the stored, non-empty frames, so the result may cover
    part of a CT (``allow_subgrid`` is set). To read onto a CT, prefer
    :func:`read_dicom_seg`, which also places frames by reference.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM-SEG file or a folder holding one (see :func:`find_seg_file`).

    Returns
    -------
    MaskFile
        One layer per segment, holding the segment number inside (a
        FRACTIONAL SEG is thresholded at :data:`FRACTIONAL_THRESHOLD`), with
        the index -> LPS affine.

    Raises
    ------
    MaskFileError
        No SEG at ``path`` or not a valid one, or its frames do not form a
        regular volume.

    Examples
    --------
    >>> import tempfile
    >>> from napari_pneumoseg.ct import CTVolume, read_ct, write_dicom_series
    >>> root = Path(tempfile.mkdtemp())
    >>> ct = read_ct(write_dicom_series(CTVolume(np.zeros((3, 4, 4)), spacing=(2.5, 0.7, 0.7)), root / "ct"))
    >>> mask = np.zeros(ct.shape, np.uint8)
    >>> mask[1, 1:3, 1:3] = 1
    >>> write_dicom_seg(mask, root / "ptx.dcm", ct)
    >>> mf = load_dicom_seg(root / "ptx.dcm")
    >>> mf.shape, mf.allow_subgrid  # only the one stored frame
    ((1, 4, 4), True)
    >>> np.array_equal(mf.to_grid(ct), mask)
    True
    """
    file, seg = _segread(path)
    segments = _segments(seg)
    try:
        vol = seg.get_volume(combine_segments=False, rescale_fractional=True)
    except Exception as exc:
        raise MaskFileError(f"{file}: its frames do not form a regular volume ({exc}); open it "
                            "together with its CT instead.") from exc
    arr = np.moveaxis(np.asarray(vol.array), -1, 0)
    numbers = np.array([s.label for s in segments]).reshape(-1, 1, 1, 1)
    threshold = FRACTIONAL_THRESHOLD if str(seg.SegmentationType) == "FRACTIONAL" else 1e-9
    layers = np.where(arr >= threshold, numbers, 0).astype(np.uint16 if numbers.max() > 255
                                                            else np.uint8)
    return MaskFile(layers, np.asarray(vol.affine, float), segments, str(file), allow_subgrid=True)
