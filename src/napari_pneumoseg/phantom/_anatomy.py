"""The implicit patient: where the organs are, as signed distance functions in the anatomy frame.

The anatomy lives in its own frame (mm): ``u`` towards patient left, ``v``
towards posterior, ``w`` towards superior, ``w = 0`` at the bottom of the
scanned range and ``w = L`` (the scanned length) at its top. The lungs always
fit the scanned range: the diaphragm domes sit in its lower quarter and the
apices near its top, whatever the number of slices.

:class:`Model` draws one random patient (and its pneumothorax) from a seed;
:class:`Plane` holds what depends on (u, v) only, so it is computed once per
slice window or point set and reused for every height ``w``.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ._shapes import SmoothField, ellipse_sdf, ellipsoid_sdf, py_float, segment_sdf, smoothstep
from ._tissues import HU

# Anterior rim of pleural air (mm) per size; the "floor" sets how far it reaches
# posteriorly (negative: none along the dependent back); collapsed lung gets denser.
_RIM_MM = {"small": (4.5, 7.0), "moderate": (14.0, 19.0), "large": (40.0, 52.0)}
_RIM_FLOOR = {"small": -0.3, "moderate": 0.0, "large": 0.15}
_COLLAPSE_HU = {"small": 10.0, "moderate": 40.0, "large": 90.0}


def _lerp_index(x, n):
    """Lower sample index and weight for linear interpolation at positions ``x`` of ``n`` samples."""
    x = np.clip(np.asarray(x, np.float64), 0.0, n - 1.0)
    i0 = np.minimum(np.floor(x).astype(int), n - 2)
    return i0, (x - i0).astype(np.float32)


class Plane:
    """Quantities that depend on (u, v) only: computed once per grid or point set, reused for every w.

    The painter makes one for a slice window (``u`` a row, ``v`` a column);
    point evaluations make one for their points. Both run the same code.
    """

    def __init__(self, m: Model, u, v):
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


class Model:
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
        self.deform = SmoothField(rng, 4, (1.5, 4.0), (90.0, 220.0))
        self.texture = SmoothField(rng, 5, (4.0, 8.0), (25.0, 90.0))
        self.tubes = self._mediastinal_tubes(rng)
        self.build_mediastinum()
        # The pneumothorax.
        prng = np.random.default_rng([seed, 22])
        self.side, self.size = side, size
        self.ptx_sides = {"left": ["left"], "right": ["right"], "both": ["right", "left"],
                          "none": []}[side]
        self.rim = {s: prng.uniform(*_RIM_MM[size]) for s in ("right", "left")}
        self.rim_floor = _RIM_FLOOR[size]
        self.rim_wobble = SmoothField(prng, 3, (0.04, 0.1), (60.0, 160.0))
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
        return smoothstep(0.68, 1.0, w / self.L)

    def shoulder(self, phi):
        """Extra muscle where the rib cage narrows, so the body outline keeps its width."""
        return 0.3 * self.A * np.sin(phi) ** 2 + 0.12 * self.B * np.cos(phi) ** 2

    def wall(self, P: Plane, w):
        """Signed distance to the inner surface of the chest wall (ribs)."""
        a, b = self.wall_ab(w)
        if np.ndim(a) == 0:
            key = (float(a), float(b))
            if P.cache.get("wall", (None,))[0] != key:
                P.cache["wall"] = (key, ellipse_sdf(P.u, P.v, a, b))
            base = P.cache["wall"][1]
        else:
            base = ellipse_sdf(P.u, P.v, a, b)
        return base + self.deform.combine(P.deform, w)

    def muscle_t(self, phi, w):
        zn = w / self.L
        pect = np.exp(-(((phi - 2.2) / 0.55) ** 2)) * smoothstep(0.35, 0.6, zn)
        scap = np.exp(-(((phi - 0.85) / 0.4) ** 2)) * smoothstep(0.5, 0.68, zn)
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
        return ellipsoid_sdf(cs * du - sn * dv, sn * du + cs * dv, w - cz, a, b, c)

    def _mediastinum_exact(self, u, v, w):
        """Signed distance to the mediastinum: a thin septum, the heart, vessels with their fat."""
        zn = w / self.L
        hw = self.hw[0] + (self.hw[1] - self.hw[0]) * smoothstep(0.5, 0.6, zn)
        d = np.abs(u - self.xm) - hw * (0.3 + 0.7 * smoothstep(-self.B, -0.2 * self.B, v))
        d = np.minimum(d, self.heart(u, v, w) - 3.0)
        for _, a, b, ra, rb, margin, _ in self.tubes:
            d = np.minimum(d, segment_sdf(u, v, w, a, b, ra + margin, rb + margin))
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

    def mediastinum(self, P: Plane, w):
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

    def diaphragm(self, P: Plane, w):
        """Signed distance to the diaphragm, positive below it (height over slope)."""
        h, k = P.dome
        return (h - w) * k

    def apex_cap(self, P: Plane, w, side):
        """Signed distance to the dome of a lung apex (a wide cylinder lower down)."""
        sgn = 1.0 if side == "left" else -1.0
        z0 = 0.45 * self.L
        dz = py_float(np.maximum(w - z0, 0.0))
        if np.ndim(dz) and not dz.any():
            dz = 0.0
        args = (P.u - (self.xm + sgn * 0.5 * self.A), P.v - 0.22 * self.B)
        axes = (0.62 * self.A, 1.28 * self.B, self.apex[side] - z0)
        if np.ndim(dz) == 0 and dz == 0.0:  # below the cap: the same for every w, so cache it
            key = ("apex", side)
            if key not in P.cache:
                P.cache[key] = ellipsoid_sdf(*args, 0.0, *axes)
            return P.cache[key]
        return ellipsoid_sdf(*args, dz, *axes)

    # -- pleural cavities, lungs and the pneumothorax ---------------------------------

    def cavity_common(self, P: Plane, w, wall=None):
        """The part of the pleural cavity definition shared by both sides."""
        c = self.wall(P, w) if wall is None else wall
        c = np.maximum(c, -self.mediastinum(P, w))
        c = np.maximum(c, -P.spine)
        return np.maximum(c, self.diaphragm(P, w))

    def cavity(self, P: Plane, w, side, common=None):
        """Signed distance (about mm) to one pleural cavity; negative inside."""
        if common is None:
            common = self.cavity_common(P, w)
        sgn = 1.0 if side == "left" else -1.0
        c = np.maximum(common, self.apex_cap(P, w, side))
        return np.maximum(c, sgn * (self.xm - P.u))

    def rim_mm(self, P: Plane, w, side):
        """Local thickness of pleural air: largest anteriorly and at the apex (supine)."""
        if side not in self.ptx_sides:
            return 0.0
        api = py_float(np.clip((w / self.L - 0.5) / (self.apex[side] / self.L - 0.5), 0.0, 1.0))
        shape = np.minimum(P.ant_shape + 0.3 * P.lat_ant(side) + 0.9 * api ** 2, 1.3)
        f = self.rim_floor
        r = self.rim[side] * (f + (1 - f) * shape) * (1.0 + self.rim_wobble.combine(P.wobble, w))
        return np.maximum(r, 0.0)

    def pneumothorax_at(self, u, v, w, side):
        """The pleural-air implicit function at points: negative inside (about mm)."""
        P = Plane(self, u, v)
        cav = self.cavity(P, w, side)
        return np.maximum(cav, -(cav + self.rim_mm(P, w, side)))

    def cavity_at(self, u, v, w, side):
        return self.cavity(Plane(self, u, v), w, side)

