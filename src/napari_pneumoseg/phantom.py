"""Synthetic chest CT with a known pneumothorax, for tests, benchmarks and demos.

No public pneumothorax CT comes with masks, so the project makes its own
patients. :func:`make_phantom` paints a supine, head-first axial chest CT in
HU (body wall, ribs, spine, mediastinum with great vessels and airways,
heart, lungs with branching vessel trees, upper abdomen, table) from implicit
functions in 3-D, and collapses one or both lungs away from the chest wall.
The pleural air is thickest anteriorly and at the apex, where it collects in
a supine patient.

The ground truth is voxelised from the same implicit function that paints
the HU (before blur and noise). ``info["continuous_volume_ml"]`` is the
volume of that function's region measured by supersampling it, not from the
voxel count.

The anatomy lives in its own frame (mm): ``u`` towards patient left, ``v``
towards posterior, ``w`` towards superior, ``w = 0`` at the bottom of the
scanned range and ``w = L`` (the scanned length) at its top. The lungs always
fit the scanned range: the diaphragm domes sit in its lower quarter and the
apices near its top, whatever ``n_slices`` is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .ct.volume import CTVolume

SIDES = ("left", "right", "both", "none")
SIZES = ("small", "moderate", "large")

#: Default geometry: 120 slices of 512 x 512 at (2.5, 0.7, 0.7) mm, a 300 mm chest in a 358 mm FOV.
DEFAULT_SHAPE_YX = (512, 512)
DEFAULT_SPACING = (2.5, 0.7, 0.7)
CHEST_LENGTH_MM = 300.0
FOV_MM = 512 * 0.7

#: Tissue labels of ``Phantom.labels`` (kept with ``keep_labels=True``).
LABELS = {
    "outside": 0, "table": 1, "soft": 2, "bone": 3, "mediastinum": 4,
    "right_lung": 5, "left_lung": 6, "pneumothorax": 7, "airway": 8, "abdomen": 9,
}
_L = LABELS

HU = {
    "air": -1000.0, "fat": -95.0, "skin": 30.0, "muscle": 45.0, "blood": 40.0,
    "liver": 58.0, "spleen": 42.0, "stomach": 28.0, "cortex": 850.0, "marrow": 240.0,
    "cartilage": 110.0, "disc": 85.0, "csf": 15.0, "lung": -870.0, "vessel": 40.0,
    "table_shell": 250.0, "table_core": -930.0,
}

# Anterior rim of pleural air (mm) per size; the "floor" sets how far it reaches
# posteriorly (negative: none along the dependent back); collapsed lung gets denser.
_RIM_MM = {"small": (4.5, 7.0), "moderate": (14.0, 19.0), "large": (40.0, 52.0)}
_RIM_FLOOR = {"small": -0.3, "moderate": 0.0, "large": 0.15}
_COLLAPSE_HU = {"small": 10.0, "moderate": 40.0, "large": 90.0}
_STANDARD_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclass
class Phantom:
    """A synthetic CT (``ct``), its pneumothorax mask (``truth``, uint8 z,y,x) and facts (``info``).

    ``labels`` (tissue classes, :data:`LABELS`) is kept only on request;
    ``model`` is the implicit patient, for tests that re-measure it.
    """

    ct: CTVolume
    truth: np.ndarray
    info: dict[str, Any]
    labels: Optional[np.ndarray] = field(default=None, repr=False)
    model: Any = field(default=None, repr=False)


# --------------------------------------------------------------------------- helpers


def _ellipse_sdf(u, v, a, b):
    """Approximate signed distance (mm, negative inside) to an ellipse; exact on it."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2) + 1e-9
    return k0 * (k0 - 1.0) / k1


