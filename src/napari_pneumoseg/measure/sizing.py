"""Size a pneumothorax the way the guidelines do: distances per side, where each was taken, size classes.

All distances are measured in the patient frame (:mod:`napari_pneumoseg.ct.frame`:
axis 0 superior, axis 1 dependent, axis 2 the patient's left) at full resolution,
in mm from the CT's voxel size; the places are given back as source array indices.

Definitions (per side; the side of a mask voxel is the side of :func:`measure`'s
mid-sagittal plane it lies on):

- **Maximal rim depth** (the trauma "35 mm rule", Bou Zein Eddine et al. 2019): the
  largest distance between parietal and visceral pleura on any axial slice through
  the side's lung, perpendicular to both (above the lung's apex the air fills the
  cupola: that is the apex-to-cupola distance). It is the diameter of the largest disk that fits in the
  slice's pneumothorax: ``2 * d - p``, where ``d`` is the largest in-plane Euclidean
  distance transform value (mm, from a voxel centre to the centre of the nearest
  voxel outside the mask) and ``p`` the mean in-plane pixel size (the mask's edge lies
  half a pixel inside that outside centre on both sides). The line is the disk's
  diameter through its nearest outside point, so it runs from one pleura to the
  other, perpendicular to the wall.
- **Interpleural distance at the hilum** (BTS 2010, MacDuff et al.): on the axial
  slice of the side's hilum (the lower end of its main bronchus, from
  :func:`~napari_pneumoseg.ct.lungs.find_lungs`), the gap left-right between the
  lung's most lateral point and the most lateral point of lung plus pneumothorax
  (the inner chest wall): what a PA radiograph shows at the hilum's height. The line
  is drawn on the row where the pneumothorax reaches the wall.
- **Apex-to-cupola distance** (ACCP 2001, Baumann et al.): along the head-feet axis,
  from the top slice of the lung to the top slice of lung plus pneumothorax (the
  cupola), using the real slice positions. The line runs down the column of the top
  slice that stays longest in the pneumothorax.
- **Pockets**: 3-D connected pieces of the side's mask (26-connected), with their volumes.

The lungs are found on every ``coarse_step``-th pixel in-plane (as the other HU searches
do, :func:`~napari_pneumoseg.ct.air.coarse_step`); the hilum's slice is then refined at
full resolution (lung-dense air within one coarse pixel of the coarse lung).
- **% of the hemithorax** (Collins et al. 1995, on CT): ``100 * ptx / (ptx + lung)`` of that
  side, with the aerated lung of :func:`~napari_pneumoseg.ct.air.aerated_lung` (as
  :func:`~napari_pneumoseg.measure.measure` reports it); the hilum and the apex use
  :func:`~napari_pneumoseg.ct.lungs.find_lungs`' lungs (air below -400 HU without the
  airway), with the pneumothorax taken out of them.

A supine patient's air rises to the front of the chest, where a radiograph's distances
do not see it: the hilum and apex distances can call a large anterior pneumothorax
small. That is one reason the rules disagree (:data:`DISAGREE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from ..ct.air import BODY_HU, coarse_step
from ..ct.frame import patient_frame
from ..ct.lungs import find_lungs
from .sides import left_of_midline
from .slices import SliceSpans

SIDES = ("right", "left")
#: Side codes in the side label volume.
_CODE = {"right": 1, "left": 2}


@dataclass(frozen=True)
class Rule:
    """A guideline's size rule: a measure and the threshold from which it calls a pneumothorax large."""

    name: str
    measure: str  # key in SideSize.values
    threshold: float
    unit: str
    source: str


#: The size rules, side by side. A value at or above the threshold is "large".
RULES = (
    Rule("BTS 2010", "hilum_distance_mm", 20.0, "mm",
         "interpleural distance at the level of the hilum >= 2 cm is large (MacDuff et al. 2010)"),
    Rule("ACCP 2001", "apex_cupola_mm", 30.0, "mm",
         "apex-to-cupola distance >= 3 cm is large (Baumann et al. 2001)"),
    Rule("35 mm rule", "rim_depth_mm", 35.0, "mm",
         "maximal rim depth on axial CT >= 35 mm: observation is likely to fail (Bou Zein Eddine et al. 2019)"),
    Rule("20 % rule", "pct_hemithorax", 20.0, "%",
         "< 20 % of the hemithorax is small (Collins et al. 1995 volume on CT)"),
)

#: Said beside the classes: the rules do not agree.
DISAGREE = ("The rules disagree on which pneumothoraces are large (Nikolic et al. 2015): they measure "
            "different things, and a radiograph's distances miss air in front of the lung.")
