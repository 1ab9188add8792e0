"""The :class:`Measurement` of a pneumothorax mask and :func:`measure`, which makes it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from .metrics import mean_slice_dice, metrics_from_counts, roc_auc, slice_counts
from .sides import side_analysis
from .sizing import THICK_SLICE_MM, THICK_WARNING, Sizing, size_pneumothorax
from .slices import slice_spans

#: Slice spacing (mm) assumed when none is known: the 2.5 mm of the paper's CTs (Gencer & Toker 2024).
DEFAULT_SLICE_SPACING_MM = 2.5
#: In-plane pixel spacing (mm) assumed when none is known. Volumes are then only as
#: right as that guess.
DEFAULT_PIXEL_SPACING_MM = 1.0

#: Relative and absolute tolerance (mm) for two voxel sizes to count as the same.
_SPACING_RTOL = 1e-4
_SPACING_ATOL = 1e-6


@dataclass
class Measurement:
    """Result of :func:`measure`. None means "not measured" (no CT, no reference, undefined).

    Field names carry their units (``_ml``, ``_mm``, ``_pct``). Overlap metrics are
    fractions in [0, 1].
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]  # (z, y, x)
    voxel_ml: float
    voxels: int
    volume_ml: float
    # Per side of the patient (needs the CT).
    left_ml: Optional[float] = None
    right_ml: Optional[float] = None
    left_lung_ml: Optional[float] = None
    right_lung_ml: Optional[float] = None
    left_pct_hemithorax: Optional[float] = None  # 100 * ptx / (ptx + aerated lung), same side
    right_pct_hemithorax: Optional[float] = None
    midline_x_mm: Optional[float] = None  # LPS x of the mid-sagittal plane used
    # Guideline measures per side (need the CT; see measure.sizing for the definitions).
    left_rim_depth_mm: Optional[float] = None  # largest pleura-to-pleura distance on an axial slice
    right_rim_depth_mm: Optional[float] = None
    left_hilum_distance_mm: Optional[float] = None  # interpleural distance at the hilum (BTS)
    right_hilum_distance_mm: Optional[float] = None
    left_apex_cupola_mm: Optional[float] = None  # lung apex to cupola, head-feet (ACCP)
    right_apex_cupola_mm: Optional[float] = None
    left_pockets: Optional[int] = None  # separate 3-D pieces
    right_pockets: Optional[int] = None
    # Size class by each rule ("large", "small", "none", "not measured"); see measure.sizing.RULES.
    left_class_bts: Optional[str] = None
    right_class_bts: Optional[str] = None
    left_class_accp: Optional[str] = None
    right_class_accp: Optional[str] = None
    left_class_35mm: Optional[str] = None
    right_class_35mm: Optional[str] = None
    left_class_20pct: Optional[str] = None
    right_class_20pct: Optional[str] = None
    # Against a reference mask.
    truth_voxels: Optional[int] = None
    truth_volume_ml: Optional[float] = None
    tp: Optional[int] = None
    fp: Optional[int] = None
    tn: Optional[int] = None
    fn: Optional[int] = None
    dice: Optional[float] = None  # volumetric (pooled over all voxels)
    dice_per_slice: Optional[float] = None  # mean 2-D Dice over slices where either mask is non-empty
    dice_slices: Optional[int] = None  # how many slices that mean is over
    iou: Optional[float] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    specificity: Optional[float] = None
    accuracy: Optional[float] = None
    relative_volume_error: Optional[float] = None  # (pred - true) / true
    auc: Optional[float] = None  # voxel-wise ROC AUC of the probabilities
    notes: list[str] = field(default_factory=list)
    #: Where each distance was taken, pocket volumes and area per slice (not in :meth:`as_row`).
    sizing: Optional[Sizing] = None

    def as_dict(self) -> dict[str, Any]:
        """All fields as plain data, with lists instead of tuples (e.g. for JSON or layer metadata).

        Returns
        -------
        dict

        Examples
        --------
        >>> m = measure(np.ones((1, 2, 2), bool), spacing=(1, 1, 1))
        >>> m.as_dict()["spacing_mm"]
        [1.0, 1.0, 1.0]
        """
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["spacing_mm"] = list(self.spacing_mm)
        return d

    def as_row(self) -> dict[str, Any]:
        """One flat table row of scalars.

        The shape is written as ``"z x y x x"``, the spacing is split per axis and
        the notes are joined with ``"; "``. :attr:`sizing` (lines, pockets, areas)
        is left out.

        Returns
        -------
        dict
            Keys in the order of :meth:`columns`.

        Examples
        --------
        >>> row = measure(np.ones((1, 2, 2), bool), spacing=(1, 1, 1)).as_row()
        >>> row["shape"], row["spacing_z_mm"], row["voxels"]
        ('1x2x2', 1.0, 4)
        """
        row: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "shape":
                row["shape"] = "x".join(str(s) for s in v)
            elif f.name == "spacing_mm":
                row["spacing_z_mm"], row["spacing_y_mm"], row["spacing_x_mm"] = v
            elif f.name == "notes":
                row["notes"] = "; ".join(v)
            elif f.name == "sizing":
                continue
            else:
                row[f.name] = v
        return row

    @classmethod
    def columns(cls) -> list[str]:
        """The keys of :meth:`as_row`, in order (table headers).

        Returns
        -------
        list of str

        Examples
        --------
        >>> Measurement.columns()[:3]
        ['shape', 'spacing_z_mm', 'spacing_y_mm']
        """
        return list(cls((1, 1, 1), (1.0, 1.0, 1.0), 0.0, 0, 0.0).as_row())


