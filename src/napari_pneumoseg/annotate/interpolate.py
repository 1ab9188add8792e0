"""Shape-based interpolation between annotated slices, and what a correction changed.

Shape-based interpolation (Raya & Udupa 1990; Herman et al. 1992): each annotated slice's
outline becomes a signed distance map (negative inside, in mm with the pixel spacing),
the maps of two annotated neighbours are blended linearly along z, and a slice between
them is where the blend is negative. Shapes grow, shrink, move and split smoothly, as
when a user outlines every 5th slice (Röhrich et al. 2020) and wants the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import ndimage


def _signed_distance(m: np.ndarray, sampling) -> np.ndarray:
    """Signed distance (mm) to the outline of ``m``: negative inside, positive outside.

    Distances run between pixel centres, so each side is moved half a pixel towards
    the outline: zero lies on the pixel edges, and blending two outlines does not
    shrink or grow the shape by half a pixel.
    """
    half = 0.5 * float(np.mean(sampling))
    inside = ndimage.distance_transform_edt(m, sampling=sampling)
    outside = ndimage.distance_transform_edt(~m, sampling=sampling)
    return np.where(m, half - inside, outside - half)


#: With an image, the interpolated shape may grow this far (mm) into voxels as dark as the
#: annotated air (it follows a rim that moved between the outlined slices).
GUIDE_BAND_MM = 10.0
#: Lung-dense air (HU below this) around the outlines sets the image's threshold.
_LUNG_MAX_HU = -500.0


def air_threshold(mask: np.ndarray, image: np.ndarray, slices: Sequence[int]) -> Optional[float]:
    """HU between the outlined air and the lung just around it (the midpoint of their medians).

    Parameters
    ----------
    mask : ndarray, shape (z, y, x)
        The annotation.
    image : ndarray, shape (z, y, x)
        The CT in HU.
    slices : sequence of int
        The outlined slices to learn from.

    Returns
    -------
    float or None
        None when the outlines are empty or have no lung-dense air around them.
    """
    inside, ring = [], []
    for k in slices:
        m = mask[k] != 0
        if not m.any():
            continue
        near = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m, iterations=1)
        inside.append(image[k][m])
        r = image[k][near]
        ring.append(r[r < _LUNG_MAX_HU])
    if not inside or not any(r.size for r in ring):
        return None
    return float((np.median(np.concatenate(inside)) + np.median(np.concatenate(ring))) / 2.0)


def interpolate_slices(mask: np.ndarray, annotated_slices: Iterable[int], *,
                       spacing: Optional[Sequence[float]] = None, image: Optional[np.ndarray] = None,
                       band_mm: float = GUIDE_BAND_MM) -> np.ndarray:
    """Fill the slices between annotated ones by shape-based interpolation (optionally guided by the CT).

    Parameters
    ----------
    mask : ndarray, shape (z, y, x)
        The annotation; only its annotated slices are read (nonzero = pneumothorax).
    annotated_slices : iterable of int
        Slices the user outlined (an empty outline counts: "nothing here").
    spacing : sequence of float, optional
        Voxel size (z, y, x) or (y, x) in mm, so distances are round in millimetres
        on anisotropic pixels; default isotropic pixels.
    image : ndarray, shape (z, y, x), optional
        The CT in HU. With it, a filled slice is the air darker than
        :func:`air_threshold` (learnt from the outlined slices; median-filtered 3x3)
        that lies within ``band_mm`` of the blended shape and touches its inside:
        a pneumothorax rim that moved between outlines is followed, and lung or
        tissue the blend crossed is left out. Without a threshold (empty outlines,
        no lung around them) the plain shape is used.
    band_mm : float, default :data:`GUIDE_BAND_MM`
        How far (mm) outside the blended shape the image may extend it.

    Returns
    -------
    ndarray, same shape and dtype as ``mask``
        A copy: annotated slices and slices outside the first and last annotated
        one as they were, each slice between two annotated ones replaced by the
        interpolation (value: the largest label of the two annotated slices,
        1 for bool-like masks).

    Raises
    ------
    ValueError
        If ``mask`` is not 3-D, or a slice index is outside it.

    Examples
    --------
    A disk of radius 2 on slice 0 and of radius 6 on slice 4: radius 4 half-way.

    >>> yy, xx = np.mgrid[:21, :21]
    >>> m = np.zeros((5, 21, 21), np.uint8)
    >>> m[0] = (yy - 10) ** 2 + (xx - 10) ** 2 <= 2 ** 2
    >>> m[4] = (yy - 10) ** 2 + (xx - 10) ** 2 <= 6 ** 2
    >>> out = interpolate_slices(m, [0, 4])
    >>> int(out[2, 10].sum())  # its diameter in pixels
    9
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (z, y, x), got shape {mask.shape}")
    ks = sorted({int(k) for k in annotated_slices})
    bad = [k for k in ks if not 0 <= k < mask.shape[0]]
    if bad:
        raise ValueError(f"annotated slice(s) {bad} outside the mask's {mask.shape[0]} slices")
    sampling = (1.0, 1.0) if spacing is None else tuple(float(s) for s in tuple(spacing)[-2:])
    if image is not None and np.shape(image) != mask.shape:
        raise ValueError(f"the image's shape {np.shape(image)} is not the mask's {mask.shape}")
    threshold = None if image is None else air_threshold(mask, image, ks)
    out = mask.copy()
    for a, b in zip(ks, ks[1:]):
        if b - a < 2:
            continue
        ma, mb = mask[a] != 0, mask[b] != 0
        if not ma.any() and not mb.any():
            out[a + 1:b] = 0
            continue
        value = max(int(mask[a].max()), int(mask[b].max()), 1) if mask.dtype != bool else True
        da, db = _distance_or_far(ma, mb, sampling), _distance_or_far(mb, ma, sampling)
        for k in range(a + 1, b):
            t = (k - a) / (b - a)
            blend = (1 - t) * da + t * db
            if threshold is None:
                out[k] = np.where(blend < 0, value, 0)
            else:
                out[k] = np.where(_guided(blend, image[k], threshold, band_mm), value, 0)
    return out