def _ellipsoid_sdf(u, v, w, a, b, c):
    """Approximate signed distance (mm, negative inside) to an ellipsoid."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2 + (w / (c * c)) ** 2) + 1e-9
    return k0 * (k0 - 1.0) / k1


def _segment_sdf(u, v, w, a, b, ra, rb):
    """Signed distance (about mm) to a tapered tube from ``a`` (radius ``ra``) to ``b``."""
    e = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    l2 = e[0] * e[0] + e[1] * e[1] + e[2] * e[2] or 1e-9
    du, dv, dw = u - a[0], v - a[1], w - a[2]
    t = np.clip((du * e[0] + dv * e[1] + dw * e[2]) / l2, 0.0, 1.0)
    d = np.sqrt((du - t * e[0]) ** 2 + (dv - t * e[1]) ** 2 + (dw - t * e[2]) ** 2)
    return d - (ra + (rb - ra) * t)


def _lerp_index(x, n):
    """Lower sample index and weight for linear interpolation at positions ``x`` of ``n`` samples."""
    x = np.clip(np.asarray(x, np.float64), 0.0, n - 1.0)
    i0 = np.minimum(np.floor(x).astype(int), n - 2)
    return i0, (x - i0).astype(np.float32)


def _put(arr, mask, value):
    """``arr[mask] = value`` for a scalar value, faster."""
    np.copyto(arr, np.asarray(value, arr.dtype), where=mask)


def _f(x):
    """0-d results as Python floats, so float32 planes stay float32 (NumPy 2 promotion)."""
    return float(x) if np.ndim(x) == 0 else x


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return _f(t * t * (3.0 - 2.0 * t))


class _SmoothField:
    """A smooth random field: a sum of separable sine products (cheap on planes and points)."""

    def __init__(self, rng, n, amplitude, wavelength):
        self.a = rng.uniform(*amplitude, n) * rng.choice([-1.0, 1.0], n)
        self.k = 2 * np.pi / rng.uniform(*wavelength, (n, 3))
        self.p = rng.uniform(0, 2 * np.pi, (n, 3))

    def planes(self, u, v):
        return [np.sin(k[0] * u + p[0]) * np.sin(k[1] * v + p[1]) for k, p in zip(self.k, self.p)]

    def combine(self, planes, w):
        out = 0.0
        for a, k, p, pl in zip(self.a, self.k, self.p, planes):
            out = out + pl * _f(a * np.sin(k[2] * w + p[2]))
        return out


# ----------------------------------------------------------------------------- model


class _Plane:
    """Quantities that depend on (u, v) only: computed once per grid or point set, reused for every w.

    The painter makes one for a slice window (``u`` a row, ``v`` a column);
    point evaluations make one for their points. Both run the same code.
    """

    def __init__(self, m: "_Model", u, v):
        self.m, self.u, self.v = m, u, v
        self.cache: dict = {}
        # A grid plane: u is a row (1, n) and v a column (m, 1).
        self.is_grid = np.ndim(u) == 2 and np.shape(u)[0] == 1 and np.ndim(v) == 2 and np.shape(v)[1] == 1
        self._med: dict = {}

    def med_plane(self, k):
        """Coarse mediastinum plane ``k``, bilinearly interpolated onto this grid plane (cached)."""
        if k not in self._med:
            if len(self._med) > 3:
                self._med.pop(min(self._med))
            if "med_w" not in self.cache:
                m = self.m
                self.cache["med_w"] = (_lerp_index((self.v[:, 0] - m.med_origin[1]) / m.med_step,
                                                   m.med_field.shape[1]),
                                       _lerp_index((self.u[0] - m.med_origin[0]) / m.med_step,
                                                   m.med_field.shape[2]))
            (j0, tv), (i0, tu) = self.cache["med_w"]
            f = self.m.med_field[k]
            rows = f[j0] * (1 - tv)[:, None] + f[j0 + 1] * tv[:, None]
            self._med[k] = rows[:, i0] * (1 - tu) + rows[:, i0 + 1] * tu
        return self._med[k]

    @cached_property
    def phi(self):
        """Angle around the body from the spine (0) to the sternum (pi)."""
        return np.arctan2(np.abs(self.u), self.v)

    @cached_property
    def deform(self):
        return self.m.deform.planes(self.u, self.v)

    @cached_property
    def wobble(self):
        return self.m.rim_wobble.planes(self.u, self.v)

    @cached_property
    def texture(self):
        return self.m.texture.planes(self.u, self.v)

    @cached_property
    def dome(self):
        return self.m.dome(self.u, self.v)

    @cached_property
    def spine(self):
        return self.m.spine(self.u, self.v)

    @cached_property
    def ant(self):
        m = self.m
        return np.clip((m.B - self.v) / (2 * m.B), 0.0, 1.0)

    @cached_property
    def ant_shape(self):
        return self.ant ** 1.7

    def lat_ant(self, side):
        """Lateral-ness times anterior-ness, for the rim of ``side``."""
        key = ("lat_ant", side)
        if key not in self.cache:
            m = self.m
            sgn = 1.0 if side == "left" else -1.0
            self.cache[key] = np.clip(sgn * (self.u - m.xm) / m.A, 0.0, 1.0) * self.ant
        return self.cache[key]


class _Model:
    """One random patient: its parameters and the implicit functions that define it."""

    def __init__(self, seed: int, side: str, size: str, L: float):
        rng = np.random.default_rng([seed, 11])
        self.L = L
        self.A = rng.uniform(112.0, 132.0)           # inner thorax half width
        self.B = rng.uniform(74.0, 90.0)             # inner thorax half depth (AP)
        self.fat0 = rng.uniform(7.0, 24.0)
        self.musc0 = rng.uniform(8.0, 14.0)
        self.rib_t = rng.uniform(7.0, 9.0)
        self.xm = rng.uniform(0.0, 6.0)              # mediastinal midline, a little to the left
        self.hw = (rng.uniform(8.0, 11.0), rng.uniform(10.0, 13.0))
        self.heart_c = (self.xm + rng.uniform(24.0, 34.0), -0.2 * self.B + rng.uniform(-4, 4),
                        rng.uniform(0.27, 0.31) * L)
        self.heart_r = (rng.uniform(58.0, 68.0), rng.uniform(40.0, 47.0), 0.19 * L)
        self.heart_rot = float(np.radians(rng.uniform(28.0, 42.0)))
        top_r = rng.uniform(0.22, 0.26)
        self.dome_top = {"right": top_r * L, "left": (top_r - rng.uniform(0.03, 0.05)) * L}
        self.dome_depth = rng.uniform(0.17, 0.2) * L
        self.apex = {s: rng.uniform(0.9, 0.94) * L for s in ("right", "left")}
        self.r_vb = rng.uniform(15.0, 19.0)
        self.v_vb = self.B - rng.uniform(2.0, 7.0)  # vertebral body centre
        self.pitch = L / 12.5                        # rib / vertebra spacing
        self.rib_phase = rng.uniform(0, 1)
        self.lung_hu = HU["lung"] + rng.uniform(-15, 15)
        self.deform = _SmoothField(rng, 4, (1.5, 4.0), (90.0, 220.0))
        self.texture = _SmoothField(rng, 5, (4.0, 8.0), (25.0, 90.0))
        self.tubes = self._mediastinal_tubes(rng)
        self.build_mediastinum()
        # The pneumothorax.
        prng = np.random.default_rng([seed, 22])
        self.side, self.size = side, size
        self.ptx_sides = {"left": ["left"], "right": ["right"], "both": ["right", "left"],
                          "none": []}[side]
        self.rim = {s: prng.uniform(*_RIM_MM[size]) for s in ("right", "left")}
        self.rim_floor = _RIM_FLOOR[size]
        self.rim_wobble = _SmoothField(prng, 3, (0.04, 0.1), (60.0, 160.0))
        self.collapse_hu = _COLLAPSE_HU[size]
        self.seed = seed

    def _mediastinal_tubes(self, rng):
        """Great vessels and central airways: (name, a, b, ra, rb, fat margin, HU)."""
        L, B, xm = self.L, self.B, self.xm
        p = lambda u, v, zn: np.array([xm + u, v, zn * L])  # noqa: E731
        self.v_tr = v_tr = self.v_vb - self.r_vb - 12.0
        r_ao = rng.uniform(13.0, 16.0)
        carina = p(2.0, v_tr + 3.0, 0.62)
        self.hila = {"right": p(-self.hw[1] - 30.0, v_tr + 6.0, 0.57),
                     "left": p(self.hw[1] + 32.0, v_tr + 9.0, 0.53)}
        root, asc, arch, desc = p(8, -0.28 * B, 0.40), p(-6, -0.32 * B, 0.64), p(2, -0.06 * B, 0.72), \
            p(22, self.v_vb - 10.0, 0.66)
        trunk = p(26, -0.25 * B, 0.54)
        blood = HU["blood"]
        t = [
            ("aorta", root, asc, r_ao, r_ao, 3.0, blood),
            ("aorta", asc, arch, r_ao, 0.95 * r_ao, 3.0, blood),
            ("aorta", arch, desc, 0.95 * r_ao, 0.85 * r_ao, 3.0, blood),
            ("aorta", desc, p(17, self.v_vb - 6.0, -0.05), 0.85 * r_ao, 0.8 * r_ao, 2.0, blood),
            ("svc", p(-28, -0.18 * B, 0.48), p(-26, -0.24 * B, 0.8), 9.5, 9.5, 2.0, blood),
            ("brachiocephalic vein", p(-26, -0.24 * B, 0.8), p(-40, -0.3 * B, 1.05), 9.0, 8.0, 2.0, blood),
            ("brachiocephalic vein", p(-22, -0.26 * B, 0.8), p(30, -0.38 * B, 0.86), 6.0, 6.5, 2.0, blood),
            ("brachiocephalic vein", p(30, -0.38 * B, 0.86), p(48, -0.3 * B, 1.05), 6.5, 7.0, 2.0, blood),
            ("brachiocephalic artery", arch, p(-14, -0.12 * B, 1.05), 7.0, 6.0, 2.0, blood),
            ("carotid", arch + [8, 4, 0], p(8, -0.05 * B, 1.05), 4.5, 4.0, 2.0, blood),
            ("subclavian", arch + [16, 10, -5], p(24, 0.05 * B, 1.05), 5.0, 5.0, 2.0, blood),
            ("pulmonary trunk", p(16, -0.55 * B, 0.42), trunk, 14.0, 13.0, 3.0, blood),
            ("left pulmonary artery", trunk, self.hila["left"] + [0, -8, 2], 11.0, 9.0, 1.5, blood),
            ("right pulmonary artery", trunk, self.hila["right"] + [0, -8, 0], 11.0, 9.0, 1.5, blood),
            ("oesophagus", p(7, v_tr + 15.0, -0.05), p(3, v_tr + 14.0, 1.05), 7.0, 7.0, 1.5, HU["muscle"]),
            ("azygos", p(-12, self.v_vb - 4.0, -0.05), p(-12, self.v_vb - 6.0, 0.6), 4.0, 4.0, 1.0, blood),
            ("trachea", p(0.5, v_tr - 4.0, 1.05), carina, 10.8, 10.3, 2.0, HU["muscle"]),
            ("right bronchus", carina, self.hila["right"], 8.2, 6.6, 1.0, HU["muscle"]),
            ("left bronchus", carina, self.hila["left"], 7.8, 6.4, 1.0, HU["muscle"]),
        ]
        self.airways = [
            (p(0.5, v_tr - 4.0, 1.05), carina, 9.0, 8.5),
            (carina, self.hila["right"], 6.5, 5.0),
            (carina, self.hila["left"], 6.2, 4.8),
        ]
        # Plain float tuples: NumPy scalars would promote float32 planes to float64.
        t = [(n, tuple(map(float, a)), tuple(map(float, b)), float(ra), float(rb), float(mg), float(hu))
             for n, a, b, ra, rb, mg, hu in t]
        return t

    # -- body wall -------------------------------------------------------------------

    def wall_ab(self, w):
        """Inner thorax half axes at height ``w`` (narrower at the thoracic inlet)."""
        t = self.inlet(w)
        if np.ndim(t) and not t.any():
            t = 0.0  # all below the inlet: plain numbers, so (u, v)-only work is shared
        return self.A * (1 - 0.3 * t), self.B * (1 - 0.12 * t)

    def inlet(self, w):
        """0 below the upper chest, rising to 1 at the top: the rib cage closes around the apices."""
        return _smoothstep(0.68, 1.0, w / self.L)

    def shoulder(self, phi):
        """Extra muscle where the rib cage narrows, so the body outline keeps its width."""
        return 0.3 * self.A * np.sin(phi) ** 2 + 0.12 * self.B * np.cos(phi) ** 2

    def wall(self, P: _Plane, w):
        """Signed distance to the inner surface of the chest wall (ribs)."""
        a, b = self.wall_ab(w)
        if np.ndim(a) == 0:
            key = (float(a), float(b))
            if P.cache.get("wall", (None,))[0] != key:
                P.cache["wall"] = (key, _ellipse_sdf(P.u, P.v, a, b))
            base = P.cache["wall"][1]
        else:
            base = _ellipse_sdf(P.u, P.v, a, b)
        return base + self.deform.combine(P.deform, w)

    def muscle_t(self, phi, w):
        zn = w / self.L
        pect = np.exp(-(((phi - 2.2) / 0.55) ** 2)) * _smoothstep(0.35, 0.6, zn)
        scap = np.exp(-(((phi - 0.85) / 0.4) ** 2)) * _smoothstep(0.5, 0.68, zn)
        back = np.exp(-((phi / 0.42) ** 2))
        return (self.musc0 * (0.7 + 0.9 * pect) + 46.0 * back + 22.0 * scap
                + self.inlet(w) * self.shoulder(phi))

    def fat_t(self, phi):
        return self.fat0 * (0.5 + 0.7 * np.sin(phi) ** 2)

    # -- mediastinum, heart, spine, diaphragm ---------------------------------------

    def heart(self, u, v, w):
        (cx, cy, cz), (a, b, c) = self.heart_c, self.heart_r
        cs, sn = np.cos(self.heart_rot), np.sin(self.heart_rot)
        du, dv = u - cx, v - cy
        # Long axis from right-posterior towards left-anterior.
        return _ellipsoid_sdf(cs * du - sn * dv, sn * du + cs * dv, w - cz, a, b, c)

    def _mediastinum_exact(self, u, v, w):
        """Signed distance to the mediastinum: a thin septum, the heart, vessels with their fat."""
        zn = w / self.L
        hw = self.hw[0] + (self.hw[1] - self.hw[0]) * _smoothstep(0.5, 0.6, zn)
        d = np.abs(u - self.xm) - hw * (0.3 + 0.7 * _smoothstep(-self.B, -0.2 * self.B, v))
        d = np.minimum(d, self.heart(u, v, w) - 3.0)
        for _, a, b, ra, rb, margin, _ in self.tubes:
            d = np.minimum(d, _segment_sdf(u, v, w, a, b, ra + margin, rb + margin))
        return d

    def build_mediastinum(self, step=4.0):
        """Sample the mediastinum on a coarse 3-D grid once; it is interpolated (trilinear) after."""
        self.med_step = step
        self.med_origin = (-self.A - 24.0, -self.B - 24.0, -step)  # u, v, w
        n = [int(np.ceil((2 * self.A + 48.0) / step)) + 1, int(np.ceil((2 * self.B + 48.0) / step)) + 1,
             int(np.ceil((self.L + 2 * step) / step)) + 1]
        u = (self.med_origin[0] + step * np.arange(n[0], dtype=np.float32))[None, None, :]
        v = (self.med_origin[1] + step * np.arange(n[1], dtype=np.float32))[None, :, None]
        w = (self.med_origin[2] + step * np.arange(n[2], dtype=np.float32))[:, None, None]
        self.med_field = np.ascontiguousarray(self._mediastinum_exact(u, v, w), dtype=np.float32)

    def mediastinum(self, P: _Plane, w):
        """Signed distance to the mediastinum, interpolated from :meth:`build_mediastinum`."""
        from scipy.ndimage import map_coordinates

        f, step, (u0, v0, w0) = self.med_field, self.med_step, self.med_origin
        if np.ndim(w) == 0 and P.is_grid:
            kf = min(max((w - w0) / step, 0.0), f.shape[0] - 1.0)
            k0 = min(int(kf), f.shape[0] - 2)
            t = kf - k0
            lo, hi = P.med_plane(k0), P.med_plane(k0 + 1)
            return lo + np.float32(t) * (hi - lo)
        u, v, w = np.broadcast_arrays(P.u, P.v, w)
        coords = np.stack([np.clip(((x - o) / step).ravel(), 0.0, n - 1.0)
                           for x, o, n in ((w, w0, f.shape[0]), (v, v0, f.shape[1]), (u, u0, f.shape[2]))])
        return map_coordinates(f, coords, order=1, mode="nearest").reshape(u.shape)

    def spine(self, u, v):
        """Signed distance to the vertebral column and what lies behind it."""
        r = self.r_vb + 3.0
        body = np.sqrt(u * u + (v - self.v_vb) ** 2) - r
        behind = np.maximum(np.abs(u) - r - 6.0, self.v_vb - v)
        return np.minimum(body, behind)

    def dome(self, u, v):
        """Height of the diaphragm (the higher of two domes) and 1/sqrt(1 + slope^2)."""
        best, grad = None, None
        for side, sgn in (("right", -1.0), ("left", 1.0)):
            cu, ru, rv = self.xm + sgn * 0.45 * self.A, 0.8 * self.A, 1.05 * self.B
            du, dv = (u - cu) / ru, (v + 0.1 * self.B) / rv
            post = np.clip(v / self.B, 0.0, None)
            h = self.dome_top[side] - self.dome_depth * (du * du + dv * dv) - 0.08 * self.L * post * post
            g2 = (2 * self.dome_depth * du / ru) ** 2 + (
                2 * self.dome_depth * dv / rv + 0.16 * self.L * post / self.B) ** 2
            if best is None:
                best, grad = h, g2
            else:
                # Smooth maximum: the central tendon dips only a little between the domes.
                k = 0.1 * self.L
                t = np.clip(0.5 + (h - best) / (2 * k), 0.0, 1.0)
                best = t * h + (1 - t) * best + k * t * (1 - t)
                grad = t * g2 + (1 - t) * grad
        return best, 1.0 / np.sqrt(1.0 + grad)

    def diaphragm(self, P: _Plane, w):
        """Signed distance to the diaphragm, positive below it (height over slope)."""
        h, k = P.dome
        return (h - w) * k

    def apex_cap(self, P: _Plane, w, side):
        """Signed distance to the dome of a lung apex (a wide cylinder lower down)."""
        sgn = 1.0 if side == "left" else -1.0
        z0 = 0.45 * self.L
        dz = _f(np.maximum(w - z0, 0.0))
        if np.ndim(dz) and not dz.any():
            dz = 0.0
        args = (P.u - (self.xm + sgn * 0.5 * self.A), P.v - 0.22 * self.B)
        axes = (0.62 * self.A, 1.28 * self.B, self.apex[side] - z0)
        if np.ndim(dz) == 0 and dz == 0.0:  # below the cap: the same for every w, so cache it
            key = ("apex", side)
            if key not in P.cache:
                P.cache[key] = _ellipsoid_sdf(*args, 0.0, *axes)
            return P.cache[key]
        return _ellipsoid_sdf(*args, dz, *axes)

    # -- pleural cavities, lungs and the pneumothorax ---------------------------------

    def cavity_common(self, P: _Plane, w, wall=None):
        """The part of the pleural cavity definition shared by both sides."""
        c = self.wall(P, w) if wall is None else wall
        c = np.maximum(c, -self.mediastinum(P, w))
        c = np.maximum(c, -P.spine)
        return np.maximum(c, self.diaphragm(P, w))

    def cavity(self, P: _Plane, w, side, common=None):
        """Signed distance (about mm) to one pleural cavity; negative inside."""
        if common is None:
            common = self.cavity_common(P, w)
        sgn = 1.0 if side == "left" else -1.0
        c = np.maximum(common, self.apex_cap(P, w, side))
        return np.maximum(c, sgn * (self.xm - P.u))

    def rim_mm(self, P: _Plane, w, side):
        """Local thickness of pleural air: largest anteriorly and at the apex (supine)."""
        if side not in self.ptx_sides:
            return 0.0
        api = _f(np.clip((w / self.L - 0.5) / (self.apex[side] / self.L - 0.5), 0.0, 1.0))
        shape = np.minimum(P.ant_shape + 0.3 * P.lat_ant(side) + 0.9 * api ** 2, 1.3)
        f = self.rim_floor
        r = self.rim[side] * (f + (1 - f) * shape) * (1.0 + self.rim_wobble.combine(P.wobble, w))
        return np.maximum(r, 0.0)

    def pneumothorax_at(self, u, v, w, side):
        """The pleural-air implicit function at points: negative inside (about mm)."""
        P = _Plane(self, u, v)
        cav = self.cavity(P, w, side)
        return np.maximum(cav, -(cav + self.rim_mm(P, w, side)))

    def cavity_at(self, u, v, w, side):
        return self.cavity(_Plane(self, u, v), w, side)


# ------------------------------------------------------------------------------ grid


class _Grid:
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
        return _Plane(m, u, v)


# ---------------------------------------------------------------------------- public


def make_phantom(
    seed: int = 0,
    side: str = "left",
    size: str = "moderate",
    n_slices: Optional[int] = None,
    spacing: Optional[tuple[float, float, float]] = None,
    shape_yx: tuple[int, int] = DEFAULT_SHAPE_YX,
    *,
    noise_hu: float = 15.0,
    blur_px: float = 0.6,
    keep_labels: bool = False,
) -> Phantom:
    """A synthetic supine, head-first chest CT with a pneumothorax on ``side``.

    ``side`` is "left", "right", "both" or "none"; ``size`` "small" (a rim of
    a few mm to ~1 cm), "moderate" or "large" (several cm). The same ``seed``
    gives the same patient for every side and size.

    ``spacing`` defaults to ``(2.5, 0.7, 0.7)`` mm for 120 x 512 x 512 and is
    scaled for other sizes so the chest stays 300 mm long in a ~358 mm FOV:
    ``(300 / n_slices, 358.4 / rows, 358.4 / columns)``. With an explicit
    ``spacing``, ``n_slices`` defaults to ``round(300 / spacing[0])``. The
    anatomy always spans the scanned z range and shrinks in-plane if the FOV
    is too small for it.

    ``noise_hu`` (Gaussian noise sigma) and ``blur_px`` (partial-volume blur,
    in-plane sigma in pixels) can be 0 to get the painted HU exactly;
    ``keep_labels`` keeps the tissue labels (:data:`LABELS`) on the result.

    ``info`` holds: side, size, seed; ``volume_ml`` (truth voxels x voxel
    volume), ``left_ml``/``right_ml``; ``continuous_volume_ml`` (and per side)
    measured on the implicit surface by supersampling; ``hemithorax_ml`` and
    ``fraction_of_hemithorax`` per side; the anterior ``rim_mm`` drawn for
    each affected side; shape, spacing and the noise/blur used.
    Small is about 10-18 % of the hemithorax, moderate 30-45 %, large 75-90 %.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    ny, nx = (int(n) for n in shape_yx)
    if spacing is None:
        nz = int(n_slices) if n_slices is not None else round(CHEST_LENGTH_MM / DEFAULT_SPACING[0])
        spacing = (CHEST_LENGTH_MM / nz, FOV_MM / ny, FOV_MM / nx)
    else:
        spacing = tuple(float(x) for x in spacing)
        nz = int(n_slices) if n_slices is not None else max(2, round(CHEST_LENGTH_MM / spacing[0]))
    if nz < 2 or ny < 32 or nx < 32:
        raise ValueError(f"phantom too small: {nz} slices of {ny} x {nx} (need 2 x 32 x 32)")
    sz, sy, sx = spacing
    L = nz * sz
    m = _Model(seed, side, size, L)

    # Fit body and table into the field of view, shrinking the anatomy if needed.
    m.table_t = 45.0
    m.v_back = m.B + m.rib_t + m.muscle_t(0.0, 0.5 * L) + m.fat_t(0.0) - 4.0
    front = m.B + m.rib_t + m.muscle_t(np.pi, 0.7 * L) + m.fat_t(np.pi) + 4.0
    half_w = m.A + m.rib_t + m.muscle_t(np.pi / 2, 0.7 * L) + m.fat_t(np.pi / 2) + 6.0
    fov_y, fov_x = ny * sy, nx * sx
    s = min(1.0, (fov_y - 12.0) / (m.v_back + m.table_t + front), 0.96 * fov_x / (2 * half_w))
    origin_x, origin_y = -(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy
    y_shift = origin_y + (ny - 1) * sy - 6.0 - s * (m.v_back + m.table_t)
    origin = (origin_x, origin_y, -60.0 - (nz - 1) * sz)
    grid = _Grid((nz, ny, nx), spacing, origin, s, y_shift)

    hu = np.empty((nz, ny, nx), np.float32)
    labels = np.zeros((nz, ny, nx), np.uint8)
    painter = _SlicePainter(m, grid, half_w, front)
    for k in range(nz):
        painter.paint(k, hu[k], labels[k])
    band = painter.band_voxels()  # voxels the pleural-air surface may cut, per side
    del painter
    _paint_tubes(m, grid, hu, labels)

    truth = (labels == _L["pneumothorax"]).astype(np.uint8)
    if blur_px > 0:
        zsig = 0.35 * blur_px / 0.6 * min(1.0, 2.5 / sz)  # thin slices: less through-plane blur
        _blur(hu, blur_px, zsig)
    if noise_hu > 0:
        nrng = np.random.default_rng([seed, 33])
        for k in range(nz):
            hu[k] += nrng.standard_normal((ny, nx), dtype=np.float32) * np.float32(noise_hu)
        np.maximum(hu, -1024.0, out=hu)  # scanners clip air at -1024

    voxel_ml = sz * sy * sx / 1000.0
    # The sides are split by the mediastinal midline (u = xm), as in the implicit model.
    left_cols = np.arange(nx) > (m.xm * s - origin_x) / sx
    counts = truth.sum(axis=(0, 1), dtype=np.int64)
    vox = {"left": int(counts[left_cols].sum()), "right": int(counts[~left_cols].sum())}
    cont = _continuous_volume_ml(m, grid, truth, band, left_cols)
    # Hemithorax = that side's lung + its pleural air (airway lumens inside the lung aside).
    hemi = {n: (int(np.count_nonzero(labels == _L[f"{n}_lung"])) + vox[n]) * voxel_ml for n in vox}
    info = {
        "side": side,
        "size": size,
        "seed": int(seed),
        "volume_ml": float(sum(vox.values()) * voxel_ml),
        "continuous_volume_ml": cont["left"] + cont["right"],
        "left_ml": vox["left"] * voxel_ml,
        "right_ml": vox["right"] * voxel_ml,
        "continuous_left_ml": cont["left"],
        "continuous_right_ml": cont["right"],
        "hemithorax_ml": hemi,
        "fraction_of_hemithorax": {n: (vox[n] * voxel_ml / hemi[n] if hemi[n] else 0.0) for n in hemi},
        "rim_mm": {n: float(m.rim[n]) for n in m.ptx_sides},
        "shape": [nz, ny, nx],
        "spacing": [float(x) for x in spacing],
        "anatomy_scale": float(s),
        "noise_hu": float(noise_hu),
        "blur_px": float(blur_px),
    }
    metadata = {
        "series_description": "Pneumothorax phantom",
        "modality": "CT",
        "patient_position": "HFS",
        "manufacturer": "napari-pneumoseg phantom",
        "window": [-300.0, 1400.0],
        "phantom": info,
    }
    ct = CTVolume(hu=hu, spacing=spacing, origin=origin, direction=_STANDARD_DIRECTION.copy(),
                  metadata=metadata)
    return Phantom(ct=ct, truth=truth, info=info, labels=labels if keep_labels else None,
                   model=_Implicit(m, grid))


def _blur(hu, sigma_yx, sigma_z):
    """Partial-volume blur in place: a 3-tap Gaussian per axis (sigmas in voxels, edges repeated).

    For the sigmas used (< 0.8 voxel) the taps beyond +-1 carry < 1 % of the weight.
    """
    def taps(sigma):
        e = float(np.exp(-0.5 / sigma ** 2)) if sigma > 0.05 else 0.0
        return np.float32(1.0 / (1.0 + 2.0 * e)), np.float32(e / (1.0 + 2.0 * e))

    c, e = taps(sigma_yx)
    for k in range(hu.shape[0]):
        x = hu[k]
        for axis in (0, 1):
            y = x * c
            a, b = (slice(1, None), slice(None, -1))
            if axis == 0:
                y[a] += e * x[b]
                y[b] += e * x[a]
                y[0] += e * x[0]
                y[-1] += e * x[-1]
            else:
                y[:, a] += e * x[:, b]
                y[:, b] += e * x[:, a]
                y[:, 0] += e * x[:, 0]
                y[:, -1] += e * x[:, -1]
            x = y
        hu[k] = x
    c, e = taps(sigma_z)
    if e == 0 or hu.shape[0] < 2:
        return
    prev = hu[0].copy()
    for k in range(hu.shape[0]):
        cur = hu[k].copy()
        nxt = hu[k + 1] if k + 1 < hu.shape[0] else cur
        hu[k] = c * cur + e * (prev + nxt)
        prev = cur


@dataclass
class _Implicit:
    """The implicit patient behind a phantom, to re-measure it (tests)."""

    model: _Model
    grid: _Grid

    def pneumothorax_at_index(self, k, j, i, side):
        """The pleural-air function (negative inside) at fractional voxel indices."""
        g = self.grid
        return self.model.pneumothorax_at(g.u(i), g.v(j), g.w(k), side)


# ------------------------------------------------------------------------- painting

class _SlicePainter:
    """Paints axial slices; (u, v)-only layers are computed once and reused for every slice."""

    def __init__(self, m: _Model, grid: _Grid, half_w, front):
        self.m, self.grid = m, grid
        _, ny, nx = grid.shape
        # The whole slice: table (fixed), body window, thorax window.
        full = grid.plane(m, slice(0, ny), slice(0, nx))
        depth = full.v - (m.v_back - full.u * full.u / 1400.0)
        table = (depth >= 0) & (depth < m.table_t) & (np.abs(full.u) < 230.0)
        shell = (depth < 2.5) | (depth > m.table_t - 2.5)
        self.base_hu = np.full((ny, nx), HU["air"], np.float32)
        self.base_hu[table] = np.where(shell, HU["table_shell"], HU["table_core"])[table]
        self.base_lab = np.where(table, _L["table"], _L["outside"]).astype(np.uint8)

        self.body_win = grid.window(-half_w - 12, half_w + 12, -front - 12, m.v_back + 2)
        P = self.Pb = grid.plane(m, *self.body_win)
        self.depth = P.v - (m.v_back - P.u * P.u / 1400.0)
        phi = P.phi
        self.musc_terms = (np.exp(-(((phi - 2.2) / 0.55) ** 2)), np.exp(-(((phi - 0.85) / 0.4) ** 2)),
                           46.0 * np.exp(-((phi / 0.42) ** 2)))
        self.fat = m.fat_t(phi)
        self.shoulder = m.shoulder(phi)
        self.rib_g = 0.25 * (1 - np.cos(phi)) + 0.5 * phi / np.pi
        self.cart_g = 0.25 * (1 - np.cos(2.6)) + 0.5 * 2.6 / np.pi  # rib_g where cartilage starts
        self.not_spine = phi > 0.25
        self.front = phi > 1.7
        self.scap_zone = (phi > 0.45) & (phi < 1.15)
        u, v = P.u, P.v
        # Spine and paraspinal muscles do not change from slice to slice: keep index sets.
        nz_ = lambda mask: np.nonzero(np.broadcast_to(mask, self.depth.shape))  # noqa: E731
        self.para = (((np.abs(u) - 30.0) / 22.0) ** 2 + ((v - m.v_vb - 42.0) / 26.0) ** 2) < 1.0
        vb = np.sqrt(u * u + (v - m.v_vb) ** 2)
        self.vbody = nz_(vb < m.r_vb)
        self.vbody_hu = np.where((m.r_vb - vb)[self.vbody] < 1.5, HU["cortex"], HU["marrow"]
                                 ).astype(np.float32)
        vc = m.v_vb + m.r_vb + 8.0
        canal_r = np.sqrt((u / 8.5) ** 2 + ((v - vc) / 7.0) ** 2)
        self.canal = nz_(canal_r < 1.0)
        arch = (canal_r >= 1.0) & (canal_r < 1.7) & (v > vc - 3.0)
        along = v - (vc + 8.0)
        spinous = (np.abs(u) < 3.2 - 0.05 * along) & (along > 0) & (along < 30.0)
        trans = _segment_sdf(np.abs(u), v, 0.0, (8.0, vc - 1.0, 0.0), (27.0, vc + 9.0, 0.0), 4.5, 3.5) < 0
        self.post = {(t, sp): nz_(arch | (trans & t) | (spinous & sp))
                     for t in (False, True) for sp in (False, True)}
        # The sternum lives in a small window.
        st_rows, st_cols = grid.window(m.xm * 0.3 - 26, m.xm * 0.3 + 26, -m.B - 12, -m.B + 6)
        self.st_win = (slice(st_rows.start - self.body_win[0].start, st_rows.stop - self.body_win[0].start),
                       slice(st_cols.start - self.body_win[1].start, st_cols.stop - self.body_win[1].start))
        self.st_u = grid.u(np.arange(st_cols.start, st_cols.stop)).astype(np.float32)[None, :] - 0.3 * m.xm
        self.st_v = grid.v(np.arange(st_rows.start, st_rows.stop)).astype(np.float32)[:, None] + m.B + 3.0

        self.th_win = grid.window(-m.A - 16, m.A + 16, -m.B - 16, m.B + 16)
        rows, cols = self.th_win
        self.off = (rows.start - self.body_win[0].start, cols.start - self.body_win[1].start)
        self.Pt = grid.plane(m, *self.th_win)
        Pt = self.Pt
        self.liver_hu = np.where(Pt.u < m.xm + 25.0 - 0.4 * (Pt.v + m.B), HU["liver"], HU["spleen"]
                                 ).astype(np.float32)
        self.stomach_gas = np.broadcast_to(Pt.v < -0.37 * m.B, self.liver_hu.shape)
        self.spine_t = -Pt.spine
        self.not_spine_t = Pt.spine > 0
        self.tex_grav = m.lung_hu + 32.0 * np.clip(Pt.v / m.B, -1.0, 1.0)
        # The pleural-air function on the thorax window, kept to find voxels its surface cuts.
        shape = (grid.shape[0], Pt.v.shape[0], Pt.u.shape[1])
        self.h = {side: np.full(shape, 1e3, np.float32) for side in m.ptx_sides}

    def band_voxels(self, safety=1.5):
        """Voxels the pleural-air surface may cut: ``|h|`` at the centre within the change of ``h``
        across the voxel.

        That change is bounded to first order by half the sum, over the three
        axes, of the larger of the forward and backward differences (the larger
        one, so thin sheets whose V-shaped profile cancels a central difference
        are still caught), times a safety factor.
        """
        out = {}
        r0, c0 = self.th_win[0].start, self.th_win[1].start

        def steep(x, axis):
            d = np.abs(np.diff(x, axis=axis))
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            back = np.pad(d, pad, mode="edge")
            pad[axis] = (0, 1)
            return np.maximum(back, np.pad(d, pad, mode="edge"))

        for side, h in self.h.items():
            found = []
            nz = h.shape[0]
            for k in range(nz):
                hk = h[k]
                gz = np.maximum(np.abs(h[min(k + 1, nz - 1)] - hk), np.abs(hk - h[max(k - 1, 0)]))
                bound = safety * 0.5 * (gz + steep(hk, 0) + steep(hk, 1)) + 0.02
                jj, ii = np.nonzero(np.abs(hk) <= bound)
                found.append(np.stack([np.full(jj.shape, k), jj + r0, ii + c0], axis=1).astype(np.int32))
            out[side] = np.concatenate(found)
        return out

    def paint(self, k, hu_k, lab_k):
        m, P = self.m, self.Pb
        w = float(self.grid.w(k))
        zn = w / m.L
        hu_k[...] = self.base_hu
        lab_k[...] = self.base_lab
        hu = hu_k[self.body_win]
        lab = lab_k[self.body_win]

        # Body wall layers, from the offset of the inner chest wall.
        wall = m.wall(P, w)
        pect, scap, back = self.musc_terms
        mt = m.musc0 * (0.7 + 0.9 * _smoothstep(0.35, 0.6, zn) * pect) + back \
            + (22.0 * _smoothstep(0.5, 0.68, zn)) * scap
        inlet = m.inlet(w)
        if inlet > 0:
            mt = mt + inlet * self.shoulder
        inner_m = mt + m.rib_t
        outer = inner_m + self.fat
        body = (wall < outer) & (self.depth < 0)
        _put(hu, body, HU["fat"])
        _put(lab, body, _L["soft"])
        skin = body & ((wall > outer - 2.0) | (self.depth > -2.0))
        _put(hu, skin, HU["skin"])
        muscle = body & (wall < inner_m)
        _put(hu, muscle, HU["muscle"])
        # A fat plane between the pectoral muscles and the chest wall.
        plane = muscle & (np.abs(wall - m.rib_t - 0.45 * mt - 1.0) < 1.0) & self.front
        _put(hu, plane, HU["fat"])
        _put(hu, body & self.para, HU["muscle"])

        # Ribs (rounded cross-sections) descend from the spine to the front; cartilage near the sternum.
        if zn < 0.985:
            jj, ii = np.nonzero((wall >= 0) & (wall < m.rib_t) & self.not_spine)
            g = self.rib_g[jj, ii]
            s_rib = (w + 3.2 * m.pitch * g) / m.pitch + m.rib_phase
            frac = s_rib - np.floor(s_rib)
            duty = 0.38
            ry, rz = 0.5 * m.rib_t, 0.5 * duty * m.pitch
            q = ((wall[jj, ii] - ry) / ry) ** 2 + ((frac * m.pitch - rz) / rz) ** 2
            ok = q < 1.0
            jj, ii, q, g = jj[ok], ii[ok], q[ok], g[ok]
            edge = (1.0 - np.sqrt(q)) * min(ry, rz)
            val = np.where(edge < 1.5, HU["cortex"], HU["marrow"])
            hu[jj, ii] = np.where(g > self.cart_g, HU["cartilage"], val)
            lab[jj, ii] = _L["bone"]
        if 0.6 < zn < 0.97:  # scapulae
            sc = (wall > inner_m - 20.0) & (wall < inner_m - 13.0) & self.scap_zone
            hu[sc] = np.where(np.minimum(wall - inner_m + 20.0, inner_m - 13.0 - wall)[sc] < 1.5,
                              HU["cortex"], HU["marrow"])
            lab[sc] = _L["bone"]
        if 0.28 < zn < 0.9:  # sternum, wider at the manubrium
            half = 13.0 + 9.0 * _smoothstep(0.75, 0.88, zn)
            st = _ellipse_sdf(self.st_u, self.st_v, half, 6.5)
            inb = st < 0
            hs, ls = hu[self.st_win], lab[self.st_win]
            hs[inb] = np.where(st[inb] > -1.5, HU["cortex"], HU["marrow"])
            ls[inb] = _L["bone"]

        # Spine: vertebral body (discs between), canal, arch, spinous and transverse processes.
        vz = (w / m.pitch + m.rib_phase + 0.5) % 1.0
        hu[self.vbody] = HU["disc"] if vz < 0.16 else self.vbody_hu
        lab[self.vbody] = _L["bone"]
        post = self.post[(0.3 < vz < 0.85, vz > 0.2)]
        hu[post] = HU["cortex"]
        lab[post] = _L["bone"]
        hu[self.canal] = HU["csf"]
        lab[self.canal] = _L["soft"]

        # Inside the chest wall: abdomen, mediastinum, lungs and pleural air.
        r0, c0 = self.off
        Pt = self.Pt
        th = (slice(r0, r0 + Pt.v.shape[0]), slice(c0, c0 + Pt.u.shape[1]))
        hu, lab, wall = hu[th], lab[th], wall[th]
        inside = (wall < 0) & self.not_spine_t
        dia = m.diaphragm(Pt, w)
        abdomen = inside & (dia > 0)
        if abdomen.any():
            np.copyto(hu, self.liver_hu, where=abdomen)
            _put(hu, abdomen & (dia < 5.0), HU["muscle"])
            st = _ellipsoid_sdf(Pt.u - (m.xm + 0.42 * m.A), Pt.v + 0.22 * m.B,
                                w - (m.dome_top["left"] - 0.1 * m.L), 0.36 * m.A, 0.45 * m.B, 0.09 * m.L)
            stomach = abdomen & (st < 0) & (dia > 6.0)
            _put(hu, stomach, HU["stomach"])
            _put(hu, stomach & self.stomach_gas, HU["air"])
            _put(lab, abdomen, _L["abdomen"])
        thorax = inside & (dia <= 0)
        if not thorax.any():
            return
        med_d = m.mediastinum(Pt, w)
        med = thorax & (med_d < 0)
        _put(hu, med, HU["fat"])
        if abs(w - m.heart_c[2]) < m.heart_r[2]:
            _put(hu, med & (m.heart(Pt.u, Pt.v, w) < 0), HU["blood"])
        _put(lab, med, _L["mediastinum"])
        common = np.maximum(np.maximum(wall, -med_d), np.maximum(self.spine_t, dia))
        tex = self.tex_grav + m.texture.combine(Pt.texture, w)
        for side in ("right", "left"):
            cav = m.cavity(Pt, w, side, common=common)
            incav = cav < 0
            if side in m.ptx_sides:
                lungf = cav + m.rim_mm(Pt, w, side)
                h = np.maximum(cav, -lungf)
                self.h[side][k] = h
                lung = incav & (lungf < 0)
                np.copyto(hu, tex + np.float32(m.collapse_hu), where=lung)
                ptx = h < 0
                _put(hu, ptx, HU["air"])
                _put(lab, ptx, _L["pneumothorax"])
            else:
                lung = incav
                np.copyto(hu, tex, where=lung)
            _put(lab, lung, _L[f"{side}_lung"])


# ---------------------------------------------------------------------------- tubes


def _segments_tree(m: _Model, side: str, root, n_leaves: int, rng, r_root: float):
    """A vessel tree from ``root`` filling one (uncollapsed) lung: list of (p0, p1, r0, r1).

    Leaves are random points inside the lung; the tree splits them in halves
    along their longest spread, so branches fan out to fill the lung.
    """
    sgn = 1.0 if side == "left" else -1.0
    pts = []
    while sum(len(p) for p in pts) < n_leaves:
        n = 4 * n_leaves
        cand = np.stack([m.xm + sgn * rng.uniform(0, m.A, n), rng.uniform(-m.B, m.B, n),
                         rng.uniform(0, m.L, n)], axis=1)
        ok = m.cavity_at(cand[:, 0], cand[:, 1], cand[:, 2], side) < -5.0
        pts.append(cand[ok])
    pts = np.concatenate(pts)[:n_leaves]
    segs = []
    stack = [(np.asarray(root, float), pts)]
    r_of = lambda n: r_root * (n / n_leaves) ** (1 / 2.6)  # noqa: E731
    while stack:
        start, p = stack.pop()
        n = len(p)
        if n == 1:
            segs.append((start, p[0], r_of(1) * 1.1, r_of(1) * 0.5))
            continue
        c = p.mean(axis=0)
        end = start + rng.uniform(0.35, 0.55) * (c - start)
        segs.append((start, end, r_of(n), r_of(n) * 0.93))
        d = p - c
        _, _, vt = np.linalg.svd(d, full_matrices=False)
        order = np.argsort(d @ vt[0])
        cut = int(np.clip(round(n * rng.uniform(0.35, 0.65)), 1, n - 1))
        stack.append((end, p[order[:cut]]))
        stack.append((end, p[order[cut:]]))
    return segs


def _paint_tubes(m: _Model, grid: _Grid, hu, labels):
    """Great vessels, airways, pulmonary vessel trees and bronchi, as tapered tubes in 3-D."""
    rng = np.random.default_rng([m.seed, 44])
    med = (_L["mediastinum"],)
    for name, a, b, ra, rb, _, value in m.tubes:
        _tube(grid, hu, labels, a, b, ra, rb, value, med, None, soft=False)
    for a, b, ra, rb in m.airways:
        _tube(grid, hu, labels, a, b, ra, rb, HU["air"], med, _L["airway"], soft=False)
    for side in ("right", "left"):
        sgn = 1.0 if side == "left" else -1.0
        lab = (_L[f"{side}_lung"],)
        h = m.hila[side]
        art = _segments_tree(m, side, h + [sgn * 2.0, -8.0, 0.0], 320, rng, rng.uniform(6.5, 8.0))
        vein = _segments_tree(m, side, h + [sgn * 2.0, -2.0, -0.08 * m.L], 260, rng, rng.uniform(6.0, 7.5))
        for p0, p1, r0, r1 in art + vein:
            _tube(grid, hu, labels, p0, p1, r0, r1, HU["vessel"], lab, None, soft=True)
        # Bronchi run beside the larger arteries: dark lumen, thin bright wall.
        for p0, p1, r0, r1 in art:
            if r0 < 2.2:
                continue
            off = np.cross(p1 - p0, [0.0, 0.0, 1.0])
            nrm = np.linalg.norm(off)
            if nrm < 1e-6:
                continue
            off = off / nrm * (1.9 * r0 + 1.0)
            ra, rb = 0.85 * r0, 0.85 * r1
            _tube(grid, hu, labels, p0 + off, p1 + off, ra + 1.0, rb + 0.8, 0.0, lab, None, soft=True)
            _tube(grid, hu, labels, p0 + off, p1 + off, ra, rb, -960.0, lab + (_L["airway"],),
                  _L["airway"], soft=False)


def _tube(grid: _Grid, hu, labels, p0, p1, r0, r1, value, allowed, new_label, soft):
    """Paint a tapered tube from ``p0`` (radius ``r0``) to ``p1`` (anatomy mm) where labels allow.

    Long tubes are cut into pieces so each is painted in a small bounding box.
    ``soft`` blends the edge over a pixel (partial volume of thin vessels).
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    pieces = max(1, int(np.ceil(length / max(12.0, 4.0 * max(r0, r1)))))
    for n in range(pieces):
        t0, t1 = n / pieces, (n + 1) / pieces
        _tube_piece(grid, hu, labels, p0 + t0 * (p1 - p0), p0 + t1 * (p1 - p0),
                    r0 + t0 * (r1 - r0), r0 + t1 * (r1 - r0), value, allowed, new_label, soft)


def _tube_piece(grid: _Grid, hu, labels, a, b, ra, rb, value, allowed, new_label, soft):
    nz, ny, nx = grid.shape
    r = max(ra, rb) + 1.0
    ia, ib = grid.index(*a), grid.index(*b)
    pad = np.array([r / grid.spacing[0], r * grid.s / grid.spacing[1], r * grid.s / grid.spacing[2]])
    lo = np.maximum(np.floor(np.minimum(ia, ib) - pad).astype(int), 0)
    hi = np.minimum(np.ceil(np.maximum(ia, ib) + pad).astype(int) + 1, [nz, ny, nx])
    if np.any(hi <= lo):
        return
    sl = tuple(slice(l0, h0) for l0, h0 in zip(lo, hi))
    lab = labels[sl]
    ok = np.isin(lab, allowed)
    if not ok.any():
        return
    w = grid.w(np.arange(lo[0], hi[0])).astype(np.float32)[:, None, None]
    v = grid.v(np.arange(lo[1], hi[1])).astype(np.float32)[None, :, None]
    u = grid.u(np.arange(lo[2], hi[2])).astype(np.float32)[None, None, :]
    d = _segment_sdf(u, v, w, tuple(map(float, a)), tuple(map(float, b)), float(ra), float(rb))
    sub = hu[sl]
    if soft:
        alpha = np.clip(0.5 - d * (grid.s / grid.spacing[2]), 0.0, 1.0)
        hit = (alpha > 0) & ok
        cur = sub[hit]
        blended = cur + alpha[hit] * (value - cur)
        # Bright tubes never darken what is there (crossing vessels); dark ones blend in.
        sub[hit] = np.maximum(cur, blended) if value > HU["lung"] else blended
        if new_label is not None:
            lab[hit & (alpha > 0.5)] = new_label
    else:
        hit = (d < 0) & ok
        sub[hit] = value
        if new_label is not None:
            lab[hit] = new_label


# ------------------------------------------------------------------ continuous volume


def _continuous_volume_ml(m: _Model, grid: _Grid, truth, band, left_cols, sub=(4, 2, 2)):
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


# ------------------------------------------------------------------------ writing


def write_phantom_case(phantom: Phantom, folder: Union[str, os.PathLike], *, overwrite: bool = False,
                       progress=None, cancel=None) -> Path:
    """Write ``folder/ct/`` (DICOM series), ``folder/truth.nrrd`` (mask) and ``folder/info.json``.

    The NRRD carries the CT's LPS geometry, so 3D Slicer overlays it on the
    DICOM. All or nothing: the case appears only when completely written.
    """
    from .ct.write import atomic_folder, write_dicom_series
    from .io.masks import write_mask

    folder = Path(folder)
    info = phantom.info
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        write_dicom_series(phantom.ct, tmp / "ct", series_description="Pneumothorax phantom",
                           patient_id=f"PHANTOM-{info['seed']}",
                           patient_name=f"Phantom^{info['side']} {info['size']}",
                           progress=progress, cancel=cancel)
        write_mask(phantom.truth, tmp / "truth.nrrd", phantom.ct)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return folder


def sample_phantom() -> list[tuple[Any, dict, str]]:
    """napari sample data: a moderate left pneumothorax phantom (60 x 256 x 256) and its truth."""
    ph = make_phantom(seed=0, side="left", size="moderate", n_slices=60,
                      spacing=(5.0, 1.4, 1.4), shape_yx=(256, 256))
    ct = ph.ct
    translate = tuple(float(x) for x in np.asarray(ct.direction) @ np.asarray(ct.origin))
    meta = {"pneumoseg_ct": {**ct.geometry(), "warnings": [], **ct.metadata}, "phantom": ph.info}
    return [
        (ct.hu, {"name": "Pneumothorax phantom", "scale": ct.spacing, "translate": translate,
                 "contrast_limits": (-1000, 400), "colormap": "gray", "metadata": meta}, "image"),
        (ph.truth, {"name": "Pneumothorax phantom truth", "scale": ct.spacing,
                    "translate": translate, "metadata": {"phantom": ph.info}}, "labels"),
    ]