# --------------------------------------------------------------------------- spacing


def _parse_spacing(name: str, spacing) -> list[Optional[float]]:
    """``spacing`` as three entries (z, y, x) in mm, None where unknown (None, NaN or left out)."""
    if spacing is None:
        return [None, None, None]
    sp = list(np.atleast_1d(np.asarray(spacing, dtype=object)))
    if len(sp) == 2:
        sp = [None, *sp]
    if len(sp) != 3:
        raise ValueError(f"{name} must be (z, y, x) or in-plane (y, x) in mm, got {spacing!r}")
    given = [None if v is None or not np.isfinite(float(v)) else float(v) for v in sp]
    if any(v is not None and v <= 0 for v in given):
        raise ValueError(f"{name} must be positive, got {spacing!r}")
    return given


def _fmt(sp) -> str:
    return "(" + ", ".join("?" if v is None else f"{v:g}" for v in sp) + ") mm"


def _agree(a, b) -> bool:
    """True when every entry known in both agrees within the tolerance."""
    return all(x is None or y is None or np.isclose(x, y, rtol=_SPACING_RTOL, atol=_SPACING_ATOL)
               for x, y in zip(a, b))


def _resolve_spacing(ct, spacing, truth_spacing, notes: list[str]) -> tuple[float, float, float]:
    """The mask's voxel size (z, y, x) in mm, after checking that all given voxel sizes agree."""
    given = _parse_spacing("spacing", spacing)
    truth_given = _parse_spacing("truth_spacing", truth_spacing)
    if ct is not None:
        ct_sp = tuple(float(v) for v in ct.spacing)
        if not _agree(given, ct_sp):
            raise ValueError(f"the mask's voxel size {_fmt(given)} does not match the CT's spacing {_fmt(ct_sp)}")
        if not _agree(truth_given, ct_sp):
            raise ValueError(f"the truth's voxel size {_fmt(truth_given)} does not match "
                             f"the CT's spacing {_fmt(ct_sp)}")
        return ct_sp
    if not _agree(truth_given, given):
        raise ValueError(f"the truth's voxel size {_fmt(truth_given)} does not match "
                         f"the mask's voxel size {_fmt(given)}")
    z, y, x = (g if g is not None else t for g, t in zip(given, truth_given))
    if z is None:
        z = DEFAULT_SLICE_SPACING_MM
        notes.append(
            f"slice spacing not known: assumed {DEFAULT_SLICE_SPACING_MM:g} mm as in the paper (Gencer & Toker 2024)"
        )
    if y is None or x is None:
        y = DEFAULT_PIXEL_SPACING_MM if y is None else y
        x = DEFAULT_PIXEL_SPACING_MM if x is None else x
        notes.append(
            f"in-plane pixel spacing not known: assumed {DEFAULT_PIXEL_SPACING_MM:g} mm, "
            "so volumes are only as right as that guess"
        )
    return (z, y, x)