#: Slices thicker than this (mm) get :data:`THICK_WARNING`.
THICK_SLICE_MM = 2.5
THICK_WARNING = ("slices are {mm:g} mm thick, more than 2.5 mm: thick slices overestimate a pneumothorax's "
                 "volume (Cai et al. 2011: 12 % at 5 mm) and can miss a thin rim")


@dataclass
class Line:
    """Where one distance was measured: a line in source array indices (z, y, x), voxel centres at integers."""

    kind: str  # "rim_depth", "hilum_distance" or "apex_cupola"
    side: str
    value_mm: float
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    slice: int  # source slice of the start (the axial slice for in-plane lines)

    @property
    def label(self) -> str:
        """Short text for the image: ``"right rim 42.1 mm"``."""
        name = {"rim_depth": "rim", "hilum_distance": "hilum", "apex_cupola": "apex"}[self.kind]
        return f"{self.side} {name} {self.value_mm:.1f} mm"


@dataclass
class SideSize:
    """One side's guideline measures (None: not measured, see the notes)."""

    side: str
    volume_ml: float = 0.0
    pct_hemithorax: Optional[float] = None
    rim_depth_mm: Optional[float] = None
    hilum_distance_mm: Optional[float] = None
    apex_cupola_mm: Optional[float] = None
    pockets_ml: list[float] = field(default_factory=list)
    classes: dict[str, str] = field(default_factory=dict)  # rule name -> "large" / "small" / ...

    @property
    def values(self) -> dict[str, Optional[float]]:
        """The measures the rules read, by :attr:`Rule.measure`."""
        return {"hilum_distance_mm": self.hilum_distance_mm, "apex_cupola_mm": self.apex_cupola_mm,
                "rim_depth_mm": self.rim_depth_mm, "pct_hemithorax": self.pct_hemithorax}


@dataclass
class Sizing:
    """What :func:`size_pneumothorax` found: per side measures, where they were taken, area along z."""

    sides: dict[str, SideSize]
    lines: list[Line] = field(default_factory=list)
    area_mm2: dict[str, list[float]] = field(default_factory=dict)  # "left"/"right"/"total" per source slice
    position_mm: list[float] = field(default_factory=list)  # each source slice along the normal
    notes: list[str] = field(default_factory=list)

    def line(self, kind: str, side: str) -> Optional[Line]:
        """The line of one measure on one side, if it was drawn."""
        return next((ln for ln in self.lines if ln.kind == kind and ln.side == side), None)


def classify(side: SideSize) -> dict[str, str]:
    """Each rule's size class of one side: ``"large"``, ``"small"``, ``"none"`` or ``"not measured"``.

    Parameters
    ----------
    side : SideSize

    Returns
    -------
    dict of str to str
        By rule name, in :data:`RULES` order. ``"none"`` when the side has no pneumothorax.

    Examples
    --------
    >>> s = SideSize("left", volume_ml=300.0, pct_hemithorax=25.0, rim_depth_mm=30.0)
    >>> classify(s)["35 mm rule"], classify(s)["20 % rule"], classify(s)["BTS 2010"]
    ('small', 'large', 'not measured')
    """
    out = {}
    for rule in RULES:
        value = side.values[rule.measure]
        if side.volume_ml <= 0:
            out[rule.name] = "none"
        elif value is None:
            out[rule.name] = "not measured"
        else:
            out[rule.name] = "large" if value >= rule.threshold else "small"
    return out


def _side_labels(mask: np.ndarray, ct, midline_x_mm: float) -> np.ndarray:
    """uint8 volume: 1 where the mask is on the patient's right, 2 on the left, 0 elsewhere."""
    out = np.zeros(mask.shape, np.uint8)
    left_of = left_of_midline(ct, midline_x_mm)
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        m = mask[k] != 0
        out[k][m] = np.where(left_of(k)[m], 2, 1)
    return out


