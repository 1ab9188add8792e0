"""The scanner's voxel grid over the anatomy frame, and the patient seen through it.

:class:`Grid` maps voxel indices (k, j, i) to the anatomy frame (u, v, w) and
back; the in-plane scale ``s`` shrinks the anatomy when the field of view is
too small for it, and ``y_shift`` lays the back on the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._anatomy import Model, Plane


class Grid:
    """Maps voxel indices to the anatomy frame and back."""

    def __init__(self, shape, spacing, origin, s, y_shift):
        self.shape, self.spacing, self.origin = shape, spacing, origin
        self.s, self.y_shift = s, y_shift

    def u(self, i):
        return (self.origin[0] + np.asarray(i, float) * self.spacing[2]) / self.s

    def v(self, j):
        return (self.origin[1] + np.asarray(j, float) * self.spacing[1] - self.y_shift) / self.s

    def w(self, k):
        return (np.asarray(k, float) + 0.5) * self.spacing[0]

    def index(self, u, v, w):
        """Fractional (k, j, i) of anatomy points."""
        return np.stack([
            np.asarray(w) / self.spacing[0] - 0.5,
            (np.asarray(v) * self.s + self.y_shift - self.origin[1]) / self.spacing[1],
            (np.asarray(u) * self.s - self.origin[0]) / self.spacing[2],
        ], axis=-1)

    def window(self, u_lo, u_hi, v_lo, v_hi):
        """Row and column slices covering an anatomy-frame rectangle."""
        _, ny, nx = self.shape
        (_, j0, i0), (_, j1, i1) = self.index(u_lo, v_lo, 0.0), self.index(u_hi, v_hi, 0.0)
        rows = slice(int(np.clip(np.floor(j0), 0, ny)), int(np.clip(np.ceil(j1) + 1, 0, ny)))
        cols = slice(int(np.clip(np.floor(i0), 0, nx)), int(np.clip(np.ceil(i1) + 1, 0, nx)))
        return rows, cols

    def plane(self, m, rows, cols):
        u = self.u(np.arange(cols.start, cols.stop)).astype(np.float32)[None, :]
        v = self.v(np.arange(rows.start, rows.stop)).astype(np.float32)[:, None]
        return Plane(m, u, v)


@dataclass
class Implicit:
    """The implicit patient behind a phantom, to re-measure it (tests)."""

    model: Model
    grid: Grid

    def pneumothorax_at_index(self, k, j, i, side):
        """The pleural-air function (negative inside) at fractional voxel indices."""
        g = self.grid
        return self.model.pneumothorax_at(g.u(i), g.v(j), g.w(k), side)

