"""simulate_pneumothorax: a real chest CT with a pneumothorax of known volume added."""

from __future__ import annotations

import copy
import json
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..ct.air import LUNG_HU
from ..ct.frame import patient_frame
from ..ct.lungs import MIN_LUNG_ML, _count, find_lungs
from ..ct.noise import BLUR_PX, measure_air
from ..ct.volume import CTVolume
from ..progress import check_cancel, report
from ._appearance import blur, edge_band, pleural_line
from ._collapse import Collapse, draw_pattern

SIDES = ("left", "right", "both")
SIZES = ("small", "moderate", "large")

#: Share of the hemithorax (percent) the pleural air is drawn from, per size. Each lies
#: inside the size's clinical band (small 2-10 %, moderate 15-30 %, large 40-60 %) with
#: a margin, so a measurement that is off by a point or two stays in the band.
TARGET_PCT = {"small": (3.0, 9.0), "moderate": (17.0, 28.0), "large": (42.0, 58.0)}
#: The clinical bands themselves.
BAND_PCT = {"small": (2.0, 10.0), "moderate": (15.0, 30.0), "large": (40.0, 60.0)}
#: Compressed lung gets denser up to this (HU, soft tissue); denser voxels stay as they were.
DENSE_CAP_HU = 50.0
#: The visceral pleural line before the blur, drawn per side from this range (HU).
PLEURA_HU = (-150.0, 0.0)
#: Dependent lung gets denser than non-dependent lung: the local volume ratio is the
#: side's overall ratio to the power ``0.6 + 0.8 * d`` (``d`` 0 anterior .. 1 posterior),
#: rescaled so the lung's mass is conserved.
GRAVITY = (0.6, 0.8)
#: The share of air plus aerated lung is kept at least this many points inside the band.
AERATED_MARGIN = 1.5
#: A side is painted at most this many times to bring its air share (after the clean-up of
#: specks and flecks) within FINAL_TOL percentage points of its aim.
ATTEMPTS, FINAL_TOL = 4, 0.3
#: Pieces of pleural air inside the lung, or of lung adrift in the air, smaller than this
#: (mL, and than 1 % of all the air or lung) are merged into what surrounds them.
MIN_PIECE_ML = 0.5
FORMAT_VERSION = 1

_STREAM = {"left": 1, "right": 2}


@dataclass
class SimulatedCase:
    """A real CT with a simulated pneumothorax, its ground truth and the facts about it.

    Attributes
    ----------
    ct : CTVolume
        The new CT: the source's shape, spacing, origin, direction, warnings and
        metadata (copied), new HU in the source's dtype (float CTs stay float;
        integer CTs get the new values rounded). Outside the pleural cavity of the
        chosen side(s) every voxel is the source's.
    truth : numpy.ndarray
        uint8 ``(z, y, x)`` on the CT's grid: 1 where pleural air was simulated
        (not the pleural line, not the lung).
    facts : dict
        Plain JSON-ready data; see :func:`simulate_pneumothorax`.
    """

    ct: CTVolume
    truth: np.ndarray
    facts: dict

    def as_json(self) -> str:
        """The facts as JSON text (``json.dumps(facts, indent=2)``).

        Returns
        -------
        str

        Examples
        --------
        >>> case = SimulatedCase(CTVolume(np.zeros((1, 2, 2)), (1.0, 1.0, 1.0)), np.zeros((1, 2, 2), np.uint8),
        ...                      {"version": 1})
        >>> print(case.as_json())
        {
          "version": 1
        }
        """
        return json.dumps(self.facts, indent=2)


def _check(ct, side, size, seed) -> int:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    hu = getattr(ct, "hu", None)
    if hu is None or np.ndim(hu) != 3:
        raise ValueError(f"ct must be a 3-D CTVolume (z, y, x), got {type(ct).__name__} with shape "
                         f"{None if hu is None else np.shape(hu)}")
    if min(np.shape(hu)) < 2:
        raise ValueError(f"the CT of shape {np.shape(hu)} is too thin to hold lungs: it needs at least 2 "
                         "voxels along each axis")
    return int(seed)


