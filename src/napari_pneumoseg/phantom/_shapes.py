"""Building blocks of the implicit patient: signed distances, smooth steps, smooth random fields.

Distances are in mm and negative inside. Everything here works alike on
scalars, on (u, v) planes and on point sets.
"""

from __future__ import annotations

import numpy as np


def py_float(x):
    """0-d results as Python floats, so float32 planes stay float32 (NumPy 2 promotion)."""
    return float(x) if np.ndim(x) == 0 else x


def smoothstep(e0, e1, x):
    """0 below ``e0``, 1 above ``e1``, a smooth cubic in between."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return py_float(t * t * (3.0 - 2.0 * t))


def ellipse_sdf(u, v, a, b):
    """Approximate signed distance (mm, negative inside) to an ellipse; exact on it."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2) + 1e-9
    return k0 * (k0 - 1.0) / k1


def ellipsoid_sdf(u, v, w, a, b, c):
    """Approximate signed distance (mm, negative inside) to an ellipsoid."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2 + (w / (c * c)) ** 2) + 1e-9
    return k0 * (k0 - 1.0) / k1


def segment_sdf(u, v, w, a, b, ra, rb):
    """Signed distance (about mm) to a tapered tube from ``a`` (radius ``ra``) to ``b``."""
    e = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    l2 = e[0] * e[0] + e[1] * e[1] + e[2] * e[2] or 1e-9
    du, dv, dw = u - a[0], v - a[1], w - a[2]
    t = np.clip((du * e[0] + dv * e[1] + dw * e[2]) / l2, 0.0, 1.0)
    d = np.sqrt((du - t * e[0]) ** 2 + (dv - t * e[1]) ** 2 + (dw - t * e[2]) ** 2)
    return d - (ra + (rb - ra) * t)


class SmoothField:
    """A smooth random field: a sum of separable sine products (cheap on planes and points).

    :meth:`planes` computes the (u, v) factors once; :meth:`combine` adds the
    ``w`` factors for one height (or for points).
    """

    def __init__(self, rng, n, amplitude, wavelength):
        self.a = rng.uniform(*amplitude, n) * rng.choice([-1.0, 1.0], n)
        self.k = 2 * np.pi / rng.uniform(*wavelength, (n, 3))
        self.p = rng.uniform(0, 2 * np.pi, (n, 3))

    def planes(self, u, v):
        return [np.sin(k[0] * u + p[0]) * np.sin(k[1] * v + p[1]) for k, p in zip(self.k, self.p)]

    def combine(self, planes, w):
        out = 0.0
        for a, k, p, pl in zip(self.a, self.k, self.p, planes):
            out = out + pl * py_float(a * np.sin(k[2] * w + p[2]))
        return out
