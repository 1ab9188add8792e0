"""Where each slice of a CT lies along its normal, and the span of the body each slice stands for.

A volume is a sum over slices of area times thickness. With even gaps every slice
stands for one slice spacing. Where slices are missing or the gaps are uneven, a
slice stands for half the gap to each neighbour (an end slice for its one gap), so
a missing slice does not shrink the volume: :func:`slice_spans`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Two gaps count as equal within this share of the slice spacing (as the reader's check).
GAP_RTOL = 0.01


@dataclass
class SliceSpans:
    """Slice positions and spans of a CT (array order).

    Attributes
    ----------
    position_mm : ndarray of float, shape (z,)
        Each slice's position along the slice normal (mm), increasing with the index.
    span_mm : ndarray of float, shape (z,)
        The thickness of body each slice stands for (mm).
    uneven : bool
        True when the gaps differ (then ``span_mm`` is not the spacing everywhere).
    weight : ndarray of float, shape (z,)
        Each slice's span in units of the CT's slice spacing (1 everywhere when the
        gaps are even): what a voxel count of that slice is multiplied by.
    note : str or None
        What was done, for a measurement's notes (uneven gaps only).
    """

    position_mm: np.ndarray
    span_mm: np.ndarray
    uneven: bool
    weight: np.ndarray
    note: Optional[str] = None


def _positions(ct) -> Optional[np.ndarray]:
    """Slice positions along the normal from the reader's metadata, or None if unusable."""
    pos = (ct.metadata or {}).get("positions")
    if pos is None:
        return None
    try:
        p = np.asarray(pos, dtype=float)
    except (TypeError, ValueError):
        return None
    if p.shape != (ct.shape[0], 3) or not np.all(np.isfinite(p)):
        return None
    d = p @ np.asarray(ct.direction, float)[0]
    d = d - d[0]
    if d.size > 1 and not np.all(np.diff(d) > 0):
        return None
    return d


def slice_spans(ct) -> SliceSpans:
    """Positions and spans of the CT's slices, from the slice positions the reader recorded.

    Parameters
    ----------
    ct : CTVolume
        The CT. Its ``metadata["positions"]`` (LPS position of each slice, array
        order, as :func:`~napari_pneumoseg.ct.read_ct` records it) gives the gaps;
        without usable positions (none, another count, not increasing along the
        normal) every slice stands for ``ct.spacing[0]``.

    Returns
    -------
    SliceSpans

    Examples
    --------
    >>> from napari_pneumoseg import CTVolume
    >>> ct = CTVolume(hu=np.zeros((4, 2, 2)), spacing=(2.0, 1.0, 1.0),
    ...               metadata={"positions": [[0, 0, 0], [0, 0, 2], [0, 0, 6], [0, 0, 8]]})
    >>> s = slice_spans(ct)
    >>> s.span_mm.tolist(), s.uneven
    ([2.0, 3.0, 3.0, 2.0], True)
    """
    nz, sz = ct.shape[0], float(ct.spacing[0])
    d = _positions(ct)
    if d is None or nz < 2:
        return SliceSpans(np.arange(nz) * sz, np.full(nz, sz), False, np.ones(nz))
    gaps = np.diff(d)
    step = float(np.median(gaps))
    if not np.any(np.abs(gaps - step) > max(GAP_RTOL * step, 1e-3)):
        return SliceSpans(d, np.full(nz, sz), False, np.ones(nz))
    span = np.empty(nz)
    span[1:-1] = (gaps[:-1] + gaps[1:]) / 2.0
    span[0], span[-1] = gaps[0], gaps[-1]
    note = (f"slice gaps are uneven ({gaps.min():.2f} to {gaps.max():.2f} mm): each slice counts for the "
            "span it covers (half the gap to each neighbour) in every volume")
    return SliceSpans(d, span, True, span / sz, note)