def simulate_pneumothorax(ct: CTVolume, *, side: str = "left", size: str = "moderate", seed: int = 0,
                          progress=None, cancel=None) -> SimulatedCase:
    """Add a pneumothorax of known volume to a real chest CT of a supine (or prone) patient.

    The lungs come from the CT itself: air inside the body, per side, trachea and
    main bronchi excluded; the pleural cavity of a side is its lung with the vessels
    inside it. The lung retracts towards its hilum (each ray from the hilum shrinks
    by its own seeded factor, most towards the non-dependent side and the apex,
    not at all towards the dependent chest wall), its vessels moving with it, and
    gets denser as it is compressed (mass conserved, denser where dependent, up to
    soft tissue). The space it leaves is pleural air with the scan's own noise,
    measured in the air around the patient; a thin visceral pleural line bounds the
    lung, and the new edges are blurred in-plane as the scanner blurs. The collapse
    is chosen by bisection so the air is a target share of the hemithorax drawn
    (seeded) from :data:`TARGET_PCT` for ``size``. Only voxels inside the pleural
    cavity of the chosen side(s) change.

    Sides follow the patient (LPS x), not the array, and "dependent" follows the
    patient position: head-first, feet-first and flipped series give the same
    anatomy-relative result.

    Parameters
    ----------
    ct : CTVolume
        An axial chest CT in HU with aerated lungs (``ct.direction`` gives the
        anatomy). ``ct.metadata["patient_position"]``, when present, must be
        supine (``HFS``, ``FFS``) or prone (``HFP``, ``FFP``: the air then
        collects posteriorly); without it the patient is taken to be supine.
    side : {"left", "right", "both"}, default "left"
        The patient's side(s) with the pneumothorax. With "both", each side has its
        own target; a side's pneumothorax is the same with "both" as alone.
    size : {"small", "moderate", "large"}, default "moderate"
        Target share of the hemithorax: 3-9 %, 17-28 % or 42-58 %, drawn by the seed
        (inside the clinical bands 2-10, 15-30 and 40-60 %).
    seed : int, default 0
        Non-negative. The same CT, side, size and seed give the same case.
    progress : callable, optional
        ``progress(done, total, text)`` after each step.
    cancel : callable or threading.Event, optional
        Checked between steps and during the search; raises
        :class:`~napari_pneumoseg.progress.Cancelled`.

    Returns
    -------
    SimulatedCase
        ``facts`` holds (per side ``"left"``/``"right"``, lists and numbers only):

        - ``volume_ml`` {left, right, total}: truth voxels times ``ct.voxel_volume_ml``;
          ``voxels`` {left, right};
        - ``pct_hemithorax``: ``100 * air / (air + remaining lung)`` of that side,
          where the lung is the cavity's non-air part (with its vessels), None
          without a pneumothorax; ``pct_hemithorax_aerated``: the same with the
          aerated lung (the :data:`~napari_pneumoseg.ct.air.LUNG_HU` window) as
          the lung, which is what :func:`napari_pneumoseg.measure` estimates;
        - ``hemithorax_ml`` (the cavity), ``lung_ml_before``, ``lung_ml_after``,
          ``aerated_lung_ml_before``, ``aerated_lung_ml_after``;
        - ``slices``: first and last slice index (array axis 0) with air, or None;
        - ``max_rim_depth_mm``: twice the largest in-plane Euclidean distance
          (mm, voxel centres) from an air voxel to the nearest non-air voxel, over
          all axial slices: the thickest layer of air; ``max_rim_depth_slice``:
          the slice where it is;
        - ``air_hu``: the air model (``mean``, ``std`` of the air it makes,
          measured around the patient, and the fitted noise);
        - ``parameters``: ``side``, ``size``, ``seed``, ``target_pct``, and per side
          the collapse factor, pattern, hilum (LPS mm), density ratio and pleural HU;
        - ``source``: the series' UIDs, description, position; ``notes``; ``version``.

    Raises
    ------
    ValueError
        If ``side``, ``size`` or ``seed`` is not allowed, ``ct`` is not 3-D, the
        slices are not axial, the patient position is not supine or prone, or no
        lung (at least 100 mL) is found on a requested side.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so.

    Examples
    --------
    A water phantom has no lungs:

    >>> simulate_pneumothorax(CTVolume(np.zeros((4, 32, 32)), (5.0, 1.0, 1.0)))
    Traceback (most recent call last):
    ...
    ValueError: no lungs found in the CT (less than 100 mL of air inside the body): a chest CT ...

    A synthetic chest without a pneumothorax (a real CT from
    :func:`~napari_pneumoseg.read_ct` works the same way, in seconds):

    >>> from napari_pneumoseg.phantom import make_phantom
    >>> ct = make_phantom(seed=0, side="none", n_slices=24, shape_yx=(96, 96)).ct
    >>> case = simulate_pneumothorax(ct, side="left", size="moderate", seed=3)
    >>> 15 <= case.facts["pct_hemithorax"]["left"] <= 30, case.facts["pct_hemithorax"]["right"]
    (True, None)
    >>> case.facts["volume_ml"]["total"] == int(case.truth.sum()) * ct.voxel_volume_ml
    True
    >>> bool((case.ct.hu[case.truth == 0] == ct.hu[case.truth == 0]).mean() > 0.9)
    True
    """
    seed = _check(ct, side, size, seed)
    sides = ["left", "right"] if side == "both" else [side]
    total = 3 + 2 * len(sides)
    done = 0

    def step(text):
        nonlocal done
        check_cancel(cancel)
        done += 1
        report(progress, done, total, text)

    frame = patient_frame(ct)
    src = np.asarray(ct.hu)
    out = src.copy()
    truth = np.zeros(src.shape, np.uint8)
    hu_c, out_c, truth_c = frame.view(src), frame.view(out), frame.view(truth)
    sp = frame.spacing
    voxel_ml = ct.voxel_volume_ml
    check_cancel(cancel)

    lungs = find_lungs(hu_c, sp, cancel=cancel)
    step("found the lungs")
    notes = list(lungs.notes)
    for s in sides:
        n = int(lungs.cavity[s].sum())
        if n * voxel_ml < MIN_LUNG_ML or s not in lungs.hilum:
            raise ValueError(f"no lung found on the patient's {s} (at least {MIN_LUNG_ML:g} mL of aerated lung "
                             f"is needed, found {n * voxel_ml:.0f} mL): choose another side, or check that "
                             "this is a chest CT with its orientation (direction cosines) right")
    air = measure_air(hu_c, sp)
    if not air.voxels:
        notes.append("too little air around the patient to measure its noise: a nominal air model was used")
    step("measured the air around the patient")

    per_side: dict[str, Any] = {}
    params: dict[str, Any] = {"side": side, "size": size, "seed": seed, "target_pct": {}, "band_pct": list(
        BAND_PCT[size]), "collapse": {}, "pattern": {}, "hilum_lps_mm": {}, "volume_ratio": {}, "pleura_hu": {},
        "blur_px": BLUR_PX, "dense_cap_hu": DENSE_CAP_HU, "gravity_exponent": list(GRAVITY)}
    for s in sides:
        rng = np.random.default_rng([seed, _STREAM[s]])
        target = float(rng.uniform(*TARGET_PCT[size]))
        pattern = draw_pattern(rng, size)
        pleura = float(rng.uniform(*PLEURA_HU))
        cav_l = lungs.cavity[s]
        local = _box(cav_l, 2)
        box = tuple(slice(lungs.box[a].start + local[a].start, lungs.box[a].start + local[a].stop) for a in range(3))
        cav = np.ascontiguousarray(cav_l[local])
        hilum = np.asarray(lungs.hilum[s]) - [b.start for b in box]
        col = Collapse(cav, hilum, sp, 1 if s == "left" else -1, pattern)
        hu_box = np.asarray(hu_c[box], dtype=np.float32)
        goal, band = target, BAND_PCT[size]
        for _ in range(ATTEMPTS):
            c, _ = col.solve(goal, cancel=cancel)
            new_box, air_box, info = _paint(hu_box, cav, col, c, air, np.random.default_rng([seed, _STREAM[s], 1]),
                                            pleura, voxel_ml)
            pct = 100.0 * info["air_voxels"] / col.n
            # Counted against aerated lung only (what measure() estimates), the share reads higher
            # than against the whole lung; keep that inside the band too.
            over = info["pct_aerated"] - (band[1] - AERATED_MARGIN)
            if over > 0 and goal > band[0] + 1.0:
                goal = max(band[0] + 1.0, min(goal, pct) - over - 0.25)
            elif abs(pct - goal) <= FINAL_TOL:
                break
            col.force(lung=info["specks"], air=info["flecks"])  # search for what will be painted
        step(f"collapsed the {s} lung")
        region = out_c[box]
        region[cav] = _cast(new_box[cav], out.dtype)
        truth_c[box][air_box] = 1
        params["target_pct"][s] = round(target, 3)
        if goal != target:
            params.setdefault("aimed_pct", {})[s] = round(goal, 3)
            notes.append(f"the {s} side aimed at {goal:.1f} % instead of {target:.1f} % of the hemithorax, so that "
                         "its share of air plus aerated lung stays inside the size's band")
        params["collapse"][s] = round(c, 5)
        params["pattern"][s] = col.pattern.as_dict()
        if abs(pct - goal) > 0.5:
            notes.append(f"the {s} side reached {pct:.1f} % of the hemithorax, not its aim {goal:.1f} %")
        params["hilum_lps_mm"][s] = [round(float(v), 2) for v in ct.index_to_lps(_source_index(frame, lungs.hilum[s],
                                                                                                 src.shape))]
        params["volume_ratio"][s] = round(info["volume_ratio"], 4)
        params["pleura_hu"][s] = round(pleura, 1)
        per_side[s] = {"box": box, "cav": cav, "air": air_box, "new": new_box}
        step(f"painted the {s} pleural air")

    facts = _facts(ct, frame, lungs, per_side, hu_c, air, params, notes, voxel_ml, truth_c)
    step("measured the result")
    new_ct = CTVolume(hu=out, spacing=ct.spacing, origin=ct.origin, direction=np.array(ct.direction, copy=True),
                      warnings=list(ct.warnings), metadata=copy.deepcopy(ct.metadata))
    return SimulatedCase(ct=new_ct, truth=truth, facts=facts)


