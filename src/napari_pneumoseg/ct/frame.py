"""The patient frame: array axes turned to superior, dependent and patient-left.

The simulator and the pleural-air finder read and write a *canonical* view of the CT: axis 0
runs towards the head (superior), axis 1 towards the dependent side (posterior for a
supine patient), axis 2 towards the patient's left. The view is a transpose plus
reversed axes of the source array (no copy), so head-first, feet-first and flipped
series give the same anatomy-relative result, and writing into the view writes the
source array's own voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Patient positions the simulator accepts: supine (air rises anteriorly) and prone
#: (air rises posteriorly). Decubitus positions are refused.
SUPINE, PRONE = ("HFS", "FFS"), ("HFP", "FFP")


@dataclass(frozen=True)
class Frame:
    """How to view a CT array in the canonical (superior, dependent, left) frame.

    Attributes
    ----------
    perm : tuple of int
        Source array axis shown as canonical axis 0, 1 and 2.
    flip : tuple of bool
        Whether each canonical axis runs against its source axis.
    spacing : tuple of float
        Voxel size along the canonical axes, mm.
    prone : bool
        True when the dependent side is anterior (axis 1 then runs anteriorly).
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]
    prone: bool = False

    def view(self, arr: np.ndarray) -> np.ndarray:
        """The canonical view of a source-shaped array (no copy).

        Examples
        --------
        >>> f = Frame(perm=(0, 1, 2), flip=(True, False, False), spacing=(1.0, 1.0, 1.0))
        >>> f.view(np.arange(3).reshape(3, 1, 1)).ravel().tolist()
        [2, 1, 0]
        """
        v = np.transpose(arr, self.perm)
        return v[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    def source_slice(self, k: int, n: int) -> int:
        """Source slice index (array axis 0) of canonical slice ``k`` of ``n``.

        Examples
        --------
        >>> Frame(perm=(0, 1, 2), flip=(True, False, False), spacing=(1.0, 1.0, 1.0)).source_slice(0, 10)
        9
        """
        return int(n - 1 - k) if self.flip[0] else int(k)

    def to_source(self, points, source_shape) -> np.ndarray:
        """Source array indices (z, y, x) of canonical indices; fractional ones are fine.

        A canonical axis that runs against its source axis maps index ``v`` to
        ``n - 1 - v``, so voxel centres map to voxel centres and edges to edges.

        Parameters
        ----------
        points : array_like, shape (..., 3)
            Canonical indices (superior, dependent, left).
        source_shape : sequence of 3 int
            Shape of the source array.

        Returns
        -------
        ndarray of float, shape (..., 3)

        Examples
        --------
        >>> f = Frame(perm=(0, 1, 2), flip=(True, False, False), spacing=(1.0, 1.0, 1.0))
        >>> f.to_source([0.0, 2.0, 3.5], (10, 4, 5)).tolist()
        [9.0, 2.0, 3.5]
        """
        pts = np.asarray(points, dtype=float)
        out = np.empty_like(pts)
        for c, a in enumerate(self.perm):
            v = pts[..., c]
            out[..., a] = (source_shape[a] - 1 - v) if self.flip[c] else v
        return out


def patient_frame(ct, metadata: Optional[dict] = None) -> Frame:
    """The canonical frame of an axial CT, from its direction matrix and patient position.

    Parameters
    ----------
    ct : CTVolume
        The CT. Its ``direction`` rows are the LPS unit vectors of the array axes.
    metadata : dict, optional
        Series metadata; defaults to ``ct.metadata``. Its ``patient_position``
        (DICOM PatientPosition) decides which side is dependent: ``HFS``/``FFS``
        (supine) or absent: posterior; ``HFP``/``FFP`` (prone): anterior.

    Returns
    -------
    Frame

    Raises
    ------
    ValueError
        If the slices are not axial (array axis 0 does not run head-feet), the
        direction matrix is not close to a signed permutation, or the patient
        position is decubitus or unknown.

    Examples
    --------
    >>> from napari_pneumoseg import CTVolume
    >>> ct = CTVolume(np.zeros((2, 3, 4)), spacing=(5.0, 0.8, 0.7))
    >>> f = patient_frame(ct)
    >>> f.perm, f.flip, f.spacing
    ((0, 1, 2), (False, False, False), (5.0, 0.8, 0.7))
    """
    meta = ct.metadata if metadata is None else metadata
    d = np.asarray(ct.direction, float).reshape(3, 3)
    dominant = np.abs(d).argmax(axis=1)  # LPS component (0 = x/L, 1 = y/P, 2 = z/S) of each array axis
    if sorted(dominant.tolist()) != [0, 1, 2] or np.abs(d)[np.arange(3), dominant].min() < 0.7:
        raise ValueError(f"the CT's direction matrix {d.round(3).tolist()} is not an axial, coronal or "
                         "sagittal stack; resample it to an axial grid first")
    if dominant[0] != 2:
        raise ValueError("the CT's slices are not axial (its first array axis does not run head to feet); "
                         "this needs an axial series")
    position = str(meta.get("patient_position") or "").strip().upper()
    if position and position not in SUPINE + PRONE:
        raise ValueError(f"patient position {position!r} is not supine (HFS/FFS) or prone (HFP/FFP): "
                         "pleural air collects on the non-dependent side, which is known only for those")
    prone = position in PRONE
    perm, flip = [], []
    for comp in (2, 1, 0):  # canonical axes: superior (LPS +z), dependent (LPS +y, supine), left (LPS +x)
        a = int(np.flatnonzero(dominant == comp)[0])
        sign = d[a, comp] > 0
        if comp == 1 and prone:
            sign = not sign
        perm.append(a)
        flip.append(not sign)
    spacing = tuple(float(ct.spacing[a]) for a in perm)
    return Frame(perm=tuple(perm), flip=tuple(flip), spacing=spacing, prone=prone)
