"""find_pleural_air: pleural air from the CT alone, with no trained model.

The method, in the patient frame (:mod:`napari_pneumoseg.ct.frame`) and on a grid
averaged over ``step x step`` pixels in-plane (:func:`~napari_pneumoseg.ct.air.coarse_step`):

1. **The scan's air.** The grid is median-filtered in-plane (:data:`MEDIAN_PX`:
   noise falls, edges stay where they are) and the noise of the air around the
   patient is measured on it (:func:`~napari_pneumoseg.ct.noise.measure_air`).
   Air is what lies below ``mean + CORE_SIGMAS * std``
   (at least :data:`CORE_MARGIN_HU` above the mean, never above :data:`CORE_MAX_HU`).
   Aerated lung parenchyma is denser than that; airways, emphysema, bullae, bowel
   gas and pleural air are not.
2. **Where it may be.** The body outline (:func:`~napari_pneumoseg.ct.air.body_mask`,
   cut free of the table) keeps out the air around the patient. The lungs are the
   lung-like air components inside it (:func:`~napari_pneumoseg.ct.lungs.air_tree`);
   the trachea and main bronchi are grown from the trachea
   (:func:`~napari_pneumoseg.ct.lungs.find_airway`) and taken out with a margin.
   The **thorax** of a slice is the lungs and the air, holes filled: vessels inside
   the lung are inside it, the chest wall and mediastinum are outside.
3. **Which pockets are pleural air.** Each 3-D pocket of air is judged by the
   tissue in a shell :data:`SHELL_MM` around it, in-plane. Pleural air lies between
   the chest wall and the lung, so its shell holds both: chest wall, mediastinum
   or diaphragm (dense tissue outside the thorax) on its parietal side, lung on its
   visceral side. A pocket whose shell is mostly lung (less than
   :data:`WALL_MIN_SHARE` outside the thorax) is inside the lung: a bulla,
   emphysema or a bronchus. A pocket with no lung near it (less than
   :data:`LUNG_MIN_SHARE` of its shell) is outside the pleura: oesophagus, bowel
   or stomach gas, subcutaneous or mediastinal emphysema, airway above the lungs,
   unless it is itself a lung-sized air space of the thorax (a complete collapse).
   Free air is as dark as the air around the patient: a pocket more than
   :data:`HU_EXCESS_MAX` denser on average is emphysema (septa and vessels in it).
   Pockets touching the air around the patient are left out, and so are pockets
   under :data:`MIN_POCKET_ML`.
4. **Its edge at full resolution.** Each kept pocket is grown, slice by slice and
   by at most :data:`GROW_PX` coarse pixels, through voxels more air than tissue:
   below half-way between the air's mean and the brightest voxel within 2 pixels
   (at most :data:`EDGE_TISSUE_HU`). The visceral pleura (a bright line) and the
   chest wall stop it. Thin rims along the wall are then followed (see
   :func:`_trace_slice`), and rim pieces that continue the air of the next slice
   join it.

Pockets it is unsure of (a large pocket inside the lung, a pocket whose shell is
barely outside the thorax, a thin rim, a pneumothorax without lung beside it) are
named in the warnings; those left out are not in the mask.

The ideas follow Cai et al. 2011 (the pleural region from the chest wall, homogeneous
air candidates) and Do et al. 2012 (2-D and 3-D steps to stay fast); the shell test
replaces their rib-cage model and level set.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from scipy import ndimage, special

from ..ct.air import BODY_HU, LUNG_HU, TABLE_OPENING_MM, body_mask, coarse_step
from ..ct.frame import patient_frame
from ..ct.lungs import AIRWAY_MARGIN_MM, MIN_LUNG_ML, _box, _disk, _midline, _split_sides, air_tree, find_airway
from ..ct.noise import RING_MM, measure_air
from ..progress import check_cancel, report

#: The coarse grid is median-filtered in-plane over this many pixels a side before air is told from lung.
MEDIAN_PX = 3
#: Air is below ``mean + CORE_SIGMAS * std`` of the (smoothed) air around the patient ...
CORE_SIGMAS = 4.0
#: ... and that threshold is at least this far above the air's mean (HU) ...
CORE_MARGIN_HU = 40.0
#: ... and never above this (HU): aerated lung is denser.
CORE_MAX_HU = -930.0
#: A voxel at the edge is air where it is below half-way between the air's mean and this (HU).
EDGE_TISSUE_HU = -300.0
#: At full resolution a pocket grows at most this many coarse pixels, in-plane, through voxels below the edge
#: threshold (4-connected: a bright line of 8-connected voxels stops it).
GROW_PX = 1.0
#: Thin rims are followed along the tissue outside the thorax, at most this far from it (mm) ...
RIM_MM = 8.0
#: ... and a rim piece is dropped if more than this share of its border is air-dark voxels past that band.
RIM_CUT_MAX = 0.1
#: ... and its mean must be at least this far (share of the way) from the edge threshold towards air.
RIM_DARK = 0.3
#: A rim piece not joined to a pocket's core must cover at least this much of its slice (mm^2).
RIM_MIN_MM2 = 20.0
#: A rim on its own needs lung around it, within this distance (mm) ...
RIM_LUNG_MM = 3.0
#: ... making up at least this share of that ring (a sliver of lung at the bases has tissue around it).
RIM_LUNG_SHARE = 0.2
#: A rim piece with at least this share of its voxels within 2 pixels of a neighbouring slice's air continues it.
SEED_OVERLAP = 0.6
#: Passes that join rim pieces to the pleural air of the neighbouring slices.
Z_PASSES = 3
#: Holes in the traced air of at most this many pixels are noise and are filled; larger ones (a lung the air
#: surrounds) are not.
HOLE_MAX_PX = 16
#: The shell around a pocket that decides what it is: this far out, in-plane (mm).
SHELL_MM = 3.0
#: A pocket is against the chest wall if at least this share of its shell is outside the thorax.
WALL_MIN_SHARE = 0.2
#: Below this share the pocket is "unsure" (a subpleural bulla, or pleural air?) and a warning says so.
WALL_SURE_SHARE = 0.3
#: A pocket is next to the lung if at least this share of its shell is lung.
LUNG_MIN_SHARE = 0.05
#: A pocket whose shell touches the air around the patient by more than this share is left out.
OUTSIDE_MAX_SHARE = 0.1
#: Free air reads like the air around the patient: a pocket whose darker part (this percentile of its
#: values on the averaged grid; its edges, blurred by partial volume, are the brighter part) ...
HU_PERCENTILE = 25.0
#: ... is more than this many HU above that air's mean is emphysema or lung with septa and vessels in it.
HU_EXCESS_MAX = 20.0
#: Pockets smaller than this (mL) are left out.
MIN_POCKET_ML = 1.0
#: A pocket inside the lung at least this large (mL) is named in the warnings (a bulla?).
BULLA_WARN_ML = 2.0
#: Pleural air of a side whose thickest layer is under this (mm) is a thin rim: a warning says so.
THIN_RIM_MM = 8.0
#: Slices thicker than this (mm) get a warning: partial volume blurs a thin rim.
THICK_SLICE_MM = 5.0

#: At most this many threads work on slices side by side.
MAX_THREADS = 4

SIDES = ("left", "right")


@dataclass
class PleuralAir:
    """What :func:`find_pleural_air` found.

    Attributes
    ----------
    mask : numpy.ndarray
        uint8 ``(z, y, x)`` on the CT's grid: 1 where pleural air was found.
    lungs : numpy.ndarray
        uint8 ``(z, y, x)`` on the CT's grid: the aerated lung it found, 1 on the
        patient's right, 2 on the left (on the coarse grid, repeated to full
        resolution; airways and pleural air left out).
    volume_ml : dict
        ``{"left", "right", "total"}``: pleural air in mL (voxels times voxel volume).
    pockets : list of dict
        Every air pocket it judged, kept or not: ``side``, ``volume_ml`` (coarse),
        ``slices`` (first, last array index along z), ``wall_share``, ``lung_share``, ``outside_share``,
        ``kept`` and ``reason``.
    warnings : list of str
        Where it is unsure, in words.
    facts : dict
        JSON-ready: the air model, thresholds, grid step, timing and counts.
    """

    mask: np.ndarray
    lungs: np.ndarray
    volume_ml: dict
    pockets: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line per side, in words.

        Returns
        -------
        str

        Examples
        --------
        >>> pa = PleuralAir(np.zeros((1, 1, 1), np.uint8), np.zeros((1, 1, 1), np.uint8),
        ...                 {"left": 12.5, "right": 0.0, "total": 12.5})
        >>> print(pa.summary())
        pleural air: left 12.5 mL, right 0.0 mL, total 12.5 mL
        """
        v = self.volume_ml
        return f"pleural air: left {v['left']:.1f} mL, right {v['right']:.1f} mL, total {v['total']:.1f} mL"


