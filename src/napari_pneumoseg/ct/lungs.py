"""The lungs of each side, found from HU: the air of the chest minus the trachea and main bronchi.

All arrays here are in the canonical frame of :mod:`._frame`: axis 0 superior,
axis 1 dependent (posterior when supine), axis 2 the patient's left.

1. The **body** is :func:`~napari_pneumoseg.ct.air.body_mask` after a small
   opening that frees it from the table.
2. The **air tree** is the air inside it (below :data:`~napari_pneumoseg.ct.air.BODY_HU`)
   in 3-D components that are lung-like: at least :data:`LUNG_SHARE` of the largest
   one and reaching above its centre (so bowel and stomach gas are left out).
3. The **airway** is grown from the trachea, found as a small midline air tube in
   the top slices of the air tree, slice by slice downwards through lumen air
   (below :data:`AIRWAY_HU`), each piece no larger than :data:`AIRWAY_MAX_SHARE`
   times the trachea (so it does not leak into the lung), down to
   :data:`MAIN_BRONCHUS_MM` below the carina. It is removed with a margin of
   :data:`AIRWAY_MARGIN_MM`.
4. The remaining air splits into the **lungs** by connected components; where
   the two lungs touch, the mid-sagittal plane splits them.
5. The **pleural cavity** of a side is its lung, closed and hole-filled in each
   slice (vessels and nodules inside the lung belong to it), without the airway
   margin, the other lung or anything outside the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from ..progress import check_cancel
from .air import BODY_HU, TABLE_OPENING_MM, body_mask

_PLANE4 = np.zeros((3, 3, 3), bool)
_PLANE4[1] = ndimage.generate_binary_structure(2, 1)

#: Airway lumen is below this (HU); the trachea and main bronchi are grown through it.
AIRWAY_HU = -900.0
#: A lung-like air component has at least this share of the largest one's voxels.
LUNG_SHARE = 0.15
#: Trachea seeds: a piece of lumen air of this area (mm^2) ...
TRACHEA_AREA_MM2 = (80.0, 700.0)
#: ... whose centre is at most this far (mm) from the body's centre, left-right.
TRACHEA_MIDLINE_MM = 30.0
#: A grown airway piece may be at most this many times the trachea's area (and at
#: least :data:`AIRWAY_MIN_MAX_MM2`); a larger one is lung the lumen leaked into.
AIRWAY_MAX_SHARE = 2.5
AIRWAY_MIN_MAX_MM2 = 300.0
#: At most this many airway pieces per slice (main, lobar bronchi); smaller specks are lung.
AIRWAY_MAX_PIECES = 4
#: The airway is grown down to this far below the carina (mm): the main bronchi.
MAIN_BRONCHUS_MM = 40.0
#: A main bronchus lies at least this far (mm) to its side of the carina's centre.
HILUM_LATERAL_MM = 8.0
#: Margin (mm, in-plane) removed around the airway lumen: its wall and partial volume.
AIRWAY_MARGIN_MM = 2.5
#: Radius (mm) of the in-plane closing that puts vessels at the lung's edge into the cavity.
CLOSING_MM = 3.0
#: A side needs at least this much lung (mL) to take a pneumothorax.
MIN_LUNG_ML = 100.0


@dataclass
class Lungs:
    """What :func:`find_lungs` found (canonical frame, full resolution).

    The masks cover ``box`` of the canonical volume (the body's bounding box);
    indices (``hilum``, ``midline_x``, ``carina_z``) are of the whole volume.

    Attributes
    ----------
    box : tuple of slice
        Where the masks lie in the canonical volume.
    shape : tuple of int
        Shape of the canonical volume.
    body : ndarray of bool
        The body outline.
    airway : ndarray of bool
        Trachea and main bronchi lumen (before the margin).
    lung : dict of str to ndarray of bool
        Aerated lung of ``"left"`` and ``"right"`` (air below :data:`BODY_HU`, no airway).
    cavity : dict of str to ndarray of bool
        The pleural cavity of each side (lung with its vessels, filled).
    hilum : dict of str to tuple of float
        Index (z, y, x) of each side's hilum: the lower end of its main bronchus.
    midline_x : float
        Canonical x index of the mid-sagittal plane (the trachea's centre, else the body's).
    carina_z : float or None
        Slice index of the carina, if the airway was found.
    notes : list of str
        What had to be assumed.
    """

    box: tuple
    shape: tuple
    body: np.ndarray
    airway: np.ndarray
    lung: dict
    cavity: dict
    hilum: dict
    midline_x: float
    carina_z: Optional[float] = None
    notes: list = field(default_factory=list)

    def full(self, mask: np.ndarray) -> np.ndarray:
        """One of the masks pasted into a volume of the canonical shape."""
        out = np.zeros(self.shape, bool)
        out[self.box] = mask
        return out


def _count(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels per label 0..n (``np.bincount`` of intp: on int32 labels it is many times slower)."""
    return np.bincount(labels.ravel().astype(np.intp), minlength=n + 1)


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(np.ceil(radius_px)))
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= radius_px * radius_px + 0.5


