"""NRRD masks: plain labelmaps (``.nrrd``) and 3D Slicer segmentations (``.seg.nrrd``).

Geometry comes from ``space``, ``space directions`` and ``space origin``
(LPS; RAS and LAS spaces are converted). Arrays are read and written with
pynrrd's ``index_order='C'``: array axis 0 is the slowest NRRD axis, so a
(z, y, x) mask is stored with x fastest, as 3D Slicer and ITK write CTs.
The ``.seg.nrrd`` fields follow 3D Slicer's documented format
(Docs/developer_guide/modules/segmentations.md): ``SegmentN_ID``, ``_Name``,
``_Color`` (r g b in 0-1), ``_LabelValue``, ``_Layer``, ``_Extent``, ``_Tags``;
overlapping segments are stored as a 4-D file with one ``list`` axis of layers.
"""

from __future__ import annotations

import os
import re
from typing import Union

import numpy as np

from .atomic import atomic_path
from .grid import DEFAULT_COLOR, DEFAULT_NAME, Grid, MaskFile, MaskFileError, Segment, as_grid

PathLike = Union[str, os.PathLike]

#: Conversion from a NRRD ``space`` to LPS (multiply positions and directions).
_SPACES = {
    "left-posterior-superior": (1, 1, 1), "lps": (1, 1, 1),
    "right-anterior-superior": (-1, -1, 1), "ras": (-1, -1, 1),
    "left-anterior-superior": (1, -1, 1), "las": (1, -1, 1),
}

#: 3D Slicer terminology for the pneumothorax segment (SNOMED CT codes, as in DICOM CID 7151/7150).
PNEUMOTHORAX_TERMINOLOGY = (
    "TerminologyEntry:Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^49755003^Morphologically Altered Structure~SCT^36118008^Pneumothorax~^^"
    "~Anatomic codes - DICOM master list~^^~^^|"
)


def read_nrrd(path: PathLike) -> MaskFile:
    """Read a NRRD labelmap or 3D Slicer segmentation in its own geometry.

    Segments come from the ``SegmentN_*`` fields when present (a 4-D file has
    one layer per ``list`` axis entry), else from the labelmap's nonzero
    values. A segmentation saved by Slicer with all segments empty (one
    voxel) is marked ``empty``.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nrrd``, ``.seg.nrrd`` or ``.nhdr`` file (detached data next to it).

    Returns
    -------
    MaskFile
        Voxels as ``(layers, a0, a1, a2)`` in the file's C order, the index ->
        LPS affine and the segments.

    Raises
    ------
    MaskFileError
        The file cannot be read as NRRD; its ``data file`` is not next to it
        (absolute, in another folder, or a link out of its folder); its sizes
        claim more than :data:`~napari_pneumoseg.resources.MAX_ARRAY_BYTES`
        or the memory free, or more than its data holds; it has no ``space`` / ``space
        directions``, an unsupported space, not 3 spatial axes (plus at most
        one list axis), no finite ``space origin`` or malformed segment
        fields; or, without segment fields, it holds values that make it an
        image rather than a labelmap.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_pneumoseg.ct import CTVolume
    >>> ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))
    >>> path = Path(tempfile.mkdtemp()) / "ptx.seg.nrrd"
    >>> write_nrrd(np.ones(ct.shape, np.uint8), path, ct)
    >>> mf = read_nrrd(path)
    >>> mf.shape, [s.name for s in mf.segments]
    ((4, 6, 8), ['Pneumothorax'])
    """
    data, header = _read_checked(path)

    space = str(header.get("space", "")).strip().lower()
    dirs = header.get("space directions")
    if dirs is None or not space:
        raise MaskFileError(
            f"{path}: the NRRD has no 'space' and 'space directions', so where its voxels are "
            "in the patient is unknown. Save it with its geometry (e.g. from 3D Slicer)."
        )
    if space not in _SPACES:
        raise MaskFileError(f"{path}: NRRD space {space!r} is not supported "
                            f"(use one of {', '.join(sorted(k for k in _SPACES if '-' in k))}).")
    flip = np.array(_SPACES[space], float)
    dirs = np.asarray(dirs, float)
    # With index_order='C', array axis a is NRRD axis (ndim - 1 - a).
    dirs_by_array_axis = dirs[::-1]
    spatial = [a for a in range(data.ndim) if np.all(np.isfinite(dirs_by_array_axis[a]))]
    other = [a for a in range(data.ndim) if a not in spatial]
    if len(spatial) != 3 or len(other) > 1:
        raise MaskFileError(f"{path}: expected 3 spatial axes (and at most one list axis of "
                            f"segment layers), got shape {data.shape} with {len(spatial)} "
                            "spatial axes.")
    affine = np.eye(4)
    affine[:3, :3] = (dirs_by_array_axis[spatial] * flip).T
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), float) * flip
    if not np.all(np.isfinite(affine)):
        raise MaskFileError(f"{path}: the NRRD 'space origin' is missing or not finite.")
    if other:
        data = np.moveaxis(data, other[0], 0)
    else:
        data = data[None]
    segments = _slicer_segments(header, path)
    if not segments:
        data = data[0] if data.shape[0] == 1 else data
        return MaskFile.from_labelmap(data, affine, path)
    mf = MaskFile(layers=data, affine=affine, segments=segments, source=str(path))
    # Slicer saves a segmentation whose segments are all empty as one voxel, geometry unused.
    mf.empty = data[0].size == 1
    return mf