def _block_mean(hu: np.ndarray, f: int) -> np.ndarray:
    """Mean of each ``f x f`` in-plane block (float32); a last partial row or column is dropped."""
    nz, ny, nx = hu.shape
    cy, cx = ny // f, nx // f
    out = np.zeros((nz, cy, cx), np.float32)
    for i in range(f):
        for j in range(f):
            out += hu[:, i : i + cy * f : f, j : j + cx * f : f]
    if f > 1:
        out /= f * f
    return out


def _block_max(hu: np.ndarray, f: int) -> np.ndarray:
    """Largest value of each ``f x f`` in-plane block (float32); a last partial row or column is dropped."""
    nz, ny, nx = hu.shape
    cy, cx = ny // f, nx // f
    out = np.full((nz, cy, cx), -np.inf, np.float32)
    for i in range(f):
        for j in range(f):
            np.maximum(out, hu[:, i : i + cy * f : f, j : j + cx * f : f], out=out)
    return out


def _upsample(mask: np.ndarray, f: int, shape_yx) -> np.ndarray:
    """Repeat a coarse mask ``f`` times in-plane and pad it (False) to ``shape_yx``."""
    if f == 1:
        return mask
    up = np.repeat(np.repeat(mask, f, axis=-2), f, axis=-1)
    ny, nx = shape_yx
    pad = [(0, 0)] * (mask.ndim - 2) + [(0, ny - up.shape[-2]), (0, nx - up.shape[-1])]
    return np.pad(up, pad)


