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

    Same conventions as :class:`~napari_pneumoseg.ct.CTVolume`: ``shape`` and
    ``spacing`` in array order, ``origin`` the LPS position of voxel 0,
    ``direction`` rows the LPS unit vectors of the array axes.
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
        return affine_from(self.spacing, self.origin, self.direction)

    @classmethod
    def from_affine(cls, affine, shape, metadata: Optional[dict] = None) -> "Grid":
        spacing, origin, direction = geometry_of(affine)
        return cls(tuple(shape), spacing, origin, direction, dict(metadata or {}))

    def geometry(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "spacing": list(self.spacing),
                "origin": list(self.origin), "direction": self.direction.tolist()}


def as_grid(obj) -> Grid:
    """A :class:`Grid` from a CTVolume, a Grid, or a geometry dict (e.g. layer ``pneumoseg_ct``)."""
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
    """Index -> LPS affine: column ``a`` = ``spacing[a] * direction[a]``, last column = origin."""
    a = np.eye(4)
    a[:3, :3] = (np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)[:, None]).T
    a[:3, 3] = np.asarray(origin, float)
    return a


def geometry_of(affine) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """``(spacing, origin, direction)`` of an index -> LPS affine (direction: a row per axis)."""
    affine = np.asarray(affine, float)
    cols = affine[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(affine)):
        raise ValueError(f"degenerate affine (zero or non-finite axis):\n{affine}")
    return tuple(spacing.tolist()), tuple(affine[:3, 3].tolist()), (cols / spacing).T


def describe(shape, affine) -> str:
    """One line naming a grid's shape, spacing, origin and axis directions (LPS, mm)."""
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
    """``mask`` (any axis order/flips) reindexed onto ``ct``'s (z, y, x) grid, exactly.

    ``T = inv(A_ct) @ A_mask`` must be a signed permutation with integer
    offsets (within :data:`TOLERANCE_VOXELS`), and the mask must cover the
    CT's grid exactly, or, with ``allow_subgrid`` (a file cropped to its
    content, a DICOM-SEG frame), lie inside it (the rest is zero). Otherwise
    :class:`MaskGeometryError` names both geometries and what differs.
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
    """Reorder and flip the last 3 (spatial) axes to (z, y, x) pointing to S, P, L.

    For display of a file on its own: a standard axial order makes its
    napari scale and translate comparable to a head-first CT's. Voxels are
    not resampled; an oblique grid keeps its (small) obliquity in the affine.
    Leading non-spatial axes (segment layers) are left in front.
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
    """One labelled structure in a mask file: voxels of ``layer`` equal to ``label``."""

    name: Optional[str]
    label: int
    layer: int = 0
    color: Optional[tuple[float, float, float]] = None
    id: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.name!r} (label {self.label})" if self.name else f"label {self.label}"


@dataclass
class MaskFile:
    """A mask file's voxels in its own axes: ``layers`` (n, a0, a1, a2), ``affine``, segments."""

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
        """A plain labelmap (3-D, or 4-D layers first): segments are its nonzero values."""
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
        return tuple(self.layers.shape[1:])

    def pick(self, segment=None) -> Optional[Segment]:
        """The segment named ``segment`` (name, ID or label value); None = the only one or the
        pneumothorax one. Returns None for a file without any segment (an empty mask)."""
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
        """The chosen segment as uint8 0/1 in the file's array axes."""
        seg = self.pick(segment)
        if seg is None:
            return np.zeros(self.shape, np.uint8)
        return (self.layers[seg.layer] == seg.label).astype(np.uint8)

    def to_grid(self, ct, segment=None) -> np.ndarray:
        """The chosen segment reindexed exactly onto ``ct``'s (z, y, x) grid (uint8 0/1)."""
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