def _box(mask: np.ndarray, margin: int):
    out = []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        out.append(slice(max(0, int(idx[0]) - margin), min(mask.shape[ax], int(idx[-1]) + 1 + margin)))
    return tuple(out)


def _cast(values: np.ndarray, dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _source_index(frame, index_c, shape) -> np.ndarray:
    """Source array index (z, y, x) of a canonical index."""
    out = np.zeros(3)
    for c_axis, (a, f) in enumerate(zip(frame.perm, frame.flip)):
        out[a] = (shape[a] - 1 - index_c[c_axis]) if f else index_c[c_axis]
    return out


def _specks(cav: np.ndarray, part: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Cavity voxels (in cavity order) of ``part`` in small pieces: under MIN_PIECE_ML and 1 % of it."""
    box = np.zeros(cav.shape, bool)
    box[cav] = part
    lab, n = ndimage.label(box)
    if n <= 1:
        return np.zeros(part.shape, bool)
    counts = _count(lab, n)
    counts[0] = 0
    small = counts < max(MIN_PIECE_ML / voxel_ml, 0.01 * counts.sum())
    small[0] = False
    return small[lab][cav]


def _paint(hu_box: np.ndarray, cav: np.ndarray, col: Collapse, c: float, air, rng, pleura: float, voxel_ml: float):
    """The new HU of a side's box, its pleural air and the density facts."""
    src_idx = col.source(c)
    f = np.clip(col.inside(c), 0.0, 1.0)
    weighted = np.where(cav, hu_box, 0.0).astype(np.float32)
    lung_hu = ndimage.map_coordinates(weighted, src_idx, order=1, mode="nearest", prefilter=False)
    at_source = ndimage.map_coordinates(col.cav, src_idx, order=1, mode="nearest", prefilter=False)
    lung_hu = lung_hu / np.maximum(at_source, 1e-3)  # the lung's own HU, not mixed with what is outside it
    is_air = f < 0.5
    if col.forced_lung is not None:  # what earlier clean-ups decided
        f[col.forced_lung & is_air] = 1.0
        f[col.forced_air] = 0.0
        lung_hu[col.forced_lung & is_air] = hu_box[cav][col.forced_lung & is_air]
        is_air = (is_air & ~col.forced_lung) | col.forced_air
    # Pleural air is one space and the lung one organ: specks of air inside the lung (where
    # the way to the source crosses a hilar vessel, or a strip along the heart) become lung
    # as it was there, and flecks of lung adrift in the air become air.
    specks = _specks(cav, is_air, voxel_ml)
    if specks.any():  # they stay as they were (next to the hilum or the heart, where little moves)
        lung_hu[specks] = hu_box[cav][specks]
        f[specks] = 1.0
        is_air[specks] = False
    flecks = _specks(cav, ~is_air, voxel_ml)
    is_air[flecks] = True
    f[flecks] = 0.0
    lung = ~is_air

    # Density: mass conserved, the dependent lung denser (GRAVITY), capped at soft tissue.
    n_lung = int(lung.sum())
    ratio = col.n / max(n_lung, 1)
    dep_axis = col.idx[1]
    lo, hi = float(dep_axis.min()), float(dep_axis.max())
    d = (dep_axis - lo) / max(hi - lo, 1.0)
    local = ratio ** (GRAVITY[0] + GRAVITY[1] * d)
    old_mass = float(np.clip(hu_box[cav] + 1000.0, 0, None).sum())
    tissue = np.clip(lung_hu + 1000.0, 0, None)
    new_mass = float((tissue * local)[lung].sum())
    if new_mass > 0:
        local = local * (old_mass / new_mass)
    denser = np.minimum(tissue * local - 1000.0, DENSE_CAP_HU)
    lung_new = np.where(lung_hu >= DENSE_CAP_HU, lung_hu, np.maximum(denser, lung_hu))

    noise = air.sample(hu_box.shape, rng)
    val = f * lung_new + (1.0 - f) * noise[cav]
    new_box = hu_box.copy()
    new_box[cav] = val
    air_box = np.zeros(cav.shape, bool)
    air_box[cav] = is_air
    line = pleural_line(cav & ~air_box, air_box)
    new_box[line] = np.maximum(new_box[line], pleura)
    band = edge_band(air_box) & cav
    blurred = blur(new_box)
    new_box[band] = blurred[band]
    n_air = int(is_air.sum())
    aerated = int(((new_box > LUNG_HU[0]) & (new_box < LUNG_HU[1]) & cav & ~air_box).sum())
    return new_box, air_box, {"volume_ratio": ratio, "air_voxels": n_air, "specks": specks, "flecks": flecks,
                              "pct_aerated": 100.0 * n_air / max(n_air + aerated, 1)}


def _rim(air: np.ndarray, spacing) -> tuple[float, int]:
    """Twice the largest in-plane distance (mm) from an air voxel to non-air, and its slice."""
    best, where = 0.0, -1
    for k in np.flatnonzero(air.any(axis=(1, 2))):
        dt = ndimage.distance_transform_edt(air[k], sampling=(spacing[1], spacing[2]))
        m = float(dt.max())
        if m > best:
            best, where = m, int(k)
    return 2.0 * best, where


def _facts(ct, frame, lungs, per_side, hu_c, air, params, notes, voxel_ml, truth_c) -> dict:
    nz = hu_c.shape[0]
    volume, voxels, pct, pct_aer = {}, {}, {}, {}
    hemi, before, after, aer_before, aer_after = {}, {}, {}, {}, {}
    slices, rim, rim_slice = {}, {}, {}
    for s in ("left", "right"):
        cav_full = lungs.cavity[s]
        n_cav = int(cav_full.sum())
        win_before = int(((hu_c[lungs.box] > LUNG_HU[0]) & (hu_c[lungs.box] < LUNG_HU[1]) & cav_full).sum())
        hemi[s] = n_cav * voxel_ml
        before[s] = n_cav * voxel_ml
        aer_before[s] = win_before * voxel_ml
        if s in per_side:
            d = per_side[s]
            a, cav, new = d["air"], d["cav"], d["new"]
            n_air = int(a.sum())
            win_after = int(((new > LUNG_HU[0]) & (new < LUNG_HU[1]) & cav & ~a).sum())
            # Window voxels of the cavity outside this side's box are none (the box holds the cavity).
            voxels[s] = n_air
            volume[s] = n_air * voxel_ml
            after[s] = (n_cav - n_air) * voxel_ml
            aer_after[s] = win_after * voxel_ml
            pct[s] = 100.0 * n_air / n_cav if n_air else None
            pct_aer[s] = 100.0 * n_air / (n_air + win_after) if n_air else None
            ks = np.flatnonzero(a.any(axis=(1, 2)))
            if ks.size:
                k0, k1 = d["box"][0].start + int(ks[0]), d["box"][0].start + int(ks[-1])
                src = sorted((frame.source_slice(k0, nz), frame.source_slice(k1, nz)))
                slices[s] = src
                depth, kr = _rim(a, frame.spacing)
                rim[s] = round(depth, 2)
                rim_slice[s] = frame.source_slice(d["box"][0].start + kr, nz)
            else:
                slices[s], rim[s], rim_slice[s] = None, 0.0, None
        else:
            voxels[s], volume[s], pct[s], pct_aer[s] = 0, 0.0, None, None
            after[s], aer_after[s] = before[s], aer_before[s]
            slices[s], rim[s], rim_slice[s] = None, 0.0, None
    total_voxels = int(np.count_nonzero(truth_c))
    meta = ct.metadata or {}
    source = {k: meta.get(k) for k in ("series_instance_uid", "study_instance_uid", "series_description",
                                       "patient_position", "manufacturer") if meta.get(k) is not None}
    source.update({"shape": [int(v) for v in ct.shape], "spacing_mm": [float(v) for v in ct.spacing]})

    def r(x):
        return None if x is None else round(float(x), 3)

    return {
        "volume_ml": {"left": volume["left"], "right": volume["right"], "total": total_voxels * voxel_ml},
        "voxels": voxels,
        "voxel_ml": voxel_ml,
        "pct_hemithorax": {s: r(pct[s]) for s in ("left", "right")},
        "pct_hemithorax_aerated": {s: r(pct_aer[s]) for s in ("left", "right")},
        "hemithorax_ml": {s: r(hemi[s]) for s in ("left", "right")},
        "lung_ml_before": {s: r(before[s]) for s in ("left", "right")},
        "lung_ml_after": {s: r(after[s]) for s in ("left", "right")},
        "aerated_lung_ml_before": {s: r(aer_before[s]) for s in ("left", "right")},
        "aerated_lung_ml_after": {s: r(aer_after[s]) for s in ("left", "right")},
        "slices": slices,
        "max_rim_depth_mm": rim,
        "max_rim_depth_slice": rim_slice,
        "air_hu": air.as_dict(),
        "parameters": params,
        "source": source,
        "notes": notes,
        "version": FORMAT_VERSION,
    }
