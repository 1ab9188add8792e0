"""The pneumothorax volume of the implicit surface itself, not of its voxels.

``info["continuous_volume_ml"]`` is measured by supersampling only the voxels
the pleural-air surface may cut (:func:`band_voxels`); every other voxel is
wholly inside or outside and counts by its centre, as in the truth mask.
"""

from __future__ import annotations

import numpy as np

from ._anatomy import Model
from ._grid import Grid


def band_voxels(h, window, safety=1.5):
    """Voxels the pleural-air surface may cut, per side, as (k, j, i) rows (int32).

    ``h`` maps each affected side to the pleural-air function sampled at the
    voxel centres of the thorax ``window`` (row and column slices of the
    slice), for every slice. A voxel is in the band when ``|h|`` at its
    centre is within the change of ``h`` across the voxel.

    That change is bounded to first order by half the sum, over the three
    axes, of the larger of the forward and backward differences (the larger
    one, so thin sheets whose V-shaped profile cancels a central difference
    are still caught), times a safety factor.
    """
    out = {}
    r0, c0 = window[0].start, window[1].start
    for side, hs in h.items():
        found = []
        nz = hs.shape[0]
        for k in range(nz):
            hk = hs[k]
            gz = np.maximum(np.abs(hs[min(k + 1, nz - 1)] - hk), np.abs(hk - hs[max(k - 1, 0)]))
            bound = safety * 0.5 * (gz + _steep(hk, 0) + _steep(hk, 1)) + 0.02
            jj, ii = np.nonzero(np.abs(hk) <= bound)
            found.append(np.stack([np.full(jj.shape, k), jj + r0, ii + c0], axis=1).astype(np.int32))
        out[side] = np.concatenate(found)
    return out


def _steep(x, axis):
    """The larger of the forward and backward absolute differences along ``axis`` (edges repeated)."""
    d = np.abs(np.diff(x, axis=axis))
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 0)
    back = np.pad(d, pad, mode="edge")
    pad[axis] = (0, 1)
    return np.maximum(back, np.pad(d, pad, mode="edge"))


def continuous_volume_ml(m: Model, grid: Grid, truth, band, left_cols, sub=(4, 2, 2)):
    """Volume (mL) per side of the pleural-air implicit region, by supersampling.

    Voxels the surface cannot cut (``band`` holds the others) are wholly
    inside or outside and count by their centre; the others are sampled on a
    ``sub`` grid within the voxel and count by the fraction of samples inside.
    """
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    out = {"left": 0.0, "right": 0.0}
    # Sample offsets as a product grid, so (u, v)-only terms are computed per column of samples.
    ok, oj, oi = (((np.arange(n) + 0.5) / n - 0.5).reshape(shape) for n, shape in
                  zip(sub, ((1, -1, 1, 1), (1, 1, -1, 1), (1, 1, 1, -1))))
    n_sub = int(np.prod(sub))
    for side in m.ptx_sides:
        cols = left_cols if side == "left" else ~left_cols
        idx = band[side]
        idx = idx[cols[idx[:, 2]]]
        # Truth voxels outside the band count whole.
        sure = int(truth.sum(axis=(0, 1), dtype=np.int64)[cols].sum())
        sure -= int(np.count_nonzero(truth[idx[:, 0], idx[:, 1], idx[:, 2]]))
        inside = 0
        for start in range(0, len(idx), 8192):
            c = idx[start:start + 8192].astype(float)[:, :, None, None, None]
            k, j, i = c[:, 0] + ok, c[:, 1] + oj, c[:, 2] + oi
            h = m.pneumothorax_at(grid.u(i), grid.v(j), grid.w(k), side)
            inside += int(np.count_nonzero(h < 0))
        out[side] = (sure + inside / n_sub) * voxel_ml
    return out
