"""Voxel-grid geometry shared by all mask formats: index -> LPS affines and exact realignment.

A mask file is accepted on a CT only when its voxels *are* the CT's voxels,
possibly stored with the axes in another order or reversed (NIfTI stores x
first, some tools flip rows). Anything else (other spacing, a shift, a
rotation, another extent) is refused with :class:`MaskGeometryError` naming
both geometries: resampling silently would misplace ground truth.

Affines here are 4x4 matrices mapping a homogeneous array index
``(a0, a1, a2, 1)`` (in the array's own axis order) to an LPS position in mm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from ..ct.volume import STANDARD_AXIAL

#: How far (in CT voxels) a mask voxel centre may lie from a CT voxel centre (float noise only).
TOLERANCE_VOXELS = 1e-3


class MaskGeometryError(ValueError):
    """A mask is not on the CT's voxel grid; the message names both geometries."""


@dataclass
class Grid:
    """A voxel grid without voxels: what writers and aligners need from a CT.

    Same conventions as :class:`~napari_pneumoseg.ct.CTVolume`. Build one
    from a CT or a geometry dict with :func:`as_grid`.

    Parameters
    ----------
    shape : tuple of int
        Array shape ``(z, y, x)``.
    spacing : tuple of float
        Voxel size along the array axes, in mm.
    origin : tuple of float
        LPS position ``(x, y, z)`` of voxel ``[0, 0, 0]``, in mm.
    direction : array_like, shape (3, 3)
        Rows: the LPS unit vectors of the array axes.
    metadata : dict, optional
        The CT's metadata (DICOM-SEG writing and reading use its source
        files and UIDs).

    Raises
    ------
    ValueError
        ``shape`` is not 3-D, ``spacing`` is not 3 positive numbers, or
        ``direction`` does not have 9 elements.

    Examples
    --------
    >>> from napari_pneumoseg.ct.volume import STANDARD_AXIAL
    >>> grid = Grid((4, 6, 8), (2.5, 0.7, 0.7), (0.0, 0.0, 100.0), STANDARD_AXIAL)
    >>> (grid.affine @ [1, 0, 2, 1]).tolist()  # LPS of voxel (1, 0, 2)
    [1.4, 0.0, 102.5, 1.0]
    >>> grid.geometry()["spacing"]
    [2.5, 0.7, 0.7]
    """

    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if len(self.shape) != 3 or len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"a grid needs a 3-D shape and 3 positive spacings, got "
                             f"shape {self.shape}, spacing {self.spacing}")

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 index -> LPS affine of the grid (see :func:`affine_from`)."""
        return affine_from(self.spacing, self.origin, self.direction)

    @classmethod
    def from_affine(cls, affine, shape, metadata: Optional[dict] = None) -> "Grid":
        """The grid of an index -> LPS affine and an array shape.

        Parameters
        ----------
        affine : array_like, shape (4, 4)
            Index -> LPS affine (see :func:`geometry_of`).
        shape : tuple of int
            Array shape.
        metadata : dict, optional
            Copied into the grid.

        Returns
        -------
        Grid

        Raises
        ------
        ValueError
            The affine has a zero or non-finite axis.

        Examples
        --------
        >>> Grid.from_affine(np.diag([2.5, 0.7, 0.7, 1.0]), (4, 6, 8)).spacing
        (2.5, 0.7, 0.7)
        """
        spacing, origin, direction = geometry_of(affine)
        return cls(tuple(shape), spacing, origin, direction, dict(metadata or {}))

    def geometry(self) -> dict[str, Any]:
        """The geometry as plain lists (JSON-ready): ``shape``, ``spacing``, ``origin``, ``direction``.

        :func:`as_grid` accepts the result back.

        Examples
        --------
        >>> grid = Grid((4, 6, 8), (2.5, 0.7, 0.7), (0.0, 0.0, 0.0), np.eye(3))
        >>> grid.geometry()["shape"], as_grid(grid.geometry()).spacing
        ([4, 6, 8], (2.5, 0.7, 0.7))
        """
        return {"shape": list(self.shape), "spacing": list(self.spacing),
                "origin": list(self.origin), "direction": self.direction.tolist()}


def as_grid(obj) -> Grid:
    """The :class:`Grid` of a CT, a Grid, or a geometry dict.

    Parameters
    ----------
    obj : CTVolume, Grid or Mapping
        A CT (any object with ``shape``, ``spacing``, ``origin`` and
        ``direction``, and optionally ``metadata``); a Grid, returned as it
        is; or a dict with the keys ``shape``, ``spacing``, ``origin`` and
        ``direction`` (e.g. a napari layer's ``pneumoseg_ct`` metadata),
        whose other keys become the grid's metadata.

    Returns
    -------
    Grid

    Raises
    ------
    ValueError
        A dict lacks one of the four keys, or the geometry is invalid (see
        :class:`Grid`).
    TypeError
        ``obj`` is none of the above.

    Examples
    --------
    >>> from napari_pneumoseg.ct import CTVolume
    >>> as_grid(CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))).shape
    (4, 6, 8)
    >>> as_grid({"shape": [4, 6, 8], "spacing": [2.5, 0.7, 0.7], "origin": [0, 0, 0],
    ...          "direction": np.eye(3), "files": []}).metadata
    {'files': []}
    >>> as_grid({"shape": [4, 6, 8]})
    Traceback (most recent call last):
    ...
    ValueError: CT geometry lacks 'spacing' (needs shape, spacing, origin, direction)
    """
    if isinstance(obj, Grid):
        return obj
    if isinstance(obj, Mapping):
        try:
            meta = {k: v for k, v in obj.items()
                    if k not in ("shape", "spacing", "origin", "direction")}
            return Grid(obj["shape"], obj["spacing"], obj["origin"], obj["direction"], meta)
        except KeyError as exc:
            raise ValueError(f"CT geometry lacks {exc.args[0]!r} (needs shape, spacing, "
                             "origin, direction)") from None
    try:
        return Grid(obj.shape, obj.spacing, obj.origin, obj.direction,
                    dict(getattr(obj, "metadata", {}) or {}))
    except AttributeError:
        raise TypeError(f"expected a CTVolume, Grid or geometry dict, got {type(obj).__name__}") \
            from None


def affine_from(spacing, origin, direction) -> np.ndarray:
    """The 4x4 index -> LPS affine of a grid: column ``a`` = ``spacing[a] * direction[a]``.

    Parameters
    ----------
    spacing : sequence of 3 float
        Voxel size along the array axes, in mm.
    origin : sequence of 3 float
        LPS position of voxel ``[0, 0, 0]`` (the last column).
    direction : array_like, shape (3, 3)
        Rows: LPS unit vectors of the array axes.

    Returns
    -------
    numpy.ndarray, shape (4, 4)

    Examples
    --------
    >>> from napari_pneumoseg.ct.volume import STANDARD_AXIAL
    >>> affine_from((2.5, 0.7, 0.7), (10.0, 20.0, 30.0), STANDARD_AXIAL).tolist()
    [[0.0, 0.0, 0.7, 10.0], [0.0, 0.7, 0.0, 20.0], [2.5, 0.0, 0.0, 30.0], [0.0, 0.0, 0.0, 1.0]]
    """
    a = np.eye(4)
    a[:3, :3] = (np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)[:, None]).T
    a[:3, 3] = np.asarray(origin, float)
    return a


def geometry_of(affine) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """Split an index -> LPS affine into ``(spacing, origin, direction)``; inverse of :func:`affine_from`.

    Parameters
    ----------
    affine : array_like, shape (4, 4)

    Returns
    -------
    spacing : tuple of float
        Length of each axis column.
    origin : tuple of float
        The last column.
    direction : numpy.ndarray, shape (3, 3)
        Rows: unit vectors of the array axes.

    Raises
    ------
    ValueError
        An axis has zero length, or the affine holds non-finite values.

    Examples
    --------
    >>> spacing, origin, direction = geometry_of(np.diag([2.5, 0.7, 0.7, 1.0]))
    >>> spacing, origin
    ((2.5, 0.7, 0.7), (0.0, 0.0, 0.0))
    """
    affine = np.asarray(affine, float)
    cols = affine[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(affine)):
        raise ValueError(f"degenerate affine (zero or non-finite axis):\n{affine}")
    return tuple(spacing.tolist()), tuple(affine[:3, 3].tolist()), (cols / spacing).T


def describe(shape, affine) -> str:
    """One line naming a grid's shape, spacing, origin and axis directions (LPS, mm), for messages.

    Axes are named by the LPS direction they point to most (``+S``, ``-P``...),
    with the exact vector when oblique.

    Parameters
    ----------
    shape : sequence of int
    affine : array_like, shape (4, 4)
        Index -> LPS affine.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        The affine is degenerate (see :func:`geometry_of`).

    Examples
    --------
    >>> from napari_pneumoseg.ct.volume import STANDARD_AXIAL
    >>> describe((4, 6, 8), affine_from((2.5, 0.7, 0.7), (0, 0, 0), STANDARD_AXIAL))
    'shape (4, 6, 8), spacing (2.5, 0.7, 0.7) mm, origin (0, 0, 0) mm (LPS), axes +S, +P, +L'
    """
    spacing, origin, direction = geometry_of(affine)
    axes = ", ".join(_axis_name(d) for d in direction)
    return (f"shape {tuple(int(s) for s in shape)}, spacing {_fmt(spacing)} mm, "
            f"origin {_fmt(origin)} mm (LPS), axes {axes}")


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _axis_name(d) -> str:
    """``+S``-style name of an axis direction, with the exact vector when oblique."""
    d = np.asarray(d, float)
    k = int(np.argmax(np.abs(d)))
    name = ("+" if d[k] > 0 else "-") + "LPS"[k]
    if abs(abs(d[k]) - 1) > 1e-6:
        name += "~[" + " ".join(f"{v:.3f}" for v in d) + "]"
    return name


def align_to(mask: np.ndarray, mask_affine, ct, *, source: str = "mask",
             allow_subgrid: bool = False) -> np.ndarray:
    """Reindex a mask stored in any axis order or with flipped axes onto a CT's ``(z, y, x)`` grid, exactly.

    ``T = inv(A_ct) @ A_mask`` must be a signed permutation with integer
    offsets (within :data:`TOLERANCE_VOXELS`), and the mask must cover the
    CT's grid exactly, or, with ``allow_subgrid``, lie inside it. Voxels are
    only transposed, flipped and placed, never resampled.

    Parameters
    ----------
    mask : array_like
        3-D mask in its own array axes.
    mask_affine : array_like, shape (4, 4)
        The mask's index -> LPS affine.
    ct : CTVolume, Grid or dict
        The CT or its geometry (see :func:`as_grid`).
    source : str, default "mask"
        What to call the mask in error messages (e.g. its file name).
    allow_subgrid : bool, default False
        Accept a mask covering only part of the CT (a file cropped to its
        content, a DICOM-SEG frame); the rest is zero.

    Returns
    -------
    numpy.ndarray
        The mask on the CT's grid, of the CT's shape and the mask's dtype.

    Raises
    ------
    MaskGeometryError
        The mask is not 3-D, or not on the CT's voxel grid: its axes are
        rotated, its spacing differs, it is shifted by a fraction of a voxel,
        or its extent differs (or reaches outside the CT). The message names
        both geometries and what differs.

    Examples
    --------
    A mask stored x first (as NIfTI does) with its own affine lands back on
    the CT's voxels:

    >>> from napari_pneumoseg.ct import CTVolume
    >>> ct = CTVolume(np.zeros((4, 6, 8)), spacing=(2.5, 0.7, 0.7))
    >>> mask = np.zeros(ct.shape, np.uint8)
    >>> mask[1, 2, 3] = 1
    >>> a_ct = as_grid(ct).affine
    >>> np.array_equal(align_to(mask.transpose(2, 1, 0), a_ct[:, [2, 1, 0, 3]], ct), mask)
    True
    >>> shifted = a_ct.copy()
    >>> shifted[2, 3] += 1.0  # 1 mm along z: 0.4 of a slice
    >>> try:
    ...     align_to(mask, shifted, ct, source="truth.nrrd")
    ... except MaskGeometryError as exc:
    ...     print(exc)  # doctest: +ELLIPSIS
    truth.nrrd is not on the CT's voxel grid (it is shifted by a fraction of a voxel: +0.400, +0.000, ...
      mask: shape (4, 6, 8), spacing (2.5, 0.7, 0.7) mm, origin (0, 0, 1) mm (LPS), axes +S, +P, +L
      CT:   shape (4, 6, 8), spacing (2.5, 0.7, 0.7) mm, origin (0, 0, 0) mm (LPS), axes +S, +P, +L
    The mask must be saved on the CT's own voxel grid ...
    """
    grid = as_grid(ct)
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise MaskGeometryError(f"{source}: a mask must be 3-D, got shape {mask.shape}")
    a_mask = np.asarray(mask_affine, float)
    a_ct = grid.affine
    t = np.linalg.solve(a_ct, a_mask)
    lin, off = t[:3, :3], t[:3, 3]

    def fail(reason: str) -> MaskGeometryError:
        return MaskGeometryError(
            f"{source} is not on the CT's voxel grid ({reason}).\n"
            f"  mask: {describe(mask.shape, a_mask)}\n"
            f"  CT:   {describe(grid.shape, a_ct)}\n"
            "The mask must be saved on the CT's own voxel grid (same spacing, origin and "
            "orientation; axis order and flips are fine). Export it from the same CT series, "
            "or resample it onto this CT first (e.g. 3D Slicer: Resample Scalar/Vector/DWI "
            "Volume with this CT as reference, nearest-neighbour interpolation)."
        )

    perm = np.argmax(np.abs(lin), axis=0)  # CT axis of each mask axis
    signs = np.sign(lin[perm, np.arange(3)])
    p = np.zeros((3, 3))
    p[perm, np.arange(3)] = signs
    if sorted(perm.tolist()) != [0, 1, 2]:
        raise fail("its axes are rotated relative to the CT's")
    # Where the mask's corner voxels land on the CT grid; an affine map is off
    # the grid by at most its largest corner error.
    corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in mask.shape],
                                   indexing="ij")).reshape(3, -1)
    landed = lin @ corners + off[:, None]
    ideal_off = np.round(off)
    error = np.abs(landed - (p @ corners + ideal_off[:, None])).max()
    if error > TOLERANCE_VOXELS:
        mask_spacing = np.linalg.norm(a_mask[:3, :3], axis=0)
        ct_spacing = np.asarray(grid.spacing)[perm]
        extent = np.maximum(np.array(mask.shape) - 1, 1)
        if np.any(np.abs(mask_spacing / ct_spacing - 1) * extent > TOLERANCE_VOXELS):
            reason = "its voxel spacing differs"
        elif np.any(np.abs(lin - p) * extent > TOLERANCE_VOXELS):
            reason = "its axes are rotated relative to the CT's"
        else:
            shift = off - ideal_off
            reason = ("it is shifted by a fraction of a voxel: "
                      + ", ".join(f"{s:+.3f}" for s in shift) + " CT voxels along (z, y, x)")
        raise fail(reason)

    # Flip mask axes that run backwards, then transpose into CT axis order.
    out = mask
    flip_axes = tuple(int(a) for a in np.flatnonzero(signs < 0))
    if flip_axes:
        out = np.flip(out, axis=flip_axes)
    order = np.argsort(perm)  # order[b] = mask axis that becomes CT axis b
    out = np.transpose(out, order)
    # The landed index box, in CT axis order.
    lo = np.rint(landed.min(axis=1)).astype(int)
    hi = np.rint(landed.max(axis=1)).astype(int)
    inside = np.all(lo >= 0) and np.all(hi <= np.array(grid.shape) - 1)
    if np.array_equal(lo, [0, 0, 0]) and np.array_equal(hi + 1, grid.shape):
        return np.ascontiguousarray(out)
    if not allow_subgrid:
        what = "it covers only part of the CT" if inside else "its extent differs from the CT's"
        raise fail(f"{what}: voxels {lo.tolist()}..{hi.tolist()} of the CT grid")
    if not inside:
        raise fail(f"it reaches outside the CT: voxels {lo.tolist()}..{hi.tolist()} of the CT grid")
    full = np.zeros(grid.shape, dtype=mask.dtype)
    full[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = out
    return full


def closest_axial(array: np.ndarray, affine) -> tuple[np.ndarray, np.ndarray]:
    """Reorder and flip the last 3 (spatial) axes to ``(z, y, x)`` pointing to S, P, L.

    For display of a file on its own: a standard axial order makes its
    napari scale and translate comparable to a head-first CT's. Voxels are
    not resampled; an oblique grid keeps its (small) obliquity in the affine.
    Leading non-spatial axes (segment layers) are left in front.

    Parameters
    ----------
    array : array_like
        At least 3-D; the last 3 axes are spatial.
    affine : array_like, shape (4, 4)
        Index -> LPS affine of the spatial axes.

    Returns
    -------
    array : numpy.ndarray
        A view with the spatial axes transposed and flipped.
    affine : numpy.ndarray, shape (4, 4)
        Its index -> LPS affine (same LPS position for every voxel).

    Raises
    ------
    ValueError
        The affine is degenerate (see :func:`geometry_of`).

    Examples
    --------
    >>> stored = np.zeros((8, 6, 4))  # (x, y, z), as NIfTI stores it
    >>> out, affine = closest_axial(stored, np.diag([0.7, 0.7, 2.5, 1.0]))
    >>> out.shape, geometry_of(affine)[0]
    ((4, 6, 8), (2.5, 0.7, 0.7))
    """
    array = np.asarray(array)
    affine = np.asarray(affine, float)
    lead = array.ndim - 3
    _, _, direction = geometry_of(affine)
    # Array axis for each standard axis, by largest |cosine|, resolving ties greedily.
    cos = np.abs(direction @ STANDARD_AXIAL.T)  # [array axis, standard axis]
    order = [-1, -1, -1]
    for _ in range(3):
        a, b = np.unravel_index(np.argmax(cos), cos.shape)
        order[b] = int(a)
        cos[a, :] = -1
        cos[:, b] = -1
    new = affine.copy()
    new[:3, :3] = affine[:3, order]
    out = np.transpose(array, list(range(lead)) + [lead + a for a in order])
    for b in range(3):
        if new[:3, b] @ STANDARD_AXIAL[b] < 0:
            n = out.shape[lead + b]
            new[:3, 3] = new[:3, 3] + (n - 1) * new[:3, b]
            new[:3, b] = -new[:3, b]
            out = np.flip(out, axis=lead + b)
    return out, new


# ------------------------------------------------------------------ mask files


class MaskFileError(ValueError):
    """A mask file cannot be used: unknown type, not a mask, empty, or no such segment."""


_PNEUMOTHORAX = re.compile(r"pneumo|ptx", re.IGNORECASE)

#: The segment every writer names and colours a pneumothorax mask with, unless told
#: otherwise (r, g, b in 0-1: orange, distinct from lung and napari's label 1).
DEFAULT_NAME = "Pneumothorax"
DEFAULT_COLOR = (1.0, 0.6, 0.0)

#: A labelmap with more distinct values than this is taken for an image, not a mask.
MAX_LABELS = 1000


@dataclass
class Segment:
    """One labelled structure in a mask file: the voxels of layer ``layer`` equal to ``label``.

    Parameters
    ----------
    name : str or None
        Its name (3D Slicer segment name, DICOM-SEG segment label); None in
        a plain labelmap.
    label : int
        Its value in the layer (the segment number for DICOM-SEG).
    layer : int, default 0
        Which layer of :attr:`MaskFile.layers` holds it.
    color : tuple of float, optional
        r g b in 0-1, if the file has one.
    id : str, optional
        3D Slicer's segment ID.

    Examples
    --------
    >>> str(Segment("Pneumothorax", 1)), str(Segment(None, 3))
    ("'Pneumothorax' (label 1)", 'label 3')
    """

    name: Optional[str]
    label: int
    layer: int = 0
    color: Optional[tuple[float, float, float]] = None
    id: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.name!r} (label {self.label})" if self.name else f"label {self.label}"


@dataclass
class MaskFile:
    """A mask file's voxels in its own axes, with their geometry and segments.

    Made by :func:`~napari_pneumoseg.io.load_mask` (or :meth:`from_labelmap`);
    :meth:`to_grid` puts one segment onto a CT.

    Parameters
    ----------
    layers : numpy.ndarray
        ``(n, a0, a1, a2)``: ``n`` layers of labels in the file's array axes.
    affine : numpy.ndarray, shape (4, 4)
        Index -> LPS affine of the axes ``a0, a1, a2``.
    segments : list of Segment
        The structures the file holds.
    source : str, default "mask"
        Where it came from (named in error messages).
    allow_subgrid : bool, default False
        The file may cover only part of the CT (3D Slicer's cropped extent,
        DICOM-SEG frames); :meth:`to_grid` fills the rest with zeros.
    empty : bool, default False
        A segmentation saved without voxels (3D Slicer's one-voxel file):
        every segment is empty, whatever the geometry.

    Examples
    --------
    >>> mf = MaskFile.from_labelmap(np.array([[[0, 1], [2, 2]]]), np.eye(4), "labels.nii")
    >>> mf.shape, [s.label for s in mf.segments]
    ((1, 2, 2), [1, 2])
    >>> mf.mask(segment=2).tolist()
    [[[0, 0], [1, 1]]]
    """

    layers: np.ndarray
    affine: np.ndarray
    segments: list[Segment]
    source: str = "mask"
    #: Whether the file may cover only part of the CT (Slicer's cropped extent, DICOM-SEG frames).
    allow_subgrid: bool = False
    #: A segmentation saved without voxels (3D Slicer's one-voxel file): every segment is empty.
    empty: bool = False

    @classmethod
    def from_labelmap(cls, data: np.ndarray, affine, source: str) -> "MaskFile":
        """A mask file from a plain labelmap: its segments are its nonzero values (unnamed).

        Parameters
        ----------
        data : array_like
            3-D labels, or 4-D with layers first. Bool, or non-negative
            integers (floats holding whole numbers are accepted).
        affine : array_like, shape (4, 4)
            Index -> LPS affine of the spatial axes.
        source : str
            Where it came from (named in error messages).

        Returns
        -------
        MaskFile

        Raises
        ------
        MaskFileError
            ``data`` is not 3-D or 4-D, holds no voxels, or looks like an
            image rather than a labelmap (negative or fractional values, or
            more than :data:`MAX_LABELS` distinct values).

        Examples
        --------
        >>> MaskFile.from_labelmap(np.array([[[-1000.0, 40.0]]]), np.eye(4), "ct.nii")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        napari_pneumoseg.io.grid.MaskFileError: ct.nii: holds negative values (min -1000), so it looks like an image...
        """
        data = np.asarray(data)
        layers = data[None] if data.ndim == 3 else data
        if layers.ndim != 4:
            raise MaskFileError(f"{source}: a mask must be 3-D, got shape {data.shape}.")
        layers = _as_labels(layers, source)
        values = _label_values(layers)
        if len(values) > MAX_LABELS:
            raise MaskFileError(f"{source}: holds {len(values)} distinct values, so it looks like "
                                "an image, not a mask (labelmap).")
        segments = [Segment(None, int(v), layer) for layer in range(layers.shape[0])
                    for v in (_label_values(layers[layer]) if layers.shape[0] > 1 else values)]
        return cls(layers, np.asarray(affine, float), segments, str(source))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The spatial shape ``(a0, a1, a2)``, in the file's array axes."""
        return tuple(self.layers.shape[1:])

    def pick(self, segment=None) -> Optional[Segment]:
        """Choose a segment by name, ID or label value, or the obvious one.

        Parameters
        ----------
        segment : str or int, optional
            A name or ID (case-insensitive), or a label value (an int, or a
            string of digits). Default: the only segment, or the one segment
            whose name says pneumothorax (``pneumo``, ``ptx``).

        Returns
        -------
        Segment or None
            None for a file without any segment (an empty mask) when
            ``segment`` is None.

        Raises
        ------
        MaskFileError
            ``segment`` matches no segment or several, or it is None and the
            file holds several segments, none or several of them named like
            pneumothorax. The message lists the segments.

        Examples
        --------
        >>> mf = MaskFile.from_labelmap(np.array([[[0, 1], [2, 2]]]), np.eye(4), "labels.nii")
        >>> mf.pick(2).label, mf.pick("1").label
        (2, 1)
        >>> mf.pick()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        napari_pneumoseg.io.grid.MaskFileError: labels.nii: holds 2 segments (label 1, label 2); choose one...
        """
        listing = ", ".join(str(s) for s in self.segments[:12]) or "none"
        if len(self.segments) > 12:
            listing += f" and {len(self.segments) - 12} more"
        if segment is None:
            if len(self.segments) <= 1:
                return self.segments[0] if self.segments else None
            named = [s for s in self.segments if s.name and _PNEUMOTHORAX.search(s.name)]
            if len(named) == 1:
                return named[0]
            raise MaskFileError(f"{self.source}: holds {len(self.segments)} segments ({listing}); "
                                "choose one by name or label value.")
        if isinstance(segment, (int, np.integer)) or (isinstance(segment, str)
                                                      and segment.strip().isdigit()):
            hits = [s for s in self.segments if s.label == int(segment)]
        else:
            key = str(segment).strip().lower()
            hits = [s for s in self.segments
                    if key in ((s.name or "").lower(), (s.id or "").lower())]
        if len(hits) == 1:
            return hits[0]
        why = "several segments match" if hits else "no segment matches"
        raise MaskFileError(f"{self.source}: {why} {segment!r}; segments: {listing}.")

    def mask(self, segment=None) -> np.ndarray:
        """The chosen segment (see :meth:`pick`) as uint8 0/1 in the file's array axes.

        All zeros for a file without segments.

        Parameters
        ----------
        segment : str or int, optional
            As for :meth:`pick`.

        Returns
        -------
        numpy.ndarray
            uint8 of shape :attr:`shape`.

        Raises
        ------
        MaskFileError
            As for :meth:`pick`.

        Examples
        --------
        >>> mf = MaskFile.from_labelmap(np.array([[[0, 1], [2, 2]]]), np.eye(4), "labels.nii")
        >>> mf.mask(1).tolist()
        [[[0, 1], [0, 0]]]
        """
        seg = self.pick(segment)
        if seg is None:
            return np.zeros(self.shape, np.uint8)
        return (self.layers[seg.layer] == seg.label).astype(np.uint8)

    def to_grid(self, ct, segment=None) -> np.ndarray:
        """The chosen segment reindexed exactly onto a CT's ``(z, y, x)`` grid (see :func:`align_to`).

        Parameters
        ----------
        ct : CTVolume, Grid or dict
            The CT or its geometry.
        segment : str or int, optional
            As for :meth:`pick`.

        Returns
        -------
        numpy.ndarray
            uint8 0/1 of the CT's shape (all zeros for an :attr:`empty` file).

        Raises
        ------
        MaskFileError
            As for :meth:`pick`.
        MaskGeometryError
            The file is not on the CT's voxel grid.

        Examples
        --------
        >>> grid = Grid((1, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
        >>> mf = MaskFile.from_labelmap(np.array([[[0, 1], [2, 2]]]), np.eye(4), "labels.nii")
        >>> mf.to_grid(grid, segment=2).tolist()
        [[[0, 0], [1, 1]]]
        """
        if self.empty:
            self.pick(segment)  # still check the name
            return np.zeros(as_grid(ct).shape, np.uint8)
        return align_to(self.mask(segment), self.affine, ct, source=self.source,
                        allow_subgrid=self.allow_subgrid)


def _as_labels(data: np.ndarray, source: str) -> np.ndarray:
    """Integer labels of ``data``, or MaskFileError if it holds negative or fractional values."""
    if data.dtype == bool:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.unsignedinteger):
        return data
    if data.size == 0:
        raise MaskFileError(f"{source}: holds no voxels.")
    lo = data.min()
    if not np.isfinite(lo) or lo < 0:
        raise MaskFileError(f"{source}: holds negative values (min {lo:g}), so it looks like "
                            "an image (e.g. a CT in HU), not a mask.")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise MaskFileError(f"{source}: holds fractional values, so it is a probability map "
                                "or an image, not a labelmap; threshold it first.")
        hi = data.max()
        return data.astype(np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.uint32)
    return data


def _label_values(data: np.ndarray) -> np.ndarray:
    """Sorted nonzero values of an integer array (bincount when small, it is much faster)."""
    if data.dtype in (np.uint8, np.uint16, np.int8, np.int16) or (data.size and data.max() < 65536):
        counts = np.bincount(data.ravel().astype(np.intp, copy=False))
        values = np.flatnonzero(counts)
    else:
        values = np.unique(data)
    return values[values != 0]
