"""Painting the phantom slice by slice: body wall, bones, abdomen, mediastinum, lungs, pleural air.

The painter writes HU and tissue labels (:data:`LABELS`) of one axial slice
at a time from the implicit :class:`Model`; what depends on (u, v) only (the
table, spine, angles around the body, textures) is computed once in
``__init__``. Tubes (vessels, airways) are painted afterwards, in 3-D
(:mod:`._tubes`).
"""

from __future__ import annotations

import numpy as np

from ._anatomy import Model
from ._grid import Grid
from ._shapes import ellipse_sdf, ellipsoid_sdf, segment_sdf, smoothstep
from ._tissues import HU, LABELS


def _put(arr, mask, value):
    """``arr[mask] = value`` for a scalar value, faster."""
    np.copyto(arr, np.asarray(value, arr.dtype), where=mask)


class SlicePainter:
    """Paints axial slices; (u, v)-only layers are computed once and reused for every slice."""

    def __init__(self, m: Model, grid: Grid, half_w, front):
        self.m, self.grid = m, grid
        _, ny, nx = grid.shape
        # The whole slice: table (fixed), body window, thorax window.
        full = grid.plane(m, slice(0, ny), slice(0, nx))
        depth = full.v - (m.v_back - full.u * full.u / 1400.0)
        table = (depth >= 0) & (depth < m.table_t) & (np.abs(full.u) < 230.0)
        shell = (depth < 2.5) | (depth > m.table_t - 2.5)
        self.base_hu = np.full((ny, nx), HU["air"], np.float32)
        self.base_hu[table] = np.where(shell, HU["table_shell"], HU["table_core"])[table]
        self.base_lab = np.where(table, LABELS["table"], LABELS["outside"]).astype(np.uint8)

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
        trans = segment_sdf(np.abs(u), v, 0.0, (8.0, vc - 1.0, 0.0), (27.0, vc + 9.0, 0.0), 4.5, 3.5) < 0
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
        # The pleural-air function on the thorax window, kept to find the voxels its surface cuts
        # (_continuous_volume.band_voxels).
        shape = (grid.shape[0], Pt.v.shape[0], Pt.u.shape[1])
        self.h = {side: np.full(shape, 1e3, np.float32) for side in m.ptx_sides}

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
        mt = m.musc0 * (0.7 + 0.9 * smoothstep(0.35, 0.6, zn) * pect) + back \
            + (22.0 * smoothstep(0.5, 0.68, zn)) * scap
        inlet = m.inlet(w)
        if inlet > 0:
            mt = mt + inlet * self.shoulder
        inner_m = mt + m.rib_t
        outer = inner_m + self.fat
        body = (wall < outer) & (self.depth < 0)
        _put(hu, body, HU["fat"])
        _put(lab, body, LABELS["soft"])
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
            lab[jj, ii] = LABELS["bone"]
        if 0.6 < zn < 0.97:  # scapulae
            sc = (wall > inner_m - 20.0) & (wall < inner_m - 13.0) & self.scap_zone
            hu[sc] = np.where(np.minimum(wall - inner_m + 20.0, inner_m - 13.0 - wall)[sc] < 1.5,
                              HU["cortex"], HU["marrow"])
            lab[sc] = LABELS["bone"]
        if 0.28 < zn < 0.9:  # sternum, wider at the manubrium
            half = 13.0 + 9.0 * smoothstep(0.75, 0.88, zn)
            st = ellipse_sdf(self.st_u, self.st_v, half, 6.5)
            inb = st < 0
            hs, ls = hu[self.st_win], lab[self.st_win]
            hs[inb] = np.where(st[inb] > -1.5, HU["cortex"], HU["marrow"])
            ls[inb] = LABELS["bone"]

        # Spine: vertebral body (discs between), canal, arch, spinous and transverse processes.
        vz = (w / m.pitch + m.rib_phase + 0.5) % 1.0
        hu[self.vbody] = HU["disc"] if vz < 0.16 else self.vbody_hu
        lab[self.vbody] = LABELS["bone"]
        post = self.post[(0.3 < vz < 0.85, vz > 0.2)]
        hu[post] = HU["cortex"]
        lab[post] = LABELS["bone"]
        hu[self.canal] = HU["csf"]
        lab[self.canal] = LABELS["soft"]

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
            st = ellipsoid_sdf(Pt.u - (m.xm + 0.42 * m.A), Pt.v + 0.22 * m.B,
                                w - (m.dome_top["left"] - 0.1 * m.L), 0.36 * m.A, 0.45 * m.B, 0.09 * m.L)
            stomach = abdomen & (st < 0) & (dia > 6.0)
            _put(hu, stomach, HU["stomach"])
            _put(hu, stomach & self.stomach_gas, HU["air"])
            _put(lab, abdomen, LABELS["abdomen"])
        thorax = inside & (dia <= 0)
        if not thorax.any():
            return
        med_d = m.mediastinum(Pt, w)
        med = thorax & (med_d < 0)
        _put(hu, med, HU["fat"])
        if abs(w - m.heart_c[2]) < m.heart_r[2]:
            _put(hu, med & (m.heart(Pt.u, Pt.v, w) < 0), HU["blood"])
        _put(lab, med, LABELS["mediastinum"])
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
                _put(lab, ptx, LABELS["pneumothorax"])
            else:
                lung = incav
                np.copyto(hu, tex, where=lung)
            _put(lab, lung, LABELS[f"{side}_lung"])

