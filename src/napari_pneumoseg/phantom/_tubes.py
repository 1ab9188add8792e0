"""Tapered tubes painted in 3-D: great vessels, central airways, pulmonary vessel trees and bronchi."""

from __future__ import annotations

import numpy as np

from ._anatomy import Model
from ._grid import Grid
from ._shapes import segment_sdf
from ._tissues import HU, LABELS


def _segments_tree(m: Model, side: str, root, n_leaves: int, rng, r_root: float):
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


def paint_tubes(m: Model, grid: Grid, hu, labels):
    """Great vessels, airways, pulmonary vessel trees and bronchi, as tapered tubes in 3-D."""
    rng = np.random.default_rng([m.seed, 44])
    med = (LABELS["mediastinum"],)
    for _name, a, b, ra, rb, _, value in m.tubes:
        _tube(grid, hu, labels, a, b, ra, rb, value, med, None, soft=False)
    for a, b, ra, rb in m.airways:
        _tube(grid, hu, labels, a, b, ra, rb, HU["air"], med, LABELS["airway"], soft=False)
    for side in ("right", "left"):
        sgn = 1.0 if side == "left" else -1.0
        lab = (LABELS[f"{side}_lung"],)
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
            _tube(grid, hu, labels, p0 + off, p1 + off, ra, rb, -960.0, lab + (LABELS["airway"],),
                  LABELS["airway"], soft=False)


def _tube(grid: Grid, hu, labels, p0, p1, r0, r1, value, allowed, new_label, soft):
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


def _tube_piece(grid: Grid, hu, labels, a, b, ra, rb, value, allowed, new_label, soft):
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
    d = segment_sdf(u, v, w, tuple(map(float, a)), tuple(map(float, b)), float(ra), float(rb))
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