def _threads() -> int:
    """Threads for slice-wise work: SciPy's filters release the GIL, so slices run side by side."""
    from ..resources import cpu_budget

    return max(1, min(MAX_THREADS, cpu_budget()))


def _per_slice(fn, ks, cancel=None) -> list:
    """``[fn(k) for k in ks]`` on :func:`_threads` threads, in order; ``cancel`` is checked per slice."""
    def run(k):
        check_cancel(cancel)
        return fn(k)

    ks = list(ks)
    if _threads() == 1 or len(ks) < 2:
        return [run(k) for k in ks]
    with ThreadPoolExecutor(_threads()) as pool:
        return list(pool.map(run, ks))


def _chunks(n: int) -> list[slice]:
    """``n`` slices cut into one run of consecutive slices per thread."""
    bounds = np.linspace(0, n, _threads() + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _denoised(coarse: np.ndarray) -> np.ndarray:
    """The coarse grid median-filtered in-plane (:data:`MEDIAN_PX`): noise down, edges kept in place."""
    out = np.empty_like(coarse)

    def one(sl):
        out[sl] = ndimage.median_filter(coarse[sl], size=(1, MEDIAN_PX, MEDIAN_PX), mode="nearest")

    _per_slice(one, _chunks(coarse.shape[0]))
    return out


def _pocket_stats(lab: np.ndarray, n: int, thorax: np.ndarray, lung: np.ndarray, body: np.ndarray,
                  radius_px: float, coarse: np.ndarray, min_voxels: int, cancel=None) -> list[dict]:
    """Per pocket: voxels, slice range and what its in-plane shell holds."""
    disk = _disk(radius_px + 1.0)
    st = np.zeros((3,) + disk.shape, bool)
    st[1] = disk
    ring1 = np.zeros((3, 3, 3), bool)
    ring1[1] = True
    pad = disk.shape[0] // 2
    out = []
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        if counts[i] < min_voxels:  # too small to count: judged by its size alone
            out.append({"label": i, "voxels": int(counts[i]), "slices": (int(sl[0].start), int(sl[0].stop - 1)),
                        "x_mean": 0.5 * (sl[2].start + sl[2].stop - 1), "small": True})
            continue
        check_cancel(cancel)
        box = (sl[0], slice(max(0, sl[1].start - pad), sl[1].stop + pad), slice(max(0, sl[2].start - pad),
                                                                              sl[2].stop + pad))
        p = lab[box] == i
        shell = ndimage.binary_dilation(p, structure=st) & ~ndimage.binary_dilation(p, structure=ring1)
        n_shell = max(int(shell.sum()), 1)
        out.append({
            "label": i, "voxels": int(p.sum()), "slices": (int(sl[0].start), int(sl[0].stop - 1)),
            "wall_share": float((shell & body[box] & ~thorax[box]).sum() / n_shell),
            "lung_share": float((shell & lung[box]).sum() / n_shell),
            "outside_share": float((shell & ~body[box]).sum() / n_shell),
            "x_mean": float(np.nonzero(p)[2].mean() + box[2].start),
            "hu_mean": float(np.percentile(coarse[box][p], HU_PERCENTILE)),
            "hole_share": float(_holes(p).sum() / max(int(p.sum()), 1)),
        })
    return out


def _holes(p: np.ndarray) -> np.ndarray:
    """Per slice, what hole filling adds to a 3-D mask (vessels or septa inside a pocket)."""
    out = np.zeros(p.shape, bool)
    for k in range(p.shape[0]):
        if p[k].any():
            out[k] = ndimage.binary_fill_holes(p[k]) & ~p[k]
    return out


def _fill_specks(m: np.ndarray) -> np.ndarray:
    """Fill holes of at most :data:`HOLE_MAX_PX` pixels (noise inside the air), not the lung it may surround."""
    holes = ndimage.binary_fill_holes(m) & ~m
    if not holes.any():
        return m
    lab, n = ndimage.label(holes)
    size = np.bincount(lab.ravel(), minlength=n + 1)
    fill = size <= HOLE_MAX_PX
    fill[0] = False
    return m | fill[lab]


def _trace_slice(hu_k: np.ndarray, core_c: np.ndarray, body_c: np.ndarray, margin_c: np.ndarray,
                 band_c: np.ndarray, f: int, t_edge: float, t_rim: float, min_rim_px: int,
                 spacing_yx) -> tuple[np.ndarray, int, Optional[np.ndarray]]:
    """Pleural air of one slice at full resolution, from its coarse core.

    Returns the slice's pleural air, how many rim voxels were added, and the rim
    pieces left out that a neighbouring slice's air may still join (None if none).

    The core grows by :data:`GROW_PX` coarse pixels through voxels below ``t_edge``
    (its partial-volume edge). Then thin rims: 4-connected pieces of voxels below
    ``t_edge`` in ``band_c`` (within :data:`RIM_MM` of the tissue outside the thorax:
    chest wall, mediastinum, diaphragm). A piece is kept only if tissue, not the band's
    limit, bounds it (at most :data:`RIM_CUT_MAX` of its border is air-dark voxels left
    outside the band), so lung touching the wall with no visceral pleura between is not
    taken. A piece not joined to a core must also be at least ``min_rim_px`` voxels,
    darker than ``t_rim`` on average, and have lung (not only tissue) within
    :data:`RIM_LUNG_MM` around it: at least :data:`RIM_LUNG_SHARE` of that ring.
    Pieces bounded by tissue and dark enough but left out are returned as pending:
    :func:`_join_pending` adds those that continue a neighbouring slice's air.
    """
    ny, nx = hu_k.shape
    body = _upsample(body_c, f, (ny, nx))
    # Half-way between air and what lies beside it: the brightest voxel within 2 pixels, but no
    # brighter than EDGE_TISSUE_HU. Next to the visceral pleura or the wall that is t_edge; next to
    # lung with no pleura showing it is nearer the air, so the lung's edge is not taken.
    low = (hu_k < t_edge) & body
    if margin_c.any():
        low &= ~_upsample(margin_c, f, (ny, nx))
    got = np.zeros((ny, nx), bool)
    if core_c.any():
        air_mean = 2.0 * t_edge - EDGE_TISSUE_HU
        beside = np.minimum(ndimage.maximum_filter(hu_k, size=5), EDGE_TISSUE_HU)
        edge_low = low & (hu_k < 0.5 * (air_mean + beside))
        core = _upsample(core_c, f, (ny, nx)) & body
        near = ndimage.binary_dilation(core, structure=_disk(GROW_PX * f)) & (edge_low | core)
        lab, _ = ndimage.label(near)
        ids = np.unique(lab[core])
        got = np.isin(lab, ids[ids > 0])
    band = _upsample(band_c, f, (ny, nx))
    cand = (low & band) | got
    plab, n = ndimage.label(cand & ~got)
    added, pending = 0, None
    if n:
        extra = plab > 0
        reach = cand
        border = ndimage.binary_dilation(extra) & ~reach
        cut = border & low  # air-dark voxels past the band: the band, not tissue, stopped the piece there
        idx = np.arange(1, n + 1)
        touch = ndimage.grey_dilation(plab, size=(3, 3)) * border
        n_border = ndimage.sum_labels(border, touch, idx)
        n_cut = ndimage.sum_labels(cut, touch, idx)
        size = ndimage.sum_labels(extra, plab, idx)
        mean = ndimage.mean(hu_k, plab, idx)
        joined = ndimage.sum_labels(ndimage.binary_dilation(got), plab, idx) > 0 if got.any() else np.zeros(n, bool)
        cut_ok = n_cut <= RIM_CUT_MAX * np.maximum(n_border, 1)
        ok = np.zeros(n + 1, bool)
        ok[1:] = cut_ok & joined
        # A rim on its own lies against the lung, across its visceral pleura: lung within a few pixels.
        # A sliver of lung itself (at the bases, between the diaphragm and the wall) has tissue around it.
        disk = _disk(max(2.0, RIM_LUNG_MM / min(spacing_yx)))
        pad = disk.shape[0]
        objects = ndimage.find_objects(plab)
        for i in np.flatnonzero(cut_ok & ~joined & (size >= min_rim_px) & (mean < t_rim)) + 1:
            sl = objects[i - 1]
            box = tuple(slice(max(0, a.start - pad), a.stop + pad) for a in sl)
            piece = plab[box] == i
            ring = ndimage.binary_dilation(piece, structure=disk) & ~piece & ~got[box]
            h = hu_k[box]
            lungish = ring & (h > LUNG_HU[0]) & (h < t_edge)
            ok[i] = lungish.sum() >= RIM_LUNG_SHARE * max(int(ring.sum()), 1)
        keep = ok[plab]
        added = int(keep.sum())
        left = np.zeros(n + 1, bool)
        left[1:] = cut_ok & ~ok[1:] & (mean < t_rim)
        if left.any():
            pending = left[plab]
        got |= keep
    return _fill_specks(got) & body, added, pending


def _join_pending(pending: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The pending rim pieces of a slice that continue the air of its neighbours: pieces with at
    least :data:`SEED_OVERLAP` of their voxels within 2 pixels of ``seed``."""
    lab, n = ndimage.label(pending)
    if not n or not seed.any():
        return np.zeros(pending.shape, bool)
    idx = np.arange(1, n + 1)
    near = ndimage.binary_dilation(seed, structure=_disk(2.0))
    ok = np.zeros(n + 1, bool)
    ok[1:] = ndimage.sum_labels(near, lab, idx) >= SEED_OVERLAP * ndimage.sum_labels(pending, lab, idx)
    return ok[lab]


def _check(ct) -> None:
    hu = getattr(ct, "hu", None)
    if hu is None or np.ndim(hu) != 3:
        raise ValueError(f"ct must be a 3-D CTVolume (z, y, x), got {type(ct).__name__} with shape "
                         f"{None if hu is None else np.shape(hu)}")
    if min(np.shape(hu)) < 2:
        raise ValueError(f"the CT of shape {np.shape(hu)} is too small to hold lungs")


def find_pleural_air(ct, *, progress=None, cancel=None) -> PleuralAir:
    """Find pleural air (a pneumothorax) in a chest CT from its HU alone: no model, no TensorFlow.

    See the module notes for the method. It needs NumPy and SciPy only, so it can
    run in napari's own worker thread.

    Parameters
    ----------
    ct : CTVolume
        An axial chest CT in HU (``ct.direction`` gives the anatomy; supine or prone).
    progress : callable, optional
        ``progress(done, total, text)`` after each step.
    cancel : callable or threading.Event, optional
        Checked between steps; raises :class:`~napari_pneumoseg.progress.Cancelled`.

    Returns
    -------
    PleuralAir
        An empty mask, with a warning, when the CT holds no lungs.

    Raises
    ------
    ValueError
        If ``ct`` is not a 3-D volume, its slices are not axial, or the patient
        position is decubitus.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so.

    Examples
    --------
    A water phantom has no lungs, so no pleural air:

    >>> from napari_pneumoseg import CTVolume
    >>> pa = find_pleural_air(CTVolume(np.zeros((4, 32, 32)), (5.0, 1.0, 1.0)))
    >>> pa.volume_ml["total"], pa.warnings[0][:28]
    (0.0, 'no lungs found in this CT (l')
    """
    t0 = time.perf_counter()
    _check(ct)
    total, done = 7, 0

    timing: dict[str, float] = {}
    mark = [t0]

    def step(text):
        nonlocal done
        now = time.perf_counter()
        timing[text] = round(now - mark[0], 3)
        mark[0] = now
        check_cancel(cancel)
        done += 1
        report(progress, done, total, text)

    check_cancel(cancel)
    frame = patient_frame(ct)
    src = np.asarray(ct.hu)
    hu = frame.view(src)
    sz, sy, sx = frame.spacing
    nz, ny, nx = hu.shape
    f = coarse_step((ny, nx))
    csp = (sz, sy * f, sx * f)
    voxel_ml = float(ct.voxel_volume_ml)
    coarse_ml = sz * sy * f * sx * f / 1000.0
    warnings: list[str] = []
    mask_src = np.zeros(src.shape, np.uint8)
    lungs_src = np.zeros(src.shape, np.uint8)
    mask, lungs_c = frame.view(mask_src), frame.view(lungs_src)

    coarse = _block_mean(hu, f)
    radius = max(1, int(round(TABLE_OPENING_MM / (min(csp[1], csp[2])))))
    body = np.concatenate(_per_slice(lambda sl: body_mask(coarse[sl], BODY_HU, opening=radius, close_edges=True),
                                     _chunks(nz), cancel))
    step("found the body")

    # Only the body and the ring of air around it (measure_air looks up to RING_MM[1] outside) need it.
    ring_px = int(np.ceil(RING_MM[1] / min(csp[1], csp[2]))) + 2
    by, bx = _box(body.any(axis=0), (ring_px, ring_px)) or (slice(None), slice(None))
    sm = coarse.copy()
    sm[:, by, bx] = _denoised(np.ascontiguousarray(coarse[:, by, bx]))
    air = measure_air(sm, csp)
    if not air.voxels:
        warnings.append("too little air around the patient to measure the scan's noise: nominal air "
                        f"({air.mu:.0f} +/- {air.sigma:.0f} HU) was assumed")
    t_core = float(min(air.mu + max(CORE_SIGMAS * air.sigma, CORE_MARGIN_HU), CORE_MAX_HU))
    t_edge = float(0.5 * (air.mean + EDGE_TISSUE_HU))
    step("measured the air around the patient")

    facts: dict[str, Any] = {
        "method": "pleural-air", "step": f, "median_px": MEDIAN_PX, "air": air.as_dict(),
        "core_threshold_hu": round(t_core, 1), "edge_threshold_hu": round(t_edge, 1),
        "min_pocket_ml": MIN_POCKET_ML, "shell_mm": SHELL_MM, "wall_min_share": WALL_MIN_SHARE,
        "lung_min_share": LUNG_MIN_SHARE, "spacing_mm": [float(v) for v in ct.spacing],
    }
    tree = air_tree(coarse, body)
    if tree.sum() * coarse_ml < MIN_LUNG_ML:
        warnings.insert(0, f"no lungs found in this CT (less than {MIN_LUNG_ML:g} mL of air inside the body): "
                        "no pleural air was looked for; is this a chest CT?")
        facts["seconds"] = round(time.perf_counter() - t0, 2)
        return PleuralAir(mask_src, lungs_src, {"left": 0.0, "right": 0.0, "total": 0.0}, [], warnings, facts)
    airway, carina = find_airway(coarse, tree, body, csp)
    margin = np.zeros(coarse.shape, bool)
    if airway.any():
        disk = _disk(AIRWAY_MARGIN_MM / min(csp[1], csp[2]))
        for k in np.flatnonzero(airway.any(axis=(1, 2))):
            margin[k] = ndimage.binary_dilation(airway[k], structure=disk)
    else:
        warnings.append("no trachea found: airways were not taken out, so air in a main bronchus may be "
                        "counted; check the mask near the hila")
    midline = _midline(airway, carina, body, tree)
    step("found the lungs and airways")

    # A block with any voxel at or above the edge threshold is not air: the visceral pleura (a
    # one-voxel bright line) then still parts pleural air from the lung on the coarse grid.
    cand = body & (sm < t_core) & ~margin & (_block_max(hu, f) < t_edge)
    del sm
    thorax = tree | cand
    def fill(k):
        thorax[k] = ndimage.binary_fill_holes(thorax[k])

    _per_slice(fill, np.flatnonzero(thorax.any(axis=(1, 2))), cancel)
    lung = tree & ~cand & ~margin
    lab, n = ndimage.label(cand)
    stats = _pocket_stats(lab, n, thorax, lung, body, SHELL_MM / min(csp[1], csp[2]), coarse,
                          int(np.ceil(MIN_POCKET_ML / coarse_ml)), cancel)
    step("judged the air pockets")

    # The same percentile of the air around the patient, on the same grid.
    air_low = float(air.mu + air.sigma * special.ndtri(HU_PERCENTILE / 100.0))
    keep = np.zeros(n + 1, bool)
    pockets = []
    big_ml = 0.02 * float(tree.sum()) * coarse_ml
    for s in stats:
        ml = s["voxels"] * coarse_ml
        side = "left" if s["x_mean"] > midline else "right"
        first, last = sorted(frame.source_slice(k, nz) for k in s["slices"])
        if s.get("small") or ml < MIN_POCKET_ML:
            pockets.append({"side": side, "volume_ml": round(ml, 2), "slices": [first, last], "kept": False,
                            "reason": "smaller than the smallest pocket counted"})
            continue
        elif s["outside_share"] > OUTSIDE_MAX_SHARE:
            kept, reason = False, "open to the air around the patient"
        elif s["wall_share"] < WALL_MIN_SHARE:
            kept, reason = False, "enclosed by lung: a bulla, emphysema or a bronchus"
        elif s["hu_mean"] - air_low > HU_EXCESS_MAX:
            kept, reason = False, "denser than the air around the patient: emphysema or lung, not free air"
        elif s["lung_share"] < LUNG_MIN_SHARE and ml < big_ml:
            kept, reason = False, "no lung next to it: outside the pleura (oesophagus, bowel, soft-tissue emphysema)"
        else:
            kept, reason = True, "pleural air"
        keep[s["label"]] = kept
        pockets.append({"side": side, "volume_ml": round(ml, 2), "slices": [first, last],
                        "wall_share": round(s["wall_share"], 3), "lung_share": round(s["lung_share"], 3),
                        "outside_share": round(s["outside_share"], 3), "hu_excess": round(s["hu_mean"] - air_low, 1),
                        "hole_share": round(s["hole_share"], 3), "kept": kept, "reason": reason})
        where = f"{ml:.1f} mL on the {side} (slices {first}-{last})"
        if not kept and reason.startswith("denser") and ml >= BULLA_WARN_ML:
            warnings.append(f"an air pocket of {where} against the chest wall reads "
                            f"{s['hu_mean'] - air_low:.0f} HU denser than the air around the patient and was taken "
                            "for emphysema, not pleural air: check it")
        elif not kept and reason.startswith("enclosed") and ml >= BULLA_WARN_ML:
            warnings.append(f"an air pocket of {where} is enclosed by lung and was taken for a bulla or "
                            "emphysema, not pleural air: check it")
        elif kept and s["wall_share"] < WALL_SURE_SHARE:
            warnings.append(f"an air pocket of {where} barely touches the chest wall: it was counted as pleural "
                            "air but may be a subpleural bulla")
        elif kept and s["lung_share"] < LUNG_MIN_SHARE:
            warnings.append(f"an air pocket of {where} has no aerated lung beside it: a complete collapse, or "
                            "air outside the pleura: check it")
    kept_c = keep[lab]
    del lab
    step("kept the pleural air")

    # The edge at full resolution, slice by slice, and the thin rims along the wall.
    # Rims lie between the chest wall (or mediastinum, diaphragm) and the lung: near both.
    # (A square band, RIM_MM to the side: maximum filters are separable and fast.)
    width = (1, 2 * int(np.ceil(RIM_MM / csp[1])) + 1, 2 * int(np.ceil(RIM_MM / csp[2])) + 1)
    band_all = ndimage.maximum_filter((body & ~thorax).view(np.uint8), size=width).view(bool)
    band_all &= ndimage.maximum_filter(lung.view(np.uint8), size=width).view(bool)
    band_all &= body
    t_rim = float(t_edge + RIM_DARK * (air.mean - t_edge))
    min_rim_px = int(np.ceil(RIM_MIN_MM2 / (sy * sx)))

    def trace(k):
        box = _box(band_all[k] | kept_c[k], (3 + int(np.ceil(GROW_PX)),) * 2)  # never empty here
        cy, cx = box
        fy, fx = slice(cy.start * f, min(ny, cy.stop * f)), slice(cx.start * f, min(nx, cx.stop * f))
        got, rim, left_out = _trace_slice(np.asarray(hu[k, fy, fx]), kept_c[k][box], body[k][box], margin[k][box],
                                          band_all[k][box], f, t_edge, t_rim, min_rim_px, (sy, sx))
        return k, (fy, fx), got, rim, left_out

    todo = np.flatnonzero(band_all.any(axis=(1, 2)) | kept_c.any(axis=(1, 2)))
    rims = 0
    pending: dict[int, tuple] = {}
    for k, crop, got, rim, left_out in _per_slice(trace, todo, cancel):
        mask[k][crop] = got
        rims += rim
        if left_out is not None:
            pending[k] = (crop, left_out)
    # Rims continue from slice to slice: a piece left out that lies where the next slice's air is
    # joins it. Each pass reads the mask as the last pass left it, so threads do not change results.
    changed = mask.any(axis=(1, 2))
    for _ in range(Z_PASSES):
        ks = [k for k in pending if (k > 0 and changed[k - 1]) or (k + 1 < nz and changed[k + 1])]
        if not ks:
            break

        def join(k):
            crop, left_out = pending[k]
            seed = np.zeros(left_out.shape, bool)
            for j in (k - 1, k + 1):
                if 0 <= j < nz:
                    seed |= mask[j][crop] > 0
            return k, _join_pending(left_out, seed)

        results = _per_slice(join, ks, cancel)
        changed = np.zeros(nz, bool)
        for k, add in results:
            if add.any():
                crop, left_out = pending[k]
                mask[k][crop] |= add.astype(np.uint8)
                pending[k] = (crop, left_out & ~add)
                changed[k] = True
                rims += int(add.sum())

    # Rims on their own must add up to a pocket of their own: a speck on one slice is noise. The
    # pieces are found on the coarse grid (a block is in when any of its voxels is) and sized in voxels.
    per_block = _block_mean(mask, f)
    if per_block.any():
        lab, n = ndimage.label(per_block > 0, structure=np.ones((3, 3, 3), bool))
        voxels = np.bincount(lab.ravel(), weights=per_block.ravel(), minlength=n + 1) * (f * f)
        small = voxels * voxel_ml < MIN_POCKET_ML
        small[0] = False
        if small.any():
            objects = ndimage.find_objects(lab)
            for i in np.flatnonzero(small):
                sl = objects[i - 1]
                fsl = (sl[0], slice(sl[1].start * f, sl[1].stop * f), slice(sl[2].start * f, sl[2].stop * f))
                drop = _upsample(lab[sl] == i, f, (fsl[1].stop - fsl[1].start, fsl[2].stop - fsl[2].start))
                mask[fsl][drop[:, : mask[fsl].shape[1], : mask[fsl].shape[2]]] = 0
        del lab
    facts["rim_voxels_followed"] = int(rims)
    step("traced its edges")

    lung_side = _split_sides(lung & ~kept_c, midline, coarse_ml)
    code = lung_side["right"].astype(np.uint8) + 2 * (lung_side["left"] & ~lung_side["right"]).astype(np.uint8)
    lungs_c[...] = _upsample(code, f, (ny, nx))
    volume, thick = {}, {}
    xs = np.arange(nx)
    left_half = xs > (midline * f + (f - 1) / 2.0)
    per_column = np.count_nonzero(mask, axis=(0, 1))
    slice_columns = mask.any(axis=1)
    for s in SIDES:
        volume[s] = float(per_column[left_half if s == "left" else ~left_half].sum()) * voxel_ml
    volume["total"] = float(per_column.sum()) * voxel_ml
    for s in SIDES:
        if volume[s] <= 0:
            continue
        half = left_half if s == "left" else ~left_half
        ks = np.flatnonzero(slice_columns[:, half].any(axis=1))

        def deepest(k, half=half):
            m = mask[k][:, half]
            by, bx = _box(m, (1, 1))  # k holds air on this side
            return 2.0 * float(ndimage.distance_transform_edt(m[by, bx], sampling=(sy, sx)).max())

        depth = max(_per_slice(deepest, ks, cancel), default=0.0)
        thick[s] = round(depth, 2)
        if depth < THIN_RIM_MM:
            warnings.append(f"the pleural air on the {s} ({volume[s]:.1f} mL) is a thin rim, at most "
                            f"{depth:.1f} mm thick: partial volume makes its edge and volume uncertain")
    if sz > THICK_SLICE_MM and volume["total"] > 0:
        warnings.append(f"slices are {sz:g} mm thick: a thin rim is blurred into its neighbours, so its volume "
                        "is less certain than on thin slices")
    facts.update({
        "midline_x_index": float(midline * f + (f - 1) / 2.0), "carina_slice": None if carina is None else int(carina),
        "airway_found": bool(airway.any()), "pockets_judged": len(pockets),
        "pockets_kept": int(sum(p["kept"] for p in pockets)), "max_rim_depth_mm": thick,
        "seconds": round(time.perf_counter() - t0, 2), "seconds_by_step": timing,
    })
    step("measured it")
    return PleuralAir(mask=mask_src, lungs=lungs_src, volume_ml=volume, pockets=pockets, warnings=warnings,
                      facts=facts)