def _box(mask: np.ndarray, margin=(0, 0, 0)):
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels per axis, or None."""
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        if not idx.size:
            return None
        out.append(slice(max(0, int(idx[0]) - margin[ax]), min(mask.shape[ax], int(idx[-1]) + 1 + margin[ax])))
    return tuple(out)


def air_tree(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The lungs and airways: lung-like 3-D components of the air inside the body.

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT (canonical frame: axis 0 superior).
    body : ndarray of bool
        The body outline.

    Returns
    -------
    ndarray of bool
        Air (below :data:`BODY_HU`) in components of at least :data:`LUNG_SHARE` of the
        largest one that reach above the largest one's centre. All False if there is none.

    Examples
    --------
    >>> hu = np.full((10, 20, 20), 40.0)
    >>> hu[2:9, 3:9, 3:9] = -850.0      # a lung
    >>> hu[0:2, 14:17, 14:17] = -900.0  # gas low down: not lung
    >>> tree = air_tree(hu, np.ones(hu.shape, bool))
    >>> int(tree.sum()), bool(tree[0, 15, 15])
    (252, False)
    """
    air = body & (hu < BODY_HU)
    lab, n = ndimage.label(air)
    if n == 0:
        return np.zeros(hu.shape, bool)
    counts = _count(lab, n)
    counts[0] = 0
    big = int(counts.argmax())
    objects = ndimage.find_objects(lab)
    zc = 0.5 * (objects[big - 1][0].start + objects[big - 1][0].stop - 1)  # middle of the largest's z range
    tops = np.zeros(n + 1)
    for i, sl in enumerate(objects, start=1):
        if sl is not None:
            tops[i] = sl[0].stop - 1
    keep = (counts >= LUNG_SHARE * counts[big]) & (tops >= zc)
    keep[0] = False
    return keep[lab]