def _check_shape(name: str, a_shape: Sequence[int], mask_shape: Sequence[int]) -> None:
    if tuple(a_shape) != tuple(mask_shape):
        raise ValueError(f"mask shape {tuple(mask_shape)} does not match {name} shape {tuple(a_shape)}")


# --------------------------------------------------------------------------- measure


def measure(
    mask: np.ndarray,
    *,
    ct=None,
    spacing: Optional[Sequence[Optional[float]]] = None,
    truth: Optional[np.ndarray] = None,
    truth_spacing: Optional[Sequence[Optional[float]]] = None,
    probabilities: Optional[np.ndarray] = None,
    sizing: bool = True,
) -> Measurement:
    """Measure a pneumothorax mask: volume, left/right and % of hemithorax, agreement with a reference.

    Parameters
    ----------
    mask : ndarray, shape (z, y, x)
        The pneumothorax mask (bool, uint8 or labels). Nonzero means pneumothorax.
    ct : CTVolume, optional
        The CT the mask belongs to, with the same shape. Its spacing is the mask's
        voxel size. Its HU and patient orientation give the per-side volumes and
        % of hemithorax. Without it those stay None (noted).
    spacing : sequence of float or None, optional
        The mask's own voxel size, (z, y, x) or in-plane (y, x), in mm. Entries may
        be None (or NaN) for "not known". With a CT, the known entries must match
        ``ct.spacing``. Without one, the known entries are the voxel size. Entries
        still unknown are taken from ``truth_spacing``, and failing that from
        :data:`DEFAULT_SLICE_SPACING_MM` and :data:`DEFAULT_PIXEL_SPACING_MM` (noted).
    truth : ndarray, shape (z, y, x), optional
        Reference mask for the overlap metrics. Nonzero means pneumothorax.
    truth_spacing : sequence of float or None, optional
        The reference's voxel size, in the same form as ``spacing``. Its known
        entries must match the mask's known voxel size (the CT's with a CT).
        Needs ``truth``.
    probabilities : ndarray, shape (z, y, x), optional
        Per-voxel scores for the voxel-wise ROC AUC. Needs ``truth``, otherwise
        the AUC stays None (noted).
    sizing : bool, default True
        With a CT, also take the guideline measures (rim depth, interpleural distance
        at the hilum, apex-to-cupola distance, pockets, size class by each rule: see
        :mod:`napari_pneumoseg.measure.sizing`); they need the lungs found, which takes
        a few seconds on a whole chest CT. False leaves them None.

    Returns
    -------
    Measurement
        Assumptions that had to be made are listed in ``notes``. Volumes use the
        real slice positions the reader recorded: where the gaps are uneven, each
        slice counts for half the gap to each neighbour (noted); voxel counts and
        the overlap metrics count voxels.

    Raises
    ------
    ValueError
        If ``mask`` is not 3-D. If the CT, ``truth`` or ``probabilities`` has another
        shape than ``mask`` (nothing is broadcast; the message names both shapes). If
        a spacing is malformed or not positive. If two voxel sizes disagree (the mask's
        and the CT's, the truth's and the CT's, or the truth's and the mask's; the
        message names both). If ``truth_spacing`` is given without ``truth``.

    Examples
    --------
    >>> mask = np.zeros((4, 10, 10), bool)
    >>> mask[1:3, 2:7, 2:7] = True                       # 50 voxels
    >>> m = measure(mask, spacing=(2.0, 0.5, 0.5))       # 0.5 mm^3 each
    >>> m.voxels, m.volume_ml
    (50, 0.025)
    >>> m = measure(mask, truth=mask, truth_spacing=(2.0, 0.5, 0.5))
    >>> m.spacing_mm, m.dice
    ((2.0, 0.5, 0.5), 1.0)
    >>> measure(mask, spacing=(2.0, 0.5, 0.5), truth=mask, truth_spacing=(5.0, 0.5, 0.5))
    Traceback (most recent call last):
    ...
    ValueError: the truth's voxel size (5, 0.5, 0.5) mm does not match the mask's voxel size (2, 0.5, 0.5) mm
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (z, y, x), got shape {mask.shape}")
    if ct is not None:
        _check_shape("CT", ct.shape, mask.shape)
    if truth is not None:
        truth = np.asarray(truth)
        _check_shape("truth", truth.shape, mask.shape)
    elif truth_spacing is not None:
        raise ValueError("truth_spacing was given without truth")
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        _check_shape("probabilities", probabilities.shape, mask.shape)

    notes: list[str] = []
    sp = _resolve_spacing(ct, spacing, truth_spacing, notes)
    voxel_ml = float(np.prod(sp)) / 1000.0
    pred_k, true_k, tp_k = slice_counts(mask, truth)
    n_pred = int(pred_k.sum())
    spans = slice_spans(ct) if ct is not None else None
    weight = spans.weight if spans is not None and spans.uneven else None
    if weight is not None:
        notes.append(spans.note)
    res = Measurement(
        shape=tuple(int(s) for s in mask.shape),
        spacing_mm=tuple(float(s) for s in sp),
        voxel_ml=voxel_ml,
        voxels=n_pred,
        volume_ml=_volume(pred_k, voxel_ml, weight),
        notes=notes,
    )
    thickness = max(sp[0], float((ct.metadata or {}).get("slice_thickness") or 0.0) if ct is not None else 0.0)
    if thickness > THICK_SLICE_MM:
        notes.append(THICK_WARNING.format(mm=round(thickness, 2)))

    if ct is not None:
        fields, side_notes = side_analysis(mask, ct, pred_k, weight)
        for k, v in fields.items():
            setattr(res, k, v)
        notes.extend(side_notes)
        if sizing:
            _size(res, mask, ct, spans)
    else:
        notes.append("left/right, % of hemithorax and the guideline distances need the CT (HU and patient "
                     "orientation): not measured")

    if truth is not None:
        n_true = int(true_k.sum())
        tp = int(tp_k.sum())
        fp, fn = n_pred - tp, n_true - tp
        tn = mask.size - tp - fp - fn
        for k, v in metrics_from_counts(tp, fp, tn, fn).items():
            setattr(res, k, v)
        res.truth_voxels = n_true
        res.truth_volume_ml = _volume(true_k, voxel_ml, weight)
        res.dice_per_slice, res.dice_slices = mean_slice_dice(pred_k, true_k, tp_k)
        if res.relative_volume_error is None:
            notes.append("relative volume error undefined: the reference is empty but the mask is not")
        if probabilities is not None:
            res.auc = roc_auc(probabilities, truth)
            if res.auc is None:
                notes.append("AUC undefined: the reference has only one class")
    elif probabilities is not None:
        notes.append("AUC needs a reference mask (truth): not measured")
    return res


def _volume(per_slice: np.ndarray, voxel_ml: float, weight: Optional[np.ndarray]) -> float:
    """mL of per-slice voxel counts, each slice counted for its span when the gaps are uneven."""
    if weight is None:
        return int(per_slice.sum()) * voxel_ml
    return float(np.dot(per_slice, weight)) * voxel_ml


#: Measurement fields of each rule's class, by rule name (``{side}_class_{suffix}``).
CLASS_FIELDS = {"BTS 2010": "bts", "ACCP 2001": "accp", "35 mm rule": "35mm", "20 % rule": "20pct"}


def _size(res: Measurement, mask: np.ndarray, ct, spans) -> None:
    """Fill the guideline fields of ``res`` from :func:`size_pneumothorax`."""
    found = size_pneumothorax(
        mask, ct, midline_x_mm=res.midline_x_mm, spans=spans,
        side_ml={"left": res.left_ml, "right": res.right_ml},
        side_pct={"left": res.left_pct_hemithorax, "right": res.right_pct_hemithorax})
    res.sizing = found
    res.notes.extend(found.notes)
    for side, size in found.sides.items():
        setattr(res, f"{side}_rim_depth_mm", size.rim_depth_mm)
        setattr(res, f"{side}_hilum_distance_mm", size.hilum_distance_mm)
        setattr(res, f"{side}_apex_cupola_mm", size.apex_cupola_mm)
        setattr(res, f"{side}_pockets", len(size.pockets_ml))
        for rule, suffix in CLASS_FIELDS.items():
            setattr(res, f"{side}_class_{suffix}", size.classes[rule])