def _guided(blend: np.ndarray, hu: np.ndarray, threshold: float, band_mm: float) -> np.ndarray:
    """Dark air within ``band_mm`` of the blended shape, in pieces that touch its inside."""
    dark = (ndimage.median_filter(np.asarray(hu, np.float32), size=3) < threshold) & (blend < band_mm)
    labels, n = ndimage.label(dark)
    if n == 0:
        return dark
    keep = np.zeros(n + 1, bool)
    keep[np.unique(labels[dark & (blend < 0)])] = True
    keep[0] = False
    return keep[labels]


def _distance_or_far(m: np.ndarray, other: np.ndarray, sampling) -> np.ndarray:
    """``m``'s signed distance; for an empty slice a map that makes ``other`` shrink to its core at the far end.

    An empty outline next to a shape means the shape ends between them: the empty
    slice's map is a constant just above the other shape's depth, so the blend
    shrinks the shape towards its deepest part and it is gone at the empty slice.
    """
    if m.any():
        return _signed_distance(m, sampling)
    depth = ndimage.distance_transform_edt(other, sampling=sampling).max()
    return np.full(m.shape, depth + min(sampling), float)


def edited_slices(before: np.ndarray, after: np.ndarray) -> list[int]:
    """Slices where two masks differ (e.g. those a user edited after a pre-annotation).

    Parameters
    ----------
    before, after : ndarray, shape (z, y, x)
        Nonzero means pneumothorax.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> a = np.zeros((4, 3, 3), np.uint8); b = a.copy(); b[2, 1, 1] = 1
    >>> edited_slices(a, b)
    [2]
    """
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ValueError(f"the masks' shapes differ: {before.shape} and {after.shape}")
    diff = (before != 0) != (after != 0)
    return [int(k) for k in np.flatnonzero(diff.reshape(diff.shape[0], -1).any(axis=1))]


@dataclass
class Corrections:
    """How much ``after`` differs from ``before``: voxels and mL added and removed."""

    added_voxels: int
    removed_voxels: int
    added_ml: float
    removed_ml: float
    slices: list[int]

    def summary(self) -> str:
        """``"+12.3 mL (4100 voxels) added, -1.0 mL (300 voxels) removed on 5 slices"``."""
        return (f"+{self.added_ml:.1f} mL ({self.added_voxels} voxels) added, "
                f"-{self.removed_ml:.1f} mL ({self.removed_voxels} voxels) removed "
                f"on {len(self.slices)} slice{'s' * (len(self.slices) != 1)}")


def corrections(before: np.ndarray, after: np.ndarray, voxel_ml: float = 0.0) -> Corrections:
    """What a correction changed: voxels added to and removed from ``before``.

    Parameters
    ----------
    before, after : ndarray, shape (z, y, x)
        The pre-annotation and the corrected mask (nonzero = pneumothorax).
    voxel_ml : float, default 0.0
        Volume of one voxel in mL.

    Returns
    -------
    Corrections

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> a = np.zeros((2, 4, 4), np.uint8); a[0, :2] = 1
    >>> b = a.copy(); b[0, 0] = 0; b[1, 3] = 1
    >>> c = corrections(a, b, voxel_ml=0.5)
    >>> c.added_voxels, c.removed_voxels, c.added_ml, c.slices
    (4, 4, 2.0, [0, 1])
    """
    before, after = np.asarray(before) != 0, np.asarray(after) != 0
    if before.shape != after.shape:
        raise ValueError(f"the masks' shapes differ: {before.shape} and {after.shape}")
    added = int(np.count_nonzero(after & ~before))
    removed = int(np.count_nonzero(before & ~after))
    return Corrections(added, removed, added * voxel_ml, removed * voxel_ml, edited_slices(before, after))