def find_airway(hu: np.ndarray, tree: np.ndarray, body: np.ndarray, spacing) -> tuple[np.ndarray, Optional[int]]:
    """Trachea and main bronchi lumen, grown down from the trachea in the top slices.

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT (canonical frame: axis 0 superior).
    tree : ndarray of bool
        :func:`air_tree`.
    body : ndarray of bool
        The body outline.
    spacing : sequence of 3 float
        Voxel size (z, y, x), mm.

    Returns
    -------
    airway : ndarray of bool
        The lumen; all False when no trachea was found.
    carina : int or None
        Slice of the carina (the first where the airway has two pieces).

    Examples
    --------
    >>> hu = np.full((12, 40, 40), 40.0)
    >>> hu[:, 17:22, 18:23] = -1000.0                          # trachea, 5 x 5 pixels of 2 mm
    >>> hu[:6, 17:22, 18:23] = 40.0                            # ends at the carina
    >>> hu[3:6, 17:22, 12:17] = hu[3:6, 17:22, 24:29] = -1000.0  # two main bronchi
    >>> hu[:7, 5:35, 2:12] = hu[:7, 5:35, 29:39] = -850.0      # lungs
    >>> tree = np.ones(hu.shape, bool)
    >>> aw, carina = find_airway(hu, tree & (hu < -400), tree, (2.0, 2.0, 2.0))
    >>> int(aw[11].sum()), carina, int(aw[:3].sum())
    (25, 5, 0)
    """
    sz, sy, sx = (float(s) for s in spacing)
    px = sy * sx
    airway = np.zeros(hu.shape, bool)
    ks = np.flatnonzero(tree.any(axis=(1, 2)))
    if not ks.size:
        return airway, None
    top, bottom = int(ks[-1]), int(ks[0])
    search = max(3, int(0.35 * (top - bottom + 1)))
    seed, k0 = None, None
    for k in range(top, max(bottom, top - search) - 1, -1):
        cols = np.flatnonzero(body[k].any(axis=0))
        if not cols.size:
            continue
        centre = 0.5 * (cols[0] + cols[-1])
        lab, n = ndimage.label(tree[k] & (hu[k] < AIRWAY_HU))
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(lab), lab, idx) * px
        cx = np.array([c[1] for c in ndimage.center_of_mass(np.ones_like(lab), lab, idx)])
        ok = (area >= TRACHEA_AREA_MM2[0]) & (area <= TRACHEA_AREA_MM2[1]) & \
             (np.abs(cx - centre) * sx <= TRACHEA_MIDLINE_MM)
        if ok.any():
            best = idx[ok][np.argmin(np.abs(cx[ok] - centre))]
            seed, k0 = lab == best, k
            break
    if seed is None:
        return airway, None
    ref = seed.sum() * px  # the trachea's area so far (its largest section)
    grow = _disk(max(2.0, 1.2 * sz / min(sy, sx)))  # a bronchus at 50 degrees moves ~1.2 slice widths
    touch = _disk(2.0)
    airway[k0] = seed
    prev, carina = seed, None
    for k in range(k0 - 1, bottom - 1, -1):
        # Above the carina the airway is one tube straight below the last section (so the
        # oesophagus beside it is not taken); below it, bronchi run obliquely.
        near = ndimage.binary_dilation(prev, structure=touch if carina is None else grow)
        lab, n = ndimage.label((hu[k] < AIRWAY_HU) & body[k])
        ids = np.unique(lab[near & (lab > 0)])
        if not ids.size:
            break
        area = ndimage.sum_labels(np.ones_like(lab), lab, ids) * px
        if area.max() > max(AIRWAY_MAX_SHARE * ref, AIRWAY_MIN_MAX_MM2):
            break  # the lumen opens into lung: stop before it leaks
        keep = area >= max(10.0, 0.05 * ref)
        ids, area = ids[keep], area[keep]
        if not ids.size or area.sum() > max(AIRWAY_MAX_SHARE * ref, 1.5 * AIRWAY_MIN_MAX_MM2):
            break
        order = np.argsort(area)[::-1]
        if carina is None:
            if ids.size >= 2 and area[order[1]] >= 0.15 * ref:
                carina = k
                order = order[:2]
            else:
                order = order[:1]
                ref = max(ref, float(area[order[0]]))
        ids = ids[order[:AIRWAY_MAX_PIECES]]
        if carina is not None and (carina - k) * sz > MAIN_BRONCHUS_MM:
            break
        airway[k] = np.isin(lab, ids)
        prev = airway[k]
    return airway, carina


