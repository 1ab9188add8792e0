"""Left/right pneumothorax volumes and pneumothorax as a share of the hemithorax.

Sides follow the patient, not the array. A voxel is on the patient's left when its
LPS x coordinate (from the CT's ``origin``, ``spacing`` and ``direction``) is greater
than the x of the mid-sagittal plane, so flipped or feet-first series give the
same answer.

The HU analysis comes from :mod:`napari_pneumoseg.ct.air`:

- aerated lung is :func:`~napari_pneumoseg.ct.air.aerated_lung`. These are lung-sized
  components of the :data:`~napari_pneumoseg.ct.air.LUNG_HU` window inside the enclosed
  region (:func:`~napari_pneumoseg.ct.air.enclosed_mask`), with the pneumothorax mask
  left out. They are found on the coarse grid and counted at full resolution.
- the midline is halfway between the 1st and 99th percentile of LPS x over the
  thoracic cavity (lung plus the pneumothorax inside the enclosed region), so arms,
  table and a shifted patient do not move it. Without enough cavity
  (:data:`MIN_CAVITY_ML`) it is the enclosed region's centroid.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..ct.air import OUTSIDE_AIR_HU, aerated_lung
from .metrics import as_bool

#: Below this much thoracic cavity (mL of lung plus pneumothorax), the midline
#: is the centroid of the enclosed region instead.
MIN_CAVITY_ML = 50.0


def _x_of(ct, k, j, i) -> np.ndarray:
    """LPS x (mm) of full-resolution indices (k, j, i) (arrays or scalars)."""
    d = ct.direction
    sz, sy, sx = ct.spacing
    return ct.origin[0] + k * (sz * d[0, 0]) + j * (sy * d[1, 0]) + i * (sx * d[2, 0])


def left_of_midline(ct, midline_x_mm: float):
    """A function of a slice index giving that slice's in-plane mask of the patient's left.

    Parameters
    ----------
    ct : CTVolume
        The CT (its geometry only).
    midline_x_mm : float
        LPS x of the mid-sagittal plane; left is greater x.

    Returns
    -------
    callable
        ``left(k) -> ndarray of bool, shape (y, x)``.

    Examples
    --------
    >>> from napari_pneumoseg import CTVolume
    >>> left = left_of_midline(CTVolume(hu=np.zeros((1, 1, 4)), spacing=(1.0, 1.0, 1.0)), 1.5)
    >>> left(0).tolist()
    [[False, False, True, True]]
    """
    _, ny, nx = ct.shape
    plane_x = _x_of(ct, 0, np.arange(ny)[:, None], np.arange(nx)[None, :])
    step_x = ct.spacing[0] * ct.direction[0, 0]
    return lambda k: plane_x > (midline_x_mm - k * step_x)


def side_analysis(mask: np.ndarray, ct, pred_per_slice: Optional[np.ndarray] = None,
                  slice_weight: Optional[np.ndarray] = None) -> tuple[dict, list[str]]:
    """Per-side pneumothorax and lung volumes, % of hemithorax and the midline.

    Parameters
    ----------
    mask : ndarray, shape (z, y, x)
        Pneumothorax mask with the CT's shape (the caller checks it). Nonzero means
        pneumothorax.
    ct : CTVolume
        The CT: HU, spacing and patient orientation.
    pred_per_slice : ndarray of int, shape (z,), optional
        Mask voxels per slice, if the caller has them (slices without any are skipped).
    slice_weight : ndarray of float, shape (z,), optional
        How many slice spacings each slice counts for (its span over the spacing,
        see :func:`~napari_pneumoseg.measure.slices.slice_spans`); all 1 when omitted.

    Returns
    -------
    fields : dict
        ``left_ml``, ``right_ml``, ``left_lung_ml``, ``right_lung_ml`` (mL),
        ``left_pct_hemithorax``, ``right_pct_hemithorax``
        (``100 * ptx / (ptx + lung)`` on that side, None when both are 0) and
        ``midline_x_mm`` (LPS x of the mid-sagittal plane).
    notes : list of str
        Anything that limited the estimate (no cavity, no lung on a side).

    Examples
    --------
    >>> from napari_pneumoseg import CTVolume
    >>> hu = np.full((4, 40, 60), -1000.0)
    >>> hu[:, 4:36, 4:56] = 40.0
    >>> hu[:, 8:32, 8:26] = hu[:, 8:32, 34:52] = -850.0      # two lungs
    >>> ct = CTVolume(hu=hu, spacing=(5.0, 2.0, 2.0))          # standard axial: columns run left
    >>> mask = np.zeros(hu.shape, np.uint8)
    >>> mask[:, 10:20, 40:50] = 1
    >>> fields, notes = side_analysis(mask, ct)
    >>> round(fields["left_ml"], 1), fields["right_ml"]
    (8.0, 0.0)
    """
    notes: list[str] = []
    hu = ct.hu
    nz, ny, nx = hu.shape
    voxel_ml = ct.voxel_volume_ml

    est = aerated_lung(hu, voxel_ml, exclude=mask)
    f = est.step
    coarse_ml = voxel_ml * f * f
    mc = as_bool(mask[:, ::f, ::f])

    # Midline from the thoracic cavity's x-extent; enclosed region's centroid as a fallback.
    cavity = est.lung | (mc & est.enclosed)
    del mc
    n_cav = int(np.count_nonzero(cavity))
    if n_cav * coarse_ml >= MIN_CAVITY_ML:
        k, j, i = np.nonzero(cavity)
        lo, hi = np.percentile(_x_of(ct, k, j * f, i * f), [1.0, 99.0])
        midline = float(lo + hi) / 2.0
        del k, j, i
    elif np.any(est.enclosed):
        inside = est.enclosed
        mk = np.average(np.arange(nz), weights=inside.sum(axis=(1, 2)))
        mj = np.average(np.arange(inside.shape[1]) * f, weights=inside.sum(axis=(0, 2)))
        mi = np.average(np.arange(inside.shape[2]) * f, weights=inside.sum(axis=(0, 1)))
        midline = float(_x_of(ct, mk, mj, mi))
        notes.append(
            f"no thoracic cavity found (< {MIN_CAVITY_ML:g} mL of lung): midline from the body's centre"
        )
    else:
        midline = float(_x_of(ct, (nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2))
        notes.append(f"no body found (nothing above {OUTSIDE_AIR_HU:g} HU): midline at the volume's centre")
    del cavity

    left_of = left_of_midline(ct, midline)
    z_with_lung = est.slices()
    if pred_per_slice is None:
        z_with_ptx = np.arange(nz)
    else:
        z_with_ptx = np.flatnonzero(pred_per_slice)

    ptx = {"left": 0.0, "right": 0.0}
    lung = {"left": 0.0, "right": 0.0}
    buf = np.empty((ny, nx), bool)
    for k in np.union1d(z_with_ptx, z_with_lung):
        left = left_of(k)
        w = 1.0 if slice_weight is None else float(slice_weight[k])
        m = as_bool(mask[k])
        n_m = int(np.count_nonzero(m))
        if n_m:
            n_left = int(np.count_nonzero(np.logical_and(m, left, out=buf)))
            ptx["left"] += n_left * w
            ptx["right"] += (n_m - n_left) * w
        if est.region[k].any():
            lg = est.full_slice(k, hu[k], m if n_m else None)
            n_l = int(np.count_nonzero(lg))
            n_left = int(np.count_nonzero(np.logical_and(lg, left, out=buf)))
            lung["left"] += n_left * w
            lung["right"] += (n_l - n_left) * w

    out: dict = {"midline_x_mm": midline}
    for side in ("left", "right"):
        out[f"{side}_ml"] = ptx[side] * voxel_ml
        out[f"{side}_lung_ml"] = lung[side] * voxel_ml
        denom = ptx[side] + lung[side]
        out[f"{side}_pct_hemithorax"] = 100.0 * ptx[side] / denom if denom else None
        if lung[side] == 0:
            notes.append(f"no aerated lung found on the patient's {side}")
    return out, notes
