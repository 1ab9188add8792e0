"""In-plane resampling to and from the pixel size a model was trained at (pure NumPy/SciPy).

A model that records ``preprocessing["pixel_spacing_mm"]`` sees every CT at that
pixel size: :func:`~napari_pneumoseg.model.segment` resamples each slice to it
before the network and the probabilities back onto the CT's grid after, as
nnU-Net does with its target spacing; training resamples its cases the same
way. Slices are never resampled along z. Both directions map the field of view
edge to edge (``grid_mode``), so a round trip keeps every structure in place.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

#: In-plane spacings closer than this (relative) to the target are used as they are.
SPACING_TOLERANCE = 0.02


def target_shape(shape_yx: Sequence[int], spacing_yx: Sequence[float], target_mm: float) -> tuple[int, int]:
    """Slice size at ``target_mm`` pixels for a slice of ``shape_yx`` at ``spacing_yx``.

    Parameters
    ----------
    shape_yx : sequence of int
        Rows and columns.
    spacing_yx : sequence of float
        Their spacing in mm.
    target_mm : float
        The wanted pixel size in mm.

    Returns
    -------
    tuple of int
        ``round(n * spacing / target)`` per axis, at least 1.

    Examples
    --------
    >>> target_shape((512, 512), (0.7, 0.7), 2.8)
    (128, 128)
    """
    return tuple(max(1, int(round(n * s / float(target_mm)))) for n, s in zip(shape_yx, spacing_yx))


def needs_resampling(spacing_yx: Sequence[float], target_mm: Optional[float]) -> bool:
    """Whether slices at ``spacing_yx`` must be resampled for a model trained at ``target_mm``.

    Parameters
    ----------
    spacing_yx : sequence of float
        The CT's in-plane spacing in mm.
    target_mm : float or None
        The model's pixel size; None means the model runs at any resolution.

    Returns
    -------
    bool
        True when either spacing differs from the target by more than
        :data:`SPACING_TOLERANCE`.

    Examples
    --------
    >>> needs_resampling((0.84, 0.84), 2.8), needs_resampling((2.8, 2.8), 2.8), needs_resampling((1, 1), None)
    (True, False, False)
    """
    if target_mm is None:
        return False
    return any(abs(float(s) / float(target_mm) - 1.0) > SPACING_TOLERANCE for s in spacing_yx)


def resample_slices(volume: np.ndarray, shape_yx: Sequence[int], *, antialias: bool = True) -> np.ndarray:
    """Resample every slice of ``volume`` ``(z, y, x)`` to ``shape_yx``, float32.

    Edges of the field of view map onto each other (pixel ``i`` of ``n`` covers
    ``[i, i + 1) / n`` of it). An axis that shrinks is averaged over each new
    pixel's footprint (area averaging, weighted by overlap: the anti-aliasing
    filter, and the exact inverse of repeating each pixel), unless
    ``antialias`` is off; an axis that grows (or shrinks without
    ``antialias``) is interpolated linearly between pixel centres, the nearest
    value beyond the edge.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(z, y, x)`` values (HU, probabilities, a 0/1 mask as float).
    shape_yx : sequence of int
        The new rows and columns.
    antialias : bool, optional
        Average over the footprint when shrinking.

    Returns
    -------
    numpy.ndarray
        float32 ``(z, *shape_yx)``.

    Raises
    ------
    ValueError
        ``volume`` is not 3-D or a size is not positive.

    Examples
    --------
    >>> v = np.zeros((1, 4, 4), np.float32); v[0, :2] = 1
    >>> resample_slices(v, (2, 2))[0].tolist()
    [[1.0, 1.0], [0.0, 0.0]]
    >>> resample_slices(np.array([[[0.0, 1.0]]]), (1, 4))[0].tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {volume.shape}")
    ny, nx = (int(v) for v in shape_yx)
    if ny < 1 or nx < 1:
        raise ValueError(f"slice size must be positive, got {shape_yx}")
    src = volume.astype(np.float32, copy=False)
    if (ny, nx) == src.shape[1:]:
        return src.copy() if src is volume else src
    wy = _operator(src.shape[1], ny, antialias)
    wx = _operator(src.shape[2], nx, antialias).T.copy()
    out = np.empty((src.shape[0], ny, nx), np.float32)
    for k in range(src.shape[0]):
        np.matmul(wy @ src[k], wx, out=out[k])
    return out


def _operator(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix that resamples one axis (see :func:`resample_slices`)."""
    w = np.zeros((n_out, n_in), np.float32)
    if n_out < n_in and antialias:  # area: overlap of [j, j+1) * f with each input pixel
        f = n_in / n_out
        for j in range(n_out):
            a, b = j * f, (j + 1) * f
            for i in range(int(np.floor(a)), min(n_in, int(np.ceil(b)))):
                w[j, i] = (min(b, i + 1) - max(a, i)) / f
        return w
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)  # centres, linear
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = (pos - i0).astype(np.float32)
    w[np.arange(n_out), i0] += 1 - t
    w[np.arange(n_out), i1] += t
    return w