def _midline(airway: np.ndarray, carina: Optional[int], body: np.ndarray, tree: np.ndarray) -> float:
    """x index of the mid-sagittal plane: the trachea's centre, else the body's in the lung slices.

    Not the middle of the lungs' extent: with one lung collapsed or missing that
    would fall inside the other lung.
    """
    trachea = airway.copy()
    if carina is not None:
        trachea[: carina + 1] = False
    if trachea.any():
        return float(np.nonzero(trachea)[2].mean())
    ks = np.flatnonzero(tree.any(axis=(1, 2)))
    centres = []
    for k in ks[:: max(1, len(ks) // 16)]:
        cols = np.flatnonzero(body[k].any(axis=0))
        if cols.size:
            centres.append(0.5 * (cols[0] + cols[-1]))
    return float(np.median(centres)) if centres else 0.5 * (body.shape[2] - 1)


def _split_sides(lung: np.ndarray, midline_x: float, voxel_ml: float) -> dict:
    """Left and right lung from connected components, split at the midline where they touch."""
    nx = lung.shape[2]
    left_half = np.arange(nx) > midline_x
    lab, n = ndimage.label(lung)
    out = {"left": np.zeros(lung.shape, bool), "right": np.zeros(lung.shape, bool)}
    if n == 0:
        return out
    counts = _count(lab, n)
    counts[0] = 0
    on_left = _count(lab[:, :, left_half], n)
    share = on_left / np.maximum(counts, 1)
    big = counts >= max(0.05 * counts.max(), 1)
    # Per component: 1 left, 2 right, 3 both (the lungs touch: cut at the midline).
    where = (np.where(share >= 0.9, 1, np.where(share <= 0.1, 2, 3)) * big).astype(np.uint8)
    where[0] = 0
    code = where[lab]
    del lab
    out["left"] = (code == 1) | ((code == 3) & left_half)
    out["right"] = (code == 2) | ((code == 3) & ~left_half)
    del code
    if not (where == 3).any():
        return out
    for side in out:  # cut at the midline: keep the main piece (and large pieces) of each side
        lab, n = ndimage.label(out[side])
        if n > 1:
            counts = _count(lab, n)
            counts[0] = 0
            keep = counts >= 0.05 * counts.max()
            keep[0] = False
            out[side] = keep[lab]
    return out


def _cavity(lung: np.ndarray, other: np.ndarray, body: np.ndarray, exclude: np.ndarray, spacing) -> np.ndarray:
    """A side's pleural cavity: its lung closed and hole-filled slice by slice."""
    out = np.zeros(lung.shape, bool)
    r = CLOSING_MM / min(spacing[1], spacing[2])
    disk = _disk(r)
    pad = disk.shape[0]
    box = _box(lung, (0, pad, pad))
    if box is None:
        return out
    for k in range(box[0].start, box[0].stop):
        m = lung[k][box[1], box[2]]
        if not m.any():
            continue
        m = np.pad(m, pad)
        m = ndimage.binary_closing(m, structure=disk)
        m = ndimage.binary_fill_holes(m)[pad:-pad, pad:-pad]
        out[k][box[1], box[2]] = m
    out &= body & ~exclude & ~other
    out |= lung
    return out


def _hilum(airway: np.ndarray, carina: Optional[int], cavity: np.ndarray, side: str, spacing):
    """Index (z, y, x) of a side's hilum: the lower end of its main bronchus, or a fallback.

    The bronchus is the airway below the carina at least :data:`HILUM_LATERAL_MM` to
    that side of the carina's centre.
    """
    if carina is not None:
        cx = float(np.nonzero(airway[carina + 1])[1].mean()) if airway[carina + 1].any() else None
        if cx is not None:
            nx = airway.shape[2]
            off = (np.arange(nx) - cx) * spacing[2] * (1 if side == "left" else -1)
            below = airway.copy()
            below[carina + 1:] = False
            below[:, :, off < HILUM_LATERAL_MM] = False
            ks = np.flatnonzero(below.any(axis=(1, 2)))
            if ks.size:
                k = int(ks[0])
                j, i = np.nonzero(below[k])
                return (float(k), float(j.mean()), float(i.mean())), None
    k_idx = np.flatnonzero(cavity.any(axis=(1, 2)))
    k = int(round(k_idx[0] + 0.6 * (k_idx[-1] - k_idx[0])))
    j, i = np.nonzero(cavity[k])
    medial = np.percentile(i, 10 if side == "left" else 90)
    return (float(k), float(j.mean()), float(medial)), (
        f"no main bronchus found on the {side}: hilum placed at 60 % of the lung's height, medially")


def find_lungs(hu: np.ndarray, spacing, *, cancel=None) -> Lungs:
    """Find the body, airway, lungs, pleural cavities and hila of a CT (canonical frame).

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT in HU, canonical frame (axis 0 superior, axis 1 dependent, axis 2 left).
    spacing : sequence of 3 float
        Voxel size (z, y, x) in mm.
    cancel : callable or threading.Event, optional
        Checked between the steps.

    Returns
    -------
    Lungs

    Raises
    ------
    ValueError
        If no lung-like air is found inside a body.

    Examples
    --------
    >>> hu = np.full((8, 40, 60), -1000.0)
    >>> hu[:, 4:36, 4:56] = 40.0                               # body
    >>> hu[:, 8:32, 8:26] = hu[:, 8:32, 34:52] = -850.0        # right and left lung
    >>> found = find_lungs(hu, (10.0, 3.0, 3.0))
    >>> found.box
    (slice(0, 8, None), slice(3, 37, None), slice(3, 57, None))
    >>> int(found.lung["left"].sum()), int(found.lung["right"].sum()), round(found.midline_x, 1)
    (3456, 3456, 29.5)
    """
    sz, sy, sx = (float(s) for s in spacing)
    voxel_ml = sz * sy * sx / 1000.0
    notes: list[str] = []
    box, body = _body(hu, spacing)
    check_cancel(cancel)
    if box is None:
        raise ValueError(f"no body found in the CT (nothing denser than {BODY_HU:g} HU): "
                         "a chest CT is needed")
    full_shape = hu.shape
    hu = hu[box]
    tree = air_tree(hu, body)
    if tree.sum() * voxel_ml < MIN_LUNG_ML:
        raise ValueError(f"no lungs found in the CT (less than {MIN_LUNG_ML:g} mL of air inside the body): "
                         "a chest CT with aerated lungs is needed")
    check_cancel(cancel)
    airway, carina = find_airway(hu, tree, body, spacing)
    if not airway.any():
        notes.append("no trachea found in the top slices: the airway was not removed from the lungs")
    margin = np.zeros(hu.shape, bool)
    if airway.any():
        disk = _disk(AIRWAY_MARGIN_MM / min(sy, sx))
        for k in np.flatnonzero(airway.any(axis=(1, 2))):
            margin[k] = ndimage.binary_dilation(airway[k], structure=disk)
    lung_all = tree & ~margin
    check_cancel(cancel)
    midline = _midline(airway, carina, body, tree)
    lungs = _split_sides(lung_all, midline, voxel_ml)
    check_cancel(cancel)
    cavity, hilum = {}, {}
    for side, other in (("left", "right"), ("right", "left")):
        cavity[side] = _cavity(lungs[side], lungs[other], body, margin, spacing)
    both = cavity["left"] & cavity["right"]
    if both.any():
        half = np.arange(hu.shape[2]) > midline
        cavity["left"] &= ~(both & ~half)
        cavity["right"] &= ~(both & half)
    for side in ("left", "right"):
        if cavity[side].sum() * voxel_ml >= MIN_LUNG_ML:
            hilum[side], note = _hilum(airway, carina, cavity[side], side, spacing)
            if note:
                notes.append(note)
    offset = np.array([b.start for b in box], float)
    hilum = {side: tuple(float(v) for v in np.asarray(h) + offset) for side, h in hilum.items()}
    return Lungs(box=box, shape=tuple(full_shape), body=body, airway=airway, lung=lungs, cavity=cavity,
                 hilum=hilum, midline_x=float(midline + offset[2]),
                 carina_z=None if carina is None else float(carina + offset[0]), notes=notes)


def _body(hu: np.ndarray, spacing):
    """The body outline, found on every second pixel, and the box (slices) around it.

    Returns ``(box, body)`` with ``body`` cropped to ``box``, or ``(None, None)``
    when no slice has a body. The coarse outline is grown back to full resolution
    and shrunk by one coarse pixel, so no air outside the skin counts as inside.
    """
    nz, ny, nx = hu.shape
    f = 2 if min(ny, nx) >= 128 else 1
    radius = max(1, int(round(TABLE_OPENING_MM / (min(spacing[1], spacing[2]) * f))))
    coarse = body_mask(np.ascontiguousarray(hu[:, ::f, ::f]), BODY_HU, opening=radius, close_edges=True)
    if f > 1:
        coarse = ndimage.binary_erosion(coarse, structure=_PLANE4, border_value=1)
    box = _box(coarse, (0, 1, 1))
    if box is None:
        return None, None
    box = (box[0], slice(box[1].start * f, min(ny, box[1].stop * f)), slice(box[2].start * f, min(nx, box[2].stop * f)))
    body = np.repeat(np.repeat(coarse, f, axis=1), f, axis=2)[:, :ny, :nx][box]
    return box, np.ascontiguousarray(body)