def _pockets(ptx: np.ndarray, counts: np.ndarray, area_mm2: float, span: np.ndarray) -> list[float]:
    """Volumes (mL, largest first) of the 26-connected pieces of ``ptx``, each slice counted for its span."""
    ks = np.flatnonzero(counts)
    if ks.size == 0:
        return []
    rows, cols = np.flatnonzero(ptx.any(axis=(0, 2))), np.flatnonzero(ptx.any(axis=(0, 1)))
    box = ptx[ks[0]:ks[-1] + 1, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    labels, n = ndimage.label(box, structure=np.ones((3, 3, 3), bool))
    vol = np.zeros(n + 1)
    for k in ks:
        vol += np.bincount(labels[k - ks[0]].ravel(), minlength=n + 1) * (area_mm2 * span[k] / 1000.0)
    return sorted((float(v) for v in vol[1:]), reverse=True)


def _rim_depth(ptx: np.ndarray, counts: np.ndarray, sy: float, sx: float):
    """Largest rim depth (mm) over the slices, and its line (canonical indices), or (None, None)."""
    best = None
    for k in np.flatnonzero(counts):
        m = ptx[k]
        js, is_ = np.nonzero(m)
        j0, i0 = js.min() - 1, is_.min() - 1
        sub = np.zeros((js.max() - j0 + 2, is_.max() - i0 + 2), bool)
        sub[js - j0, is_ - i0] = True
        edt, (nj, ni) = ndimage.distance_transform_edt(sub, sampling=(sy, sx), return_indices=True)
        flat = int(np.argmax(edt))
        d = float(edt.flat[flat])
        if best is None or d > best[0]:
            cj, ci = np.unravel_index(flat, edt.shape)
            best = (d, k, (cj + j0, ci + i0), (nj[cj, ci] + j0, ni[cj, ci] + i0))
    if best is None:
        return None, None
    d, k, (cj, ci), (nj, ni) = best
    pixel = (sy + sx) / 2.0
    depth = max(2.0 * d - pixel, pixel)
    u = np.array([(cj - nj) * sy, (ci - ni) * sx], float)
    u /= max(np.linalg.norm(u), 1e-9)
    half = depth / 2.0
    start = (float(k), cj - half * u[0] / sy, ci - half * u[1] / sx)
    end = (float(k), cj + half * u[0] / sy, ci + half * u[1] / sx)
    return depth, (start, end)


def _hilum_distance(ptx_k: np.ndarray, lung_k: np.ndarray, k: int, side: str, sx: float):
    """BTS distance (mm) on canonical slice ``k`` (its full-resolution masks) and its line, or (None, None, why)."""
    cols_lung = np.flatnonzero(lung_k.any(axis=0))
    if cols_lung.size == 0:
        return None, None, f"no {side} lung on the slice of its hilum: the interpleural distance was not measured"
    cav = lung_k | ptx_k
    cols_cav = np.flatnonzero(cav.any(axis=0))
    if side == "left":  # lateral is +x (canonical axis 2 is the patient's left)
        xl, xc, edge = cols_lung.max(), cols_cav.max(), 0.5
    else:
        xl, xc, edge = cols_lung.min(), cols_cav.min(), -0.5
    dist = abs(int(xc) - int(xl)) * sx
    if dist == 0:
        return 0.0, None, None
    rows = np.flatnonzero(ptx_k[:, xc]) if ptx_k[:, xc].any() else np.flatnonzero(cav[:, xc])
    row = float(rows[len(rows) // 2])
    return dist, ((float(k), row, xl + edge), (float(k), row, xc + edge)), None


def _apex_cupola(ptx: np.ndarray, lung: np.ndarray, position: np.ndarray, side: str):
    """ACCP distance (mm) along the head-feet axis and its line, or (None, None, why)."""
    lung_k = np.flatnonzero(lung.reshape(lung.shape[0], -1).any(axis=1))
    if lung_k.size == 0:
        return None, None, f"no aerated {side} lung found: the apex-to-cupola distance was not measured"
    ptx_k = np.flatnonzero(ptx.reshape(ptx.shape[0], -1).any(axis=1))
    apex = int(lung_k.max())  # canonical axis 0 runs towards the head
    cupola = max(apex, int(ptx_k.max()) if ptx_k.size else apex)
    dist = abs(float(position[cupola] - position[apex]))
    if cupola == apex:
        return 0.0, None, None
    top = ptx[cupola]
    stays = top.copy()
    run = np.zeros(top.shape, int)
    for k in range(cupola, apex, -1):
        stays &= ptx[k]
        run += stays
    js, is_ = np.nonzero(top)
    longest = run[js, is_] == run[js, is_].max()
    cj, ci = js.mean(), is_.mean()
    pick = np.argmin(np.where(longest, (js - cj) ** 2 + (is_ - ci) ** 2, np.inf))
    j, i = float(js[pick]), float(is_[pick])
    return dist, ((cupola + 0.5, j, i), (apex + 0.5, j, i)), None


def size_pneumothorax(mask: np.ndarray, ct, *, midline_x_mm: float, spans: SliceSpans,
                      side_ml: dict, side_pct: dict) -> Sizing:
    """Guideline measures of each side, where they were taken, and the area per slice.

    Parameters
    ----------
    mask : ndarray, shape (z, y, x)
        Pneumothorax mask on the CT's grid (nonzero means pneumothorax).
    ct : CTVolume
        The CT (HU for the lungs and hila; geometry; patient position).
    midline_x_mm : float
        LPS x of the mid-sagittal plane that splits the sides (as in :func:`measure`).
    spans : SliceSpans
        Slice positions and spans (:func:`~napari_pneumoseg.measure.slices.slice_spans`).
    side_ml, side_pct : dict
        Volume (mL) and % of hemithorax of each side, as :func:`measure` found them.

    Returns
    -------
    Sizing
        Measures that could not be taken are None, and the notes say why (not an
        axial series, a decubitus position, no lungs found, no hilum found).
    """
    sizing = Sizing(sides={s: SideSize(s, volume_ml=float(side_ml.get(s) or 0.0), pct_hemithorax=side_pct.get(s))
                           for s in SIDES},
                    position_mm=[float(v) for v in spans.position_mm])
    nz = mask.shape[0]
    labels = _side_labels(mask, ct, midline_x_mm)
    sy, sx = float(ct.spacing[1]), float(ct.spacing[2])
    for s in SIDES:
        per = np.count_nonzero((labels == _CODE[s]).reshape(nz, -1), axis=1)
        sizing.area_mm2[s] = [float(v) for v in per * sy * sx]
    sizing.area_mm2["total"] = [a + b for a, b in zip(sizing.area_mm2["left"], sizing.area_mm2["right"])]
    try:
        frame = patient_frame(ct)
    except ValueError as exc:
        sizing.notes.append(f"guideline distances not measured: {exc}")
        _finish(sizing)
        return sizing
    lab_c = frame.view(labels)
    cy, cx = frame.spacing[1], frame.spacing[2]
    span_c = frame.view(spans.span_mm[:, None, None])[:, 0, 0]
    pos_c = frame.view(spans.position_mm[:, None, None])[:, 0, 0]
    hu_c = frame.view(ct.hu)
    # The lungs (for the hila, the apex and which slices go through the lung) are found on every
    # step-th pixel, as the other HU searches do; the hilum's slice is refined at full resolution.
    step = coarse_step(hu_c.shape[1:])
    try:
        lungs = find_lungs(np.ascontiguousarray(hu_c[:, ::step, ::step]), (frame.spacing[0], cy * step, cx * step))
        sizing.notes.extend(lungs.notes)
    except ValueError as exc:
        lungs = None
        sizing.notes.append(f"hilum and apex distances not measured: {exc}")

    def to_source(points):
        return tuple(tuple(float(v) for v in frame.to_source(p, mask.shape)) for p in points)

    for s in SIDES:
        size = sizing.sides[s]
        ptx = lab_c == _CODE[s]
        counts = np.count_nonzero(ptx.reshape(nz, -1), axis=1)
        if not counts.any():
            continue
        size.pockets_ml = _pockets(ptx, counts, cy * cx, span_c)
        lung = None if lungs is None else lungs.full(lungs.lung[s]) & ~ptx[:, ::step, ::step]
        # Pleura to pleura: only slices through the lung (above its apex the air fills the
        # cupola, which the apex-to-cupola distance measures).
        through_lung = counts if lung is None else counts * lung.reshape(nz, -1).any(axis=1)
        size.rim_depth_mm, line = _rim_depth(ptx, through_lung, cy, cx)
        if line is not None:
            _add_line(sizing, "rim_depth", s, size.rim_depth_mm, to_source(line))
        if lung is None:
            continue
        if s in lungs.hilum:
            k = int(round(lungs.hilum[s][0]))
            lung_k = _full_slice(lung[k], step, hu_c[k], ptx[k])
            size.hilum_distance_mm, line, why = _hilum_distance(ptx[k], lung_k, k, s, cx)
            if line is not None:
                _add_line(sizing, "hilum_distance", s, size.hilum_distance_mm, to_source(line))
            if why:
                sizing.notes.append(why)
        else:
            sizing.notes.append(f"no {s} hilum found (too little {s} lung): the interpleural distance was not "
                                "measured")
        size.apex_cupola_mm, line, why = _apex_cupola(ptx, lung, pos_c, s)
        if line is not None:
            _add_line(sizing, "apex_cupola", s, size.apex_cupola_mm, to_source(line))
        if why:
            sizing.notes.append(why)
    _finish(sizing)
    return sizing


def _full_slice(coarse: np.ndarray, step: int, hu_k: np.ndarray, ptx_k: np.ndarray) -> np.ndarray:
    """A coarse lung slice at full resolution: lung-dense air within a coarse pixel of it, without the mask."""
    if step > 1:
        coarse = ndimage.binary_dilation(coarse, structure=np.ones((3, 3), bool))
        coarse = np.repeat(np.repeat(coarse, step, axis=0), step, axis=1)[:hu_k.shape[0], :hu_k.shape[1]]
    return coarse & (hu_k < BODY_HU) & ~ptx_k


def _add_line(sizing: Sizing, kind: str, side: str, value: float, points) -> None:
    start, end = points
    sizing.lines.append(Line(kind, side, float(value), start, end, int(round(start[0]))))


def _finish(sizing: Sizing) -> None:
    for size in sizing.sides.values():
        size.classes = classify(size)