#: pynrrd's names of the compressed encodings, and how to undo each.
_COMPRESSED = {"gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}


def _read_checked(path: PathLike):
    """``(data, header)`` as ``nrrd.read(path, index_order="C")``, with the checks a stranger's file needs.

    The header is read first; its ``data file`` must lie in the header's own
    folder, and its sizes may not claim more than is allowed or free. A
    compressed payload is inflated only up to the size the header claims (a
    gzip bomb costs no more than an honest file); pynrrd decodes the rest.
    """
    import io

    import nrrd

    try:
        with open(path, "rb") as fh:
            header = nrrd.read_header(fh)
            data_start = fh.tell()
    except Exception as exc:  # NRRDError, not NRRD, unreadable
        raise MaskFileError(f"{path}: not a readable NRRD file ({exc}).") from exc
    try:
        dtype = np.dtype(nrrd.reader._determine_datatype(header))
        sizes = [int(v) for v in header["sizes"]]
    except Exception as exc:
        raise MaskFileError(f"{path}: not a readable NRRD file (bad type or sizes: {exc}).") from exc
    if not sizes or min(sizes) < 1:
        raise MaskFileError(f"{path}: the NRRD's sizes {sizes} are not a volume.")
    need = int(np.prod(sizes, dtype=object)) * dtype.itemsize
    from ..resources import MAX_ARRAY_BYTES, check_allocation

    why = check_allocation(need, "its voxels", limit=MAX_ARRAY_BYTES)
    if why:
        raise MaskFileError(f"{path}: refused: {why}.")
    source = _data_source(header, path)
    encoding = str(header.get("encoding", "raw")).strip().lower()
    try:
        if encoding not in _COMPRESSED:  # raw or text: pynrrd reads no more than the (checked) sizes
            if source is None:
                return _read_attached(header, path, data_start), header
            return nrrd.read_data(header, None, str(path), index_order="C"), header
        skip = int(header.get("byte skip", 0))
        if skip < 0:
            raise MaskFileError(f"{path}: a compressed NRRD cannot have byte skip {skip}.")
        raw = _inflate(source or path, data_start if source is None else _line_skip(header, source),
                       _COMPRESSED[encoding], skip + need, path)
        plain = {k: v for k, v in header.items() if k not in ("data file", "datafile", "line skip")}
        plain["encoding"] = "raw"
        return nrrd.read_data(plain, io.BytesIO(raw), None, index_order="C"), header
    except MaskFileError:
        raise
    except Exception as exc:  # NRRDError, short data, corrupt stream
        raise MaskFileError(f"{path}: not a readable NRRD file ({exc}).") from exc


def _read_attached(header, path, data_start):
    import nrrd

    with open(path, "rb") as fh:
        fh.seek(data_start)
        return nrrd.read_data(header, fh, str(path), index_order="C")


def _data_source(header, path) -> "str | None":
    """The detached data file, checked to lie in the header's folder; None when the data follows the header."""
    name = header.get("data file", header.get("datafile"))
    if name is None:
        return None
    name = str(name).strip()
    folder = os.path.dirname(os.path.realpath(path))
    if (not name or name.upper().startswith("LIST") or " " in name or os.path.isabs(name)
            or name.replace("\\", "/").split("/")[0] == ".."):
        raise MaskFileError(f"{path}: its 'data file: {name[:80]}' is not a file next to it; only a data file in "
                            "the header's own folder is read (never a path elsewhere, a list or a pattern).")
    target = os.path.realpath(os.path.join(os.path.dirname(path), name))
    if os.path.dirname(target) != folder and not target.startswith(folder + os.sep):
        raise MaskFileError(f"{path}: its 'data file: {name[:80]}' leads out of its folder (to {target}); "
                            "only a data file in the header's own folder is read.")
    if not os.path.isfile(target):
        raise MaskFileError(f"{path}: its data file {name} is missing; copy it next to the header.")
    return target


def _line_skip(header, source: str) -> int:
    """Where the data starts in a detached file after its ``line skip`` lines."""
    with open(source, "rb") as fh:
        for _ in range(int(header.get("line skip", 0))):
            fh.readline()
        return fh.tell()


def _inflate(file, start: int, kind: str, need: int, path) -> bytes:
    """The first ``need`` bytes of the compressed stream in ``file`` from ``start``; never more."""
    import bz2
    import zlib

    dec = zlib.decompressobj(zlib.MAX_WBITS | 32) if kind == "gzip" else bz2.BZ2Decompressor()
    out = bytearray(need)  # the claim, checked before: never grown, never more
    n = 0
    with open(file, "rb") as fh:
        fh.seek(start)
        while n < need and not dec.eof:
            if kind == "gzip":
                chunk = dec.unconsumed_tail or fh.read(1 << 20)
            else:
                chunk = fh.read(1 << 20) if dec.needs_input else b""
            if not chunk and (kind == "gzip" or dec.needs_input):
                break
            piece = dec.decompress(chunk, min(need - n, 1 << 22))  # small pieces: no large buffers
            out[n:n + len(piece)] = piece
            n += len(piece)
    if n < need:
        raise MaskFileError(f"{path}: the compressed data holds {n} bytes, fewer than the {need} its "
                            "header's sizes claim (truncated, or a header that lies).")
    return bytes(out)


def _slicer_segments(header, path) -> list[Segment]:
    found = sorted({int(m.group(1)) for k in header
                    if (m := re.match(r"Segment(\d+)_", k))})
    segments = []
    for n in found:
        def field(name, default=None, n=n):
            return header.get(f"Segment{n}_{name}", default)
        try:
            label = int(field("LabelValue", n + 1))
            layer = int(field("Layer", 0))
        except (TypeError, ValueError):
            raise MaskFileError(f"{path}: Segment{n}_LabelValue / _Layer are not "
                                "integers.") from None
        color = None
        try:
            rgb = [float(c) for c in str(field("Color", "")).split()]
            color = tuple(rgb) if len(rgb) == 3 else None
        except ValueError:
            pass
        name = str(field("Name", "") or field("ID", "") or f"Segment_{n + 1}")
        segments.append(Segment(name=name, label=label, layer=layer, color=color,
                                id=str(field("ID", "") or name)))
    return segments


def write_nrrd(mask: np.ndarray, path: PathLike, ct, *, segmentation: bool = True,
               name: str = DEFAULT_NAME, color=DEFAULT_COLOR, overwrite: bool = False) -> None:
    """Write a ``(z, y, x)`` mask on a CT's grid as gzip NRRD in LPS space, x fastest.

    Written atomically (see :func:`~napari_pneumoseg.io.atomic.atomic_path`).
    Values are stored as uint8 as given: :func:`~napari_pneumoseg.io.write_mask`
    checks and binarises a mask before it calls this.

    Parameters
    ----------
    mask : array_like
        The mask, of the CT's shape (cast to uint8).
    path : str or os.PathLike
        The file to write; its folder must exist.
    ct : CTVolume, Grid or dict
        The CT or its geometry (see :func:`~napari_pneumoseg.io.grid.as_grid`).
    segmentation : bool, default True
        Add 3D Slicer's segmentation fields for one segment of label 1 (see
        :func:`slicer_fields`), as in a ``.seg.nrrd``.
    name : str, default "Pneumothorax"
        Segment name (with ``segmentation``).
    color : tuple of float, default (1.0, 0.6, 0.0)
        Segment colour, r g b in 0-1 (with ``segmentation``).
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
    >>> import nrrd
    >>> from napari_pneumoseg.ct import CTVolume
    >>> ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))
    >>> path = Path(tempfile.mkdtemp()) / "ptx.nrrd"
    >>> write_nrrd(np.ones(ct.shape, np.uint8), path, ct, segmentation=False)
    >>> nrrd.read_header(str(path))["sizes"].tolist()  # x, y, z
    [8, 6, 4]
    """
    import nrrd

    grid = as_grid(ct)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    header = nrrd_header(grid)
    if segmentation:
        header.update(slicer_fields(mask, name=name, color=color))
    with atomic_path(path, overwrite=overwrite) as tmp:
        nrrd.write(str(tmp), mask, header, index_order="C", compression_level=6)


def nrrd_header(grid: Grid) -> dict:
    """The NRRD geometry fields for a ``(z, y, x)`` array on ``grid`` written with x fastest.

    Parameters
    ----------
    grid : Grid
        The voxel grid.

    Returns
    -------
    dict
        ``space`` (LPS), ``space directions`` (one row per NRRD axis x, y, z:
        its LPS step in mm), ``space origin``, ``kinds`` and ``encoding``
        (gzip), ready for ``nrrd.write(..., index_order="C")``.

    Examples
    --------
    >>> from napari_pneumoseg.io.grid import as_grid
    >>> from napari_pneumoseg.ct import CTVolume
    >>> header = nrrd_header(as_grid(CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))))
    >>> header["space"], header["space directions"].tolist()
    ('left-posterior-superior', [[0.7, 0.0, 0.0], [0.0, 0.7, 0.0], [0.0, 0.0, 2.5]])
    """
    cols = grid.affine[:3, :3].T  # rows: LPS step of array axes z, y, x
    return {
        "space": "left-posterior-superior",
        "space directions": cols[::-1].copy(),  # NRRD axes x, y, z
        "space origin": np.asarray(grid.origin, float),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }


def slicer_fields(mask: np.ndarray, *, name: str, color, label: int = 1) -> dict:
    """3D Slicer segmentation header fields for one segment with value ``label`` in layer 0.

    Follows 3D Slicer's ``.seg.nrrd`` format: ID (the name with other
    characters than letters, digits and ``_`` replaced), name, colour, label
    value, layer, extent of the segment's voxels (NRRD axis order; ``0 -1 0
    -1 0 -1`` when empty) and, for a name that says pneumothorax, the SNOMED
    CT terminology :data:`PNEUMOTHORAX_TERMINOLOGY`.

    Parameters
    ----------
    mask : numpy.ndarray
        The ``(z, y, x)`` mask the fields describe.
    name : str
        Segment name.
    color : sequence of 3 float
        r g b in 0-1.
    label : int, default 1
        The segment's value in ``mask``.

    Returns
    -------
    dict
        Header fields (all values strings) to add to :func:`nrrd_header`'s.

    Examples
    --------
    >>> mask = np.zeros((4, 6, 8), np.uint8)
    >>> mask[1:3, 2:4, 2:6] = 1
    >>> fields = slicer_fields(mask, name="Pneumothorax (left)", color=(1.0, 0.6, 0.0))
    >>> fields["Segment0_ID"], fields["Segment0_Color"], fields["Segment0_Extent"]
    ('Pneumothorax_left', '1 0.6 0', '2 5 2 3 1 2')
    >>> fields["Segment0_Tags"] == PNEUMOTHORAX_TERMINOLOGY
    True
    """
    r, g, b = (float(c) for c in color)
    nz = [np.flatnonzero(np.any(mask == label, axis=tuple(a for a in range(3) if a != axis)))
          for axis in range(3)]
    if all(len(v) for v in nz):
        # Extent in NRRD axis order (i = x fastest, j = y, k = z).
        extent = " ".join(f"{v[0]} {v[-1]}" for v in nz[::-1])
    else:
        extent = "0 -1 0 -1 0 -1"
    seg_id = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "Segment_1"
    tags = PNEUMOTHORAX_TERMINOLOGY if _is_pneumothorax(name) else ""
    return {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_SourceRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segment0_ID": seg_id,
        "Segment0_Name": name,
        "Segment0_NameAutoGenerated": "0",
        "Segment0_Color": f"{r:.6g} {g:.6g} {b:.6g}",
        "Segment0_ColorAutoGenerated": "0",
        "Segment0_LabelValue": str(label),
        "Segment0_Layer": "0",
        "Segment0_Extent": extent,
        "Segment0_Tags": tags,
    }


def _is_pneumothorax(name: str) -> bool:
    return bool(re.search(r"pneumo|ptx", name, re.IGNORECASE))
