"""Left/right pneumothorax volumes and pneumothorax as a share of the hemithorax.

Sides follow the patient, not the array: a voxel is on the patient's left when its
LPS x coordinate (from the CT's ``origin``, ``spacing`` and ``direction``) is greater
than the x of the mid-sagittal plane, so flipped or feet-first series give the
same answer.

How it is estimated (HU thresholds on the CT, no model):

- body: HU > -500; its inside is everything not connected, within its own slice,
  to the image border through lower densities (so lungs, airways and pneumothorax
  count as inside; the air around the patient does not);
- lung: -950 < HU < -300 inside the body, not pneumothorax, belonging to large
  connected components (>= 2 % of the largest one and >= 5 mL: drops bowel-gas
  rims and partial-volume specks). Tracheal and bronchial lumen air (about
  -1000 HU) and pneumothorax air fall below -950 and are excluded by the
  threshold; so is emphysematous lung, which then counts as neither;
- midline: halfway between the 1st and 99th percentile of LPS x over the thoracic
  cavity (lung plus pneumothorax inside the body), so arms, table and a shifted
  patient do not move it; without enough cavity (< 50 mL) the body's x-centroid.

For speed the body/lung search runs on a grid subsampled in-plane by
``f = round(min(ny, nx) / 256)`` (2 for 512 x 512, 1 for small images). The lung
is then counted at full resolution: full-resolution voxels in the HU window that
lie within one coarse voxel (in-plane) of a coarse lung component.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from .metrics import as_bool

BODY_HU = -500.0
LUNG_HU = (-950.0, -300.0)
KEEP_FRACTION = 0.02
MIN_LUNG_ML = 5.0
MIN_CAVITY_ML = 50.0
COARSE_TARGET = 256

# In-plane connectivity only (no links between slices).
_PLANE4 = np.zeros((3, 3, 3), bool)
_PLANE4[1] = ndimage.generate_binary_structure(2, 1)
_PLANE8 = np.zeros((3, 3, 3), bool)
_PLANE8[1] = True


def _inside_body(hc: np.ndarray) -> np.ndarray:
    """Voxels inside the body: not joined to the in-plane image border through HU <= -500."""
    lab, n = ndimage.label(hc <= BODY_HU, structure=_PLANE4)
    border = np.zeros(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        border[edge] = True
    border[0] = False
    return ~border[lab]


def _x_of(ct, k, j, i) -> np.ndarray:
    """LPS x (mm) of full-resolution indices (k, j, i) (arrays or scalars)."""
    d = ct.direction
    sz, sy, sx = ct.spacing
    return ct.origin[0] + k * (sz * d[0, 0]) + j * (sy * d[1, 0]) + i * (sx * d[2, 0])


def side_analysis(mask: np.ndarray, ct, pred_per_slice: Optional[np.ndarray] = None) -> tuple[dict, list[str]]:
    """Per-side volumes (mL), lung volumes (mL), % of hemithorax and the midline x (mm).

    ``mask`` must have the CT's shape (checked by the caller); nonzero = pneumothorax.
    Returns the fields and notes about anything that limited the estimate.
    """
    notes: list[str] = []
    hu = ct.hu
    nz, ny, nx = hu.shape
    voxel_ml = ct.voxel_volume_ml
    f = max(1, int(round(min(ny, nx) / COARSE_TARGET)))
    coarse_ml = voxel_ml * f * f

    hc = np.ascontiguousarray(hu[:, ::f, ::f])
    mc = as_bool(mask[:, ::f, ::f])
    inside = _inside_body(hc)
    cand = (hc > LUNG_HU[0]) & (hc < LUNG_HU[1]) & inside & ~mc
    lab, n = ndimage.label(cand)
    if n:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        keep = sizes >= max(KEEP_FRACTION * sizes.max(), MIN_LUNG_ML / coarse_ml)
        keep[0] = False
        lung_c = keep[lab]
    else:
        lung_c = np.zeros_like(cand)
    del lab, cand

    # Midline from the thoracic cavity's x-extent; body centroid as a fallback.
    cavity = lung_c | (mc & inside)
    n_cav = int(np.count_nonzero(cavity))
    if n_cav * coarse_ml >= MIN_CAVITY_ML:
        k, j, i = np.nonzero(cavity)
        lo, hi = np.percentile(_x_of(ct, k, j * f, i * f), [1.0, 99.0])
        midline = float(lo + hi) / 2.0
        del k, j, i
    elif np.any(inside):
        mk = np.average(np.arange(nz), weights=inside.sum(axis=(1, 2)))
        mj = np.average(np.arange(inside.shape[1]) * f, weights=inside.sum(axis=(0, 2)))
        mi = np.average(np.arange(inside.shape[2]) * f, weights=inside.sum(axis=(0, 1)))
        midline = float(_x_of(ct, mk, mj, mi))
        notes.append(
            f"no thoracic cavity found (< {MIN_CAVITY_ML:g} mL of lung): midline from the body's centre"
        )
    else:
        midline = float(_x_of(ct, (nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2))
        notes.append("no body found (nothing above -500 HU): midline at the volume's centre")
    del cavity

    # x of each in-plane voxel without the slice term; compare per slice.
    plane_x = _x_of(ct, 0, np.arange(ny)[:, None], np.arange(nx)[None, :])
    step_x = ct.spacing[0] * ct.direction[0, 0]
    region = ndimage.binary_dilation(lung_c, structure=_PLANE8) & inside
    del lung_c, inside
    jj = np.minimum(np.arange(ny) // f, region.shape[1] - 1)
    ii = np.minimum(np.arange(nx) // f, region.shape[2] - 1)
    z_with_lung = np.flatnonzero(region.any(axis=(1, 2)))
    if pred_per_slice is None:
        z_with_ptx = np.arange(nz)
    else:
        z_with_ptx = np.flatnonzero(pred_per_slice)

    ptx = {"left": 0, "right": 0}
    lung = {"left": 0, "right": 0}
    buf = np.empty((ny, nx), bool)
    for k in np.union1d(z_with_ptx, z_with_lung):
        left = plane_x > (midline - k * step_x)
        m = as_bool(mask[k])
        n_m = int(np.count_nonzero(m))
        if n_m:
            n_left = int(np.count_nonzero(np.logical_and(m, left, out=buf)))
            ptx["left"] += n_left
            ptx["right"] += n_m - n_left
        if region[k].any():
            h = hu[k]
            lg = (h > LUNG_HU[0]) & (h < LUNG_HU[1]) & region[k][jj][:, ii]
            if n_m:
                lg &= ~m
            n_l = int(np.count_nonzero(lg))
            n_left = int(np.count_nonzero(np.logical_and(lg, left, out=buf)))
            lung["left"] += n_left
            lung["right"] += n_l - n_left

    out: dict = {"midline_x_mm": midline}
    for side in ("left", "right"):
        out[f"{side}_ml"] = ptx[side] * voxel_ml
        out[f"{side}_lung_ml"] = lung[side] * voxel_ml
        denom = ptx[side] + lung[side]
        out[f"{side}_pct_hemithorax"] = 100.0 * ptx[side] / denom if denom else None
        if lung[side] == 0:
            notes.append(f"no aerated lung found on the patient's {side}")
    return out, notes
